//! A small, careful, read-only reader for ext2, ext3 and ext4.
//!
//! [`read`] walks the whole tree from the root inode and lists every path with what the store
//! needs to rebuild the disk byte for byte from contents kept elsewhere: inode numbers, link
//! counts, owners, modes, times, extended attributes, device numbers, symlink targets and, for
//! regular files, the exact physical extent map (or the inline data).
//!
//! It reads: block sizes of 1 to 64 KiB, 32- and 64-bit group descriptors, META_BG, flex_bg,
//! bigalloc, extent trees and ext2/ext3 indirect block maps, linear and htree directories,
//! inline data, in-inode and external-block xattrs and xattr values kept in their own inodes
//! (EA_INODE; those values are read from that inode's data).
//!
//! It refuses, with an [`Error`] naming the structure: the compression, journal-device,
//! dirdata and encryption incompatible features and unknown ones, and any structure that is
//! inconsistent. It verifies no checksum and does not replay the journal: the image is read
//! as it lies.
//!
//! Images are untrusted. The reader never panics, reads each directory once (a directory
//! reached twice, by a hard link or a cycle, is an error), walks the tree with an explicit
//! stack rather than recursion, bounds extent trees to depth 5, and lets each inode map at
//! most the blocks its `i_blocks` accounts for and that no other inode has already claimed,
//! so the work and memory stay proportional to the filesystem; the listing itself is capped at
//! [`MAX_LISTING_BYTES`].

mod dir;
mod inode;
mod superblock;
mod xattr;

use crate::ReadAt;
use crate::bytes::{le16, le32};
use crate::fs::{Decoded, Entry, Listing, escape, format_uuid, kind_from_mode};
pub use crate::fs::{Extent, File, FileKind, Filesystem, Room};
use inode::{Allowance, BlockSource, I_BLOCK_LEN, Inode};
use std::collections::HashMap;
use superblock::Superblock;

pub use crate::fs::MAX_LISTING_BYTES;
/// The largest xattr value the kernel accepts, bounding values kept in their own inode.
const MAX_XATTR_VALUE: u32 = 65536;
/// The xattr holding inline data past `i_block`; it is content, not an attribute.
const SYSTEM_DATA: &str = "system.data";

/// True when `src` carries an ext2/3/4 superblock magic.
pub fn probe(src: &dyn ReadAt) -> bool {
    superblock::probe(src)
}

/// Reads the filesystem in `src` and lists every file reachable from the root.
pub fn read(src: &dyn ReadAt) -> Result<Filesystem, Error> {
    let sb = Superblock::read(src)?;
    let mut vol = Volume { src, blocks_left: sb.blocks_count, sb, inode_tables: HashMap::new() };
    let mut listing = Listing::default();
    let root = u64::from(inode::ROOT);
    crate::fs::walk(root, &mut listing, |ino, path| vol.decode(ino, path), corrupt, unsupported)?;
    let sb = &vol.sb;
    let name = &sb.volume_name;
    let name_end = name.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    Ok(Filesystem {
        fs_type: sb.fs_type(),
        label: String::from_utf8_lossy(name.get(..name_end).unwrap_or_default()).into_owned(),
        uuid: format_uuid(&sb.uuid),
        block_size: sb.block_size,
        files: listing.files,
        os_root: "/".into(),
    })
}

/// The content of regular file `ino` when ext4 keeps it inside the inode (inline data), and
/// the file's size (zeros follow those bytes up to it); None when it does not keep it there.
/// For readers that have the filesystem's bytes but not its listing.
pub fn inline_content(src: &dyn ReadAt, ino: u32) -> Result<Option<(Vec<u8>, u64)>, Error> {
    let sb = Superblock::read(src)?;
    let mut vol = Volume { src, blocks_left: sb.blocks_count, sb, inode_tables: HashMap::new() };
    let inode = vol.inode(ino)?;
    if kind_from_mode(inode.mode) != Some(FileKind::File) || !inode.has_inline_data() {
        return Ok(None);
    }
    let system_data = vol.xattrs(&inode)?.into_iter().find(|(name, _)| name == SYSTEM_DATA).map(|(_, value)| value);
    Ok(Some((inline_data(&inode, system_data.as_deref()), inode.size)))
}

/// The size and room of the filesystem in `src`.
pub fn room(src: &dyn ReadAt) -> Result<Room, Error> {
    let sb = Superblock::read(src)?;
    let free_blocks = sb.free_blocks.min(sb.blocks_count);
    Ok(Room {
        block_size: sb.block_size,
        blocks: sb.blocks_count,
        free_blocks,
        reserved_blocks: sb.reserved_blocks.min(free_blocks),
        inodes: u64::from(sb.inodes_count),
        free_inodes: u64::from(sb.free_inodes.min(sb.inodes_count)),
    })
}

