//! The superblock of allocation group 0, and the geometry every other structure is found by.

use super::{Error, corrupt, read_failed, unsupported};
use crate::ReadAt;
use crate::bytes::{be16, be32, be64};

const MAGIC: &[u8; 4] = b"XFSB";
/// The bytes of the superblock this reader looks at (it fills a sector of 512 or more).
const LEN: usize = 264;

/// `sb_versionnum`: the version in the low nibble; on version 4 the feature bits above it.
const VERSION_NUMBITS: u16 = 0x000F;
const VERSION_DIRV2: u16 = 0x2000;
const VERSION_MOREBITS: u16 = 0x8000;
/// `sb_features2` on version 4: directory entries carry the file type.
const FEATURES2_FTYPE: u32 = 0x200;

/// Version 5 `sb_features_incompat` bits.
const INCOMPAT_FTYPE: u32 = 1 << 0;
const INCOMPAT_SPINODES: u32 = 1 << 1;
const INCOMPAT_META_UUID: u32 = 1 << 2;
const INCOMPAT_BIGTIME: u32 = 1 << 3;
const INCOMPAT_NEEDSREPAIR: u32 = 1 << 4;
const INCOMPAT_NREXT64: u32 = 1 << 5;
const INCOMPAT_EXCHRANGE: u32 = 1 << 6;
const INCOMPAT_PARENT: u32 = 1 << 7;
/// Understood: what changes how inodes, directories, times and extent counts are laid out.
/// Everything else is refused, as an older kernel refuses to mount: the metadata directory
/// tree (1 << 8) and bits not yet assigned. NEEDSREPAIR is refused by name.
const INCOMPAT_SUPPORTED: u32 = INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NREXT64
    | INCOMPAT_EXCHRANGE
    | INCOMPAT_PARENT;
/// Version 5 `sb_features_ro_compat`: extents shared by reflink.
const RO_COMPAT_REFLINK: u32 = 1 << 2;

/// The fields of the superblock this reader uses, checked against each other and against
/// the size of the source.
#[derive(Debug, Clone)]
pub(super) struct Superblock {
    pub block_size: u32,
    pub block_log: u8,
    /// Blocks of the data volume.
    pub dblocks: u64,
    pub uuid: [u8; 16],
    pub label: [u8; 12],
    pub root_ino: u64,
    pub ag_blocks: u32,
    pub ag_count: u32,
    pub inode_size: u32,
    pub inopb_log: u8,
    pub agblk_log: u8,
    /// A directory block is `block_size << dir_block_log` bytes.
    pub dir_block_log: u8,
    /// Version 5: self-describing metadata (checksums, owners, bigger headers).
    pub v5: bool,
    /// Directory entries carry the file type.
    pub ftype: bool,
    /// Inode extent counts are 64-bit where an inode says so.
    pub nrext64: bool,
    /// Files may share extents (reflink).
    pub reflink: bool,
    /// Counts as of the last unmount: inodes allocated and free among them, free blocks; the
    /// internal log's blocks (none for an external log); the share of blocks inodes may take.
    pub icount: u64,
    pub ifree: u64,
    pub fdblocks: u64,
    pub log_blocks: u64,
    pub imax_pct: u8,
}

pub(super) fn probe(src: &dyn ReadAt) -> bool {
    let mut magic = [0; 4];
    src.read_exact_at(&mut magic, 0).is_ok() && &magic == MAGIC
}

