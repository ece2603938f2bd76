//! `export`: the file tree of one filesystem of an image version, written into a directory
//! with its owners, modes, timestamps, extended attributes, hard links, symbolic links and
//! device nodes, from the catalog's `files` rows and the store's chunks (the disk is never
//! rebuilt).
//!
//! The tree comes from an untrusted image, so nothing in it may reach outside the directory:
//! - every path is checked component by component (no empty, `.` or `..` component, no NUL)
//!   and must sit in a directory this export created; a name met twice is refused the second
//!   time;
//! - nothing is written through a symbolic link: files and directories are created first
//!   (new entries only, `O_NOFOLLOW`), links last, and metadata is set with the calls that do
//!   not follow links;
//! - a relative link target that climbs above the image's root (`../../../etc/shadow` from
//!   `/etc`) is refused. Absolute targets are kept as written: they name a path of the image
//!   (as in a chroot or a container), as `tar` and `rsync` keep them.
//!
//! Refused entries are reported (and make the command fail), never followed.

use crate::catalog::{ExtentRow, FileRow, Table};
use crate::store::{ChunkHash, ChunkLocation, ChunkReader, parse_hex};
use crate::{Error, IoContext, Library, Progress, Result};
use arrow::array::{Array, AsArray, BinaryArray, ListArray, RecordBatch, StringArray, StructArray};
use arrow::datatypes::{Int64Type, TimestampNanosecondType};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Default, Clone)]
pub struct ExportOptions {
    /// The partition whose filesystem to export; needed when the image has several.
    pub partition: Option<i64>,
    pub progress: Option<Arc<dyn Progress>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportSummary {
    pub image: String,
    pub partition: i64,
    pub dir: PathBuf,
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    /// Paths made as further names of an inode already exported.
    pub hard_links: u64,
    /// Character and block devices, fifos and sockets.
    pub specials: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Whether owners were set (only root may give files away).
    pub owners: bool,
    /// Entries left out because writing them could escape the directory, with why.
    pub refused: Vec<Problem>,
    /// Entries written incompletely or not at all because an operation failed.
    pub failed: Vec<Problem>,
    pub seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub why: String,
}

/// One `files` row, as export needs it.
struct Entry {
    path: String,
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime_ns: i64,
    inode: i64,
    nlink: i64,
    link_target: Option<String>,
    dev: Option<(u32, u32)>,
    xattrs: Vec<(String, Vec<u8>)>,
    content_hash: Option<String>,
}

/// A run of a file's content stored in a chunk: content offset, length, chunk, chunk offset.
type Piece = (u64, u64, ChunkHash, u64);

/// A piece of a content, and the files it fills: (content hash, piece, files).
type Filling<'a> = (&'a str, &'a Piece, &'a [PathBuf]);

