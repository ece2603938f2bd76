//! A version's disk read back from its disk map and the store, for what the catalog does not
//! index: the checkin of an edit reads its parent's bytes through [`StoredChunks`], and a
//! reader of a file that ext4 keeps inside its inode (inline data) reads that inode through a
//! [`StoredDisk`].

use crate::catalog::{ExtentKind, ExtentRow};
use crate::store::{ChunkHash, ChunkLocation, ChunkReader, hex, parse_hex};
use crate::{Library, Result};
use imagelake_connectors::{ReadAt, Window, ext4, fs, xfs};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Where a chunk lies in the store.
pub(crate) type Locate = Box<dyn Fn(&ChunkHash) -> io::Result<ChunkLocation> + Send + Sync>;

/// Chunks kept after their read, for the many small reads of one file or inode table.
const RECENT_CHUNKS: usize = 16;

/// The chunks of a disk map, read from the store as extents need them.
pub(crate) struct StoredChunks {
    store: ChunkReader,
    locate: Locate,
    recent: Mutex<VecDeque<(ChunkHash, Arc<Vec<u8>>)>>,
}

impl StoredChunks {
    pub(crate) fn new(root: &Path, locate: Locate) -> StoredChunks {
        StoredChunks { store: ChunkReader::new(root), locate, recent: Mutex::new(VecDeque::new()) }
    }

    fn chunk(&self, hash: &ChunkHash) -> io::Result<Arc<Vec<u8>>> {
        let mut recent = self.recent.lock().map_err(|_| io::Error::other("a reader of the store failed"))?;
        if let Some((_, data)) = recent.iter().find(|(h, _)| h == hash) {
            return Ok(data.clone());
        }
        let data = Arc::new(self.store.read(hash, &(self.locate)(hash)?)?);
        if recent.len() == RECENT_CHUNKS {
            recent.pop_front();
        }
        recent.push_back((*hash, data.clone()));
        Ok(data)
    }

    /// Fills `buf` with the bytes at disk offset `at` of extent `e`, which holds all of them.
    pub(crate) fn fill(&self, e: &ExtentRow, buf: &mut [u8], at: u64) -> io::Result<()> {
        if e.kind == ExtentKind::Zero {
            buf.fill(0);
            return Ok(());
        }
        let hash = (e.chunk_hash.as_deref().and_then(parse_hex))
            .ok_or_else(|| io::Error::other(format!("the extent at {} has no valid chunk", e.disk_offset)))?;
        let chunk = self.chunk(&hash)?;
        // A catalog row is trusted no further than a checked slice: no overflow, no panic.
        let from = (e.chunk_offset as u64).checked_add(at - e.disk_offset as u64).map(|f| f as usize);
        let bytes = (from.and_then(|from| Some(from..from.checked_add(buf.len())?)).and_then(|range| chunk.get(range)))
            .ok_or_else(|| io::Error::other(format!("the extent at {} reaches past its chunk", e.disk_offset)))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// A disk as its map (which tiles it) and the store hold it.
pub(crate) struct StoredDisk {
    /// In disk order.
    extents: Vec<ExtentRow>,
    chunks: StoredChunks,
    size: u64,
}

impl ReadAt for StoredDisk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|e| *e <= self.size);
        let Some(end) = end else { return Err(io::Error::other(format!("read past the disk's end at {offset}"))) };
        let mut at = offset;
        while at < end {
            let i = self.extents.partition_point(|e| (e.disk_offset + e.length) as u64 <= at);
            let e = (self.extents.get(i).filter(|e| e.disk_offset as u64 <= at))
                .ok_or_else(|| io::Error::other(format!("the disk map has no extent at {at}")))?;
            let n = ((e.disk_offset + e.length) as u64).min(end) - at;
            self.chunks.fill(e, &mut buf[(at - offset) as usize..][..n as usize], at)?;
            at += n;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }
}