impl Superblock {
    pub fn read(src: &dyn ReadAt) -> Result<Superblock, Error> {
        let mut b = vec![0; LEN];
        src.read_exact_at(&mut b, 0).map_err(|e| read_failed(&e, format!("superblock: {e}")))?;
        let bad = |what: String| corrupt(format!("superblock: {what}"));
        if b.get(..4) != Some(MAGIC.as_slice()) {
            return Err(bad("magic is not XFSB".into()));
        }
        let sector = usize::from(be16(&b, 102));
        if !(512..=32768).contains(&sector) || !sector.is_power_of_two() {
            return Err(bad(format!("sector size {sector} is not a power of two of 512 to 32 KiB")));
        }
        let versionnum = be16(&b, 100);
        let version = versionnum & VERSION_NUMBITS;
        let block_size = be32(&b, 4);
        let block_log = b[120];
        let inode_size = u32::from(be16(&b, 104));
        let inopblock = u32::from(be16(&b, 106));
        let inopb_log = b[123];
        let agblk_log = b[124];
        let ag_blocks = be32(&b, 84);
        let ag_count = be32(&b, 88);
        let dblocks = be64(&b, 8);
        let dir_block_log = b[192];
        let features2 = if versionnum & VERSION_MOREBITS != 0 { be32(&b, 200) } else { 0 };
        let (ro_compat, incompat) = (be32(&b, 212), be32(&b, 216));
        let v5 = match version {
            5 => true,
            4 => false,
            1..=3 => return Err(unsupported(format!("superblock: version {version} (before IRIX 6.2) is not read"))),
            _ => return Err(bad(format!("version {version} is not 4 or 5"))),
        };
        if !(512..=65536).contains(&block_size)
            || !block_size.is_power_of_two()
            || 1u32.checked_shl(u32::from(block_log)) != Some(block_size)
        {
            return Err(bad(format!(
                "block size {block_size} (log {block_log}) is not a power of two of 512 to 64 KiB"
            )));
        }
        if !(256..=2048).contains(&inode_size)
            || !inode_size.is_power_of_two()
            || (v5 && inode_size < 512)
            || inode_size > block_size
            || inopblock != block_size / inode_size
            || 1u32.checked_shl(u32::from(inopb_log)) != Some(inopblock)
        {
            return Err(bad(format!(
                "inode size {inode_size} with {inopblock} inodes (log {inopb_log}) per {block_size}-byte block is inconsistent"
            )));
        }
        // An allocation group holds at least 64 blocks and its block numbers fit agblklog bits.
        if ag_blocks < 64 || agblk_log > 31 || u64::from(ag_blocks) > 1u64 << agblk_log || ag_count == 0 {
            return Err(bad(format!("{ag_count} allocation groups of {ag_blocks} blocks (log {agblk_log})")));
        }
        if u32::from(agblk_log) + u32::from(inopb_log) > 32 {
            return Err(bad(format!("inode numbers of {agblk_log} + {inopb_log} bits within a group")));
        }
        let most = u64::from(ag_count) * u64::from(ag_blocks);
        if dblocks == 0 || dblocks > most || dblocks <= most - u64::from(ag_blocks) {
            return Err(bad(format!("{dblocks} blocks do not fill {ag_count} groups of {ag_blocks}")));
        }
        if u32::from(dir_block_log) + u32::from(block_log) > 16 {
            return Err(bad(format!("directory blocks of {block_size} << {dir_block_log} bytes pass 64 KiB")));
        }
        let bytes = dblocks.saturating_mul(u64::from(block_size));
        if bytes > src.size() {
            return Err(bad(format!("the filesystem's {bytes} bytes do not fit in the volume's {}", src.size())));
        }
        if be64(&b, 16) != 0 {
            return Err(unsupported("superblock: a real-time volume is not read".into()));
        }
        if b[126] != 0 {
            return Err(bad("mkfs did not finish (sb_inprogress is set)".into()));
        }
        if !v5 && versionnum & VERSION_DIRV2 == 0 {
            return Err(unsupported("superblock: version 1 directories are not read".into()));
        }
        if v5 && incompat & INCOMPAT_NEEDSREPAIR != 0 {
            return Err(unsupported("superblock: the filesystem is marked as needing xfs_repair".into()));
        }
        if v5 && incompat & !INCOMPAT_SUPPORTED != 0 {
            return Err(unsupported(format!(
                "superblock: incompatible features {:#x} are not read",
                incompat & !INCOMPAT_SUPPORTED
            )));
        }
        if v5 {
            // The checksum covers the whole sector the superblock fills.
            let mut whole = vec![0; sector];
            src.read_exact_at(&mut whole, 0).map_err(|e| read_failed(&e, format!("superblock: {e}")))?;
            super::checksum(&whole, 224, &|| "superblock".to_string())?;
        }
        let mut uuid = [0; 16];
        uuid.copy_from_slice(&b[32..48]);
        let mut label = [0; 12];
        label.copy_from_slice(&b[108..120]);
        Ok(Superblock {
            block_size,
            block_log,
            dblocks,
            uuid,
            label,
            root_ino: be64(&b, 56),
            ag_blocks,
            ag_count,
            inode_size,
            inopb_log,
            agblk_log,
            dir_block_log,
            v5,
            ftype: if v5 { incompat & INCOMPAT_FTYPE != 0 } else { features2 & FEATURES2_FTYPE != 0 },
            nrext64: v5 && incompat & INCOMPAT_NREXT64 != 0,
            reflink: v5 && ro_compat & RO_COMPAT_REFLINK != 0,
            icount: be64(&b, 128),
            ifree: be64(&b, 136),
            fdblocks: be64(&b, 144),
            log_blocks: if be64(&b, 48) != 0 { u64::from(be32(&b, 96)) } else { 0 },
            imax_pct: b[127],
        })
    }

    /// The linear block number of a filesystem block number (group number in the high bits,
    /// block within the group in the low `agblklog`), if it lies inside the filesystem.
    pub fn linear(&self, fsblock: u64) -> Option<u64> {
        let ag = fsblock >> self.agblk_log;
        let agbno = fsblock & ((1u64 << self.agblk_log) - 1);
        if ag >= u64::from(self.ag_count) || agbno >= u64::from(self.ag_blocks) {
            return None;
        }
        Some(ag * u64::from(self.ag_blocks) + agbno).filter(|&b| b < self.dblocks)
    }

    /// The byte offset of inode `ino`, if its number points inside the filesystem.
    pub fn inode_offset(&self, ino: u64) -> Option<u64> {
        let in_ag_bits = u32::from(self.agblk_log) + u32::from(self.inopb_log);
        let ag = ino >> in_ag_bits;
        // The catalog keeps inode numbers as signed 64-bit integers.
        if ag >= u64::from(self.ag_count) || ino > i64::MAX as u64 {
            return None;
        }
        let agbno = (ino >> self.inopb_log) & ((1u64 << self.agblk_log) - 1);
        let index = ino & ((1u64 << self.inopb_log) - 1);
        let block = self.linear((ag << self.agblk_log) | agbno)?;
        Some(block * u64::from(self.block_size) + index * u64::from(self.inode_size))
    }
}
