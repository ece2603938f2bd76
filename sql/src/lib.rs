//! SQL over the library: a DataFusion session whose tables are the catalog's Lance tables
//! ([`tables`]) and whose functions read images and run commands ([`functions`]), seen by one
//! principal through one door ([`access`]).

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, ParamValues, Result};
use datafusion::execution::{SendableRecordBatchStream, SessionState, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::TableReference;
use futures::{StreamExt, TryStreamExt};
use imagelake_engine::Library;
use std::sync::Arc;

pub mod access;
pub mod advisories;
pub mod distributed;
pub mod functions;
mod placeholders;
mod plans;
pub mod sbom;
mod segmented;
pub mod tables;
mod visible;

pub use access::{Access, Denied, ErrorKind, Missing, error_kind};
use functions::Commands;
use functions::commands::Command;
pub use functions::quote;

/// What a statement returned: its columns (none for statements such as `CREATE VIEW` or
/// `SET`, which return nothing) and its rows.
#[derive(Debug)]
pub struct Answer {
    pub schema: Option<SchemaRef>,
    pub batches: Vec<RecordBatch>,
}

/// A SQL session over one library, as one principal sees it. Tables are read at their newest
/// version by every statement, so a session sees what other processes (and its own commands)
/// commit. Statements may be planned and run at once from many tasks (a server's clients):
/// each plans in a state of its own.
pub struct Session {
    library: Arc<Library>,
    access: Arc<Access>,
    ctx: SessionContext,
    plans: plans::Plans,
}

/// One statement, planned and checked, ready to run once.
pub struct Planned {
    library: Arc<Library>,
    /// The session's context, for statements that change it (`SET`, `CREATE VIEW`).
    ctx: SessionContext,
    /// The statement's own state: the session's, with the statement's own `Commands`.
    state: SessionState,
    plan: LogicalPlan,
    /// A query or `EXPLAIN`, run from its plan; anything else runs on the session's context.
    query: bool,
    schema: SchemaRef,
    commands: Vec<Arc<Command>>,
}

impl Session {
    /// A session of the library's owner (the local command line).
    pub async fn open(library: Arc<Library>) -> Result<Session> {
        Session::open_as(library, Access::owner()).await
    }

    pub async fn open_as(library: Arc<Library>, access: Access) -> Result<Session> {
        let state = |config| Ok(SessionStateBuilder::new().with_config(config).with_default_features().build());
        Session::open_in(library, access, state).await
    }

    /// A session whose DataFusion state `state` makes from the session's configuration: a
    /// cluster's client plans its questions there and sends them to the cluster (see
    /// `distributed/`).
    pub async fn open_in(
        library: Arc<Library>,
        access: Access,
        state: impl FnOnce(SessionConfig) -> Result<SessionState>,
    ) -> Result<Session> {
        let access = Arc::new(access);
        let mut config =
            SessionConfig::new().with_information_schema(true).with_extension(Arc::new(Commands::discarding()));
        // A join side of up to 16 MB is built once and shared by every partition of the other
        // side, rather than both sides shuffled by hash: so `vulnerabilities` shares the few
        // advisory rows a question keeps (a filtered table, whose size DataFusion can only
        // estimate) instead of shuffling every package row (DataFusion's default is 1 MB).
        config.options_mut().optimizer.hash_join_single_partition_threshold = 16 << 20;
        let ctx = SessionContext::new_with_state(state(config)?);
        let shared = tables::Tables::new(library.clone(), access.clone());
        for table in imagelake_engine::catalog::TABLES {
            let provider = tables::CatalogTable::new(shared.clone(), table).await?;
            ctx.register_table(TableReference::bare(table), Arc::new(provider))?;
        }
        let lib = functions::Lib { library: library.clone(), access: access.clone() };
        functions::register(&ctx, &lib);
        advisories::register(&ctx).await?;
        Ok(Session { library, access, ctx, plans: plans::Plans::default() })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Plans, runs and collects one statement (the REPL's and the tests' way).
    pub async fn run(&self, sql: &str) -> Result<Answer> {
        let planned = self.plan(sql, None).await?;
        let schema = planned.returns_rows().then(|| planned.schema());
        let batches = planned.execute().await?.try_collect().await?;
        Ok(Answer { schema, batches })
    }

    /// A state of the session's own for one statement: what it plans is its own.
    fn statement_state(&self) -> SessionState {
        let mut state = self.ctx.state();
        state.config_mut().set_extension(Arc::new(Commands::default()));
        if self.access.restricted() {
            // Table statistics count the rows of every image: never shown to whom some are hidden.
            state.config_mut().options_mut().explain.show_statistics = false;
        }
        state
    }

    /// Parses and plans one statement, checks it against the session's access, and binds
    /// `params` to its placeholders (`$1`, `$2`, ... or `?`); nothing runs yet.
    pub async fn plan(&self, sql: &str, params: Option<ParamValues>) -> Result<Planned> {
        let state = self.statement_state();
        let planned = |plan: LogicalPlan, query: bool, state: SessionState, commands| {
            let schema = Arc::new(plan.schema().as_arrow().clone());
            let (library, ctx) = (self.library.clone(), self.ctx.clone());
            Planned { library, ctx, state, plan, query, schema, commands }
        };
        if params.is_none()
            && let Some(optimized) = self.plans.get(sql)
        {
            return Ok(planned(optimized, true, state, Vec::new()));
        }
        let text = placeholders::numbered(sql);
        let plan = state.create_logical_plan(&text).await?;
        let commands = commands_of(&state);
        self.access.check_statement(&plan)?;
        let plan = match params {
            Some(params) => plan.with_param_values(params)?,
            None => plan,
        };
        match &plan {
            // EXPLAIN plans only: what it planned never runs.
            LogicalPlan::Explain(_) => Ok(planned(state.optimize(&plan)?, true, state, Vec::new())),
            LogicalPlan::Ddl(_) if !commands.is_empty() => Err(DataFusionError::Plan(
                "checkin() and checkout() are commands: they cannot be part of a view or a table definition".into(),
            )),
            // They change the session, and may change what the text of a query means.
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => {
                self.plans.forget();
                Ok(planned(plan, false, state, commands))
            }
            // A query (or COPY): optimized here, so that its optimized plan can be kept.
            _ => {
                let optimized = state.optimize(&plan)?;
                if commands.is_empty() {
                    self.plans.keep(sql, &plan, &optimized);
                }
                Ok(planned(optimized, true, state, commands))
            }
        }
    }

    /// The result schema of a statement with placeholders, and one field per placeholder
    /// (`$1`, `$2`, ...; type Null where the statement does not tell), for prepared statements.
    pub async fn describe(&self, sql: &str) -> Result<(SchemaRef, SchemaRef)> {
        let state = self.statement_state();
        let plan = state.create_logical_plan(&placeholders::numbered(sql)).await?;
        self.access.check_statement(&plan)?;
        let result = match &plan {
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => Arc::new(Schema::empty()),
            plan => Arc::new(plan.schema().as_arrow().clone()),
        };
        let mut parameters: Vec<(usize, Field)> = plan
            .get_parameter_fields()?
            .into_iter()
            .map(|(id, field)| {
                let position = id.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX);
                let field = match field {
                    Some(f) => f.as_ref().clone().with_name(id).with_nullable(true),
                    None => Field::new(id, datafusion::arrow::datatypes::DataType::Null, true),
                };
                (position, field)
            })
            .collect();
        parameters.sort_by_key(|(position, _)| *position);
        let parameters = Schema::new(parameters.into_iter().map(|(_, f)| f).collect::<Vec<_>>());
        Ok((result, Arc::new(parameters)))
    }
}

/// An error of the engine (or Lance) as DataFusion carries it.
fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The commands planning registered in `state`.
fn commands_of(state: &SessionState) -> Vec<Arc<Command>> {
    state.config().get_extension::<Commands>().map(|c| c.take()).unwrap_or_default()
}

impl Planned {
    /// The schema every batch of [`Planned::execute`] has (no columns for statements that
    /// return no rows).
    pub fn schema(&self) -> SchemaRef {
        if self.returns_rows() { self.schema.clone() } else { Arc::new(Schema::empty()) }
    }

    /// False for statements such as `CREATE VIEW` or `SET`.
    pub fn returns_rows(&self) -> bool {
        self.query
    }

    /// True when running the statement changes the library (it planned a command).
    pub fn runs_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Runs the statement, streaming its rows; every command it planned runs exactly once
    /// (those the optimizer cut out of the plan, `LIMIT 0` or `WHERE false`, after the rows).
    /// Dropping the stream stops the work.
    pub async fn execute(self) -> Result<SendableRecordBatchStream> {
        // Held while the statement runs: files it may read are not deleted under it.
        let reading = self.library.reading().map_err(|e| DataFusionError::External(Box::new(e)))?;
        let schema = self.schema();
        let rows = if self.query {
            // Commands run here, whatever runs the session's questions (a cluster's client
            // sends only those without commands).
            let plan = match self.commands.is_empty() {
                true => self.state.query_planner().create_physical_plan(&self.plan, &self.state).await?,
                false => DefaultPhysicalPlanner::default().create_physical_plan(&self.plan, &self.state).await?,
            };
            datafusion::physical_plan::execute_stream(plan, Arc::new(TaskContext::from(&self.state)))?
        } else {
            self.ctx.execute_logical_plan(self.plan).await?.execute_stream().await?
        };
        let commands = self.commands;
        let leftovers = futures::stream::once(async move {
            for command in commands.iter().filter(|c| !c.has_run()) {
                command.run().await?;
            }
            drop(reading);
            Ok::<_, DataFusionError>(())
        })
        .filter_map(|done| async move { done.err().map(Err) });
        // Every batch carries the schema announced when planning: a physical plan may differ
        // from it in nullability or metadata, and clients hold them to be equal. Statements
        // without rows (SET, CREATE VIEW) report none.
        let announced = schema.clone();
        let query = self.query;
        let rows = rows.filter_map(move |batch| {
            let conformed = match batch {
                Ok(_) if !query => None,
                Ok(batch) if batch.schema() == announced => Some(Ok(batch)),
                Ok(batch) => {
                    Some(RecordBatch::try_new(announced.clone(), batch.columns().to_vec()).map_err(Into::into))
                }
                Err(e) => Some(Err(e)),
            };
            async move { conformed }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows.chain(leftovers))))
    }
}
