//! A small, careful, read-only reader for btrfs on one device.
//!
//! [`read`] lists every path of the filesystem as its top level (subvolume 5) shows it, every
//! subvolume and snapshot at the place its parent names it, with what the store needs to
//! rebuild the disk byte for byte from contents kept elsewhere, as the ext4 and XFS readers do:
//! inode numbers, link counts, owners, modes, nanosecond times, extended attributes (ACLs are
//! `system.posix_acl_*` values, as btrfs keeps them), device numbers, symbolic link targets
//! and, for regular files, the physical extent map: preallocated extents are marked unwritten,
//! extents kept compressed (zlib, lzo, zstd) carry how to decode them, and inline extents
//! become the file's inline data, decompressed.
//!
//! Inode numbers restart in every subvolume, so a file's number is its inode number within its
//! subvolume plus, for subvolumes other than the top level, the subvolume's id shifted above
//! [`SUBVOLUME_SHIFT`] bits: unique within the filesystem, as one mount needs them, and
//! `inode >> 40` says which subvolume a file is in (0: the top level).
//!
//! The operating system's root is the default subvolume, or else the subvolume that an
//! `/etc/fstab` (at the top or in a subvolume) mounts at `/`, or else the top level:
//! [`Filesystem::os_root`] says where it is in the listing.
//!
//! It reads the primary superblock (or, where that fails its checksum, the newest valid
//! mirror), the chunk tree (single and DUP chunks; other profiles, and filesystems over
//! several devices, are refused with the reason), the root tree and every subvolume's tree.
//! It verifies the crc32c of every superblock and tree node it reads, as the kernel does, and
//! refuses other checksum algorithms and incompatible features it does not know. It does not
//! replay the log tree (an image taken from a running system should be taken after `fsfreeze`
//! or an unmount), and does not verify data checksums.
//!
//! Images are untrusted. The reader never panics; tree reads check every node's level, key
//! order and bounds, so each node is visited at most once per read; the items it keeps from
//! all trees together take at most [`MAX_LISTING_BYTES`]; all files together may map at most
//! [`SHARED_CLAIMS`] times the filesystem's size (snapshots and reflinks share extents); and
//! the listing itself is capped at [`MAX_LISTING_BYTES`].

mod chunks;
mod items;
mod superblock;
mod tree;

use crate::ReadAt;
use crate::bytes::le32;
pub use crate::fs::{Compression, Encoded, Extent, File, FileKind, Filesystem, MAX_LISTING_BYTES};
use crate::fs::{Decoded, Entry, Listing, escape, format_uuid, kind_from_mode};
use items::{DIR_INDEX, DIR_ITEM, DirItem, EXTENT_DATA, FileExtent, INODE_ITEM, InodeItem, ROOT_ITEM, ROOT_REF};
use items::{RootItem, RootRef, XATTR_ITEM};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use superblock::Superblock;
use tree::{Items, Key, Root};

/// How many times over, where snapshots and reflinks let files share extents, all files
/// together may map the filesystem's bytes.
pub const SHARED_CLAIMS: u64 = 64;
/// Inode numbers of subvolumes other than the top level carry the subvolume's id above these
/// bits.
pub const SUBVOLUME_SHIFT: u32 = 40;
/// The inode number of every subvolume's top folder within the subvolume.
const SUBVOLUME_TOP: u64 = 256;
/// Subvolume ids that fit above [`SUBVOLUME_SHIFT`] in a number below 2^63.
const MAX_SUBVOLUME: u64 = 1 << (63 - SUBVOLUME_SHIFT);

/// Whether a listed inode number is the top folder of a subvolume other than the top level.
pub fn is_subvolume_top(inode: u64) -> bool {
    inode >> SUBVOLUME_SHIFT != 0 && inode & ((1 << SUBVOLUME_SHIFT) - 1) == SUBVOLUME_TOP
}

/// Well-known object ids: the top-level subvolume's tree, the root tree's directory (which
/// names the default subvolume), the chunk items' owner, and the placeholder inode a snapshot
/// shows where its source held another subvolume.
const FS_TREE: u64 = 5;
const ROOT_TREE_DIR: u64 = 6;
const FIRST_CHUNK_TREE: u64 = 256;
const EMPTY_SUBVOL_DIR: u64 = 2;
/// The longest symbolic link target btrfs writes.
const MAX_LINK: u64 = 4095;

