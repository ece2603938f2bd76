//! [`Fragments`]: a catalog table's stored rows read through Lance in a cluster's executors.
//!
//! In one process a table is read by Lance's own scan node, which no codec carries to another
//! process. A cluster's scheduler plans this node instead: the table, the table version it
//! planned against, the columns, the filters (Lance answers them from its indexes, as in one
//! process) and a limit, with the table's fragments dealt out over the partitions. Each
//! executor opens the table at that version and reads its partition's fragments, so that
//! every partition reads the same table version whatever is committed meanwhile, and the
//! partitions together read each fragment exactly once.

use crate::external;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use imagelake_engine::Library;
use lance::Dataset;
use std::collections::HashSet;
use std::sync::Arc;

/// What a [`Fragments`] node reads; what the codec carries.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub table: String,
    /// The table version the plan was made against.
    pub version: u64,
    /// The stored columns read, in output order.
    pub columns: Vec<String>,
    /// Filters Lance applies inside the scan (all of them hold for every row returned).
    pub filters: Vec<Expr>,
    pub limit: Option<usize>,
    /// The fragment ids each partition reads.
    pub groups: Vec<Vec<u64>>,
    pub schema: SchemaRef,
}

pub struct Fragments {
    library: Arc<Library>,
    pub(crate) read: Read,
    properties: Arc<PlanProperties>,
}

impl std::fmt::Debug for Fragments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fragments({}@{})", self.read.table, self.read.version)
    }
}

impl Fragments {
    /// Plans the read of `columns` (indices into the stored schema; None for all) of `table`
    /// as `dataset` holds it, over at most `partitions` partitions.
    pub fn plan(
        library: Arc<Library>,
        table: &str,
        dataset: &Dataset,
        columns: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        partitions: usize,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let stored = Arc::new(datafusion::arrow::datatypes::Schema::from(dataset.schema()));
        let schema = match columns {
            Some(columns) => Arc::new(stored.project(columns)?),
            None => stored,
        };
        let ids: Vec<u64> = dataset.manifest().fragments.iter().map(|f| f.id).collect();
        let mut groups = vec![Vec::new(); partitions.clamp(1, ids.len().max(1))];
        let count = groups.len();
        for (i, id) in ids.into_iter().enumerate() {
            groups[i % count].push(id);
        }
        let read = Read {
            table: table.to_string(),
            version: dataset.version_id(),
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            filters: filters.iter().cloned().map(unnormalize_col).collect(),
            limit,
            groups,
            schema,
        };
        Ok(Arc::new(Fragments::new(library, read)))
    }

    pub(crate) fn new(library: Arc<Library>, read: Read) -> Fragments {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(read.schema.clone()),
            Partitioning::UnknownPartitioning(read.groups.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Fragments { library, read, properties }
    }
}

/// The rows of one partition: its fragments of the table at the planned version.
async fn partition(library: Arc<Library>, read: Read, partition: usize) -> Result<SendableRecordBatchStream> {
    let schema = read.schema.clone();
    let wanted: HashSet<u64> = read.groups.get(partition).into_iter().flatten().copied().collect();
    if wanted.is_empty() {
        return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::empty())));
    }
    let newest = library.catalog().dataset(&read.table).await.map_err(external)?;
    let dataset = if newest.version_id() == read.version {
        newest
    } else {
        newest.checkout_version(read.version).await.map_err(external)?
    };
    let fragments: Vec<_> = dataset.manifest().fragments.iter().filter(|f| wanted.contains(&f.id)).cloned().collect();
    if fragments.len() != wanted.len() {
        return Err(DataFusionError::Execution(format!(
            "table {} at version {} lacks fragments the plan names",
            read.table, read.version
        )));
    }
    let mut scan = dataset.scan();
    scan.with_fragments(fragments);
    // Lance reads at least one column; a count reads the first and keeps only its row count.
    let columns: Vec<&str> = match read.columns.is_empty() {
        true => dataset.schema().fields.first().map(|f| f.name.as_str()).into_iter().collect(),
        false => read.columns.iter().map(String::as_str).collect(),
    };
    scan.project(&columns).map_err(external)?;
    if let Some(filter) = conjunction(read.filters.iter().cloned()) {
        scan.filter_expr(filter);
    }
    if let Some(limit) = read.limit {
        scan.limit(Some(limit as i64), None).map_err(external)?;
    }
    let rows = scan.try_into_stream().await.map_err(external)?;
    let conformed = schema.clone();
    let rows = rows.map_err(external).map(move |batch| {
        let batch = batch?;
        let columns = conformed
            .fields()
            .iter()
            .map(|f| {
                batch
                    .column_by_name(f.name())
                    .cloned()
                    .ok_or_else(|| DataFusionError::Internal(format!("Lance's scan returned no column {}", f.name())))
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(conformed.clone(), columns, &options)?)
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
}

impl DisplayAs for Fragments {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let filters: Vec<String> = self.read.filters.iter().map(|e| e.to_string()).collect();
        write!(
            f,
            "Fragments: {} at version {}, columns [{}], filters [{}]",
            self.read.table,
            self.read.version,
            self.read.columns.join(", "),
            filters.join(", ")
        )
    }
}

impl ExecutionPlan for Fragments {
    fn name(&self) -> &str {
        "Fragments"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn with_new_children(self: Arc<Self>, _: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, index: usize, _: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let (library, read) = (self.library.clone(), self.read.clone());
        let schema = read.schema.clone();
        let rows = futures::stream::once(partition(library, read, index)).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
    }
}
