//! A writable mount's changes, made in the tree in place: a written file's bytes go to a file
//! of the scratch area (copied there from the store on its first write, unless it is emptied),
//! everything else lives in its node. `commit` makes the tree the next version.
//!
//! The kernel checks permissions (`default_permissions`) and the sticky bit before it asks;
//! what is left here is what a filesystem decides: names that exist or not, folders that are
//! empty or not, a folder moved into itself, link counts, set-group-id folders, times.

use crate::fs::{ImageFs, read, write};
use crate::tree::{Data, Node, Tree};
use fuser::{Errno, FileAttr, FileType, INodeNo, RenameFlags, Request, TimeOrNow};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// What a setattr asks to change.
pub struct Attributes {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    /// The caller's user and group.
    pub by: (u32, u32),
}

/// The kind a mknod mode asks for.
pub fn kind_of(mode: u32) -> Option<FileType> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => FileType::RegularFile,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFDIR => FileType::Directory,
        _ => return None,
    })
}

/// Names of scratch files, unique in this process.
static SCRATCH_FILES: AtomicU64 = AtomicU64::new(0);

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(at) => at,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// A name the catalog can keep (its paths are UTF-8) and ext4 can hold.
fn valid(name: &OsStr) -> Result<&str, Errno> {
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    if name.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(name)
}

fn node(tree: &mut Tree, number: INodeNo) -> Result<&mut Node, Errno> {
    tree.node_mut(number).ok_or(Errno::ENOENT)
}

/// A folder's times after an entry came or went, and its link count after a folder did.
fn entries_changed(tree: &mut Tree, folder: INodeNo, subfolders: i64) {
    if let Some(f) = tree.node_mut(folder) {
        let now = SystemTime::now();
        (f.attr.mtime, f.attr.ctime) = (now, now);
        f.attr.nlink = (i64::from(f.attr.nlink) + subfolders).max(0) as u32;
    }
}

impl ImageFs {
    /// Makes a change to the tree with `made`, then journals what it changed.
    fn change<T>(&self, made: impl FnOnce(&mut Tree) -> Result<T, Errno>) -> Result<T, Errno> {
        if self.scratch.is_none() {
            return Err(Errno::EROFS);
        }
        self.changed.store(true, Ordering::SeqCst);
        let mut tree = write(&self.tree);
        let done = made(&mut tree);
        match tree.save() {
            Ok(()) => done,
            Err(e) => {
                eprintln!("imagelake mount {}: journaling a change: {e}", read(&self.image));
                Err(Errno::EIO)
            }
        }
    }

    /// A new, empty file in the scratch area.
    fn scratch_file(&self) -> Result<Data, Errno> {
        let folder = self.scratch.as_ref().ok_or(Errno::EROFS)?;
        let path = folder.join(SCRATCH_FILES.fetch_add(1, Ordering::SeqCst).to_string());
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(Errno::from)?;
        Ok(Data::Scratch { path, file: Arc::new(file) })
    }

    /// File `number`'s scratch file, made on its first change: a copy of its stored bytes
    /// (as far as `keep`), or empty.
    fn own(&self, tree: &mut Tree, number: INodeNo, keep: u64) -> Result<Arc<File>, Errno> {
        let stored = match &node(tree, number)?.data {
            Some(Data::Scratch { file, .. }) => return Ok(file.clone()),
            Some(Data::Stored(hash)) => Some(hash.clone()),
            None => None,
        };
        let size = node(tree, number)?.attr.size.min(keep);
        let data = self.scratch_file()?;
        let Data::Scratch { file, .. } = &data else { unreachable!("a scratch file") };
        let file = file.clone();
        if let Some(hash) = stored {
            const STEP: u64 = 1 << 20;
            let mut at = 0;
            while at < size {
                let bytes = self.read_stored(&hash, size, at, STEP as u32)?;
                file.write_all_at(&bytes, at).map_err(Errno::from)?;
                at += STEP;
            }
        }
        file.set_len(size).map_err(Errno::from)?;
        node(tree, number)?.data = Some(data);
        Ok(file)
    }

    fn read_stored(&self, hash: &str, size: u64, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let located = crate::fs::read(&self.contents).clone();
        let read = match located.wait() {
            Ok(contents) => contents.read(hash, size, offset, len),
            Err(why) => Err(why.clone()),
        };
        read.map_err(|why| {
            eprintln!("imagelake mount: copying a file to write it: {why}");
            Errno::EIO
        })
    }

