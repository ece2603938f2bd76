//! Inodes and their block maps: ext4 extent trees and ext2/ext3 indirect block maps.

use super::superblock::Superblock;
use super::{Error, Extent, corrupt, le16, le32};

pub(super) const ROOT: u32 = 2;

const FL_HUGE_FILE: u32 = 0x4_0000;
const FL_EXTENTS: u32 = 0x8_0000;
const FL_EA_INODE: u32 = 0x20_0000;
const FL_INLINE_DATA: u32 = 0x1000_0000;

/// Size of `i_block`: the extent root, the 15 block pointers, a fast symlink or inline data.
pub(super) const I_BLOCK_LEN: usize = 60;
/// Size of the original (rev 0) inode; `i_extra_isize` counts from here.
const GOOD_OLD_INODE_SIZE: usize = 128;

const EXTENT_MAGIC: u16 = 0xF30A;
const EXTENT_MAX_DEPTH: u16 = 5;
const EXTENT_ENTRY: usize = 12;
/// `ee_len` above this marks an unwritten extent of `ee_len - 32768` blocks.
const EXTENT_INIT_MAX_LEN: u16 = 32768;

/// An inode, decoded.
pub(super) struct Inode {
    pub ino: u32,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub flags: u32,
    /// `i_blocks` in 512-byte sectors, whatever the HUGE_FILE encoding on disk.
    pub sectors: u64,
    pub file_acl: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub i_block: [u8; I_BLOCK_LEN],
    /// The in-inode extended attribute area: the bytes after `i_extra_isize`.
    pub xattr_area: Vec<u8>,
}

impl Inode {
    pub fn parse(ino: u32, raw: &[u8], sb: &Superblock) -> Result<Inode, Error> {
        let flags = le32(raw, 0x20);
        let blocks_hi = if sb.huge_file() { u64::from(le16(raw, 0x74)) } else { 0 };
        let mut sectors = u64::from(le32(raw, 0x1C)) | blocks_hi << 32;
        if sb.huge_file() && flags & FL_HUGE_FILE != 0 {
            sectors = sectors.saturating_mul(u64::from(sb.block_size / 512));
        }
        let acl_hi = if sb.is_64bit() { u64::from(le16(raw, 0x76)) } else { 0 };

        // The large inode: i_extra_isize says how much of the bytes after 128 are fields;
        // the rest holds extended attributes.
        let mut extra_isize = 0;
        if raw.len() > GOOD_OLD_INODE_SIZE {
            extra_isize = usize::from(le16(raw, 0x80));
            if !extra_isize.is_multiple_of(4) || GOOD_OLD_INODE_SIZE + extra_isize > raw.len() {
                return Err(corrupt(format!(
                    "inode {ino}: i_extra_isize {extra_isize} is unaligned or exceeds the \
                     inode size {}",
                    raw.len()
                )));
            }
        }
        let mtime_extra = (extra_isize >= 0x8C - GOOD_OLD_INODE_SIZE).then(|| le32(raw, 0x88));
        // The extra field's low two bits extend the signed 32-bit seconds past 2038.
        let mtime = i64::from(le32(raw, 0x10) as i32) + (i64::from(mtime_extra.unwrap_or(0) & 3) << 32);
        let mut i_block = [0; I_BLOCK_LEN];
        i_block.copy_from_slice(raw.get(0x28..0x28 + I_BLOCK_LEN).unwrap_or(&[0; I_BLOCK_LEN]));
        Ok(Inode {
            ino,
            mode: le16(raw, 0x0),
            uid: u32::from(le16(raw, 0x2)) | u32::from(le16(raw, 0x78)) << 16,
            gid: u32::from(le16(raw, 0x18)) | u32::from(le16(raw, 0x7A)) << 16,
            size: u64::from(le32(raw, 0x4)) | u64::from(le32(raw, 0x6C)) << 32,
            links: le16(raw, 0x1A),
            flags,
            sectors,
            file_acl: u64::from(le32(raw, 0x68)) | acl_hi << 32,
            mtime,
            mtime_nsec: mtime_extra.map_or(0, |extra| extra >> 2),
            i_block,
            xattr_area: raw.get(GOOD_OLD_INODE_SIZE + extra_isize..).unwrap_or_default().to_vec(),
        })
    }

    pub fn has_inline_data(&self) -> bool {
        self.flags & FL_INLINE_DATA != 0
    }

    pub fn is_ea_inode(&self) -> bool {
        self.flags & FL_EA_INODE != 0
    }

