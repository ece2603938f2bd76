//! An edit given as the tree it must give, inode by inode (what a writable mount holds), rather
//! than as a list of changes. It is worked out against the parent's inodes. A file renamed or
//! linked keeps its inode and its blocks (debugfs `ln` and `unlink`). A directory moved to
//! another folder is made anew, since debugfs cannot repoint its `..`; its entries move into
//! it. Only what differs is written.

use super::{Plan, Room, quote, type_bits};
use crate::catalog::{FileKind, FileRow, TREE_COLUMNS};
use crate::tree::{Entry, Tree};
use crate::{EditSummary, Error, IoContext, Library, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One inode of the tree an edit must give.
#[derive(Debug, Clone)]
pub struct Node {
    /// The parent version's inode this one is, if it is one.
    pub inode: Option<u64>,
    pub kind: FileKind,
    /// Permissions, with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Nanoseconds since the epoch.
    pub mtime: i64,
    /// A regular file's new content, in a host file; None keeps the parent inode's.
    pub content: Option<PathBuf>,
    pub link_target: Option<String>,
    /// Devices: major and minor.
    pub device: Option<(u32, u32)>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Its names, as absolute paths. A directory has one; the root's is "/".
    pub names: Vec<String>,
}

impl Library {
    /// Makes the next version of the image `spec` names from that version, its root
    /// filesystem made into the tree `nodes`. `arguments` (an object) goes to the provenance
    /// row with the paths that changed added as `changed`. None when the tree is the parent's.
    pub async fn edit_to(
        &self,
        spec: &str,
        partition: i64,
        nodes: &[Node],
        operation: &str,
        mut arguments: serde_json::Value,
    ) -> Result<Option<EditSummary>> {
        let target = self.edit_parent(spec).await?;
        let label = format!("{}@{}", target.image.name, target.image.version);
        if target.partition != partition {
            return Err(not_editable(&label, partition, target.partition));
        }
        let rows = self.catalog().files(target.image.image_id, Some(target.partition), &TREE_COLUMNS).await?;
        let prepared = self.prepare_edit(&target).await?;
        let (plan, changed) = plan(&label, &rows, nodes, prepared.inode_size > 128, &prepared.scratch.dir)?;
        if plan.script.is_empty() {
            return Ok(None);
        }
        if let Some(object) = arguments.as_object_mut() {
            object.insert("changed".into(), serde_json::json!(changed));
        }
        Ok(Some(self.edit_planned(target, prepared, plan, operation, arguments, None).await?))
    }

    /// Refuses edits of `partition` of the version `spec` names unless it is the one edits
    /// change: its root ext2/3/4 filesystem (vfat and the rest cannot be edited yet).
    pub async fn check_editable(&self, spec: &str, partition: i64) -> Result<()> {
        let image = self.resolve(spec).await?;
        let label = format!("{}@{}", image.name, image.version);
        let (root, _, _) = self.root_filesystem(&label, image.image_id).await?;
        if root != partition {
            return Err(not_editable(&label, partition, root));
        }
        Ok(())
    }
}

fn not_editable(label: &str, partition: i64, root: i64) -> Error {
    Error::User(format!(
        "{label}: partition {partition} cannot be edited; edits change the root ext2/3/4 filesystem, partition {root}"
    ))
}

/// "/a/b" -> "/a"; "/a" -> "/".
fn parent_of(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((parent, _)) => parent,
    }
}