/// What went wrong, naming the structure: messages start with `ext4: `. Unsupported
/// incompatible features and a listing past [`MAX_LISTING_BYTES`] are
/// [`Unsupported`](crate::ErrorKind::Unsupported); a failed read is
/// [`Io`](crate::ErrorKind::Io) (or `Corrupt` when past the end of the source); the rest is
/// [`Corrupt`](crate::ErrorKind::Corrupt).
pub type Error = crate::Error;
crate::prefixed!("ext4");

/// The filesystem being read: the source, its superblock and what has been claimed so far.
struct Volume<'a> {
    src: &'a dyn ReadAt,
    sb: Superblock,
    /// Inode table block per group, read from the descriptors as groups are needed.
    inode_tables: HashMap<u32, u64>,
    /// Blocks not yet mapped by any inode: no two inodes may share blocks, so the sum of what
    /// all inodes map is at most the filesystem's block count.
    blocks_left: u64,
}

impl BlockSource for Volume<'_> {
    fn sb(&self) -> &Superblock {
        &self.sb
    }

    fn block(&self, block: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>, Error> {
        let offset = self
            .sb
            .block_offset(block)
            .ok_or_else(|| corrupt(format!("{}: block {block} lies past the end of the filesystem", what())))?;
        let mut buf = vec![0; self.sb.block_size as usize];
        self.src
            .read_exact_at(&mut buf, offset)
            .map_err(|e| read_failed(&e, format!("{}: block {block}: {e}", what())))?;
        Ok(buf)
    }
}

impl Volume<'_> {
    fn inode(&mut self, ino: u32) -> Result<Inode, Error> {
        let sb = &self.sb;
        if ino == 0 || ino > sb.inodes_count {
            return Err(corrupt(format!("inode {ino} is outside 1..={} of the filesystem", sb.inodes_count)));
        }
        let group = (ino - 1) / sb.inodes_per_group;
        let index = (ino - 1) % sb.inodes_per_group;
        let table = match self.inode_tables.get(&group) {
            Some(&table) => table,
            None => {
                let table = sb.inode_table(self.src, group)?;
                self.inode_tables.insert(group, table);
                table
            }
        };
        // inode_table checked that the whole table lies inside the filesystem.
        let offset = table * u64::from(sb.block_size) + u64::from(index) * u64::from(sb.inode_size);
        let mut raw = vec![0; sb.inode_size as usize];
        self.src.read_exact_at(&mut raw, offset).map_err(|e| read_failed(&e, format!("inode {ino}: {e}")))?;
        Inode::parse(ino, &raw, sb)
    }

    /// The data extents of `inode`, charged to its allowance and to the filesystem's.
    fn map(&mut self, inode: &Inode) -> Result<Vec<Extent>, Error> {
        let mut allowance = Allowance::new(inode, &self.sb, self.blocks_left);
        let before = allowance.left();
        let extents = inode::map(self, inode, &mut allowance)?;
        self.blocks_left -= before - allowance.left();
        Ok(extents)
    }

    /// Reads the first `len` bytes of data mapped by `extents`.
    fn read_data(&self, ino: u32, extents: &[Extent], len: u64) -> Result<Vec<u8>, Error> {
        let what = |e: &dyn std::fmt::Display| format!("inode {ino}: reading {len} bytes of data: {e}");
        let mut buf = vec![0; usize::try_from(len).map_err(|e| corrupt(what(&e)))?];
        crate::fs::read_mapped(self.src, extents, 0, &mut buf).map_err(|e| read_failed(&e, what(&e)))?;
        Ok(buf)
    }

    /// All extended attributes of `inode`, "system.data" included.
    fn xattrs(&mut self, inode: &Inode) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let ino = inode.ino;
        let mut raw = xattr::in_inode(ino, &inode.xattr_area)?;
        if inode.file_acl != 0 {
            let block = self.block(inode.file_acl, &|| format!("inode {ino}: xattr block"))?;
            raw.extend(xattr::in_block(ino, inode.file_acl, &block)?);
        }
        let mut out = Vec::with_capacity(raw.len());
        for xattr::Xattr { name, value } in raw {
            let value = match value {
                xattr::Value::Bytes(bytes) => bytes,
                xattr::Value::Inode(inum, size) => self.xattr_inode(ino, &name, inum, size)?,
            };
            out.push((name, value));
        }
        Ok(out)
    }

    /// A value kept in the data of its own inode (EA_INODE).
    fn xattr_inode(&mut self, ino: u32, name: &str, inum: u32, size: u32) -> Result<Vec<u8>, Error> {
        let err = |what: String| corrupt(format!("inode {ino}: xattr {name}: value inode {inum} {what}"));
        if size > MAX_XATTR_VALUE {
            return Err(err(format!("holds {size} bytes, more than {MAX_XATTR_VALUE}")));
        }
        let value_inode = self.inode(inum)?;
        if !value_inode.is_ea_inode() || value_inode.has_inline_data() {
            return Err(err("is not an EA_INODE".into()));
        }
        if value_inode.size < u64::from(size) {
            return Err(err(format!("holds {} bytes, less than {size}", value_inode.size)));
        }
        let extents = self.map(&value_inode)?;
        self.read_data(inum, &extents, u64::from(size))
    }

    /// The entries of directory `inode`, in on-disk order. `system_data` is the inline-data
    /// continuation, if any.
    fn dir_entries(&mut self, inode: &Inode, system_data: Option<&[u8]>) -> Result<Vec<Entry>, Error> {
        let ino = inode.ino;
        let inodes_count = self.sb.inodes_count;
        let mut out = Vec::new();
        if inode.has_inline_data() {
            // i_block starts with the parent's inode number (the implicit ".."); entries follow
            // and continue in "system.data".
            let area = inode.i_block.get(4..).unwrap_or_default();
            let at = || format!("directory inode {ino}: inline entries");
            dir::parse_block(area, inodes_count, &at, &mut out)?;
            let at = || format!("directory inode {ino}: inline entries in {SYSTEM_DATA}");
            dir::parse_block(system_data.unwrap_or_default(), inodes_count, &at, &mut out)?;
            return Ok(out);
        }
        let bs = u64::from(self.sb.block_size);
        for extent in self.map(inode)?.iter().filter(|e| !e.unwritten) {
            for i in 0..extent.len / bs {
                let logical = extent.logical + i * bs;
                // Blocks past i_size are not part of the directory.
                if logical >= inode.size {
                    break;
                }
                let block_nr = (extent.physical + i * bs) / bs;
                let at = || format!("directory inode {ino}, logical block {}", logical / bs);
                let block = self.block(block_nr, &at)?;
                dir::parse_block(&block, inodes_count, &at, &mut out)?;
            }
        }
        Ok(out)
    }
}

