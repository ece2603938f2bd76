//! Directory blocks: `ext4_dir_entry_2` records, read linearly.
//!
//! A linear scan also covers htree directories: their index blocks present themselves as
//! entries with inode 0 (or as "." and ".."), which are skipped, as is the metadata_csum tail.

use super::{Error, corrupt, le16, le32};
use crate::fs::Entry;

/// The fixed part of an entry: inode, rec_len, name_len, file_type.
const HEADER: usize = 8;

/// Appends the live entries of one directory block (or inline-data area) to `out`.
/// `inodes_count` bounds entry inode numbers; `where_` names the block in errors.
pub(super) fn parse_block(
    block: &[u8],
    inodes_count: u32,
    where_: &dyn Fn() -> String,
    out: &mut Vec<Entry>,
) -> Result<(), Error> {
    let err = |pos: usize, what: String| corrupt(format!("{}, entry at {pos}: {what}", where_()));
    let mut pos = 0;
    while pos < block.len() {
        let header =
            block.get(pos..pos + HEADER).ok_or_else(|| err(pos, "header runs past the end of the block".into()))?;
        let inode = le32(header, 0);
        let rec_len = rec_len(le16(header, 4), block.len());
        let name_len = usize::from(header.get(6).copied().unwrap_or(0));
        if rec_len < HEADER || !rec_len.is_multiple_of(4) || rec_len > block.len() - pos {
            return Err(err(pos, format!("rec_len {rec_len} is invalid")));
        }
        if name_len + HEADER > rec_len {
            return Err(err(pos, format!("name_len {name_len} exceeds rec_len {rec_len}")));
        }
        if inode != 0 {
            let name = block.get(pos + HEADER..pos + HEADER + name_len).unwrap_or_default();
            if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                return Err(err(pos, format!("name {:?} is invalid", super::escape(name))));
            }
            if inode > inodes_count {
                return Err(err(pos, format!("inode {inode} exceeds the {inodes_count} inodes")));
            }
            if name != b"." && name != b".." {
                out.push(Entry { name: name.to_vec(), ino: u64::from(inode) });
            }
        }
        pos += rec_len;
    }
    Ok(())
}

/// Decodes `rec_len`: 64 KiB blocks need 17 bits, whose top bits the kernel folds into the
/// two low bits (always zero in an aligned length).
fn rec_len(raw: u16, block_len: usize) -> usize {
    if block_len < 1 << 16 {
        return usize::from(raw);
    }
    match raw {
        0 | 0xFFFF => 1 << 16,
        _ => usize::from(raw & 0xFFFC) | usize::from(raw & 3) << 16,
    }
}
