//! Reading chunks back: packs opened once, each frame decompressed once while it is in use.

use super::ChunkHash;
use super::pack::{ChunkLocation, PackReader};
use super::packs::Packs;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;

use std::sync::{Arc, Mutex, OnceLock};

/// Decompressed frames kept for reuse. A frame holds many chunks and readers ask for them
/// in roughly store order, so a small cache means each frame is decompressed about once.
const CACHE_BYTES: usize = 192 << 20;

thread_local! {
    /// The frame a thread of `for_each_chunk` is passing on, its memory reused for the next.
    static FRAME: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A frame once read: its bytes, or what was wrong with it (damage, or an I/O error).
type FrameSlot = Arc<OnceLock<Result<Arc<Frame>, FrameError>>>;

/// A decompressed frame, and the chunks of it found to match their hashes: a chunk read again
/// while its frame is cached is not hashed again.
struct Frame {
    data: Vec<u8>,
    /// Each by its place in the frame (offset, size) and hash: a row naming the same chunk
    /// with another size is checked anew.
    checked: Mutex<HashSet<(u32, u32, ChunkHash)>>,
}

/// A checked chunk, read through the cache: a view of its frame, which it keeps alive.
pub struct Chunk {
    frame: Arc<Frame>,
    start: usize,
    len: usize,
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.frame.data[self.start..self.start + self.len]
    }
}

#[derive(Clone)]
enum FrameError {
    Damaged(String),
    Io(io::ErrorKind, String),
}

/// Reads chunks from any pack of a library; shareable across threads.
pub struct ChunkReader {
    packs: Packs,
    opened: Mutex<HashMap<String, Arc<PackReader>>>,
    frames: Mutex<FrameCache>,
}

struct FrameCache {
    /// The budget: past it, the oldest frames go.
    limit: usize,
    slots: HashMap<(String, u64), FrameSlot>,
    /// Oldest first, with the bytes each holds once read.
    order: VecDeque<((String, u64), usize)>,
    bytes: usize,
}

impl ChunkReader {
    pub fn new(packs: &Packs) -> ChunkReader {
        ChunkReader::with_cache(packs, CACHE_BYTES)
    }

    /// A reader keeping at most about `bytes` of decompressed frames (a long-lived reader, such
    /// as a mount, keeps less than a checkout).
    pub fn with_cache(packs: &Packs, bytes: usize) -> ChunkReader {
        let frames = FrameCache { limit: bytes, slots: HashMap::new(), order: VecDeque::new(), bytes: 0 };
        ChunkReader { packs: packs.clone(), opened: Mutex::default(), frames: Mutex::new(frames) }
    }

    /// Reads, decompresses and checks one chunk.
    pub fn read(&self, hash: &ChunkHash, at: &ChunkLocation) -> io::Result<Vec<u8>> {
        self.chunk(hash, at).map(|chunk| chunk.to_vec())
    }

    /// Reads, decompresses and checks one chunk, without copying it out of its frame.
    pub fn chunk(&self, hash: &ChunkHash, at: &ChunkLocation) -> io::Result<Chunk> {
        let pack = self.pack(&at.pack)?;
        let key = (at.pack.clone(), at.offset);
        let slot = {
            let mut cache = self.frames.lock().map_err(|_| poisoned())?;
            cache.slots.entry(key.clone()).or_default().clone()
        };
        // The first thread to ask reads the frame; others asking meanwhile wait for it.
        let mut fresh = false;
        let frame = slot.get_or_init(|| {
            fresh = true;
            match pack.read_frame(at.offset, at.frame_size) {
                Ok(Ok(data)) => Ok(Arc::new(Frame { data, checked: Mutex::default() })),
                Ok(Err(why)) => Err(FrameError::Damaged(why)),
                Err(e) => Err(FrameError::Io(e.kind(), e.to_string())),
            }
        });
        if fresh {
            let len = frame.as_ref().map_or(0, |f| f.data.len());
            self.frames.lock().map_err(|_| poisoned())?.charge(key, len);
        }
        let frame = match frame {
            Ok(frame) => frame,
            Err(FrameError::Damaged(why)) => return Err(PackReader::damaged(&at.pack, hash, at, why)),
            Err(FrameError::Io(kind, what)) => return Err(io::Error::new(*kind, what.clone())),
        };
        let chunk = Chunk { frame: frame.clone(), start: at.frame_offset as usize, len: at.size as usize };
        let id = (at.frame_offset, at.size, *hash);
        if frame.checked.lock().map_err(|_| poisoned())?.contains(&id) {
            return Ok(chunk);
        }
        PackReader::chunk_of(&frame.data, hash, at).map_err(|why| PackReader::damaged(&at.pack, hash, at, &why))?;
        frame.checked.lock().map_err(|_| poisoned())?.insert(id);
        Ok(chunk)
    }

