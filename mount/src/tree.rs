//! The file tree of one filesystem of an image version, built from its `files` rows: one node
//! per inode (hard links share it), under the numbers the kernel will know them by. A writable
//! mount changes it in place, each change journaled; a node made there takes a number above
//! every other.

use crate::journal::Journal;
use fuser::{FileAttr, FileType, INodeNo};
use imagelake_engine::catalog::{FileKind, FileRow};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One inode: what `stat` shows, and what it holds.
pub struct Node {
    pub attr: FileAttr,
    /// Symbolic links: the target, as stored (never resolved here).
    pub link_target: Option<String>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Regular files: their bytes.
    pub data: Option<Data>,
    /// Directories: their entries, sorted by name, and their parent.
    pub entries: Vec<(OsString, INodeNo)>,
    pub parent: INodeNo,
    /// The version's own inode this node is; None for one made in a writable mount.
    pub inode: Option<u64>,
}

/// Where a regular file's bytes are.
pub enum Data {
    /// In the store: the content with this hash.
    Stored(String),
    /// In a file of the writable mount's scratch area, since it was written.
    Scratch { path: PathBuf, file: Arc<File> },
}

pub struct Tree {
    nodes: HashMap<INodeNo, Node>,
    /// Bytes of the regular files, each inode once (for statfs).
    pub bytes: u64,
    /// The number the next node made takes.
    next: u64,
    /// The root's inode number in the filesystem.
    root: u64,
    /// A writable mount's journal, told of every change.
    pub journal: Option<Journal>,
}

/// FUSE calls the root 1. The filesystem's own root number (2 on ext4) takes its place, and an
/// inode that is numbered 1 (none is, on ext4) takes the root's: the numbers stay the
/// filesystem's and stay unique.
fn node_number(inode: u64, root: u64) -> INodeNo {
    match inode {
        i if i == root => INodeNo::ROOT,
        1 => INodeNo(root),
        i => INodeNo(i),
    }
}

pub fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Char => FileType::CharDevice,
        FileKind::Block => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

pub fn file_kind(kind: FileType) -> FileKind {
    match kind {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Dir,
        FileType::Symlink => FileKind::Symlink,
        FileType::CharDevice => FileKind::Char,
        FileType::BlockDevice => FileKind::Block,
        FileType::NamedPipe => FileKind::Fifo,
        FileType::Socket => FileKind::Socket,
    }
}

/// A device number as FUSE carries it: the kernel's `new_encode_dev`.
fn device(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

pub fn time(ns: i64) -> SystemTime {
    match u64::try_from(ns) {
        Ok(after) => UNIX_EPOCH + Duration::from_nanos(after),
        Err(_) => UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs()),
    }
}

pub fn nanoseconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i64,
        Err(before) => -(before.duration().as_nanos() as i64),
    }
}