    /// Whether a symlink keeps its target in `i_block` ("fast") rather than in a data block,
    /// as the kernel decides: by size when EA_INODE values may be charged to `i_blocks`, else
    /// by `i_blocks` counting nothing beyond the external xattr block. Inline data is neither.
    pub fn is_fast_symlink(&self, sb: &Superblock) -> bool {
        if sb.ea_inode() {
            return self.size < I_BLOCK_LEN as u64;
        }
        let xattr_sectors = if self.file_acl != 0 { sb.cluster_size / 512 } else { 0 };
        self.sectors <= xattr_sectors
    }

    /// The blocks the inode's `i_blocks` accounts for: its allowance when mapping.
    pub fn block_count(&self, sb: &Superblock) -> u64 {
        self.sectors / u64::from(sb.block_size / 512)
    }
}

/// How many more blocks (data and mapping blocks) an inode may map: the lower of its own
/// `i_blocks` and what the filesystem has left unclaimed. This bounds both the work and the
/// number of extents on hostile images.
pub(super) struct Allowance {
    ino: u32,
    left: u64,
    by_inode: bool,
}

impl Allowance {
    pub fn new(inode: &Inode, sb: &Superblock, fs_left: u64) -> Allowance {
        let own = inode.block_count(sb);
        Allowance { ino: inode.ino, left: own.min(fs_left), by_inode: own <= fs_left }
    }

    pub fn left(&self) -> u64 {
        self.left
    }

    fn take(&mut self, blocks: u64) -> Result<(), Error> {
        self.left = self.left.checked_sub(blocks).ok_or_else(|| {
            corrupt(if self.by_inode {
                format!("inode {}: maps more blocks than its i_blocks accounts for", self.ino)
            } else {
                format!(
                    "inode {}: maps more blocks than the filesystem has left unclaimed by other \
                     files (cross-linked blocks)",
                    self.ino
                )
            })
        })?;
        Ok(())
    }
}

