//! Checkout: a version's disk rebuilt from its extents and the store.
//!
//! The output is written to `OUT.partial` and renamed over `OUT` when complete, so a failed
//! checkout never leaves a half-written image under the requested name. Zero extents are
//! never written (a raw file is sparse there, a qcow2 cluster stays unallocated); chunks are
//! read, decompressed and checked against their hash in parallel batches, and written in disk
//! order. Raw and qcow2 (imago's writer) are written natively; any other format qemu-img
//! writes is converted from a raw disk in `tmp/`.
//!
//! An existing `OUT` is replaced only with `force`, or when it is this library's own earlier
//! output: every checkout marks its output with the `user.imagelake.library` extended
//! attribute, naming the library.

use crate::catalog::{ExtentKind, ExtentRow, ImageState};
use crate::ranges::overlaps;
use crate::store::{ChunkHash, ChunkLocation, ChunkReader, Packs, parse_hex};
use crate::{Error, IoContext, Library, Progress, Result};
use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{
    DenyImplicitOpenGate, FormatCreateBuilder, FormatDriverBuilder, Storage, StorageCreateOptions, SyncFormatAccess,
};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The extended attribute that marks a checkout's output with the library that wrote it.
const MARK: &str = "user.imagelake.library";
/// Which image version an output holds (its image id), beside the library's mark.
const IMAGE_MARK: &str = "user.imagelake.image";