/// Path components: "/a/b" has parent "/a" and name "b"; "/a" has parent "/".
fn split(path: &str) -> Option<(&str, &str)> {
    let (parent, name) = path.rsplit_once('/')?;
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

impl Tree {
    /// What a writable mount made since its last commit: the bytes of the files it wrote, and
    /// how many nodes it made.
    pub fn uncommitted(&self) -> (u64, u64) {
        let written =
            (self.nodes.values()).filter(|n| matches!(n.data, Some(Data::Scratch { .. }))).map(|n| n.attr.size).sum();
        (written, self.nodes.values().filter(|n| n.inode.is_none()).count() as u64)
    }

    /// The tree of `rows` (one filesystem's); an error names the row that does not fit.
    pub fn build(rows: Vec<FileRow>) -> Result<Tree, String> {
        Tree::build_numbered(rows, &[])
    }

    /// [`Tree::build`], each node numbered after its inode unless `renumber` (number, inode)
    /// says otherwise.
    pub fn build_numbered(rows: Vec<FileRow>, renumber: &[(u64, u64)]) -> Result<Tree, String> {
        let renumber: HashMap<u64, INodeNo> =
            renumber.iter().map(|&(number, inode)| (inode, INodeNo(number))).collect();
        let root = rows.iter().find(|r| r.path == "/").ok_or("the filesystem has no root directory")?;
        let root = u64::try_from(root.inode).map_err(|_| "the root has a negative inode number")?;
        let mut nodes: HashMap<INodeNo, Node> = HashMap::with_capacity(rows.len());
        let mut numbers: HashMap<String, INodeNo> = HashMap::with_capacity(rows.len());
        let mut bytes = 0u64;
        let mut linked = Vec::with_capacity(rows.len());
        for row in rows {
            let out_of_range = || format!("{}: an inode, owner, mode or size out of range", row.path);
            let inode = u64::try_from(row.inode).map_err(|_| out_of_range())?;
            let number = renumber.get(&inode).copied().unwrap_or_else(|| node_number(inode, root));
            numbers.insert(row.path.clone(), number);
            if row.path != "/" {
                linked.push((row.path.clone(), number, row.kind == FileKind::Dir));
            }
            if nodes.contains_key(&number) {
                // Another name of an inode already seen: a hard link.
                continue;
            }
            let size = u64::try_from(row.size).map_err(|_| out_of_range())?;
            let (uid, gid) = (
                u32::try_from(row.uid).map_err(|_| out_of_range())?,
                u32::try_from(row.gid).map_err(|_| out_of_range())?,
            );
            let rdev = match (row.dev_major, row.dev_minor) {
                (Some(major), Some(minor)) => device(
                    u32::try_from(major).map_err(|_| out_of_range())?,
                    u32::try_from(minor).map_err(|_| out_of_range())?,
                ),
                _ => 0,
            };
            let mtime = time(row.mtime);
            let attr = FileAttr {
                // The number requests use (the kernel takes an entry's number from here), but
                // the root's own, which only getattr and readdir show (unless it is 0, as
                // vfat's: a directory entry numbered 0 reads as a deleted one).
                ino: if number == INodeNo::ROOT && inode != 0 { INodeNo(inode) } else { number },
                size,
                blocks: size.div_ceil(512),
                atime: mtime,
                mtime,
                ctime: mtime,
                crtime: mtime,
                kind: file_type(row.kind),
                perm: (row.mode & 0o7777) as u16,
                nlink: u32::try_from(row.nlink).map_err(|_| out_of_range())?,
                uid,
                gid,
                rdev,
                blksize: 4096,
                flags: 0,
            };
            if row.kind == FileKind::File {
                bytes += size;
            }
            let node = Node {
                attr,
                link_target: row.link_target,
                xattrs: row.xattrs,
                data: row.content_hash.filter(|_| row.kind == FileKind::File).map(Data::Stored),
                entries: Vec::new(),
                parent: INodeNo::ROOT,
                inode: Some(inode),
            };
            nodes.insert(number, node);
        }
        for (path, number, is_dir) in linked {
            let (parent_path, name) = split(&path).ok_or_else(|| format!("{path}: not an absolute path"))?;
            let parent = *numbers.get(parent_path).ok_or_else(|| format!("{path}: no folder {parent_path}"))?;
            let folder = nodes.get_mut(&parent).ok_or_else(|| format!("{path}: no folder {parent_path}"))?;
            if folder.attr.kind != FileType::Directory {
                return Err(format!("{path}: {parent_path} is not a folder"));
            }
            folder.entries.push((OsString::from(name), number));
            if is_dir && let Some(node) = nodes.get_mut(&number) {
                node.parent = parent;
            }
        }
        for node in nodes.values_mut() {
            node.entries.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let next = nodes.keys().map(|n| n.0).chain([root]).max().unwrap_or(1) + 1;
        Ok(Tree { nodes, bytes, next, root, journal: None })
    }

    pub fn node(&self, number: INodeNo) -> Option<&Node> {
        self.nodes.get(&number)
    }

    /// Node `number`, to change: the journal is told.
    pub fn node_mut(&mut self, number: INodeNo) -> Option<&mut Node> {
        if let Some(journal) = &mut self.journal {
            journal.changed(number);
        }
        self.nodes.get_mut(&number)
    }

    /// Sets node `number` as a journal had it, keeping the entries it has.
    pub fn put(&mut self, number: INodeNo, mut node: Node) {
        if let Some(old) = self.nodes.remove(&number) {
            node.entries = old.entries;
        }
        self.next = self.next.max(number.0 + 1);
        self.nodes.insert(number, node);
    }

    /// Appends the changes since the last call to the journal.
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(mut journal) = self.journal.take() else { return Ok(()) };
        let written = journal.write(self);
        self.journal = Some(journal);
        written
    }

    /// The nodes reached from the root whose number is not their inode's: (number, inode).
    /// (One no name reaches may have an inode a reached one has now.)
    pub fn renumbered(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = (self.paths().into_iter())
            .filter_map(|(_, number)| Some((number.0, self.nodes.get(&number)?.inode?)))
            .filter(|&(number, inode)| INodeNo(number) != node_number(inode, self.root))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Adds `node` under a new number, named `name` in folder `parent`; returns the number.
    pub fn add(&mut self, parent: INodeNo, name: &OsStr, mut node: Node) -> INodeNo {
        let number = INodeNo(self.next);
        self.next += 1;
        node.attr.ino = number;
        node.parent = parent;
        self.nodes.insert(number, node);
        if let Some(journal) = &mut self.journal {
            journal.changed(number);
        }
        self.link(parent, name, number);
        number
    }

    /// Names node `number` `name` in folder `parent` (which has no such entry).
    pub fn link(&mut self, parent: INodeNo, name: &OsStr, number: INodeNo) {
        if let Some(folder) = self.nodes.get_mut(&parent)
            && let Err(at) = folder.entries.binary_search_by(|(n, _)| n.as_os_str().cmp(name))
        {
            folder.entries.insert(at, (name.to_os_string(), number));
            if let Some(journal) = &mut self.journal {
                journal.linked(parent, name, number);
            }
        }
    }

    /// Removes the entry `name` of folder `parent`; returns the number it named. The node
    /// stays (a file still open reads on); one no name reaches is left out of a commit.
    pub fn unlink(&mut self, parent: INodeNo, name: &OsStr) -> Option<INodeNo> {
        let folder = self.nodes.get_mut(&parent)?;
        let at = folder.entries.binary_search_by(|(n, _)| n.as_os_str().cmp(name)).ok()?;
        let number = folder.entries.remove(at).1;
        if let Some(journal) = &mut self.journal {
            journal.unlinked(parent, name);
        }
        Some(number)
    }

    /// Every name of every node reached from the root, as absolute paths, parents first.
    pub fn paths(&self) -> Vec<(String, INodeNo)> {
        let mut out = vec![("/".to_string(), INodeNo::ROOT)];
        let mut at = 0;
        while at < out.len() {
            let (path, number) = out[at].clone();
            at += 1;
            let Some(node) = self.nodes.get(&number) else { continue };
            for (name, child) in &node.entries {
                let name = name.to_string_lossy();
                let child_path = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
                // A directory is reached once, by its one name.
                out.push((child_path, *child));
            }
        }
        out
    }

    /// The entry `name` of folder `parent`.
    pub fn lookup(&self, parent: INodeNo, name: &std::ffi::OsStr) -> Option<(INodeNo, &Node)> {
        let folder = self.nodes.get(&parent)?;
        let at = folder.entries.binary_search_by(|(n, _)| n.as_os_str().cmp(name)).ok()?;
        let number = folder.entries[at].1;
        Some((number, self.nodes.get(&number)?))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, kind: FileKind, inode: i64) -> FileRow {
        FileRow {
            image_id: 1,
            partition: 1,
            path: path.into(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 3,
            mtime: 1_500_000_000_123_456_789,
            inode,
            nlink: 1,
            link_target: None,
            dev_major: None,
            dev_minor: None,
            xattrs: Vec::new(),
            content_hash: None,
            extent_map: Vec::new(),
        }
    }

    #[test]
    fn hard_links_share_a_node_and_the_root_is_one() {
        let tree = Tree::build(vec![
            row("/", FileKind::Dir, 2),
            row("/etc", FileKind::Dir, 12),
            row("/etc/a", FileKind::File, 13),
            row("/b", FileKind::File, 13),
        ])
        .unwrap();
        assert_eq!(tree.len(), 3);
        let (etc, node) = tree.lookup(INodeNo::ROOT, "etc".as_ref()).unwrap();
        assert_eq!((etc, node.parent, node.attr.ino), (INodeNo(12), INodeNo::ROOT, INodeNo(12)));
        assert_eq!(tree.lookup(etc, "a".as_ref()).unwrap().0, tree.lookup(INodeNo::ROOT, "b".as_ref()).unwrap().0);
        assert_eq!(tree.node(INodeNo::ROOT).unwrap().attr.ino, INodeNo(2), "stat shows the filesystem's number");
        assert!(tree.lookup(INodeNo::ROOT, "c".as_ref()).is_none());
        assert_eq!(tree.bytes, 3, "a hard-linked file counted once");
    }

    #[test]
    fn a_root_numbered_zero_shows_as_one() {
        let tree = Tree::build(vec![row("/", FileKind::Dir, 0), row("/EFI", FileKind::Dir, 2)]).unwrap();
        assert_eq!(tree.node(INodeNo::ROOT).unwrap().attr.ino, INodeNo::ROOT);
        assert_eq!(tree.lookup(INodeNo::ROOT, "EFI".as_ref()).unwrap().0, INodeNo(2));
    }

    #[test]
    fn rows_that_do_not_fit_are_named() {
        let orphan = Tree::build(vec![row("/", FileKind::Dir, 2), row("/x/y", FileKind::File, 13)]);
        assert_eq!(orphan.err().unwrap(), "/x/y: no folder /x");
        let under_file = Tree::build(vec![
            row("/", FileKind::Dir, 2),
            row("/f", FileKind::File, 12),
            row("/f/g", FileKind::File, 13),
        ]);
        assert_eq!(under_file.err().unwrap(), "/f/g: /f is not a folder");
        assert!(Tree::build(vec![row("/etc", FileKind::Dir, 12)]).is_err());
    }

    #[test]
    fn devices_and_times_as_the_kernel_encodes_them() {
        assert_eq!(device(8, 1), 0x801);
        assert_eq!(device(259, 300), (300 & 0xff) | (259 << 8) | ((300 & !0xff) << 12));
        assert_eq!(time(-1_000_000_001), UNIX_EPOCH - Duration::new(1, 1));
    }
}
