//! A library is a directory: its format marker, the lock, the packs and the catalog.
//!
//! ```text
//! LIBRARY/
//!   imagelake.json    format marker and version, checked on every open
//!   lock              flock()ed to allocate image ids and to commit versions
//!   readers           flock()ed shared by every reader; exclusively to delete files
//!   retired           packs a repack has emptied, deleted once no reader is left
//!   next-image-id     the next image id to hand out
//!   packs/ab/*.pack   published packs (store/FORMAT.md)
//!   tmp/              packs being written; leftovers of a crash are safe to delete
//!   catalog/*.lance   one Lance dataset per table
//! ```

use crate::catalog::{Catalog, ImageRow, Table};
use crate::{Error, IoContext, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampNanosecondType};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u64 = 2;
const MARKER: &str = "imagelake.json";

/// Cheap to clone: clones share the catalog (its open datasets and caches).
#[derive(Clone)]
pub struct Library {
    root: PathBuf,
    catalog: std::sync::Arc<Catalog>,
}

/// How a user names an image version: `name`, `name@3`, or an image id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSpec {
    Newest(String),
    Version(String, i64),
    Id(i64),
}

impl ImageSpec {
    pub fn parse(text: &str) -> Result<ImageSpec> {
        if let Ok(id) = text.parse::<i64>() {
            return Ok(ImageSpec::Id(id));
        }
        match text.split_once('@') {
            None => {
                check_name(text)?;
                Ok(ImageSpec::Newest(text.to_string()))
            }
            Some((name, version)) => {
                check_name(name)?;
                let version = version
                    .parse::<i64>()
                    .map_err(|_| Error::User(format!("{text:?}: the version after '@' must be a number")))?;
                Ok(ImageSpec::Version(name.to_string(), version))
            }
        }
    }
}

/// Image names: letters, digits, '.', '_', '-'; not starting with a digit-only form.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.parse::<i64>().is_err();
    if ok {
        Ok(())
    } else {
        Err(Error::User(format!(
            "{name:?} is not a valid image name (letters, digits, '.', '_', '-'; not a bare number)"
        )))
    }
}

