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
use crate::store::{ChunkHash, Chunker, PackWriter, StoredChunk, hex};
use crate::library::InFlight;
use crate::{Error, IoContext, Library, Result, now_ns};
use imagelake_connectors::disk::Disk;
use imagelake_connectors::packages::{Package, apk, dpkg, rpm};
use imagelake_connectors::{Mapped, ReadAt, Span, ext4, fs, is_zero, lvm, os, partition, to_disk, vfat};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

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

/// Progress of a checkin, phase by phase (each partition's files, then the disk map).
pub trait Progress: Send + Sync {
    /// A phase of `total` bytes begins.
    fn phase(&self, name: &str, total: u64);
    /// `bytes` more of the current phase are done (called from any thread).
    fn advance(&self, bytes: u64);
}

impl Library {
    /// Checks the image at `path` in as the next version of `name`.
    ///
    /// An image is refused, leaving the library as it was, when its structure is bad (unless
    /// `options.raw_on_error`); nothing is written before the image has been read through.
    pub async fn checkin(&self, path: &Path, name: &str, options: CheckinOptions) -> Result<CheckinSummary> {
        crate::library::check_name(name)?;
        let started = Instant::now();
        let known = self.known_chunks().await?;
        let (root, source) = (self.root().to_path_buf(), path.to_path_buf());
        let ingest = tokio::task::spawn_blocking(move || {
            ingest(&root, &source, &options, known, || crate::library::allocate_image_id(&root))
        })
            .await
            .map_err(|e| Error::Image { image: path.display().to_string(), message: format!("checkin failed: {e}") })??;
        let image_id = ingest.image_id;

        let catalog = self.catalog();
        let chunk_rows: Vec<ChunkRow> = ingest.chunks.iter().map(chunk_row).collect();
        catalog.append(&chunk_rows).await?;
        catalog.append(&ingest.partitions).await?;
        catalog.append(&ingest.files).await?;
        catalog.append(&ingest.packages).await?;
        catalog.append(&ingest.extents).await?;

        let stats = &ingest.stats;
        let mut image = ImageRow {
            image_id,
            name: name.to_string(),
            version: 0,
            parent_id: None,
            created_at: now_ns(),
            created_by: actor(),
            state: "active".into(),
            source_format: ingest.format.clone(),
            virtual_size: ingest.virtual_size as i64,
            stored_bytes_new: stats.stored.load(Relaxed) as i64,
            os_name: ingest.os.id.clone(),
            os_version: ingest.os.version_id.clone(),
            hostname: ingest.hostname.clone(),
            description: ingest.os.pretty_name.clone(),
        };
        // The version number is handed out at commit time, under the library lock.
        self.commit(&mut image, path).await?;
        drop(ingest.in_flight);

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
            bytes_stored: stats.stored.load(Relaxed),
            bytes_deduplicated: stats.dedup.load(Relaxed),
            chunks_new: ingest.chunks.len() as u64,
            threads: ingest.threads,
            partitions: ingest.partitions.len(),
            files: ingest.files.len(),
            packages: ingest.packages.len(),
            os: ingest.os.pretty_name.clone(),
            warnings: ingest.warnings,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Writes provenance and then the images row, holding the library lock so that the
    /// version number cannot be taken by a concurrent commit.
    async fn commit(&self, image: &mut ImageRow, source: &Path) -> Result<()> {
        let lock = self.lock()?;
        let newest = self.images().await?.into_iter().filter(|i| i.name == image.name).max_by_key(|i| i.version);
        image.version = newest.as_ref().map_or(1, |i| i.version + 1);
        image.parent_id = newest.map(|i| i.image_id);
        let provenance = ProvenanceRow {
            image_id: image.image_id,
            parent_id: image.parent_id,
            operation: "checkin".into(),
            arguments: serde_json::json!({ "source": source.display().to_string(), "name": image.name }).to_string(),
            actor: image.created_by.clone(),
            at: image.created_at,
        };
        self.catalog().append(&[provenance]).await?;
        self.catalog().append(std::slice::from_ref(image)).await?;
        drop(lock);
        Ok(())
    }

    /// The hashes of every chunk in the store, for deduplication.
    async fn known_chunks(&self) -> Result<HashSet<ChunkHash>> {
        let batches = self.catalog().scan(ChunkRow::NAME, &["chunk_hash"], None).await?;
        let mut known = HashSet::new();
        for b in &batches {
            use arrow::array::AsArray;
            for h in b.column(0).as_string::<i32>().iter().flatten() {
                if let Some(h) = crate::store::parse_hex(h) {
                    known.insert(h);
                }
            }
        }
        Ok(known)
    }
}

fn actor() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into())
}

