//! The catalog: one Lance dataset per table under `catalog/`.
//!
//! Lance commits one dataset at a time, so a checkin appends the rows of every other table
//! first and the `images` row last: that row is the commit point. Readers see only rows of
//! committed images (the SQL layer filters on `images`), and the rows of a crashed checkin are
//! orphans that recovery may delete.

mod checksums;
mod columns;
mod integrity;
mod kept;
pub use kept::stored_rows;
mod queries;
mod schema;
mod segments;
mod stores;
pub(crate) mod upgrade;

pub use integrity::{CatalogProof, DamagedCatalogFile};
pub use queries::StoredAdvisory;
pub use schema::*;
pub use segments::{BrokenSegment, MANIFESTS, ManifestWrite, SegmentRow, SegmentUsers, Segmented};
pub use stores::lance_stores;

use crate::storage::{Lease, Storage};
use crate::{Error, IoContext, Result};
use arrow::array::{RecordBatch, RecordBatchIterator};
use futures::TryStreamExt;
use kept::Kept;
use lance::Dataset;
use lance::dataset::builder::DatasetBuilder;
use lance::dataset::optimize::{CompactionOptions, compact_files};
use lance::dataset::{WriteMode, WriteParams};
use lance::index::DatasetIndexExt;
use lance_index::optimize::OptimizeOptions;
use lance_index::{IndexType, scalar::ScalarIndexParams};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The B-tree indexes the access paths need: per-image reads (`image_id`, then the segments
/// a version lists), point questions ("which images contain content H", "which ship package
/// P", "where is /etc/x", then which versions use the segments found), and the store's
/// lookups (`chunk_hash`). Lance answers a filter on an indexed column from the index and
/// scans only fragments appended since the index was last brought up to date.
pub const INDEXES: [(&str, &str); 10] = [
    ("files", "segment"),
    ("files", "content_hash"),
    ("files", "path"),
    ("packages", "name"),
    ("packages", "image_id"),
    ("extents", "segment"),
    ("extents", "content_hash"),
    ("segments", "image_id"),
    ("segments", "segment"),
    ("chunks", "chunk_hash"),
];

/// After a checkin, a table is compacted once this many of its fragments hold fewer than
/// `COMPACT_ROWS` rows; a repack compacts every table whose small fragments are two or more.
pub const COMPACT_AFTER_FRAGMENTS: usize = 8;

/// When `Catalog::maintain` compacts a table and brings its indexes up to date.
#[derive(Debug, Clone, Copy)]
pub struct Maintenance {
    /// Compact a table with this many fragments of fewer than `COMPACT_ROWS` rows.
    pub small_fragments: usize,
    /// Add a segment to an index once this many fragments are not in it.
    pub lagging_fragments: usize,
    /// Merge an index's segments once it has this many.
    pub max_segments: usize,
}

impl Maintenance {
    /// After a checkin: each checkin appends one small fragment per table; the work is done
    /// once several wait, so that most commits pay none of it.
    pub const AFTER_CHECKIN: Maintenance =
        Maintenance { small_fragments: COMPACT_AFTER_FRAGMENTS, lagging_fragments: 4, max_segments: 8 };
    /// Everything compacted and indexed in one segment (repack, benchmarks).
    pub const FULL: Maintenance = Maintenance { small_fragments: 2, lagging_fragments: 1, max_segments: 1 };
}
const COMPACT_ROWS: usize = 1 << 20;

/// Bounds of the caches a catalog keeps for the life of its process (see [`Catalog::dataset`]).
const INDEX_CACHE_BYTES: usize = 256 << 20;
const METADATA_CACHE_BYTES: usize = 64 << 20;

/// How long a table's `_versions` folder must have been unchanged before a dataset opened
/// from it is reused (see [`Catalog::dataset`]): well above the coarse clock file systems
/// stamp folders with.
const SETTLED: Duration = Duration::from_secs(1);

pub struct Catalog {
    /// Where the catalog's files are: the library's `catalog/` folder or prefix.
    files: Storage,
    /// Shared by every dataset this catalog opens, so that index pages and manifests are read
    /// once per process rather than once per query.
    session: Arc<lance::session::Session>,
    /// The datasets opened so far, each with the stamp its `_versions` folder had then.
    opened: Mutex<HashMap<String, (Stamp, Dataset)>>,
    /// Per table and column, every row of one version of a kept table (see `kept.rs`).
    kept_columns: Kept<Vec<arrow::array::ArrayRef>>,
    /// Held while kept columns are read (see [`Catalog::kept_columns`]).
    reading: tokio::sync::Mutex<()>,
    /// Per manifest, the versions of every segment at one version of a small `segments`
    /// table (see [`Catalog::small_segment_users`]).
    kept_users: Kept<SegmentUsers>,
}

/// What changes in a folder's metadata whenever an entry is added, renamed or removed.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: (i64, i64),
    changed: (i64, i64),
    inode: u64,
    size: u64,
}

