//! The superblock (`btrfs_super_block`): the primary at 64 KiB, or where its checksum fails
//! the newest valid mirror (at 64 MiB and 256 GiB), as `btrfs rescue super-recover` would.

use super::{Error, checksum, corrupt, read_failed, unsupported};
use crate::ReadAt;
use crate::bytes::{le16, le32, le64};

pub(super) const SIZE: usize = 4096;
const MAGIC: &[u8; 8] = b"_BHRfS_M";
const OFFSETS: [u64; 3] = [64 << 10, 64 << 20, 256 << 30];
/// The bootstrap chunk array's room in the superblock.
const SYS_CHUNK_ARRAY: usize = 0x32b;
const SYS_CHUNK_ARRAY_MAX: usize = 2048;
const LABEL: usize = 0x12b;

/// Incompatible features: those that change nothing this reader reads, and those it handles.
const INCOMPAT_MIXED_BACKREF: u64 = 1 << 0;
const INCOMPAT_DEFAULT_SUBVOL: u64 = 1 << 1;
const INCOMPAT_MIXED_GROUPS: u64 = 1 << 2;
const INCOMPAT_COMPRESS_LZO: u64 = 1 << 3;
const INCOMPAT_COMPRESS_ZSTD: u64 = 1 << 4;
const INCOMPAT_BIG_METADATA: u64 = 1 << 5;
const INCOMPAT_EXTENDED_IREF: u64 = 1 << 6;
const INCOMPAT_RAID56: u64 = 1 << 7;
const INCOMPAT_SKINNY_METADATA: u64 = 1 << 8;
const INCOMPAT_NO_HOLES: u64 = 1 << 9;
const INCOMPAT_METADATA_UUID: u64 = 1 << 10;
const INCOMPAT_RAID1C34: u64 = 1 << 11;
const INCOMPAT_SIMPLE_QUOTA: u64 = 1 << 16;
const INCOMPAT_KNOWN: u64 = INCOMPAT_MIXED_BACKREF
    | INCOMPAT_DEFAULT_SUBVOL
    | INCOMPAT_MIXED_GROUPS
    | INCOMPAT_COMPRESS_LZO
    | INCOMPAT_COMPRESS_ZSTD
    | INCOMPAT_BIG_METADATA
    | INCOMPAT_EXTENDED_IREF
    | INCOMPAT_RAID56
    | INCOMPAT_SKINNY_METADATA
    | INCOMPAT_NO_HOLES
    | INCOMPAT_METADATA_UUID
    | INCOMPAT_RAID1C34
    | INCOMPAT_SIMPLE_QUOTA;

pub(super) struct Superblock {
    pub fsid: [u8; 16],
    /// What tree blocks carry as their filesystem id: the fsid, or the metadata UUID.
    pub metadata_fsid: [u8; 16],
    pub generation: u64,
    pub root: u64,
    pub root_level: u8,
    pub chunk_root: u64,
    pub chunk_root_level: u8,
    pub total_bytes: u64,
    /// Bytes allocated to extents (metadata counted once), as of the last commit.
    pub bytes_used: u64,
    pub sector_size: u32,
    pub node_size: u32,
    /// The one device's id, which every chunk stripe must name.
    pub devid: u64,
    pub label: Vec<u8>,
    /// The bootstrap chunk items (those of the chunk tree itself).
    pub sys_chunk_array: Vec<u8>,
}

/// True when `src` carries a btrfs magic in its primary superblock.
pub(super) fn probe(src: &dyn ReadAt) -> bool {
    let mut magic = [0u8; 8];
    src.read_exact_at(&mut magic, OFFSETS[0] + 0x40).is_ok() && &magic == MAGIC
}

impl Superblock {
    pub fn read(src: &dyn ReadAt) -> Result<Superblock, Error> {
        let primary = Self::read_at(src, OFFSETS[0]);
        let Err(why) = primary else { return primary };
        // The mirrors, newest first, stand in for a primary that fails its checks.
        let mut mirrors: Vec<Superblock> = (OFFSETS[1..].iter())
            .filter(|&&at| at + SIZE as u64 <= src.size())
            .filter_map(|&at| Self::read_at(src, at).ok())
            .collect();
        mirrors.sort_by_key(|m| std::cmp::Reverse(m.generation));
        mirrors.into_iter().next().ok_or(why)
    }

    fn read_at(src: &dyn ReadAt, at: u64) -> Result<Superblock, Error> {
        let what = || format!("the superblock at {at}");
        let mut raw = vec![0u8; SIZE];
        src.read_exact_at(&mut raw, at).map_err(|e| read_failed(&e, format!("{}: {e}", what())))?;
        if raw.get(0x40..0x48) != Some(MAGIC.as_slice()) {
            return Err(corrupt(format!("{}: no btrfs magic", what())));
        }
        let csum_type = le16(&raw, 0xc4);
        if csum_type != 0 {
            let name = match csum_type {
                1 => "xxhash64",
                2 => "sha256",
                3 => "blake2b",
                _ => "unknown",
            };
            return Err(unsupported(format!("checksums of type {csum_type} ({name}) are not read; crc32c is")));
        }
        checksum(&raw, &what)?;
        if le64(&raw, 0x30) != at {
            return Err(corrupt(format!("{}: says it lies at {}", what(), le64(&raw, 0x30))));
        }
        let incompat = le64(&raw, 0xbc);
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(unsupported(format!(
                "incompatible features {:#x} are not read (zoned devices, extent tree v2, the raid stripe tree)",
                incompat & !INCOMPAT_KNOWN
            )));
        }
        let num_devices = le64(&raw, 0x88);
        if num_devices != 1 {
            return Err(unsupported(format!("a filesystem over {num_devices} devices is not read; one device is")));
        }
        let sector_size = le32(&raw, 0x90);
        let node_size = le32(&raw, 0x94);
        let sane = |n: u32| n.is_power_of_two() && (4096..=65536).contains(&n);
        if !sane(sector_size) || !sane(node_size) || node_size < sector_size {
            return Err(corrupt(format!("{}: sector size {sector_size}, node size {node_size}", what())));
        }
        let array_len = le32(&raw, 0xa0) as usize;
        let sys_chunk_array = raw
            .get(SYS_CHUNK_ARRAY..SYS_CHUNK_ARRAY + array_len)
            .filter(|_| array_len <= SYS_CHUNK_ARRAY_MAX)
            .ok_or_else(|| corrupt(format!("{}: a bootstrap chunk array of {array_len} bytes", what())))?
            .to_vec();
        let uuid = |at: usize| -> [u8; 16] { raw.get(at..at + 16).and_then(|b| b.try_into().ok()).unwrap_or([0; 16]) };
        let fsid = uuid(0x20);
        let metadata_fsid = if incompat & INCOMPAT_METADATA_UUID != 0 { uuid(0x23b) } else { fsid };
        let label = raw.get(LABEL..LABEL + 256).unwrap_or_default();
        let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
        Ok(Superblock {
            fsid,
            metadata_fsid,
            generation: le64(&raw, 0x48),
            root: le64(&raw, 0x50),
            root_level: raw.get(0xc6).copied().unwrap_or(0),
            chunk_root: le64(&raw, 0x58),
            chunk_root_level: raw.get(0xc7).copied().unwrap_or(0),
            total_bytes: le64(&raw, 0x70),
            bytes_used: le64(&raw, 0x78),
            sector_size,
            node_size,
            devid: le64(&raw, 0xc9),
            label: label.get(..end).unwrap_or_default().to_vec(),
            sys_chunk_array,
        })
    }
}
