//! The catalog tables as SQL sees them: each a Lance dataset read at its newest version, with
//! filters and projections pushed into the Lance scan (which answers them from the indexes of
//! `engine::catalog::INDEXES`) and only the rows of committed images. `images` itself, one
//! small row per version and joined by nearly every question, is held in memory per version;
//! so is any other table while it is small (the engine's `catalog/kept.rs`), its scan then the
//! rows in memory under one filter of every predicate Lance would have taken.
//!
//! An image's `images` row is its commit point, written last. Image ids are handed out in
//! order, so "committed" is `image_id <= newest AND image_id NOT IN (ids never committed)`:
//! a range and a short list checked on the rows the Lance scan returns, instead of a join
//! against `images` that would read every row first. Deleted versions are hidden the same way,
//! from `images` and every other table, until `undelete`.
//!
//! `files` and `extents` are stored in segments that versions share: their scan is the stored
//! rows' and [`segmented::Expand`] above it, which makes the rows of the versions the session
//! sees (committed, not deleted, readable) and of no others (see `segmented.rs`).
//!
//! A cluster's scheduler plans the same scans (`Tables::distributed`) with one difference:
//! Lance's scan, which no codec carries to an executor, becomes `distributed::Fragments`.
//!
//! A session that may not read every image (see `access.rs`) sees the rows of the images it
//! may read and no others: `images` holds only those, and every other table's scan is wrapped
//! in [`Visible`], which drops the rest before anything the statement computes sees a row.
//! Only filters that cannot fail on a row (comparisons of columns with constants, `IN`,
//! `LIKE`, `IS NULL`, and those joined by `AND`/`OR`/`NOT`) are pushed into the Lance scan
//! below it, so that a hidden row never raises an error; the rest run above it. `Visible`
//! reports no statistics and passes no filter down, so counts are never answered from
//! metadata that counts hidden rows.

use crate::access::Access;
use crate::distributed::Fragments;
use crate::{external, segmented, visible};
use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, DataFusionError, Result};
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExecBuilder;
use imagelake_engine::Library;
use imagelake_engine::catalog::{ImageState, stored_rows};
use lance::Dataset;
use lance::datafusion::LanceTableProvider;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The most rows of a kept table a cluster's plan carries (kept rows travel inline to every
/// executor); a larger table's rows the executors read from its fragments.
const INLINE_ROWS: usize = 1 << 15;

/// The `images` table at one version: its rows (one per committed version, few enough to keep
/// in memory, and read by nearly every question) and the committed-rows filter they give.
#[derive(Debug)]
struct Images {
    version: u64,
    batches: Vec<RecordBatch>,
    committed: Expr,
    /// For a session that may not read every image: the ids of those it may read (committed
    /// and not deleted), the only rows it sees in any table.
    visible: Option<Arc<HashSet<i64>>>,
    /// The ids of the versions the session sees (committed, not deleted, readable): those
    /// whose rows `files` and `extents` expand their stored rows into.
    shown: Arc<HashSet<i64>>,
}

/// The catalog's tables as one session reads them, each at its newest table version, and the
/// committed-rows filter of the newest `images`; shared by every table of the session.
pub struct Tables {
    library: Arc<Library>,
    access: Arc<Access>,
    images: Mutex<Option<Arc<Images>>>,
    /// Planned for a cluster: Lance's scans become [`Fragments`] nodes, which a codec carries
    /// to executors.
    distributed: bool,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tables({})", self.library.location())
    }
}

impl Tables {
    pub fn new(library: Arc<Library>, access: Arc<Access>) -> Arc<Tables> {
        Arc::new(Tables { library, access, images: Mutex::new(None), distributed: false })
    }

    /// The tables as a cluster's scheduler plans them (see `distributed/`).
    pub fn distributed(library: Arc<Library>, access: Arc<Access>) -> Arc<Tables> {
        Arc::new(Tables { library, access, images: Mutex::new(None), distributed: true })
    }