impl Library {
    /// Writes the file tree of one filesystem of image version `spec` into `dir`, which must
    /// not exist or be empty.
    pub async fn export(&self, spec: &str, dir: &Path, options: &ExportOptions) -> Result<ExportSummary> {
        let _reading = self.reading()?;
        let started = Instant::now();
        let image = self.resolve(spec).await?;
        let what = format!("{}@{}", image.name, image.version);
        let mut entries = self.export_entries(image.image_id).await?;
        let mut partitions: Vec<i64> = entries.iter().map(|e| e.0).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let partition = match (options.partition, partitions.as_slice()) {
            (Some(p), _) if partitions.contains(&p) => p,
            (Some(p), _) => {
                return Err(Error::User(format!(
                    "{what} has no indexed filesystem on partition {p}{}",
                    listed(&partitions)
                )));
            }
            (None, [p]) => *p,
            (None, []) => return Err(Error::User(format!("{what} has no indexed filesystem to export"))),
            (None, _) => {
                return Err(Error::User(format!(
                    "{what} has several filesystems{}; name one with --partition",
                    listed(&partitions)
                )));
            }
        };
        entries.retain(|e| e.0 == partition);
        let mut entries: Vec<Entry> = entries.into_iter().map(|e| e.1).collect();
        // Parents before children (a parent's path is a prefix of its children's); a stable
        // sort keeps a duplicated name in its on-disk order.
        entries.sort_by(|a, b| a.path.cmp(&b.path));

        match std::fs::read_dir(dir) {
            Ok(mut listing) => {
                if listing.next().is_some() {
                    return Err(Error::User(format!(
                        "{} is not empty; export writes into a new or empty directory",
                        dir.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(dir).io_context(|| format!("creating {}", dir.display()))?;
            }
            Err(e) => return Err(Error::Io { context: format!("reading {}", dir.display()), error: e }),
        }

        let wanted: HashSet<String> = entries.iter().filter_map(|e| e.content_hash.clone()).collect();
        let pieces = self.content_pieces(image.image_id, &wanted).await?;
        let hashes: Vec<ChunkHash> = pieces.values().flatten().map(|p| p.2).collect();
        let locations = self.chunk_locations_of(&hashes).await?;

        let mut summary = ExportSummary {
            image: what,
            partition,
            dir: dir.to_path_buf(),
            dirs: 0,
            files: 0,
            symlinks: 0,
            hard_links: 0,
            specials: 0,
            bytes: 0,
            // SAFETY: geteuid has no preconditions.
            owners: unsafe { libc::geteuid() } == 0,
            refused: Vec::new(),
            failed: Vec::new(),
            seconds: 0.0,
        };
        let (root, dir) = (self.root().to_path_buf(), dir.to_path_buf());
        let progress = options.progress.clone();
        let summary = tokio::task::spawn_blocking(move || -> Result<ExportSummary> {
            let mut tree = Tree::new(&dir, &mut summary);
            let targets = tree.create(&entries);
            let total: u64 = targets.keys().filter_map(|h| pieces.get(*h)).flatten().map(|p| p.1).sum();
            if let Some(p) = &progress {
                p.phase("writing file contents", total);
            }
            let (bytes, failed) = write_contents(&root, &dir, &targets, &pieces, &locations, progress.as_deref())?;
            tree.summary.bytes += bytes;
            tree.summary.failed.extend(failed);
            tree.summary.failed.extend(check_contents(&dir, &targets));
            tree.links(&entries);
            tree.metadata(&entries);
            Ok(summary)
        })
        .await
        .map_err(|e| Error::User(format!("export failed: {e}")))??;
        Ok(ExportSummary { seconds: started.elapsed().as_secs_f64(), ..summary })
    }

    /// Every `files` row of image version `image_id`, with its partition.
    async fn export_entries(&self, image_id: i64) -> Result<Vec<(i64, Entry)>> {
        let columns = [
            "partition",
            "path",
            "kind",
            "mode",
            "uid",
            "gid",
            "size",
            "mtime",
            "inode",
            "nlink",
            "link_target",
            "dev_major",
            "dev_minor",
            "xattrs",
            "content_hash",
        ];
        let filter = format!("image_id = {image_id}");
        let batches = self.catalog().scan(FileRow::NAME, &columns, Some(&filter)).await?;
        let mut out = Vec::new();
        for b in &batches {
            read_entries(b, &mut out)
                .ok_or_else(|| Error::Catalog(format!("files of image {image_id}: unexpected columns")))?;
        }
        Ok(out)
    }

    /// Writes the contents of version `image_id` named in `wanted` (content hash, size) into
    /// new files of `dir`, one per content, named by its hash; each is read back against its
    /// hash. For edits that carry files of one version into another. `extents` is the
    /// version's disk map with contents, when the caller has read it already.
    pub(crate) async fn materialize(
        &self,
        image_id: i64,
        extents: Option<&[ExtentRow]>,
        wanted: &[(String, u64)],
        dir: impl AsRef<Path>,
    ) -> Result<()> {
        let dir = dir.as_ref();
        if wanted.is_empty() {
            return Ok(());
        }
        let hashes: HashSet<String> = wanted.iter().map(|(h, _)| h.clone()).collect();
        let pieces = match extents {
            Some(extents) => pieces_in(extents, &hashes)?,
            None => self.content_pieces(image_id, &hashes).await?,
        };
        let chunks: Vec<ChunkHash> = pieces.values().flatten().map(|p| p.2).collect();
        let locations = self.chunk_locations_of(&chunks).await?;
        let frames: HashSet<(&str, u64)> = locations.values().map(|l| (l.pack.as_str(), l.offset)).collect();
        crate::trace::phase(&format!(
            "contents of image {image_id} located: {} contents, {} chunks in {} frames",
            wanted.len(),
            locations.len(),
            frames.len()
        ));
        let (root, dir, wanted) = (self.root().to_path_buf(), dir.to_path_buf(), wanted.to_vec());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut targets: HashMap<&str, Vec<PathBuf>> = HashMap::new();
            for (hash, size) in &wanted {
                let path = dir.join(hash);
                let file = File::create(&path).io_context(|| format!("creating {}", path.display()))?;
                file.set_len(*size).io_context(|| format!("sizing {}", path.display()))?;
                targets.insert(hash, vec![path]);
            }
            let (_, mut failed) = write_contents(&root, &dir, &targets, &pieces, &locations, None)?;
            failed.extend(check_contents(&dir, &targets));
            match failed.first() {
                None => Ok(()),
                Some(p) => Err(Error::Catalog(format!("content {}: {}", p.path.trim_start_matches('/'), p.why))),
            }
        })
        .await
        .map_err(|e| Error::User(format!("reading contents failed: {e}")))?
    }

    /// The stored pieces of each wanted content, from the image's file extents.
    async fn content_pieces(&self, image_id: i64, wanted: &HashSet<String>) -> Result<HashMap<String, Vec<Piece>>> {
        let columns = ["content_hash", "content_offset", "length", "chunk_hash", "chunk_offset"];
        // A few contents (an edit's) through the content_hash index; many by one scan.
        let filter = if wanted.len() <= 1024 {
            let list = wanted.iter().map(|h| crate::read::quote(h)).collect::<Vec<_>>().join(", ");
            format!("image_id = {image_id} AND content_hash IN ({list})")
        } else {
            format!("image_id = {image_id} AND content_hash IS NOT NULL")
        };
        let batches = self.catalog().scan(ExtentRow::NAME, &columns, Some(&filter)).await?;
        let mut pieces = HashMap::new();
        for b in &batches {
            let (content, at) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<Int64Type>());
            let (len, chunk, chunk_at) = (
                b.column(2).as_primitive::<Int64Type>(),
                b.column(3).as_string::<i32>(),
                b.column(4).as_primitive::<Int64Type>(),
            );
            for r in 0..b.num_rows() {
                let chunk = chunk.is_valid(r).then(|| chunk.value(r));
                let extent = (content.value(r), at.value(r), len.value(r), chunk, chunk_at.value(r));
                add_piece(&mut pieces, wanted, extent)?;
            }
        }
        Ok(pieces)
    }
}

/// The stored pieces of each wanted content, from a disk map with contents.
fn pieces_in(extents: &[ExtentRow], wanted: &HashSet<String>) -> Result<HashMap<String, Vec<Piece>>> {
    let mut pieces = HashMap::new();
    for e in extents {
        let (Some(content), Some(at)) = (&e.content_hash, e.content_offset) else { continue };
        let extent = (content.as_str(), at, e.length, e.chunk_hash.as_deref(), e.chunk_offset);
        add_piece(&mut pieces, wanted, extent)?;
    }
    Ok(pieces)
}

/// Adds an extent of a file (content hash, content offset, length, chunk, chunk offset) to
/// `pieces` when its content is wanted.
fn add_piece(
    pieces: &mut HashMap<String, Vec<Piece>>,
    wanted: &HashSet<String>,
    (hash, at, len, chunk, chunk_at): (&str, i64, i64, Option<&str>, i64),
) -> Result<()> {
    if !wanted.contains(hash) {
        return Ok(());
    }
    // A zero piece has no chunk: a new file already reads zeros there.
    let Some(chunk) = chunk.and_then(parse_hex) else { return Ok(()) };
    let number = |v: i64| u64::try_from(v).map_err(|_| Error::Catalog(format!("content {hash}: negative offset")));
    pieces.entry(hash.to_string()).or_default().push((number(at)?, number(len)?, chunk, number(chunk_at)?));
    Ok(())
}

fn listed(partitions: &[i64]) -> String {
    if partitions.is_empty() {
        return String::new();
    }
    format!(" (partitions with files: {})", partitions.iter().map(i64::to_string).collect::<Vec<_>>().join(", "))
}

fn read_entries(b: &RecordBatch, out: &mut Vec<(i64, Entry)>) -> Option<()> {
    let int = |i: usize| b.column(i).as_primitive_opt::<Int64Type>();
    let text = |i: usize| b.column(i).as_string_opt::<i32>();
    let (partition, path, kind, mode, uid, gid, size) =
        (int(0)?, text(1)?, text(2)?, int(3)?, int(4)?, int(5)?, int(6)?);
    let mtime = b.column(7).as_primitive_opt::<TimestampNanosecondType>()?;
    let (inode, nlink, target, major, minor) = (int(8)?, int(9)?, text(10)?, int(11)?, int(12)?);
    let xattrs = b.column(13).as_any().downcast_ref::<ListArray>()?;
    let hash = text(14)?;
    let optional = |a: &StringArray, r: usize| a.is_valid(r).then(|| a.value(r).to_string());
    for r in 0..b.num_rows() {
        let mut attrs = Vec::new();
        if xattrs.is_valid(r) {
            let items = xattrs.value(r);
            let items = items.as_any().downcast_ref::<StructArray>()?;
            let names = items.column(0).as_string_opt::<i32>()?;
            let values = items.column(1).as_any().downcast_ref::<BinaryArray>()?;
            attrs.extend((0..items.len()).map(|i| (names.value(i).to_string(), values.value(i).to_vec())));
        }
        let dev = (major.is_valid(r) && minor.is_valid(r))
            .then(|| (u32::try_from(major.value(r)).ok(), u32::try_from(minor.value(r)).ok()))
            .and_then(|(a, b)| Some((a?, b?)));
        out.push((
            partition.value(r),
            Entry {
                path: path.value(r).to_string(),
                kind: kind.value(r).to_string(),
                mode: u32::try_from(mode.value(r)).ok()? & 0o7777,
                uid: u32::try_from(uid.value(r)).ok()?,
                gid: u32::try_from(gid.value(r)).ok()?,
                size: u64::try_from(size.value(r)).ok()?,
                mtime_ns: mtime.value(r),
                inode: inode.value(r),
                nlink: nlink.value(r),
                link_target: optional(target, r),
                dev,
                xattrs: attrs,
                content_hash: optional(hash, r),
            },
        ));
    }
    Some(())
}

/// Where `path` (an absolute path of the image) goes under `dir`, if every component is an
/// ordinary name.
fn place(dir: &Path, path: &str) -> std::result::Result<PathBuf, String> {
    let rest = path.strip_prefix('/').ok_or("the path is not absolute")?;
    let mut out = dir.to_path_buf();
    if rest.is_empty() {
        return Ok(out);
    }
    for part in rest.split('/') {
        match part {
            "" => return Err("the path has an empty component".into()),
            "." | ".." => return Err(format!("the path has a {part:?} component")),
            p if p.contains('\0') => return Err("a name contains a NUL byte".into()),
            p => out.push(p),
        }
    }
    Ok(out)
}

/// True when the relative link target, followed from the link's directory, stays inside the
/// image's root.
fn stays_inside(link_path: &str, target: &str) -> bool {
    let mut depth = link_path.trim_matches('/').split('/').filter(|p| !p.is_empty()).count().saturating_sub(1);
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => depth += 1,
        }
    }
    true
}

