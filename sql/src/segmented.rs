//! `files` and `extents` as SQL sees them: one row per version and stored row, although each
//! row is stored once per segment (see `engine/src/catalog/segments.rs`), whatever the
//! number of versions that list the segment.
//!
//! The Lance scan of the stored rows answers every filter on their own columns (from the
//! indexes: `content_hash`, `path`), and [`Expand`] above it turns each stored row into the
//! rows of the versions that list its segment, among those the statement may see. A filter on
//! `image_id` (`= n`, `IN (...)`) first finds the versions' segments (the `segments` index on
//! `image_id`) and narrows the scan to them (the `segment` index); other filters on
//! `image_id` are checked again above, as DataFusion does for inexact ones. Otherwise the
//! versions of every segment are known up front in a small library (kept in memory by the
//! catalog per `segments` table version); in a large one, the versions of a stored row are
//! found as the rows come: the segments of a batch are looked up through the `segments` index
//! on `segment`, or, once a scan turns out to meet many, all at once.

use crate::external;
use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Operator};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use imagelake_engine::Library;
use imagelake_engine::catalog::SegmentUsers;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Segments looked up one batch at a time until a scan has met this many; then every
/// segment's versions are read at once.
const LOOKUPS_BEFORE_ALL: usize = 4096;

/// Whether `filter` reads `image_id`.
pub fn reads_image_id(filter: &Expr) -> bool {
    filter.column_refs().iter().any(|c| c.name == "image_id")
}

/// The image ids `filters` (joined by AND) allow at most, when one of them says: `image_id =
/// n` or `image_id IN (n, ...)`.
pub fn image_ids_in(filters: &[Expr]) -> Option<HashSet<i64>> {
    let id = |e: &Expr| match e {
        Expr::Literal(value, _) => match value.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(Some(id))) => Some(id),
            _ => None,
        },
        _ => None,
    };
    let is_image_id = |e: &Expr| matches!(e, Expr::Column(c) if c.name == "image_id");
    let mut allowed: Option<HashSet<i64>> = None;
    for filter in filters {
        let ids: Option<HashSet<i64>> = match filter {
            Expr::BinaryExpr(b) if b.op == Operator::Eq && is_image_id(&b.left) => id(&b.right).map(|i| [i].into()),
            Expr::BinaryExpr(b) if b.op == Operator::Eq && is_image_id(&b.right) => id(&b.left).map(|i| [i].into()),
            Expr::InList(list) if !list.negated && is_image_id(&list.expr) => {
                list.list.iter().map(id).collect::<Option<HashSet<i64>>>()
            }
            _ => None,
        };
        if let Some(ids) = ids {
            allowed = Some(match allowed {
                Some(before) => before.intersection(&ids).copied().collect(),
                None => ids,
            });
        }
    }
    allowed
}

/// Which versions list each segment, among those a statement may see.
pub struct Users {
    library: Arc<Library>,
    manifest: &'static str,
    shown: Arc<HashSet<i64>>,
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    users: Arc<SegmentUsers>,
    /// Every segment's versions are in `users`.
    all: bool,
    /// `users` holds the segments of the versions asked for, and only those.
    narrowed: bool,
    looked_up: usize,
}

impl Users {
    /// The versions of the segments of `ids` (from the `segments` index on image_id), or,
    /// with None, of every segment when the library is small enough to keep them in memory,
    /// else versions found as the rows come.
    pub async fn new(
        library: Arc<Library>,
        manifest: &'static str,
        shown: Arc<HashSet<i64>>,
        ids: Option<&HashSet<i64>>,
    ) -> Result<Arc<Users>> {
        let catalog = library.catalog();
        let mut known = Known::default();
        if let Some(ids) = ids {
            let ids: Vec<i64> = ids.iter().copied().filter(|id| shown.contains(id)).collect();
            known.users = Arc::new(catalog.version_segments(manifest, &ids).await.map_err(external)?);
            (known.all, known.narrowed) = (true, true);
        } else if let Some(every) = catalog.small_segment_users(manifest).await.map_err(external)? {
            known.users = every;
            known.all = true;
        }
        Ok(Arc::new(Users { library, manifest, shown, known: Mutex::new(known) }))
    }

    /// The versions of segments found as the rows come (a plan decoded in another process).
    pub fn later(library: Arc<Library>, manifest: &'static str, shown: Arc<HashSet<i64>>) -> Arc<Users> {
        Arc::new(Users { library, manifest, shown, known: Mutex::new(Known::default()) })
    }

    /// The segments of the versions asked for (with image ids), to narrow the scan to; None
    /// otherwise.
    pub fn segments(&self) -> Option<Vec<String>> {
        let known = self.known.lock().ok()?;
        known.narrowed.then(|| known.users.keys().cloned().collect())
    }

    fn poisoned() -> DataFusionError {
        DataFusionError::Internal("a segment lookup failed in another thread".into())
    }

    /// Makes sure the versions of `segments` are known.
    async fn look_up(&self, segments: &[&str]) -> Result<()> {
        let (missing, everything) = {
            let known = self.known.lock().map_err(|_| Users::poisoned())?;
            if known.all {
                return Ok(());
            }
            let missing: Vec<String> =
                segments.iter().filter(|s| !known.users.contains_key(**s)).map(|s| s.to_string()).collect();
            let everything = known.looked_up + missing.len() > LOOKUPS_BEFORE_ALL;
            (missing, everything)
        };
        if missing.is_empty() {
            return Ok(());
        }
        let catalog = self.library.catalog();
        if everything {
            let every = catalog.every_segment_users(self.manifest).await.map_err(external)?;
            let mut known = self.known.lock().map_err(|_| Users::poisoned())?;
            (known.users, known.all) = (every, true);
            return Ok(());
        }
        let found = catalog.segment_users(self.manifest, &missing).await.map_err(external)?;
        let mut known = self.known.lock().map_err(|_| Users::poisoned())?;
        known.looked_up += missing.len();
        let users = Arc::make_mut(&mut known.users);
        for segment in missing {
            users.entry(segment).or_default();
        }
        users.extend(found);
        Ok(())
    }

