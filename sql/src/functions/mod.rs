//! imagelake's SQL functions.
//!
//! - Read functions ([`read`]): `compare`, `ls`, `file_lines`, `image_stats` (table functions;
//!   `sbom` and `sbom_diff` too, in `crate::sbom`)
//!   and `read_text`, `read_bytes`, `version_cmp` (scalars); `history` (a table function, in
//!   `edits` beside the commands that make versions). Pure: running them twice is harmless.
//! - Command functions, which change the library: `checkin`, `checkout` (table functions) and
//!   `checkout_to` (a volatile scalar, once per row) in [`commands`]; `replace_content`,
//!   `import`, `remove`, `set_meta`, `clone`, `delete`, `undelete` and `patch` (each a table
//!   function and, under the same name, a volatile scalar) and `gc` (a table function) in
//!   `edits`. Each runs exactly once per executed statement; `Session::run` enforces the rules
//!   DataFusion leaves open (see `commands`).
//!
//! DataFusion calls a table function while *planning*, synchronously, with its arguments
//! folded to literals; a column reference arrives unresolved. So a table function here only
//! checks its literals and returns a table whose `scan` (read functions) or stream (commands)
//! does the work.

pub mod commands;
mod edits;
pub mod read;
mod users;
mod version;

use crate::access::{self, Access};
use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionImpl};
use datafusion::common::{DataFusionError, Result, ScalarValue, plan_err};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use imagelake_engine::Library;
use imagelake_engine::access::Right;
use imagelake_engine::catalog::ImageRow;
use std::sync::Arc;

pub use commands::Commands;

/// The library and who the session runs as, shared by every function of a session.
/// Functions must be `Eq` and `Hash` for DataFusion; two handles are equal when they are the
/// same library seen by the same session.
#[derive(Clone)]
pub struct Lib {
    pub library: Arc<Library>,
    pub access: Arc<Access>,
}

impl std::fmt::Debug for Lib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Library({})", self.library.location())
    }
}
impl PartialEq for Lib {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.library, &other.library) && Arc::ptr_eq(&self.access, &other.access)
    }
}
impl Eq for Lib {}
impl std::hash::Hash for Lib {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.library).hash(state);
        Arc::as_ptr(&self.access).hash(state);
    }
}

impl Lib {
    /// The image version `spec` names, if the session may use it so (see `access::resolve`).
    pub(crate) async fn image(&self, spec: &str, right: Right) -> Result<ImageRow> {
        access::resolve(&self.library, &self.access, spec, right, false).await
    }

    /// Runs `work` for the session's principal: a version it commits names the server user
    /// as its actor.
    pub(crate) fn acting<F: std::future::Future>(
        &self,
        work: F,
    ) -> impl std::future::Future<Output = F::Output> + use<F> {
        let user = self.access.principal.user_name().map(str::to_string);
        imagelake_engine::acting_for(user, work)
    }

    /// Runs a command's `job` as its own task, for the session's principal: a cancelled
    /// statement stops waiting, but a checkin or checkout already under way finishes (each
    /// commits with one rename or one row; see the engine).
    pub(crate) fn detached(
        &self,
        job: impl std::future::Future<Output = Result<datafusion::arrow::array::RecordBatch>> + Send + 'static,
    ) -> commands::Job {
        let job = self.acting(job);
        Box::pin(async move {
            tokio::spawn(job).await.map_err(|e| DataFusionError::Execution(format!("the command failed: {e}")))?
        })
    }

    /// True when `spec` names an image the session may not read, which must then fail as a
    /// missing one would.
    pub(crate) async fn hidden(&self, spec: &str) -> bool {
        self.access.restricted()
            && self.library.resolve_any(spec).await.is_ok_and(|row| !self.access.may_read(&row.name))
    }
}

/// The table functions that only read, by name: each is registered so that its calls remember
/// their arguments ([`crate::distributed::Remembered`]), which a cluster's codec carries.
pub fn read_table_functions(lib: &Lib) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    let mut functions = read::table_functions(lib);
    functions.extend(users::table_functions(lib));
    functions.push(("history", edits::history(lib)));
    functions.extend(crate::sbom::table_functions(lib));
    functions
}

/// The scalar function of `name` that reads (`read_text`, `read_bytes`, `version_cmp`).
pub fn read_scalar_function(lib: &Lib, name: &str) -> Option<datafusion::logical_expr::ScalarUDF> {
    match name {
        "read_text" => Some(read::read_file(lib, false)),
        "read_bytes" => Some(read::read_file(lib, true)),
        _ => pure_scalar_function(name),
    }
}

/// The scalar function of `name` whose answer depends on its arguments alone (`version_cmp`,
/// and `crate::advisories`' `osv_affects`, `osv_fixed`, `os_release`, `image_matches`).
pub fn pure_scalar_function(name: &str) -> Option<datafusion::logical_expr::ScalarUDF> {
    (name == "version_cmp").then(version::version_cmp).or_else(|| crate::advisories::scalar_function(name))
}

/// Whom a scalar function of [`read_scalar_function`] reads for, when what it returns depends
/// on it (`read_text` and `read_bytes`; not `version_cmp`).
pub fn reads_for(udf: &datafusion::logical_expr::ScalarUDF) -> Option<&Arc<Access>> {
    udf.inner().downcast_ref::<read::ReadFile>().map(|f| &f.lib.access)
}

