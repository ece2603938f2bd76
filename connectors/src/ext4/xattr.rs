//! Extended attributes: the in-inode area after `i_extra_isize` and the external block.

use super::{Error, corrupt, escape, le16, le32};

const MAGIC: u32 = 0xEA02_0000;
/// The external block's header: magic, refcount, blocks, hash, checksum, reserved.
const BLOCK_HEADER: usize = 32;
/// The fixed part of an entry, before the name.
const ENTRY_HEADER: usize = 16;

/// Where an attribute's value lives.
pub(super) enum Value {
    Bytes(Vec<u8>),
    /// In the data of another inode (EA_INODE): its number and the value's size.
    Inode(u32, u32),
}

pub(super) struct Xattr {
    pub name: String,
    pub value: Value,
}

/// The attributes in an inode's extra space (`area` starts after `i_extra_isize`). No magic
/// means no attributes.
pub(super) fn in_inode(ino: u32, area: &[u8]) -> Result<Vec<Xattr>, Error> {
    if area.len() < 4 || le32(area, 0) != MAGIC {
        return Ok(Vec::new());
    }
    // Value offsets count from the first entry, just after the magic.
    let entries = area.get(4..).unwrap_or_default();
    parse(entries, 0, entries, &|what| format!("inode {ino}: in-inode xattr {what}"))
}

/// The attributes in an external xattr block (`i_file_acl`).
pub(super) fn in_block(ino: u32, block_nr: u64, block: &[u8]) -> Result<Vec<Xattr>, Error> {
    let what = |what: &str| format!("inode {ino}: xattr block {block_nr}: {what}");
    let magic = le32(block, 0);
    if magic != MAGIC {
        return Err(corrupt(what(&format!("magic {magic:#010x} is not {MAGIC:#010x}"))));
    }
    let blocks = le32(block, 8);
    if blocks != 1 {
        return Err(corrupt(what(&format!("h_blocks is {blocks}, not 1"))));
    }
    // Value offsets count from the start of the block.
    parse(block, BLOCK_HEADER, block, &|w| what(&format!("xattr {w}")))
}

/// Parses the entry list starting at `entries[start..]`, up to the 4 zero bytes that end it;
/// values are at offsets into `values`.
fn parse(entries: &[u8], start: usize, values: &[u8], what: &dyn Fn(&str) -> String) -> Result<Vec<Xattr>, Error> {
    let mut out = Vec::new();
    let mut pos = start;
    loop {
        match entries.get(pos..pos.saturating_add(4)) {
            Some([0, 0, 0, 0]) => return Ok(out),
            Some(_) => {}
            // The list may fill its area exactly, leaving no room for the terminator.
            None if pos == entries.len() => return Ok(out),
            None => return Err(corrupt(what(&format!("entry at {pos} runs past the end")))),
        }
        let header = entries
            .get(pos..pos.saturating_add(ENTRY_HEADER))
            .ok_or_else(|| corrupt(what(&format!("entry at {pos} runs past the end"))))?;
        let name_len = usize::from(header.first().copied().unwrap_or(0));
        let index = header.get(1).copied().unwrap_or(0);
        let value_offs = usize::from(le16(header, 2));
        let value_inum = le32(header, 4);
        let value_size = le32(header, 8);
        let name_start = pos + ENTRY_HEADER;
        let name = entries
            .get(name_start..name_start + name_len)
            .ok_or_else(|| corrupt(what(&format!("name at {pos} runs past the end"))))?;
        let prefix = prefix(index)
            .ok_or_else(|| corrupt(what(&format!("{:?} has unknown name index {index}", escape(name)))))?;
        let name = format!("{prefix}{}", escape(name));
        let value = if value_inum != 0 {
            Value::Inode(value_inum, value_size)
        } else {
            let bytes = usize::try_from(value_size)
                .ok()
                .and_then(|size| values.get(value_offs..value_offs.checked_add(size)?))
                .ok_or_else(|| {
                    corrupt(what(&format!("{name}: value at {value_offs}+{value_size} lies outside its area")))
                })?;
            Value::Bytes(bytes.to_vec())
        };
        out.push(Xattr { name, value });
        // Entries are padded to 4 bytes.
        pos = (name_start + name_len).next_multiple_of(4);
    }
}

/// The name prefix for an `e_name_index`.
fn prefix(index: u8) -> Option<&'static str> {
    Some(match index {
        1 => "user.",
        2 => "system.posix_acl_access",
        3 => "system.posix_acl_default",
        4 => "trusted.",
        6 => "security.",
        7 => "system.",
        8 => "system.richacl",
        _ => return None,
    })
}