/// Reads one inode for the walk: the file at `path`, and its entries when it is a directory.
impl Volume<'_> {
    fn decode(&mut self, ino: u64, path: &str) -> Result<Decoded, Error> {
        // Entries carry 32-bit numbers; only a corrupt walk could ask for more.
        let ino = u32::try_from(ino).map_err(|_| corrupt(format!("inode {ino} is not an ext4 inode number")))?;
        let inode = self.inode(ino)?;
        if inode.links == 0 {
            return Err(corrupt(format!("inode {ino}: has no links (deleted) but is referenced")));
        }
        let kind = kind_from_mode(inode.mode)
            .ok_or_else(|| corrupt(format!("inode {ino}: mode {:#o} has no known file type", inode.mode)))?;
        let mut xattrs = self.xattrs(&inode)?;
        let system_data = xattrs.iter().position(|(name, _)| name == SYSTEM_DATA).map(|i| xattrs.remove(i).1);
        let mut file = File {
            path: path.to_string(),
            kind,
            mode: u32::from(inode.mode & 0o7777),
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            mtime: inode.mtime,
            mtime_nsec: inode.mtime_nsec,
            inode: u64::from(ino),
            nlink: u32::from(inode.links),
            link_target: None,
            rdev: None,
            xattrs,
            extents: Vec::new(),
            inline_data: None,
        };
        let mut children = None;
        match kind {
            FileKind::File if inode.has_inline_data() => {
                file.inline_data = Some(inline_data(&inode, system_data.as_deref()));
            }
            FileKind::File => file.extents = self.map(&inode)?,
            FileKind::Dir => {
                children = Some(self.dir_entries(&inode, system_data.as_deref())?);
            }
            FileKind::Symlink => {
                file.link_target = Some(self.link_target(&inode, system_data.as_deref())?);
            }
            FileKind::Char | FileKind::Block => file.rdev = Some(device(&inode.i_block)),
            FileKind::Fifo | FileKind::Socket => {}
        }
        Ok((file, children))
    }

    /// A symlink's target: inline data, in `i_block` ("fast") or in a data block ("slow").
    fn link_target(&mut self, inode: &Inode, system_data: Option<&[u8]>) -> Result<Vec<u8>, Error> {
        let ino = inode.ino;
        let size = inode.size;
        if inode.has_inline_data() {
            let target = inline_data(inode, system_data);
            if (target.len() as u64) < size {
                return Err(corrupt(format!(
                    "inode {ino}: symlink target of {size} bytes exceeds its {} inline bytes",
                    target.len()
                )));
            }
            return Ok(target);
        }
        if !inode.is_fast_symlink(&self.sb) {
            // The kernel refuses targets longer than a block.
            if size > u64::from(self.sb.block_size) {
                return Err(corrupt(format!("inode {ino}: symlink target of {size} bytes exceeds the block size")));
            }
            let extents = self.map(inode)?;
            return self.read_data(ino, &extents, size);
        }
        usize::try_from(size)
            .ok()
            .filter(|&len| len < I_BLOCK_LEN)
            .and_then(|len| inode.i_block.get(..len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| corrupt(format!("inode {ino}: symlink of {size} bytes has no data blocks")))
    }
}

