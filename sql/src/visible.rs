//! The plan nodes of a restricted scan (see `tables.rs`): [`Visible`] keeps the rows of the
//! images a session may read, and nothing above it sees another.

use datafusion::arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::common::{DataFusionError, NullEquality, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, JoinType, Operator};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;

/// True when `filter` cannot fail whatever row it meets: Lance may then evaluate it inside
/// the scan, on hidden rows as well. Arithmetic, casts and function calls can fail (a division
/// by zero on one hidden row would tell that the row exists), so they are evaluated above
/// [`Visible`] instead.
pub fn cannot_fail(filter: &Expr) -> bool {
    let operand = |e: &Expr| matches!(e, Expr::Column(_) | Expr::Literal(..));
    match filter {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::BinaryExpr(b) => match b.op {
            Operator::And | Operator::Or => cannot_fail(&b.left) && cannot_fail(&b.right),
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom => operand(&b.left) && operand(&b.right),
            _ => false,
        },
        Expr::Not(e) | Expr::IsNull(e) | Expr::IsNotNull(e) => cannot_fail(e),
        Expr::Like(like) => like.escape_char.is_none() && operand(&like.expr) && operand(&like.pattern),
        Expr::InList(list) => operand(&list.expr) && list.list.iter().all(operand),
        Expr::Between(b) => operand(&b.expr) && operand(&b.low) && operand(&b.high),
        _ => false,
    }
}

/// Keeps the rows of `input` whose `image_id` is readable, then the columns of `projection`
/// (indices into `input`'s columns); a `parent_id` the session may not read reads as NULL.
#[derive(Debug)]
pub struct Visible {
    input: Arc<dyn ExecutionPlan>,
    readable: Arc<HashSet<i64>>,
    projection: Vec<usize>,
    image_id: usize,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl Visible {
    pub fn over(
        input: Arc<dyn ExecutionPlan>,
        readable: Arc<HashSet<i64>>,
        projection: Vec<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let image_id = input.schema().index_of("image_id")?;
        let schema = Arc::new(input.schema().project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.properties().partitioning.clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Arc::new(Visible { input, readable, projection, image_id, schema, properties }))
    }

    /// The readable images, and the columns kept.
    pub fn parts(&self) -> (&HashSet<i64>, &[usize]) {
        (&self.readable, &self.projection)
    }

    fn keep(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let ids = batch.column(self.image_id).as_primitive::<Int64Type>();
        let shown: BooleanArray = ids.iter().map(|id| Some(id.is_some_and(|id| self.readable.contains(&id)))).collect();
        let kept = filter_record_batch(&batch.project(&self.projection)?, &shown)?;
        hide_column(&kept, "parent_id", &self.readable)
    }
}

impl DisplayAs for Visible {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Visible: the images the session may read")
    }
}

impl ExecutionPlan for Visible {
    fn name(&self) -> &str {
        "Visible"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] =
            <[_; 1]>::try_from(children).map_err(|_| DataFusionError::Internal("Visible takes one input".into()))?;
        Visible::over(input, self.readable.clone(), self.projection.clone())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let this = Visible {
            input: self.input.clone(),
            readable: self.readable.clone(),
            projection: self.projection.clone(),
            image_id: self.image_id,
            schema: self.schema.clone(),
            properties: self.properties.clone(),
        };
        let stream = input.map(move |batch| this.keep(&batch?));
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }
}

/// `right`'s rows whose `chunk_hash` one of `left`'s rows holds, then the columns of
/// `projection` (indices into `right`'s columns).
pub fn semi_join(
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    projection: Vec<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let key = |plan: &Arc<dyn ExecutionPlan>| -> Result<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
        let schema = plan.schema();
        Ok(Arc::new(Column::new("chunk_hash", schema.index_of("chunk_hash")?)))
    };
    let on = vec![(key(&left)?, key(&right)?)];
    let left: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(left));
    Ok(Arc::new(HashJoinExec::try_new(
        left,
        right,
        on,
        None,
        &JoinType::RightSemi,
        Some(projection),
        PartitionMode::CollectLeft,
        NullEquality::NullEqualsNothing,
        false,
    )?))
}

/// `batch` with its column `name` (an image id) NULL where the id is not readable; the batch
/// itself when it has no such column.
pub fn hide_column(batch: &RecordBatch, name: &str, readable: &HashSet<i64>) -> Result<RecordBatch> {
    let Ok(index) = batch.schema().index_of(name) else {
        return Ok(batch.clone());
    };
    let ids = batch.column(index).as_primitive::<Int64Type>();
    if ids.iter().all(|id| id.is_none_or(|id| readable.contains(&id))) {
        return Ok(batch.clone());
    }
    let hidden: Int64Array = ids.iter().map(|id| id.filter(|id| readable.contains(id))).collect();
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(hidden) as Arc<dyn Array>;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn only_filters_that_cannot_fail_go_below_the_visible_rows() {
        assert!(cannot_fail(&col("image_id").eq(lit(3))));
        assert!(cannot_fail(&col("path").like(lit("/etc/%")).and(col("size").gt(lit(10)))));
        assert!(cannot_fail(&col("name").in_list(vec![lit("a"), lit("b")], false)));
        assert!(cannot_fail(&col("content_hash").is_null().or(col("kind").not_eq(lit("dir")))));
        // Arithmetic can divide by zero; a cast can meet text that is no number.
        assert!(!cannot_fail(&(lit(1) / col("image_id")).eq(lit(1))));
        assert!(!cannot_fail(
            &datafusion::logical_expr::cast(col("path"), datafusion::arrow::datatypes::DataType::Int64).eq(lit(1))
        ));
        assert!(!cannot_fail(&col("a").eq(lit(1)).and((col("b") % lit(0)).eq(lit(1)))));
    }
}