impl Library {
    /// Opens the library at `root`, creating it if the directory is absent or empty.
    pub async fn open(root: &Path) -> Result<Library> {
        let lib_err = |message: String| Error::Library { path: root.display().to_string(), message };
        let marker = root.join(MARKER);
        if !marker.exists() {
            fs::create_dir_all(root).map_err(|e| lib_err(e.to_string()))?;
            // Two processes may create one library at once: the lock serialises them.
            let _lock = lock(root)?;
            if !marker.exists() {
                // Only a library's own skeleton may be there (a creation cut short).
                let mut entries = fs::read_dir(root).map_err(|e| lib_err(e.to_string()))?;
                let foreign =
                    |name: &std::ffi::OsStr| !["lock", "readers", "packs", "tmp", "catalog"].iter().any(|n| name == *n);
                if entries.any(|e| e.is_ok_and(|e| foreign(&e.file_name()))) {
                    return Err(lib_err("exists and is not an imagelake library (no imagelake.json)".into()));
                }
                for dir in ["packs", "tmp", "catalog"] {
                    fs::create_dir_all(root.join(dir)).map_err(|e| lib_err(e.to_string()))?;
                }
                Catalog::open(&root.join("catalog")).await?;
                // The marker goes last, via a rename: a library is either whole or unmarked.
                let meta = serde_json::json!({ "format": "imagelake-library", "format_version": FORMAT_VERSION });
                let tmp = root.join(format!("{MARKER}.tmp"));
                fs::write(&tmp, format!("{meta:#}\n"))
                    .and_then(|_| fs::rename(&tmp, &marker))
                    .io_context(|| format!("creating library {}", root.display()))?;
            }
        }
        let text = fs::read_to_string(&marker).io_context(|| format!("reading {}", marker.display()))?;
        let meta: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| lib_err(format!("{MARKER} is not valid JSON: {e}")))?;
        match meta.get("format_version").and_then(|v| v.as_u64()) {
            Some(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(lib_err(format!("format version {v}; this imagelake reads version {FORMAT_VERSION}")));
            }
            None => return Err(lib_err(format!("{MARKER} has no format_version"))),
        }
        let catalog = Catalog::open(&root.join("catalog")).await?;
        Ok(Library { root: root.to_path_buf(), catalog: std::sync::Arc::new(catalog) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Takes the library lock (see [`lock`]).
    pub(crate) fn lock(&self) -> Result<File> {
        lock(&self.root)
    }

    /// Marks this process as a reader until the guard is dropped: checkout, export, cat,
    /// verify and every SQL statement hold one. Files a reader may still need (packs a
    /// repack emptied, superseded catalog files) are deleted only while no guard is held.
    pub fn reading(&self) -> Result<ReadGuard> {
        let file = open_readers(&self.root)?;
        file.lock_shared().io_context(|| format!("locking {}", self.root.join("readers").display()))?;
        Ok(ReadGuard { _file: file })
    }

    /// The right to delete what readers may need, if no reader holds a guard now (never
    /// waits: a reader can be a long export, or this process's own SQL statement).
    pub(crate) fn no_readers(&self) -> Result<Option<File>> {
        let file = open_readers(&self.root)?;
        Ok(file.try_lock().is_ok().then_some(file))
    }

    /// Every committed image version.
    pub async fn images(&self) -> Result<Vec<ImageRow>> {
        let batches = self
            .catalog
            .scan(
                ImageRow::NAME,
                &[
                    "image_id",
                    "name",
                    "version",
                    "parent_id",
                    "created_at",
                    "created_by",
                    "state",
                    "source_format",
                    "virtual_size",
                    "stored_bytes_new",
                    "os_name",
                    "os_version",
                    "hostname",
                    "description",
                ],
                None,
            )
            .await?;
        Ok(batches.iter().flat_map(image_rows).collect())
    }

    /// Finds the image version a spec names, among the versions not deleted.
    pub async fn resolve(&self, spec: &str) -> Result<ImageRow> {
        let found = self.resolve_any(spec).await?;
        if found.state == crate::gc::DELETED || found.state == crate::gc::PURGED {
            let how =
                if found.state == crate::gc::DELETED { "deleted (undelete restores it)" } else { "deleted and purged" };
            return Err(Error::User(format!("{}@{} is {how}", found.name, found.version)));
        }
        Ok(found)
    }

    /// Finds the image version a spec names, deleted ones included (a bare name is the newest
    /// version that is not deleted).
    pub async fn resolve_any(&self, spec: &str) -> Result<ImageRow> {
        let parsed = ImageSpec::parse(spec)?;
        let mut images = self.images().await?;
        if let ImageSpec::Newest(_) = parsed {
            images.retain(|i| i.state != crate::gc::DELETED && i.state != crate::gc::PURGED);
        }
        let found = match &parsed {
            ImageSpec::Id(id) => images.into_iter().find(|i| i.image_id == *id),
            ImageSpec::Version(name, v) => images.into_iter().find(|i| &i.name == name && i.version == *v),
            ImageSpec::Newest(name) => images.into_iter().filter(|i| &i.name == name).max_by_key(|i| i.version),
        };
        found.ok_or_else(|| Error::User(format!("no image {spec} in the library")))
    }
}

/// Takes the lock of the library at `root`: an exclusive flock, released when the returned
/// file is dropped (or the process dies).
pub(crate) fn lock(root: &Path) -> Result<File> {
    let path = root.join("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .io_context(|| format!("opening {}", path.display()))?;
    lock.lock().io_context(|| format!("locking {}", path.display()))?;
    Ok(lock)
}

/// See [`Library::reading`].
pub struct ReadGuard {
    _file: File,
}

fn open_readers(root: &Path) -> Result<File> {
    let path = root.join("readers");
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .io_context(|| format!("opening {}", path.display()))
}

/// Hands out a fresh image id. Ids of checkins that never commit are simply not used.
pub(crate) fn allocate_image_id(root: &Path) -> Result<i64> {
    let _lock = lock(root)?;
    let path = root.join("next-image-id");
    let next = match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<i64>().map_err(|_| Error::Library {
            path: root.display().to_string(),
            message: format!("next-image-id holds {text:?}, not a number"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
        Err(e) => return Err(Error::Io { context: format!("reading {}", path.display()), error: e }),
    };
    let tmp = root.join("next-image-id.tmp");
    let mut f = File::create(&tmp).io_context(|| format!("writing {}", tmp.display()))?;
    writeln!(f, "{}", next + 1).and_then(|_| f.sync_all()).io_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).io_context(|| format!("renaming {}", tmp.display()))?;
    Ok(next)
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

fn image_rows(b: &RecordBatch) -> Vec<ImageRow> {
    let i64s = |i: usize| b.column(i).as_primitive::<Int64Type>();
    let strs = |i: usize| b.column(i).as_string::<i32>();
    let opt = |i: usize, row: usize| {
        let c = strs(i);
        c.is_valid(row).then(|| c.value(row).to_string())
    };
    let created = b.column(4).as_primitive::<TimestampNanosecondType>();
    (0..b.num_rows())
        .map(|r| ImageRow {
            image_id: i64s(0).value(r),
            name: strs(1).value(r).to_string(),
            version: i64s(2).value(r),
            parent_id: i64s(3).is_valid(r).then(|| i64s(3).value(r)),
            created_at: created.value(r),
            created_by: strs(5).value(r).to_string(),
            state: strs(6).value(r).to_string(),
            source_format: strs(7).value(r).to_string(),
            virtual_size: i64s(8).value(r),
            stored_bytes_new: i64s(9).value(r),
            os_name: opt(10, r),
            os_version: opt(11, r),
            hostname: opt(12, r),
            description: opt(13, r),
        })
        .collect()
}
