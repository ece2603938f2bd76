//! Small tables kept in memory, per table version.
//!
//! A question over a table of a few thousand rows (a small library's `packages`, `chunks`,
//! `segments`) spends most of its time planning and running the Lance read: the index lookup,
//! the reads of the ranges found, each on another thread; a scan of the rows in memory costs a
//! fraction of that. So while a dataset holds at most [`KEPT_ROWS`] rows, what a reader
//! derives from one of its versions (every row, for SQL; the versions of every segment, for
//! [`Catalog::small_segment_users`]) is read once and kept, and read again only when a commit has
//! made a new version. A larger table is read through Lance and its indexes, and what was kept
//! of it is dropped. As DuckDB's buffer pool or Postgres's shared buffers, bounded; unlike
//! them, never stale: the version is the key.

use super::Catalog;
use crate::{Error, Result};
use arrow::array::RecordBatch;
use futures::TryStreamExt;
use lance::Dataset;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The most rows a kept table holds (rows of a few hundred bytes at most: a few MiB each),
/// unless `IMAGELAKE_KEEP_ROWS` says another number (0: nothing is kept).
const KEPT_ROWS: usize = 1 << 15;

/// What is kept of each of a kind of small table, by key (a table or a manifest), with the
/// table version it was read at.
pub(super) struct Kept<T> {
    up_to: AtomicUsize,
    kept: Mutex<HashMap<String, (u64, Arc<T>)>>,
}

impl<T> Kept<T> {
    pub(super) fn new() -> Kept<T> {
        let rows = std::env::var("IMAGELAKE_KEEP_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(KEPT_ROWS);
        Kept { up_to: AtomicUsize::new(rows), kept: Mutex::default() }
    }

    /// What `read` makes of `dataset` (the version of `key`'s table just opened): kept from
    /// an earlier call at the same version, or read now and kept. None when the table holds
    /// more rows than the bound.
    pub(super) async fn get<F>(&self, key: &str, dataset: &Dataset, read: impl FnOnce() -> F) -> Result<Option<Arc<T>>>
    where
        F: Future<Output = Result<T>>,
    {
        let version = dataset.version_id();
        // A fragment whose deletions are not counted in the manifest counts as too many.
        let rows =
            dataset.fragments().iter().map(|f| f.num_rows().unwrap_or(usize::MAX)).fold(0, usize::saturating_add);
        if rows > self.up_to.load(Ordering::Relaxed) {
            // Grown past the bound (or the bound lowered): what was kept is of no more use.
            if let Ok(mut kept) = self.kept.lock() {
                kept.remove(key);
            }
            return Ok(None);
        }
        let at_version = |kept: &HashMap<String, (u64, Arc<T>)>| match kept.get(key) {
            Some((at, value)) if *at == version => Some(value.clone()),
            _ => None,
        };
        if let Some(value) = self.kept.lock().ok().and_then(|k| at_version(&k)) {
            return Ok(Some(value));
        }
        let value = Arc::new(read().await?);
        // A reader of an older version, finishing late, does not replace a newer one's rows.
        if let Ok(mut kept) = self.kept.lock()
            && kept.get(key).is_none_or(|(at, _)| *at < version)
        {
            kept.insert(key.to_string(), (version, value.clone()));
        }
        Ok(Some(value))
    }

    fn keep_up_to(&self, rows: usize) {
        self.up_to.store(rows, Ordering::Relaxed);
        if rows == 0
            && let Ok(mut kept) = self.kept.lock()
        {
            kept.clear();
        }
    }
}

impl Catalog {
    /// Every row of `table` at `dataset`'s version (the table's dataset, just opened), while
    /// the table is small; None for a larger one, to be read through Lance.
    pub async fn small_table_rows(&self, table: &str, dataset: &Dataset) -> Result<Option<Arc<Vec<RecordBatch>>>> {
        self.kept_rows
            .get(table, dataset, || async {
                let err = |e: lance::Error| Error::Catalog(format!("reading table {table}: {e}"));
                dataset.scan().try_into_stream().await.map_err(err)?.try_collect().await.map_err(err)
            })
            .await
    }

    /// Keeps small tables in memory only while they hold at most `rows` rows (0: never; a
    /// server short of memory, and tests of the reads a large library makes).
    pub fn keep_small_tables_up_to(&self, rows: usize) {
        self.kept_rows.keep_up_to(rows);
        self.kept_users.keep_up_to(rows);
    }
}
