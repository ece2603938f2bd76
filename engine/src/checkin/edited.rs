//! Checkin of an edited version: the parent version's disk with the blocks an edit wrote over
//! it. Only those blocks are read, chunked and stored; everything else is the parent's, carried
//! over row by row: its disk map where nothing was written, and the contents of the files
//! the edit left where they were (same inode, size and blocks, none of them written).
//!
//! The edited filesystem is read anew (its metadata is in the scratch file the edit ran on),
//! through [`Overlay`]: a disk whose written ranges come from that scratch file, the parent's
//! raw extents of the same filesystem too (the scratch file holds them), and any other byte
//! from the store.

use super::*;
use crate::ranges::{overlaps, within};
use crate::store::{ChunkLocation, parse_hex};
use crate::stored_disk::{Locate, StoredChunks};
use std::fs::File;

/// The disk of the version an edit started from (its map and files), and what the edit
/// wrote over it: what the overlay of an edited disk reads through.
pub(crate) struct ParentDisk {
    /// The parent's disk map, with contents, in disk order.
    extents: Vec<ExtentRow>,
    /// Disk ranges `[start, end)` the edit wrote, sorted and disjoint.
    written: Vec<(u64, u64)>,
    /// The parent's regular files by partition and inode: size and content hash.
    files: HashMap<(i64, u64), (u64, String)>,
}

impl ParentDisk {
    /// The parent's content hash of `file` when the edit left it as it was: the same inode
    /// with the same size, every byte of its content where the parent had it, and none of its
    /// blocks written. Anything else (a new or changed file, one whose content lives in its
    /// inode) is read and chunked again.
    pub(super) fn unchanged(&self, partition: i64, spans: &[Span], file: &fs::File) -> Option<String> {
        let (size, hash) = self.files.get(&(partition, file.inode))?;
        if *size != file.size {
            return None;
        }
        let mut placed = false;
        for e in &file.extents {
            for (disk_offset, len) in to_disk(spans, e.physical, e.len) {
                if overlaps(&self.written, disk_offset, disk_offset + len) {
                    return None;
                }
            }
            let end = e.logical.saturating_add(e.len).min(file.size);
            if e.unwritten || e.logical >= end {
                continue;
            }
            let mut at = e.logical;
            for (disk_offset, len) in to_disk(spans, e.physical, end - e.logical) {
                if !self.holds(disk_offset, len, hash, at) {
                    return None;
                }
                at += len;
                placed = true;
            }
        }
        (placed || file.size == 0).then(|| hash.clone())
    }

    /// True when the parent's disk map has `[disk_offset, +len)` as the bytes of content `hash`
    /// from `content_offset` on.
    fn holds(&self, disk_offset: u64, len: u64, hash: &str, content_offset: u64) -> bool {
        let end = disk_offset + len;
        let mut i = self.extents.partition_point(|e| (e.disk_offset + e.length) as u64 <= disk_offset);
        let mut at = disk_offset;
        while at < end {
            let Some(e) = self.extents.get(i) else { return false };
            let start = e.disk_offset as u64;
            let right = e.content_hash.as_deref() == Some(hash)
                && e.content_offset.map(|o| o as u64 + (at - start)) == Some(content_offset + (at - disk_offset));
            if start > at || !right {
                return false;
            }
            at = start + e.length as u64;
            i += 1;
        }
        true
    }

    /// The extents of `[from, to)` of the new disk where files the checkin chunked do not
    /// lie: the parent's where nothing was written (its file extents stay file extents only
    /// inside `kept`, the ranges of files carried over; elsewhere they are raw bytes now), and
    /// the written ranges cut from `raw`.
    pub(super) fn fill(
        &self,
        disk: &Disk,
        raw: &mut RawStream,
        kept: &[(u64, u64)],
        from: u64,
        to: u64,
        out: &mut Vec<ExtentRow>,
    ) -> std::io::Result<()> {
        let mut at = from;
        while at < to {
            let i = self.written.partition_point(|w| w.1 <= at);
            match self.written.get(i) {
                Some(&(start, end)) if start <= at => {
                    let end = end.min(to);
                    raw.gap(disk, at, end, out)?;
                    at = end;
                }
                next => {
                    let end = next.map_or(to, |w| w.0.min(to));
                    self.carry(kept, at, end, raw.image_id, out);
                    at = end;
                }
            }
        }
        Ok(())
    }

