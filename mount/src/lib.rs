//! `imagelake mount`: one indexed filesystem of an image version as a file tree, served by FUSE
//! straight from the catalog and the store. No disk is rebuilt and nothing is materialized:
//! the tree comes from the version's `files` rows, each read from the chunks that hold it.
//!
//! - [`tree`]: the inodes, built once from the `files` rows (hard links share one).
//! - [`content`]: where each content's bytes lie in the store, and reads of any range.
//! - [`fs`]: the FUSE requests, answered by several threads at once.
//!
//! Read-only for now: writable mounts (changes kept as the next version) are to come.

mod content;
mod fs;
mod tree;

use content::Contents;
use imagelake_engine::catalog::{FileRow, TREE_COLUMNS};
use imagelake_engine::{Error, Library, ReadGuard, Result};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A version loaded and ready to mount: its tree, and where its contents lie once read.
pub struct Loaded {
    fs: fs::ImageFs,
    pending: Option<Pending>,
    /// Held while mounted: gc and repack keep every pack a reader may need.
    _reading: ReadGuard,
    /// `name@version`.
    pub image: String,
    pub partition: i64,
    /// Inodes in the tree.
    pub inodes: usize,
}

/// Loads the tree of one filesystem of `spec` (its only one, or `partition`'s): enough to
/// mount. Where the contents lie is read by [`Loaded::contents`], meanwhile.
pub async fn load(library: Arc<Library>, spec: &str, partition: Option<i64>) -> Result<Loaded> {
    let reading = library.reading()?;
    let image = library.resolve(spec).await?;
    let what = format!("{}@{}", image.name, image.version);
    let rows = library.catalog().files(image.image_id, None, &TREE_COLUMNS).await?;
    let partition = imagelake_engine::export::one_filesystem(&what, rows.iter().map(|r| r.partition), partition)?;
    let rows: Vec<FileRow> = rows.into_iter().filter(|r| r.partition == partition).collect();
    let tree =
        tree::Tree::build(rows).map_err(|why| Error::Catalog(format!("{what}, partition {partition}: {why}")))?;
    let inodes = tree.len();
    let contents = Arc::new(OnceLock::new());
    let pending = Pending { library, image_id: image.image_id, image: what.clone(), contents: contents.clone() };
    let fs = fs::ImageFs { tree, contents, image: what.clone() };
    Ok(Loaded { fs, pending: Some(pending), _reading: reading, image: what, partition, inodes })
}

/// Where the contents of a loaded version lie, still to be read from the catalog.
pub struct Pending {
    library: Arc<Library>,
    image_id: i64,
    image: String,
    contents: Arc<OnceLock<Result<Contents, String>>>,
}

impl Pending {
    /// Reads the version's disk map and its chunks' locations; reads wait for this, listings
    /// do not.
    pub async fn read(self) {
        let catalog = self.library.catalog();
        let found = async {
            let extents = catalog.content_extents(self.image_id, None).await.map_err(|e| e.to_string())?;
            let locations = catalog.chunk_locations(&Contents::chunks(&extents)).await.map_err(|e| e.to_string())?;
            Contents::new(self.library.root(), &extents, locations)
        };
        let contents = found.await.map_err(|why| format!("{}: reading where its contents lie: {why}", self.image));
        let _ = self.contents.set(contents);
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
/// in place, before the first request is answered.
pub fn serve(loaded: Loaded, dir: &Path, threads: usize, ready: impl FnOnce()) -> Result<()> {
    use fuser::MountOption as O;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        O::RO,
        O::FSName(format!("imagelake:{}", loaded.image)),
        O::Subtype("imagelake".into()),
        // The kernel checks permissions against the image's modes and owners, as it would on
        // a mount of the disk; devices and set-id bits of an image mean nothing on the host.
        O::DefaultPermissions,
        O::NoDev,
        O::NoSuid,
    ];
    config.n_threads = Some(threads.max(1));
    config.clone_fd = true;
    let mount_error =
        |e: std::io::Error| Error::User(format!("cannot mount {} on {}: {e}", loaded.image, dir.display()));
    let Loaded { fs, _reading: reading, .. } = loaded;
    let session = fuser::Session::new(fs, dir, &config).map_err(mount_error)?;
    ready();
    let served = session.run();
    drop(reading);
    served.map_err(|error| Error::Io { context: format!("serving the mount on {}", dir.display()), error })
}

/// Unmounts the mount on `dir`: the serving process then ends.
pub fn unmount(dir: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::User(format!("{}: a path with a NUL byte", dir.display())))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    // Not root: fuse3's helper unmounts what the user mounted.
    if error.raw_os_error() == Some(libc::EPERM)
        && let Ok(status) = std::process::Command::new("fusermount3").arg("-u").arg(dir).status()
        && status.success()
    {
        return Ok(());
    }
    Err(Error::User(format!("cannot unmount {}: {error}", dir.display())))
}
