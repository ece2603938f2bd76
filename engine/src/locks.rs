//! The library's locks and scratch folders: every flock() imagelake takes in a folder, and
//! the lease that stands for each on a bucket, in one place.
//!
//! ```text
//! folder                    bucket (store/FORMAT.md, "A library on a bucket")
//! lock                      leases/library.json      exclusive, briefly: hand out an image
//!                                                    id, commit a version, maintain the
//!                                                    catalog, retire packs
//! readers                   leases/<holder>.json     shared by every reader (checkout,
//!                             (kind reader)          export, cat, verify, check, a checkin's
//!                                                    reads, each SQL statement, a mount while
//!                                                    it is up); exclusive, never waited for,
//!                                                    to delete files a reader may need
//! writers                   leases/<holder>.json     shared by every operation that uses
//!                             (kind writer)          chunks it did not store (checkin, edit,
//!                                                    clone) until it commits; exclusive for gc
//! access.lock               (If-Match on access.json) change access.json
//! catalog/checksums.lock    (one object per version) append to or rewrite the checksums
//! catalog/segments.lock     catalog/segments.lease   exclusive, briefly: look up which
//!                                                    manifest segments are stored and store
//!                                                    the rest; drop the unused ones
//! tmp/repack.lock           leases/maintenance.json  one repack or gc at a time
//! tmp/checkin-<id>.lock     leases/<holder>.json     a checkin (or clone) in flight holds
//!                             (kind checkin)         its image id
//! tmp/<what>-<pid>-<ns>/    (the same, in a local    a scratch folder (edits, patches),
//!                           scratch folder)          held while it exists
//! ```
//!
//! **Architecture Invariant:** every file and folder in `tmp/` is flock()ed by the process
//! using it, so whatever in `tmp/` nobody holds is a crash's leftover and safe to delete.
//! Only this module opens lock files and takes leases; the operations take the guards it
//! hands out.

use crate::storage::{Bucket, Kept, Lease, LeaseState, Storage};
use crate::{Error, IoContext, Result};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where a bucket's leases of readers, writers and checkins are, each `<holder>.json`.
const LEASES: &str = "leases";
const LIBRARY_LEASE: &str = "leases/library.json";
const MAINTENANCE_LEASE: &str = "leases/maintenance.json";
/// How often a writer looks whether gc's maintenance lease is gone, and gc whether the
/// writers' leases are.
const WAIT_TURN: Duration = Duration::from_millis(250);

/// A lock held until dropped: a flock()ed file in a folder, a lease on a bucket (renewed
/// meanwhile, released when dropped).
pub(crate) enum Held {
    File(#[allow(dead_code)] File),
    Lease(Kept),
    /// On a bucket, a condition found true rather than an object held: no writer lease
    /// lives (gc's maintenance lease keeps new ones out, see [`writers`]), or no reader's.
    Waited,
}

impl Held {
    /// Makes sure the lock is still this process's: a flock is; a lease is renewed now, and
    /// a lost one (taken over after its term, the process having been stopped or cut off
    /// that long) is an error. A writer asks right before it commits.
    pub(crate) fn confirm(&self, doing: &str) -> Result<()> {
        let Held::Lease(kept) = self else { return Ok(()) };
        match kept.confirm() {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Library {
                path: kept.lease().url(),
                message: format!(
                    "{doing}: this process's lease was taken over after its term ran out (it was stopped or \
                     cut off too long); nothing was committed"
                ),
            }),
            Err(e) => Err(Error::Io { context: format!("{doing}: renewing {}", kept.lease().url()), error: e }),
        }
    }

    /// The lease holder's id, which a claim names (empty for a flock).
    pub(crate) fn holder(&self) -> String {
        match self {
            Held::Lease(kept) => kept.lease().body().holder.clone(),
            _ => String::new(),
        }
    }
}

fn lease_error(bucket: &Bucket, key: &str) -> impl FnOnce() -> String {
    let url = bucket.url(key);
    move || format!("taking the lease {url}")
}

/// A lease of this process's own under `leases/`, renewed until dropped.
fn own_lease(bucket: &Bucket, kind: &str, image_id: Option<i64>) -> Result<Held> {
    let lease =
        Lease::take_own(bucket, LEASES, kind, image_id, Lease::term()).io_context(lease_error(bucket, LEASES))?;
    Ok(Held::Lease(Kept::new(lease).io_context(|| "starting a lease's renewals".into())?))
}

