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

use crate::catalog::TREE_COLUMNS;
use crate::catalog::{FileKind, FileRow};
pub use crate::contents::Problem;
use crate::contents::{check_contents, write_contents, write_unmapped};
use crate::store::ChunkHash;
use crate::{Error, IoContext, Library, Progress, Result};
use imagelake_connectors::btrfs;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// One `files` row, as export writes it.
struct FileToWrite {
    path: String,
    kind: FileKind,
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

impl Library {
    /// Writes the file tree of one filesystem of image version `spec` into `dir`, which must
    /// not exist or be empty.
    pub async fn export(&self, spec: &str, dir: &Path, options: &ExportOptions) -> Result<ExportSummary> {
        let _reading = self.reading()?;
        let started = Instant::now();
        let image = self.resolve(spec).await?;
        let what = format!("{}@{}", image.name, image.version);
        let mut entries = self.export_entries(image.image_id).await?;
        let files = entries.iter().map(|e| (e.0, e.1.path.as_str(), e.1.kind, e.1.inode));
        let partition = one_filesystem(&what, files, options.partition)?;
        entries.retain(|e| e.0 == partition);
        let mut entries: Vec<FileToWrite> = entries.into_iter().map(|e| e.1).collect();
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
        let locations = self.catalog().chunk_locations(&hashes).await?;
        // Contents no stored piece holds: zeros, or kept inside their inode, or compressed.
        let mut sizes: HashMap<String, u64> = HashMap::new();
        let mut unpieced = Vec::new();
        for e in entries.iter().filter(|e| e.size > 0) {
            if let Some(hash) = e.content_hash.as_ref().filter(|h| !pieces.contains_key(*h))
                && sizes.insert(hash.clone(), e.size).is_none()
            {
                unpieced.push((u64::try_from(e.inode).unwrap_or(0), hash.clone()));
            }
        }
        let unmapped = self.unmapped_contents(image.image_id, partition, unpieced).await?;

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
        let (packs, dir) = (self.packs().clone(), dir.to_path_buf());
        let progress = options.progress.clone();
        let summary = tokio::task::spawn_blocking(move || -> Result<ExportSummary> {
            let mut tree = Tree::new(&dir, &mut summary);
            let targets = tree.create(&entries);
            let total: u64 = targets.keys().filter_map(|h| pieces.get(*h)).flatten().map(|p| p.1).sum();
            if let Some(p) = &progress {
                p.phase("writing file contents", total);
            }
            let (bytes, failed) = write_contents(&packs, &dir, &targets, &pieces, &locations, progress.as_deref())?;
            tree.summary.bytes += bytes;
            tree.summary.failed.extend(failed);
            let (bytes, failed) = write_unmapped(&dir, &targets, &unmapped, &sizes);
            tree.summary.bytes += bytes;
            tree.summary.failed.extend(failed);
            tree.summary.failed.extend(check_contents(&dir, &targets));
            tree.links(&entries);
            tree.metadata(&entries);
            Ok(summary)
        })
        .await
        .map_err(crate::task_failed("exporting"))??;
        Ok(ExportSummary { seconds: started.elapsed().as_secs_f64(), ..summary })
    }

