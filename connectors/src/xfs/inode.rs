//! Inodes (`xfs_dinode`, versions 1 to 3) and the block maps of their two forks: a list of
//! extent records in the inode, or a B+tree of them (`BMAP`/`BMA3` blocks).

use super::superblock::Superblock;
use super::{Error, corrupt};
use crate::bytes::{be16, be32, be64};

const MAGIC: u16 = 0x494E; // "IN"
/// Where the forks start: after the version 3 core, or at `di_crc` in versions 1 and 2.
const CORE_V3: usize = 176;
const CORE_V2: usize = 100;
/// Where a version 3 inode keeps its checksum.
pub(super) const CRC_AT: usize = 100;

/// `di_format` / `di_aformat`.
pub(super) const FMT_DEV: u8 = 0;
pub(super) const FMT_LOCAL: u8 = 1;
pub(super) const FMT_EXTENTS: u8 = 2;
pub(super) const FMT_BTREE: u8 = 3;

const DIFLAG_REALTIME: u16 = 1 << 0;
const DIFLAG2_BIGTIME: u64 = 1 << 3;
const DIFLAG2_NREXT64: u64 = 1 << 4;

/// Long-format B+tree block magics, and their header sizes.
const BMAP_MAGIC: u32 = 0x424D_4150; // "BMAP"
const BMA3_MAGIC: u32 = 0x424D_4133; // "BMA3"
const BTREE_HDR_V4: usize = 24;
const BTREE_HDR_V5: usize = 72;
/// More levels than any block map can need (the kernel's limit is 9 for 64-bit counts).
const MAX_LEVELS: u16 = 10;

/// The fields of an inode this reader uses, and the raw bytes of its two forks.
pub(super) struct Inode {
    pub ino: u64,
    pub mode: u16,
    pub format: u8,
    pub aformat: u8,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    /// Blocks the inode owns: data, attribute and block-map blocks.
    pub nblocks: u64,
    pub nextents: u64,
    pub anextents: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub data_fork: Vec<u8>,
    /// Empty when the inode has no attribute fork.
    pub attr_fork: Vec<u8>,
}

/// Which fork of an inode.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fork {
    Data,
    Attr,
}

impl Fork {
    pub fn name(self) -> &'static str {
        match self {
            Fork::Data => "data fork",
            Fork::Attr => "attribute fork",
        }
    }
}

/// One extent record: `len` blocks at file block `offset`, at linear block `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    pub offset: u64,
    pub block: u64,
    pub len: u64,
    pub unwritten: bool,
}

impl Inode {
    pub fn parse(ino: u64, raw: &[u8], sb: &Superblock) -> Result<Inode, Error> {
        let bad = |what: String| corrupt(format!("inode {ino}: {what}"));
        if be16(raw, 0) != MAGIC {
            return Err(bad(format!("magic {:#06x} is not IN (the inode number points at no inode)", be16(raw, 0))));
        }
        let version = raw.get(4).copied().unwrap_or(0);
        let core = match version {
            3 if sb.v5 => CORE_V3,
            1 | 2 if !sb.v5 => CORE_V2,
            _ => return Err(bad(format!("version {version} on a version {} filesystem", if sb.v5 { 5 } else { 4 }))),
        };
        if version == 3 && be64(raw, 152) != ino {
            return Err(bad(format!("says it is inode {}", be64(raw, 152))));
        }
        let flags2 = if version == 3 { be64(raw, 120) } else { 0 };
        if be16(raw, 90) & DIFLAG_REALTIME != 0 {
            return Err(super::unsupported(format!("inode {ino}: data on a real-time volume is not read")));
        }
        let (nextents, anextents) = if flags2 & DIFLAG2_NREXT64 != 0 && sb.nrext64 {
            (be64(raw, 24), u64::from(be32(raw, 76)))
        } else {
            (u64::from(be32(raw, 76)), u64::from(be16(raw, 80)))
        };
        let (mtime, mtime_nsec) = match flags2 & DIFLAG2_BIGTIME != 0 {
            // Nanoseconds since the epoch less 2^31 seconds.
            true => {
                let ns = be64(raw, 40);
                ((ns / 1_000_000_000) as i64 - (1 << 31), (ns % 1_000_000_000) as u32)
            }
            false => (i64::from(be32(raw, 40) as i32), be32(raw, 44)),
        };
        let forks = raw.get(core..).unwrap_or_default();
        let forkoff = usize::from(raw.get(82).copied().unwrap_or(0)) * 8;
        let (data_fork, attr_fork) = match forkoff {
            0 => (forks, &[][..]),
            _ if forkoff < forks.len() => forks.split_at(forkoff),
            _ => return Err(bad(format!("attribute fork offset {forkoff} passes the {} bytes of forks", forks.len()))),
        };
        Ok(Inode {
            ino,
            mode: be16(raw, 2),
            format: raw.get(5).copied().unwrap_or(0),
            aformat: raw.get(83).copied().unwrap_or(0),
            uid: be32(raw, 8),
            gid: be32(raw, 12),
            nlink: if version == 1 { u32::from(be16(raw, 6)) } else { be32(raw, 16) },
            size: be64(raw, 56),
            nblocks: be64(raw, 64),
            nextents,
            anextents,
            mtime,
            mtime_nsec,
            data_fork: data_fork.to_vec(),
            attr_fork: attr_fork.to_vec(),
        })
    }

    pub fn fork(&self, fork: Fork) -> (&[u8], u8, u64) {
        match fork {
            Fork::Data => (&self.data_fork, self.format, self.nextents),
            Fork::Attr => (&self.attr_fork, self.aformat, self.anextents),
        }
    }
}