fn chunk_row(c: &StoredChunk) -> ChunkRow {
    ChunkRow {
        chunk_hash: hex(&c.hash),
        size: i64::from(c.location.size),
        stored_size: i64::from(c.location.stored_size),
        pack: c.location.pack.clone(),
        pack_offset: c.location.offset as i64,
    }
}

#[derive(Default)]
struct Stats {
    read: AtomicU64,
    zero: AtomicU64,
    new: AtomicU64,
    stored: AtomicU64,
    dedup: AtomicU64,
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
    /// Stores `data` unless the store has it; returns its hash.
    fn put(&self, data: &[u8]) -> std::io::Result<ChunkHash> {
        let hash = *blake3::hash(data).as_bytes();
        self.threads.lock().map_err(|_| poisoned())?.insert(std::thread::current().id());
        let fresh = self.known.lock().map_err(|_| poisoned())?.insert(hash);
        if fresh {
            let compressed = PackWriter::compress(data)?;
            self.stats.new.fetch_add(data.len() as u64, Relaxed);
            self.stats.stored.fetch_add(compressed.len() as u64, Relaxed);
            self.packs.lock().map_err(|_| poisoned())?.add(hash, data.len() as u32, &compressed)?;
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

/// Partitions and the filesystems read from them, before anything is written.
struct Survey {
    partitions: Vec<PartitionRow>,
    indexed: Vec<IndexedFs>,
    warnings: Vec<String>,
}

/// Reads the disk's structure. A bad structure refuses the image (the error says which
/// structure), or with `raw_on_error` leaves that part to be stored raw, with a warning.
fn survey(disk: &Disk, raw_on_error: bool) -> std::result::Result<Survey, String> {
    let parts = partition::read(disk).map_err(|e| e.to_string())?;
    let mut survey = Survey { partitions: Vec::new(), indexed: Vec::new(), warnings: Vec::new() };
    let refuse_or_warn = |problem: String, warnings: &mut Vec<String>| {
        if raw_on_error {
            warnings.push(format!("{problem}; stored raw"));
            Ok(())
        } else {
            Err(format!("{problem} (--raw-on-error stores such parts as raw bytes)"))
        }
    };
    let mut volume_groups = Vec::new();
    for p in parts {
        let mut row = PartitionRow {
            image_id: 0,
            partition: i64::from(p.index),
            scheme: p.scheme.to_string(),
            r#type: p.type_id.clone(),
            name: p.name.clone(),
            start: p.start as i64,
            size: p.size as i64,
            fs_type: None,
            fs_uuid: None,
            fs_label: None,
            fs_error: None,
        };
        let end = p.start.saturating_add(p.size);
        let spans = vec![Span { offset: 0, disk_offset: p.start, len: p.size }];
        match Mapped::new(disk, spans.clone()) {
            Err(_) => row.fs_error = Some(format!(
                "partition {} spans bytes {}..{end}, past the end of the disk ({} bytes)", p.index, p.start, disk.size()
            )),
            Ok(volume) => {
                if let Some(fs) = index_volume(&volume, &mut row) {
                    survey.indexed.push(IndexedFs { partition: row.partition, spans, fs });
                } else if row.fs_type.as_deref() == Some("lvm2") {
                    match lvm::read(&volume) {
                        Ok(vg) => {
                            row.fs_label = Some(vg.name.clone());
                            volume_groups.push((p.start, vg));
                        }
                        Err(e) => row.fs_error = Some(format!("partition {}: {e}", p.index)),
                    }
                } else if row.scheme == "none" && row.fs_type.is_none() {
                    row.fs_error = Some(format!(
                        "not a disk image: no partition table and no filesystem found in its {} bytes", disk.size()
                    ));
                }
            }
        }
        if let Some(problem) = &row.fs_error {
            refuse_or_warn(problem.clone(), &mut survey.warnings)?;
        }
        survey.partitions.push(row);
    }
    // Logical volumes are volumes like partitions, numbered after them. Each volume group
    // once, whichever of its physical volumes on this disk was read.
    let mut next = survey.partitions.iter().map(|p| p.partition).max().unwrap_or(0) + 1;
    let pv_starts: HashMap<String, u64> = volume_groups.iter().map(|(start, vg)| (vg.pv_uuid.clone(), *start)).collect();
    let pv_start = |uuid: &str| pv_starts.get(uuid).copied();
    let mut seen_groups = HashSet::new();
    for (_, vg) in volume_groups.iter().filter(|(_, vg)| seen_groups.insert(vg.name.clone())) {
        for lv in &vg.logical_volumes {
            let mut row = PartitionRow {
                image_id: 0,
                partition: next,
                scheme: "lvm".into(),
                r#type: lv.layout.clone(),
                name: format!("{}/{}", vg.name, lv.name),
                start: 0,
                size: lv.size as i64,
                fs_type: None,
                fs_uuid: None,
                fs_label: None,
                fs_error: None,
            };
            next += 1;
            let volume = vg.map(lv, &pv_start).map_err(|e| e.to_string()).and_then(|spans| {
                let volume = Mapped::new(disk, spans.clone()).map_err(|e| format!("lvm2: {}/{}: {e}", vg.name, lv.name))?;
                Ok((spans, volume))
            });
            match volume {
                Ok((spans, volume)) => {
                    row.start = spans.first().map_or(0, |s| s.disk_offset as i64);
                    if let Some(fs) = index_volume(&volume, &mut row) {
                        survey.indexed.push(IndexedFs { partition: row.partition, spans, fs });
                    }
                }
                Err(e) => row.fs_error = Some(format!("logical volume {}: {e}", row.name)),
            }
            if let Some(problem) = &row.fs_error {
                refuse_or_warn(problem.clone(), &mut survey.warnings)?;
            }
            survey.partitions.push(row);
        }
    }
    Ok(survey)
}

/// Finds the filesystem of a volume by its signature and, where imagelake indexes that kind,
/// reads it; a filesystem that does not parse is recorded in `fs_error`.
fn index_volume(volume: &dyn ReadAt, row: &mut PartitionRow) -> Option<fs::Filesystem> {
    row.fs_type = partition::fs_type(volume).map(str::to_string);
    let read = match row.fs_type.as_deref() {
        Some("ext4") => ext4::read(volume).map_err(|e| e.to_string()),
        Some("vfat") => vfat::read(volume).map_err(|e| e.to_string()),
        _ => return None,
    };
    match read {
        Ok(fs) => {
            row.fs_type = Some(fs.fs_type.to_string());
            row.fs_uuid = Some(fs.uuid.clone());
            row.fs_label = Some(fs.label.clone());
            Some(fs)
        }
        Err(e) => {
            row.fs_error = Some(format!("partition {}: {e}", row.partition));
            None
        }
    }
}

fn ingest(
    root: &Path,
    source: &Path,
    options: &CheckinOptions,
    known: HashSet<ChunkHash>,
    allocate_image_id: impl FnOnce() -> Result<i64>,
) -> Result<Ingest> {
    let image = source.display().to_string();
    let image_err = |message: String| Error::Image { image: image.clone(), message };
    let disk = Disk::open(source, &root.join("tmp")).map_err(|e| image_err(e.to_string()))?;
    let virtual_size = disk.size();
    let Survey { mut partitions, indexed, mut warnings } = survey(&disk, options.raw_on_error).map_err(image_err)?;
    // The image reads through: from here on the library is written to.
    let image_id = allocate_image_id()?;
    let in_flight = InFlight::new(root, image_id)?;
    for p in &mut partitions {
        p.image_id = image_id;
    }
    let sink = Sink {
        known: Mutex::new(known),
        threads: Mutex::new(HashSet::new()),
        packs: Mutex::new(PackWriter::new(root, format!("{image_id}/{}/{}", std::process::id(), now_ns()))),
        stats: Stats::default(),
        progress: options.progress.clone(),
    };

    // Regular file contents, each inode once, a filesystem at a time, on every core.
    let mut contents: HashMap<(usize, u32), Content> = HashMap::new();
    for (fs_index, ifs) in indexed.iter().enumerate() {
        let mut seen = HashSet::new();
        let mut work: Vec<&fs::File> =
            ifs.fs.files.iter().filter(|f| f.kind == fs::FileKind::File && seen.insert(f.inode)).collect();
        // Disk order keeps reads sequential and packs in the order a checkout reads them.
        work.sort_by_key(|f| f.extents.first().map_or(0, |e| e.physical));
        let p = ifs.partition;
        sink.phase(&format!("partition {p} ({}) files", ifs.fs.fs_type), work.iter().map(|f| f.size).sum());
        let volume = ifs.source(&disk).map_err(|e| image_err(format!("partition {p}: {e}")))?;
        let chunked: Vec<(u32, Content)> = work
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
            files.push(file_row(image_id, ifs.partition, &ifs.spans, f, content));
        }
        // Packages and OS facts come from the first filesystem that has them.
        let window = ifs.source(&disk).map_err(|e| image_err(format!("partition {}: {e}", ifs.partition)))?;
        let by_path: HashMap<&str, &fs::File> = ifs.fs.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let read = |path: &str| read_small_file(&by_path, &window, path);
        if packages.is_empty()
            && let Some((manager, found)) = find_packages(&by_path, &window, &root.join("tmp"), &mut warnings)
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

    let extents = disk_map(&sink, &disk, image_id, pieces).map_err(|e| image_err(e.to_string()))?;
    let threads = sink.threads.lock().map_or(0, |t| t.len());
    let Sink { packs, stats, .. } = sink;
    let chunks = packs.into_inner().map_err(|_| image_err("a checkin worker failed".into()))?
        .finish()
        .io_context(|| format!("writing packs in {}", root.display()))?;
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

/// Reads a regular file's content through its extents, chunks and stores it.
fn chunk_content(sink: &Sink, src: &dyn ReadAt, file: &fs::File) -> std::io::Result<Content> {
    let mut hasher = blake3::Hasher::new();
    let mut chunker = Chunker::new();
    let mut chunks = Vec::new();
    let mut emit = |offset: u64, bytes: &[u8]| -> std::io::Result<()> {
        let hash = if is_zero(bytes) { None } else { Some(sink.put(bytes)?) };
        chunks.push((offset, bytes.len() as u64, hash));
        Ok(())
    };
    let mut buf = vec![0u8; READ_BUF];
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

/// A disk range filled by file content.
struct Piece {
    disk_offset: u64,
    len: u64,
    chunk: Option<ChunkHash>,
    chunk_offset: u64,
    content_hash: String,
    content_offset: u64,
}

/// The disk ranges a file's content fills: its written extents, up to its size (the rest of
/// the last block is slack and stays raw), cut at chunk boundaries.
fn file_pieces(spans: &[Span], file: &fs::File, content: &Content, out: &mut Vec<Piece>) {
    for e in file.extents.iter().filter(|e| !e.unwritten) {
        let end = e.logical.saturating_add(e.len).min(file.size);
        let mut at = e.logical;
        // Chunks are sorted by offset: find the first one that overlaps.
        let mut i = content.chunks.partition_point(|c| c.0 + c.1 <= at);
        while at < end {
            let Some(&(c_off, c_len, c_hash)) = content.chunks.get(i) else { break };
            let n = (c_off + c_len).min(end) - at;
            // A volume's stretch may lie in several places on the disk (logical volumes).
            let mut done = 0;
            for (disk_offset, len) in to_disk(spans, e.physical + (at - e.logical), n) {
                out.push(Piece {
                    disk_offset,
                    len,
                    chunk: c_hash,
                    chunk_offset: at + done - c_off,
                    content_hash: content.hash.clone(),
                    content_offset: at + done,
                });
                done += len;
            }
            at += n;
            i += 1;
        }
    }
}

/// Builds the extents that tile the disk: file pieces where files own the bytes, and for
/// every other range zeros or raw chunks cut from the stream of all remaining bytes.
fn disk_map(sink: &Sink, disk: &Disk, image_id: i64, mut pieces: Vec<Piece>) -> std::io::Result<Vec<ExtentRow>> {
    sink.phase("disk map and raw bytes", disk.size());
    pieces.sort_by_key(|p| p.disk_offset);
    let mut extents = Vec::new();
    let mut raw = RawStream::new(sink, image_id);
    let mut at = 0u64;
    for mut p in pieces {
        if p.disk_offset + p.len <= at {
            continue; // wholly inside an earlier piece: a block two inodes claim
        }
        if p.disk_offset < at {
            let skip = at - p.disk_offset;
            (p.disk_offset, p.len, p.chunk_offset, p.content_offset) =
                (at, p.len - skip, p.chunk_offset + skip, p.content_offset + skip);
        }
        raw.gap(disk, at, p.disk_offset, &mut extents)?;
        extents.push(ExtentRow {
            image_id,
            disk_offset: p.disk_offset as i64,
            length: p.len as i64,
            kind: if p.chunk.is_some() { ExtentKind::File } else { ExtentKind::Zero },
            chunk_hash: p.chunk.as_ref().map(hex),
            chunk_offset: p.chunk_offset as i64,
            content_hash: Some(p.content_hash),
            content_offset: Some(p.content_offset as i64),
        });
        if p.chunk.is_none() {
            sink.stats.zero.fetch_add(p.len, Relaxed);
        }
        sink.advance(p.len);
        at = p.disk_offset + p.len;
    }
    raw.gap(disk, at, disk.size(), &mut extents)?;
    raw.finish(&mut extents)?;
    extents.sort_by_key(|e| e.disk_offset);
    check_tiling(&extents, disk.size())?;
    Ok(extents)
}

/// The extents must cover `[0, size)` exactly once, in order: checked before anything commits.
fn check_tiling(extents: &[ExtentRow], size: u64) -> std::io::Result<()> {
    let mut at = 0i64;
    for e in extents {
        if e.disk_offset != at || e.length <= 0 {
            return Err(std::io::Error::other(format!("internal: disk map has a gap or overlap at {at}")));
        }
        at += e.length;
    }
    if at as u64 != size {
        return Err(std::io::Error::other(format!("internal: disk map ends at {at}, disk at {size}")));
    }
    Ok(())
}

/// The bytes no file owns, in disk order, with zero blocks taken out, chunked as one stream
/// so that metadata and free space deduplicate like file content does.
struct RawStream<'a> {
    sink: &'a Sink,
    image_id: i64,
    chunker: Chunker,
    /// Disk ranges fed to the stream and not yet wholly chunked: (stream offset, disk offset, len).
    segments: VecDeque<(u64, u64, u64)>,
    stream_len: u64,
    /// Chunks cut but not yet hashed: hashed and stored in parallel batches.
    pending: Vec<(u64, Vec<u8>)>,
}

/// Zero detection works on blocks aligned to the disk; a shorter zero run stays in the stream.
const ZERO_BLOCK: u64 = 4096;

impl<'a> RawStream<'a> {
    fn new(sink: &'a Sink, image_id: i64) -> Self {
        RawStream { sink, image_id, chunker: Chunker::new(), segments: VecDeque::new(), stream_len: 0, pending: Vec::new() }
    }

    /// Feeds `[from, to)` of the disk: known-zero and all-zero blocks become zero extents,
    /// the rest goes to the stream.
    fn gap(&mut self, disk: &Disk, from: u64, to: u64, out: &mut Vec<ExtentRow>) -> std::io::Result<()> {
        if from >= to {
            return Ok(());
        }
        let mut buf = vec![0u8; READ_BUF];
        for run in disk.map(from, to - from)? {
            if !run.data {
                self.zero(run.offset, run.len, out);
                continue;
            }
            let mut at = run.offset;
            let end = run.offset + run.len;
            while at < end {
                let n = (end - at).min(READ_BUF as u64) as usize;
                disk.read_exact_at(&mut buf[..n], at)?;
                self.sink.stats.read.fetch_add(n as u64, Relaxed);
                // Walk aligned blocks, sending non-zero spans to the stream.
                let mut i = 0usize;
                let mut data_start = None;
                while i < n {
                    let block_end = (((at + i as u64) / ZERO_BLOCK + 1) * ZERO_BLOCK - at).min(n as u64) as usize;
                    let zero = is_zero(&buf[i..block_end]);
                    match (zero, data_start) {
                        (true, Some(s)) => {
                            self.data(at + s as u64, &buf[s..i], out)?;
                            data_start = None;
                        }
                        (false, None) => data_start = Some(i),
                        _ => {}
                    }
                    if zero {
                        self.zero(at + i as u64, (block_end - i) as u64, out);
                    }
                    i = block_end;
                }
                if let Some(s) = data_start {
                    self.data(at + s as u64, &buf[s..n], out)?;
                }
                at += n as u64;
            }
        }
        Ok(())
    }

    fn zero(&mut self, offset: u64, len: u64, out: &mut Vec<ExtentRow>) {
        self.sink.stats.zero.fetch_add(len, Relaxed);
        self.sink.advance(len);
        match out.last_mut() {
            Some(last) if last.kind == ExtentKind::Zero && last.content_hash.is_none()
                && (last.disk_offset + last.length) as u64 == offset => last.length += len as i64,
            _ => out.push(ExtentRow {
                image_id: self.image_id,
                disk_offset: offset as i64,
                length: len as i64,
                kind: ExtentKind::Zero,
                chunk_hash: None,
                chunk_offset: 0,
                content_hash: None,
                content_offset: None,
            }),
        }
    }

    fn data(&mut self, disk_offset: u64, bytes: &[u8], out: &mut Vec<ExtentRow>) -> std::io::Result<()> {
        self.sink.advance(bytes.len() as u64);
        match self.segments.back_mut() {
            Some(last) if last.1 + last.2 == disk_offset => last.2 += bytes.len() as u64,
            _ => self.segments.push_back((self.stream_len, disk_offset, bytes.len() as u64)),
        }
        self.stream_len += bytes.len() as u64;
        let pending = &mut self.pending;
        self.chunker.push(bytes, &mut |off, chunk: &[u8]| -> std::io::Result<()> {
            pending.push((off, chunk.to_vec()));
            Ok(())
        })?;
        if self.pending.len() >= 64 {
            self.flush(out)?;
        }
        Ok(())
    }

    /// Hashes and stores pending chunks in parallel, then maps them back onto the disk.
    fn flush(&mut self, out: &mut Vec<ExtentRow>) -> std::io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let hashes: Vec<ChunkHash> = pending.par_iter().map(|(_, c)| self.sink.put(c)).collect::<std::io::Result<_>>()?;
        for ((stream_off, chunk), hash) in pending.iter().zip(hashes) {
            let chunk_end = stream_off + chunk.len() as u64;
            while let Some(&(s_off, d_off, len)) = self.segments.front() {
                let from = s_off.max(*stream_off);
                let to = (s_off + len).min(chunk_end);
                if from < to {
                    out.push(ExtentRow {
                        image_id: self.image_id,
                        disk_offset: (d_off + (from - s_off)) as i64,
                        length: (to - from) as i64,
                        kind: ExtentKind::Raw,
                        chunk_hash: Some(hex(&hash)),
                        chunk_offset: (from - stream_off) as i64,
                        content_hash: None,
                        content_offset: None,
                    });
                }
                if s_off + len <= chunk_end {
                    self.segments.pop_front();
                } else {
                    break;
                }
            }
        }
        Ok(())
    }

    fn finish(mut self, out: &mut Vec<ExtentRow>) -> std::io::Result<()> {
        let pending = &mut self.pending;
        self.chunker.finish(&mut |off, chunk: &[u8]| -> std::io::Result<()> {
            pending.push((off, chunk.to_vec()));
            Ok(())
        })?;
        self.flush(out)
    }
}

fn file_row(image_id: i64, partition: i64, spans: &[Span], f: &fs::File, content: Option<&Content>) -> FileRow {
    let (dev_major, dev_minor) = match f.rdev {
        Some((major, minor)) => (Some(i64::from(major)), Some(i64::from(minor))),
        None => (None, None),
    };
    FileRow {
        image_id,
        partition,
        path: f.path.clone(),
        kind: f.kind.as_str(),
        mode: i64::from(f.mode),
        uid: i64::from(f.uid),
        gid: i64::from(f.gid),
        size: f.size as i64,
        mtime: f.mtime.saturating_mul(1_000_000_000).saturating_add(i64::from(f.mtime_nsec)),
        inode: i64::from(f.inode),
        nlink: i64::from(f.nlink),
        link_target: f.link_target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
        dev_major,
        dev_minor,
        xattrs: f.xattrs.clone(),
        content_hash: match (f.kind, content) {
            (_, Some(c)) => Some(c.hash.clone()),
            // Empty regular files have no chunks but still a content hash.
            (fs::FileKind::File, None) => Some(blake3::hash(b"").to_hex().to_string()),
            _ => None,
        },
        extent_map: f
            .extents
            .iter()
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

/// The packages of a root filesystem, from whichever database it holds: dpkg, apk or rpm.
fn find_packages(
    by_path: &HashMap<&str, &fs::File>,
    src: &dyn ReadAt,
    scratch: &Path,
    warnings: &mut Vec<String>,
) -> Option<(&'static str, Vec<Package>)> {
    let text = |path| read_small_file(by_path, src, path).map(|t| String::from_utf8_lossy(&t).into_owned());
    if let Some(status) = text(dpkg::STATUS_PATH) {
        return Some(("dpkg", dpkg::parse_status(&status)));
    }
    if let Some(installed) = text(apk::INSTALLED_PATH) {
        return Some(("apk", apk::parse_installed(&installed)));
    }
    for path in rpm::SQLITE_PATHS {
        if let Some(db) = resolve(by_path, path) {
            let wal = resolve(by_path, &format!("{path}-wal"));
            match read_rpmdb(db, wal, src, scratch) {
                Ok(found) => return Some(("rpm", found)),
                Err(e) => warnings.push(format!("{path}: {e}; packages not indexed")),
            }
        }
    }
    if let Some(path) = rpm::BDB_PATHS.iter().find(|p| resolve(by_path, p).is_some()) {
        warnings.push(format!(
            "{path} is a Berkeley DB rpm database (RHEL 7/8, Fedora before 33), which imagelake does not read; packages not indexed"
        ));
    }
    None
}

/// Copies the rpm sqlite database (and its write-ahead log) out of the image into a private
/// folder of `scratch`, held with a flock while in use, and reads it.
fn read_rpmdb(db: &fs::File, wal: Option<&fs::File>, src: &dyn ReadAt, scratch: &Path) -> std::io::Result<Vec<Package>> {
    let dir = scratch.join(format!("rpmdb-{}-{}", std::process::id(), now_ns()));
    std::fs::create_dir(&dir)?;
    let result = (|| {
        let held = std::fs::File::open(&dir)?;
        held.try_lock().map_err(std::io::Error::other)?;
        copy_out(db, src, &dir.join("rpmdb.sqlite"))?;
        if let Some(wal) = wal {
            copy_out(wal, src, &dir.join("rpmdb.sqlite-wal"))?;
        }
        rpm::read_sqlite(&dir.join("rpmdb.sqlite")).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Streams a regular file's content out of the image into a host file.
fn copy_out(file: &fs::File, src: &dyn ReadAt, dest: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create_new(dest)?);
    let mut buf = vec![0u8; READ_BUF];
    let mut offset = 0;
    while offset < file.size {
        let n = (file.size - offset).min(READ_BUF as u64) as usize;
        file.read_content(src, offset, &mut buf[..n])?;
        out.write_all(&buf[..n])?;
        offset += n as u64;
    }
    out.flush()
}

/// Reads a small configuration file by path, following symlinks within the filesystem.
fn read_small_file(by_path: &HashMap<&str, &fs::File>, src: &dyn ReadAt, path: &str) -> Option<Vec<u8>> {
    const LIMIT: u64 = 64 << 20;
    let f = resolve(by_path, path).filter(|f| f.size <= LIMIT)?;
    let mut buf = vec![0u8; f.size as usize];
    f.read_content(src, 0, &mut buf).ok()?;
    Some(buf)
}

/// The regular file a path names, following symlinks (at most 8) within the filesystem.
fn resolve<'a>(by_path: &HashMap<&str, &'a fs::File>, path: &str) -> Option<&'a fs::File> {
    let mut path = PathBuf::from(path);
    for _ in 0..8 {
        let f = *by_path.get(path.to_str()?)?;
        match f.kind {
            fs::FileKind::File => return Some(f),
            fs::FileKind::Symlink => {
                let target = PathBuf::from(String::from_utf8_lossy(f.link_target.as_ref()?).into_owned());
                let joined = if target.is_absolute() { target } else { path.parent()?.join(target) };
                path = normalize(&joined);
            }
            _ => return None,
        }
    }
    None
}

/// Resolves `.` and `..` lexically (a symlink target inside the image, never the host).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}
