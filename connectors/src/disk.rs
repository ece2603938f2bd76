//! Disk image formats: raw and qcow2 read natively; vmdk, vhdx, vdi, vpc and qcow2 with zstd
//! clusters through `qemu-img`.
//!
//! A [`Disk`] is a [`ReadAt`] over the guest-visible bytes plus an allocation map
//! ([`Disk::map`]) that says which ranges are known to read as zeros, so that checkin never
//! reads, hashes or stores them. qcow2 goes through imago (compressed clusters, backing
//! chains). Other formats are detected with `qemu-img info` and converted by `qemu-img
//! convert` into a sparse raw file in a scratch folder (streaming: the image is never held in
//! memory), unlinked as soon as it is open. Whatever the format, a file an image refers to
//! (backing file, vmdk extent, external data file) is opened only when it lies in the image's
//! own folder, so an image cannot make the library read arbitrary host files.

use crate::ReadAt;
use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, Mapping, Storage, StorageOpenOptions, SyncFormatAccess};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One run of the allocation map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub offset: u64,
    pub len: u64,
    /// False when the range is known to read as zeros (a hole, an unallocated cluster).
    pub data: bool,
}

/// An opened disk image.
pub struct Disk {
    format: String,
    backend: Backend,
    size: u64,
}

enum Backend {
    Raw(File),
    Qcow2(SyncFormatAccess<ImagoFile>),
    /// Bytes from elsewhere (an edited disk: the parent version's bytes with the edit's
    /// blocks over them); mapped as all data.
    Source(Box<dyn ReadAt>),
}

const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

impl Disk {
    /// Opens `path`, detecting its format. Formats read through `qemu-img` are converted
    /// into `scratch` (a folder on the same machine with room for the raw disk's data).
    pub fn open(path: &Path, scratch: &Path) -> io::Result<Disk> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut magic = [0u8; 4];
        if len >= 4 {
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 0)?;
        }
        if &magic == QCOW2_MAGIC {
            check_qcow2_tables(&file, len)?;
            drop(file);
            return match Self::open_qcow2(path) {
                // imago reads neither zstd clusters nor encryption: qemu-img does.
                Err(e) if e.to_string().contains("ncompatible feature") => Self::convert(path, scratch, "qcow2"),
                other => other,
            };
        }
        match qemu_img_format(path)? {
            Some(format) if format != "raw" => Self::convert(path, scratch, &format),
            _ => Ok(Disk { format: "raw".into(), backend: Backend::Raw(file), size: len }),
        }
    }

    fn open_qcow2(path: &Path) -> io::Result<Disk> {
        let folder = image_folder(path)?;
        let qcow2 = Qcow2::<ImagoFile>::builder_path(path)
            .write(false)
            .open_sync(SameFolderGate { folder })
            .map_err(|e| io::Error::new(e.kind(), format!("qcow2: {e}")))?;
        let access = SyncFormatAccess::new(qcow2)?;
        let size = access.size();
        Ok(Disk { format: "qcow2".into(), backend: Backend::Qcow2(access), size })
    }

    /// Converts a format imagelake does not read natively to raw with `qemu-img convert`.
    fn convert(path: &Path, scratch: &Path, format: &str) -> io::Result<Disk> {
        check_references(path)?;
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let raw = scratch.join(format!("convert-{}-{nonce}.raw", std::process::id()));
        // Held while it exists: a scratch file nobody holds is a crash's leftover.
        let file = File::create_new(&raw)?;
        file.try_lock().map_err(io::Error::other)?;
        let out = Command::new("qemu-img").args(["convert", "-f", format, "-O", "raw"]).arg(path).arg(&raw).output();
        // Unlinked at once: the open file lives as long as the Disk, and nothing is left over.
        let _ = std::fs::remove_file(&raw);
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{format}: qemu-img cannot read it: {}", String::from_utf8_lossy(&out.stderr).trim()),
                ));
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{format} needs qemu-img, which did not run: {e}"))),
        }
        let size = file.metadata()?.len();
        Ok(Disk { format: format.to_string(), backend: Backend::Raw(file), size })
    }

    /// A disk whose bytes `source` gives, read as if it were an image of `format`.
    pub fn from_source(format: &str, source: Box<dyn ReadAt>) -> Disk {
        Disk { format: format.to_string(), size: source.size(), backend: Backend::Source(source) }
    }

    /// The input format: "raw", "qcow2", "vmdk", "vhdx", "vdi", "vpc", ...
    pub fn format(&self) -> &str {
        &self.format
    }

    /// The allocation map of `[offset, offset + len)`: runs in order that tile the range.
    pub fn map(&self, offset: u64, len: u64) -> io::Result<Vec<Run>> {
        let end = offset.saturating_add(len).min(self.size);
        let mut runs: Vec<Run> = Vec::new();
        let mut at = offset;
        while at < end {
            let (run_len, data) = match &self.backend {
                Backend::Raw(file) => raw_run(file, at, end)?,
                Backend::Source(_) => (end - at, true),
                Backend::Qcow2(access) => {
                    let (mapping, n) = access.get_mapping_sync(at, end - at)?;
                    let data = match mapping {
                        Mapping::Zero { .. } => false,
                        Mapping::Eof { .. } => break,
                        Mapping::Raw { storage, offset, .. } => {
                            let file_len = storage.size()?;
                            if offset.saturating_add(n) > file_len {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    format!(
                                        "qcow2: data for guest offset {at} lies at {offset}, past the end of the file ({file_len} bytes): truncated?"
                                    ),
                                ));
                            }
                            true
                        }
                        _ => true,
                    };
                    (n, data)
                }
            };
            if run_len == 0 {
                break;
            }
            let run_len = run_len.min(end - at);
            match runs.last_mut() {
                Some(last) if last.data == data => last.len += run_len,
                _ => runs.push(Run { offset: at, len: run_len, data }),
            }
            at += run_len;
        }
        if at < end {
            // Past what the format maps: reads as zeros.
            runs.push(Run { offset: at, len: end - at, data: false });
        }
        Ok(runs)
    }
}

