//! File contents: where each content's bytes lie in the store (read from the disk map once, at
//! mount), and reads of any range of them through the store's shared frame cache.

use imagelake_connectors::fs::Room;
use imagelake_engine::UnmappedContents;
use imagelake_engine::catalog::ExtentRow;
use imagelake_engine::store::{ChunkHash, ChunkLocation, ChunkReader, Packs, hex, parse_hex};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Decompressed frames the mount keeps: enough for readers going through the tree in order
/// (frames of 4 MiB, or 32 MiB once repacked), and a modest resident size for a mount that
/// stays up.
const CACHE_BYTES: usize = 64 << 20;

/// Bytes `at..at + len` of a content are bytes `chunk_at..` of `chunk`.
struct Piece {
    at: u64,
    len: u64,
    chunk: ChunkHash,
    chunk_at: u64,
}

pub struct Contents {
    /// Each content's stored pieces, sorted by offset. Zeros have none.
    pieces: HashMap<String, Vec<Piece>>,
    /// Contents the disk map has any extent of, zero ones included.
    mapped: HashSet<String>,
    locations: HashMap<ChunkHash, ChunkLocation>,
    store: ChunkReader,
    /// The filesystem's size and room, from its superblock, for statfs.
    pub room: Option<Room>,
    /// Contents kept inside their inode or compressed, read through their filesystem.
    unmapped: UnmappedContents,
    /// Other contents without extents (holes only), checked once: whether zeros are what
    /// they hold.
    all_zeros: Mutex<HashMap<String, bool>>,
}

/// Why a read failed; the mount answers EIO and says why on its standard error.
pub type Failure = String;

impl Contents {
    /// The pieces of every content in `extents` (a disk map with contents).
    pub fn new(
        packs: &Packs,
        extents: &[ExtentRow],
        locations: HashMap<ChunkHash, ChunkLocation>,
    ) -> Result<Contents, Failure> {
        let mut pieces: HashMap<String, Vec<Piece>> = HashMap::new();
        let mut mapped = HashSet::new();
        for e in extents {
            let (Some(content), Some(at)) = (&e.content_hash, e.content_offset) else { continue };
            mapped.insert(content.clone());
            let Some(chunk) = e.chunk_hash.as_deref().and_then(parse_hex) else { continue };
            let number =
                |v: i64| u64::try_from(v).map_err(|_| format!("content {content}: a negative offset or length"));
            let piece = Piece { at: number(at)?, len: number(e.length)?, chunk, chunk_at: number(e.chunk_offset)? };
            pieces.entry(content.clone()).or_default().push(piece);
        }
        for list in pieces.values_mut() {
            list.sort_by_key(|p| p.at);
        }
        Ok(Contents {
            pieces,
            mapped,
            locations,
            store: ChunkReader::with_cache(packs, CACHE_BYTES),
            room: None,
            unmapped: UnmappedContents::default(),
            all_zeros: Mutex::default(),
        })
    }

    /// Whether the disk map has any extent of `content`.
    pub fn is_mapped(&self, content: &str) -> bool {
        self.mapped.contains(content)
    }

    /// Serves these contents through their filesystem: the disk map holds none of them as
    /// they are.
    pub fn keep_unmapped(&mut self, unmapped: UnmappedContents) {
        self.unmapped = unmapped;
    }

    /// The chunks the pieces use, for their locations.
    pub fn chunks(extents: &[ExtentRow]) -> Vec<ChunkHash> {
        let mut chunks: Vec<ChunkHash> = extents
            .iter()
            .filter(|e| e.content_hash.is_some())
            .filter_map(|e| e.chunk_hash.as_deref().and_then(parse_hex))
            .collect();
        chunks.sort_unstable();
        chunks.dedup();
        chunks
    }

    /// Bytes `offset..offset + len` of `content` (of `size` bytes), short at its end.
    pub fn read(&self, content: &str, size: u64, offset: u64, len: u32) -> Result<Vec<u8>, Failure> {
        let end = size.min(offset.saturating_add(u64::from(len)));
        if offset >= end {
            return Ok(Vec::new());
        }
        if !self.mapped.contains(content) {
            if self.unmapped.holds(content) {
                let mut out = vec![0; (end - offset) as usize];
                self.unmapped.read(content, offset, &mut out).map_err(|e| format!("content {content}: {e}"))?;
                return Ok(out);
            }
            self.check_zeros(content, size)?;
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let pieces = self.pieces.get(content).map(Vec::as_slice).unwrap_or_default();
        // The first piece that ends after `offset`.
        let first = pieces.partition_point(|p| p.at + p.len <= offset);
        for piece in pieces[first..].iter().take_while(|p| p.at < end) {
            let location = self
                .locations
                .get(&piece.chunk)
                .ok_or_else(|| format!("content {content}: chunk {} is in no pack", hex(&piece.chunk)))?;
            let chunk = self.store.chunk(&piece.chunk, location).map_err(|e| format!("content {content}: {e}"))?;
            // The overlap of the piece and the range, in content offsets.
            let (from, to) = (piece.at.max(offset), (piece.at + piece.len).min(end));
            let start = piece.chunk_at + (from - piece.at);
            let bytes = usize::try_from(start)
                .ok()
                .and_then(|s| chunk.get(s..s + (to - from) as usize))
                .ok_or_else(|| format!("content {content}: a piece at {} lies outside its chunk", piece.at))?;
            out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(bytes);
        }
        Ok(out)
    }

    /// A content the disk map has no extent of, and no inode holds, reads as zeros only if
    /// zeros are what it is; otherwise reading it fails rather than lie.
    fn check_zeros(&self, content: &str, size: u64) -> Result<(), Failure> {
        let known = self.all_zeros.lock().ok().and_then(|m| m.get(content).copied());
        let zeros = match known {
            Some(z) => z,
            None => {
                let z = imagelake_engine::padded_hash(&[], size) == content;
                if let Ok(mut m) = self.all_zeros.lock() {
                    m.insert(content.to_string(), z);
                }
                z
            }
        };
        match zeros {
            true => Ok(()),
            false => Err(format!(
                "content {content} has no extent and could not be read from inside its inode or its compressed extents"
            )),
        }
    }
}