    /// Hands every chunk of `wanted` to `each`, checked against its hash, reading frame by
    /// frame in parallel: one thread decompresses a frame and passes on each wanted chunk of it
    /// before it takes the next frame. Each frame is read once and nothing is cached, so memory
    /// stays at one frame per thread, in buffers reused from frame to frame. `failed` turns an
    /// error of the store (I/O, or a damaged frame or chunk) into the caller's.
    pub fn for_each_chunk<E: Send>(
        &self,
        wanted: &[(ChunkHash, &ChunkLocation)],
        each: impl Fn(&ChunkHash, &[u8]) -> Result<(), E> + Sync,
        failed: impl Fn(io::Error) -> E + Sync,
    ) -> Result<(), E> {
        use rayon::prelude::*;
        let mut wanted: Vec<&(ChunkHash, &ChunkLocation)> = wanted.iter().collect();
        wanted.sort_by(|(_, a), (_, b)| (&a.pack, a.offset, a.frame_offset).cmp(&(&b.pack, b.offset, b.frame_offset)));
        let frames: Vec<&[&(ChunkHash, &ChunkLocation)]> =
            wanted.chunk_by(|(_, a), (_, b)| a.pack == b.pack && a.offset == b.offset).collect();
        frames.into_par_iter().try_for_each(|chunks| {
            let Some((first_hash, first)) = chunks.first() else { return Ok(()) };
            let pack = self.pack(&first.pack).map_err(&failed)?;
            // Taken out of the thread's slot while in use, so that `each` may itself use rayon.
            let mut frame = FRAME.take();
            let result = match pack.read_frame_into(first.offset, first.frame_size, &mut frame) {
                Err(e) => Err(failed(e)),
                Ok(Err(why)) => Err(failed(PackReader::damaged(&first.pack, first_hash, first, &why))),
                Ok(Ok(())) => chunks.iter().try_for_each(|(hash, at)| {
                    let data = PackReader::chunk_of(&frame, hash, at)
                        .map_err(|why| failed(PackReader::damaged(&at.pack, hash, at, &why)))?;
                    each(hash, data)
                }),
            };
            FRAME.set(frame);
            result
        })
    }

    /// The pack, opened on first use.
    pub fn pack(&self, id: &str) -> io::Result<Arc<PackReader>> {
        let mut opened = self.opened.lock().map_err(|_| poisoned())?;
        if let Some(p) = opened.get(id) {
            return Ok(p.clone());
        }
        let p = Arc::new(PackReader::open(&self.packs, id)?);
        opened.insert(id.to_string(), p.clone());
        Ok(p)
    }
}

impl FrameCache {
    /// Counts a frame just read, then forgets the oldest frames beyond the budget (a reader
    /// still holding one keeps it alive until done).
    fn charge(&mut self, key: (String, u64), len: usize) {
        self.order.push_back((key, len));
        self.bytes += len;
        while self.bytes > self.limit && self.order.len() > 1 {
            let Some((old, len)) = self.order.pop_front() else { break };
            self.bytes -= len;
            self.slots.remove(&old);
        }
    }
}