/// The lease at `key`, waited for while another holds it, renewed until dropped.
fn waited_lease(bucket: &Bucket, key: &str, kind: &str) -> Result<Held> {
    let lease = Lease::wait(bucket, key, kind, Lease::term(), || Ok(false)).io_context(lease_error(bucket, key))?;
    let lease =
        lease.ok_or_else(|| Error::Library { path: bucket.url(key), message: "the lease wait gave up".into() })?;
    Ok(Held::Lease(Kept::new(lease).io_context(|| "starting a lease's renewals".into())?))
}

/// What other processes' leases under `leases/` say, with those of `kind` that live.
fn live_leases(bucket: &Bucket, kind: &str) -> Result<Vec<(String, LeaseState)>> {
    let states =
        Lease::states(bucket, LEASES, Lease::term()).io_context(|| format!("reading {}", bucket.url(LEASES)))?;
    Ok(states
        .into_iter()
        .filter(|(key, state)| {
            key.ends_with(".json")
                && matches!(state, LeaseState::Live { body, .. } if body.as_ref().is_none_or(|b| b.kind == kind))
        })
        .collect())
}

fn open(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .io_context(|| format!("opening {}", path.display()))
}

/// Opens `path` and flock()s it, exclusively or shared, waiting for it.
fn flocked(path: &Path, exclusive: bool) -> Result<File> {
    let file = open(path)?;
    if exclusive { file.lock() } else { file.lock_shared() }.io_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// Takes the library lock: an exclusive flock of `lock` (on a bucket, the lease
/// `leases/library.json`), released when the returned guard is dropped (or the process dies).
pub(crate) fn library(home: &Storage) -> Result<Held> {
    match home {
        Storage::Folder(root) => Ok(Held::File(flocked(&root.join("lock"), true)?)),
        Storage::Bucket(bucket) => waited_lease(bucket, LIBRARY_LEASE, "library"),
    }
}

/// Takes the `access.lock` flock, exclusively: one writer of `access.json` at a time, from
/// its read to its rename. Readers of `access.json` take no lock.
pub(crate) fn access(root: &Path) -> Result<File> {
    flocked(&root.join("access.lock"), true)
}

/// Takes the `checksums.lock` flock of the catalog in `dir`: shared to append lines to its
/// checksums, exclusive to rewrite them, so that no line appended meanwhile is lost.
pub(crate) fn checksums(dir: &Path, exclusive: bool) -> Result<File> {
    flocked(&dir.join("checksums.lock"), exclusive)
}

/// Takes the `segments.lock` flock of the catalog in `files` (on a bucket, the lease
/// `segments.lease`), exclusively (see `catalog/segments.rs`). Waits off the async threads: a
/// checkin's two manifests may wait for it in one task.
pub(crate) async fn segments(files: &Storage) -> Result<Held> {
    let files = files.clone();
    tokio::task::spawn_blocking(move || match &files {
        Storage::Folder(dir) => Ok(Held::File(flocked(&dir.join("segments.lock"), true)?)),
        Storage::Bucket(bucket) => waited_lease(bucket, "segments.lease", "writer"),
    })
    .await
    .map_err(crate::task_failed("waiting for the segments lock"))?
}

/// Held by a reader until dropped (see [`reading`]).
pub struct ReadGuard {
    _held: Held,
}

/// Marks this process as a reader until the guard is dropped. Files a reader may still need
/// (packs a repack emptied, superseded catalog files) are deleted only while no guard is held.
pub(crate) fn reading(home: &Storage) -> Result<ReadGuard> {
    match home {
        Storage::Folder(root) => Ok(ReadGuard { _held: Held::File(flocked(&root.join("readers"), false)?) }),
        Storage::Bucket(bucket) => Ok(ReadGuard { _held: own_lease(bucket, "reader", None)? }),
    }
}

/// The right to delete what readers may need, if no reader holds a guard now (never waits:
/// a reader can be a long export, or this process's own SQL statement).
pub(crate) fn no_readers(home: &Storage) -> Result<Option<Held>> {
    match home {
        Storage::Folder(root) => {
            let file = open(&root.join("readers"))?;
            Ok(file.try_lock().is_ok().then_some(Held::File(file)))
        }
        // A reader puts its lease before it reads the catalog, so one that starts after
        // this look reads rows that no longer point where deletions go.
        Storage::Bucket(bucket) => Ok(live_leases(bucket, "reader")?.is_empty().then_some(Held::Waited)),
    }
}

/// The `writers` flock: shared by every operation that may use chunks it did not store (a
/// checkin's dedup, a clone's rows) from the moment it learns they exist until its commit,
/// exclusive for gc, so that gc never frees them in between. Waits (off the async threads).
///
/// On a bucket a writer puts its own lease, then waits while gc's maintenance lease lives;
/// gc (holding the maintenance lease, see [`OnlyRepack`]) waits until no writer's lease
/// lives, taking over and removing the dead ones so that their holders cannot commit. Each
/// puts its lease before it looks for the other's: of two starting at once, one sees the other.
pub(crate) async fn writers(home: &Storage, exclusive: bool) -> Result<Held> {
    let home = home.clone();
    tokio::task::spawn_blocking(move || match &home {
        Storage::Folder(root) => Ok(Held::File(flocked(&root.join("writers"), exclusive)?)),
        Storage::Bucket(bucket) if exclusive => {
            while !live_leases(bucket, "writer")?.is_empty() {
                std::thread::sleep(WAIT_TURN);
            }
            end_dead_leases(bucket, Some("writer"))?;
            Ok(Held::Waited)
        }
        Storage::Bucket(bucket) => loop {
            let writer = own_lease(bucket, "writer", None)?;
            let reading = || format!("reading {}", bucket.url(MAINTENANCE_LEASE));
            let left = match Lease::state(bucket, MAINTENANCE_LEASE, Lease::term()).io_context(reading)? {
                LeaseState::Live { left, .. } => left,
                _ => return Ok(writer),
            };
            drop(writer);
            // Until it is gone, or may have died (looked at again, with a lease of our own).
            let until = Instant::now() + left;
            while Instant::now() < until && bucket.size(MAINTENANCE_LEASE).io_context(reading)?.is_some() {
                std::thread::sleep(WAIT_TURN);
            }
        },
    })
    .await
    .map_err(crate::task_failed("waiting for the writers lock"))?
}

/// Takes over and removes the dead leases under `leases/` (of `kind`, or of any kind): their
/// holders' next renewal is refused, so a writer stopped past its term never commits what gc
/// may free. Returns their keys.
fn end_dead_leases(bucket: &Bucket, kind: Option<&str>) -> Result<Vec<String>> {
    let mut ended = Vec::new();
    for key in dead_leases_of(bucket, kind)? {
        if let Ok(taken) =
            Lease::take(bucket, &key, "maintenance", None, Lease::term()).io_context(lease_error(bucket, &key))?
        {
            taken.release().io_context(|| format!("removing {}", bucket.url(&key)))?;
            ended.push(key);
        }
    }
    Ok(ended)
}

fn dead_leases_of(bucket: &Bucket, kind: Option<&str>) -> Result<Vec<String>> {
    let states =
        Lease::states(bucket, LEASES, Lease::term()).io_context(|| format!("reading {}", bucket.url(LEASES)))?;
    Ok(states
        .into_iter()
        .filter(|(key, state)| match state {
            LeaseState::Dead { body, .. } => {
                key.ends_with(".json") && kind.is_none_or(|kind| body.as_ref().is_none_or(|b| b.kind == kind))
            }
            _ => false,
        })
        .map(|(key, _)| key)
        .collect())
}

/// The leases of a library on a bucket whose holders died (or were stopped) past their term:
/// a leftover each, which [`end_dead_leases`] removes. None in a folder.
pub(crate) fn dead_leases(home: &Storage) -> Result<Vec<String>> {
    match home {
        Storage::Folder(_) => Ok(Vec::new()),
        Storage::Bucket(bucket) => dead_leases_of(bucket, None),
    }
}

/// Removes the dead leases of a library on a bucket (see [`dead_leases`]); returns their keys.
pub(crate) fn end_all_dead_leases(home: &Storage) -> Result<Vec<String>> {
    match home {
        Storage::Folder(_) => Ok(Vec::new()),
        Storage::Bucket(bucket) => end_dead_leases(bucket, None),
    }
}

/// `tmp/repack.lock`, flock()ed (on a bucket, the lease `leases/maintenance.json`): one
/// repack or gc at a time.
pub(crate) struct OnlyRepack {
    /// The lock file, removed when done.
    path: Option<PathBuf>,
    _held: Held,
}

impl OnlyRepack {
    pub(crate) fn take(home: &Storage, tmp: &Path) -> Result<OnlyRepack> {
        let busy = |by: String| Error::User(format!("a repack or gc is running on this library{by}; one at a time"));
        match home {
            Storage::Folder(_) => {
                let path = tmp.join("repack.lock");
                let file = File::create(&path).io_context(|| format!("creating {}", path.display()))?;
                file.try_lock().map_err(|_| busy(String::new()))?;
                Ok(OnlyRepack { path: Some(path), _held: Held::File(file) })
            }
            Storage::Bucket(bucket) => {
                let taken = Lease::take(bucket, MAINTENANCE_LEASE, "maintenance", None, Lease::term())
                    .io_context(lease_error(bucket, MAINTENANCE_LEASE))?;
                match taken {
                    Ok(lease) => {
                        let kept = Kept::new(lease).io_context(|| "starting a lease's renewals".into())?;
                        Ok(OnlyRepack { path: None, _held: Held::Lease(kept) })
                    }
                    Err(LeaseState::Live { body: Some(body), .. }) => {
                        Err(busy(format!(" (process {} on {})", body.pid, body.host)))
                    }
                    Err(_) => Err(busy(String::new())),
                }
            }
        }
    }
}

impl Drop for OnlyRepack {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = fs::remove_file(path);
        }
    }
}