    async fn open(&self, table: &str) -> Result<Dataset> {
        self.library.catalog().dataset(table).await.map_err(external)
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
        let (mut ids, mut hidden, mut shown_batches) = (Vec::new(), Vec::new(), Vec::new());
        let restricted = self.access.restricted();
        let mut readable = HashSet::new();
        for b in &batches {
            let id = b.column_by_name("image_id").ok_or_else(|| missing("image_id"))?.as_primitive::<Int64Type>();
            let state = b.column_by_name("state").ok_or_else(|| missing("state"))?.as_string::<i32>();
            let name = b.column_by_name("name").ok_or_else(|| missing("name"))?.as_string::<i32>();
            // Deleted versions (and those gc purged) are hidden, as if never committed; so are
            // images the session may not read.
            let shown: BooleanArray = state
                .iter()
                .zip(name.iter())
                .map(|(s, n)| {
                    let deleted = s.and_then(ImageState::parse).is_some_and(ImageState::is_hidden);
                    Some(!deleted && (!restricted || n.is_some_and(|n| self.access.may_read(n))))
                })
                .collect();
            for (r, id) in id.values().iter().enumerate() {
                ids.push(*id);
                if shown.value(r) {
                    readable.insert(*id);
                } else {
                    hidden.push(*id);
                }
            }
            shown_batches.push(filter_record_batch(b, &shown)?);
        }
        let shown = Arc::new(readable);
        let visible = restricted.then(|| shown.clone());
        let batches = match &visible {
            Some(visible) => shown_batches.iter().map(|b| hide_parents(b, visible)).collect::<Result<_>>()?,
            None => shown_batches,
        };
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
        let images = Arc::new(Images { version, batches, committed, visible, shown });
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
    /// The table's name in the catalog.
    pub fn name(&self) -> &'static str {
        self.table
    }

    /// Who the table is read as.
    pub fn access(&self) -> &Access {
        &self.tables.access
    }

    pub async fn new(tables: Arc<Tables>, table: &'static str) -> Result<CatalogTable> {
        let dataset = tables.open(table).await?;
        let schema = sql_schema(table, &datafusion::arrow::datatypes::Schema::from(dataset.schema()));
        Ok(CatalogTable::with_schema(tables, table, schema))
    }

    /// The table whose SQL schema `schema` is already known: a scheduler's, as the plan it
    /// was sent says.
    pub fn with_schema(tables: Arc<Tables>, table: &'static str, schema: SchemaRef) -> CatalogTable {
        CatalogTable { tables, table, schema }
    }

    /// The plan of a table stored in segments: the scan of its stored rows (`filters` that do
    /// not read `image_id` inside it) and [`Expand`] above, into the rows of the
    /// versions of `shown`.
    async fn scan_segmented(
        &self,
        state: &dyn Session,
        table: &'static str,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        shown: Arc<HashSet<i64>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let dataset = self.tables.open(table).await?;
        let stored = Arc::new(datafusion::arrow::datatypes::Schema::from(dataset.schema()));
        let logical = sql_schema(table, &stored);
        let wanted = projection.cloned().unwrap_or_else(|| (0..logical.fields().len()).collect());
        let output = Arc::new(logical.project(&wanted)?);
        // The stored columns: those wanted but image_id, and the segment.
        let mut names: Vec<&str> =
            output.fields().iter().map(|f| f.name().as_str()).filter(|n| *n != "image_id").collect();
        names.push("segment");
        let columns = names.iter().map(|n| stored.index_of(n)).collect::<std::result::Result<Vec<_>, _>>()?;
        let ids = segmented::image_ids_in(filters);
        let users = segmented::Users::new(self.tables.library.clone(), table, shown, ids.as_ref()).await?;
        let mut pushed: Vec<Expr> = filters.iter().filter(|f| !segmented::reads_image_id(f)).cloned().collect();
        if let Some(segments) = users.segments() {
            if segments.is_empty() {
                // No version asked for lists a segment (or none the session may see).
                return Ok(Arc::new(datafusion::physical_plan::empty::EmptyExec::new(output)));
            }
            pushed.push(col("segment").in_list(segments.into_iter().map(lit).collect(), false));
        }
        let scan = self.read(state, table, Some(&columns), &pushed, None).await?;
        Ok(segmented::Expand::over(scan, users, output))
    }