/// Reads blocks for the block-map walk.
pub(super) trait Blocks {
    fn sb(&self) -> &Superblock;
    /// The block at linear number `block`.
    fn block(&self, block: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>, Error>;
}

/// The extent records of one fork (extents or B+tree format), sorted by file offset, none
/// overlapping another. Together with the B+tree blocks they are at most the inode's own
/// block count, so the walk's work is bounded by what the inode accounts for.
pub(super) fn records(vol: &dyn Blocks, inode: &Inode, fork: Fork) -> Result<Vec<Record>, Error> {
    let ino = inode.ino;
    let (area, format, count) = inode.fork(fork);
    let bad = |what: String| corrupt(format!("inode {ino}: {}: {what}", fork.name()));
    let mut budget = inode.nblocks;
    let mut out = Vec::new();
    match format {
        FMT_EXTENTS => {
            let n = usize::try_from(count).ok().filter(|&n| n.saturating_mul(16) <= area.len());
            let n = n.ok_or_else(|| bad(format!("{count} extents do not fit in its {} bytes", area.len())))?;
            for i in 0..n {
                out.push(decode(vol.sb(), area, i * 16, &mut budget).map_err(&bad)?);
            }
        }
        FMT_BTREE => {
            // The root in the inode: level, record count, then keys and pointers, each array
            // as long as the area could hold.
            let level = be16(area, 0);
            let n = usize::from(be16(area, 2));
            let max = area.len().saturating_sub(4) / 16;
            if level == 0 || level > MAX_LEVELS || n == 0 || n > max {
                return Err(bad(format!("B+tree root of level {level} with {n} of at most {max} pointers")));
            }
            let mut pending: Vec<(u64, u16)> =
                (0..n).rev().map(|i| (be64(area, 4 + max * 8 + i * 8), level - 1)).collect();
            while let Some((ptr, level)) = pending.pop() {
                if budget == 0 {
                    return Err(bad(format!("its block map passes the inode's {} blocks", inode.nblocks)));
                }
                budget -= 1;
                let block = vol
                    .sb()
                    .linear(ptr)
                    .ok_or_else(|| bad(format!("B+tree block {ptr} lies outside the filesystem")))?;
                let what = || format!("inode {ino}: {}: B+tree block {ptr}", fork.name());
                let b = vol.block(block, &what)?;
                if vol.sb().v5 {
                    super::checksum(&b, 64, &what)?;
                }
                let (magic, hdr) = if vol.sb().v5 { (BMA3_MAGIC, BTREE_HDR_V5) } else { (BMAP_MAGIC, BTREE_HDR_V4) };
                let n = usize::from(be16(&b, 6));
                if be32(&b, 0) != magic || be16(&b, 4) != level {
                    return Err(corrupt(format!("{}: not a level {level} block-map block", what())));
                }
                if vol.sb().v5 && be64(&b, 56) != ino {
                    return Err(corrupt(format!("{}: belongs to inode {}", what(), be64(&b, 56))));
                }
                let max = (b.len() - hdr) / 16;
                if n > max {
                    return Err(corrupt(format!("{}: {n} records of at most {max}", what())));
                }
                if level == 0 {
                    for i in 0..n {
                        out.push(decode(vol.sb(), &b, hdr + i * 16, &mut budget).map_err(&bad)?);
                    }
                } else {
                    pending.extend((0..n).rev().map(|i| (be64(&b, hdr + max * 8 + i * 8), level - 1)));
                }
            }
        }
        FMT_LOCAL | FMT_DEV => {}
        other => return Err(bad(format!("format {other} is not one this reader knows"))),
    }
    out.sort_by_key(|r| r.offset);
    for pair in out.windows(2) {
        if let [a, b] = pair
            && a.offset + a.len > b.offset
        {
            return Err(bad(format!("extents at file blocks {} and {} overlap", a.offset, b.offset)));
        }
    }
    Ok(out)
}

/// One packed 128-bit extent record: the unwritten flag, 54 bits of file offset, 52 of
/// filesystem block and 21 of length. Charged to `budget`.
fn decode(sb: &Superblock, area: &[u8], at: usize, budget: &mut u64) -> Result<Record, String> {
    let (l0, l1) = (be64(area, at), be64(area, at + 8));
    let offset = (l0 >> 9) & ((1 << 54) - 1);
    let fsblock = ((l0 & 0x1FF) << 43) | (l1 >> 21);
    let len = l1 & ((1 << 21) - 1);
    let block =
        sb.linear(fsblock).ok_or_else(|| format!("extent at file block {offset} starts outside the filesystem"))?;
    let agbno = fsblock & ((1 << sb.agblk_log) - 1);
    // An extent never crosses from one allocation group into the next.
    if len == 0 || agbno + len > u64::from(sb.ag_blocks) || block.saturating_add(len) > sb.dblocks {
        return Err(format!("extent of {len} blocks at file block {offset} passes the filesystem's end"));
    }
    // Byte offsets in the file stay below 2^63, as the kernel's do.
    if offset + len > (i64::MAX as u64) >> sb.block_log {
        return Err(format!("extent at file block {offset} passes the largest file"));
    }
    *budget =
        budget.checked_sub(len).ok_or_else(|| "its extents pass the blocks the inode accounts for".to_string())?;
    Ok(Record { offset, block, len, unwritten: l0 >> 63 != 0 })
}

/// The linear block holding file block `offset` of a fork, if it is mapped and written.
pub(super) fn lookup(records: &[Record], offset: u64) -> Option<u64> {
    let i = records.partition_point(|r| r.offset + r.len <= offset);
    records.get(i).filter(|r| r.offset <= offset && !r.unwritten).map(|r| r.block + (offset - r.offset))
}
