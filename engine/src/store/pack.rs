//! Pack files: immutable files of zstd-compressed chunks with a trailing index.

use super::{ChunkHash, hex};
use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"IMGLPACK";
const END_MAGIC: &[u8; 8] = b"IMGLPEND";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: u64 = 16;
const INDEX_ENTRY_LEN: usize = 48;
const TRAILER_LEN: usize = 24;
/// A pack is closed once it holds this many bytes; the next chunk opens a new one.
const PACK_TARGET: u64 = 128 * 1024 * 1024;
const ZSTD_LEVEL: i32 = 3;

// One zstd context per thread, reused: making a context for every chunk was 15% of a
// checkout's CPU time.
thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Where a chunk lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: String,
    pub offset: u64,
    pub stored_size: u32,
    pub size: u32,
}

/// A chunk written by a [`PackWriter`]: one row of the catalog's `chunks` table.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub hash: ChunkHash,
    pub location: ChunkLocation,
}

/// The path of pack `id` in library `root`: `packs/ab/abcdef….pack`.
pub fn pack_path(root: &Path, id: &str) -> PathBuf {
    let fan = id.get(..2).unwrap_or("00");
    root.join("packs").join(fan).join(format!("{id}.pack"))
}

/// Appends chunks to packs in `tmp/`, publishing each pack into `packs/` when it is full or
/// when [`PackWriter::finish`] is called. Unpublished packs are leftovers of a crash: nothing
/// refers to them and they may be deleted.
pub struct PackWriter {
    root: PathBuf,
    /// Seeds pack ids so that concurrent writers never collide.
    seed: String,
    open: Option<OpenPack>,
    written: Vec<StoredChunk>,
    packs_published: u64,
}

struct OpenPack {
    id: String,
    tmp: PathBuf,
    file: io::BufWriter<File>,
    offset: u64,
    index: Vec<u8>,
    entries: u64,
}

impl PackWriter {
    pub fn new(root: &Path, seed: String) -> Self {
        PackWriter { root: root.to_path_buf(), seed, open: None, written: Vec::new(), packs_published: 0 }
    }

    /// Compresses a chunk (CPU work, no lock needed: call it from any thread).
    pub fn compress(data: &[u8]) -> io::Result<Vec<u8>> {
        COMPRESSOR.with_borrow_mut(|slot| {
            let compressor = match slot {
                Some(c) => c,
                None => slot.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
            };
            compressor.compress(data)
        })
    }

    /// Appends an already compressed chunk.
    pub fn add(&mut self, hash: ChunkHash, size: u32, compressed: &[u8]) -> io::Result<()> {
        if self.open.as_ref().is_some_and(|p| p.offset >= PACK_TARGET) {
            self.publish()?;
        }
        if self.open.is_none() {
            self.open = Some(self.start_pack()?);
        }
        let Some(pack) = self.open.as_mut() else { return Err(io::Error::other("no open pack")) };
        let stored_size = u32::try_from(compressed.len()).map_err(|_| io::Error::other("chunk too large"))?;
        pack.file.write_all(compressed)?;
        pack.index.extend_from_slice(&hash);
        pack.index.extend_from_slice(&pack.offset.to_le_bytes());
        pack.index.extend_from_slice(&stored_size.to_le_bytes());
        pack.index.extend_from_slice(&size.to_le_bytes());
        pack.entries += 1;
        let location = ChunkLocation { pack: pack.id.clone(), offset: pack.offset, stored_size, size };
        pack.offset += u64::from(stored_size);
        self.written.push(StoredChunk { hash, location });
        Ok(())
    }

    /// Publishes the open pack and returns every chunk written.
    pub fn finish(mut self) -> io::Result<Vec<StoredChunk>> {
        self.publish()?;
        Ok(std::mem::take(&mut self.written))
    }

    fn start_pack(&mut self) -> io::Result<OpenPack> {
        let id = blake3::hash(format!("{}/{}/{}", self.seed, self.packs_published, std::process::id()).as_bytes())
            .to_hex()[..32]
            .to_string();
        let tmp = self.root.join("tmp").join(format!("{id}.pack"));
        let file = File::create_new(&tmp)?;
        // Held while the pack is written: a tmp/ file nobody holds is a crash's leftover.
        file.try_lock().map_err(io::Error::other)?;
        let mut file = io::BufWriter::with_capacity(1 << 20, file);
        file.write_all(MAGIC)?;
        file.write_all(&FORMAT_VERSION.to_le_bytes())?;
        file.write_all(&0u32.to_le_bytes())?;
        Ok(OpenPack { id, tmp, file, offset: HEADER_LEN, index: Vec::new(), entries: 0 })
    }

    /// Writes the index and trailer, makes the pack durable, then renames it into place.
    fn publish(&mut self) -> io::Result<()> {
        let Some(mut pack) = self.open.take() else { return Ok(()) };
        pack.file.write_all(&pack.index)?;
        pack.file.write_all(&pack.entries.to_le_bytes())?;
        pack.file.write_all(&pack.offset.to_le_bytes())?;
        pack.file.write_all(END_MAGIC)?;
        let file = pack.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let dest = pack_path(&self.root, &pack.id);
        let dir = dest.parent().ok_or_else(|| io::Error::other("pack path has no folder"))?;
        fs::create_dir_all(dir)?;
        fs::rename(&pack.tmp, &dest)?;
        File::open(dir)?.sync_all()?;
        self.packs_published += 1;
        Ok(())
    }
}