/// The export's progress through the tree: what it created, and where.
struct Tree<'a> {
    dir: &'a Path,
    summary: &'a mut ExportSummary,
    /// Paths of the image this export created (or, for the root, was given).
    created: HashSet<String>,
    /// Directories this export created: the only places entries may go.
    dirs: HashSet<String>,
    /// The first path exported for each inode with several names.
    first_of_inode: HashMap<i64, String>,
    /// Symbolic links admitted by `create`, made by `links`.
    links: Vec<usize>,
}

impl<'a> Tree<'a> {
    fn new(dir: &'a Path, summary: &'a mut ExportSummary) -> Self {
        Tree {
            dir,
            summary,
            created: HashSet::new(),
            dirs: HashSet::new(),
            first_of_inode: HashMap::new(),
            links: Vec::new(),
        }
    }

    fn refuse(&mut self, path: &str, why: impl Into<String>) {
        self.summary.refused.push(Problem { path: path.to_string(), why: why.into() });
    }

    fn fail(&mut self, path: &str, why: impl std::fmt::Display) {
        self.summary.failed.push(Problem { path: path.to_string(), why: why.to_string() });
    }

    /// Where `e` goes, if it may go anywhere: a new name in a directory this export made.
    fn admit(&mut self, e: &Entry) -> Option<PathBuf> {
        let to = match place(self.dir, &e.path) {
            Ok(to) => to,
            Err(why) => {
                self.refuse(&e.path, why);
                return None;
            }
        };
        if self.created.contains(&e.path) {
            self.refuse(&e.path, "the name appears twice in its directory");
            return None;
        }
        if e.path != "/" {
            let parent = e.path.rsplit_once('/').map_or("/", |(p, _)| if p.is_empty() { "/" } else { p });
            if !self.dirs.contains(parent) {
                self.refuse(&e.path, format!("its parent {parent:?} is not a directory of the export"));
                return None;
            }
        }
        Some(to)
    }

