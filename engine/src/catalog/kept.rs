//! Tables kept in memory, per table version.
//!
//! A question over a table of a few thousand rows (a small library's `packages`, `chunks`,
//! `segments`) spends most of its time planning and running the Lance read: the index lookup,
//! the reads of the ranges found, each on another thread; a scan of the rows in memory costs a
//! fraction of that. So while a dataset holds at most [`SMALL_ROWS`] rows, what a reader
//! derives from one of its versions (every row, for SQL; the versions of every segment, for
//! [`Catalog::small_segment_users`]) is read once and kept, and read again only when a commit
//! has made a new version.
//!
//! A question over every row of a larger table (a fleet's 1.4 million `packages` rows matched
//! against advisories) spends most of its time decoding them: two thirds of "which images have
//! fixable criticals" on 10,000 versions. So the columns of a table of up to [`KEPT_ROWS`]
//! rows that a question reads whole are kept too, for every question until a commit changes
//! it; a question that only looks a few rows up still goes through Lance's indexes rather than
//! read it all. SQL's rows are kept by column, and read once each: a question reads only the
//! columns no earlier question has, and memory holds only the columns questions use.
//! As DuckDB's buffer pool or Postgres's shared buffers, bounded; unlike them, never stale:
//! the version is the key.

use super::Catalog;
use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, RecordBatch};
use futures::TryStreamExt;
use lance::Dataset;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The most rows of a table read whole and kept whenever it is asked about.
const SMALL_ROWS: usize = 1 << 15;

/// The rows of a batch of kept columns cut again (DataFusion's batch size).
const RECUT_ROWS: usize = 8192;

/// The most rows a kept table holds, unless `IMAGELAKE_KEEP_ROWS` says another number (0:
/// nothing is kept): columns of a few tens of bytes a row, so a few hundred MiB at most (the
/// five columns the vulnerability questions read of a fleet's 1.4 million `packages` rows
/// take about 140 MB).
const KEPT_ROWS: usize = 1 << 21;

/// What is kept of each of a kind of table, by key (a table's column or a manifest), with the
/// table version it was read at.
pub(super) struct Kept<T> {
    up_to: AtomicUsize,
    kept: Mutex<HashMap<String, (u64, Arc<T>)>>,
}

/// The rows `dataset` holds, as its manifest counts them; a fragment whose deletions it does
/// not count counts as too many.
pub fn stored_rows(dataset: &Dataset) -> usize {
    dataset.fragments().iter().map(|f| f.num_rows().unwrap_or(usize::MAX)).fold(0, usize::saturating_add)
}

