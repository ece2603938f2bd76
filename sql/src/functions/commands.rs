//! Command functions: `checkin(path, name)` and `checkout(image, path)` as table functions
//! returning a summary row, and `checkout_to(image, path)`, a volatile scalar applied per row.
//!
//! Each command runs exactly once per executed statement:
//! - never while planning: the table function only checks its literals; the work is a lazy
//!   future polled by the table's stream at execution;
//! - never under `EXPLAIN` (which plans and does not execute), once under `EXPLAIN ANALYZE`;
//! - not twice when the plan is executed twice (a CTE read twice, a re-collected DataFrame):
//!   the command's result is kept and handed to every later reader;
//! - not twice when the statement is planned again: each planning makes a new command, and
//!   only a statement that is executed runs one;
//! - not skipped when the optimizer removes the scan (`LIMIT 0`, `WHERE false`): every
//!   command a statement planned is registered in [`Commands`], and `Session::run` runs
//!   those the plan never reached once the statement has finished.

use super::{Lib, arity, block_on, engine_err, text_arg, text_rows};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::datasource::TableProvider;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use imagelake_engine::CheckinOptions;
use imagelake_engine::access::Right;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub fn register(ctx: &SessionContext, lib: &Lib) {
    ctx.register_udtf("checkin", Arc::new(Checkin { lib: lib.clone() }));
    ctx.register_udtf("checkout", Arc::new(Checkout { lib: lib.clone() }));
    let signature = Signature::any(2, Volatility::Volatile);
    ctx.register_udf(ScalarUDF::from(CheckoutTo { lib: lib.clone(), signature }));
}

/// The commands planned by one statement. Each statement plans in a state of its own that
/// carries a fresh `Commands` (a `SessionConfig` extension), so statements planned at once on
/// one session (a server's clients) never take each other's commands. The session's own
/// context carries one that keeps nothing: what is planned outside a statement never runs.
#[derive(Debug, Default)]
pub struct Commands {
    planned: Mutex<Vec<Arc<Command>>>,
    discard: bool,
}

impl Commands {
    pub fn discarding() -> Commands {
        Commands { planned: Mutex::default(), discard: true }
    }

    fn add(&self, command: Arc<Command>) {
        if !self.discard
            && let Ok(mut planned) = self.planned.lock()
        {
            planned.push(command);
        }
    }

    /// Forgets what was planned so far and returns it.
    pub fn take(&self) -> Vec<Arc<Command>> {
        self.planned.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }
}

pub(crate) type Job = BoxFuture<'static, Result<RecordBatch>>;

/// One planned command: its work, not started, and once run, its result.
pub struct Command {
    pub label: String,
    job: Mutex<Option<Job>>,
    result: tokio::sync::OnceCell<std::result::Result<RecordBatch, Arc<DataFusionError>>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.label)
    }
}

impl Command {
    pub(super) fn new(label: String, job: Job) -> Arc<Command> {
        Arc::new(Command { label, job: Mutex::new(Some(job)), result: tokio::sync::OnceCell::new() })
    }

    /// Runs the command the first time; later calls return the first result.
    pub async fn run(&self) -> Result<RecordBatch> {
        let result = self
            .result
            .get_or_init(|| async {
                let job = self.job.lock().ok().and_then(|mut j| j.take());
                match job {
                    Some(job) => job.await.map_err(Arc::new),
                    None => Err(Arc::new(DataFusionError::Execution(format!("{} was interrupted", self.label)))),
                }
            })
            .await;
        result.clone().map_err(DataFusionError::Shared)
    }

    pub fn has_run(&self) -> bool {
        self.result.initialized()
    }
}

/// The table a command function returns: one partition that runs the command when read.
#[derive(Debug)]
struct CommandStream {
    schema: SchemaRef,
    command: Arc<Command>,
}

impl PartitionStream for CommandStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }
    fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
        let command = self.command.clone();
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(async move { command.run().await }),
        ))
    }
}

pub(super) fn command_table(
    session: &dyn Session,
    schema: SchemaRef,
    command: Arc<Command>,
) -> Result<Arc<dyn TableProvider>> {
    if let Some(commands) = session.config().get_extension::<Commands>() {
        commands.add(command.clone());
    }
    let stream = Arc::new(CommandStream { schema: schema.clone(), command });
    Ok(Arc::new(StreamingTable::try_new(schema, vec![stream])?))
}

pub(super) fn fields(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()))
}

pub(super) fn int(v: impl Into<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(vec![v.into()]))
}
pub(super) fn text(v: impl Into<String>) -> ArrayRef {
    Arc::new(StringArray::from(vec![v.into()]))
}
pub(super) fn seconds(v: f64) -> ArrayRef {
    Arc::new(Float64Array::from(vec![v]))
}

#[derive(Debug)]
struct Checkin {
    lib: Lib,
}

