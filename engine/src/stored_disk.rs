//! A version's disk read back from its disk map and the store, for what the catalog does not
//! index: the checkin of an edit reads its parent's bytes through [`StoredChunks`], and
//! readers of contents no disk range holds as they are (kept inside their inode, or compressed
//! by btrfs) read them through a [`StoredDisk`].

use crate::catalog::{ExtentKind, ExtentRow};
use crate::store::{ChunkHash, ChunkLocation, ChunkReader, Packs, hex, parse_hex};
use crate::{Library, Result};
use imagelake_connectors::{ReadAt, Window, btrfs, ext4, fs, xfs};
use std::collections::{HashMap, VecDeque};
use std::io;
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
    pub(crate) fn new(packs: &Packs, locate: Locate) -> StoredChunks {
        StoredChunks { store: ChunkReader::new(packs), locate, recent: Mutex::new(VecDeque::new()) }
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
        let disk = StoredDisk { extents, chunks: StoredChunks::new(self.packs(), locate), size: disk_size };
        Ok(Window::new(disk, start, size).ok().map(|w| (fs_type, w)))
    }

    /// The contents of one filesystem of version `image_id` that no disk range holds as they
    /// are, by hash, for the files `wanted` (inode number, content hash) that have them: those
    /// kept inside their inode (ext4 inline data, btrfs inline extents) and those btrfs keeps
    /// compressed. They are read through the filesystem's own reader, over the version's stored
    /// disk; a wanted file whose content is neither is left out.
    pub async fn unmapped_contents(
        &self,
        image_id: i64,
        partition: i64,
        wanted: Vec<(u64, String)>,
    ) -> Result<UnmappedContents> {
        let found = match wanted.is_empty() {
            true => None,
            false => self.stored_filesystem(image_id, partition, |t| is_ext(t) || t == "btrfs").await?,
        };
        let Some((fs_type, source)) = found else { return Ok(UnmappedContents::default()) };
        let read = move || -> Result<UnmappedContents> {
            let mut files = HashMap::new();
            if fs_type == "btrfs" {
                let what = |e: btrfs::Error| crate::Error::Catalog(format!("partition {partition}: {e}"));
                let mut by_inode: HashMap<u64, String> = wanted.into_iter().collect();
                for file in btrfs::read(&source).map_err(what)?.files {
                    if let Some(hash) = by_inode.remove(&file.inode).filter(|_| !file.held_as_is()) {
                        files.insert(hash, file);
                    }
                }
            } else {
                // ext4 reads just the inodes asked for; those it keeps inline are small.
                for (inode, hash) in wanted {
                    let Some((data, size)) =
                        u32::try_from(inode).ok().and_then(|i| ext4::inline_content(&source, i).ok()?)
                    else {
                        continue;
                    };
                    if padded_hash(&data, size) == hash {
                        files.insert(hash, inline_file(inode, data, size));
                    }
                }
            }
            Ok(UnmappedContents { source: Some(source), files })
        };
        tokio::task::spawn_blocking(read).await.map_err(crate::task_failed("reading unmapped contents"))?
    }

    /// The size and room of one ext2/3/4, XFS or btrfs filesystem of version `image_id`, from
    /// its superblock; None when the partition holds none of them, or its superblock cannot be
    /// read.
    pub async fn filesystem_room(&self, image_id: i64, partition: i64) -> Result<Option<fs::Room>> {
        let has_room = |fs_type: &str| is_ext(fs_type) || matches!(fs_type, "xfs" | "btrfs");
        let Some((fs_type, filesystem)) = self.stored_filesystem(image_id, partition, has_room).await? else {
            return Ok(None);
        };
        let read = move || match fs_type.as_str() {
            "xfs" => xfs::room(&filesystem).ok(),
            "btrfs" => btrfs::room(&filesystem).ok(),
            _ => ext4::room(&filesystem).ok(),
        };
        tokio::task::spawn_blocking(read).await.map_err(crate::task_failed("reading a superblock"))
    }
}

/// Contents no disk range holds as they are, read through their filesystem's reader over a
/// version's stored disk: see [`Library::unmapped_contents`].
#[derive(Default)]
pub struct UnmappedContents {
    source: Option<Window<StoredDisk>>,
    /// By content hash: a file that has it, as its filesystem's reader lists it.
    files: HashMap<String, fs::File>,
}

impl UnmappedContents {
    /// Whether `hash` is one of these contents.
    pub fn holds(&self, hash: &str) -> bool {
        self.files.contains_key(hash)
    }

    /// Bytes `offset..offset + buf.len()` of content `hash`, which these contents hold.
    pub fn read(&self, hash: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let file = self.files.get(hash).ok_or_else(|| io::Error::other(format!("content {hash} is not held here")))?;
        let source = self.source.as_ref().ok_or_else(|| io::Error::other("no filesystem to read from"))?;
        file.read_content(source, offset, buf)
    }
}

/// A regular file that is its inline data, for reading that content.
fn inline_file(inode: u64, data: Vec<u8>, size: u64) -> fs::File {
    let file = fs::File::bare(format!("<inode {inode}>"), fs::FileKind::File, inode);
    fs::File { size, inline_data: Some(data), ..file }
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
