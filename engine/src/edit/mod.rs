//! Offline edits: a new version of an image, made from one of its versions by changing files
//! of its root filesystem, without booting or mounting anything.
//!
//! The route (Mirage's "hybrid" one): the parent version's root filesystem is written to a
//! scratch file that holds only its metadata (file contents stay in the store: debugfs and
//! e2fsck never read them); e2fsprogs' `debugfs` makes every change in place, in one run,
//! through libext2fs, so that unchanged files stay where they were, and names in its undo file
//! every block it wrote; `e2fsck -fn` must find the result clean; and the new version is the
//! parent's disk with those blocks replaced (`checkin/edited.rs`), committed only when the
//! tree read back equals the tree intended, entry by entry. No root is needed: everything
//! works on a file the library owns.
//!
//! Not enough free blocks or inodes is found before anything is written, from the
//! superblock's counts.

pub mod target;

use crate::catalog::FileRow;
use crate::catalog::{ExtentKind, ExtentRow, FileKind, ImageState};
use crate::library::Origin;
use crate::locks::Scratch;
pub use crate::tree::Meta;
use crate::tree::{Entry, Tree, follow_links, normalize, tree_of};
use crate::{Error, IoContext, Library, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One change to a filesystem; paths are absolute.
#[derive(Debug, Clone)]
pub enum Change {
    /// A regular file with the content of the host file `source`, made or replaced.
    Write { path: String, source: PathBuf, meta: Meta },
    /// A directory, made; one already there only takes `meta`.
    Mkdir { path: String, meta: Meta },
    /// A symbolic link, made or replacing a non-directory.
    Symlink { path: String, target: String, meta: Meta },
    /// An entry removed; a directory with everything under it.
    Remove { path: String },
    /// New permissions or owners of an entry.
    SetMeta { path: String, mode: Option<u32>, uid: Option<u32>, gid: Option<u32> },
}

/// What an edit made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EditSummary {
    pub image_id: i64,
    pub name: String,
    pub version: i64,
    /// The version it was made from, as `name@version`.
    pub parent: String,
    pub operation: String,
    /// Entries made, replaced, removed or changed.
    pub entries_changed: usize,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// The version an edit starts from: its row, its root filesystem (partition, and where it
/// lies on the disk), that filesystem's tree and the disk map, read once.
pub(crate) struct Parent {
    pub image: crate::catalog::ImageRow,
    pub partition: i64,
    /// The filesystem's first byte on the disk, and its size.
    pub start: u64,
    pub size: u64,
    pub tree: Tree,
    /// Its disk map, with contents.
    pub extents: Vec<ExtentRow>,
}

/// The half of an edit that needs only its target, done while a patch fetches what it
/// writes: the filesystem's metadata in a scratch file (the parent's raw extents there; file
/// contents stay holes, which debugfs and e2fsck never read), fingerprinted, found clean, and
/// its free room read.
pub(crate) struct Prepared {
    started: Instant,
    scratch: Scratch,
    file: File,
    before: crate::written::Fingerprint,
    free: Room,
    /// Bytes per inode: above 128, an inode keeps nanoseconds of its times.
    inode_size: u32,
    /// The new version reuses the parent's chunks: gc waits until it is committed; and no
    /// pack is deleted while they are read (the checkin takes its own guard).
    writing: crate::locks::Held,
    reading: crate::locks::ReadGuard,
}

impl Library {
    /// Makes the next version of the image `spec` names from that version with `changes`
    /// applied to its root filesystem; `operation` and `arguments` go to its provenance row.
    pub async fn edit(
        &self,
        spec: &str,
        changes: &[Change],
        operation: &str,
        arguments: serde_json::Value,
    ) -> Result<EditSummary> {
        let target = self.edit_parent(spec).await?;
        let prepared = self.prepare_edit(&target).await?;
        self.edit_with(target, prepared, changes, operation, arguments, None).await
    }

    /// The version `spec` names, ready to be edited.
    pub(crate) async fn edit_parent(&self, spec: &str) -> Result<Parent> {
        let image = self.resolve(spec).await?;
        let label = format!("{}@{}", image.name, image.version);
        if image.state == ImageState::Synthetic {
            return Err(Error::User(format!("{label} is synthetic (manifests only): it has no disk to edit")));
        }
        let (partition, start, size) = self.root_filesystem(&label, image.image_id).await?;
        let (tree, extents) =
            tokio::try_join!(self.tree(image.image_id, partition), self.catalog().disk_map(image.image_id, true))?;
        Ok(Parent { image, partition, start, size, tree, extents })
    }

    /// The half of an edit that needs only `target` (see [`Prepared`]).
    pub(crate) async fn prepare_edit(&self, target: &Parent) -> Result<Prepared> {
        let started = Instant::now();
        let where_ = where_as(&format!("{}@{}", target.image.name, target.image.version), target.partition);
        let (writing, reading) = (self.writing().await?, self.reading()?);
        let scratch = Scratch::new(self.tmp(), "edit")?;
        let metadata = self.write_metadata(&target.extents, target.start, target.size, &scratch.path).await?;
        let device = scratch.path.clone();
        let (file, before, free, inode_size) = tokio::task::spawn_blocking(move || -> Result<_> {
            let file = File::open(&device).io_context(|| format!("opening {}", device.display()))?;
            let before = crate::written::Fingerprint::take(&file, metadata)?;
            let device = device.to_string_lossy();
            check_clean(&where_, &device, "the filesystem to edit")?;
            let (free, inode_size) = free_room(&where_, &device)?;
            Ok((file, before, free, inode_size))
        })
        .await
        .map_err(crate::task_failed("preparing the edit"))??;
        crate::trace::phase("edit: metadata in a scratch file, found clean");
        Ok(Prepared { started, scratch, file, before, free, inode_size, writing, reading })
    }

    /// `edit` from a target already read and prepared, and with `rebuild_ld_cache`
    /// `/etc/ld.so.cache` made anew by ldconfig from the libraries of the result (a patch whose
    /// two sides both installed libraries); it names a folder for the parent's contents by
    /// hash, where some may be already.
    pub(crate) async fn edit_with(
        &self,
        target: Parent,
        prepared: Prepared,
        changes: &[Change],
        operation: &str,
        arguments: serde_json::Value,
        rebuild_ld_cache: Option<&Path>,
    ) -> Result<EditSummary> {
        let plan = plan(&format!("{}@{}", target.image.name, target.image.version), &target.tree, changes)?;
        self.edit_planned(target, prepared, plan, operation, arguments, rebuild_ld_cache).await
    }

    /// `edit_with` with the changes already worked out into `plan`.
    pub(crate) async fn edit_planned(
        &self,
        target: Parent,
        prepared: Prepared,
        plan: Plan,
        operation: &str,
        arguments: serde_json::Value,
        rebuild_ld_cache: Option<&Path>,
    ) -> Result<EditSummary> {
        let Parent { image: parent, partition, start, size, tree: _, extents } = target;
        let label = format!("{}@{}", parent.name, parent.version);
        let Plan { script, tree: mut expected, sources, need, entries_changed } = plan;
        let where_ = where_as(&label, partition);
        let Prepared { started, scratch, file, before: fingerprint, free, writing, reading, .. } = prepared;
        check_room(&where_, free, need)?;
        // ldconfig's inputs come from the store while debugfs makes the changes.
        let ld_cache = async {
            let Some(stored) = rebuild_ld_cache else { return Ok::<_, Error>(None) };
            let contents = crate::derived::Contents {
                library: self,
                parent: parent.image_id,
                extents: &extents,
                sources: &sources,
                stored,
            };
            let cache = crate::derived::rebuild_ld_cache(&where_, &expected, &contents, &scratch.dir).await?;
            crate::trace::phase("edit: ld.so.cache rebuilt");
            Ok(Some(cache))
        };
        let (device, work, at) = (scratch.path.to_string_lossy().into_owned(), scratch.dir.clone(), where_.clone());
        let changes = tokio::task::spawn_blocking(move || -> Result<_> {
            let written = run_debugfs(&at, &device, &work, 0, script, "make the changes")?;
            crate::trace::phase("edit: changes made by debugfs");
            Ok((device, written))
        });
        let facts = self.parent_facts(parent.image_id, &extents, start, start + size);
        let (ld_cache, changes, known, facts) = tokio::join!(ld_cache, changes, self.catalog().chunk_hashes(), facts);
        let failed = |e: tokio::task::JoinError| crate::task_failed(format!("{label}: the edit"))(e);
        let (device, mut written) = changes.map_err(failed)??;
        let (ld_cache, known, facts, work, at) = (ld_cache?, known?, facts?, scratch.dir.clone(), where_.clone());
        let (expected, written, device) = tokio::task::spawn_blocking(move || -> Result<_> {
            if let Some(cache) = ld_cache {
                let (size, hash) = hash_file(&cache)?;
                let meta = expected.get(crate::derived::LD_CACHE).map_or(
                    Meta { mode: 0o644, uid: 0, gid: 0, mtime: now_seconds() },
                    |e| Meta { mtime: now_seconds(), ..e.meta() },
                );
                let path = crate::derived::LD_CACHE;
                let mut script = String::new();
                if expected.contains_key(path) {
                    let _ = writeln!(script, "rm {}", quote(path)?);
                }
                let cache_path = cache.to_str().ok_or_else(|| Error::User("the scratch path is not UTF-8".into()))?;
                let _ = writeln!(script, "write {} {}", quote(cache_path)?, quote(path)?);
                set_meta(&mut script, path, FileKind::File, &meta)?;
                written.extend(run_debugfs(&at, &device, &work, 1, script, "write the rebuilt /etc/ld.so.cache")?);
                expected.insert(path.to_string(), file_entry(FileKind::File, &meta, size, Some(hash), None));
            }
            let written = crate::ranges::merged(written);
            // A key past the filesystem's end cannot name a block debugfs wrote into it.
            if let Some(&(_, end)) = written.last().filter(|r| r.1 > size) {
                return Err(Error::Image {
                    image: at,
                    message: format!(
                        "debugfs's undo file names bytes up to {end}, past the filesystem's end ({size}); nothing was committed"
                    ),
                });
            }
            Ok((expected, written, device))
        })
        .await
        .map_err(failed)??;
        // The result is checked while the checkin reads it.
        let (at, in_filesystem) = (where_.clone(), written.clone());
        let checks = tokio::task::spawn_blocking(move || -> Result<()> {
            check_clean(&at, &device, "the edited filesystem")?;
            fingerprint.check(&at, &file, &in_filesystem)?;
            crate::trace::phase("edit: result checked (e2fsck, undo keys)");
            Ok(())
        });
        // On the disk, the filesystem lies at `start`.
        let written = written.into_iter().map(|(a, b)| (start + a, start + b)).collect();

        let origin = Origin { operation: operation.to_string(), arguments, parent: Some(parent.image_id) };
        let accept = move |files: &[FileRow]| -> Result<()> {
            let got = tree_of(files.iter().filter(|f| f.partition == partition));
            compare(&where_, &expected, &got)
        };
        drop(reading);
        let s = self
            .checkin_edited(
                &parent,
                extents,
                facts,
                &scratch.path,
                start,
                written,
                known,
                checks,
                writing,
                origin,
                accept,
            )
            .await?;
        Ok(EditSummary {
            image_id: s.image_id,
            name: s.name,
            version: s.version,
            parent: format!("{}@{}", parent.name, parent.version),
            operation: operation.to_string(),
            entries_changed,
            bytes_new: s.bytes_new,
            bytes_stored: s.bytes_stored,
            warnings: s.warnings,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// `replace_content(image, path, host_file)`: the file at `path` takes the content of
    /// `host_file`, keeping its owner and permissions (a new file is root's, 0644).
    pub async fn replace_content(&self, spec: &str, path: &str, host_file: &Path) -> Result<EditSummary> {
        let target = self.edit_parent(spec).await?;
        // Through links, as writing to the path would.
        let path = follow_links(&target.tree, &absolute(path)?, true);
        let meta = match target.tree.get(&path) {
            Some(e) if e.kind == FileKind::File => Meta { mode: e.mode, uid: e.uid, gid: e.gid, mtime: now_seconds() },
            Some(e) => return Err(Error::User(format!("{spec}: {path} is a {}, not a regular file", e.kind))),
            None => Meta { mode: 0o644, uid: 0, gid: 0, mtime: now_seconds() },
        };
        let source = std::path::absolute(host_file).io_context(|| format!("finding {}", host_file.display()))?;
        let arguments = serde_json::json!({ "path": path, "host_file": source.display().to_string() });
        let prepared = self.prepare_edit(&target).await?;
        self.edit_with(target, prepared, &[Change::Write { path, source, meta }], "replace_content", arguments, None)
            .await
    }

    /// `import(image, host_dir, target_dir)`: copies the tree of `host_dir` into `target_dir`
    /// (made, with its missing parents, when absent), as root's, with the host's permissions
    /// and times. Files already there are replaced; directories already there are kept.
    pub async fn import(&self, spec: &str, host_dir: &Path, target_dir: &str) -> Result<EditSummary> {
        let edited = self.edit_parent(spec).await?;
        let tree = &edited.tree;
        let target = follow_links(tree, &absolute(target_dir)?, true);
        let mut changes = Vec::new();
        // Missing ancestors of the target, made as `mkdir -p` makes them.
        let dir_meta = Meta { mode: 0o755, uid: 0, gid: 0, mtime: now_seconds() };
        let mut at = String::new();
        for part in target.split('/').filter(|p| !p.is_empty()) {
            at = format!("{at}/{part}");
            if !tree.contains_key(&at) {
                changes.push(Change::Mkdir { path: at.clone(), meta: dir_meta });
            }
        }
        let host_dir = &std::path::absolute(host_dir).io_context(|| format!("finding {}", host_dir.display()))?;
        let host = host_dir.display().to_string();
        if !host_dir.is_dir() {
            return Err(Error::User(format!("import: {host} is not a directory")));
        }
        walk(host_dir, &target, tree, &mut changes)?;
        let arguments = serde_json::json!({ "host_dir": host, "target_dir": target });
        let prepared = self.prepare_edit(&edited).await?;
        self.edit_with(edited, prepared, &changes, "import", arguments, None).await
    }

    /// `remove(image, path)`: removes a file, link or device, or a directory with everything
    /// under it.
    pub async fn remove(&self, spec: &str, path: &str) -> Result<EditSummary> {
        let path = absolute(path)?;
        let arguments = serde_json::json!({ "path": path });
        self.edit(spec, &[Change::Remove { path }], "remove", arguments).await
    }

    /// `set_meta(image, path, mode, uid, gid)`: new permissions and owners (None keeps one).
    pub async fn set_meta(
        &self,
        spec: &str,
        path: &str,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<EditSummary> {
        let path = absolute(path)?;
        if let Some(m) = mode.filter(|m| *m > 0o7777) {
            return Err(Error::User(format!("set_meta: mode {m:o} has bits beyond permissions (at most 7777)")));
        }
        let arguments =
            serde_json::json!({ "path": path, "mode": mode.map(|m| format!("{m:o}")), "uid": uid, "gid": gid });
        self.edit(spec, &[Change::SetMeta { path, mode, uid, gid }], "set_meta", arguments).await
    }

    /// Writes into a new sparse file at `path` the filesystem at disk bytes `[start, start +
    /// size)` as far as the parent's disk map `extents` has raw bytes there (its metadata);
    /// file contents and zeros stay holes. Returns the ranges written, in the file.
    async fn write_metadata(
        &self,
        extents: &[ExtentRow],
        start: u64,
        size: u64,
        path: &Path,
    ) -> Result<Vec<(u64, u64)>> {
        let end = start + size;
        let raw: Vec<ExtentRow> = extents
            .iter()
            .filter(|e| e.kind == ExtentKind::Raw)
            .filter(|e| (e.disk_offset as u64) < end && (e.disk_offset + e.length) as u64 > start)
            .map(|e| {
                let (from, to) = ((e.disk_offset as u64).max(start), ((e.disk_offset + e.length) as u64).min(end));
                ExtentRow {
                    disk_offset: (from - start) as i64,
                    length: (to - from) as i64,
                    chunk_offset: e.chunk_offset + (from - e.disk_offset as u64) as i64,
                    ..e.clone()
                }
            })
            .collect();
        let hashes: Vec<_> =
            raw.iter().filter_map(|e| e.chunk_hash.as_deref().and_then(crate::store::parse_hex)).collect();
        let locations = self.catalog().chunk_locations(&hashes).await?;
        let (packs, path) = (self.packs().clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || -> Result<Vec<(u64, u64)>> {
            let output = crate::checkout::Output::Raw(crate::checkout::raw_file(&path, size)?);
            crate::checkout::write_disk(&packs, &output, &raw, &locations, None)?;
            Ok(crate::ranges::merged(
                raw.iter().map(|e| (e.disk_offset as u64, (e.disk_offset + e.length) as u64)).collect(),
            ))
        })
        .await
        .map_err(crate::task_failed("writing the filesystem's metadata"))?
    }
}

fn where_as(label: &str, partition: i64) -> String {
    format!("{label}, partition {partition}")
}

/// Refuses a result that differs from the intended tree, naming the first differences.
fn compare(where_: &str, expected: &Tree, got: &Tree) -> Result<()> {
    let mut problems = Vec::new();
    for (path, want) in expected {
        match got.get(path) {
            None => problems.push(format!("{path} is missing")),
            Some(have) if !have.same(want) => problems.push(format!("{path} differs ({have:?}, intended {want:?})")),
            Some(_) => {}
        }
    }
    problems.extend(got.keys().filter(|p| !expected.contains_key(*p)).map(|p| format!("{p} is not intended")));
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    problems.truncate(5);
    Err(Error::Image {
        image: where_.to_string(),
        message: format!("the edited filesystem is not the intended tree ({n} differences: {})", problems.join("; ")),
    })
}

/// An edit worked out against the parent's tree: the debugfs script, the tree it must give,
/// and the room it needs.
pub(crate) struct Plan {
    script: String,
    tree: Tree,
    /// The host file each regular file the edit writes takes its content from, by path.
    sources: HashMap<String, PathBuf>,
    need: Room,
    entries_changed: usize,
}

/// Blocks (of 1 KiB, the smallest ext block) and inodes an edit needs, net of what it frees.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Room {
    kib: i64,
    inodes: i64,
}

/// The file type bits of `st_mode` for each kind (debugfs' `sif mode` sets them whole).
fn type_bits(kind: FileKind) -> u32 {
    match kind {
        FileKind::File => 0o100000,
        FileKind::Dir => 0o040000,
        FileKind::Symlink => 0o120000,
        FileKind::Char => 0o020000,
        FileKind::Block => 0o060000,
        FileKind::Fifo => 0o010000,
        FileKind::Socket => 0o140000,
    }
}

/// Works the changes out in order against `before`, refusing what cannot be done.
fn plan(label: &str, before: &Tree, changes: &[Change]) -> Result<Plan> {
    let mut tree = before.clone();
    let mut script = String::new();
    let mut need = Room::default();
    let mut sources = HashMap::new();
    let refuse = |path: &str, why: &str| Error::User(format!("{label}: {path}: {why}"));
    let parent_is_dir = |tree: &Tree, path: &str| -> Result<()> {
        let parent = match path.rsplit_once('/') {
            Some(("", _)) => "/",
            Some((p, _)) => p,
            None => return Err(refuse(path, "not an absolute path")),
        };
        match tree.get(parent) {
            Some(e) if e.kind == FileKind::Dir => Ok(()),
            Some(e) => Err(refuse(path, &format!("its parent {parent} is a {}, not a directory", e.kind))),
            None => Err(refuse(path, &format!("its parent {parent} does not exist"))),
        }
    };
    for change in changes {
        // Links among the parents are followed, as the kernel would: `/lib/modules` of a
        // merged-/usr system is `/usr/lib/modules`.
        let change = &with_path(change, follow_links(&tree, change_path(change), false));
        sources.remove(change_path(change));
        match change {
            Change::Write { path, source, meta } => {
                parent_is_dir(&tree, path)?;
                let (size, hash) = hash_file(source)?;
                replace(&tree, path, &mut script, &mut need).map_err(|why| refuse(path, why))?;
                let source = source.to_str().ok_or_else(|| refuse(path, "the host file's name is not UTF-8"))?;
                let _ = writeln!(script, "write {} {}", quote(source)?, quote(path)?);
                set_meta(&mut script, path, FileKind::File, meta)?;
                let entry = file_entry(FileKind::File, meta, size, Some(hash), None);
                sources.insert(path.clone(), PathBuf::from(source));
                need.kib += blocks_kib(&entry) + 4;
                need.inodes += 1;
                tree.insert(path.clone(), entry);
            }
            Change::Mkdir { path, meta } => {
                match tree.get(path) {
                    Some(e) if e.kind == FileKind::Dir => {}
                    Some(e) => return Err(refuse(path, &format!("is a {}, not a directory", e.kind))),
                    None => {
                        parent_is_dir(&tree, path)?;
                        let _ = writeln!(script, "mkdir {}", quote(path)?);
                        need.kib += 4;
                        need.inodes += 1;
                    }
                }
                set_meta(&mut script, path, FileKind::Dir, meta)?;
                let size = tree.get(path).map_or(0, |e| e.size);
                tree.insert(path.clone(), file_entry(FileKind::Dir, meta, size, None, None));
            }
            Change::Symlink { path, target, meta } => {
                parent_is_dir(&tree, path)?;
                replace(&tree, path, &mut script, &mut need).map_err(|why| refuse(path, why))?;
                let _ = writeln!(script, "symlink {} {}", quote(path)?, quote(target)?);
                let link = Meta { mode: 0o777, ..*meta };
                set_meta(&mut script, path, FileKind::Symlink, &link)?;
                need.kib += 4;
                need.inodes += 1;
                tree.insert(
                    path.clone(),
                    file_entry(FileKind::Symlink, &link, target.len() as u64, None, Some(target.clone())),
                );
            }
            Change::Remove { path } => {
                let Some(e) = tree.get(path) else { return Err(refuse(path, "does not exist")) };
                if path == "/" {
                    return Err(refuse(path, "the root directory cannot be removed"));
                }
                let mut doomed = vec![path.clone()];
                if e.kind == FileKind::Dir {
                    let prefix = format!("{path}/");
                    doomed.extend(
                        tree.range(prefix.clone()..)
                            .take_while(|(p, _)| p.starts_with(&prefix))
                            .map(|(p, _)| p.clone()),
                    );
                }
                // Deepest first, so that each directory is empty when it goes.
                doomed.sort_by(|a, b| b.cmp(a));
                for p in doomed {
                    let Some(e) = tree.remove(&p) else { continue };
                    let verb = if e.kind == FileKind::Dir { "rmdir" } else { "rm" };
                    let _ = writeln!(script, "{verb} {}", quote(&p)?);
                    need.kib -= blocks_kib(&e);
                    need.inodes -= 1;
                }
            }
            Change::SetMeta { path, mode, uid, gid } => {
                let Some(e) = tree.get_mut(path) else { return Err(refuse(path, "does not exist")) };
                let q = quote(path)?;
                if let Some(m) = mode {
                    e.mode = *m;
                    let _ = writeln!(script, "sif {q} mode 0{:o}", type_bits(e.kind) | m);
                }
                if let Some(u) = uid {
                    e.uid = *u;
                    let _ = writeln!(script, "sif {q} uid {u}");
                }
                if let Some(g) = gid {
                    e.gid = *g;
                    let _ = writeln!(script, "sif {q} gid {g}");
                }
            }
        }
    }
    Ok(Plan { script, tree, sources, need, entries_changed: changes.len() })
}

/// The debugfs commands that give `path` (of `kind`) the permissions, owners and time of `meta`.
fn set_meta(script: &mut String, path: &str, kind: FileKind, meta: &Meta) -> Result<()> {
    let q = quote(path)?;
    let _ = writeln!(script, "sif {q} mode 0{:o}", type_bits(kind) | meta.mode);
    let _ = writeln!(script, "sif {q} uid {}", meta.uid);
    let _ = writeln!(script, "sif {q} gid {}", meta.gid);
    let _ = writeln!(script, "sif {q} mtime @{}", meta.mtime);
    Ok(())
}

/// Makes way for a new entry at `path`: an entry there that is not a directory is removed
/// first (what it held is freed); a directory is not replaced.
fn replace(tree: &Tree, path: &str, script: &mut String, need: &mut Room) -> std::result::Result<(), &'static str> {
    match tree.get(path) {
        Some(e) if e.kind == FileKind::Dir => Err("is a directory"),
        Some(e) => {
            let _ = writeln!(script, "rm {}", quote(path).map_err(|_| "has a name debugfs cannot take")?);
            need.kib -= blocks_kib(e);
            need.inodes -= 1;
            Ok(())
        }
        None => Ok(()),
    }
}

fn change_path(change: &Change) -> &str {
    match change {
        Change::Write { path, .. }
        | Change::Mkdir { path, .. }
        | Change::Symlink { path, .. }
        | Change::Remove { path }
        | Change::SetMeta { path, .. } => path,
    }
}

fn with_path(change: &Change, to: String) -> Change {
    let mut change = change.clone();
    match &mut change {
        Change::Write { path, .. }
        | Change::Mkdir { path, .. }
        | Change::Symlink { path, .. }
        | Change::Remove { path }
        | Change::SetMeta { path, .. } => *path = to,
    }
    change
}

fn file_entry(kind: FileKind, meta: &Meta, size: u64, hash: Option<String>, target: Option<String>) -> Entry {
    Entry {
        kind,
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        size,
        content_hash: hash,
        link_target: target,
        mtime: meta.mtime,
    }
}

/// KiB of blocks an entry holds, about (its data rounded up to 4 KiB).
fn blocks_kib(e: &Entry) -> i64 {
    if e.kind == FileKind::File { e.size.div_ceil(4096) as i64 * 4 } else { 0 }
}

/// A path as one debugfs argument. debugfs splits its commands at blanks and takes double
/// quotes around an argument; a name holding a quote or a line break cannot be passed.
pub(crate) fn quote(path: &str) -> Result<String> {
    if path.contains(['"', '\n', '\r', '\\']) || path.is_empty() {
        return Err(Error::User(format!(
            "{path:?}: a name with a double quote, backslash or line break cannot be edited (debugfs cannot take it)"
        )));
    }
    Ok(format!("\"{path}\""))
}

fn absolute(path: &str) -> Result<String> {
    let normal = normalize(path);
    if !path.starts_with('/') {
        return Err(Error::User(format!("{path:?}: give an absolute path such as '/etc/motd'")));
    }
    Ok(normal)
}

/// Size and blake3 content hash of a host file (as the catalog names content).
fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).io_context(|| format!("opening {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    let size = std::io::copy(&mut file, &mut hasher).io_context(|| format!("reading {}", path.display()))?;
    Ok((size, hasher.finalize().to_hex().to_string()))
}

/// The changes that copy host directory `dir` into `target` of `tree`, recursively.
fn walk(dir: &Path, target: &str, tree: &Tree, changes: &mut Vec<Change>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .io_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .io_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let host = entry.path();
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| Error::User(format!("import: {} is not UTF-8", host.display())))?;
        let path = if target == "/" { format!("/{name}") } else { format!("{target}/{name}") };
        let stat = std::fs::symlink_metadata(&host).io_context(|| format!("reading {}", host.display()))?;
        use std::os::unix::fs::MetadataExt;
        let meta = Meta { mode: stat.mode() & 0o7777, uid: 0, gid: 0, mtime: stat.mtime() };
        let kind = stat.file_type();
        if kind.is_dir() {
            // A directory already there is kept as it is.
            if !tree.contains_key(&path) {
                changes.push(Change::Mkdir { path: path.clone(), meta });
            }
            walk(&host, &path, tree, changes)?;
        } else if kind.is_file() {
            changes.push(Change::Write { path, source: host, meta });
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&host).io_context(|| format!("reading {}", host.display()))?;
            let target = target
                .to_str()
                .ok_or_else(|| Error::User(format!("import: {}'s target is not UTF-8", host.display())))?;
            changes.push(Change::Symlink { path, target: target.to_string(), meta });
        } else {
            return Err(Error::User(format!(
                "import: {} is a device, fifo or socket, which import does not copy",
                host.display()
            )));
        }
    }
    Ok(())
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Runs an e2fsprogs tool; a missing tool says how to get it.
fn e2fsprogs(tool: &str, args: &[&str]) -> Result<std::process::Output> {
    Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .io_context(|| format!("running {tool} (e2fsprogs; scripts/install-deps.sh installs it)"))
}

/// The free blocks (in KiB) and inodes of the filesystem in `device`, and its inode size, from
/// its superblock.
fn free_room(where_: &str, device: &str) -> Result<(Room, u32)> {
    let out = e2fsprogs("dumpe2fs", &["-h", device])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<i64> { text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()) };
    let (Some(blocks), Some(inodes), Some(block_size), Some(inode_size)) =
        (field("Free blocks:"), field("Free inodes:"), field("Block size:"), field("Inode size:"))
    else {
        return Err(Error::Image {
            image: where_.to_string(),
            message: format!("dumpe2fs cannot read the superblock: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    };
    Ok((Room { kib: blocks * block_size / 1024, inodes }, inode_size as u32))
}

/// Refuses an edit that needs more blocks or inodes than the filesystem has free.
fn check_room(where_: &str, free: Room, need: Room) -> Result<()> {
    let Room { kib: free_kib, inodes } = free;
    if need.inodes > inodes {
        return Err(Error::User(format!(
            "{where_}: not enough inodes; the edit needs {} new inodes, the filesystem has {inodes} free; nothing was written",
            need.inodes
        )));
    }
    if need.kib > free_kib {
        return Err(Error::User(format!(
            "{where_}: not enough room; the edit needs about {} KiB, the filesystem has {free_kib} KiB free; nothing was written",
            need.kib
        )));
    }
    Ok(())
}

/// Runs `script` (the `n`th of an edit) with debugfs on `device`; returns the ranges of the
/// filesystem it wrote.
fn run_debugfs(
    where_: &str,
    device: &str,
    work: &Path,
    n: usize,
    script: String,
    doing: &str,
) -> Result<Vec<(u64, u64)>> {
    let script_path = work.join(format!("changes-{n}.debugfs"));
    std::fs::write(&script_path, script).io_context(|| format!("writing {}", script_path.display()))?;
    let undo = work.join(format!("changes-{n}.undo"));
    debugfs(where_, device, &script_path, &undo, doing)?;
    crate::written::undo_ranges(&undo)
}

/// Runs the debugfs script at `script_path` in one process (`-w`: it may write; `-z`: the old
/// bytes of every block it writes go to the undo file `undo`, which names them), for `doing`
/// (words for the error); any complaint fails the edit.
fn debugfs(where_: &str, device: &str, script_path: &Path, undo: &Path, doing: &str) -> Result<()> {
    let (script, undo) = (script_path.to_string_lossy(), undo.to_string_lossy());
    let out = e2fsprogs("debugfs", &["-w", "-z", &undo, "-f", &script, device])?;
    // debugfs answers every command, and exits 0 whatever happened: its complaints go to
    // standard error, after its banner.
    let complaints: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .map(str::to_string)
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        let n = complaints.len();
        return Err(Error::Image {
            image: where_.to_string(),
            message: format!(
                "debugfs could not {doing} ({n} complaints: {}); nothing was committed",
                complaints.into_iter().take(5).collect::<Vec<_>>().join("; ")
            ),
        });
    }
    Ok(())
}

/// `e2fsck -fn`: the filesystem must be clean, before an edit (`which` = "the filesystem to
/// edit": an edit needs a clean start, and a damaged parent is named as such) and after it.
fn check_clean(where_: &str, device: &str, which: &str) -> Result<()> {
    let out = e2fsprogs("e2fsck", &["-fn", device])?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("Pass ") && !l.trim().is_empty()).take(5).collect();
    Err(Error::Image {
        image: where_.to_string(),
        message: format!("e2fsck finds {which} unclean: {}; nothing was committed", lines.join("; ")),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tree from (path, entry) pairs; an entry is `file:<content>` (its size and content
    /// hash from the content), `dir` or `dir:<octal mode>`, `link:<target>`, or another kind
    /// (`fifo`). Permissions 0644 (0755 for a directory), owned by root.
    pub(crate) fn tree(entries: &[(&str, &str)]) -> Tree {
        entries.iter().map(|(path, spec)| (path.to_string(), entry(spec))).collect()
    }

    /// One entry of [`tree`].
    pub(crate) fn entry(spec: &str) -> Entry {
        let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let plain = Entry {
            kind: FileKind::parse(kind).unwrap_or(FileKind::File),
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            content_hash: None,
            link_target: None,
            mtime: 0,
        };
        match kind {
            "file" => Entry { size: rest.len() as u64, content_hash: Some(rest.into()), ..plain },
            "dir" => Entry { mode: u32::from_str_radix(rest, 8).unwrap_or(0o755), ..plain },
            "link" => Entry {
                kind: FileKind::Symlink,
                mode: 0o777,
                size: rest.len() as u64,
                link_target: Some(rest.into()),
                ..plain
            },
            _ => plain,
        }
    }

    /// Plans `changes` against the tree `before` (see [`tree`]) and compares, line by line,
    /// with `expect`: the debugfs script (host files as `HOST/<n>`), the room it needs, and
    /// the paths the intended tree adds (`+`), changes (`~`) or removes (`-`); or the error.
    /// A change is `write <path> <content>` (a host file holding the content),
    /// `mkdir <path>`, `symlink <path> <target>`, `remove <path>` or
    /// `set_meta <path> [mode=<octal>] [uid=<n>] [gid=<n>]`; new entries are root's, 0644
    /// (0755 for a directory), at time 1.
    fn check(before: &[(&str, &str)], changes: &[&str], expect: &str) {
        let host = tempfile::tempdir().expect("a temporary folder");
        let meta = |mode| Meta { mode, uid: 0, gid: 0, mtime: 1 };
        let changes: Vec<Change> = changes
            .iter()
            .enumerate()
            .map(|(n, change)| {
                let words: Vec<&str> = change.splitn(3, ' ').collect();
                let path = words[1].to_string();
                match words[0] {
                    "write" => {
                        let source = host.path().join(n.to_string());
                        std::fs::write(&source, words.get(2).unwrap_or(&"")).expect("a host file");
                        Change::Write { path, source, meta: meta(0o644) }
                    }
                    "mkdir" => Change::Mkdir { path, meta: meta(0o755) },
                    "symlink" => Change::Symlink { path, target: words[2].to_string(), meta: meta(0o777) },
                    "remove" => Change::Remove { path },
                    "set_meta" => {
                        let field = |name: &str, radix| {
                            let value = words.get(2)?.split(' ').find_map(|w| w.strip_prefix(name))?;
                            Some(u32::from_str_radix(value, radix).expect("a number"))
                        };
                        Change::SetMeta {
                            path,
                            mode: field("mode=", 8),
                            uid: field("uid=", 10),
                            gid: field("gid=", 10),
                        }
                    }
                    other => panic!("{other}: not a change"),
                }
            })
            .collect();
        let before = tree(before);
        let got = match plan("a@1", &before, &changes) {
            Err(e) => format!("error: {e}"),
            Ok(Plan { script, tree, need, .. }) => {
                let mut out = script.replace(&*host.path().to_string_lossy(), "HOST");
                let _ = writeln!(out, "need: {} KiB, {} inodes", need.kib, need.inodes);
                for (path, e) in &tree {
                    match before.get(path) {
                        None => {
                            let _ = writeln!(out, "+ {path}");
                        }
                        Some(was) if was != e || was.mtime != e.mtime => {
                            let _ = writeln!(out, "~ {path}");
                        }
                        Some(_) => {}
                    }
                }
                for path in before.keys().filter(|p| !tree.contains_key(*p)) {
                    let _ = writeln!(out, "- {path}");
                }
                out
            }
        };
        let expect: Vec<&str> = expect.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        assert_eq!(got.lines().collect::<Vec<_>>(), expect, "\n{got}");
    }

    const ETC: &[(&str, &str)] = &[("/", "dir"), ("/etc", "dir"), ("/etc/motd", "file:abc")];

    #[test]
    fn write_a_new_file() {
        check(
            ETC,
            &["write /etc/issue hello"],
            r#"
            write "HOST/0" "/etc/issue"
            sif "/etc/issue" mode 0100644
            sif "/etc/issue" uid 0
            sif "/etc/issue" gid 0
            sif "/etc/issue" mtime @1
            need: 8 KiB, 1 inodes
            + /etc/issue"#,
        );
    }

    #[test]
    fn write_over_an_existing_file_removes_it_first() {
        // What the old file held is freed: its inode, and its 4 KiB against the new 8 KiB.
        check(
            ETC,
            &[&format!("write /etc/motd {}", "x".repeat(5000))],
            r#"
            rm "/etc/motd"
            write "HOST/0" "/etc/motd"
            sif "/etc/motd" mode 0100644
            sif "/etc/motd" uid 0
            sif "/etc/motd" gid 0
            sif "/etc/motd" mtime @1
            need: 8 KiB, 0 inodes
            ~ /etc/motd"#,
        );
        // A link there is replaced, not followed.
        check(
            &[("/", "dir"), ("/etc", "dir"), ("/etc/motd", "link:issue")],
            &["write /etc/motd hi"],
            r#"
            rm "/etc/motd"
            write "HOST/0" "/etc/motd"
            sif "/etc/motd" mode 0100644
            sif "/etc/motd" uid 0
            sif "/etc/motd" gid 0
            sif "/etc/motd" mtime @1
            need: 8 KiB, 0 inodes
            ~ /etc/motd"#,
        );
    }

    #[test]
    fn write_is_refused_over_a_directory_or_without_a_parent_directory() {
        check(ETC, &["write /etc hi"], "error: a@1: /etc: is a directory");
        check(ETC, &["write /opt/app hi"], "error: a@1: /opt/app: its parent /opt does not exist");
        check(
            ETC,
            &["write /etc/motd/x hi"],
            "error: a@1: /etc/motd/x: its parent /etc/motd is a file, not a directory",
        );
    }

    #[test]
    fn a_name_debugfs_cannot_take_is_refused() {
        check(
            ETC,
            &[r#"write /etc/a"b hi"#],
            r#"
            error: "/etc/a\"b": a name with a double quote, backslash or line break cannot be edited (debugfs cannot take it)"#,
        );
        check(
            ETC,
            &["mkdir /etc/a\\b"],
            r#"
            error: "/etc/a\\b": a name with a double quote, backslash or line break cannot be edited (debugfs cannot take it)"#,
        );
    }

    #[test]
    fn links_among_the_parents_are_followed() {
        let merged_usr = &[("/", "dir"), ("/usr", "dir"), ("/usr/lib", "dir"), ("/lib", "link:usr/lib")];
        check(
            merged_usr,
            &["write /lib/x.so hi"],
            r#"
            write "HOST/0" "/usr/lib/x.so"
            sif "/usr/lib/x.so" mode 0100644
            sif "/usr/lib/x.so" uid 0
            sif "/usr/lib/x.so" gid 0
            sif "/usr/lib/x.so" mtime @1
            need: 8 KiB, 1 inodes
            + /usr/lib/x.so"#,
        );
        // The last component is not followed: removing the link removes the link.
        check(
            merged_usr,
            &["remove /lib"],
            r#"
            rm "/lib"
            need: 0 KiB, -1 inodes
            - /lib"#,
        );
    }

    #[test]
    fn import_makes_the_missing_parents_first() {
        // The changes `import` gives for a host folder with one file, into /opt/app.
        check(
            ETC,
            &["mkdir /opt", "mkdir /opt/app", "write /opt/app/run hi"],
            r#"
            mkdir "/opt"
            sif "/opt" mode 040755
            sif "/opt" uid 0
            sif "/opt" gid 0
            sif "/opt" mtime @1
            mkdir "/opt/app"
            sif "/opt/app" mode 040755
            sif "/opt/app" uid 0
            sif "/opt/app" gid 0
            sif "/opt/app" mtime @1
            write "HOST/2" "/opt/app/run"
            sif "/opt/app/run" mode 0100644
            sif "/opt/app/run" uid 0
            sif "/opt/app/run" gid 0
            sif "/opt/app/run" mtime @1
            need: 16 KiB, 3 inodes
            + /opt
            + /opt/app
            + /opt/app/run"#,
        );
    }

    #[test]
    fn mkdir_of_a_directory_there_only_sets_its_meta() {
        check(
            ETC,
            &["mkdir /etc"],
            r#"
            sif "/etc" mode 040755
            sif "/etc" uid 0
            sif "/etc" gid 0
            sif "/etc" mtime @1
            need: 0 KiB, 0 inodes
            ~ /etc"#,
        );
        check(ETC, &["mkdir /etc/motd"], "error: a@1: /etc/motd: is a file, not a directory");
        check(ETC, &["mkdir /opt/app"], "error: a@1: /opt/app: its parent /opt does not exist");
    }

    #[test]
    fn symlink_made_or_replacing_a_file() {
        check(
            ETC,
            &["symlink /etc/motd issue"],
            r#"
            rm "/etc/motd"
            symlink "/etc/motd" "issue"
            sif "/etc/motd" mode 0120777
            sif "/etc/motd" uid 0
            sif "/etc/motd" gid 0
            sif "/etc/motd" mtime @1
            need: 0 KiB, 0 inodes
            ~ /etc/motd"#,
        );
        check(
            ETC,
            &["symlink /etc/localtime /usr/share/zoneinfo/UTC"],
            r#"
            symlink "/etc/localtime" "/usr/share/zoneinfo/UTC"
            sif "/etc/localtime" mode 0120777
            sif "/etc/localtime" uid 0
            sif "/etc/localtime" gid 0
            sif "/etc/localtime" mtime @1
            need: 4 KiB, 1 inodes
            + /etc/localtime"#,
        );
        check(ETC, &["symlink /etc x"], "error: a@1: /etc: is a directory");
    }

    #[test]
    fn remove_a_file() {
        check(
            ETC,
            &["remove /etc/motd"],
            r#"
            rm "/etc/motd"
            need: -4 KiB, -1 inodes
            - /etc/motd"#,
        );
    }

    #[test]
    fn remove_a_directory_with_everything_under_it_deepest_first() {
        let before = &[
            ("/", "dir"),
            ("/etc", "dir"),
            ("/etc/motd", "file:abc"),
            ("/etc/ssh", "dir"),
            ("/etc/ssh/sshd_config", "file:x"),
            ("/etcetera", "file:y"),
        ];
        check(
            before,
            &["remove /etc"],
            r#"
            rm "/etc/ssh/sshd_config"
            rmdir "/etc/ssh"
            rm "/etc/motd"
            rmdir "/etc"
            need: -8 KiB, -4 inodes
            - /etc
            - /etc/motd
            - /etc/ssh
            - /etc/ssh/sshd_config"#,
        );
    }

    #[test]
    fn remove_is_refused_for_a_missing_path_or_the_root() {
        check(ETC, &["remove /etc/issue"], "error: a@1: /etc/issue: does not exist");
        check(ETC, &["remove /"], "error: a@1: /: the root directory cannot be removed");
    }

    #[test]
    fn set_meta_changes_only_what_it_is_given() {
        check(
            ETC,
            &["set_meta /etc/motd mode=600"],
            r#"
            sif "/etc/motd" mode 0100600
            need: 0 KiB, 0 inodes
            ~ /etc/motd"#,
        );
        check(
            ETC,
            &["set_meta /etc uid=5 gid=7"],
            r#"
            sif "/etc" uid 5
            sif "/etc" gid 7
            need: 0 KiB, 0 inodes
            ~ /etc"#,
        );
        check(
            ETC,
            &["set_meta /etc mode=1777"],
            r#"
            sif "/etc" mode 041777
            need: 0 KiB, 0 inodes
            ~ /etc"#,
        );
        check(ETC, &["set_meta /etc/issue mode=600"], "error: a@1: /etc/issue: does not exist");
    }

    #[test]
    fn changes_are_worked_out_in_order() {
        // A file written then removed in one edit; a directory made then filled.
        check(
            ETC,
            &["write /etc/issue hi", "remove /etc/issue", "mkdir /srv", "symlink /srv/www /var/www"],
            r#"
            write "HOST/0" "/etc/issue"
            sif "/etc/issue" mode 0100644
            sif "/etc/issue" uid 0
            sif "/etc/issue" gid 0
            sif "/etc/issue" mtime @1
            rm "/etc/issue"
            mkdir "/srv"
            sif "/srv" mode 040755
            sif "/srv" uid 0
            sif "/srv" gid 0
            sif "/srv" mtime @1
            symlink "/srv/www" "/var/www"
            sif "/srv/www" mode 0120777
            sif "/srv/www" uid 0
            sif "/srv/www" gid 0
            sif "/srv/www" mtime @1
            need: 12 KiB, 2 inodes
            + /srv
            + /srv/www"#,
        );
        // A refusal anywhere refuses the whole edit.
        check(ETC, &["write /etc/issue hi", "remove /etc/nothing"], "error: a@1: /etc/nothing: does not exist");
    }
}
