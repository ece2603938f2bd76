//! Checkin: a disk image in, rows and chunks out.
//!
//! ```text
//! open disk (raw | qcow2) -> partitions -> filesystems (ext2/3/4) -> files, packages, OS facts
//!   regular file contents -> content-defined chunks ------------------\
//!   every other non-zero byte, in disk order -> content-defined chunks -> packs (zstd)
//!   disk map: file / raw / zero extents tiling the whole disk
//! append rows: chunks, partitions, files, packages, extents; then, under the library lock,
//! provenance and the images row (the commit point)
//! ```
//!
//! Hashing and compression run on every core (rayon); reads stream in bounded buffers, so
//! memory does not grow with the image.

use crate::catalog::*;
use crate::library::{Origin, actor};
use crate::locks::InFlight;
use crate::store::{ChunkHash, Chunker, Compression, PackWriter, Packs, StoredChunk, hex};
use crate::{Error, IoContext, Library, Progress, Result, now_ns};
use imagelake_connectors::disk::Disk;
use imagelake_connectors::packages::{Package, apk, dpkg, rpm};
use imagelake_connectors::{Mapped, ReadAt, Span, btrfs, ext4, fs, is_zero, lvm, os, partition, to_disk, vfat, xfs};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod disk_map;
mod edited;
pub(crate) mod root_fs;
mod survey;

use disk_map::{RawStream, disk_map, file_pieces};
use edited::{Edited, ParentDisk};
use root_fs::{find_packages, read_small_file};
use survey::{Survey, survey};

/// What a checkin did, for the one-screen summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckinSummary {
    pub image_id: i64,
    pub name: String,
    pub version: i64,
    pub parent_id: Option<i64>,
    pub source_format: String,
    pub virtual_size: u64,
    /// Bytes read from the image (known-zero ranges are not read).
    pub bytes_read: u64,
    /// Bytes of the disk that are zeros: stored nowhere.
    pub bytes_zero: u64,
    /// Uncompressed bytes of chunks this checkin added to the store.
    pub bytes_new: u64,
    /// Of those, file contents; the rest is metadata and free space (the raw stream).
    pub bytes_new_content: u64,
    /// What those chunks take in packs (compressed).
    pub bytes_stored: u64,
    /// Bytes of chunks the store already held (from any image, or earlier in this one).
    pub bytes_deduplicated: u64,
    pub chunks_new: u64,
    /// How many threads hashed and compressed chunks (the cores the checkin kept busy).
    pub threads: usize,
    pub partitions: usize,
    pub files: usize,
    pub packages: usize,
    pub os: Option<String>,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// How a checkin treats what it cannot read, and whom it tells how far it got.
#[derive(Clone, Default)]
pub struct CheckinOptions {
    /// Store what has a bad structure (a filesystem that does not parse, a partition past the
    /// end of the disk, a disk with no partition table and no filesystem) as raw bytes, with a
    /// warning, instead of refusing the image.
    pub raw_on_error: bool,
    pub progress: Option<Arc<dyn Progress>>,
}

impl Library {
    /// Checks the image at `path` in as the next version of `name`.
    ///
    /// An image is refused, leaving the library as it was, when its structure is bad (unless
    /// `options.raw_on_error`); nothing is written before the image has been read through.
    pub async fn checkin(&self, path: &Path, name: &str, options: CheckinOptions) -> Result<CheckinSummary> {
        let origin = Origin {
            operation: "checkin".into(),
            arguments: serde_json::json!({ "source": path.display().to_string(), "name": name }),
            parent: None,
        };
        self.checkin_from(path, name, options, origin, |_| Ok(())).await
    }

    /// Checks a disk in as the next version of `name`, made by `origin`. `accept` sees the
    /// files read from the disk before anything of it is committed, and may refuse it (an
    /// edit's check that the tree is the one intended).
    pub(crate) async fn checkin_from(
        &self,
        path: &Path,
        name: &str,
        options: CheckinOptions,
        origin: Origin,
        accept: impl FnOnce(&[FileRow]) -> Result<()>,
    ) -> Result<CheckinSummary> {
        let (source, scratch) = (path.to_path_buf(), self.tmp().to_path_buf());
        let open = move || Disk::open(&source, &scratch);
        self.checkin_disk(&path.display().to_string(), open, None, name, options, origin, accept).await
    }

