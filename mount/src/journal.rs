//! A writable mount's journal: each change to the tree, appended to `journal` in its scratch
//! area before the kernel is answered, so that a mount that ends without committing (killed,
//! or its serving process lost) keeps every change it acknowledged. Written files' bytes are
//! in their scratch files already; the journal says which node each belongs to. `fsync` of a
//! file or folder makes the journal and the file durable against the machine going down too.
//!
//! One JSON object per line: first the base (the version the changes are made to, and how its
//! inodes are numbered in the tree), then for each change the entries linked and unlinked and
//! the whole state of each node it touched, so replaying the lines in order onto the base gives
//! the tree. A commit starts a new journal on the version it made. A line cut short by a crash
//! is the last one, and is left out.

use crate::tree::{Data, Node, Tree, file_kind, file_type, nanoseconds, time};
use fuser::{FileAttr, INodeNo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the changes of a journal are made to.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Base {
    /// `name@version`.
    pub image: String,
    pub partition: i64,
    /// How many commits came before this journal: with the scratch area's name, it tells
    /// whether a journal was committed already (the provenance row's `session` and `generation`).
    pub generation: u64,
    /// Nodes of the base version whose number in the tree is not their inode's (a node a
    /// commit gave an inode keeps the number it was made with): (number, inode).
    pub renumber: Vec<(u64, u64)>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Base(Base),
    Link { folder: u64, name: String, node: u64 },
    Unlink { folder: u64, name: String },
    Node(NodeState),
}

/// A node as it stands, but its entries (which links and unlinks carry).
#[derive(Serialize, Deserialize)]
struct NodeState {
    number: u64,
    ino: u64,
    kind: String,
    perm: u16,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u32,
    rdev: u32,
    /// Nanoseconds since the epoch.
    times: [i64; 3],
    link_target: Option<String>,
    xattrs: Vec<(String, Vec<u8>)>,
    /// A stored content's hash, or the name of a scratch file.
    stored: Option<String>,
    scratch: Option<String>,
    parent: u64,
    inode: Option<u64>,
}

pub struct Journal {
    dir: PathBuf,
    file: File,
    pub base: Base,
    /// Links and unlinks since the last write, in order.
    pending: Vec<Record>,
    /// Nodes changed since the last write.
    dirty: BTreeSet<u64>,
    /// Why changes cannot be journaled any more (a commit could not start the next journal).
    broken: Option<String>,
}

impl Journal {
    /// A new journal of changes to `base`, in the scratch area `dir`, in place of any before.
    pub fn start(dir: &Path, base: Base) -> std::io::Result<Journal> {
        let (path, next) = (dir.join("journal"), dir.join("journal.next"));
        let mut line = serde_json::to_string(&Record::Base(base.clone()))?;
        line.push('\n');
        let mut file = File::create(&next)?;
        file.write_all(line.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&next, &path)?;
        File::open(dir)?.sync_all()?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(Journal { dir: dir.to_path_buf(), file, base, pending: Vec::new(), dirty: BTreeSet::new(), broken: None })
    }

    pub fn changed(&mut self, number: INodeNo) {
        self.dirty.insert(number.0);
    }

    pub fn linked(&mut self, folder: INodeNo, name: &std::ffi::OsStr, node: INodeNo) {
        self.pending.push(Record::Link { folder: folder.0, name: name.to_string_lossy().into_owned(), node: node.0 });
    }

    pub fn unlinked(&mut self, folder: INodeNo, name: &std::ffi::OsStr) {
        self.pending.push(Record::Unlink { folder: folder.0, name: name.to_string_lossy().into_owned() });
    }

    pub fn broken(&mut self, why: String) {
        self.broken = Some(why);
    }

    /// Appends the changes since the last write, as one write.
    pub fn write(&mut self, tree: &Tree) -> std::io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(std::io::Error::other(why.clone()));
        }
        if self.pending.is_empty() && self.dirty.is_empty() {
            return Ok(());
        }
        let mut lines = String::new();
        let states = std::mem::take(&mut self.dirty).into_iter().filter_map(|number| {
            let node = tree.node(INodeNo(number))?;
            Some(Record::Node(state(number, node)))
        });
        for record in std::mem::take(&mut self.pending).into_iter().chain(states) {
            lines += &serde_json::to_string(&record)?;
            lines.push('\n');
        }
        self.file.write_all(lines.as_bytes())
    }

    /// Makes what was written durable, with the names of the scratch files it names.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()?;
        File::open(&self.dir)?.sync_all()
    }
}