    /// Creates every directory, regular file, hard link and special file (no symbolic links
    /// yet, so nothing can be written through one). Returns, per content hash, the files to
    /// fill (one path per inode).
    fn create<'e>(&mut self, entries: &'e [Entry]) -> HashMap<&'e str, Vec<PathBuf>> {
        let mut targets: HashMap<&str, Vec<PathBuf>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if e.kind == "symlink" {
                // Claims its name now, so that a later entry of the same name is refused.
                if self.admit(e).is_some() {
                    self.created.insert(e.path.clone());
                    self.links.push(i);
                }
                continue;
            }
            let Some(to) = self.admit(e) else { continue };
            if e.kind != "dir"
                && e.nlink > 1
                && let Some(first) = self.first_of_inode.get(&e.inode).cloned()
            {
                match self.hard_link(&first, &to) {
                    Ok(()) => {
                        self.summary.hard_links += 1;
                        self.created.insert(e.path.clone());
                    }
                    Err(err) => self.fail(&e.path, format!("hard link to {first}: {err}")),
                }
                continue;
            }
            let made = match e.kind.as_str() {
                "dir" if e.path == "/" => Ok(()),
                "dir" => std::fs::DirBuilder::new().mode(0o700).create(&to),
                "file" => File::options()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&to)
                    .and_then(|f| f.set_len(e.size)),
                "char" | "block" | "fifo" | "socket" => mknod(&to, e),
                other => Err(std::io::Error::other(format!("unknown kind {other:?}"))),
            };
            if let Err(err) = made {
                self.fail(&e.path, err);
                continue;
            }
            self.created.insert(e.path.clone());
            match e.kind.as_str() {
                "dir" => {
                    self.dirs.insert(e.path.clone());
                    self.summary.dirs += 1;
                }
                "file" => {
                    self.summary.files += 1;
                    match &e.content_hash {
                        Some(h) if e.size > 0 => targets.entry(h.as_str()).or_default().push(to),
                        None if e.size > 0 => self.fail(&e.path, "the catalog has no content hash for it"),
                        _ => {}
                    }
                }
                _ => self.summary.specials += 1,
            }
            if e.kind != "dir" && e.nlink > 1 {
                self.first_of_inode.insert(e.inode, e.path.clone());
            }
        }
        targets
    }

    /// Makes `to` another name of the exported path `first`.
    fn hard_link(&self, first: &str, to: &Path) -> std::io::Result<()> {
        std::fs::hard_link(place(self.dir, first).map_err(std::io::Error::other)?, to)
    }

    /// Creates the symbolic links, last, so that no other entry is written through one.
    fn links(&mut self, entries: &[Entry]) {
        for e in std::mem::take(&mut self.links).into_iter().filter_map(|i| entries.get(i)) {
            let Ok(to) = place(self.dir, &e.path) else { continue };
            let Some(target) = &e.link_target else {
                self.created.remove(&e.path);
                self.fail(&e.path, "the catalog has no target for this link");
                continue;
            };
            if !target.starts_with('/') && !stays_inside(&e.path, target) {
                self.created.remove(&e.path);
                self.refuse(&e.path, format!("its target {target:?} climbs out of the image's root"));
                continue;
            }
            if target.contains('\0') {
                self.created.remove(&e.path);
                self.refuse(&e.path, "its target contains a NUL byte");
                continue;
            }
            let first = if e.nlink > 1 { self.first_of_inode.get(&e.inode).cloned() } else { None };
            let result = match &first {
                Some(first) => self.hard_link(first, &to),
                None => std::os::unix::fs::symlink(target, &to),
            };
            match (result, first) {
                (Ok(()), Some(_)) => self.summary.hard_links += 1,
                (Ok(()), None) => {
                    self.summary.symlinks += 1;
                    if e.nlink > 1 {
                        self.first_of_inode.insert(e.inode, e.path.clone());
                    }
                }
                (Err(err), _) => {
                    self.created.remove(&e.path);
                    self.fail(&e.path, err);
                }
            }
        }
    }

    /// Sets owners, modes, extended attributes and times, in that order (giving a file away
    /// clears its setuid bits and capabilities), children before their directory.
    fn metadata(&mut self, entries: &[Entry]) {
        let owners = self.summary.owners;
        for e in entries.iter().rev() {
            if !self.created.contains(&e.path) {
                continue;
            }
            let Ok(to) = place(self.dir, &e.path) else { continue };
            let Ok(c) = CString::new(to.as_os_str().as_bytes()) else { continue };
            let link = e.kind == "symlink";
            let mut errors: Vec<String> = Vec::new();
            // SAFETY (all calls below): `c` and every name are NUL-terminated; values are
            // readable for their lengths.
            if owners && unsafe { libc::lchown(c.as_ptr(), e.uid, e.gid) } != 0 {
                errors.push(format!("owner {}:{}: {}", e.uid, e.gid, std::io::Error::last_os_error()));
            }
            if !link && unsafe { libc::chmod(c.as_ptr(), e.mode) } != 0 {
                errors.push(format!("mode {:o}: {}", e.mode, std::io::Error::last_os_error()));
            }
            for (name, value) in &e.xattrs {
                let Ok(n) = CString::new(name.as_bytes()) else {
                    errors.push(format!("extended attribute {name:?}: a NUL byte in its name"));
                    continue;
                };
                if unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) } != 0 {
                    errors.push(format!("extended attribute {name:?}: {}", std::io::Error::last_os_error()));
                }
            }
            let at = libc::timespec {
                tv_sec: e.mtime_ns.div_euclid(1_000_000_000),
                tv_nsec: e.mtime_ns.rem_euclid(1_000_000_000),
            };
            let times = [at, at];
            if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
                errors.push(format!("times: {}", std::io::Error::last_os_error()));
            }
            if !errors.is_empty() {
                self.fail(&e.path, errors.join("; "));
            }
        }
    }
}

