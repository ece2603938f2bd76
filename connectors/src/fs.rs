//! The filesystem manifest that every filesystem reader produces: each path with its
//! metadata and, for regular files, where its content lies, so that content can be stored
//! apart from the disk and the disk still rebuilt byte for byte.

use crate::ReadAt;
use std::fmt::Write as _;
use std::io;

/// The most memory a listing may take (paths, extents, xattrs, targets, inline data), so that
/// a hostile image (say, a long chain of directories with long names) cannot exhaust it.
pub const MAX_LISTING_BYTES: u64 = 1 << 30;

/// The files a reader has listed so far, within [`MAX_LISTING_BYTES`].
pub(crate) struct Listing {
    pub(crate) files: Vec<File>,
    left: u64,
}

impl Default for Listing {
    fn default() -> Self {
        Listing { files: Vec::new(), left: MAX_LISTING_BYTES }
    }
}

impl Listing {
    /// Lists a file, or says that the listing is full.
    pub(crate) fn add(&mut self, file: File) -> Result<(), String> {
        let xattrs: usize =
            file.xattrs.iter().map(|(name, value)| size_of::<(String, Vec<u8>)>() + name.len() + value.len()).sum();
        let weight = size_of::<File>()
            + file.path.len()
            + file.extents.len() * size_of::<Extent>()
            + xattrs
            + file.link_target.as_ref().map_or(0, Vec::len)
            + file.inline_data.as_ref().map_or(0, Vec::len);
        self.left = self
            .left
            .checked_sub(weight as u64)
            .ok_or_else(|| format!("the listing exceeds {MAX_LISTING_BYTES} bytes of metadata (at {})", file.path))?;
        self.files.push(file);
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Filesystem {
    /// "ext2", "ext3", "ext4", "vfat", ...
    pub fs_type: &'static str,
    pub label: String,
    /// ext: 8-4-4-4-12 lowercase hex; FAT: the volume serial, "ABCD-1234".
    pub uuid: String,
    /// The allocation unit: block (ext) or cluster (FAT) size in bytes.
    pub block_size: u32,
    /// "/" first, then depth first, each directory's entries in on-disk order; "." and ".."
    /// omitted. A file with several hard links appears once per path.
    pub files: Vec<File>,
    /// The folder of `files` that an operating system installed here mounts at `/`: "/" but
    /// on btrfs, whose root may be a subvolume ("/root", "/@").
    pub os_root: String,
}

/// A filesystem's size and room, as `statfs` tells them: from the superblock, whose free counts
/// are the kernel's as of its last unmount (never more than the totals here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub block_size: u32,
    pub blocks: u64,
    pub free_blocks: u64,
    /// Free blocks only root may take.
    pub reserved_blocks: u64,
    pub inodes: u64,
    pub free_inodes: u64,
}

/// What a path of a filesystem is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Copy)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

impl FileKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Char => "char",
            FileKind::Block => "block",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
        }
    }

    /// The kind a word of [`FileKind::as_str`] names.
    pub fn parse(word: &str) -> Option<FileKind> {
        [
            FileKind::File,
            FileKind::Dir,
            FileKind::Symlink,
            FileKind::Char,
            FileKind::Block,
            FileKind::Fifo,
            FileKind::Socket,
        ]
        .into_iter()
        .find(|k| k.as_str() == word)
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct File {
    /// "/", "/etc", "/etc/passwd"; name bytes that are not UTF-8 are rendered as `\xNN`.
    pub path: String,
    /// From the inode's mode, not the directory entry's file type.
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Seconds since the epoch, including the extra epoch bits of large inodes.
    pub mtime: i64,
    /// From `i_mtime_extra` when the inode has it, else 0.
    pub mtime_nsec: u32,
    /// The filesystem's own inode number (XFS numbers need 64 bits).
    pub inode: u64,
    pub nlink: u32,
    /// Symlinks only: fast (in `i_block`), inline or slow (in a data block).
    pub link_target: Option<Vec<u8>>,
    /// Character and block devices only: (major, minor).
    pub rdev: Option<(u32, u32)>,
    /// Full names ("user.test") and raw values, in-inode ones first, then the external
    /// block's, in on-disk order; values kept in their own inode (EA_INODE) are read from
    /// it. "system.data" (inline data) is content and is left out.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Regular files only: the data blocks, sorted by logical offset, adjacent runs merged.
    pub extents: Vec<Extent>,
    /// Regular files with inline data: the content (ext4: from `i_block` then the
    /// "system.data" value; btrfs: its inline extent, decompressed), cut to the size; a size
    /// past these bytes reads as zeros beyond them.
    pub inline_data: Option<Vec<u8>>,
}

/// A run of a regular file's data blocks, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte offset in the filesystem (within the source the reader was given).
    pub physical: u64,
    /// A multiple of the block size; the last extent may reach past the file's size.
    pub len: u64,
    /// Allocated but never written (ext4 uninitialized extents): reads as zeros through the file.
    pub unwritten: bool,
    /// Kept compressed (btrfs): the bytes at `physical` are not the file's but decode to them.
    pub encoded: Option<Encoded>,
}