    /// Every `files` row of image version `image_id`, with its partition.
    async fn export_entries(&self, image_id: i64) -> Result<Vec<(i64, FileToWrite)>> {
        let rows = self.catalog().files(image_id, None, &TREE_COLUMNS).await?;
        let bad = |path: &str| {
            Error::Catalog(format!("files of image {image_id}: {path} has an owner, mode or size out of range"))
        };
        rows.into_iter().map(|f| Ok((f.partition, FileToWrite::of(f).map_err(|path| bad(&path))?))).collect()
    }
}

/// The partition whose filesystem to use, of those holding `files` (each as its partition,
/// path, kind and inode number): `wanted`, or the only one, or else the root filesystem.
/// Export and mount take one filesystem at a time.
pub fn one_filesystem<'a>(
    what: &str,
    files: impl Iterator<Item = (i64, &'a str, FileKind, i64)>,
    wanted: Option<i64>,
) -> Result<i64> {
    let files: Vec<_> = files.collect();
    let mut partitions: Vec<i64> = files.iter().map(|f| f.0).collect();
    let mut roots = root_filesystems(&files);
    partitions.sort_unstable();
    partitions.dedup();
    roots.sort_unstable();
    roots.dedup();
    match (wanted, partitions.as_slice(), roots.as_slice()) {
        (Some(p), _, _) if partitions.contains(&p) => Ok(p),
        (Some(p), _, _) => {
            Err(Error::User(format!("{what} has no indexed filesystem on partition {p}{}", listed(&partitions))))
        }
        (None, [p], _) | (None, _, [p]) => Ok(*p),
        (None, [], _) => Err(Error::User(format!("{what} has no indexed filesystem"))),
        (None, _, _) => Err(Error::User(format!(
            "{what} has several filesystems{} and not one root filesystem (with /etc); name one with --partition",
            listed(&partitions)
        ))),
    }
}

/// The partitions of `files` that hold a root filesystem: an `/etc` folder at the top, or
/// (btrfs) at the top of a subvolume, such as `/root/etc` or openSUSE's
/// `/@/.snapshots/1/snapshot/etc`.
fn root_filesystems(files: &[(i64, &str, FileKind, i64)]) -> Vec<i64> {
    let subvolume_tops: HashSet<(i64, &str)> = (files.iter())
        .filter(|f| f.2 == FileKind::Dir && u64::try_from(f.3).is_ok_and(btrfs::is_subvolume_top))
        .map(|f| (f.0, f.1))
        .collect();
    let at_a_top = |partition: i64, path: &str| path.is_empty() || subvolume_tops.contains(&(partition, path));
    (files.iter())
        .filter(|f| f.2 == FileKind::Dir && f.1.strip_suffix("/etc").is_some_and(|parent| at_a_top(f.0, parent)))
        .map(|f| f.0)
        .collect()
}

fn listed(partitions: &[i64]) -> String {
    if partitions.is_empty() {
        return String::new();
    }
    format!(" (partitions with files: {})", partitions.iter().map(i64::to_string).collect::<Vec<_>>().join(", "))
}

impl FileToWrite {
    /// The row as export writes it; the row's path if a field is out of range.
    fn of(f: FileRow) -> std::result::Result<FileToWrite, String> {
        let dev =
            f.dev_major.zip(f.dev_minor).and_then(|(a, b)| Some((u32::try_from(a).ok()?, u32::try_from(b).ok()?)));
        let fields = (u32::try_from(f.mode), u32::try_from(f.uid), u32::try_from(f.gid), u64::try_from(f.size));
        let (Ok(mode), Ok(uid), Ok(gid), Ok(size)) = fields else { return Err(f.path) };
        Ok(FileToWrite {
            kind: f.kind,
            mode: mode & 0o7777,
            uid,
            gid,
            size,
            mtime_ns: f.mtime,
            inode: f.inode,
            nlink: f.nlink,
            link_target: f.link_target,
            dev,
            xattrs: f.xattrs,
            content_hash: f.content_hash,
            path: f.path,
        })
    }
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
    fn admit(&mut self, e: &FileToWrite) -> Option<PathBuf> {
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
    fn create<'e>(&mut self, entries: &'e [FileToWrite]) -> HashMap<&'e str, Vec<PathBuf>> {
        let mut targets: HashMap<&str, Vec<PathBuf>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if e.kind == FileKind::Symlink {
                // Claims its name now, so that a later entry of the same name is refused.
                if self.admit(e).is_some() {
                    self.created.insert(e.path.clone());
                    self.links.push(i);
                }
                continue;
            }
            let Some(to) = self.admit(e) else { continue };
            if e.kind != FileKind::Dir
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
            let made = match e.kind {
                FileKind::Dir if e.path == "/" => Ok(()),
                FileKind::Dir => std::fs::DirBuilder::new().mode(0o700).create(&to),
                FileKind::File => File::options()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&to)
                    .and_then(|f| f.set_len(e.size)),
                FileKind::Char | FileKind::Block | FileKind::Fifo | FileKind::Socket => mknod(&to, e),
                other => Err(std::io::Error::other(format!("unknown kind {other:?}"))),
            };
            if let Err(err) = made {
                self.fail(&e.path, err);
                continue;
            }
            self.created.insert(e.path.clone());
            match e.kind {
                FileKind::Dir => {
                    self.dirs.insert(e.path.clone());
                    self.summary.dirs += 1;
                }
                FileKind::File => {
                    self.summary.files += 1;
                    match &e.content_hash {
                        Some(h) if e.size > 0 => targets.entry(h.as_str()).or_default().push(to),
                        None if e.size > 0 => self.fail(&e.path, "the catalog has no content hash for it"),
                        _ => {}
                    }
                }
                _ => self.summary.specials += 1,
            }
            if e.kind != FileKind::Dir && e.nlink > 1 {
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
    fn links(&mut self, entries: &[FileToWrite]) {
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
    fn metadata(&mut self, entries: &[FileToWrite]) {
        let owners = self.summary.owners;
        for e in entries.iter().rev() {
            if !self.created.contains(&e.path) {
                continue;
            }
            let Ok(to) = place(self.dir, &e.path) else { continue };
            let Ok(c) = CString::new(to.as_os_str().as_bytes()) else { continue };
            let link = e.kind == FileKind::Symlink;
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

fn mknod(to: &Path, e: &FileToWrite) -> std::io::Result<()> {
    let (kind, dev) = match (e.kind, e.dev) {
        (FileKind::Char, Some((major, minor))) => (libc::S_IFCHR, libc::makedev(major, minor)),
        (FileKind::Block, Some((major, minor))) => (libc::S_IFBLK, libc::makedev(major, minor)),
        (FileKind::Char | FileKind::Block, None) => {
            return Err(std::io::Error::other("a device without a device number"));
        }
        (FileKind::Fifo, _) => (libc::S_IFIFO, 0),
        _ => (libc::S_IFSOCK, 0),
    };
    let c = CString::new(to.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is NUL-terminated.
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_has_its_etc_at_the_top_or_at_a_subvolume_top() {
        let (top, subvolume) = (256 << 40 | 256, 256 << 40 | 300);
        let dir = FileKind::Dir;
        let roots = |files: &[(i64, &str, FileKind, i64)]| root_filesystems(files);
        assert_eq!(roots(&[(1, "/etc", dir, 12), (2, "/EFI", dir, 3)]), [1]);
        assert_eq!(roots(&[(1, "/etc", FileKind::File, 12)]), [0; 0]);
        // A subvolume at the top, or deeper (openSUSE's snapshot), but not a plain folder.
        assert_eq!(roots(&[(1, "/root", dir, top), (1, "/root/etc", dir, subvolume)]), [1]);
        let suse = [(2, "/@/.snapshots/1/snapshot", dir, top), (2, "/@/.snapshots/1/snapshot/etc", dir, subvolume)];
        assert_eq!(roots(&suse), [2]);
        assert_eq!(roots(&[(1, "/root", dir, 300), (1, "/root/etc", dir, 301)]), [0; 0], "a folder of the top level");
        assert_eq!(roots(&[(1, "/root", dir, top), (1, "/root/x/etc", dir, subvolume)]), [0; 0], "below a top");
        // One filesystem with several roots (a subvolume and its snapshot) is one root.
        let snapshots = [(1, "/root", dir, top), (1, "/root/etc", dir, subvolume), (1, "/s", dir, 257 << 40 | 256)];
        let files = snapshots.into_iter().chain([(1, "/s/etc", dir, 257 << 40 | 300), (2, "/EFI", dir, 3)]);
        assert_eq!(one_filesystem("t", files, None).unwrap(), 1);
    }

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
