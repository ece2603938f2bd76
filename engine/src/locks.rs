//! The library's locks and scratch folders: every flock() imagelake takes, in one place.
//!
//! ```text
//! lock                      exclusive, briefly: hand out an image id, commit a version,
//!                           maintain the catalog, retire packs
//! readers                   shared by every reader (checkout, export, cat, verify, check,
//!                           a checkin's reads, each SQL statement, a mount while it is up);
//!                           exclusive, never waited for, to delete files a reader may need
//! writers                   shared by every operation that uses chunks it did not store
//!                           (checkin, edit, clone) until it commits; exclusive for gc
//! access.lock               exclusive, briefly: change access.json (users, grants, tokens)
//! catalog/checksums.lock    shared, briefly: append to the catalog's checksums; exclusive:
//!                           rewrite them
//! catalog/segments.lock     exclusive, briefly: look up which manifest segments are stored
//!                           and store the rest; drop the unused ones
//! tmp/repack.lock           one repack or gc at a time
//! tmp/checkin-<id>.lock     a checkin (or clone) in flight holds its image id
//! tmp/<what>-<pid>-<ns>/    a scratch folder (edits, patches), held while it exists
//! ```
//!
//! **Architecture Invariant:** every file and folder in `tmp/` is flock()ed by the process
//! using it, so whatever in `tmp/` nobody holds is a crash's leftover and safe to delete.
//! Only this module opens lock files; the operations take the guards it hands out.

use crate::{Error, IoContext, Result};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

fn open(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .io_context(|| format!("opening {}", path.display()))
}

/// Takes the library lock: an exclusive flock of `lock`, released when the returned file is
/// dropped (or the process dies).
pub(crate) fn library(root: &Path) -> Result<File> {
    let path = root.join("lock");
    let lock = open(&path)?;
    lock.lock().io_context(|| format!("locking {}", path.display()))?;
    Ok(lock)
}

/// Takes the `access.lock` flock, exclusively: one writer of `access.json` at a time, from
/// its read to its rename. Readers of `access.json` take no lock.
pub(crate) fn access(root: &Path) -> Result<File> {
    let path = root.join("access.lock");
    let lock = open(&path)?;
    lock.lock().io_context(|| format!("locking {}", path.display()))?;
    Ok(lock)
}

/// Takes the `checksums.lock` flock of the catalog in `dir`: shared to append lines to its
/// checksums, exclusive to rewrite them, so that no line appended meanwhile is lost.
pub(crate) fn checksums(dir: &Path, exclusive: bool) -> Result<File> {
    let path = dir.join("checksums.lock");
    let lock = open(&path)?;
    if exclusive { lock.lock() } else { lock.lock_shared() }.io_context(|| format!("locking {}", path.display()))?;
    Ok(lock)
}

/// Takes the `segments.lock` flock of the catalog in `dir`, exclusively (see
/// `catalog/segments.rs`). Waits off the async threads: a checkin's two manifests may wait
/// for it in one task.
pub(crate) async fn segments(dir: &Path) -> Result<File> {
    let path = dir.join("segments.lock");
    tokio::task::spawn_blocking(move || {
        let lock = open(&path)?;
        lock.lock().io_context(|| format!("locking {}", path.display()))?;
        Ok(lock)
    })
    .await
    .map_err(crate::task_failed("waiting for the segments lock"))?
}

/// Held by a reader until dropped (see [`reading`]).
pub struct ReadGuard {
    _file: File,
}

/// Marks this process as a reader until the guard is dropped. Files a reader may still need
/// (packs a repack emptied, superseded catalog files) are deleted only while no guard is held.
pub(crate) fn reading(root: &Path) -> Result<ReadGuard> {
    let path = root.join("readers");
    let file = open(&path)?;
    file.lock_shared().io_context(|| format!("locking {}", path.display()))?;
    Ok(ReadGuard { _file: file })
}

/// The right to delete what readers may need, if no reader holds a guard now (never waits:
/// a reader can be a long export, or this process's own SQL statement).
pub(crate) fn no_readers(root: &Path) -> Result<Option<File>> {
    let file = open(&root.join("readers"))?;
    Ok(file.try_lock().is_ok().then_some(file))
}