impl<T> Kept<T> {
    pub(super) fn new() -> Kept<T> {
        let rows = std::env::var("IMAGELAKE_KEEP_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(KEPT_ROWS);
        Kept { up_to: AtomicUsize::new(rows), kept: Mutex::default() }
    }

    /// What `read` makes of `dataset` (the version of `key`'s table just opened): kept from
    /// an earlier call at the same version, or read now and kept while the table is small.
    /// None when the table holds more rows than the bound or is not small.
    pub(super) async fn get<F>(&self, key: &str, dataset: &Dataset, read: impl FnOnce() -> F) -> Result<Option<Arc<T>>>
    where
        F: Future<Output = Result<T>>,
    {
        let version = dataset.version_id();
        if !self.holds(dataset, |k| k == key, version) {
            return Ok(None);
        }
        if let Some(value) = self.at(key, version) {
            return Ok(Some(value));
        }
        if stored_rows(dataset) > SMALL_ROWS {
            return Ok(None);
        }
        let value = Arc::new(read().await?);
        self.keep(key, version, value.clone());
        Ok(Some(value))
    }

    /// Whether `dataset` is within the bound. What is kept under the keys `belongs` picks
    /// goes if not (grown past it, or the bound lowered), and at versions older than
    /// `version` if so (a commit has made a newer one, and the older serves no new question).
    fn holds(&self, dataset: &Dataset, belongs: impl Fn(&str) -> bool, version: u64) -> bool {
        let holds = stored_rows(dataset) <= self.up_to.load(Ordering::Relaxed);
        if let Ok(mut kept) = self.kept.lock() {
            kept.retain(|key, (at, _)| !belongs(key) || (holds && *at >= version));
        }
        holds
    }

    /// What is kept under `key` at `version`.
    fn at(&self, key: &str, version: u64) -> Option<Arc<T>> {
        let kept = self.kept.lock().ok()?;
        kept.get(key).filter(|(at, _)| *at == version).map(|(_, value)| value.clone())
    }

    fn keep(&self, key: &str, version: u64, value: Arc<T>) {
        // A reader of an older version, finishing late, does not replace a newer one's.
        if let Ok(mut kept) = self.kept.lock()
            && kept.get(key).is_none_or(|(at, _)| *at < version)
        {
            kept.insert(key.to_string(), (version, value));
        }
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
    /// Every row of `columns` of `table` at `dataset`'s version (the table's dataset, just
    /// opened), in batches of those columns: those kept, and the others read now and kept
    /// while the table is small or the caller reads it `whole`; None for a table past the
    /// bound, or one neither small nor read whole whose columns are not all kept, to be read
    /// through Lance.
    pub async fn kept_columns(
        &self,
        table: &str,
        dataset: &Dataset,
        columns: &[&str],
        whole: bool,
    ) -> Result<Option<Vec<RecordBatch>>> {
        let version = dataset.version_id();
        let prefix = format!("{table}.");
        let keys: Vec<String> = columns.iter().map(|c| format!("{prefix}{c}")).collect();
        if !self.kept_columns.holds(dataset, |k| k.starts_with(&prefix), version) {
            return Ok(None);
        }
        let kept = |keys: &[String]| keys.iter().map(|k| self.kept_columns.at(k, version)).collect::<Vec<_>>();
        let mut chunks = kept(&keys);
        if chunks.iter().any(Option::is_none) {
            if !whole && stored_rows(dataset) > SMALL_ROWS {
                return Ok(None);
            }
            // One reader at a time: the scans of one question (the branches of a union) would
            // otherwise each read the same columns; the next finds them kept.
            let _reading = self.reading.lock().await;
            chunks = kept(&keys);
            let missing: Vec<usize> = (0..columns.len()).filter(|&i| chunks[i].is_none()).collect();
            if !missing.is_empty() {
                let err = |e: lance::Error| Error::Catalog(format!("reading table {table}: {e}"));
                let names: Vec<&str> = missing.iter().map(|&i| columns[i]).collect();
                let mut scan = dataset.scan();
                scan.project(&names).map_err(err)?;
                let batches: Vec<RecordBatch> =
                    scan.try_into_stream().await.map_err(err)?.try_collect().await.map_err(err)?;
                for (n, &i) in missing.iter().enumerate() {
                    let value = Arc::new(batches.iter().map(|b| b.column(n).clone()).collect::<Vec<_>>());
                    self.kept_columns.keep(&keys[i], version, value.clone());
                    chunks[i] = Some(value);
                }
            }
        }
        let wrong = |e: arrow::error::ArrowError| Error::Catalog(format!("keeping table {table}: {e}"));
        let full = arrow::datatypes::Schema::from(dataset.schema());
        let indices = columns.iter().map(|c| full.index_of(c)).collect::<std::result::Result<Vec<_>, _>>();
        let schema = Arc::new(full.project(&indices.map_err(wrong)?).map_err(wrong)?);
        let chunks: Vec<Arc<Vec<ArrayRef>>> = chunks.into_iter().flatten().collect();
        // Columns read by one scan (or by scans alike) are cut alike, and make batches as they
        // are; else each is joined whole and cut again.
        let cuts = |c: &Vec<ArrayRef>| c.iter().map(|a| a.len()).collect::<Vec<_>>();
        let mut pieces: Vec<Vec<ArrayRef>> = chunks.iter().map(|c| c.as_ref().clone()).collect();
        if chunks.windows(2).any(|w| cuts(&w[0]) != cuts(&w[1])) {
            pieces = Vec::new();
            for column in &chunks {
                let parts: Vec<&dyn Array> = column.iter().map(|a| a.as_ref()).collect();
                let joined = arrow::compute::concat(&parts).map_err(wrong)?;
                let starts = (0..joined.len()).step_by(RECUT_ROWS);
                pieces.push(starts.map(|at| joined.slice(at, RECUT_ROWS.min(joined.len() - at))).collect());
            }
        }
        let batches = (0..pieces.first().map_or(0, Vec::len))
            .map(|k| RecordBatch::try_new(schema.clone(), pieces.iter().map(|c| c[k].clone()).collect()))
            .collect::<std::result::Result<Vec<_>, _>>();
        Ok(Some(batches.map_err(wrong)?))
    }

    /// Keeps tables in memory only while they hold at most `rows` rows (0: never; a server
    /// short of memory, and tests of the reads a large library makes).
    pub fn keep_small_tables_up_to(&self, rows: usize) {
        self.kept_columns.keep_up_to(rows);
        self.kept_users.keep_up_to(rows);
    }
}