impl Stamp {
    /// What a dataset on a bucket is kept with (see [`Catalog::dataset_on_bucket`]).
    const NONE: Stamp = Stamp { modified: (0, 0), changed: (0, 0), inode: 0, size: 0 };

    fn of(dir: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(dir).ok()?;
        Some(Stamp {
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
            inode: m.ino(),
            size: m.size(),
        })
    }

    /// Whether the folder had been still for [`SETTLED`] at `time`: only then can no commit
    /// made after `time` leave the same stamp.
    fn settled_at(&self, time: SystemTime) -> bool {
        let newest = self.modified.max(self.changed);
        let Ok(secs) = u64::try_from(newest.0) else { return false };
        let stamped = SystemTime::UNIX_EPOCH + Duration::new(secs, newest.1.clamp(0, 999_999_999) as u32);
        stamped + SETTLED < time
    }
}

impl Catalog {
    /// Opens the catalog in `files`, creating any table that does not exist yet.
    pub async fn open(files: Storage) -> Result<Catalog> {
        let settings = match &files {
            Storage::Bucket(bucket) => bucket.settings().clone(),
            Storage::Folder(_) => crate::storage::S3Settings::default(),
        };
        let stores = lance_stores(&settings);
        let session = lance::session::Session::new(INDEX_CACHE_BYTES, METADATA_CACHE_BYTES, stores);
        let catalog = Catalog {
            files,
            session: Arc::new(session),
            opened: Mutex::default(),
            kept_columns: Kept::new(),
            reading: tokio::sync::Mutex::new(()),
            kept_users: Kept::new(),
        };
        catalog.create::<ImageRow>().await?;
        catalog.create::<PartitionRow>().await?;
        catalog.create::<FileRow>().await?;
        catalog.create::<PackageRow>().await?;
        catalog.create::<ExtentRow>().await?;
        catalog.create::<ChunkRow>().await?;
        catalog.create::<SegmentRow>().await?;
        catalog.create::<ProvenanceRow>().await?;
        catalog.create::<AdvisoryRow>().await?;
        catalog.create::<VexRow>().await?;
        Ok(catalog)
    }

    /// The URI of a table's dataset, for readers such as the SQL layer.
    pub fn table_uri(&self, table: &str) -> String {
        self.files.name(&format!("{table}.lance"))
    }

    /// Whether the table has a committed version.
    fn exists(&self, table: &str) -> Result<bool> {
        let versions = format!("{table}.lance/_versions");
        match self.files.folder() {
            Some(dir) => Ok(dir.join(versions).exists()),
            None => Ok(!self
                .files
                .list(&versions)
                .io_context(|| format!("listing {}", self.files.name(&versions)))?
                .is_empty()),
        }
    }