/// How to write a checkout, and whom it tells how far it got.
#[derive(Clone, Default)]
pub struct CheckoutOptions {
    /// `raw` (the default), `qcow2`, or another format `qemu-img convert -O` writes (vmdk,
    /// vdi, vhdx, vpc).
    pub format: Option<String>,
    /// Replace an existing output that is not this library's own earlier checkout.
    pub force: bool,
    /// Delta deployment: `out` is a raw disk (an earlier checkout of another version, say) or
    /// a block device, and only its 4 KiB blocks that differ are rewritten, in place. A file
    /// of another size is first grown or cut to the version's; a device must hold the disk,
    /// and its bytes past the disk's end are left as they are.
    pub update: bool,
    /// One phase, the disk's bytes written or left zero.
    pub progress: Option<Arc<dyn Progress>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckoutSummary {
    pub image_id: i64,
    pub name: String,
    pub version: i64,
    pub output: PathBuf,
    pub format: String,
    pub virtual_size: u64,
    pub bytes_written: u64,
    pub bytes_zero: u64,
    /// Delta deployment: the version the output was marked as holding (`name@version`),
    /// if it carried this library's marks.
    pub previous: Option<String>,
    /// Delta deployment over an identified version: 4 KiB blocks that differed although the
    /// previous version and this one agree there, so the output had been changed since (they
    /// were rewritten too). Zero when the output held exactly the previous version.
    pub unexpected_blocks: Option<u64>,
    /// Delta deployment onto a file of another size: its size before it was grown or cut to
    /// this version's.
    pub resized_from: Option<u64>,
    /// Delta deployment onto a disk file: bytes of its blocks that held something where this
    /// version has zeros, made holes (`fallocate` punch) rather than written with zeros.
    pub bytes_punched: u64,
    pub seconds: f64,
}

impl Library {
    /// Writes the disk of image version `spec` to `out`.
    pub async fn checkout(&self, spec: &str, out: &Path, options: &CheckoutOptions) -> Result<CheckoutSummary> {
        let _reading = self.reading()?;
        let started = Instant::now();
        let format = options.format.clone().unwrap_or_else(|| "raw".into());
        if !format.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::User(format!("--format {format:?}: use raw, qcow2, vmdk, vdi, vhdx or vpc")));
        }
        // Which library a checkout came from: its folder, resolved, or its URL.
        let mark: std::ffi::OsString = match self.folder() {
            Some(root) => root.canonicalize().io_context(|| format!("resolving {}", root.display()))?.into_os_string(),
            None => self.location().into(),
        };
        if out.symlink_metadata().is_ok()
            && !options.force
            && read_mark(out, MARK).as_deref() != Some(mark.as_os_str().as_bytes())
        {
            return Err(Error::User(format!(
                "{} exists and is not an earlier checkout of this library; --force replaces it",
                out.display()
            )));
        }
        let image = self.resolve(spec).await?;
        if image.state == ImageState::Synthetic {
            return Err(Error::User(format!("{spec} is synthetic (benchmark data made of manifests): it has no disk")));
        }
        let size = image.virtual_size as u64;
        let update = match options.update {
            true if format != "raw" => return Err(Error::User("--update rewrites raw disks only".into())),
            true => Some(update_target(out, size, &format!("{}@{}", image.name, image.version))?),
            false => None,
        };
        let resized_from = update.as_ref().and_then(|u| u.resize_from);
        let extents = self.catalog().disk_map(image.image_id, false).await?;
        // What the output should hold, from its marks; checked against what it does hold as
        // the comparison goes, never trusted.
        let previous = match &update {
            Some(_) if read_mark(out, MARK).as_deref() == Some(mark.as_os_str().as_bytes()) => {
                let id = read_mark(out, IMAGE_MARK).and_then(|v| String::from_utf8(v).ok()?.parse::<i64>().ok());
                self.images().await?.into_iter().find(|i| Some(i.image_id) == id)
            }
            _ => None,
        };
        let expected = match &previous {
            Some(p) => Some(differing_ranges(&self.catalog().disk_map(p.image_id, false).await?, &extents)),
            None => None,
        };
        let locations = self.catalog().chunk_rows().await?.into_iter().collect::<HashMap<_, _>>();
        crate::trace::phase("checkout: extents read");
        let partial = PathBuf::from(format!("{}.partial", out.display()));
        // Other formats are converted from a raw disk written beside the output.
        let raw = PathBuf::from(format!("{}.raw", partial.display()));
        let target = if format == "raw" || format == "qcow2" { partial.clone() } else { raw.clone() };
        let (packs, qcow2) = (self.packs().clone(), format == "qcow2");
        let progress = options.progress.clone();
        if let Some(p) = &progress {
            p.phase(&format!("writing {}@{}", image.name, image.version), size);
        }
        let done = tokio::task::spawn_blocking(move || -> Result<(u64, u64, Option<u64>, u64)> {
            let output = match update {
                Some(UpdateTarget { file, resize_from, device }) => {
                    // Cut or grown only now, when nothing is left that could refuse the update.
                    if resize_from.is_some() {
                        file.set_len(size).io_context(|| format!("resizing the disk to {size} bytes"))?;
                    }
                    // A device's blocks are written with zeros: a discard need not read back as them.
                    let punched = (!device).then(|| AtomicU64::new(0));
                    Output::Update { file, blocks: Mutex::new(Vec::new()), punched }
                }
                None if qcow2 => {
                    Output::Qcow2(create_qcow2(&target, size).io_context(|| format!("creating {}", target.display()))?)
                }
                None => Output::Raw(raw_file(&target, size)?),
            };
            let (written, zero) = write_disk(&packs, &output, &extents, &locations, progress.as_deref())?;
            let unexpected = match (&output, &expected) {
                (Output::Update { blocks, .. }, Some(expected)) => {
                    // A block that two extents share can be written in two parts: counted once.
                    let mut blocks = blocks.lock().map(|b| b.clone()).unwrap_or_default();
                    blocks.sort_unstable();
                    blocks.dedup();
                    Some(blocks.iter().filter(|&&b| !overlaps(expected, b * BLOCK, (b + 1) * BLOCK)).count() as u64)
                }
                _ => None,
            };
            let punched = match &output {
                Output::Update { punched: Some(punched), .. } => punched.load(Ordering::Relaxed),
                _ => 0,
            };
            output.finish()?;
            Ok((written, zero, unexpected, punched))
        })
        .await;
        let (written, zero, unexpected, punched) = done.map_err(crate::task_failed("checking out"))??;
        if !options.update && format != "raw" && format != "qcow2" {
            let converted = tokio::process::Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", &format])
                .arg(&raw)
                .arg(&partial)
                .output()
                .await;
            let _ = std::fs::remove_file(&raw);
            let converted = converted.io_context(|| "running qemu-img (scripts/install-deps.sh installs it)".into())?;
            if !converted.status.success() {
                let _ = std::fs::remove_file(&partial);
                return Err(Error::User(format!(
                    "qemu-img cannot write {format}: {}",
                    String::from_utf8_lossy(&converted.stderr).trim()
                )));
            }
        }
        if !options.update {
            // Marked before it takes the name: a crash leaves a marked .partial, never an
            // unmarked OUT.
            set_mark(&partial, MARK, mark.as_os_str().as_bytes());
            set_mark(&partial, IMAGE_MARK, image.image_id.to_string().as_bytes());
            std::fs::rename(&partial, out)
                .io_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
        } else {
            set_mark(out, MARK, mark.as_os_str().as_bytes());
            set_mark(out, IMAGE_MARK, image.image_id.to_string().as_bytes());
        }
        Ok(CheckoutSummary {
            image_id: image.image_id,
            name: image.name,
            version: image.version,
            output: out.to_path_buf(),
            format,
            virtual_size: size,
            bytes_written: written,
            bytes_zero: zero,
            previous: previous.map(|p| format!("{}@{}", p.name, p.version)),
            unexpected_blocks: unexpected,
            resized_from,
            bytes_punched: punched,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The disk a delta deployment rewrites in place.
struct UpdateTarget {
    file: File,
    /// A file of another size than the version's: its size, before it is cut or grown.
    resize_from: Option<u64>,
    device: bool,
}

/// Opens `out` for a delta deployment of a disk of `size` bytes (of version `what`): a
/// regular file of any size, or a block device that holds the disk.
fn update_target(out: &Path, size: u64, what: &str) -> Result<UpdateTarget> {
    use std::io::Seek;
    use std::os::unix::fs::FileTypeExt;
    let mut file =
        File::options().read(true).write(true).open(out).io_context(|| format!("opening {}", out.display()))?;
    let kind = file.metadata().io_context(|| format!("reading {}", out.display()))?.file_type();
    if kind.is_block_device() {
        let len = file.seek(io::SeekFrom::End(0)).io_context(|| format!("sizing {}", out.display()))?;
        if len < size {
            return Err(Error::User(format!(
                "{} holds {len} bytes, too few for the {size} bytes of {what}'s disk",
                out.display()
            )));
        }
        return Ok(UpdateTarget { file, resize_from: None, device: true });
    }
    if !kind.is_file() {
        return Err(Error::User(format!("{} is neither a disk file nor a block device", out.display())));
    }
    let len = file.metadata().io_context(|| format!("reading {}", out.display()))?.len();
    Ok(UpdateTarget { file, resize_from: (len != size).then_some(len), device: false })
}

/// Where a checkout's bytes go.
pub(crate) enum Output {
    Raw(File),
    Qcow2(SyncFormatAccess<ImagoFile>),
    /// A raw disk already there (delta deployment): only blocks that differ are written, and
    /// their numbers kept. On a disk file (`punched` counts), blocks to be zeroed are made
    /// holes instead.
    Update {
        file: File,
        blocks: Mutex<Vec<u64>>,
        punched: Option<AtomicU64>,
    },
}

/// The unit of a delta deployment's comparison and writes.
const BLOCK: u64 = 4096;

impl Output {
    /// Writes `data` at `offset`; returns how many bytes it wrote.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<u64> {
        match self {
            Output::Raw(file) => file.write_all_at(data, offset).map(|()| data.len() as u64),
            Output::Qcow2(image) => image.write(data, offset).map(|()| data.len() as u64),
            Output::Update { file, blocks, .. } => {
                let mut old = vec![0u8; data.len()];
                file.read_exact_at(&mut old, offset)?;
                let mut written = 0;
                // Blocks aligned to the disk, so that one changed byte costs one block.
                let mut at = 0usize;
                while at < data.len() {
                    let next = ((offset + at as u64) / BLOCK + 1) * BLOCK - offset;
                    let end = usize::try_from(next).unwrap_or(usize::MAX).min(data.len());
                    // In bounds: at < end <= data.len() == old.len().
                    if data[at..end] != old[at..end] {
                        file.write_all_at(&data[at..end], offset + at as u64)?;
                        written += (end - at) as u64;
                        if let Ok(mut blocks) = blocks.lock() {
                            blocks.push((offset + at as u64) / BLOCK);
                        }
                    }
                    at = end;
                }
                Ok(written)
            }
        }
    }

    /// Makes `length` bytes at `offset` zeros: nothing to do on a fresh output, whose unwritten
    /// bytes read as zeros; on an updated disk, its nonzero blocks there are overwritten, or
    /// on a disk file made holes (the blocks wholly inside the range).
    fn zero(&self, offset: u64, length: u64) -> io::Result<u64> {
        let Output::Update { file, blocks, punched } = self else { return Ok(0) };
        let end = offset + length;
        let (first, last) = (offset.div_ceil(BLOCK) * BLOCK, end / BLOCK * BLOCK);
        let mut written = 0;
        let mut body = (offset, offset);
        if let Some(punched) = punched
            && first < last
        {
            match punch_nonzero(file, first, last) {
                Ok((holes, bytes)) => {
                    punched.fetch_add(bytes, Ordering::Relaxed);
                    if let Ok(mut blocks) = blocks.lock() {
                        blocks.extend(holes);
                    }
                    body = (first, last);
                }
                // A filesystem that cannot punch holes gets zeros written.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => return Err(e),
            }
        }
        let zeros = vec![0u8; 1 << 20];
        for (from, to) in [(offset, body.0), (body.1, end)] {
            let mut at = from;
            while at < to {
                let n = (to - at).min(zeros.len() as u64);
                written += self.write_at(&zeros[..n as usize], at)?;
                at += n;
            }
        }
        Ok(written)
    }

    fn finish(self) -> Result<()> {
        match self {
            Output::Raw(file) => file.sync_all().io_context(|| "syncing the checkout".into()),
            Output::Qcow2(image) => {
                image.flush().and_then(|()| image.sync()).io_context(|| "syncing the qcow2 checkout".into())
            }
            Output::Update { file, .. } => file.sync_all().io_context(|| "syncing the updated disk".into()),
        }
    }
}

/// Makes holes of the blocks of `file` in `[start, end)` (block-aligned) that hold anything
/// but zeros, run by run. Returns their numbers and their bytes.
fn punch_nonzero(file: &File, start: u64, end: u64) -> io::Result<(Vec<u64>, u64)> {
    use std::os::fd::AsRawFd;
    let punch = |from: u64, to: u64| -> io::Result<()> {
        let (Ok(at), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(to - from)) else {
            return Err(io::Error::other("a hole past what the kernel addresses"));
        };
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate reads no memory of ours; the descriptor is open for writing.
        match unsafe { libc::fallocate(file.as_raw_fd(), mode, at, len) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    };
    let mut old = vec![0u8; 1 << 20];
    let (mut holes, mut run): (Vec<u64>, Option<u64>) = (Vec::new(), None);
    let mut at = start;
    while at < end {
        let n = (end - at).min(old.len() as u64) as usize;
        let piece = old.get_mut(..n).unwrap_or_default();
        file.read_exact_at(piece, at)?;
        for (i, block) in piece.chunks(BLOCK as usize).enumerate() {
            let number = (at + i as u64 * BLOCK) / BLOCK;
            let used = block.iter().any(|b| *b != 0);
            match (used, run) {
                (true, None) => run = Some(number),
                (false, Some(from)) => {
                    punch(from * BLOCK, number * BLOCK)?;
                    run = None;
                }
                _ => {}
            }
            if used {
                holes.push(number);
            }
        }
        at += n as u64;
    }
    if let Some(from) = run {
        punch(from * BLOCK, end)?;
    }
    let bytes = holes.len() as u64 * BLOCK;
    Ok((holes, bytes))
}

/// A sparse raw file of `size` bytes.
pub(crate) fn raw_file(path: &Path, size: u64) -> Result<File> {
    let file = File::create(path).io_context(|| format!("creating {}", path.display()))?;
    file.set_len(size).io_context(|| format!("sizing {}", path.display()))?;
    Ok(file)
}

/// A new qcow2 image of `size` bytes, every cluster unallocated (reads as zeros).
fn create_qcow2(path: &Path, size: u64) -> io::Result<SyncFormatAccess<ImagoFile>> {
    // imago formats an image only asynchronously, with futures that cannot move between
    // threads: a runtime of this thread's own runs it.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let image = runtime.block_on(async {
        let file = ImagoFile::create_open(StorageCreateOptions::new().filename(path).overwrite(true)).await?;
        Qcow2::<ImagoFile>::create_builder(file)
            .size(size)
            .create_open(DenyImplicitOpenGate::default(), |file| Ok(Qcow2::builder(file).write(true)))
            .await
    })?;
    SyncFormatAccess::new(image)
}

fn c_path(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

/// The library `path` was checked out of, if it carries the mark.
fn read_mark(path: &Path, mark: &str) -> Option<Vec<u8>> {
    let (path, name) = (c_path(path)?, CString::new(mark).ok()?);
    let mut value = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and `value` is writable for its length.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
    value.truncate(usize::try_from(n).ok()?);
    Some(value)
}

/// Marks `path` as a checkout of the library at `library`. A file system without user
/// extended attributes leaves it unmarked: replacing it then takes `--force`.
fn set_mark(path: &Path, mark: &str, library: &[u8]) {
    let (Some(path), Ok(name)) = (c_path(path), CString::new(mark)) else { return };
    // SAFETY: both strings are NUL-terminated and `library` is readable for its length.
    unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), library.as_ptr().cast(), library.len(), 0) };
}

