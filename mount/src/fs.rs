//! The FUSE filesystem: requests answered from the tree and the contents, by several threads at
//! once. A version never changes, so the kernel may keep entries, attributes and pages as long
//! as it likes.

use crate::content::Contents;
use crate::tree::{Node, Tree};
use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long the kernel may keep what it was told: the tree never changes under it.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// The read-ahead asked for (the kernel may allow less).
const READ_AHEAD: u32 = 1 << 20;

pub struct ImageFs {
    pub tree: Tree,
    /// Set once the disk map is read, soon after the mount is ready; reads wait for it.
    pub contents: Arc<OnceLock<Result<Contents, String>>>,
    /// `name@version`, for messages.
    pub image: String,
}

impl ImageFs {
    fn node(&self, number: INodeNo) -> Result<&Node, Errno> {
        self.tree.node(number).ok_or(Errno::ENOENT)
    }

    /// The entries of folder `ino` in listing order: "." and ".." (offsets 0 and 1), then its
    /// entries by name; each with its number and node.
    fn listing(&self, ino: INodeNo) -> Result<impl Iterator<Item = (&OsStr, INodeNo, &Node)>, Errno> {
        let folder = self.node(ino)?;
        if folder.attr.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let dots = [(OsStr::new("."), ino), (OsStr::new(".."), folder.parent)];
        let entries = dots.into_iter().chain(folder.entries.iter().map(|(name, number)| (name.as_os_str(), *number)));
        Ok(entries.filter_map(|(name, number)| Some((name, number, self.tree.node(number)?))))
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
        match self.tree.lookup(parent, name) {
            Some((_, node)) => reply.entry(&TTL, &node.attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Ok(node) => reply.attr(&TTL, &node.attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino).map(|n| n.link_target.as_deref()) {
            Ok(Some(target)) => reply.data(target.as_bytes()),
            Ok(None) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            // The content never changes: pages read once stay good for every open.
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
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        if node.attr.kind == FileType::Directory {
            return reply.error(Errno::EISDIR);
        }
        let Some(content) = &node.content else { return reply.data(&[]) };
        let read = match self.contents.wait() {
            Ok(contents) => contents.read(content, node.attr.size, offset, size),
            Err(why) => Err(why.clone()),
        };
        match read {
            Ok(bytes) => reply.data(&bytes),
            Err(why) => {
                eprintln!("imagelake mount {}: inode {}: {why}", self.image, node.attr.ino.0);
                reply.error(Errno::EIO)
            }
        }
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Listings with each entry's attributes in one request (`ls -l`, `find`), and a large
        // read-ahead: a version is read whole more often than not.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        if let Err(most) = config.set_max_readahead(READ_AHEAD) {
            let _ = config.set_max_readahead(most);
        }
        Ok(())
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.listing(ino) {
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
        let entries = match self.listing(ino) {
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
        // A read-only tree: its size, nothing free.
        let blocks = self.tree.bytes.div_ceil(4096);
        reply.statfs(blocks, 0, 0, self.tree.len() as u64, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        match node.xattrs.iter().find(|(n, _)| OsStr::new(n) == name) {
            Some((_, value)) => Self::xattr_reply(value, size, reply),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let mut names = Vec::new();
        for (name, _) in &node.xattrs {
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        Self::xattr_reply(&names, size, reply);
    }
}
