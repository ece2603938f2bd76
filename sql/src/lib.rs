//! SQL over the library: a DataFusion session whose tables are the catalog's Lance tables
//! ([`tables`]) and whose functions read images and run commands ([`functions`]).

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::TableReference;
use imagelake_engine::Library;
use std::sync::Arc;

pub mod functions;
mod plans;
pub mod tables;

use functions::Commands;

/// What a statement returned: its columns (none for statements such as `CREATE VIEW` or
/// `SET`, which return nothing) and its rows.
#[derive(Debug)]
pub struct Answer {
    pub schema: Option<SchemaRef>,
    pub batches: Vec<RecordBatch>,
}

/// A SQL session over one library. Tables are read at their newest version by every
/// statement, so a session sees what other processes (and its own commands) commit.
pub struct Session {
    library: Arc<Library>,
    ctx: SessionContext,
    commands: Arc<Commands>,
    plans: plans::Plans,
}

impl Session {
    pub async fn open(library: Arc<Library>) -> Result<Session> {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let shared = tables::Tables::new(library.clone());
        for table in imagelake_engine::catalog::TABLES {
            let provider = tables::CatalogTable::new(shared.clone(), table).await?;
            ctx.register_table(TableReference::bare(table), Arc::new(provider))?;
        }
        let commands = Arc::new(Commands::default());
        functions::register(&ctx, &library, &commands);
        Ok(Session { library, ctx, commands, plans: plans::Plans::default() })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plans and runs one statement, and runs every command it planned exactly once (see
    /// `functions::commands`).
    pub async fn run(&self, sql: &str) -> Result<Answer> {
        // Held while the statement runs: files it may read are not deleted under it.
        let _reading = self.library.reading().map_err(|e| DataFusionError::External(Box::new(e)))?;
        if let Some(optimized) = self.plans.get(sql) {
            let schema = Some(Arc::new(optimized.schema().as_arrow().clone()));
            return Ok(Answer { schema, batches: self.execute_optimized(&optimized).await? });
        }
        self.commands.take();
        let plan = match self.ctx.state().create_logical_plan(sql).await {
            Ok(plan) => plan,
            Err(e) => {
                self.commands.take();
                return Err(e);
            }
        };
        if matches!(plan, LogicalPlan::Explain(_)) {
            // EXPLAIN plans only: what it planned never runs.
            self.commands.take();
            let schema = Some(Arc::new(plan.schema().as_arrow().clone()));
            return Ok(Answer { schema, batches: self.ctx.execute_logical_plan(plan).await?.collect().await? });
        }
        if matches!(plan, LogicalPlan::Ddl(_)) && !self.commands.take().is_empty() {
            return Err(DataFusionError::Plan(
                "checkin() and checkout() are commands: they cannot be part of a view or a table definition".into(),
            ));
        }
        let schema = match &plan {
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => None,
            plan => Some(Arc::new(plan.schema().as_arrow().clone())),
        };
        let batches = match schema {
            // A query: optimized here, so that its optimized plan can be kept for next time.
            Some(_) => match self.ctx.state().optimize(&plan) {
                Ok(optimized) => {
                    self.plans.keep(sql, &plan, &optimized);
                    self.execute_optimized(&optimized).await
                }
                Err(e) => Err(e),
            },
            // Anything else may change what the text of a query means.
            None => {
                self.plans.forget();
                match self.ctx.execute_logical_plan(plan).await {
                    Ok(frame) => frame.collect().await,
                    Err(e) => Err(e),
                }
            }
        };
        let planned = self.commands.take();
        let batches = batches?;
        // Commands the optimizer cut out of the plan (LIMIT 0, WHERE false) still run.
        for command in planned.iter().filter(|c| !c.has_run()) {
            command.run().await?;
        }
        Ok(Answer { schema, batches })
    }

    /// Plans `optimized` physically (reading every table at its newest version) and runs it.
    async fn execute_optimized(&self, optimized: &LogicalPlan) -> Result<Vec<RecordBatch>> {
        let state = self.ctx.state();
        let plan = state.query_planner().create_physical_plan(optimized, &state).await?;
        datafusion::physical_plan::collect(plan, self.ctx.task_ctx()).await
    }
}