    /// Tables whose rows belong to an image version (all but `chunks`, which the store owns).
    fn per_image(&self) -> bool {
        !matches!(self.table, "chunks" | "images" | "advisories" | "vex")
    }

    /// The stored rows of `table` as Lance's scan gives them (`columns` of the rows matching
    /// every filter, at most `limit`): from memory while the table is small or kept, or read
    /// whole into memory and kept when nothing narrows it (see the engine's `catalog/kept.rs`),
    /// else through Lance and its indexes.
    async fn read(
        &self,
        state: &dyn Session,
        table: &'static str,
        columns: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let dataset = self.tables.open(table).await?;
        let catalog = self.tables.library.catalog();
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::from(dataset.schema()));
        // Pushed filters name their table; the rows in memory are the table's alone.
        let predicate = conjunction(filters.iter().cloned()).map(unnormalize_col);
        // The columns the rows in memory need: those asked for, then those the filters read (at
        // least one, whose length counts the rows).
        let mut wanted = columns.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
        for column in predicate.iter().flat_map(|p| p.column_refs()) {
            let index = schema.index_of(&column.name)?;
            if !wanted.contains(&index) {
                wanted.push(index);
            }
        }
        if wanted.is_empty() {
            wanted.push(0);
        }
        let names: Vec<&str> = wanted.iter().map(|&i| schema.field(i).name().as_str()).collect();
        let whole = filters.is_empty() && limit.is_none();
        // A cluster's plan carries kept rows to every executor, so only a small table's.
        let kept = if !self.tables.distributed || stored_rows(&dataset) <= INLINE_ROWS {
            catalog.kept_columns(table, &dataset, &names, whole).await.map_err(external)?
        } else {
            None
        };
        let Some(batches) = kept else {
            if self.tables.distributed {
                let partitions = state.config().target_partitions();
                let library = self.tables.library.clone();
                return Fragments::plan(library, table, &dataset, columns, filters, limit, partitions);
            }
            return LanceTableProvider::new(Arc::new(dataset), false, false).scan(state, columns, filters, limit).await;
        };
        let schema = Arc::new(schema.project(&wanted)?);
        let partitions = [batches];
        // The columns asked for lead `wanted`.
        let projection = columns.map(|c| (0..c.len()).collect::<Vec<_>>());
        let Some(predicate) = predicate else {
            let source = MemorySourceConfig::try_new(&partitions, schema, projection)?.with_limit(limit);
            return Ok(DataSourceExec::from_data_source(source));
        };
        let predicate = state.create_physical_expr(predicate, &DFSchema::try_from(schema.clone())?)?;
        let source = MemorySourceConfig::try_new_exec(&partitions, schema, None)?;
        let filter = FilterExecBuilder::new(predicate, source).apply_projection(projection)?.with_fetch(limit);
        Ok(Arc::new(filter.build()?))
    }

    /// The scan of a session that may not read every image: the rows of `readable` images;
    /// for `chunks`, the chunks their extents use.
    async fn scan_visible(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        readable: &Arc<HashSet<i64>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if segmented(self.table) {
            return self.scan_segmented(state, self.table, projection, filters, readable.clone()).await;
        }
        let wanted = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let key = if self.per_image() { "image_id" } else { "chunk_hash" };
        let key_index = self.schema.index_of(key)?;
        let mut columns = wanted.clone();
        if !columns.contains(&key_index) {
            columns.push(key_index);
        }
        let scan = self.read(state, self.table, Some(&columns), filters, None).await?;
        if self.per_image() {
            return visible::Visible::over(scan, readable.clone(), (0..wanted.len()).collect());
        }
        // chunks: those the readable images' extents use (a semi join on chunk_hash).
        let extents = datafusion::arrow::datatypes::Schema::from(self.tables.open("extents").await?.schema());
        let used = vec![sql_schema("extents", &extents).index_of("chunk_hash")?];
        let used = self.scan_segmented(state, "extents", Some(&used), &[], readable.clone()).await?;
        visible::semi_join(used, scan, (0..wanted.len()).collect())
    }
}