    async fn create<T: Table>(&self) -> Result<()> {
        let uri = self.table_uri(T::NAME);
        if self.exists(T::NAME)? {
            return Ok(());
        }
        // Lance's Create is not atomic (lance#4451): of two creators both may commit, the later
        // as an overwrite of what the earlier and its appenders wrote. A folder's catalog is
        // created under the library lock; on a bucket one creator holds a lease meanwhile.
        let creating = match &self.files {
            Storage::Folder(_) => None,
            Storage::Bucket(bucket) => match self.creation_lease(bucket, T::NAME).await? {
                Some(lease) => Some(lease),
                None => return Ok(()),
            },
        };
        let created = self.create_empty::<T>(&uri).await;
        if let Some(lease) = creating {
            lease.release().io_context(|| format!("releasing the lease on creating table {}", T::NAME))?;
        }
        created
    }

    /// The lease under which `table` is created on a bucket, or `None` once another writer
    /// has created it. A creator that died is waited for until its lease is dead.
    async fn creation_lease(&self, bucket: &crate::storage::Bucket, table: &str) -> Result<Option<Lease>> {
        let (bucket, key) = (bucket.clone(), format!("{table}.lance.creating"));
        let versions = format!("{table}.lance/_versions");
        let what = format!("taking the lease on creating table {table}");
        tokio::task::spawn_blocking(move || {
            let created = || Ok(!bucket.list(&versions)?.is_empty());
            let lease = Lease::wait(&bucket, &key, "writer", Lease::term(), created)?;
            // The table may have been created between the last look and the lease.
            match lease {
                Some(lease) if created()? => lease.release().map(|_| None),
                lease => Ok(lease),
            }
        })
        .await
        .map_err(crate::task_failed(what.clone()))?
        .io_context(|| what)
    }

    async fn create_empty<T: Table>(&self, uri: &str) -> Result<()> {
        let empty = RecordBatchIterator::new(Vec::<std::result::Result<RecordBatch, _>>::new(), T::stored_schema());
        // The session carries the object stores (`s3` among them) the table's URI may need.
        let params = WriteParams { mode: WriteMode::Create, session: Some(self.session.clone()), ..Default::default() };
        match Dataset::write(empty, uri, Some(params)).await {
            Ok(dataset) => self.record(T::NAME, &dataset).await,
            // Another process created it first.
            Err(_) if self.exists(T::NAME)? => Ok(()),
            Err(e) => Err(Error::Catalog(format!("creating table {}: {e}", T::NAME))),
        }
    }

    /// Appends rows to their table (one Lance commit; concurrent appends are rebased by Lance).
    /// The rows of `files` and `extents` go through [`Catalog::append_manifest`] instead.
    pub async fn append<T: Table>(&self, rows: &[T]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if MANIFESTS.contains(&T::NAME) {
            return Err(Error::Catalog(format!("rows of {} are stored in segments, not appended", T::NAME)));
        }
        let mut batches = Vec::new();
        // Bounded batches keep peak memory flat for images with many files.
        for part in rows.chunks(64 * 1024) {
            batches.push(Ok(T::batch(part)?));
        }
        let reader = RecordBatchIterator::new(batches, T::schema());
        let mut dataset = self.dataset(T::NAME).await?;
        let params = WriteParams { mode: WriteMode::Append, ..Default::default() };
        let appended = dataset.append(reader, Some(params)).await;
        appended.map_err(|e| Error::Catalog(format!("appending to {}: {e}", T::NAME)))?;
        self.record(T::NAME, &dataset).await
    }

