//! What a cluster's processes need of SQL (the processes themselves are the `cluster` crate's):
//! a plan made in one process and run in others. The client plans a statement and sends its
//! logical plan to the scheduler, which plans it physically and hands its stages to the
//! executors. [`Codec`] carries what is imagelake's across: a catalog table by its name, a
//! read table function by its name and arguments ([`Remembered`] keeps them), imagelake's
//! scalar functions by name, and the plan nodes of catalog scans: [`Fragments`] (Lance's
//! scan, which has no codec of its own, re-planned as fragments read at one table version),
//! `Expand` and `Visible`. Every process opens the same library; the codec refuses a plan
//! made against another.

mod codec;
mod fragments;

pub use codec::Codec;
pub use fragments::Fragments;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl};
use datafusion::common::Result;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

/// A read table function whose tables remember how they were called.
#[derive(Debug)]
pub struct Remembered {
    name: &'static str,
    function: Arc<dyn TableFunctionImpl>,
}

impl Remembered {
    pub fn new(name: &'static str, function: Arc<dyn TableFunctionImpl>) -> Remembered {
        Remembered { name, function }
    }
}

impl TableFunctionImpl for Remembered {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let table = self.function.call_with_args(TableFunctionArgs::new(args.exprs(), args.session()))?;
        Ok(Arc::new(Called { function: self.name.to_string(), args: args.exprs().to_vec(), table }))
    }
}

/// The table of one call of a read table function, and the call.
#[derive(Debug)]
pub struct Called {
    pub function: String,
    pub args: Vec<Expr>,
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
