//! The FUSE filesystem: requests answered from the tree and the contents, by several threads at
//! once. Nothing changes a version under the kernel but the kernel's own requests, so it may
//! keep entries, attributes and pages as long as it likes. Changes of a writable mount are
//! made in `write`.

use crate::content::Contents;
use crate::tree::{Data, Node, Tree};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

/// How long the kernel may keep what it was told: the tree never changes under it.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// The read-ahead asked for (the kernel may allow less).
const READ_AHEAD: u32 = 1 << 20;

/// Read-ahead requests the kernel may have in flight (its default is 12).
const MAX_BACKGROUND: u16 = 64;

/// Where a version's contents lie, set once its disk map is read; reads wait for it.
pub type Located = Arc<OnceLock<Result<Contents, String>>>;

/// The mounted filesystem. Its parts are shared with the writable mount's commit, which
/// changes them between requests.
#[derive(Clone)]
pub struct ImageFs {
    pub tree: Arc<RwLock<Tree>>,
    pub contents: Arc<RwLock<Located>>,
    /// `name@version`, for messages.
    pub image: Arc<RwLock<String>>,
    /// A writable mount's scratch folder for the bytes of files written.
    pub scratch: Option<PathBuf>,
    /// Set by every change since the last commit.
    pub changed: Arc<AtomicBool>,
}

/// A lock whose holder panicked is taken anyway: every change leaves the tree whole.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a read needs of a regular file, taken from the tree so that it reads unlocked.
enum Source {
    Stored(String),
    Scratch(Arc<std::fs::File>),
}

impl ImageFs {
    fn image(&self) -> String {
        read(&self.image).clone()
    }

    fn attr(&self, number: INodeNo) -> Result<FileAttr, Errno> {
        read(&self.tree).node(number).map(|n| n.attr).ok_or(Errno::ENOENT)
    }

    /// The entries of folder `ino` in listing order: "." and ".." (offsets 0 and 1), then its
    /// entries by name; each with its number and node.
    fn listing(tree: &Tree, ino: INodeNo) -> Result<impl Iterator<Item = (&OsStr, INodeNo, &Node)>, Errno> {
        let folder = tree.node(ino).ok_or(Errno::ENOENT)?;
        if folder.attr.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let dots = [(OsStr::new("."), ino), (OsStr::new(".."), folder.parent)];
        let entries = dots.into_iter().chain(folder.entries.iter().map(|(name, number)| (name.as_os_str(), *number)));
        Ok(entries.filter_map(|(name, number)| Some((name, number, tree.node(number)?))))
    }

    /// Bytes `offset..offset + size` of file `ino`, short at its end.
    fn read_bytes(&self, ino: INodeNo, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let (source, length) = {
            let tree = read(&self.tree);
            let node = tree.node(ino).ok_or(Errno::ENOENT)?;
            if node.attr.kind == FileType::Directory {
                return Err(Errno::EISDIR);
            }
            let source = match &node.data {
                None => return Ok(Vec::new()),
                Some(Data::Stored(hash)) => Source::Stored(hash.clone()),
                Some(Data::Scratch { file, .. }) => Source::Scratch(file.clone()),
            };
            (source, node.attr.size)
        };
        let read = match source {
            Source::Stored(hash) => {
                let located = read(&self.contents).clone();
                match located.wait() {
                    Ok(contents) => contents.read(&hash, length, offset, size),
                    Err(why) => Err(why.clone()),
                }
            }
            Source::Scratch(file) => {
                let end = length.min(offset.saturating_add(u64::from(size)));
                let mut bytes = vec![0u8; end.saturating_sub(offset) as usize];
                match file.read_exact_at(&mut bytes, offset) {
                    Ok(()) => Ok(bytes),
                    Err(e) => Err(format!("reading its written bytes: {e}")),
                }
            }
        };
        read.map_err(|why| {
            eprintln!("imagelake mount {}: inode {}: {why}", self.image(), ino.0);
            Errno::EIO
        })
    }

    /// Answers an xattr request's size probe (`size` 0), or the bytes if they fit.
    fn xattr_reply(bytes: &[u8], size: u32, reply: ReplyXattr) {
        match size {
            0 => reply.size(bytes.len() as u32),
            n if (n as usize) < bytes.len() => reply.error(Errno::ERANGE),
            _ => reply.data(bytes),
        }
    }
}

