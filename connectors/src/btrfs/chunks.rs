//! The chunk map: btrfs addresses everything by a logical address, which chunks map onto the
//! device. Single and DUP chunks are read (a DUP chunk's first copy); chunks striped or
//! mirrored over several devices are refused with their profile's name.

use super::tree::Key;
use super::{Error, corrupt, unsupported};
use crate::bytes::{le16, le64};

/// `btrfs_chunk` without its stripes, and one stripe.
const CHUNK: usize = 48;
const STRIPE: usize = 32;
pub(super) const CHUNK_ITEM: u8 = 228;

/// Profile bits of a chunk's type.
const DUP: u64 = 1 << 5;
const PROFILES: [(u64, &str); 8] = [
    (1 << 3, "RAID0"),
    (1 << 4, "RAID1"),
    (1 << 6, "RAID10"),
    (1 << 7, "RAID5"),
    (1 << 8, "RAID6"),
    (1 << 9, "RAID1C3"),
    (1 << 10, "RAID1C4"),
    (DUP, "DUP"),
];

/// `length` bytes at logical address `logical` lie at `physical` on the device.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    logical: u64,
    length: u64,
    physical: u64,
}

#[derive(Default)]
pub(super) struct ChunkMap {
    /// Sorted by logical address, not overlapping.
    chunks: Vec<Chunk>,
}

impl ChunkMap {
    /// Adds the chunk item `data` (whose key is `key`), checked; a chunk already known is kept.
    pub fn add(&mut self, key: &Key, data: &[u8], devid: u64) -> Result<(), Error> {
        let logical = key.offset;
        let what = || format!("the chunk at logical {logical}");
        let length = le64(data, 0);
        let kind = le64(data, 24);
        let stripes = usize::from(le16(data, 44));
        if data.len() < CHUNK + stripes * STRIPE || stripes == 0 || length == 0 {
            return Err(corrupt(format!(
                "{}: {stripes} stripes, {length} bytes, in an item of {}",
                what(),
                data.len()
            )));
        }
        if let Some((_, name)) = PROFILES.iter().find(|(bit, _)| kind & bit != 0 && *bit != DUP) {
            return Err(unsupported(format!("{}: the {name} profile is not read; single and DUP are", what())));
        }
        if kind & DUP != 0 && stripes != 2 {
            return Err(corrupt(format!("{}: DUP with {stripes} stripes", what())));
        }
        if le64(data, CHUNK) != devid {
            return Err(corrupt(format!("{}: its stripe is on device {}, not this one", what(), le64(data, CHUNK))));
        }
        let chunk = Chunk { logical, length, physical: le64(data, CHUNK + 8) };
        if logical.checked_add(length).is_none() || chunk.physical.checked_add(length).is_none() {
            return Err(corrupt(format!("{}: {length} bytes overflow the address space", what())));
        }
        let at = self.chunks.partition_point(|c| c.logical < logical);
        let same = |c: &&Chunk| c.logical == logical && c.length == length && c.physical == chunk.physical;
        if self.chunks.get(at).filter(same).is_some() {
            return Ok(()); // a bootstrap chunk the chunk tree lists again
        }
        let overlaps_before = at > 0 && self.chunks.get(at - 1).is_some_and(|c| c.logical + c.length > logical);
        let overlaps_after = self.chunks.get(at).is_some_and(|c| logical + length > c.logical);
        if overlaps_before || overlaps_after {
            return Err(corrupt(format!("{}: it overlaps another chunk", what())));
        }
        self.chunks.insert(at, chunk);
        Ok(())
    }

    /// Reads the bootstrap chunk items of the superblock's array.
    pub fn bootstrap(array: &[u8], devid: u64) -> Result<ChunkMap, Error> {
        let mut map = ChunkMap::default();
        let mut at = 0;
        while at < array.len() {
            let key = Key::parse(array, at)
                .ok_or_else(|| corrupt(format!("the superblock's chunk array: a key cut short at {at}")))?;
            at += Key::SIZE;
            if key.kind != CHUNK_ITEM {
                return Err(corrupt(format!("the superblock's chunk array: an item of type {} at {at}", key.kind)));
            }
            let stripes = usize::from(le16(array, at + 44));
            let len = CHUNK + stripes * STRIPE;
            let data = array
                .get(at..at + len)
                .ok_or_else(|| corrupt(format!("the superblock's chunk array: a chunk cut short at {at}")))?;
            map.add(&key, data, devid)?;
            at += len;
        }
        Ok(map)
    }

    /// Where `len` bytes at logical address `logical` lie on the device: within one chunk, or
    /// an error naming `what`.
    pub fn physical(&self, logical: u64, len: u64, what: &dyn Fn() -> String) -> Result<u64, Error> {
        let at = self.chunks.partition_point(|c| c.logical + c.length <= logical);
        let chunk = (self.chunks.get(at)).filter(|c| {
            c.logical <= logical && (logical - c.logical).checked_add(len).is_some_and(|end| end <= c.length)
        });
        let chunk = chunk.ok_or_else(|| {
            corrupt(format!("{}: logical {logical} (+{len}) lies in no chunk, or across chunks", what()))
        })?;
        Ok(chunk.physical + (logical - chunk.logical))
    }
}