    /// Checks in as the next version of `name` the disk `open` gives (named `image` in
    /// errors); or, with `edited`, an edit of a version's disk, of which only the written
    /// ranges and the files not carried over are read.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn checkin_disk(
        &self,
        image: &str,
        open: impl FnOnce() -> std::result::Result<Disk, imagelake_connectors::Error> + Send + 'static,
        edited: Option<Edited>,
        name: &str,
        options: CheckinOptions,
        origin: Origin,
        accept: impl FnOnce(&[FileRow]) -> Result<()>,
    ) -> Result<CheckinSummary> {
        crate::library::check_name(name)?;
        let started = Instant::now();
        let reading = self.reading()?;
        // From the moment it learns which chunks exist until its commit: gc waits meanwhile
        // (an edit has held the writers lock since before it read them).
        let (writing, parent_disk, known, scratch, checks) = match edited {
            Some(Edited { writing, parent_disk, known, scratch, checks }) => {
                (writing, Some(parent_disk), known, Some(scratch), Some(checks))
            }
            None => (self.writing().await?, None, self.catalog().chunk_hashes().await?, None, None),
        };
        let (library, label, holder) = (self.clone(), image.to_string(), writing.holder());
        let ingest = tokio::task::spawn_blocking(move || {
            ingest(&library, &label, open, &options, known, parent_disk.as_deref(), || {
                library.allocate_image_id(&holder)
            })
        });
        let failed = |e: tokio::task::JoinError| crate::task_failed(format!("checking in {image}"))(e);
        let checked = async {
            match checks {
                Some(checks) => checks.await.map_err(failed)?,
                None => Ok(()),
            }
        };
        let (ingest, checked) = tokio::join!(ingest, checked);
        let ingest = match (ingest.map_err(failed).and_then(|i| i), checked) {
            (Ok(ingest), Ok(())) => ingest,
            (Ok(ingest), Err(e)) => return Err(discard(self.packs(), &ingest, e)),
            (Err(e), _) => return Err(e),
        };
        let image_id = ingest.image_id;
        crate::trace::phase("checkin: disk read, new chunks stored");
        if let Err(e) = accept(&ingest.files) {
            return Err(discard(self.packs(), &ingest, e));
        }

        let catalog = self.catalog();
        let chunk_rows: Vec<ChunkRow> = ingest.chunks.iter().map(ChunkRow::from).collect();
        // One table each, so at once; none is visible before the images row. An edit's
        // scratch file, read through, goes meanwhile (a sparse file takes a while to free).
        let remove = async {
            let Some(path) = scratch else { return Ok(()) };
            let removed = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
            removed
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .io_context(|| "removing the edit's scratch file".into())
        };
        let manifests = async {
            catalog.append_manifest(image_id, &ingest.files).await?;
            catalog.append_manifest(image_id, &ingest.extents).await
        };
        tokio::try_join!(
            catalog.append(&chunk_rows),
            catalog.append(&ingest.partitions),
            catalog.append(&ingest.packages),
            manifests,
            remove,
        )?;

        let stats = &ingest.stats;
        crate::trace::phase("checkin: rows appended");
        let mut image = ImageRow {
            image_id,
            name: name.to_string(),
            version: 0,
            parent_id: None,
            created_at: now_ns(),
            created_by: actor(),
            state: ImageState::Active,
            source_format: ingest.format.clone(),
            virtual_size: ingest.virtual_size as i64,
            stored_bytes_new: stats.stored.load(Relaxed) as i64,
            os_name: ingest.os.id.clone(),
            os_version: ingest.os.version_id.clone(),
            hostname: ingest.hostname.clone(),
            description: ingest.os.pretty_name.clone(),
        };
        // The version number is handed out at commit time, under the library lock.
        self.commit(&mut image, origin, &writing).await?;
        crate::trace::phase("checkin: committed");
        drop((ingest.in_flight, writing));
        let mut warnings = ingest.warnings;
        // After the commit point: a failure here leaves a committed image whose rows are
        // found by a scan instead of an index, or in more fragments than need be.
        {
            let _lock = self.lock()?;
            if let Err(e) = catalog.maintain(Maintenance::AFTER_CHECKIN).await {
                warnings.push(format!("the catalog was not compacted or its indexes not brought up to date: {e}"));
            }
        }
        crate::trace::phase("checkin: catalog maintained");
        // Files the commit and the maintenance superseded, when no reader may still need them.
        // On a bucket, finding them lists every table's objects, which grows with the library
        // and would outweigh the checkin itself: there gc, repack and `check --reclaim` prune.
        drop(reading);
        if self.home().folder().is_some() {
            if let Err(e) = self.prune().await {
                warnings.push(format!("superseded catalog files were not removed: {e}"));
            }
            crate::trace::phase("checkin: superseded catalog files pruned");
        }
        Ok(CheckinSummary {
            image_id,
            name: name.to_string(),
            version: image.version,
            parent_id: image.parent_id,
            source_format: ingest.format.clone(),
            virtual_size: ingest.virtual_size,
            bytes_read: stats.read.load(Relaxed),
            bytes_zero: stats.zero.load(Relaxed),
            bytes_new: stats.new.load(Relaxed),
            bytes_new_content: stats.new_content.load(Relaxed),
            bytes_stored: stats.stored.load(Relaxed),
            bytes_deduplicated: stats.dedup.load(Relaxed),
            chunks_new: ingest.chunks.len() as u64,
            threads: ingest.threads,
            partitions: ingest.partitions.len(),
            files: ingest.files.len(),
            packages: ingest.packages.len(),
            os: ingest.os.pretty_name.clone(),
            warnings,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

#[derive(Default)]
struct Stats {
    read: AtomicU64,
    zero: AtomicU64,
    new: AtomicU64,
    new_content: AtomicU64,
    stored: AtomicU64,
    dedup: AtomicU64,
}

/// A checkin refused after its disk was read (`why`): the packs it wrote hold only chunks of
/// the version that is not made (every checkin writes packs of its own), so they go now,
/// rather than wait for `check --reclaim`. Returns `why`.
fn discard(packs: &Packs, ingest: &Ingest, why: Error) -> Error {
    let written: HashSet<&str> = ingest.chunks.iter().map(|c| c.location.pack.as_str()).collect();
    for pack in written {
        let _ = packs.remove(pack);
    }
    why
}

/// Everything the blocking phase produces; nothing of it is visible until committed.
struct Ingest {
    image_id: i64,
    /// Held until the commit is done.
    in_flight: InFlight,
    threads: usize,
    format: String,
    virtual_size: u64,
    chunks: Vec<StoredChunk>,
    partitions: Vec<PartitionRow>,
    files: Vec<FileRow>,
    packages: Vec<PackageRow>,
    extents: Vec<ExtentRow>,
    os: os::OsRelease,
    hostname: Option<String>,
    warnings: Vec<String>,
    stats: Stats,
}

/// The chunk sink shared by all workers: dedups against the store and this checkin, and
/// appends new chunks to packs.
struct Sink {
    known: Mutex<HashSet<ChunkHash>>,
    threads: Mutex<HashSet<std::thread::ThreadId>>,
    packs: Mutex<PackWriter>,
    stats: Stats,
    progress: Option<Arc<dyn Progress>>,
}

impl Sink {
    /// Stores `data` (file content, or bytes of the raw stream) unless the store has it;
    /// returns its hash.
    fn put(&self, data: &[u8], content: bool) -> std::io::Result<ChunkHash> {
        let hash = *blake3::hash(data).as_bytes();
        self.threads.lock().map_err(|_| poisoned())?.insert(std::thread::current().id());
        let fresh = self.known.lock().map_err(|_| poisoned())?.insert(hash);
        if fresh {
            self.stats.new.fetch_add(data.len() as u64, Relaxed);
            if content {
                self.stats.new_content.fetch_add(data.len() as u64, Relaxed);
            }
            let full = self.packs.lock().map_err(|_| poisoned())?.add(hash, data);
            if let Some(frame) = full {
                // Compressed outside the lock, so that every worker compresses at once.
                let compressed = frame.compress()?;
                self.packs.lock().map_err(|_| poisoned())?.write(compressed)?;
            }
        } else {
            self.stats.dedup.fetch_add(data.len() as u64, Relaxed);
        }
        Ok(hash)
    }
}

impl Sink {
    fn phase(&self, name: &str, total: u64) {
        if let Some(p) = &self.progress {
            p.phase(name, total);
        }
    }
    fn advance(&self, bytes: u64) {
        if let Some(p) = &self.progress {
            p.advance(bytes);
        }
    }
}

fn poisoned() -> std::io::Error {
    std::io::Error::other("a checkin worker failed")
}

/// A regular file's content, chunked: `(content_offset, length, hash)`; `None` = all zeros
/// (not stored).
struct Content {
    hash: String,
    chunks: Vec<(u64, u64, Option<ChunkHash>)>,
}

/// One filesystem that was indexed, and where its volume lies on the disk.
struct IndexedFs {
    partition: i64,
    spans: Vec<Span>,
    fs: fs::Filesystem,
}

impl IndexedFs {
    /// The volume as a byte source (its spans were checked against the disk by `survey`).
    fn source<'a>(&self, disk: &'a Disk) -> std::io::Result<Mapped<&'a Disk>> {
        Mapped::new(disk, self.spans.clone())
    }
}

const READ_BUF: usize = 1 << 20;

fn ingest(
    library: &Library,
    image: &str,
    open: impl FnOnce() -> std::result::Result<Disk, imagelake_connectors::Error>,
    options: &CheckinOptions,
    known: HashSet<ChunkHash>,
    parent_disk: Option<&ParentDisk>,
    allocate_image_id: impl FnOnce() -> Result<i64>,
) -> Result<Ingest> {
    let image_err = |message: String| Error::Image { image: image.to_string(), message };
    // The image could not be read (rather than read and found wrong): an I/O error, worded
    // as the image error would be.
    let disk = open().map_err(|e| match e.kind() {
        imagelake_connectors::ErrorKind::Io => Error::Io { context: format!("image {image}"), error: e.into() },
        _ => image_err(e.to_string()),
    })?;
    let virtual_size = disk.size();
    let Survey { mut partitions, indexed, mut warnings } = survey(&disk, options.raw_on_error).map_err(image_err)?;
    // The image reads through: from here on the library is written to.
    let image_id = allocate_image_id()?;
    let in_flight = library.in_flight(image_id)?;
    for p in &mut partitions {
        p.image_id = image_id;
    }
    let sink = Sink {
        known: Mutex::new(known),
        threads: Mutex::new(HashSet::new()),
        packs: Mutex::new(PackWriter::new(
            library.packs(),
            library.tmp(),
            format!("{image_id}/{}/{}", std::process::id(), now_ns()),
            Compression::CHECKIN,
        )),
        stats: Stats::default(),
        progress: options.progress.clone(),
    };

    // Regular file contents, each inode once, a filesystem at a time, on every core; an
    // edit's unchanged files keep their parent's content, unread.
    let mut contents: HashMap<(usize, u64), Content> = HashMap::new();
    let mut unchanged: HashMap<(usize, u64), String> = HashMap::new();
    for (fs_index, ifs) in indexed.iter().enumerate() {
        let mut seen = HashSet::new();
        let mut work: Vec<&fs::File> =
            ifs.fs.files.iter().filter(|f| f.kind == fs::FileKind::File && seen.insert(f.inode)).collect();
        if let Some(parent_disk) = parent_disk {
            work.retain(|f| match parent_disk.unchanged(ifs.partition, &ifs.spans, f) {
                Some(hash) => {
                    unchanged.insert((fs_index, f.inode), hash);
                    false
                }
                None => true,
            });
        }
        // Disk order keeps reads sequential and packs in the order a checkout reads them.
        work.sort_by_key(|f| f.extents.first().map_or(0, |e| e.physical));
        let p = ifs.partition;
        sink.phase(&format!("partition {p} ({}) files", ifs.fs.fs_type), work.iter().map(|f| f.size).sum());
        let volume = ifs.source(&disk).map_err(|e| image_err(format!("partition {p}: {e}")))?;
        let chunked: Vec<(u64, Content)> = work
            .par_iter()
            .map(|file| {
                let content = chunk_content(&sink, &volume, file)
                    .map_err(|e| image_err(format!("partition {p}: file {}: {e}", file.path)))?;
                Ok((file.inode, content))
            })
            .collect::<Result<_>>()?;
        contents.extend(chunked.into_iter().map(|(inode, c)| ((fs_index, inode), c)));
    }

    // The manifest rows, and the disk pieces that file contents fill.
    let mut files = Vec::new();
    let mut pieces = Vec::new();
    // The disk ranges of the files carried over: their parent's extents stay file extents.
    let mut kept = Vec::new();
    let mut packages = Vec::new();
    let (mut os_release, mut hostname) = (os::OsRelease::default(), None);
    for (fs_index, ifs) in indexed.iter().enumerate() {
        let mut placed = HashSet::new();
        for f in &ifs.fs.files {
            let content = contents.get(&(fs_index, f.inode));
            if let Some(content) = content
                && placed.insert(f.inode)
            {
                file_pieces(&ifs.spans, f, content, &mut pieces);
            }
            let carried = unchanged.get(&(fs_index, f.inode));
            let row = file_row(image_id, ifs.partition, &ifs.spans, f, content, carried);
            if carried.is_some() {
                kept.extend(row.extent_map.iter().map(|e| (e.disk_offset as u64, (e.disk_offset + e.length) as u64)));
            }
            files.push(row);
        }
        // Packages and OS facts come from the first filesystem that has them.
        let window = ifs.source(&disk).map_err(|e| image_err(format!("partition {}: {e}", ifs.partition)))?;
        let by_path = os_paths(&ifs.fs);
        let read = |path: &str| read_small_file(&by_path, &window, path);
        if packages.is_empty()
            && let Some((manager, found)) = find_packages(&by_path, &window, library.tmp(), &mut warnings)
        {
            packages = found
                .into_iter()
                .map(|p| PackageRow {
                    image_id,
                    manager: manager.into(),
                    name: p.name,
                    version: p.version,
                    arch: p.arch,
                    source: p.source,
                    installed_size: p.installed_size.map(|s| s as i64),
                    status: p.status,
                    source_version: Some(p.source_version),
                    epoch: p.epoch.map(|e| e as i64),
                    release: p.release,
                    source_rpm: p.source_rpm,
                    licenses: Some(p.licenses),
                })
                .collect();
        }
        if os_release.id.is_none()
            && let Some(text) = os::OS_RELEASE_PATHS.iter().find_map(|p| read(p))
        {
            os_release = os::parse_os_release(&String::from_utf8_lossy(&text));
        }
        if hostname.is_none() {
            hostname = read(os::HOSTNAME_PATH).and_then(|t| os::parse_hostname(&String::from_utf8_lossy(&t)));
        }
    }

    let kept = crate::ranges::merged(kept);
    let parent_disk = parent_disk.map(|b| (b, kept.as_slice()));
    let extents = disk_map(&sink, &disk, image_id, pieces, parent_disk).map_err(|e| image_err(e.to_string()))?;
    let threads = sink.threads.lock().map_or(0, |t| t.len());
    let Sink { packs, stats, .. } = sink;
    let chunks = packs
        .into_inner()
        // Poisoned only by a worker that panicked while writing: a bug, not the image's fault.
        .map_err(|_| Error::Internal(format!("checking in {image}: a worker panicked while writing packs")))?
        .finish()
        .io_context(|| format!("writing packs of {image}"))?;
    let frames: HashSet<(&str, u64, u32)> =
        chunks.iter().map(|c| (c.location.pack.as_str(), c.location.offset, c.location.frame_size)).collect();
    stats.stored.store(frames.iter().map(|f| u64::from(f.2)).sum(), Relaxed);
    Ok(Ingest {
        image_id,
        in_flight,
        threads,
        format: disk.format().to_string(),
        virtual_size,
        chunks,
        partitions,
        files,
        packages,
        extents,
        os: os_release,
        hostname,
        warnings,
        stats,
    })
}

/// The files of `fs` by their path as the operating system installed there sees them (a
/// btrfs root may be a subvolume): for its packages and facts.
fn os_paths(fs: &fs::Filesystem) -> HashMap<&str, &fs::File> {
    let root = fs.os_root.trim_end_matches('/');
    (fs.files.iter())
        .filter_map(|f| match f.path.strip_prefix(root) {
            Some("") => Some(("/", f)),
            Some(path) if path.starts_with('/') => Some((path, f)),
            _ => None,
        })
        .collect()
}

/// Reads a regular file's content through its extents, chunks it and stores the chunks that
/// a disk range will name: a content the disk does not hold as it is (kept inside its inode,
/// or compressed) is read back through its filesystem, so it is only hashed.
fn chunk_content(sink: &Sink, src: &dyn ReadAt, file: &fs::File) -> std::io::Result<Content> {
    let mut hasher = blake3::Hasher::new();
    let mut chunker = Chunker::new();
    let mut chunks = Vec::new();
    let stored = file.held_as_is() && file.extents.iter().any(|e| !e.unwritten);
    let mut emit = |offset: u64, bytes: &[u8]| -> std::io::Result<()> {
        let hash = if is_zero(bytes) || !stored { None } else { Some(sink.put(bytes, true)?) };
        chunks.push((offset, bytes.len() as u64, hash));
        Ok(())
    };
    // Sized to the file: most files are small, and zeroing a full buffer for each of them
    // was a fifth of a checkin's CPU time.
    let mut buf = vec![0u8; file.size.min(READ_BUF as u64) as usize];
    let mut offset = 0u64;
    while offset < file.size {
        let n = (file.size - offset).min(READ_BUF as u64) as usize;
        file.read_content(src, offset, &mut buf[..n])?;
        hasher.update(&buf[..n]);
        chunker.push(&buf[..n], &mut emit)?;
        offset += n as u64;
        sink.advance(n as u64);
    }
    chunker.finish(&mut emit)?;
    sink.stats.read.fetch_add(file.size, Relaxed);
    Ok(Content { hash: hasher.finalize().to_hex().to_string(), chunks })
}

/// The row of file `f`; its content hash from `content` as chunked, or `carried` over from the
/// parent version.
fn file_row(
    image_id: i64,
    partition: i64,
    spans: &[Span],
    f: &fs::File,
    content: Option<&Content>,
    carried: Option<&String>,
) -> FileRow {
    let (dev_major, dev_minor) = match f.rdev {
        Some((major, minor)) => (Some(i64::from(major)), Some(i64::from(minor))),
        None => (None, None),
    };
    FileRow {
        image_id,
        partition,
        path: f.path.clone(),
        kind: f.kind,
        mode: i64::from(f.mode),
        uid: i64::from(f.uid),
        gid: i64::from(f.gid),
        size: f.size as i64,
        mtime: f.mtime.saturating_mul(1_000_000_000).saturating_add(i64::from(f.mtime_nsec)),
        // Readers give inode numbers below 2^63.
        inode: i64::try_from(f.inode).unwrap_or(i64::MAX),
        nlink: i64::from(f.nlink),
        link_target: f.link_target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
        dev_major,
        dev_minor,
        xattrs: f.xattrs.clone(),
        content_hash: match (f.kind, content.map(|c| &c.hash).or(carried)) {
            (_, Some(hash)) => Some(hash.clone()),
            // Empty regular files have no chunks but still a content hash.
            (fs::FileKind::File, None) => Some(blake3::hash(b"").to_hex().to_string()),
            _ => None,
        },
        // Where the file's bytes lie as they are: compressed extents hold other bytes.
        extent_map: f
            .extents
            .iter()
            .filter(|e| e.encoded.is_none())
            .flat_map(|e| {
                let mut file_offset = e.logical;
                to_disk(spans, e.physical, e.len).map(move |(disk_offset, len)| {
                    file_offset += len;
                    FileExtent {
                        file_offset: (file_offset - len) as i64,
                        disk_offset: disk_offset as i64,
                        length: len as i64,
                        unwritten: e.unwritten,
                    }
                })
            })
            .collect(),
    }
}