impl Filesystem for ImageFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match read(&self.tree).lookup(parent, name) {
            Some((_, node)) => reply.entry(&TTL, &node.attr, Generation(0)),
            // As ext4 answers a name longer than it can hold.
            None if name.len() > 255 => reply.error(Errno::ENAMETOOLONG),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let tree = read(&self.tree);
        match tree.node(ino).map(|n| n.link_target.as_deref()) {
            Some(Some(target)) => reply.data(target.as_bytes()),
            Some(None) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // A read-only mount has nothing to do at open or close: ENOSYS tells the kernel to stop
        // asking (no open, flush or release per file, the pages kept across opens).
        if self.scratch.is_none() {
            return reply.error(Errno::ENOSYS);
        }
        match self.attr(ino) {
            // Content changes only through the kernel, which keeps its pages current: pages
            // read once stay good for every open.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_bytes(ino, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Listings with each entry's attributes in one request (`ls -l`, `find`), and a large
        // read-ahead: a version is read whole more often than not.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // Lookups and listings of one folder at once, and symbolic links' targets kept.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_CACHE_SYMLINKS);
        // Read-ahead of many files in flight at once, as `tar` and `find -exec` go.
        let _ = config.set_max_background(MAX_BACKGROUND);
        if let Err(most) = config.set_max_readahead(READ_AHEAD) {
            let _ = config.set_max_readahead(most);
        }
        Ok(())
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // As for files; the kernel then keeps each folder's listing in its cache too.
        match self.scratch.is_none() {
            true => reply.error(Errno::ENOSYS),
            false => reply.opened(FileHandle(0), FopenFlags::empty()),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let tree = read(&self.tree);
        let entries = match Self::listing(&tree, ino) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        for (at, (name, _, node)) in entries.enumerate().skip(offset as usize) {
            if reply.add(node.attr.ino, at as u64 + 1, node.attr.kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let tree = read(&self.tree);
        let entries = match Self::listing(&tree, ino) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        for (at, (name, number, node)) in entries.enumerate().skip(offset as usize) {
            // The kernel looks up every entry but "." and ".." by this number; those two show
            // it as their inode number, so they show their own, as readdir does.
            let number = if at < 2 { node.attr.ino } else { number };
            if reply.add(number, at as u64 + 1, name, &TTL, &node.attr, Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let tree = read(&self.tree);
        let contents = read(&self.contents).clone();
        let room = contents.get().and_then(|c| c.as_ref().ok()).and_then(|c| c.room);
        match room {
            // The filesystem's own counts, less what a writable mount made since: the blocks
            // of the files it wrote and its new inodes (a commit checks the real room).
            Some(r) => {
                let (written, made) = tree.uncommitted();
                let free = r.free_blocks.saturating_sub(written.div_ceil(u64::from(r.block_size)));
                let available = free.saturating_sub(r.reserved_blocks);
                let free_inodes = r.free_inodes.saturating_sub(made);
                let size = r.block_size;
                reply.statfs(r.blocks, free, available, r.inodes, free_inodes, size, 255, size);
            }
            // Not known (yet, or neither ext nor XFS): the tree's size, nothing free.
            None => reply.statfs(tree.bytes.div_ceil(4096), 0, 0, tree.len() as u64, 0, 4096, 255, 4096),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let tree = read(&self.tree);
        let Some(node) = tree.node(ino) else { return reply.error(Errno::ENOENT) };
        match node.xattrs.iter().find(|(n, _)| OsStr::new(n) == name) {
            Some((_, value)) => Self::xattr_reply(value, size, reply),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let tree = read(&self.tree);
        let Some(node) = tree.node(ino) else { return reply.error(Errno::ENOENT) };
        let mut names = Vec::new();
        for (name, _) in &node.xattrs {
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        Self::xattr_reply(&names, size, reply);
    }

    // A writable mount's requests (`write`); a read-only one answers EROFS.

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = crate::write::Attributes { mode, uid, gid, size, atime, mtime, by: (req.uid(), req.gid()) };
        match self.set_attributes(ino, change) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let Some(kind) = crate::write::kind_of(mode) else { return reply.error(Errno::EINVAL) };
        entry(self.make(req, parent, name, kind, mode & !umask, rdev, None), reply)
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        entry(self.make(req, parent, name, FileType::Directory, mode & !umask, 0, None), reply)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.remove(parent, name, false), reply)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.remove(parent, name, true), reply)
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let Some(target) = target.to_str() else { return reply.error(Errno::EINVAL) };
        entry(self.make(req, parent, link_name, FileType::Symlink, 0o777, 0, Some(target)), reply)
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(self.move_entry(parent, name, newparent, newname, flags), reply)
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        entry(self.hard_link(ino, newparent, newname), reply)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make(req, parent, name, FileType::RegularFile, mode & !umask, 0, None) {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_bytes(ino, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Nothing to do at close: written bytes are in the scratch file, changes journaled.
        reply.error(Errno::ENOSYS);
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        empty(self.sync(ino), reply)
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        empty(self.sync(ino), reply)
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        empty(self.set_xattr(ino, name, Some(value), flags), reply)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(self.set_xattr(ino, name, None, 0), reply)
    }
}

fn entry(made: Result<FileAttr, Errno>, reply: ReplyEntry) {
    match made {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty(done: Result<(), Errno>, reply: ReplyEmpty) {
    match done {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}
