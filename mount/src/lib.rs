//! `imagelake mount`: one indexed filesystem of an image version as a file tree, served by FUSE
//! straight from the catalog and the store. No disk is rebuilt and nothing is materialized:
//! the tree comes from the version's `files` rows, each read from the chunks that hold it.
//!
//! - [`tree`]: the inodes, built once from the `files` rows (hard links share one).
//! - [`content`]: where each content's bytes lie in the store, and reads of any range.
//! - [`fs`]: the FUSE requests, answered by several threads at once.
//! - [`write`]: a writable mount's changes, made in the tree and kept in its [`journal`];
//!   [`commit`] makes them the next version, when asked through [`control`] and when the mount
//!   ends; [`recover`] commits what a mount that ended without committing left.

mod commit;
mod content;
mod control;
mod fs;
mod journal;
mod recover;
mod tree;
mod write;

use content::Contents;
pub use control::{Area, Ask, areas, ask, committed};
use imagelake_engine::catalog::{FileKind, FileRow, TREE_COLUMNS};
use imagelake_engine::{EditSummary, Error, IoContext, Library, ReadGuard, Result, Scratch};
pub use recover::{Recovered, recover};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, RwLock};

/// A version loaded and ready to mount: its tree, and where its contents lie once read.
pub struct Loaded {
    fs: fs::ImageFs,
    pending: Option<Pending>,
    library: Arc<Library>,
    /// A writable mount's scratch area, flocked while it lives: `check` lists one a crash left.
    scratch: Option<Scratch>,
    /// Held while mounted: gc and repack keep every pack a reader may need.
    _reading: ReadGuard,
    /// `name@version`.
    pub image: String,
    pub partition: i64,
    /// Inodes in the tree.
    pub inodes: usize,
    /// Other users may use the mount too (`allow_other`; the kernel still checks every
    /// request against the image's modes and owners).
    pub allow_other: bool,
}

/// Loads the tree of one filesystem of `spec` (its only one, or `partition`'s): enough to
/// mount. Where the contents lie is read by [`Loaded::contents`], meanwhile. A `writable` one
/// must be the filesystem edits change, and gets a scratch area.
pub async fn load(library: Arc<Library>, spec: &str, partition: Option<i64>, writable: bool) -> Result<Loaded> {
    let reading = library.reading()?;
    let image = library.resolve(spec).await?;
    let what = format!("{}@{}", image.name, image.version);
    let rows = library.catalog().files(image.image_id, None, &TREE_COLUMNS).await?;
    imagelake_engine::trace::phase("mount: files read");
    let files = rows.iter().map(|r| (r.partition, r.path.as_str(), r.kind, r.inode));
    let partition = imagelake_engine::export::one_filesystem(&what, files, partition)?;
    let scratch = match writable {
        true => {
            library.check_editable(&what, partition).await?;
            Some(Scratch::new(library.tmp(), "mount")?)
        }
        false => None,
    };
    let rows: Vec<FileRow> = rows.into_iter().filter(|r| r.partition == partition).collect();
    let contents = Arc::new(OnceLock::new());
    let pending = Pending::new(&library, image.image_id, &what, partition, &rows, &contents);
    let mut tree =
        tree::Tree::build(rows).map_err(|why| Error::Catalog(format!("{what}, partition {partition}: {why}")))?;
    if let Some(scratch) = &scratch {
        let base = journal::Base { image: what.clone(), partition, generation: 0, renumber: Vec::new() };
        let started = journal::Journal::start(&scratch.dir, base);
        tree.journal = Some(started.io_context(|| format!("starting a journal in {}", scratch.dir.display()))?);
    }
    imagelake_engine::trace::phase("mount: tree built");
    let inodes = tree.len();
    let fs = fs::ImageFs {
        tree: Arc::new(RwLock::new(tree)),
        contents: Arc::new(RwLock::new(contents)),
        image: Arc::new(RwLock::new(what.clone())),
        scratch: scratch.as_ref().map(|s| s.dir.clone()),
        changed: Arc::new(AtomicBool::new(false)),
    };
    let pending = Some(pending);
    Ok(Loaded { fs, pending, library, scratch, _reading: reading, image: what, partition, inodes, allow_other: false })
}

/// Where the contents of a loaded version lie, still to be read from the catalog.
pub struct Pending {
    library: Arc<Library>,
    image_id: i64,
    image: String,
    partition: i64,
    /// A file with each content of the filesystem (inode number, content hash): those the
    /// disk map has no extent of may be kept inside their inode, or compressed.
    files: Vec<(u64, String)>,
    contents: fs::Located,
}

impl Pending {
    fn new(
        library: &Arc<Library>,
        image_id: i64,
        image: &str,
        partition: i64,
        rows: &[FileRow],
        contents: &fs::Located,
    ) -> Pending {
        let mut seen = std::collections::HashSet::new();
        let files = (rows.iter())
            .filter(|r| r.kind == FileKind::File && r.size > 0)
            .filter_map(|r| Some((u64::try_from(r.inode).ok()?, r.content_hash.clone()?)))
            .filter(|(_, hash)| seen.insert(hash.clone()))
            .collect();
        let (library, image, contents) = (library.clone(), image.to_string(), contents.clone());
        Pending { library, image_id, image, partition, files, contents }
    }

