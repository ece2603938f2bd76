//! A small, careful, read-only reader for XFS, versions 4 and 5.
//!
//! [`read`] walks the whole tree from the root inode and lists every path with what the store
//! needs to rebuild the disk byte for byte from contents kept elsewhere, exactly as the ext4
//! reader does: inode numbers (64-bit), link counts, owners, modes, nanosecond times (big
//! timestamps too), extended attributes, device numbers, symlink targets and, for regular
//! files, the physical extent map with unwritten (preallocated) extents marked.
//!
//! It reads: inodes of versions 1 to 3, both forks in every format (local, extent list, block
//! map B+tree), directories in every form (short form, block, leaf, node, B+tree), symbolic
//! links inside the inode or in blocks, attributes in short form, leaf and node form with
//! remote values, sparse inodes, 64-bit extent counts and extents shared by reflink.
//!
//! It refuses, with an [`Error`] naming the structure: real-time volumes and files on them,
//! version 1 directories, a filesystem marked as needing repair, and incompatible features it
//! does not know. On version 5 it verifies the CRC-32C of every metadata structure it reads
//! (superblock, inodes, block-map, directory, attribute, remote value and symbolic link
//! blocks), as the kernel does. It does not replay the log: the image is read as it lies, like
//! the ext4 reader (an image taken from a running system should be taken after `xfs_freeze`
//! or an unmount).
//!
//! Images are untrusted. The reader never panics, reads each directory once, walks the tree
//! with an explicit stack, bounds block-map and attribute trees in depth, and lets each inode
//! map at most the blocks its own count accounts for; all inodes together may map at most the
//! filesystem's blocks (or, where reflink lets files share extents, [`SHARED_CLAIMS`] times
//! them), so work and memory stay proportional to the filesystem. The listing itself is capped
//! at [`MAX_LISTING_BYTES`].

mod attr;
mod dir;
mod inode;
mod superblock;

use crate::ReadAt;
use crate::bytes::be32;
use crate::fs::{Decoded, Entry, Listing, format_uuid, kind_from_mode};
pub use crate::fs::{Extent, File, FileKind, Filesystem, MAX_LISTING_BYTES, Room};
use inode::{FMT_BTREE, FMT_EXTENTS, FMT_LOCAL, Fork, Inode, Record};
use superblock::Superblock;

/// How many times over, where reflink lets files share extents, all inodes together may map
/// the filesystem's blocks.
pub const SHARED_CLAIMS: u64 = 64;
/// The longest symbolic link target XFS writes.
const MAX_LINK: u64 = 1024;
/// Version 5 symbolic link blocks start with a header ("XSLM").
const SYMLINK_MAGIC: u32 = 0x5853_4C4D;
const SYMLINK_HDR: usize = 56;

/// CRC-32C, the checksum of version 5 metadata.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Whether `buf` holds its own checksum at byte `at` (little-endian, computed with those four
/// bytes as zeros). Errors say which structure failed it.
fn checksum(buf: &[u8], at: usize, what: &dyn Fn() -> String) -> Result<(), Error> {
    // Under the fuzzer, so that its mutations reach the structures behind the checksums.
    if cfg!(fuzzing) {
        return Ok(());
    }
    let stored = buf.get(at..at + 4);
    let mut digest = CRC32C.digest();
    digest.update(buf.get(..at).unwrap_or_default());
    digest.update(&[0; 4]);
    digest.update(buf.get(at + 4..).unwrap_or_default());
    match stored == Some(digest.finalize().to_le_bytes().as_slice()) {
        true => Ok(()),
        false => Err(corrupt(format!("{}: checksum mismatch", what()))),
    }
}

/// What went wrong, naming the structure: messages start with `xfs: `. The kinds are as for
/// the ext4 reader: unsupported features are [`Unsupported`](crate::ErrorKind::Unsupported),
/// failed reads [`Io`](crate::ErrorKind::Io) (or `Corrupt` past the end of the source), the
/// rest [`Corrupt`](crate::ErrorKind::Corrupt).
pub type Error = crate::Error;
crate::prefixed!("xfs");

/// True when `src` carries an XFS superblock magic.
pub fn probe(src: &dyn ReadAt) -> bool {
    superblock::probe(src)
}

/// Reads the filesystem in `src` and lists every file reachable from the root.
pub fn read(src: &dyn ReadAt) -> Result<Filesystem, Error> {
    let sb = Superblock::read(src)?;
    let claims = if sb.reflink { sb.dblocks.saturating_mul(SHARED_CLAIMS) } else { sb.dblocks };
    let vol = Volume { src, sb, blocks_left: std::cell::Cell::new(claims) };
    let mut listing = Listing::default();
    crate::fs::walk(vol.sb.root_ino, &mut listing, |ino, path| vol.decode(ino, path), corrupt, unsupported)?;
    let sb = &vol.sb;
    let label = &sb.label;
    let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
    Ok(Filesystem {
        fs_type: "xfs",
        label: String::from_utf8_lossy(label.get(..end).unwrap_or_default()).into_owned(),
        uuid: format_uuid(&sb.uuid),
        block_size: sb.block_size,
        files: listing.files,
        os_root: "/".into(),
    })
}