    /// The parent's extents clipped to `[from, to)`.
    fn carry(&self, kept: &[(u64, u64)], from: u64, to: u64, image_id: i64, out: &mut Vec<ExtentRow>) {
        let first = self.extents.partition_point(|e| (e.disk_offset + e.length) as u64 <= from);
        for e in self.extents[first..].iter().take_while(|e| (e.disk_offset as u64) < to) {
            let (start, end) = (e.disk_offset as u64, (e.disk_offset + e.length) as u64);
            let (a, b) = (start.max(from), end.min(to));
            let skip = (a - start) as i64;
            let mut row = ExtentRow {
                image_id,
                disk_offset: a as i64,
                length: (b - a) as i64,
                kind: e.kind,
                chunk_hash: e.chunk_hash.clone(),
                chunk_offset: e.chunk_offset + skip,
                content_hash: e.content_hash.clone(),
                content_offset: e.content_offset.map(|o| o + skip),
            };
            if row.content_hash.is_some() && !within(kept, a, b) {
                // A removed or rewritten file's old bytes: still on the disk, nobody's content.
                row.kind = if row.kind == ExtentKind::Zero { ExtentKind::Zero } else { ExtentKind::Raw };
                (row.content_hash, row.content_offset) = (None, None);
            }
            out.push(row);
        }
    }
}

/// What a checkin of an edited version is given besides its disk.
pub(crate) struct Edited {
    /// The writers lock the editor took before it read which chunks exist.
    pub(super) writing: crate::locks::Held,
    pub(super) parent_disk: Arc<ParentDisk>,
    /// The store's chunks, read under the writers lock the editor holds.
    pub(super) known: HashSet<ChunkHash>,
    /// The scratch file the edit ran on: removed once read.
    pub(super) scratch: PathBuf,
    /// The edit's checks of its result, running while the disk is read: nothing is
    /// appended unless they pass.
    pub(super) checks: tokio::task::JoinHandle<Result<()>>,
}

/// The new disk as a byte source: written ranges and the edited filesystem's raw extents from
/// the scratch file (which holds the filesystem at `start`), and the rest as the parent's disk
/// map and the store hold it.
struct Overlay {
    parent_disk: Arc<ParentDisk>,
    scratch: File,
    /// The scratch file's range on the disk.
    start: u64,
    end: u64,
    size: u64,
    chunks: StoredChunks,
}

impl Overlay {
    fn new(
        parent_disk: Arc<ParentDisk>,
        scratch: File,
        start: u64,
        size: u64,
        chunks: StoredChunks,
    ) -> std::io::Result<Overlay> {
        let end = start + scratch.metadata()?.len();
        Ok(Overlay { parent_disk, scratch, start, end, size, chunks })
    }

    /// Fills `buf` from disk offset `at`, which lies in one parent extent `e`, not written.
    fn read_parent(&self, e: &ExtentRow, buf: &mut [u8], at: u64) -> std::io::Result<()> {
        if e.kind == ExtentKind::Raw && at >= self.start && at + buf.len() as u64 <= self.end {
            return self.scratch.read_exact_at(buf, at - self.start);
        }
        self.chunks.fill(e, buf, at)
    }
}