impl Library {
    /// One ext2/3/4 filesystem of version `image_id` as a byte source; None when the
    /// partition holds none.
    async fn stored_filesystem(
        &self,
        image_id: i64,
        partition: i64,
        wanted: fn(&str) -> bool,
    ) -> Result<Option<(String, Window<StoredDisk>)>> {
        let partitions = self.catalog().partitions(image_id).await?;
        let found = partitions.iter().find(|p| p.partition == partition && p.fs_type.as_deref().is_some_and(wanted));
        let Some(found) = found else { return Ok(None) };
        let fs_type = found.fs_type.clone().unwrap_or_default();
        let (start, size) = (found.start as u64, found.size as u64);
        let extents = self.catalog().disk_map(image_id, false).await?;
        let inside = |e: &ExtentRow| (e.disk_offset as u64) < start + size && (e.disk_offset + e.length) as u64 > start;
        let chunks: Vec<ChunkHash> =
            extents.iter().filter(|e| inside(e)).filter_map(|e| e.chunk_hash.as_deref().and_then(parse_hex)).collect();
        let locations = self.catalog().chunk_locations(&chunks).await?;
        let locate = Box::new(move |hash: &ChunkHash| {
            (locations.get(hash).cloned()).ok_or_else(|| io::Error::other(format!("chunk {} is in no pack", hex(hash))))
        });
        let disk_size = extents.last().map_or(0, |e| (e.disk_offset + e.length) as u64);
        let disk = StoredDisk { extents, chunks: StoredChunks::new(self.root(), locate), size: disk_size };
        Ok(Window::new(disk, start, size).ok().map(|w| (fs_type, w)))
    }

    /// The contents that ext4 keeps inside the inodes `wanted` (inode number, content hash) of
    /// one filesystem of version `image_id`, by hash: those the inode does keep, whose bytes
    /// (zeros follow them up to the file's size) match the hash. The disk map has no extent of
    /// such a content, so it is read from the inode itself, out of the version's stored
    /// metadata.
    pub async fn inline_contents(
        &self,
        image_id: i64,
        partition: i64,
        wanted: Vec<(u32, String)>,
    ) -> Result<HashMap<String, Vec<u8>>> {
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let Some((_, filesystem)) = self.stored_filesystem(image_id, partition, is_ext).await? else {
            return Ok(HashMap::new());
        };
        let read = move || {
            (wanted.into_iter())
                .filter_map(|(inode, hash)| {
                    let (data, size) = ext4::inline_content(&filesystem, inode).ok()??;
                    (padded_hash(&data, size) == hash).then_some((hash, data))
                })
                .collect()
        };
        tokio::task::spawn_blocking(read).await.map_err(crate::task_failed("reading inline contents"))
    }

    /// The size and room of one ext2/3/4 or XFS filesystem of version `image_id`, from its
    /// superblock; None when the partition holds neither, or its superblock cannot be read.
    pub async fn filesystem_room(&self, image_id: i64, partition: i64) -> Result<Option<fs::Room>> {
        let has_room = |fs_type: &str| is_ext(fs_type) || fs_type == "xfs";
        let Some((fs_type, filesystem)) = self.stored_filesystem(image_id, partition, has_room).await? else {
            return Ok(None);
        };
        let read = move || match fs_type.as_str() {
            "xfs" => xfs::room(&filesystem).ok(),
            _ => ext4::room(&filesystem).ok(),
        };
        tokio::task::spawn_blocking(read).await.map_err(crate::task_failed("reading a superblock"))
    }
}

fn is_ext(fs_type: &str) -> bool {
    matches!(fs_type, "ext2" | "ext3" | "ext4")
}

/// The content hash of a file of `size` bytes that begins with `data`, zeros after, as a
/// checkin hashes it.
pub fn padded_hash(data: &[u8], size: u64) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(data);
    let zeros = [0u8; 1 << 16];
    let mut left = size.saturating_sub(data.len() as u64);
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        hasher.update(&zeros[..n]);
        left -= n as u64;
    }
    hasher.finalize().to_hex().to_string()
}