const CHECKIN_USAGE: &str = "checkin(path, name), e.g. checkin('/srv/images/web.qcow2', 'web')";

impl TableFunctionImpl for Checkin {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        arity("checkin", CHECKIN_USAGE, exprs, 2)?;
        let path = PathBuf::from(text_arg("checkin", CHECKIN_USAGE, exprs, 0, "path")?);
        let name = text_arg("checkin", CHECKIN_USAGE, exprs, 1, "name")?;
        self.lib.access.check_write(Right::Write, &name, "checkin")?;
        let path = self.lib.access.host_path("checkin source", &path)?;
        let schema = fields(&[
            ("image_id", DataType::Int64),
            ("name", DataType::Utf8),
            ("version", DataType::Int64),
            ("partitions", DataType::Int64),
            ("files", DataType::Int64),
            ("packages", DataType::Int64),
            ("bytes_read", DataType::Int64),
            ("bytes_new", DataType::Int64),
            ("bytes_stored", DataType::Int64),
            ("bytes_deduplicated", DataType::Int64),
            ("seconds", DataType::Float64),
            ("warnings", DataType::Utf8),
        ]);
        let (lib, out) = (self.lib.clone(), schema.clone());
        let label = format!("checkin({}, {name})", path.display());
        let job = self.lib.detached(async move {
            let options = CheckinOptions::default();
            let s = lib.library.checkin(&path, &name, options).await.map_err(engine_err)?;
            let columns = vec![
                int(s.image_id),
                text(s.name),
                int(s.version),
                int(s.partitions as i64),
                int(s.files as i64),
                int(s.packages as i64),
                int(s.bytes_read as i64),
                int(s.bytes_new as i64),
                int(s.bytes_stored as i64),
                int(s.bytes_deduplicated as i64),
                seconds(s.seconds),
                text(s.warnings.join("; ")),
            ];
            Ok(RecordBatch::try_new(out, columns)?)
        });
        command_table(args.session(), schema, Command::new(label, job))
    }
}

#[derive(Debug)]
struct Checkout {
    lib: Lib,
}

const CHECKOUT_USAGE: &str = "checkout(image, path), e.g. checkout('web@2', '/srv/out/web.raw')";

fn checkout_schema() -> SchemaRef {
    fields(&[
        ("image_id", DataType::Int64),
        ("name", DataType::Utf8),
        ("version", DataType::Int64),
        ("output", DataType::Utf8),
        ("virtual_size", DataType::Int64),
        ("bytes_written", DataType::Int64),
        ("seconds", DataType::Float64),
    ])
}

async fn checkout(lib: &Lib, image: &str, out: &std::path::Path, schema: SchemaRef) -> Result<RecordBatch> {
    lib.image(image, Right::Read).await?;
    let s = lib.library.checkout(image, out, &Default::default()).await.map_err(engine_err)?;
    let columns = vec![
        int(s.image_id),
        text(s.name),
        int(s.version),
        text(s.output.display().to_string()),
        int(s.virtual_size as i64),
        int(s.bytes_written as i64),
        seconds(s.seconds),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

impl TableFunctionImpl for Checkout {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        arity("checkout", CHECKOUT_USAGE, exprs, 2)?;
        let image = text_arg("checkout", CHECKOUT_USAGE, exprs, 0, "image")?;
        let out = PathBuf::from(text_arg("checkout", CHECKOUT_USAGE, exprs, 1, "path")?);
        let out = self.lib.access.host_path("checkout target", &out)?;
        let (lib, schema) = (self.lib.clone(), checkout_schema());
        let label = format!("checkout({image}, {})", out.display());
        let for_job = schema.clone();
        let job = self.lib.detached(async move { checkout(&lib, &image, &out, for_job).await });
        command_table(args.session(), schema, Command::new(label, job))
    }
}

/// `checkout_to(image, path)`: checks out one image per row and returns where it went.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CheckoutTo {
    lib: Lib,
    signature: Signature,
}

impl ScalarUDFImpl for CheckoutTo {
    fn name(&self) -> &str {
        "checkout_to"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.len() != 2 {
            return exec_err!("checkout_to(image, path) takes two arguments");
        }
        let mut out = Vec::with_capacity(args.number_rows);
        for row in text_rows(&args)? {
            let [Some(image), Some(path)] = row.as_slice() else {
                out.push(None);
                continue;
            };
            let path = self.lib.access.host_path("checkout target", &PathBuf::from(path))?;
            block_on(self.lib.image(image, Right::Read))??;
            let s = block_on(self.lib.library.checkout(image, &path, &Default::default()))?
                .map_err(|e| DataFusionError::Execution(format!("checkout_to({image}, {}): {e}", path.display())))?;
            out.push(Some(format!("{}@{} -> {}", s.name, s.version, s.output.display())));
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}
