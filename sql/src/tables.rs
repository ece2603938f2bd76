//! The catalog tables as SQL sees them: each a Lance dataset read at its newest version, with
//! filters and projections pushed into the Lance scan (which answers them from the indexes of
//! `engine::catalog::INDEXES`) and only the rows of committed images.
//!
//! An image's `images` row is its commit point, written last. Image ids are handed out in
//! order, so "committed" is `image_id <= newest AND image_id NOT IN (ids never committed)`:
//! a range and a short list that Lance evaluates inside the scan, instead of a join against
//! `images` that would read every row first.

use crate::functions::Lib;
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::physical_plan::ExecutionPlan;
use imagelake_engine::Library;
use lance::Dataset;
use lance::datafusion::LanceTableProvider;
use std::sync::{Arc, Mutex};

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The newest version of each dataset, shared by every table of a session.
#[derive(Debug)]
pub struct Snapshot {
    library: Lib,
    /// The `images` dataset, and the committed-rows filter derived from it.
    committed: Mutex<Option<(u64, Expr)>>,
}

impl Snapshot {
    pub fn new(library: Arc<Library>) -> Arc<Snapshot> {
        Arc::new(Snapshot { library: Lib(library), committed: Mutex::new(None) })
    }

    async fn open(&self, table: &str) -> Result<Dataset> {
        Dataset::open(&self.library.0.catalog().table_uri(table)).await.map_err(external)
    }

    /// The filter that keeps rows of committed images, for the current `images` version.
    async fn committed(&self) -> Result<Expr> {
        let images = self.open("images").await?;
        let version = images.version_id();
        if let Ok(guard) = self.committed.lock()
            && let Some((v, expr)) = guard.as_ref()
            && *v == version
        {
            return Ok(expr.clone());
        }
        let mut ids: Vec<i64> = Vec::new();
        let mut scan = images.scan();
        scan.project(&["image_id"]).map_err(external)?;
        let batches: Vec<_> = futures::TryStreamExt::try_collect(scan.try_into_stream().await.map_err(external)?)
            .await
            .map_err(external)?;
        for b in &batches {
            use datafusion::arrow::array::AsArray;
            ids.extend(b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().values().iter());
        }
        ids.sort_unstable();
        let newest = ids.last().copied().unwrap_or(0);
        // Ids at or below the newest that never committed: crashed or in-flight checkins.
        let mut gaps = Vec::new();
        let mut expected = 1;
        for &id in &ids {
            gaps.extend((expected..id).map(lit));
            expected = id + 1;
        }
        let mut expr = col("image_id").lt_eq(lit(newest));
        if !gaps.is_empty() {
            expr = expr.and(col("image_id").in_list(gaps, true));
        }
        if let Ok(mut guard) = self.committed.lock() {
            *guard = Some((version, expr.clone()));
        }
        Ok(expr)
    }
}

/// One catalog table.
#[derive(Debug)]
pub struct CatalogTable {
    snapshot: Arc<Snapshot>,
    table: &'static str,
    schema: SchemaRef,
}

impl CatalogTable {
    pub async fn new(snapshot: Arc<Snapshot>, table: &'static str) -> Result<CatalogTable> {
        let dataset = snapshot.open(table).await?;
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::from(dataset.schema()));
        Ok(CatalogTable { snapshot, table, schema })
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
        // Lance evaluates any DataFusion expression inside its scan.
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let dataset = Arc::new(self.snapshot.open(self.table).await?);
        let mut filters = filters.to_vec();
        if self.per_image() {
            filters.push(self.snapshot.committed().await?);
        }
        let provider = LanceTableProvider::new(dataset, false, false);
        provider.scan(state, projection, &filters, limit).await
    }
}
