//! A library is a directory (or a bucket prefix, store/FORMAT.md "A library on a bucket"):
//! its format marker, the locks, the packs and the catalog.
//!
//! ```text
//! LIBRARY/
//!   imagelake.json    format marker and version, checked on every open
//!   lock              flock()ed (locks.rs), as are readers, writers and what tmp/ holds
//!   retired           packs a repack or gc has emptied, deleted once no reader is left
//!   next-image-id     the next image id to hand out
//!   packs/ab/*.pack   published packs (store/FORMAT.md)
//!   tmp/              packs being written, scratch folders; leftovers of a crash are safe to delete
//!   catalog/*.lance   one Lance dataset per table
//!   catalog/checksums the blake3 of every file of the tables' committed versions
//!   access.json       users, grants and token hashes (access/store.rs), when there are users
//! ```

use crate::catalog::{self, Catalog, ImageRow, ImageState, ProvenanceRow};
use crate::locks::{self, Held, ReadGuard};
use crate::storage::{Bucket, Location, Storage, claims};
use crate::store::Packs;
use crate::{Error, IoContext, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u64 = 5;
/// The formats this build upgrades (on open, once): 2 lacks the catalog's checksums, 2 and 3
/// store every version's `files` and `extents` rows whole rather than in shared segments, and
/// 2 to 4 lack the columns format 5 added to `packages`.
const UPGRADES_FROM: std::ops::RangeInclusive<u64> = 2..=4;
/// The first format whose `files` and `extents` are stored in segments.
const SEGMENTED_FROM: u64 = 4;
const MARKER: &str = "imagelake.json";

/// Cheap to clone: clones share the catalog (its open datasets and caches).
#[derive(Clone)]
pub struct Library {
    /// The library's folder or bucket prefix.
    home: Storage,
    /// Where packs being written and scratch files are made: the folder's `tmp/`, or for a
    /// bucket a folder on this machine (see [`Library::open_bucket`]).
    tmp: PathBuf,
    packs: Packs,
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

/// The library's format version, from its marker.
fn format_version(root: &Path) -> Result<u64> {
    let marker = root.join(MARKER);
    let text = fs::read(&marker).io_context(|| format!("reading {}", marker.display()))?;
    parse_marker(&text, &root.display().to_string())
}

/// The format version the marker `text` of the library at `location` says.
fn parse_marker(text: &[u8], location: &str) -> Result<u64> {
    let lib_err = |message: String| Error::Library { path: location.to_string(), message };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Marker {
        format: String,
        format_version: u64,
    }
    let marker: Marker = serde_json::from_slice(text)
        .map_err(|e| lib_err(format!("{MARKER} is not the marker imagelake writes: {e}")))?;
    if marker.format != "imagelake-library" {
        return Err(lib_err(format!("{MARKER} says format {:?}, not \"imagelake-library\"", marker.format)));
    }
    Ok(marker.format_version)
}

/// The marker of this build's format.
fn marker() -> String {
    let meta = serde_json::json!({ "format": "imagelake-library", "format_version": FORMAT_VERSION });
    format!("{meta:#}\n")
}

/// Writes the marker of this build's format, via a rename.
fn write_marker(root: &Path) -> Result<()> {
    let tmp = root.join(format!("{MARKER}.tmp"));
    fs::write(&tmp, marker())
        .and_then(|_| fs::rename(&tmp, root.join(MARKER)))
        .io_context(|| format!("writing {}", root.join(MARKER).display()))
}

impl Library {
    /// Opens the library the user named (`-L`): a folder, or a bucket prefix.
    pub async fn open_at(location: &str) -> Result<Library> {
        match Location::parse(location)? {
            Location::Folder(root) => Library::open(&root).await,
            Location::Bucket { bucket, prefix } => {
                let settings = crate::storage::S3Settings::from_env();
                let opened = Bucket::open(&settings, &bucket, &prefix).io_context(|| format!("opening {location}"))?;
                Library::open_bucket(opened).await
            }
        }
    }

    /// Opens the library under a bucket prefix, creating it if the prefix holds no object.
    /// Its scratch folder is on this machine: `IMAGELAKE_SCRATCH` if set, else one under the
    /// system's temporary folder named after the bucket and prefix.
    pub async fn open_bucket(bucket: Bucket) -> Result<Library> {
        let location = bucket.url("");
        let lib_err = |message: String| Error::Library { path: location.clone(), message };
        let home = Storage::Bucket(bucket.clone());
        // The bucket's errors name the object.
        let read_marker = || bucket.get(MARKER).io_context(|| "opening the library".into());
        let text = match read_marker()? {
            Some(text) => text,
            None => {
                // Only a library's own skeleton may be there (a creation cut short, or one
                // racing this one).
                let listed = bucket.list("").io_context(|| format!("listing {location}"))?;
                let own = ["catalog/", "leases/", "clock/", "claims/"];
                if let Some(foreign) = listed.iter().find(|o| !own.iter().any(|p| o.key.starts_with(p))) {
                    return Err(lib_err(format!(
                        "holds {} and is not an imagelake library (no {MARKER})",
                        foreign.key
                    )));
                }
                Catalog::open(home.sub("catalog")).await?;
                // The marker goes last, and once: of two creators one writes it.
                bucket
                    .put_new(MARKER, marker().into_bytes())
                    .io_context(|| format!("writing {}", bucket.url(MARKER)))?;
                read_marker()?.ok_or_else(|| lib_err(format!("{MARKER} vanished as it was written")))?
            }
        };
        let version = parse_marker(&text, &location)?;
        if version != FORMAT_VERSION && version != 4 {
            return Err(lib_err(format!(
                "format version {version}; this imagelake reads version {FORMAT_VERSION} on a bucket"
            )));
        }
        let tmp = match std::env::var_os("IMAGELAKE_SCRATCH") {
            Some(dir) => PathBuf::from(dir),
            None => {
                std::env::temp_dir().join(format!("imagelake-{}", &blake3::hash(location.as_bytes()).to_hex()[..16]))
            }
        };
        fs::create_dir_all(&tmp).io_context(|| format!("creating the scratch folder {}", tmp.display()))?;
        let catalog = Catalog::open(home.sub("catalog")).await?;
        let library = Library { packs: Packs(home.clone()), home, tmp, catalog: std::sync::Arc::new(catalog) };
        if version == 4 {
            // Once, with no writer, gc or repack between its read of the tables and its commit.
            let _maintaining = library.maintaining().await?;
            let text = read_marker()?.ok_or_else(|| lib_err(format!("{MARKER} vanished")))?;
            if parse_marker(&text, &location)? == 4 {
                catalog::upgrade::add_columns(library.catalog()).await?;
                bucket.put(MARKER, marker().into_bytes()).io_context(|| format!("writing {}", bucket.url(MARKER)))?;
            }
        }
        Ok(library)
    }

    /// Opens the library at `root`, creating it if the directory is absent or empty.
    pub async fn open(root: &Path) -> Result<Library> {
        let lib_err = |message: String| Error::Library { path: root.display().to_string(), message };
        let marker = root.join(MARKER);
        if !marker.exists() {
            fs::create_dir_all(root).map_err(|e| lib_err(e.to_string()))?;
            // Two processes may create one library at once: the lock serialises them.
            let _lock = locks::library(&Storage::Folder(root.to_path_buf()))?;
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
                Catalog::open(Storage::Folder(root.join("catalog"))).await?;
                // The marker goes last, via a rename: a library is either whole or unmarked.
                write_marker(root)?;
            }
        }
        let catalog = match format_version(root)? {
            FORMAT_VERSION => {
                // An upgrade that stopped after its marker left the old catalog behind.
                catalog::upgrade::remove_old(root)?;
                Catalog::open(Storage::Folder(root.join("catalog"))).await?
            }
            v if UPGRADES_FROM.contains(&v) => {
                // Once, under the lock and with no writer between its reads and its commit.
                let home = Storage::Folder(root.to_path_buf());
                let _lock = locks::library(&home)?;
                let _writers = locks::writers(&home, true).await?;
                let v = format_version(root)?;
                if UPGRADES_FROM.contains(&v) {
                    if v < SEGMENTED_FROM && !catalog::upgrade::finish(root)? {
                        catalog::upgrade::rewrite(root).await?;
                    }
                    let catalog = Catalog::open(Storage::Folder(root.join("catalog"))).await?;
                    catalog::upgrade::add_columns(&catalog).await?;
                    write_marker(root)?;
                }
                catalog::upgrade::remove_old(root)?;
                Catalog::open(Storage::Folder(root.join("catalog"))).await?
            }
            v => return Err(lib_err(format!("format version {v}; this imagelake reads version {FORMAT_VERSION}"))),
        };
        Ok(Library {
            home: Storage::Folder(root.to_path_buf()),
            tmp: root.join("tmp"),
            packs: Packs(Storage::Folder(root.to_path_buf())),
            catalog: std::sync::Arc::new(catalog),
        })
    }

    /// The library's folder or bucket prefix.
    pub fn home(&self) -> &Storage {
        &self.home
    }

    /// The library's folder, if it is one (not a bucket prefix).
    pub fn folder(&self) -> Option<&Path> {
        self.home.folder()
    }

    /// The library as messages name it: its folder's path or its `s3://` URL.
    pub fn location(&self) -> String {
        match &self.home {
            Storage::Folder(root) => root.display().to_string(),
            Storage::Bucket(bucket) => bucket.url(""),
        }
    }

    /// Where the library's packs are.
    pub fn packs(&self) -> &Packs {
        &self.packs
    }

    /// The folder packs being written and scratch files are made in (see `locks::Scratch`):
    /// the library's `tmp/`, or for a library on a bucket a folder on this machine.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Takes the library lock (see [`locks::library`]).
    pub(crate) fn lock(&self) -> Result<Held> {
        locks::library(&self.home)
    }

    /// Marks this process as a reader until the guard is dropped (see [`locks::reading`]):
    /// checkout, export, cat, verify and every SQL statement hold one.
    pub fn reading(&self) -> Result<ReadGuard> {
        locks::reading(&self.home)
    }

    /// The `writers` flock, shared, until the returned guard is dropped (see [`locks::writers`]).
    pub(crate) async fn writing(&self) -> Result<Held> {
        locks::writers(&self.home, false).await
    }

    /// The maintenance locks of gc and rebuild: one of them (or a repack) at a time, and no
    /// writer between them (see [`locks::writers`]); the second guard may be dropped first.
    pub(crate) async fn maintaining(&self) -> Result<(locks::OnlyRepack, Held)> {
        let only = self.only_repack()?;
        Ok((only, locks::writers(&self.home, true).await?))
    }

    /// One repack or gc at a time (see [`locks::OnlyRepack`]).
    pub(crate) fn only_repack(&self) -> Result<locks::OnlyRepack> {
        locks::OnlyRepack::take(&self.home, &self.tmp)
    }

    /// Marks the checkin of `image_id` in flight (see [`locks::InFlight`]).
    pub(crate) fn in_flight(&self, image_id: i64) -> Result<locks::InFlight> {
        locks::InFlight::new(&self.home, &self.tmp, image_id)
    }

    /// Hands out a fresh image id, for the writer holding `writing`. Ids of checkins that
    /// never commit are simply not used. On a bucket the id is claimed (storage/claims.rs).
    pub(crate) fn allocate_image_id(&self, writing: &str) -> Result<i64> {
        match &self.home {
            Storage::Folder(root) => allocate_image_id(root),
            Storage::Bucket(bucket) => claim(bucket, IMAGE_ID_CLAIMS, writing),
        }
    }

    /// Writes provenance and then the images row, holding the library lock so that the
    /// version number cannot be taken by a concurrent commit (on a bucket it is claimed as
    /// well, for a lock whose holder was too slow). `writing` is renewed right before the
    /// images row: a writer that lost it must not commit.
    pub(crate) async fn commit(&self, image: &mut ImageRow, origin: Origin, writing: &Held) -> Result<()> {
        let lock = self.lock()?;
        let newest = self.images().await?.into_iter().filter(|i| i.name == image.name).max_by_key(|i| i.version);
        image.version = match &self.home {
            Storage::Folder(_) => newest.as_ref().map_or(1, |i| i.version + 1),
            Storage::Bucket(bucket) => claim(bucket, &format!("{VERSION_CLAIMS}/{}", image.name), &writing.holder())?,
        };
        image.parent_id = origin.parent.or(newest.map(|i| i.image_id));
        let provenance = ProvenanceRow {
            image_id: image.image_id,
            parent_id: image.parent_id,
            operation: origin.operation,
            arguments: origin.arguments.to_string(),
            actor: image.created_by.clone(),
            at: image.created_at,
        };
        self.catalog.append(&[provenance]).await?;
        crate::trace::phase("commit: provenance appended");
        writing.confirm(&format!("committing {}@{}", image.name, image.version))?;
        self.catalog.append(std::slice::from_ref(image)).await?;
        drop(lock);
        Ok(())
    }

    /// Every committed image version.
    pub async fn images(&self) -> Result<Vec<ImageRow>> {
        self.catalog.images().await
    }

    /// Finds the image version a spec names, among the versions not deleted.
    pub async fn resolve(&self, spec: &str) -> Result<ImageRow> {
        let found = self.resolve_any(spec).await?;
        if found.state.is_hidden() {
            let how = if found.state == ImageState::Deleted {
                "deleted (undelete restores it)"
            } else {
                "deleted and purged"
            };
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
            images.retain(|i| !i.state.is_hidden());
        }
        let found = match &parsed {
            ImageSpec::Id(id) => images.into_iter().find(|i| i.image_id == *id),
            ImageSpec::Version(name, v) => images.into_iter().find(|i| &i.name == name && i.version == *v),
            ImageSpec::Newest(name) => images.into_iter().filter(|i| &i.name == name).max_by_key(|i| i.version),
        };
        found.ok_or_else(|| Error::NoImage(spec.to_string()))
    }
}

/// Where a bucket's image ids, and each name's version numbers, are claimed.
const IMAGE_ID_CLAIMS: &str = "claims/image-ids";
const VERSION_CLAIMS: &str = "claims/versions";

/// Claims the next number under `folder` of the bucket, for `holder`.
fn claim(bucket: &Bucket, folder: &str, holder: &str) -> Result<i64> {
    let number =
        claims::claim_next(bucket, folder, holder).io_context(|| format!("claiming under {}", bucket.url(folder)))?;
    i64::try_from(number)
        .map_err(|_| Error::Library { path: bucket.url(folder), message: format!("{number} is out of range") })
}

/// Hands out a fresh image id of the library folder `root`.
fn allocate_image_id(root: &Path) -> Result<i64> {
    let _lock = locks::library(&Storage::Folder(root.to_path_buf()))?;
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

/// What made a version, for its provenance row.
pub(crate) struct Origin {
    /// checkin, replace_content, import, remove, set_meta, patch, clone.
    pub operation: String,
    pub arguments: serde_json::Value,
    /// The version it was made from; without one, the newest version of its name, if any.
    pub parent: Option<i64>,
}

tokio::task_local! {
    /// The server user an operation runs for (see [`acting_for`]).
    static ACTING_FOR: String;
}

/// Runs `work` for `user`, a user of the server: what it commits records them as its actor,
/// not the local user the server runs as. `None` runs it as the local user.
pub async fn acting_for<F: std::future::Future>(user: Option<String>, work: F) -> F::Output {
    match user {
        Some(user) => ACTING_FOR.scope(user, work).await,
        None => work.await,
    }
}

/// Who runs the operation: the server user it runs for, else $USER or $LOGNAME, else the name
/// of the effective uid (a service or a container often has neither variable), else the uid.
pub(crate) fn actor() -> String {
    if let Ok(user) = ACTING_FOR.try_with(String::clone) {
        return user;
    }
    if let Ok(name) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        return name;
    }
    // SAFETY: geteuid has no preconditions; getpwuid returns NULL or a pointer to a static
    // entry whose pw_name is a NUL-terminated string, read at once.
    unsafe {
        let uid = libc::geteuid();
        let entry = libc::getpwuid(uid);
        if entry.is_null() || (*entry).pw_name.is_null() {
            return format!("uid {uid}");
        }
        std::ffi::CStr::from_ptr((*entry).pw_name).to_string_lossy().into_owned()
    }
}