/// Inline content: `i_block`, then the "system.data" xattr value, cut to the size. A size past
/// the inline bytes reads as zeros there, as in the kernel (mke2fs makes such files from
/// sparse ones).
fn inline_data(inode: &Inode, system_data: Option<&[u8]>) -> Vec<u8> {
    let mut data = inode.i_block.to_vec();
    data.extend_from_slice(system_data.unwrap_or_default());
    data.truncate(usize::try_from(inode.size).unwrap_or(usize::MAX));
    data
}

/// A device number from `i_block`: the old 16-bit encoding in word 0 when non-zero, else the
/// new 32-bit encoding in word 1.
fn device(i_block: &[u8]) -> (u32, u32) {
    let old = le32(i_block, 0) & 0xFFFF;
    if old != 0 {
        return ((old >> 8) & 0xFF, old & 0xFF);
    }
    let new = le32(i_block, 4);
    ((new & 0xF_FF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xF_FF00))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::io;

    /// A 64 KiB source holding a superblock of 1 KiB blocks with the magic and `incompat`.
    fn image(magic: u16, incompat: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 << 10];
        b[1024 + 0x38..1024 + 0x3A].copy_from_slice(&magic.to_le_bytes());
        b[1024 + 0x60..1024 + 0x64].copy_from_slice(&incompat.to_le_bytes());
        b
    }

    /// A source whose reads fail as a disk's would.
    struct Failing;
    impl ReadAt for Failing {
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::EIO))
        }
        fn size(&self) -> u64 {
            1 << 20
        }
    }

    #[test]
    fn errors_say_what_kind() {
        // A superblock that fails its checks: corrupt.
        let err = read(&image(0x1234, 0)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert_eq!(err.to_string(), "ext4: superblock: magic 0x1234 is not 0xef53");
        // Valid, but compressed (0x1) or encrypted (0x10000): unsupported.
        for feature in [0x1, 0x10000] {
            let err = read(&image(MAGIC_FOR_TESTS, feature | 0x2)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
            assert!(err.to_string().starts_with("ext4: superblock: incompatible features"), "{err}");
        }
        // A source too short for its superblock: a read past its end, which is what a
        // truncated image gives, so corrupt.
        let mut short = image(MAGIC_FOR_TESTS, 0);
        short.truncate(1500);
        let err = read(&short).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("lies past the end"), "{err}");
        // The source itself failing: I/O.
        let err = read(&Failing).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(err.to_string().starts_with("ext4: superblock: "), "{err}");
    }

    const MAGIC_FOR_TESTS: u16 = 0xEF53;

    /// The same with images made by e2fsprogs: valid but encrypted is unsupported; cut short
    /// (the superblock's block count past the source's end) is corrupt.
    #[test]
    fn real_images_say_what_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs.img");
        let run = |cmd: &mut std::process::Command| assert!(cmd.status().unwrap().success(), "{cmd:?}");
        run(std::process::Command::new("mke2fs").args(["-q", "-F", "-t", "ext4"]).arg(&path).arg("8M"));
        let bytes = std::fs::read(&path).unwrap();
        assert!(read(&bytes).is_ok());
        let err = read(&bytes[..4 << 20].to_vec()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("do not fit"), "{err}");
        let encrypted = dir.path().join("encrypted.img");
        run(std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-O", "encrypt"])
            .arg(&encrypted)
            .arg("8M"));
        let err = read(&std::fs::read(&encrypted).unwrap()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    }

    #[test]
    fn context_keeps_the_kind() {
        let err = unsupported("x".into()).map_message(|m| format!("{m} (at /a)"));
        assert_eq!((err.kind(), err.to_string().as_str()), (ErrorKind::Unsupported, "ext4: x (at /a)"));
    }
}