    /// Reads the version's disk map and its chunks' locations, and finds the contents kept
    /// inside inodes or compressed; reads wait for this, listings do not.
    pub async fn read(mut self) {
        let catalog = self.library.catalog();
        let found = async {
            let extents = catalog.content_extents(self.image_id, None).await.map_err(|e| e.to_string())?;
            let locations = catalog.chunk_locations(&Contents::chunks(&extents)).await.map_err(|e| e.to_string())?;
            let mut contents = Contents::new(self.library.packs(), &extents, locations)?;
            drop(extents);
            let unmapped: Vec<(u64, String)> =
                std::mem::take(&mut self.files).into_iter().filter(|(_, hash)| !contents.is_mapped(hash)).collect();
            let unmapped = self.library.unmapped_contents(self.image_id, self.partition, unmapped).await;
            contents.keep_unmapped(unmapped.map_err(|e| e.to_string())?);
            contents.room =
                self.library.filesystem_room(self.image_id, self.partition).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(contents)
        };
        let contents = found.await.map_err(|why| format!("{}: reading where its contents lie: {why}", self.image));
        let _ = self.contents.set(contents);
        imagelake_engine::trace::phase("mount: contents located");
    }
}

/// Reads never wait forever: a reading that failed halfway, or never ran, leaves an error.
impl Drop for Pending {
    fn drop(&mut self) {
        let _ = self.contents.set(Err(format!("{}: where its contents lie could not be read", self.image)));
    }
}

impl Loaded {
    /// What is left to read before files can be: run it beside [`serve`].
    pub fn contents(&mut self) -> Option<Pending> {
        self.pending.take()
    }
}

/// Mounts `loaded` on `dir` and serves it until it is unmounted. `ready` runs once the mount is
/// in place, before the first request is answered. A writable mount answers `ask`s meanwhile,
/// and commits what changed since its last commit when it ends, unless told to discard it;
/// its async work runs on `runtime`. Returns what that last commit made.
pub fn serve(
    loaded: Loaded,
    dir: &Path,
    threads: usize,
    runtime: tokio::runtime::Handle,
    ready: impl FnOnce(),
) -> Result<Option<EditSummary>> {
    use fuser::MountOption as O;
    let mut config = fuser::Config::default();
    let access = if loaded.scratch.is_some() { O::RW } else { O::RO };
    config.mount_options = vec![
        access,
        O::FSName(format!("imagelake:{}", loaded.image)),
        O::Subtype("imagelake".into()),
        // The kernel checks permissions against the image's modes and owners, as it would on
        // a mount of the disk; devices and set-id bits of an image mean nothing on the host.
        O::DefaultPermissions,
        O::NoDev,
        O::NoSuid,
    ];
    if loaded.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    let mount_error =
        |e: std::io::Error| Error::User(format!("cannot mount {} on {}: {e}", loaded.image, dir.display()));
    let Loaded { fs, library, scratch, _reading: reading, partition, .. } = loaded;
    let committer = Arc::new(commit::Committer { fs: fs.clone(), library, partition, dir: dir.display().to_string() });
    let discarded = Arc::new(AtomicBool::new(false));
    let session = fuser::Session::new(fs, dir, &config).map_err(mount_error)?;
    if let Some(scratch) = &scratch {
        control::listen(&scratch.dir, dir, committer.clone(), discarded.clone(), runtime.clone())?;
    }
    imagelake_engine::trace::phase("mount: mounted");
    ready();
    let served = session.run();
    served.map_err(|error| Error::Io { context: format!("serving the mount on {}", dir.display()), error })?;
    let last = match scratch.is_some() && !discarded.load(std::sync::atomic::Ordering::SeqCst) {
        true => runtime.block_on(committer.commit()),
        false => Ok(None),
    };
    if last.is_err() {
        // What was written stays in the scratch area, which `check` then lists.
        std::mem::forget(scratch);
    }
    drop(reading);
    last
}

/// Unmounts the mount on `dir`: the serving process then ends.
pub fn unmount(dir: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::User(format!("{}: a path with a NUL byte", dir.display())))?;
    // Busy for a moment after its last reader closed (a loaded machine answers late): a few
    // tries, then the error.
    let mut tries = 0;
    let error = loop {
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        tries += 1;
        if error.raw_os_error() != Some(libc::EBUSY) || tries == 20 {
            break error;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Not root: fuse3's helper unmounts what the user mounted.
    if error.raw_os_error() == Some(libc::EPERM)
        && let Ok(status) = std::process::Command::new("fusermount3").arg("-u").arg(dir).status()
        && status.success()
    {
        return Ok(());
    }
    Err(Error::User(format!("cannot unmount {}: {error}", dir.display())))
}