/// The allocation map of `[offset, offset + len)` of a file: runs of data and holes, in order.
pub fn file_map(file: &File, offset: u64, len: u64) -> io::Result<Vec<Run>> {
    let end = offset.saturating_add(len);
    let mut runs = Vec::new();
    let mut at = offset;
    while at < end {
        let (n, data) = raw_run(file, at, end)?;
        runs.push(Run { offset: at, len: n, data });
        at += n;
    }
    Ok(runs)
}

/// The run of a raw file starting at `at`: data up to the next hole, or a hole up to the
/// next data (`SEEK_DATA`/`SEEK_HOLE`; a file system without them reports all data).
fn raw_run(file: &File, at: u64, end: u64) -> io::Result<(u64, bool)> {
    let fd = file.as_raw_fd();
    let Ok(at_off) = libc::off_t::try_from(at) else { return Ok((end - at, true)) };
    // SAFETY: lseek on an open descriptor has no memory effects; reads use pread, so moving
    // the file offset does not disturb them.
    let data = unsafe { libc::lseek(fd, at_off, libc::SEEK_DATA) };
    if data < 0 {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::ENXIO) => Ok((end - at, false)), // only a hole up to the end
            _ => Ok((end - at, true)),
        };
    }
    let data = data as u64;
    if data > at {
        return Ok((data.min(end) - at, false));
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, at_off, libc::SEEK_HOLE) };
    let hole = if hole < 0 { end } else { (hole as u64).min(end) };
    Ok((hole.max(at + 1) - at, true))
}

impl ReadAt for Disk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.size => {}
            _ => return Err(crate::read_at::eof(offset, buf.len(), self.size)),
        }
        match &self.backend {
            Backend::Raw(file) => std::os::unix::fs::FileExt::read_exact_at(file, buf, offset),
            Backend::Qcow2(access) => access.read(buf, offset),
            Backend::Source(source) => source.read_exact_at(buf, offset),
        }
    }
    fn size(&self) -> u64 {
        self.size
    }
}

fn image_folder(path: &Path) -> io::Result<PathBuf> {
    path.canonicalize()?
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| io::Error::other("the image has no parent folder"))
}

/// The format `qemu-img info` finds, or `None` when qemu-img is not installed (then only raw
/// and qcow2 are readable).
fn qemu_img_format(path: &Path) -> io::Result<Option<String>> {
    let Some(info) = qemu_img_info(path)? else { return Ok(None) };
    Ok(info.get("format").and_then(|f| f.as_str()).map(str::to_string))
}

fn qemu_img_info(path: &Path) -> io::Result<Option<serde_json::Value>> {
    let out = match Command::new("qemu-img").args(["info", "--output=json"]).arg(path).output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !out.status.success() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("qemu-img cannot read it: {}", String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("qemu-img info: {e}")))
}

/// Refuses an image whose backing file or vmdk extents lie outside its own folder.
fn check_references(path: &Path) -> io::Result<()> {
    let Some(info) = qemu_img_info(path)? else { return Ok(()) };
    let folder = image_folder(path)?;
    let gate = SameFolderGate { folder: folder.clone() };
    if let Some(backing) = info.get("full-backing-filename").or(info.get("backing-filename")).and_then(|b| b.as_str()) {
        gate.check(Some(&folder.join(backing)))?;
    }
    let extents = info.pointer("/format-specific/data/extents").and_then(|e| e.as_array());
    for extent in extents.into_iter().flatten() {
        if let Some(name) = extent.get("filename").and_then(|f| f.as_str()) {
            gate.check(Some(&folder.join(name)))?;
        }
    }
    Ok(())
}