/// The schema SQL sees of `table`, from its dataset's: for a table stored in segments, the
/// `segment` of each stored row is the `image_id` of each version's row.
fn sql_schema(table: &str, stored: &datafusion::arrow::datatypes::Schema) -> SchemaRef {
    let fields = stored.fields().iter().map(|f| match f.name().as_str() {
        "segment" if segmented(table) => Arc::new(Field::new("image_id", DataType::Int64, false)),
        _ => f.clone(),
    });
    Arc::new(datafusion::arrow::datatypes::Schema::new(fields.collect::<Vec<_>>()))
}

/// Whether `table` is stored in segments (`files`, `extents`).
fn segmented(table: &str) -> bool {
    imagelake_engine::catalog::MANIFESTS.contains(&table)
}

/// The names of the images a session that may not read every image reads; `None` for one
/// that reads them all.
fn visible_names(images: &Images) -> Result<Option<HashSet<String>>> {
    if images.visible.is_none() {
        return Ok(None);
    }
    let mut names = HashSet::new();
    for batch in &images.batches {
        let name = batch
            .column_by_name("name")
            .ok_or_else(|| DataFusionError::Internal("the images table has no name column".into()))?;
        names.extend(name.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(Some(names))
}

/// `batch` (rows of `images`) with each parent the session may not read shown as NULL, as if
/// the version had none.
fn hide_parents(batch: &RecordBatch, readable: &HashSet<i64>) -> Result<RecordBatch> {
    visible::hide_column(batch, "parent_id", readable)
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
        // memory, and DataFusion filters it. A restricted session pushes only filters that
        // cannot fail, since Lance evaluates them on hidden rows too.
        let restricted = self.tables.access.restricted();
        Ok(filters
            .iter()
            .map(|f| match self.table {
                "images" => TableProviderFilterPushDown::Unsupported,
                // Narrows the versions (see `segmented.rs`), and is checked again above.
                table if segmented(table) && segmented::reads_image_id(f) => TableProviderFilterPushDown::Inexact,
                _ if restricted && !visible::cannot_fail(f) => TableProviderFilterPushDown::Unsupported,
                _ => TableProviderFilterPushDown::Exact,
            })
            .collect())
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
        // Which images are committed is read before the table: every row of those images was
        // appended before their commit, so the table read next holds them all.
        let images = self.tables.images().await?;
        // Advisories are about no image: every reader sees them all.
        if self.table == "advisories" {
            return self.read(state, self.table, projection, filters, limit).await;
        }
        // A VEX statement is seen by a session that may read an image it names: then every
        // statement that hides a row of an image it reads is among those it sees.
        if self.table == "vex"
            && let Some(names) = visible_names(&images)?
        {
            let statements = self.tables.library.catalog().vex_statements().await.map_err(external)?;
            let seen: Vec<_> = statements
                .into_iter()
                .filter(|s| names.iter().any(|n| imagelake_engine::access::glob_matches(&s.image, n)))
                .collect();
            let batch = <imagelake_engine::catalog::VexRow as imagelake_engine::catalog::Table>::batch(&seen)?;
            let table = MemTable::try_new(self.schema.clone(), vec![vec![batch]])?;
            return table.scan(state, projection, filters, limit).await;
        }
        if let Some(readable) = &images.visible {
            return self.scan_visible(state, projection, filters, readable).await;
        }
        if !self.per_image() {
            return self.read(state, self.table, projection, filters, limit).await;
        }
        if segmented(self.table) {
            return self.scan_segmented(state, self.table, projection, filters, images.shown.clone()).await;
        }
        let committed = images.committed.clone();
        // The committed filter runs above the Lance scan, not inside it: inside, Lance would
        // answer `image_id <= newest` from the image_id index, a walk over every row id.
        let image_id = self.schema.index_of("image_id")?;
        let mut columns = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let wanted = columns.len();
        if !columns.contains(&image_id) {
            columns.push(image_id);
        }
        let scan = self.read(state, self.table, Some(&columns), filters, None).await?;
        let predicate = state.create_physical_expr(committed, &DFSchema::try_from(scan.schema())?)?;
        let filter = FilterExecBuilder::new(predicate, scan)
            .apply_projection(Some((0..wanted).collect()))?
            .with_fetch(limit)
            .build()?;
        Ok(Arc::new(filter))
    }
}