/// "/a/b" -> "b".
fn name_of(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

fn device_of(row: &FileRow) -> Option<(u32, u32)> {
    Some((u32::try_from(row.dev_major?).ok()?, u32::try_from(row.dev_minor?).ok()?))
}

/// The debugfs script that makes the parent's filesystem (`rows`) into `nodes`, and the paths
/// whose entries it adds, removes or changes. `nanoseconds`: inodes keep them. Values of
/// extended attributes go to files in `work`.
pub(crate) fn plan<'a>(
    label: &str,
    rows: &'a [FileRow],
    nodes: &'a [Node],
    nanoseconds: bool,
    work: &Path,
) -> Result<(Plan, Vec<String>)> {
    let refuse = |path: &str, why: &str| Error::User(format!("{label}: {path}: {why}"));
    // The parent's inodes, each with its row and its names; and the inode at each path.
    let mut base: BTreeMap<u64, (&FileRow, Vec<&str>)> = BTreeMap::new();
    let mut base_at: HashMap<&str, u64> = HashMap::new();
    for row in rows {
        let inode = row.inode as u64;
        base.entry(inode).or_insert((row, Vec::new())).1.push(&row.path);
        base_at.insert(&row.path, inode);
    }
    // The node at each path of the intended tree.
    let mut at: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, node) in nodes.iter().enumerate() {
        if node.kind == FileKind::Dir && node.names.len() != 1 {
            return Err(refuse(node.names.first().map_or("?", |n| n), "a directory has one name"));
        }
        for name in &node.names {
            quote(name)?;
            if !name.starts_with('/') || at.insert(name, k).is_some() {
                return Err(refuse(name, "named twice, or not an absolute path"));
            }
        }
    }
    for &name in at.keys().filter(|n| **n != "/") {
        if at.get(parent_of(name)).is_none_or(|&p| nodes[p].kind != FileKind::Dir) {
            return Err(refuse(name, "its parent is not a directory of the tree"));
        }
    }

    // The parent's inodes that stay: the same kind, content, target and device, and for a
    // directory the same folder (it is kept only under a kept parent: parents come first).
    let mut kept: HashMap<u64, usize> = HashMap::new();
    for (&name, &k) in &at {
        let node = &nodes[k];
        let Some((inode, (row, names))) = node.inode.and_then(|i| Some((i, base.get(&i)?))) else { continue };
        if row.kind != node.kind || kept.contains_key(&inode) {
            continue;
        }
        let same = match node.kind {
            FileKind::File => node.content.is_none(),
            FileKind::Symlink => node.link_target == row.link_target,
            FileKind::Char | FileKind::Block => node.device == device_of(row),
            FileKind::Dir if name == "/" => true,
            FileKind::Dir => {
                let was_under = base_at.get(parent_of(names[0])).and_then(|d| kept.get(d));
                was_under.is_some() && was_under == at.get(parent_of(name))
            }
            FileKind::Fifo | FileKind::Socket => true,
        };
        if same {
            kept.insert(inode, k);
        }
    }
    if base_at.get("/").is_none_or(|root| kept.get(root) != at.get("/")) {
        return Err(refuse("/", "the root must stay the parent's root directory"));
    }
    let kept_as = |k: usize| nodes[k].inode.filter(|i| kept.get(i) == Some(&k));
    // The entries of both trees, by folder and name.
    let base_entries: HashMap<(u64, &str), u64> = base_at
        .iter()
        .filter(|(p, _)| **p != "/")
        .filter_map(|(p, i)| Some(((*base_at.get(parent_of(p))?, name_of(p)), *i)))
        .collect();
    let entries: HashMap<(usize, &str), usize> =
        at.iter().filter(|(p, _)| **p != "/").map(|(p, k)| ((at[parent_of(p)], name_of(p)), *k)).collect();
    // An entry stays where a kept folder has it in both trees, for the same kept inode.
    let base_entry_stays = |path: &str, inode: u64| {
        path == "/"
            || base_at.get(parent_of(path)).and_then(|d| kept.get(d)).is_some_and(|folder| {
                kept.get(&inode).is_some_and(|k| entries.get(&(*folder, name_of(path))) == Some(k))
            })
    };
    let entry_stays = |path: &str, k: usize| {
        path == "/"
            || kept_as(at[parent_of(path)]).is_some_and(|folder| {
                kept_as(k).is_some_and(|i| base_entries.get(&(folder, name_of(path))) == Some(&i))
            })
    };

    let mut script = String::new();
    let mut need = Room::default();
    let mut changed = BTreeSet::new();
    // Folders (of the intended tree) an entry was added to or removed from: their times and
    // link counts are set.
    let mut touched = BTreeSet::new();

    // Names that go, deepest first; a directory that goes with its last entry gone.
    let mut paths: Vec<(&str, u64)> = base_at.iter().map(|(p, i)| (*p, *i)).collect();
    paths.sort_unstable_by(|a, b| b.0.cmp(a.0));
    for (path, inode) in paths {
        if base_entry_stays(path, inode) {
            continue;
        }
        let (row, _) = base[&inode];
        let verb = if row.kind == FileKind::Dir && !kept.contains_key(&inode) { "rmdir" } else { "unlink" };
        let _ = writeln!(script, "{verb} {}", quote(path)?);
        changed.insert(path.to_string());
        if let Some(&folder) = base_at.get(parent_of(path)).and_then(|d| kept.get(d)) {
            touched.insert(folder);
        }
    }
    // Inodes that go, once their last name is gone (rmdir freed the directories).
    for (&inode, (row, _)) in &base {
        if !kept.contains_key(&inode) && row.kind != FileKind::Dir {
            let _ = writeln!(script, "kill_file <{inode}>");
            need.kib -= (row.size.max(0) as u64).div_ceil(4096) as i64 * 4;
            need.inodes -= 1;
        }
    }

    // Names that come, parents first: a kept inode linked, a new one made at its first name.
    let mut first: HashMap<usize, &str> = HashMap::new();
    let mut sockets = Vec::new();
    for (&path, &k) in &at {
        let node = &nodes[k];
        let q = quote(path)?;
        if entry_stays(path, k) {
            continue;
        }
        if let Some(inode) = kept_as(k) {
            let _ = writeln!(script, "ln <{inode}> {q}");
        } else if let Some(earlier) = first.get(&k) {
            let _ = writeln!(script, "ln {} {q}", quote(earlier)?);
        } else {
            make(&mut script, path, node, &mut sockets).map_err(|why| refuse(path, why))?;
            first.insert(k, path);
            need.inodes += 1;
            need.kib += 4;
        }
        changed.insert(path.to_string());
        touched.insert(at[parent_of(path)]);
    }
    // A socket is made as a FIFO (debugfs' mknod makes no socket), then takes a socket's mode
    // and a directory entry of a socket's type, which `ln` takes from the mode.
    for (path, node) in sockets {
        let (q, aside) = (quote(path)?, quote(&format!("{path}.imagelake-socket"))?);
        if at.contains_key(format!("{path}.imagelake-socket").as_str()) {
            return Err(refuse(path, "a socket beside a name ending in .imagelake-socket"));
        }
        let _ = writeln!(script, "sif {q} mode 0{:o}", type_bits(FileKind::Socket) | node.mode);
        let _ = writeln!(script, "ln {q} {aside}\nunlink {q}\nln {aside} {q}\nunlink {aside}");
    }

    // Each inode's permissions, owners, time, link count and extended attributes, where they
    // differ (a new inode: all of them).
    let mut subdirs: HashMap<usize, u64> = HashMap::new();
    for (&path, &k) in &at {
        if path != "/" && nodes[k].kind == FileKind::Dir {
            *subdirs.entry(at[parent_of(path)]).or_default() += 1;
        }
    }
    let mut values = 0;
    let mut tree = Tree::new();
    let mut hashed: HashMap<usize, (u64, String)> = HashMap::new();
    for (&path, &k) in &at {
        let node = &nodes[k];
        let was = kept_as(k).map(|inode| base[&inode].0);
        let (size, hash) = match (&node.content, was) {
            (Some(host), _) if node.kind == FileKind::File => match hashed.get(&k) {
                Some(known) => known.clone(),
                None => {
                    let (size, hash) = super::hash_file(host)?;
                    hashed.insert(k, (size, hash.clone()));
                    need.kib += size.div_ceil(4096) as i64 * 4;
                    (size, hash)
                }
            },
            _ if node.kind == FileKind::Symlink => {
                (node.link_target.as_deref().map_or(0, |t| t.len() as u64), String::new())
            }
            (_, Some(row)) => (row.size.max(0) as u64, row.content_hash.clone().unwrap_or_default()),
            _ => (0, String::new()),
        };
        tree.insert(
            path.to_string(),
            Entry {
                kind: node.kind,
                mode: node.mode,
                uid: node.uid,
                gid: node.gid,
                size,
                content_hash: Some(hash).filter(|h| !h.is_empty()),
                link_target: node.link_target.clone(),
                mtime: node.mtime.div_euclid(1_000_000_000),
            },
        );
        if first.get(&k).is_some_and(|p| *p != path) || (was.is_some() && node.names[0] != path) {
            continue; // an inode's settings are made once, at its first name
        }
        let at_path = match was {
            Some(row) => format!("<{}>", row.inode),
            None => quote(path)?,
        };
        let mut differs = false;
        let mut set = |field: &str, value: String| {
            differs = true;
            let _ = writeln!(script, "sif {at_path} {field} {value}");
        };
        let mode = type_bits(node.kind) | node.mode;
        let links = if node.kind == FileKind::Dir {
            2 + subdirs.get(&k).copied().unwrap_or(0)
        } else {
            node.names.len() as u64
        };
        let in_touched = touched.contains(&k);
        // A new socket's mode is set as it is made.
        let new_socket = was.is_none() && node.kind == FileKind::Socket;
        if was.is_none_or(|r| r.mode as u32 != node.mode) && !new_socket {
            set("mode", format!("0{mode:o}"));
        }
        if was.is_none_or(|r| r.uid as u32 != node.uid) {
            set("uid", node.uid.to_string());
        }
        if was.is_none_or(|r| r.gid as u32 != node.gid) {
            set("gid", node.gid.to_string());
        }
        if was.is_none_or(|r| r.mtime != node.mtime) || in_touched {
            let (seconds, ns) = (node.mtime.div_euclid(1_000_000_000), node.mtime.rem_euclid(1_000_000_000));
            set("mtime", format!("@{seconds}"));
            if nanoseconds {
                // ext4 keeps the nanoseconds above two bits of the epoch (past 2038).
                let epoch = ((seconds - i64::from(seconds as i32)) >> 32) & 3;
                set("mtime_extra", ((ns << 2) | epoch).to_string());
            }
        }
        // debugfs' ln and unlink leave counts alone; its mkdir and rmdir change the folder's.
        if was.is_none_or(|r| r.nlink as u64 != links) || in_touched {
            set("links_count", links.to_string());
        }
        let before: &[(String, Vec<u8>)] = was.map_or(&[], |r| &r.xattrs);
        for (name, _) in before.iter().filter(|(n, _)| !node.xattrs.iter().any(|(m, _)| m == n)) {
            differs = true;
            let _ = writeln!(script, "ea_rm {at_path} {}", quote(name)?);
        }
        for (name, value) in &node.xattrs {
            if before.iter().any(|(n, v)| n == name && v == value) {
                continue;
            }
            differs = true;
            values += 1;
            let file = work.join(format!("xattr-{values}"));
            std::fs::write(&file, value).io_context(|| format!("writing {}", file.display()))?;
            let file = file.to_str().ok_or_else(|| refuse(path, "the scratch path is not UTF-8"))?;
            let _ = writeln!(script, "ea_set -f {} {at_path} {}", quote(file)?, quote(name)?);
        }
        if differs {
            changed.insert(path.to_string());
        }
    }
    let changed: Vec<String> = changed.into_iter().collect();
    let plan = Plan { script, tree, sources: HashMap::new(), need, entries_changed: changed.len() };
    Ok((plan, changed))
}