/// A qcow2 whose tables or clusters lie past the end of the file (a truncated image) is
/// refused here: imago, like qemu-img, would read what is missing as zeros and so turn lost
/// data into zeros without a word. Reads the L1 table and every L2 table once, one cluster at
/// a time (what `qemu-img check` reads, far less than the data).
fn check_qcow2_tables(file: &File, len: u64) -> io::Result<()> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, format!("qcow2: {what}"));
    let mut header = [0u8; 104];
    let header_len = len.min(104) as usize;
    file.read_exact_at(&mut header[..header_len], 0).map_err(|_| bad("header is truncated".into()))?;
    let be32 = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let be64 = |at: usize| (u64::from(be32(at)) << 32) | u64::from(be32(at + 4));
    let cluster_bits = be32(20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(bad(format!("cluster_bits {cluster_bits} is outside 9..21")));
    }
    let cluster = 1u64 << cluster_bits;
    // Version 3 may use extended L2 entries (incompatible bit 4): 16 bytes instead of 8.
    let extended_l2 = be32(4) >= 3 && header_len >= 80 && be64(72) & (1 << 4) != 0;
    let entry_len = if extended_l2 { 16 } else { 8 };
    let (l1_entries, l1_offset) = (u64::from(be32(36)), be64(40));
    let past_end = |what: &str, at: u64, n: u64| {
        bad(format!("{what} at byte {at} (+{n}) lies past the end of the file ({len} bytes): truncated?"))
    };
    let l1_len = l1_entries.saturating_mul(8);
    // qemu's own limit on the L1 table, so that a hostile header cannot make us allocate more.
    const MAX_L1_BYTES: u64 = 32 << 20;
    if l1_len > MAX_L1_BYTES {
        return Err(bad(format!("the L1 table of {l1_len} bytes exceeds qemu's limit of {MAX_L1_BYTES}")));
    }
    if l1_offset.checked_add(l1_len).is_none_or(|end| end > len) {
        return Err(past_end("the L1 table", l1_offset, l1_len));
    }
    // Bounded by the file: the L1 table was just shown to lie inside it.
    let mut l1 = vec![0u8; l1_len as usize];
    file.read_exact_at(&mut l1, l1_offset)?;
    let mut l2 = vec![0u8; cluster as usize];
    let compressed_offset_mask = (1u64 << (62 - (cluster_bits - 8))) - 1;
    for (i, entry) in l1.chunks_exact(8).enumerate() {
        let l2_offset = u64::from_be_bytes(entry.try_into().unwrap_or([0; 8])) & 0x00ff_ffff_ffff_fe00;
        if l2_offset == 0 {
            continue;
        }
        if l2_offset.saturating_add(cluster) > len {
            return Err(past_end(&format!("L2 table {i}"), l2_offset, cluster));
        }
        file.read_exact_at(&mut l2, l2_offset)?;
        for (j, e) in l2.chunks_exact(entry_len).enumerate() {
            let e = u64::from_be_bytes(e[..8].try_into().unwrap_or([0; 8]));
            let l2_entries = cluster / entry_len as u64;
            let guest = (i as u64).saturating_mul(l2_entries).saturating_add(j as u64).saturating_mul(cluster);
            let (host, need) =
                if e & (1 << 62) != 0 { (e & compressed_offset_mask, 1) } else { (e & 0x00ff_ffff_ffff_fe00, cluster) };
            if host != 0 && host.saturating_add(need) > len {
                return Err(past_end(&format!("the cluster for guest offset {guest}"), host, need));
            }
        }
    }
    Ok(())
}

/// Lets a qcow2 image open the files it references (backing files, external data files)
/// only when they lie in the image's own folder.
struct SameFolderGate {
    folder: PathBuf,
}

impl SameFolderGate {
    fn check(&self, path: Option<&Path>) -> io::Result<()> {
        let inside = path
            .and_then(|p| p.canonicalize().ok())
            .and_then(|p| p.parent().map(|parent| parent == self.folder))
            .unwrap_or(false);
        if inside {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "referenced file {:?} is not in the image's folder {:?}",
                    path.unwrap_or(Path::new("?")),
                    self.folder
                ),
            ))
        }
    }
}

impl imago::format::gate::ImplicitOpenGate<ImagoFile> for SameFolderGate {
    async fn open_format<F: FormatDriverBuilder<ImagoFile>>(
        &mut self,
        builder: F,
    ) -> io::Result<FormatAccess<ImagoFile>> {
        self.check(builder.get_image_path().as_deref())?;
        let gate = SameFolderGate { folder: self.folder.clone() };
        Ok(FormatAccess::new(Box::pin(builder.open(gate)).await?))
    }

    async fn open_storage(&mut self, options: StorageOpenOptions) -> io::Result<ImagoFile> {
        self.check(options.get_filename())?;
        ImagoFile::open(options).await
    }
}