fn state(number: u64, node: &Node) -> NodeState {
    let a = &node.attr;
    let (stored, scratch) = match &node.data {
        Some(Data::Stored(hash)) => (Some(hash.clone()), None),
        Some(Data::Scratch { path, .. }) => (None, path.file_name().map(|name| name.to_string_lossy().into_owned())),
        None => (None, None),
    };
    NodeState {
        number,
        ino: a.ino.0,
        kind: file_kind(a.kind).as_str().to_string(),
        perm: a.perm,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        nlink: a.nlink,
        rdev: a.rdev,
        times: [nanoseconds(a.atime), nanoseconds(a.mtime), nanoseconds(a.ctime)],
        link_target: node.link_target.clone(),
        xattrs: node.xattrs.clone(),
        stored,
        scratch,
        parent: node.parent.0,
        inode: node.inode,
    }
}

/// A journal as read back: the version its changes are made to, and the changes.
pub struct Changes {
    pub base: Base,
    records: Vec<Record>,
    dir: PathBuf,
}

/// Reads the journal of the scratch area `dir`. A bad line but the last is an error.
pub fn read(dir: &Path) -> Result<Changes, String> {
    let path = dir.join("journal");
    let text = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let mut records = Vec::with_capacity(lines.len());
    for (at, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<Record>(line) {
            Ok(record) => records.push(record),
            // Cut short as the process ended.
            Err(_) if at + 1 == lines.len() && !text.ends_with(b"\n") => break,
            Err(e) => return Err(format!("{}, line {}: {e}", path.display(), at + 1)),
        }
    }
    let mut records = records.into_iter();
    let Some(Record::Base(base)) = records.next() else {
        return Err(format!("{}: does not begin with the version it changes", path.display()));
    };
    Ok(Changes { base, records: records.collect(), dir: dir.to_path_buf() })
}

impl Changes {
    /// Whether there is any change to make.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Makes the changes again in `tree`, the base's tree numbered as its `renumber` says.
    pub fn apply(self, tree: &mut Tree) -> Result<(), String> {
        let path = self.dir.join("journal");
        for record in self.records {
            match record {
                Record::Base(_) => return Err(format!("{}: a second base", path.display())),
                Record::Link { folder, name, node } => tree.link(INodeNo(folder), name.as_ref(), INodeNo(node)),
                Record::Unlink { folder, name } => {
                    tree.unlink(INodeNo(folder), name.as_ref());
                }
                Record::Node(s) => {
                    let node = node(&self.dir, &s).map_err(|why| format!("{}: {why}", path.display()))?;
                    tree.put(INodeNo(s.number), node);
                }
            }
        }
        Ok(())
    }
}

fn node(dir: &Path, s: &NodeState) -> Result<Node, String> {
    let number = s.number;
    let kind = imagelake_engine::catalog::FileKind::parse(&s.kind)
        .ok_or_else(|| format!("node {number}: {:?} is not a kind of file", s.kind))?;
    let data = match (&s.stored, &s.scratch) {
        (Some(hash), _) => Some(Data::Stored(hash.clone())),
        (None, Some(name)) => {
            if Path::new(name).file_name() != Some(name.as_ref()) {
                return Err(format!("node {number}: {name:?} is not a scratch file's name"));
            }
            let path = dir.join(name);
            let file = File::open(&path).map_err(|e| format!("node {number}: {}: {e}", path.display()))?;
            Some(Data::Scratch { path, file: Arc::new(file) })
        }
        (None, None) => None,
    };
    let [atime, mtime, ctime] = s.times.map(time);
    let attr = FileAttr {
        ino: INodeNo(s.ino),
        size: s.size,
        blocks: s.size.div_ceil(512),
        atime,
        mtime,
        ctime,
        crtime: mtime,
        kind: file_type(kind),
        perm: s.perm,
        nlink: s.nlink,
        uid: s.uid,
        gid: s.gid,
        rdev: s.rdev,
        blksize: 4096,
        flags: 0,
    };
    Ok(Node {
        attr,
        link_target: s.link_target.clone(),
        xattrs: s.xattrs.clone(),
        data,
        entries: Vec::new(),
        parent: INodeNo(s.parent),
        inode: s.inode,
    })
}