/// How an extent kept compressed turns into the file's bytes: the `stored_len` bytes at its
/// `physical` offset decode to `decoded_len` bytes, and the extent's `len` bytes of file begin
/// `skip` bytes into those (a file may use part of an extent another file or snapshot shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    pub compression: Compression,
    pub stored_len: u64,
    pub decoded_len: u64,
    pub skip: u64,
    /// The filesystem's sector size, which frames lzo segments.
    pub sector: u32,
}

/// The compressions btrfs writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zlib,
    Lzo,
    Zstd,
}

impl File {
    /// A file of `kind` at `path`, numbered `inode`, of which nothing else is known yet: no
    /// permissions, owners, size, time, attributes or extents, one link. Readers fill in the
    /// rest.
    pub fn bare(path: String, kind: FileKind, inode: u64) -> File {
        File {
            path,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            inode,
            nlink: 1,
            link_target: None,
            rdev: None,
            xattrs: Vec::new(),
            extents: Vec::new(),
            inline_data: None,
        }
    }

    /// Whether the disk holds this file's content as it is, in its extents: not inside its
    /// inode, and no part of it compressed. Any other content is read through its filesystem.
    pub fn held_as_is(&self) -> bool {
        self.inline_data.is_none() && self.extents.iter().all(|e| e.encoded.is_none())
    }

    /// Reads `buf.len()` bytes of content at `offset` (`offset + len <= size`): holes and
    /// unwritten extents read as zeros; inline data comes from `inline_data`.
    pub fn read_content(&self, src: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        if self.kind != FileKind::File {
            return Err(invalid(format!("{} is not a regular file", self.path)));
        }
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.size) {
            return Err(invalid(format!(
                "{}: read of {} bytes at {offset} passes the size {}",
                self.path,
                buf.len(),
                self.size
            )));
        }
        match &self.inline_data {
            Some(data) => {
                // Past the inline bytes, up to the size, the content is zeros.
                buf.fill(0);
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let part = data.get(start..).unwrap_or_default();
                let n = part.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), part.get(..n)) {
                    dst.copy_from_slice(src);
                }
                Ok(())
            }
            None => read_mapped(src, &self.extents, offset, buf),
        }
    }
}

/// Reads `buf.len()` bytes at logical `offset` through `extents`; unmapped bytes are zeros, and
/// compressed extents are decoded.
pub(crate) fn read_mapped(src: &dyn ReadAt, extents: &[Extent], offset: u64, buf: &mut [u8]) -> io::Result<()> {
    buf.fill(0);
    let end = offset.saturating_add(buf.len() as u64);
    let first = extents.partition_point(|e| e.logical.saturating_add(e.len) <= offset);
    for e in extents.get(first..).unwrap_or_default() {
        if e.logical >= end {
            break;
        }
        if e.unwritten {
            continue;
        }
        let from = offset.max(e.logical);
        let to = end.min(e.logical.saturating_add(e.len));
        // Only for extents not sorted or overlapping, as `read` never makes them.
        if to <= from {
            continue;
        }
        let range = usize::try_from(from - offset).ok().zip(usize::try_from(to - offset).ok());
        let dst = range
            .and_then(|(a, b)| buf.get_mut(a..b))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "extent outside the read range"))?;
        match &e.encoded {
            None => src.read_exact_at(dst, e.physical.saturating_add(from - e.logical))?,
            Some(encoded) => {
                let decoded = decode(src, e, encoded)?;
                let start = encoded.skip.saturating_add(from - e.logical);
                let part =
                    usize::try_from(start).ok().and_then(|s| decoded.get(s..s.checked_add(dst.len())?)).ok_or_else(
                        || invalid_data(format!("a compressed extent at {} is shorter than its file", e.physical)),
                    )?;
                dst.copy_from_slice(part);
            }
        }
    }
    Ok(())
}