/// Reads one filesystem block for the mapping code.
pub(super) trait BlockSource {
    fn sb(&self) -> &Superblock;
    fn block(&self, block: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>, Error>;
}

/// The data extents of an inode that keeps its data in blocks (not inline), in bytes, sorted
/// and merged.
pub(super) fn map(vol: &dyn BlockSource, inode: &Inode, allowance: &mut Allowance) -> Result<Vec<Extent>, Error> {
    let mut runs = Vec::new();
    if inode.flags & FL_EXTENTS != 0 {
        extent_node(vol, inode.ino, &inode.i_block, None, allowance, &mut runs)?;
    } else {
        block_map(vol, inode, allowance, &mut runs)?;
    }
    finish(inode.ino, runs, vol.sb())
}

/// A run of blocks, before conversion to bytes.
#[derive(Clone, Copy)]
struct Run {
    logical: u64,
    physical: u64,
    len: u64,
    unwritten: bool,
}

/// Walks one node of an extent tree: the root in `i_block` (`depth` None) or a tree block.
fn extent_node(
    vol: &dyn BlockSource,
    ino: u32,
    node: &[u8],
    depth: Option<u16>,
    allowance: &mut Allowance,
    out: &mut Vec<Run>,
) -> Result<(), Error> {
    let err = |what: String| corrupt(format!("inode {ino}: {what}"));
    let magic = le16(node, 0);
    let entries = usize::from(le16(node, 2));
    let max = usize::from(le16(node, 4));
    let node_depth = le16(node, 6);
    if magic != EXTENT_MAGIC {
        return Err(err(format!("extent header magic {magic:#06x} is not {EXTENT_MAGIC:#06x}")));
    }
    match depth {
        None if node_depth > EXTENT_MAX_DEPTH => {
            return Err(err(format!("extent tree depth {node_depth} exceeds {EXTENT_MAX_DEPTH}")));
        }
        Some(want) if want != node_depth => {
            return Err(err(format!("extent node has depth {node_depth}, expected {want}")));
        }
        _ => {}
    }
    let capacity = (node.len() / EXTENT_ENTRY).saturating_sub(1);
    if max > capacity || entries > max {
        return Err(err(format!("extent node claims {entries} of {max} entries but holds at most {capacity}")));
    }
    for entry in node.chunks_exact(EXTENT_ENTRY).skip(1).take(entries) {
        let logical = u64::from(le32(entry, 0));
        if node_depth > 0 {
            let child = u64::from(le32(entry, 4)) | u64::from(le16(entry, 8)) << 32;
            allowance.take(1)?;
            let block = vol.block(child, &|| format!("inode {ino}: extent index for logical block {logical}"))?;
            extent_node(vol, ino, &block, Some(node_depth - 1), allowance, out)?;
        } else {
            let raw_len = le16(entry, 4);
            let unwritten = raw_len > EXTENT_INIT_MAX_LEN;
            let len = u64::from(if unwritten { raw_len - EXTENT_INIT_MAX_LEN } else { raw_len });
            let physical = u64::from(le32(entry, 8)) | u64::from(le16(entry, 6)) << 32;
            if len == 0 {
                return Err(err(format!("extent at logical block {logical} has length 0")));
            }
            add_run(vol.sb(), ino, Run { logical, physical, len, unwritten }, allowance, out)?;
        }
    }
    Ok(())
}

/// Walks the ext2/ext3 block map: 12 direct pointers, then single, double and triple
/// indirect blocks. A zero pointer is a hole.
fn block_map(vol: &dyn BlockSource, inode: &Inode, allowance: &mut Allowance, out: &mut Vec<Run>) -> Result<(), Error> {
    let per_block = u64::from(vol.sb().block_size / 4);
    let mut first = 0u64;
    for (i, ptr) in inode.i_block.chunks_exact(4).enumerate() {
        let ptr = u64::from(le32(ptr, 0));
        // Pointers 12, 13 and 14 head trees of depth 1, 2 and 3.
        let level = u32::try_from(i.saturating_sub(11)).unwrap_or(0);
        indirect(vol, inode.ino, ptr, level, first, allowance, out)?;
        first = first.saturating_add(per_block.saturating_pow(level));
    }
    Ok(())
}

/// Maps block pointer `ptr` for logical block `first`: a data block at `level` 0, else an
/// indirect block whose pointers each cover `per_block^(level-1)` logical blocks.
fn indirect(
    vol: &dyn BlockSource,
    ino: u32,
    ptr: u64,
    level: u32,
    first: u64,
    allowance: &mut Allowance,
    out: &mut Vec<Run>,
) -> Result<(), Error> {
    if ptr == 0 {
        return Ok(());
    }
    if level == 0 {
        let run = Run { logical: first, physical: ptr, len: 1, unwritten: false };
        return add_run(vol.sb(), ino, run, allowance, out);
    }
    allowance.take(1)?;
    let block = vol.block(ptr, &|| format!("inode {ino}: indirect block (level {level}) for logical block {first}"))?;
    let span = u64::from(vol.sb().block_size / 4).saturating_pow(level - 1);
    for (i, child) in (0u64..).zip(block.chunks_exact(4)) {
        let logical = i.saturating_mul(span).saturating_add(first);
        indirect(vol, ino, u64::from(le32(child, 0)), level - 1, logical, allowance, out)?;
    }
    Ok(())
}

/// Checks a run against the filesystem and the allowance, and appends it, merged with the
/// previous run when both logical and physical blocks continue it.
fn add_run(sb: &Superblock, ino: u32, run: Run, allowance: &mut Allowance, out: &mut Vec<Run>) -> Result<(), Error> {
    // Logical block numbers are 32 bits wide.
    if run.logical.saturating_add(run.len) > 1 << 32 {
        return Err(corrupt(format!(
            "inode {ino}: logical blocks {}+{} reach past logical block 2^32",
            run.logical, run.len
        )));
    }
    if run.physical < sb.first_data_block || !sb.blocks_inside(run.physical, run.len) {
        return Err(corrupt(format!(
            "inode {ino}: blocks {}+{} (logical {}) lie outside the filesystem ({} blocks)",
            run.physical, run.len, run.logical, sb.blocks_count
        )));
    }
    allowance.take(run.len)?;
    match out.last_mut() {
        Some(last) if continues(last, &run) => last.len += run.len,
        _ => out.push(run),
    }
    Ok(())
}

fn continues(a: &Run, b: &Run) -> bool {
    a.unwritten == b.unwritten && a.logical + a.len == b.logical && a.physical + a.len == b.physical
}

/// Sorts runs by logical block, merges neighbours, refuses overlaps and converts to bytes.
fn finish(ino: u32, mut runs: Vec<Run>, sb: &Superblock) -> Result<Vec<Extent>, Error> {
    runs.sort_by_key(|r| r.logical);
    let mut merged: Vec<Run> = Vec::with_capacity(runs.len());
    for run in runs {
        match merged.last_mut() {
            Some(last) if last.logical + last.len > run.logical => {
                return Err(corrupt(format!("inode {ino}: extents overlap at logical block {}", run.logical)));
            }
            Some(last) if continues(last, &run) => last.len += run.len,
            _ => merged.push(run),
        }
    }
    // Runs lie inside the filesystem and below logical block 2^32: in bytes they fit a u64.
    let bs = u64::from(sb.block_size);
    Ok(merged
        .into_iter()
        .map(|r| Extent {
            logical: r.logical * bs,
            physical: r.physical * bs,
            len: r.len * bs,
            unwritten: r.unwritten,
            encoded: None,
        })
        .collect())
}