/// The size and room of the filesystem in `src`, as the kernel's statfs counts them: blocks
/// less the internal log's; inodes are made as needed, so their total is those allocated plus
/// as many as the free blocks could hold, within the share of the blocks inodes may take. XFS
/// keeps no blocks for root alone.
pub fn room(src: &dyn ReadAt) -> Result<Room, Error> {
    let sb = Superblock::read(src)?;
    let blocks = sb.dblocks.saturating_sub(sb.log_blocks);
    let free_blocks = sb.fdblocks.min(blocks);
    let per_block = 1u64 << sb.inopb_log;
    let mut inodes = sb.icount.saturating_add(free_blocks.saturating_mul(per_block));
    if sb.imax_pct > 0 {
        // In whole inode chunks (64 inodes), as the kernel rounds it.
        let chunk = (64 / per_block).max(1);
        let most = sb.dblocks.saturating_mul(u64::from(sb.imax_pct)) / 100 / chunk * chunk;
        inodes = inodes.min(most.saturating_mul(per_block));
    }
    let inodes = inodes.max(sb.icount);
    let used = sb.icount - sb.ifree.min(sb.icount);
    Ok(Room { block_size: sb.block_size, blocks, free_blocks, reserved_blocks: 0, inodes, free_inodes: inodes - used })
}

/// The filesystem being read.
struct Volume<'a> {
    src: &'a dyn ReadAt,
    sb: Superblock,
    /// Blocks all inodes together may still map.
    blocks_left: std::cell::Cell<u64>,
}

impl inode::Blocks for Volume<'_> {
    fn sb(&self) -> &Superblock {
        &self.sb
    }

    fn block(&self, block: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>, Error> {
        Volume::block(self, block, what)
    }
}

impl Volume<'_> {
    fn block(&self, block: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>, Error> {
        if block >= self.sb.dblocks {
            return Err(corrupt(format!("{}: block {block} lies past the end of the filesystem", what())));
        }
        let mut buf = vec![0; self.sb.block_size as usize];
        let offset = block * u64::from(self.sb.block_size);
        self.src
            .read_exact_at(&mut buf, offset)
            .map_err(|e| read_failed(&e, format!("{}: block {block}: {e}", what())))?;
        Ok(buf)
    }

    fn inode(&self, ino: u64) -> Result<Inode, Error> {
        let offset =
            self.sb.inode_offset(ino).ok_or_else(|| corrupt(format!("inode {ino} lies outside the filesystem")))?;
        let mut raw = vec![0; self.sb.inode_size as usize];
        self.src.read_exact_at(&mut raw, offset).map_err(|e| read_failed(&e, format!("inode {ino}: {e}")))?;
        let inode = Inode::parse(ino, &raw, &self.sb)?;
        if self.sb.v5 {
            checksum(&raw, inode::CRC_AT, &|| format!("inode {ino}"))?;
        }
        Ok(inode)
    }

    /// The extent records of one fork of `inode`, charged to what all inodes may map.
    fn records(&self, inode: &Inode, fork: Fork) -> Result<Vec<Record>, Error> {
        let records = inode::records(self, inode, fork)?;
        let mapped: u64 = records.iter().map(|r| r.len).sum();
        let left = self.blocks_left.get().checked_sub(mapped).ok_or_else(|| {
            corrupt(format!(
                "inode {}: its extents pass the blocks the filesystem holds (files claim blocks twice)",
                inode.ino
            ))
        })?;
        self.blocks_left.set(left);
        Ok(records)
    }

    /// The bytes of file blocks `first..first + count` of a fork; unmapped blocks are an
    /// error. For directory and symbolic-link blocks.
    fn fork_bytes(&self, inode: &Inode, map: &[Record], first: u64, count: u64) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        for logical in first..first + count {
            let what = || format!("inode {}: file block {logical}", inode.ino);
            let block = inode::lookup(map, logical).ok_or_else(|| corrupt(format!("{}: not mapped", what())))?;
            out.extend_from_slice(&self.block(block, &what)?);
        }
        Ok(out)
    }

    /// The entries of directory `inode`, in the order the kernel lists them.
    fn dir_entries(&self, inode: &Inode) -> Result<Vec<Entry>, Error> {
        let ino = inode.ino;
        match inode.format {
            FMT_LOCAL => {
                let len = usize::try_from(inode.size).unwrap_or(usize::MAX);
                let area = inode.data_fork.get(..len).ok_or_else(|| {
                    corrupt(format!(
                        "directory inode {ino}: {len} bytes of entries in a fork of {}",
                        inode.data_fork.len()
                    ))
                })?;
                dir::short_form(ino, area, &self.sb)
            }
            FMT_EXTENTS | FMT_BTREE => {
                let map = self.records(inode, Fork::Data)?;
                let per_block = 1u64 << self.sb.dir_block_log;
                let data_end = dir::LEAF_OFFSET >> self.sb.block_log;
                // Each directory block's first file block, once, in order.
                let mut starts: Vec<u64> = map
                    .iter()
                    .filter(|r| r.offset < data_end)
                    .flat_map(|r| (r.offset..(r.offset + r.len).min(data_end)).filter(|b| b % per_block == 0))
                    .collect();
                starts.dedup();
                let mut out = Vec::new();
                for start in starts {
                    let block = self.fork_bytes(inode, &map, start, per_block)?;
                    let at = || format!("directory inode {ino}, block {}", start / per_block);
                    if self.sb.v5 {
                        checksum(&block, 4, &at)?;
                    }
                    dir::data_block(&block, &self.sb, &at, &mut out)?;
                }
                Ok(out)
            }
            other => Err(corrupt(format!("directory inode {ino}: format {other} is not a directory's"))),
        }
    }

    /// A symbolic link's target: inside the inode, or in blocks (each with a header on
    /// version 5).
    fn link_target(&self, inode: &Inode) -> Result<Vec<u8>, Error> {
        let ino = inode.ino;
        let size = inode.size;
        let bad = |what: String| corrupt(format!("symbolic link inode {ino}: {what}"));
        if size == 0 || size > MAX_LINK {
            return Err(bad(format!("a target of {size} bytes")));
        }
        let len = size as usize;
        match inode.format {
            FMT_LOCAL => inode
                .data_fork
                .get(..len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| bad(format!("{len} bytes in a fork of {}", inode.data_fork.len()))),
            FMT_EXTENTS | FMT_BTREE => {
                let map = self.records(inode, Fork::Data)?;
                let mut target = Vec::with_capacity(len);
                let mut logical = 0;
                while target.len() < len {
                    let b = self.fork_bytes(inode, &map, logical, 1)?;
                    let data = match self.sb.v5 {
                        true if be32(&b, 0) == SYMLINK_MAGIC => {
                            checksum(&b, 12, &|| format!("symbolic link inode {ino}: block {logical}"))?;
                            b.get(SYMLINK_HDR..).unwrap_or_default()
                        }
                        true => return Err(bad(format!("block {logical} has no symbolic link header"))),
                        false => &b[..],
                    };
                    let want = (len - target.len()).min(data.len());
                    target.extend_from_slice(data.get(..want).unwrap_or_default());
                    logical += 1;
                }
                Ok(target)
            }
            other => Err(bad(format!("format {other} is not a symbolic link's"))),
        }
    }
}