/// Marks a checkin in flight from the moment its image id is handed out until the images row
/// is written or the checkin fails: `tmp/checkin-<image id>.lock`, flock()ed (on a bucket, a
/// lease of kind `checkin` naming the image id). Recovery treats rows of an uncommitted id
/// whose marker nobody holds as a crash's leftovers.
pub(crate) struct InFlight {
    path: Option<PathBuf>,
    _held: Held,
}

impl InFlight {
    fn path(tmp: &Path, image_id: i64) -> PathBuf {
        tmp.join(format!("checkin-{image_id}.lock"))
    }

    pub(crate) fn new(home: &Storage, tmp: &Path, image_id: i64) -> Result<InFlight> {
        if let Storage::Bucket(bucket) = home {
            return Ok(InFlight { path: None, _held: own_lease(bucket, "checkin", Some(image_id))? });
        }
        let path = Self::path(tmp, image_id);
        let file = File::create(&path).io_context(|| format!("creating {}", path.display()))?;
        file.try_lock().map_err(|e| Error::Library {
            path: home.name(""),
            message: format!("{} is locked by another process: {e}", path.display()),
        })?;
        Ok(InFlight { path: Some(path), _held: Held::File(file) })
    }

    /// Which of the image ids `ids` a checkin in flight holds now.
    pub(crate) fn held(home: &Storage, tmp: &Path, ids: &[i64]) -> Result<std::collections::BTreeSet<i64>> {
        match home {
            Storage::Folder(_) => Ok(ids.iter().copied().filter(|&id| held(&Self::path(tmp, id))).collect()),
            Storage::Bucket(bucket) => Ok(live_leases(bucket, "checkin")?
                .into_iter()
                .filter_map(|(_, state)| match state {
                    LeaseState::Live { body: Some(body), .. } => body.image_id.filter(|id| ids.contains(id)),
                    _ => None,
                })
                .collect()),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Removed while still held, so nobody can take a finished checkin for a crashed one.
        if let Some(path) = &self.path {
            let _ = fs::remove_file(path);
        }
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
    /// `<tmp>/<what>-<pid>-<ns>/`, in the library's scratch folder `tmp`.
    pub fn new(tmp: &Path, what: &str) -> Result<Scratch> {
        let dir = tmp.join(format!("{what}-{}-{}", std::process::id(), crate::now_ns()));
        fs::create_dir(&dir).io_context(|| format!("creating {}", dir.display()))?;
        let held = File::open(&dir).io_context(|| format!("opening {}", dir.display()))?;
        held.try_lock().map_err(|e| Error::Library {
            path: tmp.display().to_string(),
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
