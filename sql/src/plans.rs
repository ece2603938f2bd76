//! Optimized plans of statements a session has already run, kept by their text.
//!
//! A dashboard refreshing, a script in a loop or a Flight SQL client asks the same question
//! again and again; parsing and optimizing it again is about a quarter of a point question's
//! time. Only the *logical* plan is kept: physical planning runs every time, so each run
//! still reads every table at its newest version (`tables::CatalogTable::scan`).
//!
//! A plan is kept only when running it again can give nothing but what planning it again
//! would: it reads catalog tables only (no table function, no `information_schema`), and every
//! function it calls is immutable (`now()` is folded to a constant by the optimizer; commands
//! and image reads are not immutable). Any statement that is not a query (`SET`, `CREATE
//! VIEW`, `DROP`, ...) may change what a text means, so it empties the store.

use crate::tables::CatalogTable;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use std::collections::HashMap;
use std::sync::Mutex;

/// At most this many statements are kept; when full, the store starts over.
const KEPT: usize = 256;

#[derive(Debug, Default)]
pub struct Plans {
    optimized: Mutex<HashMap<String, LogicalPlan>>,
}

impl Plans {
    pub fn get(&self, sql: &str) -> Option<LogicalPlan> {
        self.optimized.lock().ok()?.get(sql).cloned()
    }

    /// Keeps `optimized` as the plan of `sql` if `plan` (the same statement before
    /// optimization) can be reused.
    pub fn keep(&self, sql: &str, plan: &LogicalPlan, optimized: &LogicalPlan) {
        if !reusable(plan) {
            return;
        }
        if let Ok(mut kept) = self.optimized.lock() {
            if kept.len() >= KEPT {
                kept.clear();
            }
            kept.insert(sql.to_string(), optimized.clone());
        }
    }

    pub fn forget(&self) {
        if let Ok(mut kept) = self.optimized.lock() {
            kept.clear();
        }
    }
}

/// True when `plan` reads only catalog tables and calls only immutable functions, in every
/// node and every subquery.
fn reusable(plan: &LogicalPlan) -> bool {
    let mut ok = true;
    let _ = plan.apply_with_subqueries(|node| {
        ok = match node {
            LogicalPlan::TableScan(scan) => source_as_provider(&scan.source)
                .is_ok_and(|provider| provider.as_ref().downcast_ref::<CatalogTable>().is_some()),
            LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Extension(_)
            | LogicalPlan::RecursiveQuery(_) => false,
            _ => true,
        } && node
            .apply_expressions(|e| {
                e.apply(|e| {
                    let fine = match e {
                        Expr::ScalarFunction(f) => f.func.signature().volatility == Volatility::Immutable,
                        Expr::Placeholder(_) => false,
                        _ => true,
                    };
                    Ok(if fine { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
                })
            })
            .is_ok_and(|r| r == TreeNodeRecursion::Continue);
        Ok(if ok { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    });
    ok
}