/// CRC-32C, the checksum of superblocks and tree nodes.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Whether `buf` (a superblock or a node) holds the crc32c of its bytes past the 32-byte
/// checksum field in its first four bytes. Errors say which structure failed it.
fn checksum(buf: &[u8], what: &dyn Fn() -> String) -> Result<(), Error> {
    // Under the fuzzer, so that its mutations reach the structures behind the checksums.
    if cfg!(fuzzing) {
        return Ok(());
    }
    let sum = CRC32C.checksum(buf.get(0x20..).unwrap_or_default());
    match le32(buf, 0) == sum {
        true => Ok(()),
        false => Err(corrupt(format!("{}: checksum mismatch", what()))),
    }
}

/// What went wrong, naming the structure: messages start with `btrfs: `. The kinds are as for
/// the other readers: unsupported features are [`Unsupported`](crate::ErrorKind::Unsupported),
/// failed reads [`Io`](crate::ErrorKind::Io) (or `Corrupt` past the end of the source), the
/// rest [`Corrupt`](crate::ErrorKind::Corrupt).
pub type Error = crate::Error;
crate::prefixed!("btrfs");

/// True when `src` carries a btrfs superblock magic.
pub fn probe(src: &dyn ReadAt) -> bool {
    superblock::probe(src)
}

/// Reads the filesystem in `src` and lists every file reachable from its top level.
pub fn read(src: &dyn ReadAt) -> Result<Filesystem, Error> {
    let vol = Volume::open(src)?;
    let top = vol.root_item(FS_TREE)?.ok_or_else(|| corrupt("the top-level subvolume has no root item".into()))?;
    let mut listing = Listing::default();
    let root = vol.number(FS_TREE, top.root_dir)?;
    crate::fs::walk(root, &mut listing, |ino, path| vol.decode(ino, path), corrupt, unsupported)?;
    let os_root = vol.os_root(&listing.files)?;
    Ok(Filesystem {
        fs_type: "btrfs",
        label: String::from_utf8_lossy(&vol.sb.label).into_owned(),
        uuid: format_uuid(&vol.sb.fsid),
        block_size: vol.sb.sector_size,
        files: listing.files,
        os_root,
    })
}

/// The filesystem's size and room, from its superblock, as the kernel's statfs counts them:
/// sectors in all and not allocated to extents, and no inode counts (btrfs makes inodes as it
/// needs them and reports 0). The kernel also counts the second copy of DUP metadata and its
/// global reserve as used, so its free count is a little lower.
pub fn room(src: &dyn ReadAt) -> Result<crate::fs::Room, Error> {
    let sb = superblock::Superblock::read(src)?;
    let sector = u64::from(sb.sector_size);
    let blocks = sb.total_bytes / sector;
    let free_blocks = sb.total_bytes.saturating_sub(sb.bytes_used) / sector;
    Ok(crate::fs::Room {
        block_size: sb.sector_size,
        blocks,
        free_blocks,
        reserved_blocks: 0,
        inodes: 0,
        free_inodes: 0,
    })
}

/// The filesystem being read.
struct Volume<'a> {
    src: &'a dyn ReadAt,
    sb: Superblock,
    chunks: chunks::ChunkMap,
    /// The items kept of each subvolume tree read so far.
    trees: RefCell<HashMap<u64, Rc<Items>>>,
    /// Bytes the kept items may still take.
    bytes_left: Cell<u64>,
    /// Bytes of extents all files together may still map.
    claims_left: Cell<u64>,
}