    /// Makes `name` in folder `parent`: a file, folder, link (to `target`) or special file.
    #[allow(clippy::too_many_arguments)]
    pub fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: FileType,
        mode: u32,
        rdev: u32,
        target: Option<&str>,
    ) -> Result<FileAttr, Errno> {
        valid(name)?;
        self.change(|tree: &mut Tree| {
            let folder = tree.node(parent).ok_or(Errno::ENOENT)?.attr;
            if folder.kind != FileType::Directory {
                return Err(Errno::ENOTDIR);
            }
            if tree.lookup(parent, name).is_some() {
                return Err(Errno::EEXIST);
            }
            // In a set-group-id folder, entries take its group, and folders its set-group-id bit.
            let inherit = folder.perm & 0o2000 != 0;
            let gid = if inherit { folder.gid } else { req.gid() };
            let mut perm = (mode & 0o7777) as u16;
            if inherit && kind == FileType::Directory {
                perm |= 0o2000;
            }
            let data = if kind == FileType::RegularFile { Some(self.scratch_file()?) } else { None };
            let now = SystemTime::now();
            let attr = FileAttr {
                ino: INodeNo(0),
                size: target.map_or(0, |t| t.len() as u64),
                blocks: 0,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                kind,
                perm,
                nlink: if kind == FileType::Directory { 2 } else { 1 },
                uid: req.uid(),
                gid,
                rdev: if matches!(kind, FileType::CharDevice | FileType::BlockDevice) { rdev } else { 0 },
                blksize: 4096,
                flags: 0,
            };
            let made = Node {
                attr,
                link_target: target.map(str::to_string),
                xattrs: Vec::new(),
                data,
                entries: Vec::new(),
                parent,
                inode: None,
            };
            let number = tree.add(parent, name, made);
            entries_changed(tree, parent, i64::from(kind == FileType::Directory));
            Ok(node(tree, number)?.attr)
        })
    }

    /// Removes `name` from folder `parent`: a folder (`folder`, only when empty) or anything else.
    pub fn remove(&self, parent: INodeNo, name: &OsStr, folder: bool) -> Result<(), Errno> {
        self.change(|tree: &mut Tree| {
            let (number, gone) = tree.lookup(parent, name).map(|(n, node)| (n, node.attr)).ok_or(Errno::ENOENT)?;
            let is_folder = gone.kind == FileType::Directory;
            match (folder, is_folder) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !node(tree, number)?.entries.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            tree.unlink(parent, name);
            let gone = node(tree, number)?;
            gone.attr.nlink = if is_folder { 0 } else { gone.attr.nlink.saturating_sub(1) };
            gone.attr.ctime = SystemTime::now();
            entries_changed(tree, parent, -i64::from(is_folder));
            Ok(())
        })
    }

    /// rename(2): `name` of `parent` becomes `newname` of `newparent`, replacing what is there
    /// as rename may; or the two are exchanged.
    pub fn move_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        valid(newname)?;
        self.change(|tree: &mut Tree| {
            let (moved, kind) = tree.lookup(parent, name).map(|(n, node)| (n, node.attr.kind)).ok_or(Errno::ENOENT)?;
            if tree.node(newparent).ok_or(Errno::ENOENT)?.attr.kind != FileType::Directory {
                return Err(Errno::ENOTDIR);
            }
            let there = tree.lookup(newparent, newname).map(|(n, node)| (n, node.attr.kind));
            // A folder cannot go into itself or below it.
            let inside = |tree: &Tree, folder: INodeNo, of: INodeNo| {
                let mut at = folder;
                loop {
                    if at == of {
                        return true;
                    }
                    match tree.node(at) {
                        Some(n) if at != INodeNo::ROOT => at = n.parent,
                        _ => return false,
                    }
                }
            };
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                let (other, other_kind) = there.ok_or(Errno::ENOENT)?;
                if (kind == FileType::Directory && inside(tree, newparent, moved))
                    || (other_kind == FileType::Directory && inside(tree, parent, other))
                {
                    return Err(Errno::EINVAL);
                }
                tree.unlink(parent, name);
                tree.unlink(newparent, newname);
                tree.link(parent, name, other);
                tree.link(newparent, newname, moved);
                let (a, b) = (i64::from(kind == FileType::Directory), i64::from(other_kind == FileType::Directory));
                for (number, folder) in [(moved, newparent), (other, parent)] {
                    let n = node(tree, number)?;
                    n.attr.ctime = SystemTime::now();
                    if n.attr.kind == FileType::Directory {
                        n.parent = folder;
                    }
                }
                entries_changed(tree, parent, b - a);
                entries_changed(tree, newparent, a - b);
                return Ok(());
            }
            if kind == FileType::Directory && inside(tree, newparent, moved) {
                return Err(Errno::EINVAL);
            }
            if let Some((replaced, replaced_kind)) = there {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if replaced == moved {
                    return Ok(());
                }
                match (kind == FileType::Directory, replaced_kind == FileType::Directory) {
                    (false, true) => return Err(Errno::EISDIR),
                    (true, false) => return Err(Errno::ENOTDIR),
                    (true, true) if !node(tree, replaced)?.entries.is_empty() => return Err(Errno::ENOTEMPTY),
                    _ => {}
                }
                tree.unlink(newparent, newname);
                let gone = node(tree, replaced)?;
                gone.attr.nlink =
                    if replaced_kind == FileType::Directory { 0 } else { gone.attr.nlink.saturating_sub(1) };
                gone.attr.ctime = SystemTime::now();
                entries_changed(tree, newparent, -i64::from(replaced_kind == FileType::Directory));
            }
            tree.unlink(parent, name);
            tree.link(newparent, newname, moved);
            let is_folder = i64::from(kind == FileType::Directory);
            let n = node(tree, moved)?;
            n.attr.ctime = SystemTime::now();
            if kind == FileType::Directory {
                n.parent = newparent;
            }
            entries_changed(tree, parent, -is_folder);
            entries_changed(tree, newparent, is_folder);
            Ok(())
        })
    }

    /// link(2): another name for `number`.
    pub fn hard_link(&self, number: INodeNo, newparent: INodeNo, newname: &OsStr) -> Result<FileAttr, Errno> {
        valid(newname)?;
        self.change(|tree: &mut Tree| {
            if tree.node(number).ok_or(Errno::ENOENT)?.attr.kind == FileType::Directory {
                return Err(Errno::EPERM);
            }
            if tree.node(newparent).ok_or(Errno::ENOENT)?.attr.kind != FileType::Directory {
                return Err(Errno::ENOTDIR);
            }
            if tree.lookup(newparent, newname).is_some() {
                return Err(Errno::EEXIST);
            }
            tree.link(newparent, newname, number);
            entries_changed(tree, newparent, 0);
            let n = node(tree, number)?;
            n.attr.nlink += 1;
            n.attr.ctime = SystemTime::now();
            Ok(n.attr)
        })
    }

    /// chmod, chown, truncate and utimes.
    pub fn set_attributes(&self, number: INodeNo, change: Attributes) -> Result<FileAttr, Errno> {
        self.change(|tree: &mut Tree| {
            if let Some(size) = change.size {
                let n = node(tree, number)?;
                if n.attr.kind != FileType::RegularFile {
                    return Err(Errno::EINVAL);
                }
                let file = self.own(tree, number, size)?;
                file.set_len(size).map_err(Errno::from)?;
                let n = node(tree, number)?;
                n.attr.size = size;
                n.attr.blocks = size.div_ceil(512);
                n.attr.mtime = SystemTime::now();
            }
            let n = node(tree, number)?;
            if let Some(mode) = change.mode {
                n.attr.perm = (mode & 0o7777) as u16;
                // chmod by someone outside the file's group drops set-group-id, as the kernel's own
                // filesystems do (supplementary groups are not known here).
                let (uid, gid) = change.by;
                if uid != 0 && gid != n.attr.gid {
                    n.attr.perm &= !0o2000;
                }
            }
            if let Some(uid) = change.uid {
                n.attr.uid = uid;
            }
            if let Some(gid) = change.gid {
                n.attr.gid = gid;
            }
            if let Some(at) = change.atime {
                n.attr.atime = time(at);
            }
            if let Some(at) = change.mtime {
                n.attr.mtime = time(at);
            }
            n.attr.ctime = SystemTime::now();
            Ok(n.attr)
        })
    }

    /// fsync(2): the journal, and file `number`'s written bytes, made durable. A read-only
    /// mount has nothing to make so.
    pub fn sync(&self, number: INodeNo) -> Result<(), Errno> {
        let tree = read(&self.tree);
        if let Some(journal) = &tree.journal {
            journal.sync().map_err(Errno::from)?;
        }
        if let Some(Data::Scratch { file, .. }) = tree.node(number).and_then(|n| n.data.as_ref()) {
            file.sync_data().map_err(Errno::from)?;
        }
        Ok(())
    }

    /// Writes `data` at `offset` of file `number`.
    pub fn write_bytes(&self, number: INodeNo, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        self.change(|tree: &mut Tree| {
            let file = self.own(tree, number, u64::MAX)?;
            file.write_all_at(data, offset).map_err(Errno::from)?;
            let n = node(tree, number)?;
            n.attr.size = n.attr.size.max(end);
            n.attr.blocks = n.attr.size.div_ceil(512);
            let now = SystemTime::now();
            (n.attr.mtime, n.attr.ctime) = (now, now);
            Ok(())
        })
    }

    /// setxattr (`value`, with XATTR_CREATE or XATTR_REPLACE in `flags`) or removexattr.
    pub fn set_xattr(&self, number: INodeNo, name: &OsStr, value: Option<&[u8]>, flags: i32) -> Result<(), Errno> {
        let name = valid(name)?;
        self.change(|tree: &mut Tree| {
            let n = node(tree, number)?;
            let at = n.xattrs.iter().position(|(have, _)| have == name);
            match (value, at) {
                (None, None) => return Err(Errno::NO_XATTR),
                (None, Some(i)) => {
                    n.xattrs.remove(i);
                }
                (Some(_), Some(_)) if flags & libc::XATTR_CREATE != 0 => return Err(Errno::EEXIST),
                (Some(_), None) if flags & libc::XATTR_REPLACE != 0 => return Err(Errno::NO_XATTR),
                (Some(v), Some(i)) => n.xattrs[i].1 = v.to_vec(),
                (Some(v), None) => n.xattrs.push((name.to_string(), v.to_vec())),
            }
            n.attr.ctime = SystemTime::now();
            Ok(())
        })
    }
}