/// The decoded bytes of compressed extent `e`.
fn decode(src: &dyn ReadAt, e: &Extent, encoded: &Encoded) -> io::Result<Vec<u8>> {
    let too_big = |n: u64| n > crate::compressed::MAX_DECODED;
    if too_big(encoded.stored_len) || too_big(encoded.decoded_len) {
        return Err(invalid_data(format!("a compressed extent at {} is bigger than btrfs writes", e.physical)));
    }
    let mut stored = vec![0; encoded.stored_len as usize];
    src.read_exact_at(&mut stored, e.physical)?;
    crate::compressed::decode(encoded.compression, &stored, encoded.decoded_len as usize, encoded.sector as usize)
        .map_err(|why| invalid_data(format!("the compressed extent at {}: {why}", e.physical)))
}

fn invalid_data(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A directory entry a reader found: a name and the inode it links to.
pub(crate) struct Entry {
    pub name: Vec<u8>,
    pub ino: u64,
}

/// What a reader says of one inode: the file, and its entries when it is a directory.
pub(crate) type Decoded = (File, Option<Vec<Entry>>);

/// Lists the tree under inode `root` depth first, each directory's entries in the order
/// `decode` gives them, into `listing`. `decode` reads an inode (named by its first path);
/// later hard links to it copy that first file with their own path, and a directory reached
/// twice (a directory hard link or a cycle) is refused with `corrupt`, so that each directory
/// is read once. A full listing is refused with `unsupported`. Errors of `decode` say the path.
pub(crate) fn walk(
    root: u64,
    listing: &mut Listing,
    mut decode: impl FnMut(u64, &str) -> Result<Decoded, crate::Error>,
    corrupt: fn(String) -> crate::Error,
    unsupported: fn(String) -> crate::Error,
) -> Result<(), crate::Error> {
    // Inode number to the index in the listing of its first path.
    let mut first_path: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut visit = |ino: u64, path: String, listing: &mut Listing| -> Result<Option<Vec<Entry>>, crate::Error> {
        if let Some(first) = first_path.get(&ino).and_then(|&i| listing.files.get(i)) {
            if first.kind == FileKind::Dir {
                return Err(corrupt(format!(
                    "directory inode {ino} is reached both at {} and at {path} (a directory hard link or a cycle)",
                    first.path
                )));
            }
            let file = File { path, ..first.clone() };
            listing.add(file).map_err(unsupported)?;
            return Ok(None);
        }
        let (file, children) = decode(ino, &path).map_err(|e| e.map_message(|m| format!("{m} (at {path})")))?;
        first_path.insert(ino, listing.files.len());
        listing.add(file).map_err(unsupported)?;
        Ok(children)
    };
    let Some(entries) = visit(root, "/".into(), listing)? else {
        return Err(corrupt(format!("inode {root}: the root is not a directory")));
    };
    // An explicit stack, not recursion: depth is bounded only by the number of inodes. Each
    // level holds its directory's path ("" for the root) and its unvisited entries.
    let mut stack = vec![(String::new(), entries.into_iter())];
    while let Some((parent, entries)) = stack.last_mut() {
        let Some(entry) = entries.next() else {
            stack.pop();
            continue;
        };
        let path = format!("{parent}/{}", escape(&entry.name));
        if let Some(children) = visit(entry.ino, path.clone(), listing)? {
            stack.push((path, children.into_iter()));
        }
    }
    Ok(())
}

/// The kind a Unix mode's file-type bits name (ext and XFS inodes share them).
pub(crate) fn kind_from_mode(mode: u16) -> Option<FileKind> {
    Some(match mode & 0o170000 {
        0o100000 => FileKind::File,
        0o040000 => FileKind::Dir,
        0o120000 => FileKind::Symlink,
        0o020000 => FileKind::Char,
        0o060000 => FileKind::Block,
        0o010000 => FileKind::Fifo,
        0o140000 => FileKind::Socket,
        _ => return None,
    })
}

/// A name as UTF-8, with bytes that are not rendered as `\xNN`.
pub(crate) fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// A 16-byte UUID as 8-4-4-4-12 lowercase hex.
pub(crate) fn format_uuid(b: &[u8; 16]) -> String {
    let hex = |range: std::ops::Range<usize>| {
        b.get(range).unwrap_or_default().iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    format!("{}-{}-{}-{}-{}", hex(0..4), hex(4..6), hex(6..8), hex(8..10), hex(10..16))
}