impl Drop for PackWriter {
    /// A writer dropped before `finish` (a failed checkin) takes its unpublished pack with it.
    fn drop(&mut self) {
        if let Some(pack) = self.open.take() {
            drop(pack.file);
            let _ = fs::remove_file(&pack.tmp);
        }
    }
}

/// Reads chunks out of one pack.
pub struct PackReader {
    file: File,
    id: String,
}

impl PackReader {
    pub fn open(root: &Path, id: &str) -> io::Result<Self> {
        let path = pack_path(root, id);
        let file = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("pack {id}: {e}")))?;
        Ok(PackReader { file, id: id.to_string() })
    }

    /// Reads, decompresses and checks one chunk.
    pub fn read(&self, hash: &ChunkHash, at: &ChunkLocation) -> io::Result<Vec<u8>> {
        self.read_checked(hash, at)?.map_err(|why| self.damaged(hash, at, &why))
    }

    /// Reads, decompresses and checks one chunk: an I/O error, or the chunk, or what is wrong
    /// with the bytes read (damage).
    pub fn read_checked(&self, hash: &ChunkHash, at: &ChunkLocation) -> io::Result<Result<Vec<u8>, String>> {
        let mut compressed = vec![0u8; at.stored_size as usize];
        self.file.read_exact_at(&mut compressed, at.offset)?;
        let data = DECOMPRESSOR.with_borrow_mut(|slot| {
            let decompressor = match slot {
                Some(d) => d,
                None => slot.insert(zstd::bulk::Decompressor::new()?),
            };
            decompressor.decompress(&compressed, at.size as usize)
        });
        let data = match data {
            Ok(data) => data,
            Err(e) => return Ok(Err(format!("does not decompress: {e}"))),
        };
        if data.len() != at.size as usize || blake3::hash(&data).as_bytes() != hash {
            return Ok(Err("does not match its hash".into()));
        }
        Ok(Ok(data))
    }

    fn damaged(&self, hash: &ChunkHash, at: &ChunkLocation, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("pack {} is damaged: chunk {} at offset {} {what}", self.id, hex(hash), at.offset),
        )
    }

    /// The pack file's length in bytes.
    pub fn file_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// The pack's own index: every chunk it holds. Lets the catalog be rebuilt from packs.
    pub fn index(&self) -> io::Result<Vec<StoredChunk>> {
        let len = self.file.metadata()?.len();
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("pack {}: {what}", self.id));
        if len < HEADER_LEN + TRAILER_LEN as u64 {
            return Err(bad("shorter than its header and trailer"));
        }
        let mut trailer = [0u8; TRAILER_LEN];
        self.file.read_exact_at(&mut trailer, len - TRAILER_LEN as u64)?;
        let word = |i: usize| u64::from_le_bytes(trailer[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        if &trailer[16..] != END_MAGIC {
            return Err(bad("trailer magic missing (truncated?)"));
        }
        let (entries, index_offset) = (word(0), word(1));
        let index_len =
            entries.checked_mul(INDEX_ENTRY_LEN as u64).filter(|n| index_offset + n + TRAILER_LEN as u64 == len);
        let Some(index_len) = index_len else { return Err(bad("index does not fit the file")) };
        let mut index = vec![0u8; index_len as usize];
        self.file.read_exact_at(&mut index, index_offset)?;
        Ok(index
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(|e| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&e[..32]);
                let u32_at = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
                let offset = u64::from_le_bytes(e[32..40].try_into().unwrap_or([0; 8]));
                StoredChunk {
                    hash,
                    location: ChunkLocation {
                        pack: self.id.clone(),
                        offset,
                        stored_size: u32_at(40),
                        size: u32_at(44),
                    },
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_the_trailer_indexes_them() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("tmp")).unwrap();
        let mut w = PackWriter::new(root.path(), "t".into());
        let data: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 * (i as usize + 1)]).collect();
        for d in &data {
            w.add(*blake3::hash(d).as_bytes(), d.len() as u32, &PackWriter::compress(d).unwrap()).unwrap();
        }
        let written = w.finish().unwrap();
        assert_eq!(written.len(), 5);
        assert!(fs::read_dir(root.path().join("tmp")).unwrap().next().is_none(), "tmp/ must be empty after publish");
        let r = PackReader::open(root.path(), &written[0].location.pack).unwrap();
        for (d, c) in data.iter().zip(&written) {
            assert_eq!(&r.read(&c.hash, &c.location).unwrap(), d);
        }
        let index = r.index().unwrap();
        assert_eq!(
            index.iter().map(|c| c.location.clone()).collect::<Vec<_>>(),
            written.iter().map(|c| c.location.clone()).collect::<Vec<_>>()
        );
        // A flipped byte is found, not returned.
        let path = pack_path(root.path(), &written[2].location.pack);
        let mut bytes = fs::read(&path).unwrap();
        bytes[written[2].location.offset as usize + 5] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let r = PackReader::open(root.path(), &written[2].location.pack).unwrap();
        assert!(r.read(&written[2].hash, &written[2].location).is_err());
    }
}