/// The `writers` flock: shared by every operation that may use chunks it did not store (a
/// checkin's dedup, a clone's rows) from the moment it learns they exist until its commit,
/// exclusive for gc, so that gc never frees them in between. Waits (off the async threads).
pub(crate) async fn writers(root: &Path, exclusive: bool) -> Result<File> {
    let path = root.join("writers");
    tokio::task::spawn_blocking(move || {
        let file = open(&path)?;
        if exclusive { file.lock() } else { file.lock_shared() }
            .io_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    })
    .await
    .map_err(crate::task_failed("waiting for the writers lock"))?
}

/// `tmp/repack.lock`, flock()ed: one repack or gc at a time.
pub(crate) struct OnlyRepack {
    path: PathBuf,
    _file: File,
}

impl OnlyRepack {
    pub(crate) fn take(root: &Path) -> Result<OnlyRepack> {
        let path = root.join("tmp").join("repack.lock");
        let file = File::create(&path).io_context(|| format!("creating {}", path.display()))?;
        file.try_lock().map_err(|_| Error::User("a repack or gc is running on this library; one at a time".into()))?;
        Ok(OnlyRepack { path, _file: file })
    }
}

impl Drop for OnlyRepack {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Marks a checkin in flight: `tmp/checkin-<image id>.lock`, flock()ed from the moment the id
/// is handed out until the images row is written or the checkin fails. Recovery treats rows
/// of an uncommitted id whose marker nobody holds as a crash's leftovers.
pub(crate) struct InFlight {
    path: PathBuf,
    _file: File,
}

impl InFlight {
    pub(crate) fn path(root: &Path, image_id: i64) -> PathBuf {
        root.join("tmp").join(format!("checkin-{image_id}.lock"))
    }

    pub(crate) fn new(root: &Path, image_id: i64) -> Result<InFlight> {
        let path = Self::path(root, image_id);
        let file = File::create(&path).io_context(|| format!("creating {}", path.display()))?;
        file.try_lock().map_err(|e| Error::Library {
            path: root.display().to_string(),
            message: format!("{} is locked by another process: {e}", path.display()),
        })?;
        Ok(InFlight { path, _file: file })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Removed while still held, so nobody can take a finished checkin for a crashed one.
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether another process holds a flock on `path` (a missing file is held by nobody).
pub fn held(path: &Path) -> bool {
    match File::open(path) {
        Ok(file) => file.try_lock_shared().is_err(),
        Err(_) => false,
    }
}

/// A scratch folder in the library's `tmp/` (the filesystem being edited, a patch's
/// contents), flocked so that `check --reclaim` leaves it alone, and removed with its
/// contents when dropped.
pub struct Scratch {
    pub dir: PathBuf,
    /// `dir/filesystem.raw`, for the filesystem being edited.
    pub path: PathBuf,
    _held: File,
}

impl Scratch {
    /// `tmp/<what>-<pid>-<ns>/`.
    pub fn new(root: &Path, what: &str) -> Result<Scratch> {
        let dir = root.join("tmp").join(format!("{what}-{}-{}", std::process::id(), crate::now_ns()));
        fs::create_dir(&dir).io_context(|| format!("creating {}", dir.display()))?;
        let held = File::open(&dir).io_context(|| format!("opening {}", dir.display()))?;
        held.try_lock().map_err(|e| Error::Library {
            path: root.display().to_string(),
            message: format!("{} is locked by another process: {e}", dir.display()),
        })?;
        Ok(Scratch { path: dir.join("filesystem.raw"), dir, _held: held })
    }

    /// Takes over the scratch folder `dir` that a process left when it ended (a writable
    /// mount's, to commit what it holds); refused while a live process still holds it.
    pub fn adopt(dir: &Path) -> Result<Scratch> {
        let held = File::open(dir).io_context(|| format!("opening {}", dir.display()))?;
        held.try_lock().map_err(|_| Error::User(format!("{} is in use by a live process", dir.display())))?;
        Ok(Scratch { path: dir.join("filesystem.raw"), dir: dir.to_path_buf(), _held: held })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
