//! The catalog tables as SQL sees them: each a Lance dataset read at its newest version, with
//! filters and projections pushed into the Lance scan (which answers them from the indexes of
//! `engine::catalog::INDEXES`) and only the rows of committed images. `images` itself, one
//! small row per version and joined by nearly every question, is held in memory per version.
//!
//! An image's `images` row is its commit point, written last. Image ids are handed out in
//! order, so "committed" is `image_id <= newest AND image_id NOT IN (ids never committed)`:
//! a range and a short list checked on the rows the Lance scan returns, instead of a join
//! against `images` that would read every row first. Deleted versions are hidden the same way,
//! from `images` and every other table, until `undelete`.

use crate::functions::Lib;
use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExecBuilder;
use imagelake_engine::Library;
use imagelake_engine::catalog::ImageState;
use lance::Dataset;
use lance::datafusion::LanceTableProvider;
use std::sync::{Arc, Mutex};

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The `images` table at one version: its rows (one per committed version, few enough to keep
/// in memory, and read by nearly every question) and the committed-rows filter they give.
#[derive(Debug)]
struct Images {
    version: u64,
    batches: Vec<RecordBatch>,
    committed: Expr,
}

/// The catalog's tables as one session reads them, each at its newest table version, and the
/// committed-rows filter of the newest `images`; shared by every table of the session.
#[derive(Debug)]
pub struct Tables {
    library: Lib,
    images: Mutex<Option<Arc<Images>>>,
}

impl Tables {
    pub fn new(library: Arc<Library>) -> Arc<Tables> {
        Arc::new(Tables { library: Lib(library), images: Mutex::new(None) })
    }

    async fn open(&self, table: &str) -> Result<Dataset> {
        self.library.0.catalog().dataset(table).await.map_err(external)
    }

    /// The `images` rows at the table's newest version, read again only when it changed.
    async fn images(&self) -> Result<Arc<Images>> {
        let dataset = self.open("images").await?;
        let version = dataset.version_id();
        if let Ok(guard) = self.images.lock()
            && let Some(images) = guard.as_ref()
            && images.version == version
        {
            return Ok(images.clone());
        }
        let batches: Vec<RecordBatch> =
            futures::TryStreamExt::try_collect(dataset.scan().try_into_stream().await.map_err(external)?)
                .await
                .map_err(external)?;
        let missing = |name: &str| DataFusionError::Internal(format!("the images table has no {name} column"));
        let (mut ids, mut hidden, mut visible) = (Vec::new(), Vec::new(), Vec::new());
        for b in &batches {
            let id = b.column_by_name("image_id").ok_or_else(|| missing("image_id"))?.as_primitive::<Int64Type>();
            let state = b.column_by_name("state").ok_or_else(|| missing("state"))?.as_string::<i32>();
            // Deleted versions (and those gc purged) are hidden, as if never committed.
            let shown: BooleanArray =
                state.iter().map(|s| Some(!s.and_then(ImageState::parse).is_some_and(ImageState::is_hidden))).collect();
            for (r, id) in id.values().iter().enumerate() {
                ids.push(*id);
                if !shown.value(r) {
                    hidden.push(*id);
                }
            }
            visible.push(filter_record_batch(b, &shown)?);
        }
        let batches = visible;
        ids.sort_unstable();
        let newest = ids.last().copied().unwrap_or(0);
        // Ids at or below the newest that never committed (crashed or in-flight checkins), and
        // hidden versions.
        let mut gaps: Vec<Expr> = hidden.into_iter().map(lit).collect();
        let mut expected = 1;
        for &id in &ids {
            gaps.extend((expected..id).map(lit));
            expected = id + 1;
        }
        let mut committed = col("image_id").lt_eq(lit(newest));
        if !gaps.is_empty() {
            committed = committed.and(col("image_id").in_list(gaps, true));
        }
        let images = Arc::new(Images { version, batches, committed });
        if let Ok(mut guard) = self.images.lock() {
            *guard = Some(images.clone());
        }
        Ok(images)
    }
}

/// One catalog table.
#[derive(Debug)]
pub struct CatalogTable {
    tables: Arc<Tables>,
    table: &'static str,
    schema: SchemaRef,
}

impl CatalogTable {
    pub async fn new(tables: Arc<Tables>, table: &'static str) -> Result<CatalogTable> {
        let dataset = tables.open(table).await?;
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::from(dataset.schema()));
        Ok(CatalogTable { tables, table, schema })
    }

    /// Tables whose rows belong to an image version (all but `chunks`, which the store owns).
    fn per_image(&self) -> bool {
        self.table != "chunks" && self.table != "images"
    }
}

#[async_trait]
impl TableProvider for CatalogTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Lance evaluates any DataFusion expression inside its scan; `images` is read from
        // memory, and DataFusion filters it.
        let pushdown = match self.table {
            "images" => TableProviderFilterPushDown::Unsupported,
            _ => TableProviderFilterPushDown::Exact,
        };
        Ok(vec![pushdown; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.table == "images" {
            let images = self.tables.images().await?;
            let table = MemTable::try_new(self.schema.clone(), vec![images.batches.clone()])?;
            return table.scan(state, projection, filters, limit).await;
        }
        if !self.per_image() {
            let provider = LanceTableProvider::new(Arc::new(self.tables.open(self.table).await?), false, false);
            return provider.scan(state, projection, filters, limit).await;
        }
        // Which images are committed is read before the table: every row of those images was
        // appended before their commit, so the table read next holds them all.
        let committed = self.tables.images().await?.committed.clone();
        let provider = LanceTableProvider::new(Arc::new(self.tables.open(self.table).await?), false, false);
        // The committed filter runs above the Lance scan, not inside it: inside, Lance would
        // answer `image_id <= newest` from the image_id index, a walk over every row id.
        let image_id = self.schema.index_of("image_id")?;
        let mut columns = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let wanted = columns.len();
        if !columns.contains(&image_id) {
            columns.push(image_id);
        }
        let scan = provider.scan(state, Some(&columns), filters, None).await?;
        let predicate = state.create_physical_expr(committed, &DFSchema::try_from(scan.schema())?)?;
        let filter = FilterExecBuilder::new(predicate, scan)
            .apply_projection(Some((0..wanted).collect()))?
            .with_fetch(limit)
            .build()?;
        Ok(Arc::new(filter))
    }
}