fn poisoned() -> io::Error {
    io::Error::other("a reader thread failed")
}

#[cfg(test)]
mod tests {
    use super::super::pack::{Compression, PackWriter};
    use super::super::packs::pack_path;
    use super::*;
    use std::fs;

    #[test]
    fn chunks_round_trip_through_frames_and_the_trailer_indexes_them() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("tmp")).unwrap();
        // Frames of 3 KiB: chunks of 1..5 KB fill several frames.
        let small = Compression { level: 3, frame: 3000, window_log: 0 };
        let packs = Packs(crate::storage::Storage::Folder(root.path().to_path_buf()));
        let mut w = PackWriter::new(&packs, &root.path().join("tmp"), "t".into(), small);
        let data: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 * (i as usize + 1)]).collect();
        for d in &data {
            if let Some(full) = w.add(*blake3::hash(d).as_bytes(), d) {
                w.write(full.compress().unwrap()).unwrap();
            }
        }
        let written = w.finish().unwrap();
        assert_eq!(written.len(), 5);
        let frames: std::collections::BTreeSet<u64> = written.iter().map(|c| c.location.offset).collect();
        assert_eq!(frames.len(), 4, "a frame closes once it holds 3000 bytes: [1000, 2000], [3000], [4000], [5000]");
        assert!(fs::read_dir(root.path().join("tmp")).unwrap().next().is_none(), "tmp/ must be empty after publish");
        let r = ChunkReader::new(&packs);
        for (d, c) in data.iter().zip(&written) {
            assert_eq!(&r.read(&c.hash, &c.location).unwrap(), d);
        }
        let pack = r.pack(&written[0].location.pack).unwrap();
        assert_eq!(pack.level().unwrap(), 3);
        let index = pack.index().unwrap();
        assert_eq!(index, written.iter().map(|c| (c.hash, c.location.clone())).collect::<Vec<_>>());
        assert_eq!(pack.prove_whole().unwrap(), None, "the whole pack matches its trailer's blake3");

        // The same pack as format 2 wrote it (no blake3 in the trailer) reads the same, and has
        // nothing to be proved whole against.
        let path = pack_path(root.path(), &written[0].location.pack);
        let v3 = fs::read(&path).unwrap();
        let mut v2 = v3.clone();
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        v2.drain(v3.len() - 40..v3.len() - 8);
        fs::write(&path, &v2).unwrap();
        let pack = ChunkReader::new(&packs).pack(&written[0].location.pack).unwrap();
        assert_eq!(pack.index().unwrap(), index);
        assert_eq!(pack.prove_whole().unwrap(), None);
        // Format 3: any byte changed, even one no chunk reads (the header's level), is found.
        for at in [13, v3.len() / 2, v3.len() - 9] {
            let mut changed = v3.clone();
            changed[at] ^= 0x04;
            fs::write(&path, &changed).unwrap();
            let pack = ChunkReader::new(&packs).pack(&written[0].location.pack).unwrap();
            assert!(pack.prove_whole().unwrap().is_some(), "byte {at}");
        }
        // An unknown format version is refused by name.
        let mut v9 = v3.clone();
        v9[8..12].copy_from_slice(&9u32.to_le_bytes());
        fs::write(&path, &v9).unwrap();
        let pack = ChunkReader::new(&packs).pack(&written[0].location.pack).unwrap();
        assert!(pack.index().unwrap_err().to_string().contains("not a version 2 or 3 pack"));
        fs::write(&path, &v3).unwrap();
        // A flipped byte is found, not returned, for every chunk of its frame.
        let path = pack_path(root.path(), &written[0].location.pack);
        let mut bytes = fs::read(&path).unwrap();
        let at = &written[2].location;
        bytes[(at.offset + u64::from(at.frame_size) - 1) as usize] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let r = ChunkReader::new(&packs);
        assert!(r.read(&written[2].hash, &written[2].location).is_err());
        assert_eq!(r.read(&written[0].hash, &written[0].location).unwrap(), data[0], "other frames are intact");
    }
}