/// The disk ranges (start, end), in order, where two disk maps may hold different bytes:
/// everywhere but where both have zeros, or both the same bytes of the same chunk.
fn differing_ranges(a: &[ExtentRow], b: &[ExtentRow]) -> Vec<(u64, u64)> {
    let start = |e: &ExtentRow| e.disk_offset as u64;
    let end = |e: &ExtentRow| (e.disk_offset + e.length) as u64;
    // What an extent holds at `pos`: zeros (None), or a chunk and an offset in it.
    let bytes_at = |e: &ExtentRow, pos: u64| {
        (e.kind != ExtentKind::Zero).then(|| (e.chunk_hash.clone(), e.chunk_offset as u64 + (pos - start(e))))
    };
    let (mut i, mut j, mut pos) = (0, 0, 0u64);
    let mut out: Vec<(u64, u64)> = Vec::new();
    loop {
        while a.get(i).is_some_and(|e| end(e) <= pos) {
            i += 1;
        }
        while b.get(j).is_some_and(|e| end(e) <= pos) {
            j += 1;
        }
        let (x, y) = (a.get(i), b.get(j));
        if x.is_none() && y.is_none() {
            return out;
        }
        // The next point where either map changes.
        let next = [x, y].into_iter().flatten().map(|e| if start(e) > pos { start(e) } else { end(e) }).min();
        let Some(next) = next else { return out };
        let (x, y) = (x.filter(|e| start(e) <= pos), y.filter(|e| start(e) <= pos));
        let same = match (x, y) {
            (Some(x), Some(y)) => bytes_at(x, pos) == bytes_at(y, pos),
            (None, None) => true,
            _ => false,
        };
        if !same {
            match out.last_mut() {
                Some(last) if last.1 == pos => last.1 = next,
                _ => out.push((pos, next)),
            }
        }
        pos = next;
    }
}