    /// `batch` (stored rows, with their `segment`) as rows of the versions that list each
    /// segment: which stored row each output row copies, and its version.
    async fn expand(&self, batch: &RecordBatch) -> Result<(Vec<u32>, Vec<i64>)> {
        let segment = batch.column_by_name("segment").ok_or_else(|| {
            DataFusionError::Internal(format!("the stored rows of {} came without their segment", self.manifest))
        })?;
        let segment = segment.as_string::<i32>();
        let mut distinct: Vec<&str> = segment.iter().flatten().collect();
        distinct.sort_unstable();
        distinct.dedup();
        self.look_up(&distinct).await?;
        let (mut rows, mut ids) = (Vec::new(), Vec::new());
        let known = self.known.lock().map_err(|_| Users::poisoned())?;
        for (r, s) in segment.iter().enumerate() {
            let users = s.and_then(|s| known.users.get(s));
            for &id in users.into_iter().flatten().filter(|id| self.shown.contains(id)) {
                rows.push(r as u32);
                ids.push(id);
            }
        }
        Ok((rows, ids))
    }
}

/// The output rows `range` of an expansion: `schema`'s columns, each a column of the stored
/// `batch` by name (taken at `rows`) or `image_id` (from `ids`).
fn expanded(
    manifest: &str,
    batch: &RecordBatch,
    (rows, ids): (&[u32], &[i64]),
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let rows = UInt32Array::from(rows.to_vec());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        columns.push(match field.name().as_str() {
            "image_id" => Arc::new(Int64Array::from(ids.to_vec())) as Arc<dyn Array>,
            name => {
                let column = batch.column_by_name(name).ok_or_else(|| {
                    DataFusionError::Internal(format!("the stored rows of {manifest} came without {name}"))
                })?;
                take(column, &rows, None)?
            }
        });
    }
    let options = RecordBatchOptions::new().with_row_count(Some(ids.len()));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}

/// The rows of the versions that list each stored row's segment (see the module docs).
pub struct Expand {
    input: Arc<dyn ExecutionPlan>,
    users: Arc<Users>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl std::fmt::Debug for Expand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expand({})", self.users.manifest)
    }
}

impl Expand {
    /// `schema`: the columns wanted, `image_id` among them or not, the others read by `input`.
    pub fn over(input: Arc<dyn ExecutionPlan>, users: Arc<Users>, schema: SchemaRef) -> Arc<dyn ExecutionPlan> {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.properties().partitioning.clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Arc::new(Expand { input, users, schema, properties })
    }
}

impl Expand {
    /// The table it expands and the versions it may show.
    pub fn users(&self) -> (&'static str, &HashSet<i64>) {
        (self.users.manifest, &self.users.shown)
    }
}

impl DisplayAs for Expand {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Expand: the stored rows of {} into the rows of each version", self.users.manifest)
    }
}

impl ExecutionPlan for Expand {
    fn name(&self) -> &str {
        "Expand"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] =
            <[_; 1]>::try_from(children).map_err(|_| DataFusionError::Internal("Expand takes one input".into()))?;
        Ok(Expand::over(input, self.users.clone(), self.schema.clone()))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        // A stored row shared by many versions becomes many rows: the output comes in batches
        // of the session's size, each made as it is read, so memory stays flat.
        let size = context.session_config().batch_size().max(1);
        let input = self.input.execute(partition, context)?;
        let (users, schema) = (self.users.clone(), self.schema.clone());
        let stream = input
            .then(move |batch| {
                let users = users.clone();
                async move {
                    let batch = batch?;
                    let expansion = users.expand(&batch).await?;
                    Ok::<_, DataFusionError>((users, batch, expansion))
                }
            })
            .flat_map(move |expanded_batch| {
                let schema = schema.clone();
                let parts: Box<dyn Iterator<Item = Result<RecordBatch>> + Send> = match expanded_batch {
                    Err(e) => Box::new(std::iter::once(Err(e))),
                    Ok((users, batch, (rows, ids))) => Box::new((0..ids.len()).step_by(size).map(move |start| {
                        let end = (start + size).min(ids.len());
                        expanded(users.manifest, &batch, (&rows[start..end], &ids[start..end]), &schema)
                    })),
                };
                futures::stream::iter(parts)
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn image_id_filters_narrow_the_versions_and_others_do_not() {
        let ids = |filters: Vec<Expr>| {
            image_ids_in(&filters).map(|s| s.into_iter().collect::<std::collections::BTreeSet<_>>())
        };
        assert_eq!(ids(vec![col("image_id").eq(lit(3))]), Some([3].into()));
        assert_eq!(ids(vec![lit(4i32).eq(col("image_id"))]), Some([4].into()));
        assert_eq!(
            ids(vec![col("image_id").in_list(vec![lit(1), lit(2), lit(5)], false), col("image_id").eq(lit(2))]),
            Some([2].into())
        );
        assert_eq!(ids(vec![col("image_id").in_list(vec![lit(1)], true)]), None);
        assert_eq!(ids(vec![col("image_id").gt(lit(1)), col("path").eq(lit("/etc"))]), None);
        assert_eq!(ids(vec![col("image_id").eq(lit(1)).or(col("image_id").eq(lit(2)))]), None);
        assert!(reads_image_id(&col("image_id").gt(lit(1)).or(col("path").eq(lit("x")))));
        assert!(!reads_image_id(&col("path").eq(lit("x"))));
    }
}