impl Volume<'_> {
    fn open(src: &dyn ReadAt) -> Result<Volume<'_>, Error> {
        let sb = Superblock::read(src)?;
        let chunks = chunks::ChunkMap::bootstrap(&sb.sys_chunk_array, sb.devid)?;
        let claims = sb.total_bytes.saturating_mul(SHARED_CLAIMS);
        let mut vol = Volume {
            src,
            sb,
            chunks,
            trees: RefCell::default(),
            bytes_left: Cell::new(MAX_LISTING_BYTES),
            claims_left: Cell::new(claims),
        };
        // The chunk tree, read through the bootstrap chunks, maps the rest.
        let mut found = Vec::new();
        let chunk_root = Root { bytenr: vol.sb.chunk_root, level: vol.sb.chunk_root_level };
        let range = (
            Key::new(FIRST_CHUNK_TREE, chunks::CHUNK_ITEM, 0),
            Key::new(FIRST_CHUNK_TREE, chunks::CHUNK_ITEM, u64::MAX),
        );
        vol.visit(chunk_root, range, "the chunk tree", &mut |key, data| {
            found.push((key, data.to_vec()));
            Ok(())
        })?;
        for (key, data) in found {
            vol.chunks.add(&key, &data, vol.sb.devid)?;
        }
        Ok(vol)
    }

    /// The node at logical address `bytenr`, checked: its checksum, address, filesystem and
    /// level.
    fn node(&self, bytenr: u64, level: u8) -> Result<Vec<u8>, Error> {
        let size = self.sb.node_size;
        let what = || format!("the tree node at {bytenr}");
        let physical = self.chunks.physical(bytenr, u64::from(size), &what)?;
        let mut node = vec![0; size as usize];
        self.src.read_exact_at(&mut node, physical).map_err(|e| read_failed(&e, format!("{}: {e}", what())))?;
        checksum(&node, &what)?;
        let header_bytenr = crate::bytes::le64(&node, 0x30);
        if header_bytenr != bytenr {
            return Err(corrupt(format!("{}: says it lies at {header_bytenr}", what())));
        }
        if node.get(0x20..0x30) != Some(self.sb.metadata_fsid.as_slice()) {
            return Err(corrupt(format!("{}: belongs to another filesystem", what())));
        }
        let found = node.get(0x64).copied().unwrap_or(0);
        if found != level {
            return Err(corrupt(format!("{}: of level {found}, where level {level} was due", what())));
        }
        Ok(node)
    }

    fn visit(&self, root: Root, range: (Key, Key), what: &str, each: &mut tree::Each) -> Result<(), Error> {
        tree::visit(&|bytenr, level| self.node(bytenr, level), root, range, what, each)
    }

    fn root_tree(&self) -> Root {
        Root { bytenr: self.sb.root, level: self.sb.root_level }
    }

    /// The root item of subvolume `id`, if the root tree has one.
    fn root_item(&self, id: u64) -> Result<Option<RootItem>, Error> {
        let mut found = None;
        let range = (Key::new(id, ROOT_ITEM, 0), Key::new(id, ROOT_ITEM, u64::MAX));
        let what = || format!("the root item of subvolume {id}");
        self.visit(self.root_tree(), range, "the root tree", &mut |_, data| {
            if found.is_none() {
                found = Some(RootItem::parse(data, &what)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// The items this reader uses of subvolume `id`'s tree, read once.
    fn tree(&self, id: u64) -> Result<Rc<Items>, Error> {
        if let Some(items) = self.trees.borrow().get(&id) {
            return Ok(items.clone());
        }
        let root = match self.root_item(id)? {
            Some(item) if item.refs > 0 => item.root,
            _ => return Err(corrupt(format!("subvolume {id}: an entry names it, but it has no live root item"))),
        };
        let mut items = Items::default();
        let what = format!("the tree of subvolume {id}");
        let everything = (Key::new(0, 0, 0), Key::new(u64::MAX, u8::MAX, u64::MAX));
        self.visit(root, everything, &what, &mut |key, data| {
            if matches!(key.kind, INODE_ITEM | XATTR_ITEM | DIR_INDEX | EXTENT_DATA) {
                let before = items.bytes();
                items.push(key, data);
                let left = self.bytes_left.get().checked_sub((items.bytes() - before) as u64);
                let left = left
                    .ok_or_else(|| unsupported(format!("{what}: the trees' items exceed {MAX_LISTING_BYTES} bytes")))?;
                self.bytes_left.set(left);
            }
            Ok(())
        })?;
        let items = Rc::new(items);
        self.trees.borrow_mut().insert(id, items.clone());
        Ok(items)
    }

    /// The listing's number for inode `objectid` of subvolume `id`.
    fn number(&self, id: u64, objectid: u64) -> Result<u64, Error> {
        if objectid >= 1 << SUBVOLUME_SHIFT || id >= MAX_SUBVOLUME {
            return Err(unsupported(format!("inode {objectid} of subvolume {id}: numbers this large are not read")));
        }
        Ok(if id == FS_TREE { objectid } else { id << SUBVOLUME_SHIFT | objectid })
    }

    /// Reads one inode for the walk: the file at `path`, and its entries when it is a directory.
    fn decode(&self, ino: u64, path: &str) -> Result<Decoded, Error> {
        let (id, objectid) = match ino >> SUBVOLUME_SHIFT {
            0 => (FS_TREE, ino),
            id => (id, ino & ((1 << SUBVOLUME_SHIFT) - 1)),
        };
        // An empty folder until its inode says otherwise.
        let mut file = File { mode: 0o755, ..File::bare(path.to_string(), FileKind::Dir, ino) };
        if objectid == EMPTY_SUBVOL_DIR {
            // A snapshot's stand-in for a subvolume its source held: an empty folder.
            return Ok((file, Some(Vec::new())));
        }
        let items = self.tree(id)?;
        let what = || format!("inode {objectid} of subvolume {id}");
        let kind_range = |kind: u8| (Key::new(objectid, kind, 0), Key::new(objectid, kind, u64::MAX));
        let (_, data) = (items.range(kind_range(INODE_ITEM)).next())
            .ok_or_else(|| corrupt(format!("{}: an entry names it, but it has no inode item", what())))?;
        let inode = InodeItem::parse(data, &what)?;
        if inode.nlink == 0 {
            return Err(corrupt(format!("{}: has no links (free) but is referenced", what())));
        }
        let mode = (inode.mode & 0xFFFF) as u16;
        file.kind = kind_from_mode(mode)
            .ok_or_else(|| corrupt(format!("{}: mode {:#o} has no known file type", what(), inode.mode)))?;
        (file.mode, file.uid, file.gid, file.size) = (u32::from(mode & 0o7777), inode.uid, inode.gid, inode.size);
        (file.mtime, file.mtime_nsec, file.nlink) = (inode.mtime, inode.mtime_nsec, inode.nlink);
        for (_, data) in items.range(kind_range(XATTR_ITEM)) {
            for xattr in items::dir_items(data, &|| format!("{}: an extended attribute", what()))? {
                file.xattrs.push((String::from_utf8_lossy(xattr.name).into_owned(), xattr.data.to_vec()));
            }
        }
        let mut children = None;
        match file.kind {
            FileKind::Dir => {
                let mut entries = Vec::new();
                for (key, data) in items.range(kind_range(DIR_INDEX)) {
                    let at = || format!("{}: directory index {}", what(), key.offset);
                    for entry in items::dir_items(data, &at)? {
                        entries.push(Entry { name: entry.name.to_vec(), ino: self.entry(id, objectid, &entry, &at)? });
                    }
                }
                children = Some(entries);
            }
            FileKind::File => (file.extents, file.inline_data) = self.extents(&items, objectid, &what)?,
            FileKind::Symlink => {
                let (extents, target) = self.extents(&items, objectid, &what)?;
                let target = target.filter(|t| extents.is_empty() && !t.is_empty());
                let target = target.ok_or_else(|| corrupt(format!("{}: a symbolic link with no target", what())))?;
                // The target is the first `size` bytes (`mkfs.btrfs --rootdir` stores its NUL too).
                let cut = target.get(..inode.size as usize).filter(|_| inode.size > 0 && inode.size <= MAX_LINK);
                let cut = cut.ok_or_else(|| {
                    corrupt(format!("{}: a target of {} bytes, size {}", what(), target.len(), inode.size))
                })?;
                file.link_target = Some(cut.to_vec());
            }
            FileKind::Char | FileKind::Block => {
                // The kernel's device number: 12 bits of major above 20 of minor.
                file.rdev = Some(((inode.rdev >> 20) as u32 & 0xFFF, inode.rdev as u32 & 0xF_FFFF));
            }
            FileKind::Fifo | FileKind::Socket => {}
        }
        Ok((file, children))
    }

    /// The listing's number for what directory entry `entry` of inode `dir` in subvolume `id`
    /// points at: an inode of the same subvolume, or the root folder of another.
    fn entry(&self, id: u64, dir: u64, entry: &DirItem, at: &dyn Fn() -> String) -> Result<u64, Error> {
        let location = entry.location;
        match location.kind {
            INODE_ITEM => self.number(id, location.objectid),
            ROOT_ITEM => {
                let child = location.objectid;
                // Only the subvolume's own parent refers to it; a snapshot of that parent
                // shows an empty folder in its place, as the kernel does.
                let mut named_here = false;
                let range = (Key::new(id, ROOT_REF, child), Key::new(id, ROOT_REF, child));
                self.visit(self.root_tree(), range, "the root tree", &mut |_, data| {
                    named_here |= RootRef::parse(data).is_some_and(|r| r.dir == dir && r.name == entry.name);
                    Ok(())
                })?;
                match self.root_item(child)? {
                    Some(item) if named_here && item.refs > 0 => self.number(child, item.root_dir),
                    _ => self.number(child, EMPTY_SUBVOL_DIR),
                }
            }
            other => {
                Err(corrupt(format!("{}: an entry {} points at an item of type {other}", at(), escape(entry.name))))
            }
        }
    }

    /// A regular file's (or symbolic link's) extents, and its inline data, decompressed.
    fn extents(
        &self,
        items: &Items,
        objectid: u64,
        what: &dyn Fn() -> String,
    ) -> Result<(Vec<Extent>, Option<Vec<u8>>), Error> {
        let mut extents: Vec<Extent> = Vec::new();
        let mut inline = None;
        // Where the previous extent ended, in the file.
        let mut end = 0u64;
        let range = (Key::new(objectid, EXTENT_DATA, 0), Key::new(objectid, EXTENT_DATA, u64::MAX));
        for (key, data) in items.range(range) {
            let logical = key.offset;
            let at = || format!("{}: the extent at file offset {logical}", what());
            if logical < end {
                return Err(corrupt(format!("{}: overlaps the one before", at())));
            }
            match FileExtent::parse(data, &at)? {
                FileExtent::Inline { compression, decoded_len, data } => {
                    if logical != 0 {
                        return Err(corrupt(format!("{}: inline, but not at the start", at())));
                    }
                    let bytes = match compression {
                        0 => data.to_vec(),
                        c => self.decompress(c, data, decoded_len, &at)?,
                    };
                    end = bytes.len() as u64;
                    inline = Some(bytes);
                }
                FileExtent::Regular { compression, prealloc, bytenr, stored_len, decoded_len, skip, len } => {
                    end = logical.checked_add(len).ok_or_else(|| corrupt(format!("{}: {len} bytes overflow", at())))?;
                    if bytenr == 0 || len == 0 {
                        continue; // a hole
                    }
                    let left = self.claims_left.get().checked_sub(len).ok_or_else(|| {
                        corrupt(format!("{}: files map more than the filesystem holds, many times over", at()))
                    })?;
                    self.claims_left.set(left);
                    // The file's part lies within the extent: its decoded bytes, or (kept as
                    // they are) its bytes on disk.
                    let whole = if compression == 0 { stored_len } else { decoded_len };
                    if skip.checked_add(len).is_none_or(|n| n > whole) {
                        return Err(corrupt(format!("{}: {len} bytes at {skip} of an extent of {whole}", at())));
                    }
                    let extent = match compression {
                        0 => Extent {
                            logical,
                            physical: self.chunks.physical(bytenr.saturating_add(skip), len, &at)?,
                            len,
                            unwritten: prealloc,
                            encoded: None,
                        },
                        c if !prealloc => {
                            if decoded_len > crate::compressed::MAX_DECODED
                                || stored_len > crate::compressed::MAX_DECODED
                            {
                                return Err(corrupt(format!(
                                    "{}: a compressed extent of {stored_len} bytes, decoding to {decoded_len}",
                                    at()
                                )));
                            }
                            let encoded = Encoded {
                                compression: compression_of(c, &at)?,
                                stored_len,
                                decoded_len,
                                skip,
                                sector: self.sb.sector_size,
                            };
                            let physical = self.chunks.physical(bytenr, stored_len, &at)?;
                            Extent { logical, physical, len, unwritten: false, encoded: Some(encoded) }
                        }
                        _ => return Err(corrupt(format!("{}: preallocated, yet compressed", at()))),
                    };
                    match extents.last_mut() {
                        Some(last)
                            if extent.encoded.is_none()
                                && last.encoded.is_none()
                                && last.unwritten == extent.unwritten
                                && last.logical + last.len == extent.logical
                                && last.physical + last.len == extent.physical =>
                        {
                            last.len += extent.len
                        }
                        _ => extents.push(extent),
                    }
                }
            }
        }
        // Inline data is the whole content; extents beside it may only be preallocated (past
        // the end of the file, where `fallocate --keep-size` puts them).
        if inline.is_some() && extents.iter().any(|e| !e.unwritten) {
            return Err(unsupported(format!("{}: inline data followed by written extents", what())));
        }
        Ok((extents, inline))
    }

    fn decompress(
        &self,
        compression: u8,
        data: &[u8],
        decoded_len: u64,
        at: &dyn Fn() -> String,
    ) -> Result<Vec<u8>, Error> {
        if decoded_len > crate::compressed::MAX_DECODED {
            return Err(corrupt(format!("{}: inline data decoding to {decoded_len} bytes", at())));
        }
        let sector = self.sb.sector_size as usize;
        crate::compressed::decode(compression_of(compression, at)?, data, decoded_len as usize, sector)
            .map_err(|why| corrupt(format!("{}: {why}", at())))
    }

    /// Where the operating system's root lies in `files`: the default subvolume's folder, or
    /// the subvolume an `/etc/fstab` mounts at `/`, or the top level.
    fn os_root(&self, files: &[File]) -> Result<String, Error> {
        let folder_of = |id: u64| -> Result<Option<String>, Error> {
            let Some(item) = self.root_item(id)? else { return Ok(None) };
            let number = self.number(id, item.root_dir)?;
            Ok(files.iter().find(|f| f.inode == number && f.kind == FileKind::Dir).map(|f| f.path.clone()))
        };
        let mut default = FS_TREE;
        let range = (Key::new(ROOT_TREE_DIR, DIR_ITEM, 0), Key::new(ROOT_TREE_DIR, DIR_ITEM, u64::MAX));
        self.visit(self.root_tree(), range, "the root tree", &mut |_, data| {
            for item in items::dir_items(data, &|| "the root tree's directory".into())? {
                if item.name == b"default" {
                    default = item.location.objectid;
                }
            }
            Ok(())
        })?;
        if default != FS_TREE
            && let Some(path) = folder_of(default)?
        {
            return Ok(path);
        }
        // An fstab at the top level or at the top of a subvolume.
        let at_top = |f: &&File| {
            let folder = f.path.strip_suffix("/etc/fstab");
            let parent = folder.and_then(|p| files.iter().find(|d| d.path == p));
            folder == Some("") || parent.is_some_and(|d| d.kind == FileKind::Dir && d.inode >> SUBVOLUME_SHIFT != 0)
        };
        for fstab in files.iter().filter(|f| f.kind == FileKind::File && f.size <= 1 << 16).filter(at_top) {
            let mut text = vec![0; fstab.size as usize];
            if fstab.read_content(self.src, 0, &mut text).is_err() {
                continue;
            }
            for option in root_mount_options(&String::from_utf8_lossy(&text)) {
                let found = match option.split_once('=') {
                    Some(("subvol", name)) => {
                        let path = format!("/{}", name.trim_matches('/'));
                        files.iter().any(|f| f.path == path && f.kind == FileKind::Dir).then_some(path)
                    }
                    Some(("subvolid", id)) => match id.parse() {
                        Ok(id) => folder_of(id)?,
                        Err(_) => None,
                    },
                    _ => None,
                };
                if let Some(path) = found {
                    return Ok(path);
                }
            }
        }
        Ok("/".into())
    }
}

/// The mount options of the btrfs filesystem an fstab mounts at `/`.
fn root_mount_options(fstab: &str) -> Vec<&str> {
    (fstab.lines())
        .find_map(|line| match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            [device, "/", "btrfs", options, ..] if !device.starts_with('#') => Some(options.split(',').collect()),
            _ => None,
        })
        .unwrap_or_default()
}

fn compression_of(code: u8, at: &dyn Fn() -> String) -> Result<Compression, Error> {
    match code {
        1 => Ok(Compression::Zlib),
        2 => Ok(Compression::Lzo),
        3 => Ok(Compression::Zstd),
        other => Err(unsupported(format!("{}: compression type {other} is not read", at()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_mount_is_the_btrfs_line_at_slash() {
        let fstab = "# / was on /dev/sda3\nUUID=1 /home btrfs subvol=home 0 0\nUUID=1 / btrfs rw,subvol=/root,compress=zstd:1 0 0\n";
        assert_eq!(root_mount_options(fstab), ["rw", "subvol=/root", "compress=zstd:1"]);
        assert!(root_mount_options("UUID=1 / ext4 defaults 0 1\n").is_empty());
    }
}
