//! The tree of a filesystem as edits and patches decide it: each path's kind, owner,
//! permissions, size, content and link target, read from the catalog's `files` rows.

use crate::catalog::{FileKind, FileRow};
use crate::{Error, Library, Result};
use std::collections::BTreeMap;

/// Owner, permissions (with setuid, setgid and sticky) and modification time of a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

/// An entry of a filesystem tree, as far as an edit decides it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub kind: FileKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub content_hash: Option<String>,
    pub link_target: Option<String>,
    /// Seconds since the epoch: set by an edit, but not part of what makes two entries the
    /// same (a directory's changes with its entries).
    pub mtime: i64,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        (&self.kind, self.mode, self.uid, self.gid, self.size, &self.content_hash, &self.link_target)
            == (&other.kind, other.mode, other.uid, other.gid, other.size, &other.content_hash, &other.link_target)
    }
}

impl Entry {
    /// The same for a patch: a directory by kind, permissions and owners (its size follows its
    /// entries), anything else by everything `==` compares.
    pub(crate) fn same(&self, other: &Entry) -> bool {
        if self.kind == FileKind::Dir && other.kind == FileKind::Dir {
            (self.mode, self.uid, self.gid) == (other.mode, other.uid, other.gid)
        } else {
            self == other
        }
    }

    pub(crate) fn meta(&self) -> Meta {
        Meta { mode: self.mode, uid: self.uid, gid: self.gid, mtime: self.mtime }
    }
}

/// A filesystem tree by path ("/" is the root).
pub(crate) type Tree = BTreeMap<String, Entry>;

/// The tree of file rows, from the catalog or just read from a disk.
pub(crate) fn tree_of<'a>(files: impl Iterator<Item = &'a FileRow>) -> Tree {
    files
        .map(|f| {
            (
                f.path.clone(),
                Entry {
                    kind: f.kind,
                    mode: f.mode as u32,
                    uid: f.uid as u32,
                    gid: f.gid as u32,
                    size: f.size as u64,
                    content_hash: f.content_hash.clone(),
                    link_target: f.link_target.clone(),
                    mtime: f.mtime.div_euclid(1_000_000_000),
                },
            )
        })
        .collect()
}

/// `/a/b/../c` -> `/a/c`; the result is absolute and has no `.`, `..` or empty components.
pub(crate) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `path` with the symbolic links among its components followed in `tree`, as the kernel
/// follows them (the last one too with `last`), as far as the path exists; at most 40 links.
pub(crate) fn follow_links(tree: &Tree, path: &str, last: bool) -> String {
    let mut path = normalize(path);
    'links: for _ in 0..40 {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut at = String::new();
        for (i, part) in parts.iter().enumerate() {
            let parent = if at.is_empty() { "/".to_string() } else { at.clone() };
            at = format!("{at}/{part}");
            match tree.get(&at) {
                Some(e) if e.kind == FileKind::Symlink && (last || i + 1 < parts.len()) => {
                    let target = e.link_target.clone().unwrap_or_default();
                    let rest = parts[i + 1..].join("/");
                    let base = if target.starts_with('/') { target } else { format!("{parent}/{target}") };
                    path = normalize(&format!("{base}/{rest}"));
                    continue 'links;
                }
                Some(_) => {}
                None => break 'links,
            }
        }
        break;
    }
    path
}

impl Library {
    /// The partition (and its first byte on the disk) of the version's root filesystem: the
    /// ext2/3/4 filesystem with an `/etc` directory, or the only ext2/3/4 filesystem.
    pub(crate) async fn root_filesystem(&self, label: &str, image_id: i64) -> Result<(i64, u64, u64)> {
        let etc = self.catalog().files_at(image_id, None, &["/etc".to_string()], &["partition", "kind"]).await?;
        let with_etc: Vec<i64> = etc.iter().filter(|f| f.kind == FileKind::Dir).map(|f| f.partition).collect();
        let ext: Vec<(i64, u64, u64)> = (self.catalog().partitions(image_id).await?.iter())
            .filter(|p| matches!(p.fs_type.as_deref(), Some("ext2" | "ext3" | "ext4")))
            .map(|p| (p.partition, p.start as u64, p.size as u64))
            .collect();
        let roots: Vec<(i64, u64, u64)> = ext.iter().filter(|(p, _, _)| with_etc.contains(p)).copied().collect();
        // The one with /etc; or the only one there is (a data disk).
        match (roots.as_slice(), ext.as_slice()) {
            ([one], _) | ([], [one]) => Ok(*one),
            ([], []) => Err(Error::User(format!("{label} has no ext2/3/4 filesystem to edit"))),
            ([], _) => Err(Error::User(format!(
                "{label} has several ext2/3/4 filesystems and none with /etc; edits need one root"
            ))),
            _ => Err(Error::User(format!("{label} has several ext2/3/4 filesystems with /etc; edits need one root"))),
        }
    }

    /// The tree of one filesystem of a version, from the catalog.
    pub(crate) async fn tree(&self, image_id: i64, partition: i64) -> Result<Tree> {
        let columns = ["path", "kind", "mode", "uid", "gid", "size", "content_hash", "link_target", "mtime"];
        let files = self.catalog().files(image_id, Some(partition), &columns).await?;
        Ok(tree_of(files.iter()))
    }
}
