//! The items this reader uses: inodes, directory entries and extended attributes (both
//! `btrfs_dir_item`), file extents, and the root tree's subvolume roots and references.

use super::tree::{Key, Root};
use super::{Error, corrupt};
use crate::bytes::{le16, le32, le64};

/// Item types.
pub(super) const INODE_ITEM: u8 = 1;
pub(super) const XATTR_ITEM: u8 = 24;
pub(super) const DIR_ITEM: u8 = 84;
pub(super) const DIR_INDEX: u8 = 96;
pub(super) const EXTENT_DATA: u8 = 108;
pub(super) const ROOT_ITEM: u8 = 132;
pub(super) const ROOT_REF: u8 = 156;

/// `btrfs_inode_item`.
const INODE_SIZE: usize = 160;
/// `btrfs_dir_item` before its name.
const DIR_SIZE: usize = 30;
/// `btrfs_file_extent_item`: its header (all an inline extent has before its data), and a
/// regular one's size.
const EXTENT_HEADER: usize = 21;
const EXTENT_SIZE: usize = 53;
/// `btrfs_root_item` up to its level, the part every version has.
const ROOT_SIZE: usize = 239;

pub(super) struct InodeItem {
    pub size: u64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub rdev: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

impl InodeItem {
    pub fn parse(data: &[u8], what: &dyn Fn() -> String) -> Result<InodeItem, Error> {
        if data.len() < INODE_SIZE {
            return Err(corrupt(format!("{}: an inode item of {} bytes", what(), data.len())));
        }
        Ok(InodeItem {
            size: le64(data, 16),
            nlink: le32(data, 40),
            uid: le32(data, 44),
            gid: le32(data, 48),
            mode: le32(data, 52),
            rdev: le64(data, 56),
            mtime: le64(data, 136) as i64,
            mtime_nsec: le32(data, 144),
        })
    }
}

/// A directory entry or an extended attribute: a name, what it points at (entries), and a
/// value (attributes).
pub(super) struct DirItem<'a> {
    pub location: Key,
    pub name: &'a [u8],
    pub data: &'a [u8],
}

/// The `btrfs_dir_item`s packed in one item (several when their names' hashes collide).
pub(super) fn dir_items<'a>(item: &'a [u8], what: &dyn Fn() -> String) -> Result<Vec<DirItem<'a>>, Error> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < item.len() {
        let (data_len, name_len) = (usize::from(le16(item, at + 25)), usize::from(le16(item, at + 27)));
        let end = at + DIR_SIZE + name_len + data_len;
        let (Some(location), Some(body)) = (Key::parse(item, at), item.get(at + DIR_SIZE..end)) else {
            return Err(corrupt(format!("{}: a directory item cut short at {at}", what())));
        };
        let (name, data) = body.split_at(name_len);
        out.push(DirItem { location, name, data });
        at = end;
    }
    Ok(out)
}

/// A file extent item.
pub(super) enum FileExtent<'a> {
    /// Data inside the item, perhaps compressed, decoding to `decoded_len` bytes.
    Inline { compression: u8, decoded_len: u64, data: &'a [u8] },
    /// `len` bytes of file, `skip` bytes into the `stored_len` bytes at logical `bytenr`
    /// (0: a hole), which decode to `decoded_len`; preallocated ones read as zeros.
    Regular { compression: u8, prealloc: bool, bytenr: u64, stored_len: u64, decoded_len: u64, skip: u64, len: u64 },
}

impl<'a> FileExtent<'a> {
    pub fn parse(data: &'a [u8], what: &dyn Fn() -> String) -> Result<FileExtent<'a>, Error> {
        let bad = |why: String| corrupt(format!("{}: {why}", what()));
        if data.len() < EXTENT_HEADER {
            return Err(bad(format!("an extent item of {} bytes", data.len())));
        }
        let decoded_len = le64(data, 8);
        let compression = data.get(16).copied().unwrap_or(0);
        if data.get(17).copied().unwrap_or(0) != 0 || le16(data, 18) != 0 {
            return Err(super::unsupported(format!("{}: an encrypted or otherwise encoded extent", what())));
        }
        match data.get(20).copied().unwrap_or(0) {
            0 => {
                Ok(FileExtent::Inline { compression, decoded_len, data: data.get(EXTENT_HEADER..).unwrap_or_default() })
            }
            kind @ (1 | 2) if data.len() >= EXTENT_SIZE => Ok(FileExtent::Regular {
                compression,
                prealloc: kind == 2,
                bytenr: le64(data, 21),
                stored_len: le64(data, 29),
                decoded_len,
                skip: le64(data, 37),
                len: le64(data, 45),
            }),
            kind => Err(bad(format!("an extent item of type {kind} and {} bytes", data.len()))),
        }
    }
}

/// A subvolume's tree: where its root lies, and its root directory.
pub(super) struct RootItem {
    pub root: Root,
    pub root_dir: u64,
    /// 0 once the subvolume is deleted (its tree is being dropped).
    pub refs: u32,
}

impl RootItem {
    pub fn parse(data: &[u8], what: &dyn Fn() -> String) -> Result<RootItem, Error> {
        if data.len() < ROOT_SIZE {
            return Err(corrupt(format!("{}: a root item of {} bytes", what(), data.len())));
        }
        Ok(RootItem {
            root: Root { bytenr: le64(data, 176), level: data.get(238).copied().unwrap_or(0) },
            root_dir: le64(data, 168),
            refs: le32(data, 216),
        })
    }
}

/// A subvolume's place in its parent: the directory and name of its entry there.
pub(super) struct RootRef<'a> {
    pub dir: u64,
    pub name: &'a [u8],
}

impl<'a> RootRef<'a> {
    pub fn parse(data: &'a [u8]) -> Option<RootRef<'a>> {
        let len = usize::from(le16(data, 16));
        Some(RootRef { dir: le64(data, 0), name: data.get(18..18 + len)? })
    }
}