pub(crate) fn write_disk(
    packs: &Packs,
    output: &Output,
    extents: &[ExtentRow],
    locations: &HashMap<ChunkHash, ChunkLocation>,
    progress: Option<&dyn Progress>,
) -> Result<(u64, u64)> {
    let (mut written, mut zero) = (0u64, 0u64);
    // Every non-zero extent under the chunk that fills it.
    let mut by_chunk: HashMap<ChunkHash, (&ChunkLocation, Vec<&ExtentRow>)> = HashMap::new();
    for e in extents {
        if e.kind == ExtentKind::Zero {
            zero += e.length as u64;
            written += output.zero(e.disk_offset as u64, e.length as u64).io_context(|| "zeroing".into())?;
            continue;
        }
        let hash = e
            .chunk_hash
            .as_deref()
            .and_then(parse_hex)
            .ok_or_else(|| Error::Catalog(format!("extent at {} has no valid chunk hash", e.disk_offset)))?;
        let at = locations
            .get(&hash)
            .ok_or_else(|| Error::Catalog(format!("chunk {} is in no pack", crate::store::hex(&hash))))?;
        by_chunk.entry(hash).or_insert((at, Vec::new())).1.push(e);
    }
    if let Some(p) = progress {
        p.advance(zero);
    }
    // Chunks in store order, frames in parallel: the thread that decompresses a frame writes
    // every extent its chunks fill, wherever it lies on the disk.
    let chunks: Vec<(ChunkHash, &ChunkLocation)> = by_chunk.iter().map(|(h, (at, _))| (*h, *at)).collect();
    let filled = AtomicU64::new(0);
    ChunkReader::new(packs).for_each_chunk(
        &chunks,
        |hash, chunk| {
            let (mut bytes, mut done) = (0u64, 0u64);
            for e in by_chunk.get(hash).map(|c| c.1.as_slice()).unwrap_or_default() {
                let piece = chunk
                    .get(e.chunk_offset as usize..(e.chunk_offset + e.length) as usize)
                    .ok_or_else(|| Error::Catalog(format!("extent at {} reaches past its chunk", e.disk_offset)))?;
                bytes += output.write_at(piece, e.disk_offset as u64).io_context(|| "writing the checkout".into())?;
                done += e.length as u64;
            }
            filled.fetch_add(bytes, Ordering::Relaxed);
            if let Some(p) = progress {
                p.advance(done);
            }
            Ok(())
        },
        |e| Error::Io { context: "reading the store".into(), error: e },
    )?;
    written += filled.into_inner();
    Ok((written, zero))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An extent from `"<offset>+<length> zero"` or `"<offset>+<length> raw|file <chunk>@<offset in it>"`.
    fn extent(spec: &str) -> ExtentRow {
        let number = |s: &str| s.parse::<i64>().unwrap_or_else(|_| panic!("{spec:?}: {s:?} is not a number"));
        let words: Vec<&str> = spec.split(' ').collect();
        let (at, length) = words[0].split_once('+').unwrap_or_else(|| panic!("{spec:?}"));
        let kind = match words[1] {
            "zero" => ExtentKind::Zero,
            "raw" => ExtentKind::Raw,
            "file" => ExtentKind::File,
            other => panic!("{spec:?}: {other} is not an extent kind"),
        };
        let (chunk, chunk_at) = words.get(2).map_or((None, 0), |c| {
            let (chunk, at) = c.split_once('@').unwrap_or_else(|| panic!("{spec:?}"));
            (Some(chunk.to_string()), number(at))
        });
        ExtentRow {
            image_id: 1,
            disk_offset: number(at),
            length: number(length),
            kind,
            chunk_hash: chunk,
            chunk_offset: chunk_at,
            content_hash: None,
            content_offset: None,
        }
    }

    /// The ranges where the disk maps `a` and `b` may hold different bytes, both ways round.
    fn check(a: &[&str], b: &[&str], expect: &[(u64, u64)]) {
        let (a, b): (Vec<ExtentRow>, Vec<ExtentRow>) =
            (a.iter().map(|s| extent(s)).collect(), b.iter().map(|s| extent(s)).collect());
        assert_eq!(differing_ranges(&a, &b), expect, "a against b");
        assert_eq!(differing_ranges(&b, &a), expect, "b against a");
    }

    const MAP: [&str; 3] = ["0+4096 raw c@0", "4096+4096 file d@0", "8192+4096 zero"];

    #[test]
    fn identical_maps_do_not_differ() {
        check(&MAP, &MAP, &[]);
        check(&[], &[], &[]);
    }

    #[test]
    fn one_block_differs() {
        check(&MAP, &["0+4096 raw c@0", "4096+4096 file e@0", "8192+4096 zero"], &[(4096, 8192)]);
    }

    #[test]
    fn a_change_across_a_block_boundary_is_one_range() {
        check(&["0+8192 raw c@0"], &["0+4000 raw c@0", "4000+200 raw x@0", "4200+3992 raw c@4200"], &[(4000, 4200)]);
    }

    #[test]
    fn neighbouring_differences_are_one_range() {
        check(
            &["0+10 raw c@0", "10+10 raw d@0", "20+10 raw e@0"],
            &["0+10 raw x@0", "10+10 raw y@0", "20+10 raw e@0"],
            &[(0, 20)],
        );
    }

    #[test]
    fn the_same_bytes_cut_differently_do_not_differ() {
        check(&["0+100 raw c@0"], &["0+40 raw c@0", "40+60 raw c@40"], &[]);
        // Zeros too; and a file's bytes are the same chunk's bytes as raw ones.
        check(&["0+100 zero"], &["0+30 zero", "30+70 zero"], &[]);
        check(&["0+100 raw c@0"], &["0+100 file c@0"], &[]);
    }

    #[test]
    fn the_same_chunk_at_another_offset_differs() {
        check(&["0+100 raw c@0"], &["0+100 raw c@1"], &[(0, 100)]);
        check(&["0+100 raw c@0"], &["0+50 raw c@0", "50+50 raw c@60"], &[(50, 100)]);
    }

    #[test]
    fn zeros_against_data_differ() {
        check(&["0+100 zero"], &["0+100 raw c@0"], &[(0, 100)]);
        check(&["0+100 zero", "100+100 raw c@100"], &["0+100 raw c@0", "100+100 raw c@100"], &[(0, 100)]);
    }

    #[test]
    fn where_one_map_is_longer_the_rest_differs() {
        check(&["0+100 raw c@0"], &["0+100 raw c@0", "100+50 raw d@0"], &[(100, 150)]);
        // Even zeros: nothing is known of a disk past its map.
        check(&["0+100 raw c@0"], &["0+100 raw c@0", "100+50 zero"], &[(100, 150)]);
    }

    #[test]
    fn holes_in_both_maps_do_not_differ() {
        check(&["0+10 raw c@0", "20+10 raw d@0"], &["0+10 raw c@0", "20+10 raw d@0"], &[]);
        check(&["0+10 raw c@0", "20+10 raw d@0"], &["0+30 raw c@0"], &[(10, 30)]);
    }

    #[test]
    fn differences_follow_bytes_not_extent_boundaries() {
        // The same chunk bytes cut differently agree; a shifted offset, another chunk, or
        // zeros against data differ.
        let a = ["0+100 raw c@0", "100+50 zero", "150+50 raw d@0"];
        let b = ["0+40 raw c@0", "40+60 raw c@40", "100+20 zero", "120+30 raw e@0", "150+50 raw d@1"];
        check(&a, &b, &[(120, 200)]);
        check(&a, &a[..2], &[(150, 200)]);
    }

    #[test]
    fn overlaps_meets_a_range() {
        assert!(overlaps(&[(120, 200)], 100, 121) && !overlaps(&[(120, 200)], 200, 300) && !overlaps(&[], 0, 1));
    }
}
