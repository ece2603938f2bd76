//! A writable mount's commit: the tree as it stands becomes the next version of the image,
//! through the engine's offline edit (`edit_to`: debugfs, `e2fsck -fn`, the tree read back and
//! held against the intended one). Then the mount serves that version: its nodes keep the
//! numbers the kernel knows them by, written files read from the store again, and the scratch
//! files go.

use crate::fs::{ImageFs, Located, read, write};
use crate::journal;
use crate::tree::{Data, Tree, file_kind, nanoseconds};
use fuser::{FileType, INodeNo};
use imagelake_engine::catalog::{FileRow, TREE_COLUMNS};
use imagelake_engine::edit::target::Node;
use imagelake_engine::{EditSummary, Error, IoContext, Library, Result};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

pub struct Committer {
    pub fs: ImageFs,
    pub library: Arc<Library>,
    pub partition: i64,
    /// Where it is mounted, for the provenance row.
    pub dir: String,
}

/// The kernel's `new_decode_dev`.
fn device(rdev: u32) -> (u32, u32) {
    ((rdev >> 8) & 0xfff, (rdev & 0xff) | ((rdev >> 12) & 0xfff00))
}

/// The tree as the edit takes it: each node reached from the root, with its names.
pub fn nodes(tree: &Tree) -> Vec<Node> {
    let mut at: HashMap<INodeNo, usize> = HashMap::new();
    let mut out: Vec<Node> = Vec::new();
    for (path, number) in tree.paths() {
        if let Some(&k) = at.get(&number) {
            out[k].names.push(path);
            continue;
        }
        let Some(n) = tree.node(number) else { continue };
        at.insert(number, out.len());
        let devices = matches!(n.attr.kind, FileType::CharDevice | FileType::BlockDevice);
        out.push(Node {
            inode: n.inode,
            kind: file_kind(n.attr.kind),
            mode: u32::from(n.attr.perm),
            uid: n.attr.uid,
            gid: n.attr.gid,
            mtime: nanoseconds(n.attr.mtime),
            content: match &n.data {
                Some(Data::Scratch { path, .. }) => Some(path.clone()),
                _ => None,
            },
            link_target: n.link_target.clone(),
            device: devices.then(|| device(n.attr.rdev)),
            xattrs: n.xattrs.clone(),
            names: vec![path],
        });
    }
    out
}

impl Committer {
    /// Makes the changes since the last commit the next version; None if there were none.
    /// Requests wait meanwhile: the tree's lock is held throughout, on a thread of its own
    /// (`block_on`), while FUSE's threads, none of them the runtime's, wait for it.
    #[allow(clippy::await_holding_lock)]
    pub async fn commit(&self) -> Result<Option<EditSummary>> {
        if !self.fs.changed.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let mut tree = write(&self.fs.tree);
        let image = read(&self.fs.image).clone();
        let Some(base) = tree.journal.as_ref().map(|j| j.base.clone()) else {
            return Err(Error::User(format!("the mount of {image} on {} is not writable", self.dir)));
        };
        // The provenance row names the journal it commits, so that one is never committed twice.
        let session = (self.fs.scratch.as_ref().and_then(|s| s.file_name())).map(|s| s.to_string_lossy().into_owned());
        let arguments = serde_json::json!({ "mount": self.dir, "session": session, "generation": base.generation });
        let made = self.library.edit_to(&image, self.partition, &nodes(&tree), "mount", arguments).await?;
        self.fs.changed.store(false, Ordering::SeqCst);
        let served = match &made {
            Some(summary) => self.serve(&mut tree, summary).await,
            None => Ok(()),
        };
        // The next changes go to a new journal, on the version now served.
        let next = journal::Base {
            image: read(&self.fs.image).clone(),
            generation: base.generation + 1,
            renumber: tree.renumbered(),
            ..base
        };
        let restarted = served.and_then(|()| {
            let dir = self.fs.scratch.as_ref().expect("a writable mount has a scratch area");
            journal::Journal::start(dir, next).io_context(|| format!("starting a journal in {}", dir.display()))
        });
        match restarted {
            Ok(journal) => tree.journal = Some(journal),
            Err(e) => {
                // The commit is made; changes from here on could not be kept, so none are taken.
                let why = format!("the mount cannot take changes after its last commit: {e}");
                if let Some(journal) = &mut tree.journal {
                    journal.broken(why.clone());
                }
                return Err(Error::User(why));
            }
        }
        Ok(made)
    }

    /// After `summary` is committed: the mount serves it, its nodes keeping their numbers.
    async fn serve(&self, tree: &mut Tree, summary: &EditSummary) -> Result<()> {
        // Where its contents lie first, then its inodes and contents.
        let rows = self.library.catalog().files(summary.image_id, Some(self.partition), &TREE_COLUMNS).await?;
        let located: Located = Arc::new(OnceLock::new());
        let image = format!("{}@{}", summary.name, summary.version);
        crate::Pending::new(&self.library, summary.image_id, &image, self.partition, &rows, &located).read().await;
        if let Some(Err(why)) = located.get() {
            return Err(Error::Catalog(why.clone()));
        }
        let rows: HashMap<&str, &FileRow> = rows.iter().map(|r| (r.path.as_str(), r)).collect();
        for (path, number) in tree.paths() {
            let (Some(row), Some(n)) = (rows.get(path.as_str()), tree.node_mut(number)) else { continue };
            n.inode = Some(row.inode as u64);
            if let Some(Data::Scratch { path, .. }) = &n.data {
                let _ = std::fs::remove_file(path);
                n.data = row.content_hash.clone().map(Data::Stored);
            }
        }
        *write(&self.fs.contents) = located;
        *write(&self.fs.image) = image;
        Ok(())
    }
}