/// Reads one inode for the walk: the file at `path`, and its entries when it is a directory.
impl Volume<'_> {
    fn decode(&self, ino: u64, path: &str) -> Result<Decoded, Error> {
        let vol = self;
        let inode = vol.inode(ino)?;
        if inode.nlink == 0 {
            return Err(corrupt(format!("inode {ino}: has no links (free) but is referenced")));
        }
        let kind = kind_from_mode(inode.mode)
            .ok_or_else(|| corrupt(format!("inode {ino}: mode {:#o} has no known file type", inode.mode)))?;
        let mut file = File {
            path: path.to_string(),
            kind,
            mode: u32::from(inode.mode & 0o7777),
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            mtime: inode.mtime,
            mtime_nsec: inode.mtime_nsec,
            inode: ino,
            nlink: inode.nlink,
            link_target: None,
            rdev: None,
            xattrs: attr::read(vol, &inode)?,
            extents: Vec::new(),
            inline_data: None,
        };
        let mut children = None;
        match kind {
            FileKind::File => file.extents = extents(&vol.records(&inode, Fork::Data)?, vol.sb.block_log),
            FileKind::Dir => children = Some(vol.dir_entries(&inode)?),
            FileKind::Symlink => file.link_target = Some(vol.link_target(&inode)?),
            FileKind::Char | FileKind::Block => {
                // A 32-bit device number: 14 bits of major, 18 of minor.
                let dev = be32(&inode.data_fork, 0);
                file.rdev = Some((dev >> 18, dev & 0x3_FFFF));
            }
            FileKind::Fifo | FileKind::Socket => {}
        }
        Ok((file, children))
    }
}

/// A file's records as byte extents, adjacent runs merged.
fn extents(records: &[Record], block_log: u8) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::with_capacity(records.len());
    for r in records {
        let e = Extent {
            logical: r.offset << block_log,
            physical: r.block << block_log,
            len: r.len << block_log,
            unwritten: r.unwritten,
            encoded: None,
        };
        match out.last_mut() {
            Some(last)
                if last.unwritten == e.unwritten
                    && last.logical + last.len == e.logical
                    && last.physical + last.len == e.physical =>
            {
                last.len += e.len
            }
            _ => out.push(e),
        }
    }
    out
}