fn mknod(to: &Path, e: &Entry) -> std::io::Result<()> {
    let (kind, dev) = match (e.kind.as_str(), e.dev) {
        ("char", Some((major, minor))) => (libc::S_IFCHR, libc::makedev(major, minor)),
        ("block", Some((major, minor))) => (libc::S_IFBLK, libc::makedev(major, minor)),
        ("char" | "block", None) => return Err(std::io::Error::other("a device without a device number")),
        ("fifo", _) => (libc::S_IFIFO, 0),
        _ => (libc::S_IFSOCK, 0),
    };
    let c = CString::new(to.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is NUL-terminated.
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Fills every file from its pieces, reading each chunk once, frames in parallel: the thread
/// that decompresses a frame writes every piece its chunks hold.
fn write_contents(
    root: &Path,
    dir: &Path,
    targets: &HashMap<&str, Vec<PathBuf>>,
    pieces: &HashMap<String, Vec<Piece>>,
    locations: &HashMap<ChunkHash, ChunkLocation>,
    progress: Option<&dyn Progress>,
) -> Result<(u64, Vec<Problem>)> {
    // Under each chunk: (the content, the piece, the files to fill with it).
    let mut by_chunk: HashMap<ChunkHash, (&ChunkLocation, Vec<Filling>)> = HashMap::new();
    for (hash, files) in targets.iter() {
        for piece in pieces.get(*hash).into_iter().flatten() {
            let at = locations
                .get(&piece.2)
                .ok_or_else(|| Error::Catalog(format!("chunk {} is in no pack", crate::store::hex(&piece.2))))?;
            by_chunk.entry(piece.2).or_insert((at, Vec::new())).1.push((hash, piece, files));
        }
    }
    let chunks: Vec<(ChunkHash, &ChunkLocation)> = by_chunk.iter().map(|(h, (at, _))| (*h, *at)).collect();
    let (bytes, failed) = (AtomicU64::new(0), Mutex::new(Vec::new()));
    ChunkReader::new(root).for_each_chunk(
        &chunks,
        |h, chunk| {
            let mut done = 0;
            for &(hash, &(at, len, _, chunk_at), files) in by_chunk.get(h).map(|c| c.1.as_slice()).unwrap_or_default() {
                let piece = usize::try_from(chunk_at)
                    .ok()
                    .and_then(|s| chunk.get(s..s.checked_add(usize::try_from(len).ok()?)?))
                    .ok_or_else(|| Error::Catalog(format!("content {hash}: a piece at {at} lies outside its chunk")))?;
                for to in files {
                    let written = File::options()
                        .write(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(to)
                        .and_then(|f| f.write_all_at(piece, at));
                    if let Err(err) = written {
                        let path = to
                            .strip_prefix(dir)
                            .map_or_else(|_| to.display().to_string(), |p| format!("/{}", p.display()));
                        let problem = Problem { path, why: format!("writing its content: {err}") };
                        failed.lock().map_err(|_| Error::Catalog("a writer thread failed".into()))?.push(problem);
                    }
                }
                bytes.fetch_add(len * files.len() as u64, Ordering::Relaxed);
                done += len;
            }
            if let Some(p) = progress {
                p.advance(done);
            }
            Ok(())
        },
        |e| Error::Io { context: "reading the store".into(), error: e },
    )?;
    Ok((bytes.into_inner(), failed.into_inner().unwrap_or_default()))
}

/// Reads every filled file back and checks it against its content hash: a file whose content
/// the catalog cannot rebuild (kept inside the inode, as ext4 inline data) is reported, not
/// left looking whole.
fn check_contents(dir: &Path, targets: &HashMap<&str, Vec<PathBuf>>) -> Vec<Problem> {
    targets
        .par_iter()
        .flat_map_iter(|(hash, paths)| paths.iter().map(move |p| (*hash, p)))
        .filter_map(|(hash, to)| {
            let path = to.strip_prefix(dir).map_or_else(|_| to.display().to_string(), |p| format!("/{}", p.display()));
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 1 << 16];
            let read = File::open(to).and_then(|mut f| {
                loop {
                    match f.read(&mut buf)? {
                        0 => return Ok(()),
                        n => {
                            hasher.update(&buf[..n]);
                        }
                    }
                }
            });
            match read {
                Err(err) => Some(Problem { path, why: format!("reading it back: {err}") }),
                Ok(()) if hasher.finalize().to_hex().as_str() != hash => Some(Problem {
                    path,
                    why: "its content could not be rebuilt from the store (content kept inside the inode, \
                          such as ext4 inline data, has no extents)"
                        .into(),
                }),
                Ok(()) => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ordinary_names_are_placed() {
        let dir = Path::new("/out");
        assert_eq!(place(dir, "/").unwrap(), Path::new("/out"));
        assert_eq!(place(dir, "/etc/a b\u{1b}").unwrap(), Path::new("/out/etc/a b\u{1b}"));
        for bad in ["etc", "/etc/../..", "/./x", "/a//b", "/a/", "/a\0b"] {
            assert!(place(dir, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn link_targets_that_climb_above_the_root_are_found() {
        assert!(stays_inside("/etc/mtab", "../proc/self/mounts"));
        assert!(stays_inside("/usr/lib/x", "../../bin/./y"));
        assert!(stays_inside("/x", "a/../b"));
        assert!(!stays_inside("/etc/mtab", "../../etc/shadow"));
        assert!(!stays_inside("/x", ".."));
        assert!(!stays_inside("/a/b", "c/../../../d"));
    }
}
