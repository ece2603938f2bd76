//! The catalog: one Lance dataset per table under `catalog/`.
//!
//! Lance commits one dataset at a time, so a checkin appends the rows of every other table
//! first and the `images` row last: that row is the commit point. Readers see only rows of
//! committed images (the SQL layer filters on `images`), and the rows of a crashed checkin are
//! orphans that recovery may delete.

mod schema;

pub use schema::*;

use crate::{Error, Result};
use arrow::array::{RecordBatch, RecordBatchIterator};
use futures::TryStreamExt;
use lance::Dataset;
use lance::dataset::{WriteMode, WriteParams};
use lance::index::DatasetIndexExt;
use lance_index::optimize::OptimizeOptions;
use lance_index::{IndexType, scalar::ScalarIndexParams};
use std::path::{Path, PathBuf};

/// The B-tree indexes the access paths need: per-image reads (`image_id`), point questions
/// ("which images contain content H", "which ship package P", "where is /etc/x"), and the
/// store's lookups (`chunk_hash`). Lance answers a filter on an indexed column from the index
/// and scans only fragments appended since the index was last brought up to date.
pub const INDEXES: [(&str, &str); 8] = [
    ("files", "image_id"),
    ("files", "content_hash"),
    ("files", "path"),
    ("packages", "name"),
    ("packages", "image_id"),
    ("extents", "image_id"),
    ("extents", "content_hash"),
    ("chunks", "chunk_hash"),
];

pub struct Catalog {
    dir: PathBuf,
}

impl Catalog {
    /// Opens the catalog in `dir`, creating any table that does not exist yet.
    pub async fn open(dir: &Path) -> Result<Catalog> {
        let catalog = Catalog { dir: dir.to_path_buf() };
        catalog.create::<ImageRow>().await?;
        catalog.create::<PartitionRow>().await?;
        catalog.create::<FileRow>().await?;
        catalog.create::<PackageRow>().await?;
        catalog.create::<ExtentRow>().await?;
        catalog.create::<ChunkRow>().await?;
        catalog.create::<ProvenanceRow>().await?;
        Ok(catalog)
    }

    /// The URI of a table's dataset, for readers such as the SQL layer.
    pub fn table_uri(&self, table: &str) -> String {
        self.dir.join(format!("{table}.lance")).to_string_lossy().into_owned()
    }

    async fn create<T: Table>(&self) -> Result<()> {
        let uri = self.table_uri(T::NAME);
        if Path::new(&uri).join("_versions").exists() {
            return Ok(());
        }
        let empty = RecordBatchIterator::new(Vec::<std::result::Result<RecordBatch, _>>::new(), T::schema());
        let params = WriteParams { mode: WriteMode::Create, ..Default::default() };
        match Dataset::write(empty, uri.as_str(), Some(params)).await {
            Ok(_) => Ok(()),
            // Another process created it first.
            Err(_) if Path::new(&uri).join("_versions").exists() => Ok(()),
            Err(e) => Err(Error::Catalog(format!("creating table {}: {e}", T::NAME))),
        }
    }

    /// Appends rows to their table (one Lance commit; concurrent appends are rebased by Lance).
    pub async fn append<T: Table>(&self, rows: &[T]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut batches = Vec::new();
        // Bounded batches keep peak memory flat for images with many files.
        for part in rows.chunks(64 * 1024) {
            batches.push(Ok(T::batch(part)?));
        }
        let reader = RecordBatchIterator::new(batches, T::schema());
        let mut dataset = self.dataset(T::NAME).await?;
        let params = WriteParams { mode: WriteMode::Append, ..Default::default() };
        dataset.append(reader, Some(params)).await.map_err(|e| Error::Catalog(format!("appending to {}: {e}", T::NAME)))
    }

    /// Creates the indexes of [`INDEXES`] that do not exist yet and folds rows appended since
    /// into those that do. An index that lags is only slower, never wrong, so callers may
    /// treat a failure here as a warning.
    pub async fn update_indexes(&self) -> Result<()> {
        for table in ["files", "packages", "extents", "chunks"] {
            let mut dataset = self.dataset(table).await?;
            let err = |e: lance::Error| Error::Catalog(format!("indexing {table}: {e}"));
            if dataset.count_rows(None).await.map_err(err)? == 0 {
                continue;
            }
            let existing = dataset.load_indices().await.map_err(err)?;
            for (_, column) in INDEXES.iter().filter(|(t, _)| *t == table) {
                let name = format!("{column}_idx");
                if existing.iter().any(|i| i.name == name) {
                    continue;
                }
                let params = ScalarIndexParams::default();
                dataset.create_index(&[column], IndexType::BTree, Some(name), &params, true).await.map_err(err)?;
            }
            dataset.optimize_indices(&OptimizeOptions::merge(1)).await.map_err(err)?;
        }
        Ok(())
    }

    pub async fn dataset(&self, table: &str) -> Result<Dataset> {
        Dataset::open(&self.table_uri(table)).await.map_err(|e| Error::Catalog(format!("opening table {table}: {e}")))
    }

    /// Reads `columns` of the rows of `table` that match `filter` (a Lance SQL predicate).
    pub async fn scan(&self, table: &str, columns: &[&str], filter: Option<&str>) -> Result<Vec<RecordBatch>> {
        let dataset = self.dataset(table).await?;
        let mut scanner = dataset.scan();
        let err = |e: lance::Error| Error::Catalog(format!("scanning {table}: {e}"));
        scanner.project(columns).map_err(err)?;
        if let Some(filter) = filter {
            scanner.filter(filter).map_err(err)?;
        }
        let stream = scanner.try_into_stream().await.map_err(err)?;
        stream.try_collect().await.map_err(err)
    }
}