/// The commands that make the new inode `node` at `path`, its first name.
fn make<'a>(
    script: &mut String,
    path: &'a str,
    node: &'a Node,
    sockets: &mut Vec<(&'a str, &'a Node)>,
) -> std::result::Result<(), &'static str> {
    let q = quote(path).map_err(|_| "a name debugfs cannot take")?;
    let folder = quote(parent_of(path)).map_err(|_| "a name debugfs cannot take")?;
    let name = name_of(path);
    // debugfs' mknod takes a name in its current folder, not a path.
    let mknod = |script: &mut String, how: String| {
        let _ = writeln!(script, "cd {folder}\nmknod \"{name}\" {how}\ncd /");
    };
    match node.kind {
        FileKind::Dir => {
            let _ = writeln!(script, "mkdir {q}");
        }
        FileKind::File => {
            let host = node.content.as_deref().ok_or("a new file without content")?;
            let host = quote(host.to_str().ok_or("a host file whose name is not UTF-8")?)
                .map_err(|_| "a host file debugfs cannot take")?;
            let _ = writeln!(script, "write {host} {q}");
        }
        FileKind::Symlink => {
            let target = node.link_target.as_deref().ok_or("a symbolic link without a target")?;
            let target = quote(target).map_err(|_| "a link target debugfs cannot take")?;
            let _ = writeln!(script, "symlink {q} {target}");
        }
        FileKind::Fifo => mknod(script, "p".into()),
        FileKind::Socket => {
            mknod(script, "p".into());
            sockets.push((path, node));
        }
        FileKind::Char | FileKind::Block => {
            let (major, minor) = node.device.ok_or("a device without a number")?;
            let letter = if node.kind == FileKind::Char { 'c' } else { 'b' };
            mknod(script, format!("{letter} {major} {minor}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parent row: `path` of `kind` at `inode`, root's, 0755, time 0.
    fn row(path: &str, kind: FileKind, inode: i64, nlink: i64) -> FileRow {
        FileRow {
            image_id: 1,
            partition: 1,
            path: path.into(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 3,
            mtime: 0,
            inode,
            nlink,
            link_target: None,
            dev_major: None,
            dev_minor: None,
            xattrs: Vec::new(),
            content_hash: (kind == FileKind::File).then(|| format!("hash-{inode}")),
            extent_map: Vec::new(),
        }
    }

    /// The node a row is, under `names`.
    fn node(row: &FileRow, names: &[&str]) -> Node {
        Node {
            inode: Some(row.inode as u64),
            kind: row.kind,
            mode: row.mode as u32,
            uid: 0,
            gid: 0,
            mtime: 0,
            content: None,
            link_target: None,
            device: None,
            xattrs: Vec::new(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn script(rows: &[FileRow], nodes: &[Node]) -> String {
        let work = tempfile::tempdir().unwrap();
        let (plan, _) = plan("t@1", rows, nodes, true, work.path()).unwrap();
        plan.script
    }

    fn parent() -> Vec<FileRow> {
        vec![
            row("/", FileKind::Dir, 2, 4),
            row("/a", FileKind::Dir, 12, 3),
            row("/a/sub", FileKind::Dir, 13, 2),
            row("/a/sub/f", FileKind::File, 14, 1),
            row("/b", FileKind::Dir, 15, 2),
        ]
    }

    #[test]
    fn the_same_tree_is_no_edit() {
        let rows = parent();
        let nodes: Vec<Node> = rows.iter().map(|r| node(r, &[&r.path])).collect();
        assert_eq!(script(&rows, &nodes), "");
    }

    #[test]
    fn a_file_renamed_and_linked_keeps_its_inode() {
        let rows = parent();
        let nodes = vec![
            node(&rows[0], &["/"]),
            node(&rows[1], &["/a"]),
            node(&rows[2], &["/a/sub"]),
            node(&rows[3], &["/a/sub/g", "/b/h"]),
            node(&rows[4], &["/b"]),
        ];
        assert_eq!(
            script(&rows, &nodes),
            "unlink \"/a/sub/f\"\nln <14> \"/a/sub/g\"\nln <14> \"/b/h\"\n\
             sif <13> mtime @0\nsif <13> mtime_extra 0\nsif <13> links_count 2\nsif <14> links_count 2\n\
             sif <15> mtime @0\nsif <15> mtime_extra 0\nsif <15> links_count 2\n"
        );
    }

    #[test]
    fn a_folder_renamed_in_place_keeps_its_inode_and_one_moved_elsewhere_is_made_anew() {
        let rows = parent();
        // /a/sub renamed /a/top: the same folder, so the inode stays with its entries.
        let renamed = vec![
            node(&rows[0], &["/"]),
            node(&rows[1], &["/a"]),
            node(&rows[2], &["/a/top"]),
            node(&rows[3], &["/a/top/f"]),
            node(&rows[4], &["/b"]),
        ];
        assert_eq!(
            script(&rows, &renamed),
            "unlink \"/a/sub\"\nln <13> \"/a/top\"\nsif <12> mtime @0\nsif <12> mtime_extra 0\nsif <12> links_count 3\n"
        );
        // /a/sub moved to /b/sub: made anew (its `..` must change); its file moves into it.
        let moved = vec![
            node(&rows[0], &["/"]),
            node(&rows[1], &["/a"]),
            node(&rows[2], &["/b/sub"]),
            node(&rows[3], &["/b/sub/f"]),
            node(&rows[4], &["/b"]),
        ];
        let got = script(&rows, &moved);
        assert!(
            got.starts_with("unlink \"/a/sub/f\"\nrmdir \"/a/sub\"\nmkdir \"/b/sub\"\nln <14> \"/b/sub/f\"\n"),
            "{got}"
        );
        assert!(got.contains("sif <12> links_count 2\n") && got.contains("sif <15> links_count 3\n"), "{got}");
    }

    #[test]
    fn a_removed_file_is_freed_and_the_root_must_stay() {
        let rows = parent();
        let nodes =
            vec![node(&rows[0], &["/"]), node(&rows[1], &["/a"]), node(&rows[2], &["/a/sub"]), node(&rows[4], &["/b"])];
        assert!(script(&rows, &nodes).starts_with("unlink \"/a/sub/f\"\nkill_file <14>\n"));
        let mut rootless = nodes.clone();
        rootless[0].inode = Some(99);
        let work = tempfile::tempdir().unwrap();
        let refused = plan("t@1", &rows, &rootless, true, work.path()).err().unwrap();
        assert!(refused.to_string().contains("the root must stay"), "{refused}");
    }
}