impl ReadAt for Overlay {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|e| *e <= self.size);
        let Some(end) = end else { return Err(std::io::Error::other(format!("read past the disk's end at {offset}"))) };
        let written = &self.parent_disk.written;
        let extents = &self.parent_disk.extents;
        let mut at = offset;
        while at < end {
            let into = &mut buf[(at - offset) as usize..];
            let i = written.partition_point(|w| w.1 <= at);
            let n = match written.get(i) {
                Some(&(start, stop)) if start <= at => {
                    let n = stop.min(end) - at;
                    self.scratch.read_exact_at(&mut into[..n as usize], at - self.start)?;
                    n
                }
                next => {
                    let limit = next.map_or(end, |w| w.0.min(end));
                    let j = extents.partition_point(|e| (e.disk_offset + e.length) as u64 <= at);
                    let e = extents
                        .get(j)
                        .filter(|e| e.disk_offset as u64 <= at)
                        .ok_or_else(|| std::io::Error::other(format!("the parent's disk map has no extent at {at}")))?;
                    let n = ((e.disk_offset + e.length) as u64).min(limit) - at;
                    self.read_parent(e, &mut into[..n as usize], at)?;
                    n
                }
            };
            at += n;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// What the checkin of an edit needs to know of the parent version besides its disk map,
/// read while the edit runs.
pub(crate) struct ParentFacts {
    /// Its regular files by partition and inode: size and content hash.
    files: HashMap<(i64, u64), (u64, String)>,
    /// Where the chunks lie that a checkin surely reads from the store: the raw bytes outside
    /// the edited filesystem (partition table, other filesystems' metadata) and the small
    /// files a checkin reads by path.
    locations: HashMap<ChunkHash, ChunkLocation>,
}

impl Library {
    /// The facts of version `parent` (whose disk map is `extents`) that the checkin of an
    /// edit of its filesystem at `[start, end)` of the disk needs.
    pub(crate) async fn parent_facts(
        &self,
        parent: i64,
        extents: &[ExtentRow],
        start: u64,
        end: u64,
    ) -> Result<ParentFacts> {
        let paths: Vec<String> = root_fs::FILES_READ.iter().map(|p| p.to_string()).collect();
        let (files, read) = tokio::try_join!(
            self.regular_files(parent),
            self.catalog().files_at(parent, None, &paths, &["content_hash"])
        )?;
        let read: HashSet<&str> = read.iter().filter_map(|f| f.content_hash.as_deref()).collect();
        let outside = |e: &ExtentRow| (e.disk_offset as u64) < start || (e.disk_offset + e.length) as u64 > end;
        let wanted: Vec<ChunkHash> = extents
            .iter()
            .filter(|e| {
                (e.kind == ExtentKind::Raw && outside(e)) || e.content_hash.as_deref().is_some_and(|h| read.contains(h))
            })
            .filter_map(|e| e.chunk_hash.as_deref().and_then(parse_hex))
            .collect();
        let locations = self.catalog().chunk_locations(&wanted).await?;
        Ok(ParentFacts { files, locations })
    }

    /// Checks in, as the next version of `parent`'s name, the edit of the filesystem at disk
    /// offset `start` that the file `scratch` holds; the edit wrote the disk ranges `written`
    /// (sorted, disjoint) of it, and `extents` is the parent's disk map with contents;
    /// `known` are the store's chunks, read under the writers lock the caller holds; `checks`
    /// are the edit's checks of its result, which must pass before anything is appended. The
    /// scratch file is removed once read.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn checkin_edited(
        &self,
        parent: &ImageRow,
        extents: Vec<ExtentRow>,
        facts: ParentFacts,
        scratch: &Path,
        start: u64,
        written: Vec<(u64, u64)>,
        known: HashSet<ChunkHash>,
        checks: tokio::task::JoinHandle<Result<()>>,
        writing: crate::locks::Held,
        origin: Origin,
        accept: impl FnOnce(&[FileRow]) -> Result<()>,
    ) -> Result<CheckinSummary> {
        let ParentFacts { files, locations } = facts;
        let parent_disk = Arc::new(ParentDisk { extents, written, files });
        let file = File::open(scratch).io_context(|| format!("opening {}", scratch.display()))?;
        // Any other chunk is looked up as reads need it, from the blocking threads of the
        // checkin.
        let (library, runtime) = (self.clone(), tokio::runtime::Handle::current());
        let locate: Locate = Box::new(move |hash: &ChunkHash| -> std::io::Result<ChunkLocation> {
            if let Some(at) = locations.get(hash) {
                return Ok(at.clone());
            }
            let found = runtime.block_on(library.catalog().chunk_locations(&[*hash])).map_err(std::io::Error::other)?;
            found.get(hash).cloned().ok_or_else(|| std::io::Error::other(format!("chunk {} is in no pack", hex(hash))))
        });
        let size = parent.virtual_size as u64;
        let overlay = Overlay::new(parent_disk.clone(), file, start, size, StoredChunks::new(self.packs(), locate))
            .io_context(|| format!("reading {}", scratch.display()))?;
        let label = format!("{}@{}, edited", parent.name, parent.version);
        let open = move || Ok(Disk::from_source("raw", Box::new(overlay)));
        let edited = Edited { writing, parent_disk, known, scratch: scratch.to_path_buf(), checks };
        let options = CheckinOptions::default();
        // On the heap: an edit made from SQL runs this deep inside a statement's future, and
        // a debug build's frames of it overflowed a runtime thread's stack.
        Box::pin(self.checkin_disk(&label, open, Some(edited), &parent.name, options, origin, accept)).await
    }

    /// The regular files of a version by partition and inode: size and content hash.
    async fn regular_files(&self, image_id: i64) -> Result<HashMap<(i64, u64), (u64, String)>> {
        let rows = self.catalog().regular_files(image_id).await?;
        Ok(rows
            .into_iter()
            .filter_map(|f| Some(((f.partition, f.inode as u64), (f.size as u64, f.content_hash?))))
            .collect())
    }
}