/// Registers every function on `ctx`.
pub fn register(ctx: &SessionContext, lib: &Lib) {
    for (name, function) in read_table_functions(lib) {
        ctx.register_udtf(name, Arc::new(crate::distributed::Remembered::new(name, function, lib.access.clone())));
    }
    read::register(ctx, lib);
    commands::register(ctx, lib);
    edits::register(ctx, lib);
    users::register(ctx, lib);
    ctx.register_udf(version::version_cmp());
}

/// A table function's text argument, which must be a literal: a column has no value while the
/// statement is planned.
pub(crate) fn text_arg(function: &str, usage: &str, args: &[Expr], i: usize, what: &str) -> Result<String> {
    match args.get(i) {
        Some(Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
            _,
        )) => Ok(s.clone()),
        Some(Expr::Literal(v, _)) if matches!(v, ScalarValue::Int64(Some(_)) | ScalarValue::Int32(Some(_))) => {
            Ok(v.to_string())
        }
        Some(Expr::Column(c)) => plan_err!(
            "{function}(): the {what} must be a literal such as {}, not the column {}; {}",
            example(what),
            c.name,
            per_row_hint(function)
        ),
        Some(other) => plan_err!("{function}(): the {what} must be a text literal, not {other}; usage: {usage}"),
        None => plan_err!("{function}() takes {usage}"),
    }
}

/// Checks a table function's argument count.
pub(crate) fn arity(function: &str, usage: &str, args: &[Expr], n: usize) -> Result<()> {
    if args.len() == n { Ok(()) } else { plan_err!("{function}() takes {n} arguments: {usage}") }
}

fn example(what: &str) -> &'static str {
    match what {
        "image" | "old image" | "new image" => "'web@2'",
        "name" => "'web'",
        "directory" => "'/etc'",
        _ => "'/path'",
    }
}

fn per_row_hint(function: &str) -> &'static str {
    match function {
        "checkout" => "to check out every image a query finds, call checkout_to(name, path) in its SELECT list",
        "file_lines" => "for one file per row use read_text(image, path) in the SELECT list",
        _ => "table functions take constants (a column's value is not known while the query is planned)",
    }
}

/// Runs `f` (which may block on async engine calls) from inside a DataFusion operator.
/// Scalar functions are synchronous, and the engine is async: this parks the worker thread
/// (tokio's multi-threaded runtime moves its other tasks elsewhere meanwhile).
pub(crate) fn block_on<T>(future: impl std::future::Future<Output = T>) -> Result<T> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| DataFusionError::Execution("imagelake functions need a tokio runtime".into()))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(DataFusionError::Execution("imagelake functions need tokio's multi-threaded runtime".into()));
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(future)))
}

/// The arguments of a per-row function as text, one value per argument for each row (None
/// where NULL): commands per row take names, paths and numbers alike.
pub(crate) fn text_rows(args: &datafusion::logical_expr::ScalarFunctionArgs) -> Result<Vec<Vec<Option<String>>>> {
    use datafusion::arrow::array::{Array, AsArray};
    let n = args.number_rows;
    let mut columns = Vec::new();
    for a in &args.args {
        columns.push(datafusion::arrow::compute::cast(&a.to_array(n)?, &datafusion::arrow::datatypes::DataType::Utf8)?);
    }
    Ok((0..n)
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    let c = c.as_string::<i32>();
                    c.is_valid(row).then(|| c.value(row).to_string())
                })
                .collect()
        })
        .collect())
}

/// An engine error as SQL reports it; an image that is not there is `access::Missing`, the
/// same error an image the session may not read gives.
pub(crate) fn engine_err(e: imagelake_engine::Error) -> DataFusionError {
    if let imagelake_engine::Error::NoImage(spec) = &e {
        return access::missing_image(spec);
    }
    DataFusionError::Execution(e.to_string())
}

type Producer = Box<dyn Fn(SessionContext) -> BoxFuture<'static, Result<Vec<RecordBatch>>> + Send + Sync>;

/// A table whose rows are computed when the statement's plan is built (`scan`), not while it
/// is parsed: the work may be async and may itself run SQL on the session.
pub(crate) struct Deferred {
    schema: SchemaRef,
    produce: Producer,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred").field("schema", &self.schema).finish()
    }
}

impl Deferred {
    pub(crate) fn new(
        schema: SchemaRef,
        produce: impl Fn(SessionContext) -> BoxFuture<'static, Result<Vec<RecordBatch>>> + Send + Sync + 'static,
    ) -> Arc<Deferred> {
        Arc::new(Deferred { schema, produce: Box::new(produce) })
    }
}

#[async_trait]
impl TableProvider for Deferred {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("not a SessionState".into()))?;
        let batches = (self.produce)(SessionContext::new_with_state(state.clone())).await?;
        let batches = conform(batches, &self.schema)?;
        Ok(MemorySourceConfig::try_new_exec(&[batches], self.schema.clone(), projection.cloned())?)
    }
}

/// Casts query results to the declared schema of a function's table (the same columns, in
/// order; types and nullability as declared).
pub(crate) fn conform(batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })
        .collect()
}

/// Quotes text for SQL.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
