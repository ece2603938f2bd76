//! Pack files: immutable files of zstd frames, each frame holding several whole chunks, with
//! a trailing index.

use super::packs::Packs;
use super::{ChunkHash, hex};
use crate::storage::Opened;
use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"IMGLPACK";
const END_MAGIC: &[u8; 8] = b"IMGLPEND";
/// The pack format written; version 2 (no blake3 of the pack in its trailer) is still read.
const FORMAT_VERSION: u32 = 3;
const HEADER_LEN: u64 = 16;
const INDEX_ENTRY_LEN: usize = 52;
/// The trailer: entries, index offset, (from version 3) the blake3 of every byte before it,
/// end magic.
const TRAILER_LEN: [usize; 2] = [24, 56];

/// The trailer's length in a pack of `version`, if this build reads that version.
fn trailer_len(version: u32) -> Option<usize> {
    match version {
        2 => Some(TRAILER_LEN[0]),
        3 => Some(TRAILER_LEN[1]),
        _ => None,
    }
}
/// A pack is closed once it holds this many bytes; the next frame opens a new one.
const PACK_TARGET: u64 = 128 * 1024 * 1024;
/// No reader decompresses a frame larger than this: the bound on what a damaged or hostile
/// pack can make a reader allocate.
pub const FRAME_MAX: usize = 64 << 20;

/// How a writer compresses: chunks are gathered into frames of about `frame` bytes, each
/// compressed as one zstd frame, so that neighbouring chunks share one compression context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub level: i32,
    pub frame: usize,
    /// log2 of the match window; 0 leaves zstd's default for the level.
    pub window_log: u32,
}

impl Compression {
    /// Checkin: fast enough to keep up with reading the image on every core.
    pub const CHECKIN: Compression = Compression { level: 3, frame: 4 << 20, window_log: 0 };
    /// Repack: settled packs, rewritten once, read many times.
    pub const REPACK: Compression = Compression { level: 19, frame: 32 << 20, window_log: 25 };
}

// One zstd context per thread, reused: making a context for every chunk was 15% of a
// checkout's CPU time.
thread_local! {
    static COMPRESSOR: RefCell<Option<(Compression, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    /// The stored bytes of the frame a thread is reading, reused from frame to frame.
    static STORED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Where a chunk lives: `size` bytes at `frame_offset` of the frame that starts at `offset`
/// in `pack` and is `frame_size` bytes long there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: String,
    pub offset: u64,
    pub frame_size: u32,
    pub frame_offset: u32,
    pub size: u32,
}

/// Where a pack's trailer says its index is, and the blake3 it holds (version 3).
struct Trailer {
    index_offset: u64,
    index_len: u64,
    /// The bytes the blake3 covers: all before it.
    hashed_len: u64,
    blake3: Option<[u8; 32]>,
}

/// A chunk written by a [`PackWriter`]: one row of the catalog's `chunks` table.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub hash: ChunkHash,
    pub location: ChunkLocation,
    /// The chunk's share of its frame's stored bytes (by its size): what it costs on disk.
    pub stored_size: u32,
}

/// Chunks gathered for one frame, not yet compressed.
pub struct Frame {
    compression: Compression,
    /// (hash, offset in `data`, size)
    chunks: Vec<(ChunkHash, u32, u32)>,
    data: Vec<u8>,
}

/// A compressed frame, ready to be written by [`PackWriter::write`].
pub struct CompressedFrame {
    chunks: Vec<(ChunkHash, u32, u32)>,
    raw_len: usize,
    bytes: Vec<u8>,
}

impl Frame {
    fn new(compression: Compression) -> Frame {
        Frame {
            compression,
            chunks: Vec::new(),
            data: Vec::with_capacity(compression.frame + super::CHUNK_MAX as usize),
        }
    }

    /// Compresses the frame (CPU work, no lock needed: call it from any thread).
    pub fn compress(self) -> io::Result<CompressedFrame> {
        let bytes = COMPRESSOR.with_borrow_mut(|slot| {
            let compressor = match slot {
                Some((c, compressor)) if *c == self.compression => compressor,
                _ => {
                    let mut compressor = zstd::bulk::Compressor::new(self.compression.level)?;
                    if self.compression.window_log > 0 {
                        use zstd::zstd_safe::CParameter;
                        compressor.set_parameter(CParameter::WindowLog(self.compression.window_log))?;
                        compressor.set_parameter(CParameter::EnableLongDistanceMatching(true))?;
                    }
                    &mut slot.insert((self.compression, compressor)).1
                }
            };
            compressor.compress(&self.data)
        })?;
        Ok(CompressedFrame { chunks: self.chunks, raw_len: self.data.len(), bytes })
    }
}