    /// Appends record batches of a table's schema (one Lance commit), for writers that build
    /// columns rather than rows (the synthetic fleet of the SQL benchmark).
    pub async fn append_batches(&self, table: &str, batches: Vec<RecordBatch>) -> Result<()> {
        let Some(schema) = batches.first().map(|b| b.schema()) else { return Ok(()) };
        let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), schema);
        let mut dataset = self.dataset(table).await?;
        let params = WriteParams { mode: WriteMode::Append, ..Default::default() };
        let appended = dataset.append(reader, Some(params)).await;
        appended.map_err(|e| Error::Catalog(format!("appending to {table}: {e}")))?;
        self.record(table, &dataset).await
    }

    /// Compacts tables with at least `small_fragments` fragments of fewer than `COMPACT_ROWS`
    /// rows, creates the indexes of [`INDEXES`] that do not exist yet, and brings those that
    /// do up to date: once `lagging_fragments` fragments wait, the rows appended since go into
    /// a new segment of the index (cheap: only they are read), and an index of `max_segments`
    /// segments is merged into one. [`Maintenance::AFTER_CHECKIN`] and
    /// [`Maintenance::FULL`] are the two uses. A table that is not compacted or an index that
    /// lags is only slower, never wrong, so callers may treat a failure here as a warning.
    pub async fn maintain(&self, policy: Maintenance) -> Result<()> {
        let Maintenance { small_fragments, lagging_fragments, max_segments } = policy;
        let (lagging_fragments, max_segments) = (lagging_fragments.max(1), max_segments.max(1));
        for table in DATASETS {
            let mut dataset = self.dataset(table).await?;
            let err = |e: lance::Error| Error::Catalog(format!("maintaining {table}: {e}"));
            // Each checkin appends one fragment per table, and a question pays for every
            // fragment it reads from; compacting once several are small bounds both the number
            // of fragments and the rows a checkin rewrites (Lance remaps the indexes).
            let small = dataset.fragments().iter().filter(|f| f.num_rows().is_none_or(|n| n < COMPACT_ROWS)).count();
            if small >= small_fragments.max(2) {
                let options = CompactionOptions { target_rows_per_fragment: COMPACT_ROWS, ..Default::default() };
                compact_files(&mut dataset, options, None).await.map_err(err)?;
                self.record(table, &dataset).await?;
            }
            if !INDEXES.iter().any(|(t, _)| *t == table) || dataset.count_rows(None).await.map_err(err)? == 0 {
                continue;
            }
            let existing = dataset.load_indices().await.map_err(err)?;
            let fragments: Vec<u32> = dataset.fragments().iter().map(|f| f.id as u32).collect();
            let (mut lagging, mut segments) = (0, 0);
            for (_, column) in INDEXES.iter().filter(|(t, _)| *t == table) {
                let name = format!("{column}_idx");
                let parts: Vec<_> = existing.iter().filter(|i| i.name == name).collect();
                if parts.is_empty() {
                    let params = ScalarIndexParams::default();
                    dataset.create_index(&[column], IndexType::BTree, Some(name), &params, true).await.map_err(err)?;
                    self.record(table, &dataset).await?;
                    continue;
                }
                let covered =
                    |id: &u32| parts.iter().any(|i| i.fragment_bitmap.as_ref().is_some_and(|b| b.contains(*id)));
                lagging = lagging.max(fragments.iter().filter(|id| !covered(id)).count());
                segments = segments.max(parts.len());
            }
            // New rows wait for a few fragments (a question scans the few an index does not
            // cover); then they become one new segment, cheap whatever the index's size; and
            // the segments are merged once there are too many.
            if segments > max_segments || (lagging >= 1 && segments == max_segments) {
                dataset.optimize_indices(&OptimizeOptions::merge(segments)).await.map_err(err)?;
            } else if lagging >= lagging_fragments {
                dataset.optimize_indices(&OptimizeOptions::append()).await.map_err(err)?;
            } else {
                continue;
            }
            self.record(table, &dataset).await?;
        }
        Ok(())
    }

    /// Deletes the files of every table version but the newest (data, indexes, manifests
    /// that later versions replaced), and their checksums: Lance keeps them for readers of
    /// older versions, so the caller must know that no reader is in flight. Returns the bytes
    /// freed.
    pub async fn cleanup(&self) -> Result<u64> {
        let mut freed = 0;
        for table in DATASETS {
            let dataset = self.dataset(table).await?;
            let stats = dataset
                .cleanup_old_versions(chrono::TimeDelta::zero(), Some(false), Some(false))
                .await
                .map_err(|e| Error::Catalog(format!("removing superseded files of {table}: {e}")))?;
            freed += stats.bytes_removed;
        }
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || checksums::prune(&files))
            .await
            .map_err(crate::task_failed("pruning the catalog's checksums"))??;
        Ok(freed)
    }

    /// A table's dataset at its newest version.
    ///
    /// Finding the newest version lists the table's `_versions` folder and reads a manifest;
    /// every question asks for several tables, so a dataset is reused for as long as that
    /// folder's stamp is what it was when the dataset was opened, and was already settled
    /// then. Any commit, by this process or another, adds an entry and changes the stamp.
    pub async fn dataset(&self, table: &str) -> Result<Dataset> {
        let uri = self.table_uri(table);
        let Some(dir) = self.files.folder() else { return self.dataset_on_bucket(table, &uri).await };
        let stamp = Stamp::of(&dir.join(format!("{table}.lance/_versions")));
        if let Some(stamp) = stamp
            && let Ok(opened) = self.opened.lock()
            && let Some((seen, dataset)) = opened.get(table)
            && *seen == stamp
        {
            return Ok(dataset.clone());
        }
        let started = SystemTime::now();
        let dataset = DatasetBuilder::from_uri(&uri)
            .with_session(self.session.clone())
            .load()
            .await
            .map_err(|e| Error::Catalog(format!("opening table {table}: {e}")))?;
        if let Some(stamp) = stamp
            && stamp.settled_at(started)
            && let Ok(mut opened) = self.opened.lock()
        {
            opened.insert(table.to_string(), (stamp, dataset.clone()));
        }
        Ok(dataset)
    }

    /// [`Catalog::dataset`] on a bucket, where folders have no stamps: the dataset opened
    /// before is reused while Lance finds no newer version (one listing of `_versions`).
    async fn dataset_on_bucket(&self, table: &str, uri: &str) -> Result<Dataset> {
        let err = |e: lance::Error| Error::Catalog(format!("opening table {table}: {e}"));
        let known = self.opened.lock().ok().and_then(|opened| opened.get(table).map(|(_, d)| d.clone()));
        if let Some(dataset) = known {
            if dataset.latest_version_id().await.map_err(err)? == dataset.version().version {
                return Ok(dataset);
            }
        }
        let dataset = DatasetBuilder::from_uri(uri).with_session(self.session.clone()).load().await.map_err(err)?;
        if let Ok(mut opened) = self.opened.lock() {
            opened.insert(table.to_string(), (Stamp::NONE, dataset.clone()));
        }
        Ok(dataset)
    }

    /// Reads `columns` of the rows of `table` that match `filter` (a Lance SQL predicate),
    /// handing each batch to `each` as it comes, so that a caller keeping a little of each
    /// never holds the whole answer. Only the questions of `queries.rs` call it.
    async fn scan_each(
        &self,
        table: &str,
        columns: &[&str],
        filter: Option<&str>,
        each: impl FnMut(RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let dataset = self.dataset(table).await?;
        scan_each(&dataset, table, columns, filter, each).await
    }

    /// Every batch [`Catalog::scan_each`] reads.
    async fn scan(&self, table: &str, columns: &[&str], filter: Option<&str>) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        self.scan_each(table, columns, filter, |batch| {
            batches.push(batch);
            Ok(())
        })
        .await?;
        Ok(batches)
    }
}

/// [`Catalog::scan_each`] of one version of `table`'s dataset.
async fn scan_each(
    dataset: &Dataset,
    table: &str,
    columns: &[&str],
    filter: Option<&str>,
    mut each: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let mut scanner = dataset.scan();
    let err = |e: lance::Error| Error::Catalog(format!("scanning {table}: {e}"));
    scanner.project(columns).map_err(err)?;
    if let Some(filter) = filter {
        scanner.filter(filter).map_err(err)?;
    }
    let mut stream = scanner.try_into_stream().await.map_err(err)?;
    while let Some(batch) = stream.try_next().await.map_err(err)? {
        each(batch)?;
    }
    Ok(())
}
