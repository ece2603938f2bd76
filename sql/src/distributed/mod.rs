//! What a cluster's processes need of SQL (the processes themselves are the `cluster` crate's):
//! a plan made in one process and run in others. The client plans a statement and sends its
//! logical plan to the scheduler, which plans it physically and hands its stages to the
//! executors. [`Codec`] carries what is imagelake's across: a catalog table by its name, a
//! read table function by its name and arguments ([`Remembered`] keeps them), imagelake's
//! scalar functions by name, and the plan nodes of catalog scans: [`Fragments`] (Lance's
//! scan, which has no codec of its own, re-planned as fragments read at one table version),
//! `Expand` and `Visible`. Every process opens the same library; the codec refuses a plan
//! made against another.
//!
//! A question runs as the principal who asked it: the library's owner (`sql --cluster`) or a
//! server user (`serve --cluster`). The codec carries the principal with every catalog table,
//! read table function and `read_text`/`read_bytes` call, and the scheduler and executors
//! answer within that principal's grants exactly as one process does: catalog scans planned
//! with [`Visible`](crate::visible::Visible) above them, table functions resolving images as
//! the principal and running their own SQL in a session of the principal's ([`Scoped`]). The
//! cluster's own ports are not authenticated: whoever reaches them may ask as anyone,
//! so they belong on a network only the server and the cluster's operators reach.

mod codec;
mod fragments;

pub use codec::Codec;
pub use fragments::Fragments;

use crate::access::Access;
use crate::functions::Lib;
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl};
use datafusion::common::Result;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

/// A read table function whose tables remember how they were called, and by whom.
#[derive(Debug)]
pub struct Remembered {
    name: &'static str,
    function: Arc<dyn TableFunctionImpl>,
    access: Arc<Access>,
}

impl Remembered {
    pub fn new(name: &'static str, function: Arc<dyn TableFunctionImpl>, access: Arc<Access>) -> Remembered {
        Remembered { name, function, access }
    }
}

impl TableFunctionImpl for Remembered {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let table = self.function.call_with_args(TableFunctionArgs::new(args.exprs(), args.session()))?;
        let (function, args) = (self.name.to_string(), args.exprs().to_vec());
        Ok(Arc::new(Called { function, args, access: self.access.clone(), table }))
    }
}

/// The table of one call of a read table function, and the call.
#[derive(Debug)]
pub struct Called {
    pub function: String,
    pub args: Vec<Expr>,
    /// Who called it.
    pub access: Arc<Access>,
    table: Arc<dyn TableProvider>,
}

#[async_trait]
impl TableProvider for Called {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        self.table.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.table.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.table.scan(state, projection, filters, limit).await
    }
}

/// A read table function's table as a scheduler decoded it: scanned in a session of the
/// principal who called it, so that the SQL the function runs of its own (`image_stats`
/// counting the images that share a chunk, `compare` reading both versions' files) sees what
/// that principal sees in one process, and nothing more.
#[derive(Debug)]
pub struct Scoped {
    table: Arc<dyn TableProvider>,
    lib: Lib,
}

#[async_trait]
impl TableProvider for Scoped {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        self.table.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.table.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let runtime = state.runtime_env().clone();
        let own = |config| {
            Ok(SessionStateBuilder::new().with_config(config).with_runtime_env(runtime).with_default_features().build())
        };
        let session = crate::Session::open_in(self.lib.library.clone(), (*self.lib.access).clone(), own).await?;
        self.table.scan(&session.context().state(), projection, filters, limit).await
    }
}