/// Gathers chunks into frames and appends the frames to pack files in a temporary folder,
/// publishing each pack (see [`Packs::publish`]) when it is full or when
/// [`PackWriter::finish`] is called. Unpublished packs are leftovers of a crash: nothing
/// refers to them and they may be deleted.
pub struct PackWriter {
    packs: Packs,
    tmp: PathBuf,
    /// Seeds pack ids so that concurrent writers never collide.
    seed: String,
    compression: Compression,
    filling: Frame,
    open: Option<OpenPack>,
    written: Vec<StoredChunk>,
    packs_published: u64,
}

struct OpenPack {
    id: String,
    tmp: PathBuf,
    file: io::BufWriter<File>,
    /// Of every byte written so far, for the trailer.
    hasher: blake3::Hasher,
    offset: u64,
    index: Vec<u8>,
    entries: u64,
}

impl OpenPack {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.file.write_all(bytes)
    }
}

impl PackWriter {
    /// A writer of packs published to `packs`, written first in folder `tmp`.
    pub fn new(packs: &Packs, tmp: &Path, seed: String, compression: Compression) -> Self {
        PackWriter {
            packs: packs.clone(),
            tmp: tmp.to_path_buf(),
            seed,
            compression,
            filling: Frame::new(compression),
            open: None,
            written: Vec::new(),
            packs_published: 0,
        }
    }

    /// Adds a chunk to the frame being filled. Returns that frame once it is full: compress
    /// it (on any thread, without holding the writer) and hand it to [`PackWriter::write`].
    pub fn add(&mut self, hash: ChunkHash, data: &[u8]) -> Option<Frame> {
        let frame = &mut self.filling;
        frame.chunks.push((hash, frame.data.len() as u32, data.len() as u32));
        frame.data.extend_from_slice(data);
        (frame.data.len() >= self.compression.frame)
            .then(|| std::mem::replace(&mut self.filling, Frame::new(self.compression)))
    }

    /// Appends a compressed frame to the open pack.
    pub fn write(&mut self, frame: CompressedFrame) -> io::Result<()> {
        if self.open.as_ref().is_some_and(|p| p.offset >= PACK_TARGET) {
            self.publish()?;
        }
        if self.open.is_none() {
            self.open = Some(self.start_pack()?);
        }
        let Some(pack) = self.open.as_mut() else { return Err(io::Error::other("no open pack")) };
        let frame_size = u32::try_from(frame.bytes.len()).map_err(|_| io::Error::other("frame too large"))?;
        pack.put(&frame.bytes)?;
        for (hash, frame_offset, size) in frame.chunks {
            pack.index.extend_from_slice(&hash);
            pack.index.extend_from_slice(&pack.offset.to_le_bytes());
            pack.index.extend_from_slice(&frame_size.to_le_bytes());
            pack.index.extend_from_slice(&frame_offset.to_le_bytes());
            pack.index.extend_from_slice(&size.to_le_bytes());
            pack.entries += 1;
            let share = frame_share(frame_size, size, frame.raw_len as u64);
            self.written.push(StoredChunk {
                hash,
                location: ChunkLocation { pack: pack.id.clone(), offset: pack.offset, frame_size, frame_offset, size },
                stored_size: share,
            });
        }
        pack.offset += u64::from(frame_size);
        Ok(())
    }

    /// Writes the last frame, publishes the open pack, and returns every chunk written.
    pub fn finish(mut self) -> io::Result<Vec<StoredChunk>> {
        let last = std::mem::replace(&mut self.filling, Frame::new(self.compression));
        if !last.chunks.is_empty() {
            self.write(last.compress()?)?;
        }
        self.publish()?;
        Ok(std::mem::take(&mut self.written))
    }

