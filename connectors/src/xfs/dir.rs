//! Directories: short form (entries inside the inode) and the data blocks of every other form.
//!
//! Block, leaf, node and B+tree directories all keep their entries in data blocks at the start
//! of the directory's address space, below the leaf and free-index blocks (which only speed up
//! lookups): reading those data blocks in order lists them all, in the kernel's `readdir`
//! order. A block-form directory's single block ends with its hash index and a tail, which
//! are not entries.

use super::superblock::Superblock;
use super::{Error, corrupt};
use crate::bytes::{be16, be32, be64};
use crate::fs::Entry;

/// Data block magics: block form (one block) and data form, versions 4 and 5.
const XD2B: u32 = 0x5844_3242;
const XD2D: u32 = 0x5844_3244;
const XDB3: u32 = 0x5844_4233;
const XDD3: u32 = 0x5844_4433;
/// Data block headers: magic and three free-space hints; version 5 adds a self-describing
/// header (checksum, block number, log sequence, UUID, owner) and padding.
const DATA_HDR_V4: usize = 16;
const DATA_HDR_V5: usize = 64;
/// The tag of an unused stretch of a data block.
const FREE_TAG: u16 = 0xFFFF;
/// Where leaf blocks begin in a directory's address space: data blocks lie below.
pub(super) const LEAF_OFFSET: u64 = 32 << 30;

/// The entries of a short-form directory: a count, whether inode numbers take 8 bytes, the
/// parent, then each entry's name length, offset hint, name, file type and inode number.
pub(super) fn short_form(ino: u64, area: &[u8], sb: &Superblock) -> Result<Vec<Entry>, Error> {
    let bad = |what: String| corrupt(format!("directory inode {ino}: short-form entries: {what}"));
    let count = usize::from(area.first().copied().unwrap_or(0));
    let wide = area.get(1).copied().unwrap_or(0) != 0;
    let ino_len = if wide { 8 } else { 4 };
    let mut pos = 2 + ino_len;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let name_len = usize::from(area.get(pos).copied().unwrap_or(0));
        let name_at = pos + 3;
        let ino_at = name_at + name_len + usize::from(sb.ftype);
        let end = ino_at + ino_len;
        if name_len == 0 || end > area.len() {
            return Err(bad(format!("entry {i} at byte {pos} runs past the {} bytes of the directory", area.len())));
        }
        let name = area.get(name_at..name_at + name_len).unwrap_or_default();
        let child = if wide { be64(area, ino_at) } else { u64::from(be32(area, ino_at)) };
        out.push(entry(name, child).map_err(|e| bad(format!("entry {i}: {e}")))?);
        pos = end;
    }
    Ok(out)
}

/// Appends the live entries of one directory data block (block or data form) to `out`.
pub(super) fn data_block(
    block: &[u8],
    sb: &Superblock,
    at: &dyn Fn() -> String,
    out: &mut Vec<Entry>,
) -> Result<(), Error> {
    let bad = |what: String| corrupt(format!("{}: {what}", at()));
    let magic = be32(block, 0);
    let (hdr, single) = match (sb.v5, magic) {
        (false, XD2B) => (DATA_HDR_V4, true),
        (false, XD2D) => (DATA_HDR_V4, false),
        (true, XDB3) => (DATA_HDR_V5, true),
        (true, XDD3) => (DATA_HDR_V5, false),
        _ => return Err(bad(format!("magic {magic:#010x} is not a directory data block's"))),
    };
    let mut end = block.len();
    if single {
        // The tail: the count of hash index entries (8 bytes each) before it, and of stale ones.
        let count = usize::try_from(be32(block, end - 8)).unwrap_or(usize::MAX);
        end = count
            .checked_mul(8)
            .and_then(|index| end.checked_sub(8 + index))
            .filter(|&e| e >= hdr)
            .ok_or_else(|| bad(format!("a hash index of {count} entries does not fit in the block")))?;
    }
    let mut pos = hdr;
    while pos < end {
        if be16(block, pos) == FREE_TAG {
            let len = usize::from(be16(block, pos + 2));
            if len < 8 || !len.is_multiple_of(8) || len > end - pos {
                return Err(bad(format!("unused stretch at byte {pos} of {len} bytes")));
            }
            pos += len;
            continue;
        }
        let ino = be64(block, pos);
        let name_len = usize::from(block.get(pos + 8).copied().unwrap_or(0));
        // Inode number, name length, name, file type, tag: rounded up to 8 bytes.
        let len = (8 + 1 + name_len + usize::from(sb.ftype) + 2).next_multiple_of(8);
        if name_len == 0 || len > end - pos {
            return Err(bad(format!("entry at byte {pos} with a {name_len}-byte name runs past the data")));
        }
        if usize::from(be16(block, pos + len - 2)) != pos {
            return Err(bad(format!("entry at byte {pos} is tagged {}", be16(block, pos + len - 2))));
        }
        let name = block.get(pos + 9..pos + 9 + name_len).unwrap_or_default();
        if name != b"." && name != b".." {
            out.push(entry(name, ino).map_err(|e| bad(format!("entry at byte {pos}: {e}")))?);
        }
        pos += len;
    }
    Ok(())
}

fn entry(name: &[u8], ino: u64) -> Result<Entry, String> {
    if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
        return Err(format!("name {:?} is invalid", crate::fs::escape(name)));
    }
    Ok(Entry { name: name.to_vec(), ino })
}