    fn start_pack(&mut self) -> io::Result<OpenPack> {
        let id = blake3::hash(format!("{}/{}/{}", self.seed, self.packs_published, std::process::id()).as_bytes())
            .to_hex()[..32]
            .to_string();
        let tmp = self.tmp.join(format!("{id}.pack"));
        let file = File::create_new(&tmp)?;
        // Held while the pack is written: a tmp/ file nobody holds is a crash's leftover.
        file.try_lock().map_err(io::Error::other)?;
        let file = io::BufWriter::with_capacity(1 << 20, file);
        let hasher = blake3::Hasher::new();
        let mut pack = OpenPack { id, tmp, file, hasher, offset: HEADER_LEN, index: Vec::new(), entries: 0 };
        pack.put(MAGIC)?;
        pack.put(&FORMAT_VERSION.to_le_bytes())?;
        pack.put(&(self.compression.level as u32).to_le_bytes())?;
        Ok(pack)
    }

    /// Writes the index and trailer, makes the pack durable, then publishes it.
    fn publish(&mut self) -> io::Result<()> {
        let Some(mut pack) = self.open.take() else { return Ok(()) };
        let index = std::mem::take(&mut pack.index);
        pack.put(&index)?;
        pack.put(&pack.entries.to_le_bytes())?;
        pack.put(&pack.offset.to_le_bytes())?;
        let whole = *pack.hasher.finalize().as_bytes();
        pack.file.write_all(&whole)?;
        pack.file.write_all(END_MAGIC)?;
        let file = pack.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        self.packs.publish(&pack.tmp, &pack.id)?;
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

/// A chunk's share of its frame's stored bytes: the frame's size in proportion to the chunk's
/// part of the frame's raw bytes (`raw_len`, the sum of its chunks' sizes).
pub fn frame_share(frame_size: u32, size: u32, raw_len: u64) -> u32 {
    (u64::from(frame_size) * u64::from(size) / raw_len.max(1)) as u32
}

/// One pack, opened: its header, its frames and its own index.
pub struct PackReader {
    file: Opened,
    id: String,
}

impl PackReader {
    pub fn open(packs: &Packs, id: &str) -> io::Result<Self> {
        Ok(PackReader { file: packs.open(id)?, id: id.to_string() })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads and decompresses the frame at `offset`: an I/O error, or the frame's bytes, or
    /// what is wrong with the bytes read (damage).
    pub fn read_frame(&self, offset: u64, frame_size: u32) -> io::Result<Result<Vec<u8>, String>> {
        let mut data = Vec::new();
        Ok(self.read_frame_into(offset, frame_size, &mut data)?.map(|()| data))
    }

    /// As `read_frame`, into `data` (replacing what it held): a caller that reads many frames
    /// reuses one buffer, where fresh memory would cost the kernel a page clear per page.
    pub fn read_frame_into(&self, offset: u64, frame_size: u32, data: &mut Vec<u8>) -> io::Result<Result<(), String>> {
        // The size comes from the catalog or the trailer: bounded before it is allocated (a
        // frame stores at most a little more than its bytes).
        if frame_size as usize > FRAME_MAX + FRAME_MAX / 64 {
            return Ok(Err(format!("claims a frame of {frame_size} stored bytes, more than any writer makes")));
        }
        STORED.with_borrow_mut(|stored| {
            stored.resize(frame_size as usize, 0);
            self.file.read_exact_at(stored, offset)?;
            let size = match zstd::zstd_safe::get_frame_content_size(stored) {
                Ok(Some(size)) if size <= FRAME_MAX as u64 => size as usize,
                Ok(Some(size)) => return Ok(Err(format!("is a frame of {size} bytes, more than {FRAME_MAX}"))),
                Ok(None) | Err(_) => return Ok(Err("is not a zstd frame with its size".into())),
            };
            data.clear();
            data.reserve(size);
            let done = DECOMPRESSOR.with_borrow_mut(|slot| {
                let decompressor = match slot {
                    Some(d) => d,
                    None => slot.insert(zstd::bulk::Decompressor::new()?),
                };
                decompressor.decompress_to_buffer(stored.as_slice(), data)
            });
            Ok(match done {
                Ok(n) if n == size => Ok(()),
                Ok(_) => Err("decompresses to fewer bytes than its frame header says".into()),
                Err(e) => Err(format!("does not decompress: {e}")),
            })
        })
    }

    /// The pack's length in bytes.
    pub fn file_len(&self) -> io::Result<u64> {
        self.file.len()
    }

    /// The pack's header: its format version, and the zstd level its frames were written at.
    fn header(&self) -> io::Result<(u32, i32)> {
        let mut header = [0u8; HEADER_LEN as usize];
        self.file.read_exact_at(&mut header, 0)?;
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if &header[..8] != MAGIC || trailer_len(version).is_none() {
            let message = format!("pack {}: its header is not a version 2 or 3 pack's", self.id);
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
        Ok((version, u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as i32))
    }

    /// The zstd level the pack's frames were written at (from its header).
    pub fn level(&self) -> io::Result<i32> {
        Ok(self.header()?.1)
    }

    /// The pack's trailer: where its index is, how many entries it has, and (version 3) the
    /// blake3 of every byte before the hash.
    fn trailer(&self) -> io::Result<Trailer> {
        let len = self.file.len()?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("pack {}: {what}", self.id));
        let (version, _) = self.header()?;
        let trailer_len = trailer_len(version).unwrap_or(TRAILER_LEN[0]);
        if len < HEADER_LEN + trailer_len as u64 {
            return Err(bad("shorter than its header and trailer"));
        }
        let mut trailer = vec![0u8; trailer_len];
        let at = len - trailer_len as u64;
        self.file.read_exact_at(&mut trailer, at)?;
        let word = |i: usize| u64::from_le_bytes(trailer[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        if trailer.get(trailer_len - 8..) != Some(END_MAGIC.as_slice()) {
            return Err(bad("trailer magic missing (truncated?)"));
        }
        let (entries, index_offset) = (word(0), word(1));
        let index_len = entries
            .checked_mul(INDEX_ENTRY_LEN as u64)
            .filter(|n| index_offset.checked_add(n + trailer_len as u64) == Some(len));
        let Some(index_len) = index_len else { return Err(bad("index does not fit the file")) };
        let blake3 = trailer.get(16..48).and_then(|h| <[u8; 32]>::try_from(h).ok());
        Ok(Trailer { index_offset, index_len, hashed_len: at + 16, blake3 })
    }

    /// The pack's own index: every chunk it holds. Lets the catalog be rebuilt from packs.
    pub fn index(&self) -> io::Result<Vec<(ChunkHash, ChunkLocation)>> {
        let Trailer { index_offset, index_len, .. } = self.trailer()?;
        let mut index = vec![0u8; index_len as usize];
        self.file.read_exact_at(&mut index, index_offset)?;
        Ok(index
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(|e| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&e[..32]);
                let u32_at = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
                let offset = u64::from_le_bytes(e[32..40].try_into().unwrap_or([0; 8]));
                let location = ChunkLocation {
                    pack: self.id.clone(),
                    offset,
                    frame_size: u32_at(40),
                    frame_offset: u32_at(44),
                    size: u32_at(48),
                };
                (hash, location)
            })
            .collect())
    }

    /// Hashes the whole pack against the blake3 its trailer holds: every byte is proved,
    /// those of chunks no catalog row uses and of the header included. `Ok(None)` for a
    /// version 2 pack, which has no such hash; `Ok(Some(why))` for one whose bytes differ.
    pub fn prove_whole(&self) -> io::Result<Option<String>> {
        let Trailer { hashed_len, blake3: Some(want), .. } = self.trailer()? else { return Ok(None) };
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < hashed_len {
            let n = buffer.len().min((hashed_len - at) as usize);
            self.file.read_exact_at(&mut buffer[..n], at)?;
            hasher.update(&buffer[..n]);
            at += n as u64;
        }
        Ok((hasher.finalize().as_bytes() != &want)
            .then(|| format!("pack {}: its bytes do not match the blake3 in its trailer", self.id)))
    }

    /// The chunk at `at`, cut from its decompressed frame and checked against its hash.
    pub fn chunk_of<'a>(frame: &'a [u8], hash: &ChunkHash, at: &ChunkLocation) -> Result<&'a [u8], String> {
        let start = at.frame_offset as usize;
        let Some(data) = frame.get(start..start + at.size as usize) else {
            return Err(format!("lies outside its frame ({} bytes)", frame.len()));
        };
        if blake3::hash(data).as_bytes() != hash {
            return Err("does not match its hash".into());
        }
        Ok(data)
    }

    /// The error for a chunk found damaged.
    pub fn damaged(id: &str, hash: &ChunkHash, at: &ChunkLocation, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("pack {id} is damaged: chunk {} in the frame at offset {} {what}", hex(hash), at.offset),
        )
    }
}
