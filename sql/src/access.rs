//! Row-level access: the one door every statement of a session goes through.
//!
//! A session runs as a [`Principal`]. The library's owner (the local command line) passes
//! every check. A server user:
//! - sees only the images their grants let them read, in every table (`tables.rs` filters
//!   each scan, below anything the statement itself evaluates) and every function (each
//!   resolves its images through [`resolve`]); an image they may not read answers exactly as
//!   an image that does not exist;
//! - changes only what their grants let them write (commands check through [`resolve`] and
//!   [`Access::check_write`]);
//! - reaches outside the catalog (`COPY`, DDL, `SET`) only as an administrator, and names host
//!   paths only under the server's data roots ([`Access::host_path`]).

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use imagelake_engine::Library;
use imagelake_engine::access::{Principal, Right};
use imagelake_engine::catalog::ImageRow;
use std::path::{Path, PathBuf};

/// Who a session runs as, and which host paths it may name.
#[derive(Debug, Clone)]
pub struct Access {
    pub principal: Principal,
    /// Folders host paths must lie under (symbolic links resolved); None for the local
    /// command line, which may name any path its user can.
    pub data_roots: Option<Vec<PathBuf>>,
}

/// A statement or command the session's principal may not run. Its text names the right or
/// the rule missing, never an image the principal may not see.
#[derive(Debug)]
pub struct Denied(pub String);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "permission denied: {}", self.0)
    }
}

impl std::error::Error for Denied {}

pub(crate) fn denied(why: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(Denied(why.into())))
}

/// An image that is not in the library, or that the principal may not read: the two answer
/// alike, text and kind.
#[derive(Debug)]
pub struct Missing(pub String);

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Missing {}

pub(crate) fn missing(message: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(Missing(message.into())))
}

/// The answer for an image `spec` that is not there, or that the principal may not read: the
/// engine's own words for a missing image.
pub(crate) fn missing_image(spec: &str) -> DataFusionError {
    missing(imagelake_engine::Error::NoImage(spec.to_string()).to_string())
}

/// What kind of failure an error is, for a server's status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A statement, a parameter or an argument is wrong.
    Invalid,
    /// An image that is not there, or that the principal may not read.
    NotFound,
    /// The principal lacks a right.
    Denied,
    /// The statement asks for something the SQL engine does not do.
    Unsupported,
    /// The library or the machine failed.
    Internal,
}

/// The kind of `e`, looking through the contexts and wrappers DataFusion adds.
pub fn error_kind(e: &DataFusionError) -> ErrorKind {
    match e {
        DataFusionError::External(inner) if inner.downcast_ref::<Denied>().is_some() => ErrorKind::Denied,
        DataFusionError::External(inner) if inner.downcast_ref::<Missing>().is_some() => ErrorKind::NotFound,
        DataFusionError::External(inner) => match inner.downcast_ref::<DataFusionError>() {
            Some(e) => error_kind(e),
            None => ErrorKind::Internal,
        },
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => error_kind(inner),
        DataFusionError::Shared(inner) => error_kind(inner),
        DataFusionError::Collection(all) => all.first().map_or(ErrorKind::Internal, error_kind),
        DataFusionError::ArrowError(..)
        | DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Execution(_)
        | DataFusionError::Configuration(_) => ErrorKind::Invalid,
        DataFusionError::NotImplemented(_) => ErrorKind::Unsupported,
        _ => ErrorKind::Internal,
    }
}

impl Access {
    /// The local command line: every right, any path.
    pub fn owner() -> Access {
        Access { principal: Principal::Owner, data_roots: None }
    }

    /// True when some image may be hidden from the principal: tables and functions then
    /// filter, and statements whose output counts hidden rows are refused.
    pub(crate) fn restricted(&self) -> bool {
        !self.principal.reads_everything()
    }

    pub(crate) fn may_read(&self, name: &str) -> bool {
        self.principal.may(Right::Read, name)
    }

    /// Refuses a new version of `name` without write on it (admin for delete and undelete).
    pub(crate) fn check_write(&self, right: Right, name: &str, function: &str) -> Result<()> {
        if self.principal.may(right, name) {
            Ok(())
        } else {
            Err(denied(format!("{function}() needs {right} on {name}")))
        }
    }

    /// Refuses library-wide commands (gc, repack, users and grants) to non-administrators.
    pub(crate) fn check_admin(&self, what: &str) -> Result<()> {
        if self.principal.is_admin() {
            Ok(())
        } else {
            Err(denied(format!("{what} is for administrators of the library")))
        }
    }

    /// The host path a statement names, checked against the data roots: an input must exist
    /// and resolve (symbolic links followed) under a root; an output's folder must.
    pub(crate) fn host_path(&self, what: &str, path: &Path) -> Result<PathBuf> {
        let Some(roots) = &self.data_roots else {
            return Ok(path.to_path_buf());
        };
        let refuse = || {
            let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
            denied(if roots.is_empty() {
                format!("the server was started without --data-root, so it accepts no {what}")
            } else {
                format!("{what} {} is not under a data root ({})", path.display(), roots.join(", "))
            })
        };
        if !path.is_absolute() {
            return Err(refuse());
        }
        // An output may not exist yet: its folder must, and the name may not be a link out.
        let resolved = match path.canonicalize() {
            Ok(p) => p,
            Err(_) => {
                let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                    return Err(refuse());
                };
                parent.canonicalize().map_err(|_| refuse())?.join(name)
            }
        };
        let under = roots.iter().any(|root| root.canonicalize().is_ok_and(|root| resolved.starts_with(root)));
        if under { Ok(resolved) } else { Err(refuse()) }
    }

    /// Refuses statements the principal may not run: for non-administrators anything that
    /// reaches outside the catalog or changes the session (DDL, DML, `COPY`, `SET`,
    /// `PREPARE`); for a principal who may not see every image, `EXPLAIN ANALYZE` and
    /// `EXPLAIN VERBOSE`, whose metrics and statistics count the rows of every image (plain
    /// `EXPLAIN` runs with statistics off, see `Session::plan`); and, for everyone on the
    /// server, paths outside the data roots.
    pub(crate) fn check_statement(&self, plan: &LogicalPlan) -> Result<()> {
        let mut refusal = None;
        plan.apply_with_subqueries(|node| {
            let why = match node {
                LogicalPlan::Analyze(_) if self.restricted() => {
                    Some(denied("EXPLAIN ANALYZE counts rows of images you may not read"))
                }
                LogicalPlan::Explain(explain) if explain.verbose && self.restricted() => {
                    Some(denied("EXPLAIN VERBOSE shows statistics of images you may not read"))
                }
                LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_) | LogicalPlan::Statement(_)
                    if !self.principal.is_admin() =>
                {
                    Some(denied(format!("{} is for administrators of the library", statement_name(node))))
                }
                LogicalPlan::Copy(copy) => self.host_path("COPY target", Path::new(&copy.output_url)).err(),
                LogicalPlan::Ddl(DdlStatement::CreateExternalTable(table)) => {
                    self.host_path("table location", Path::new(&table.location)).err()
                }
                _ => None,
            };
            Ok(match why {
                Some(e) => {
                    refusal = Some(e);
                    TreeNodeRecursion::Stop
                }
                None => TreeNodeRecursion::Continue,
            })
        })?;
        refusal.map_or(Ok(()), Err)
    }
}

fn statement_name(plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Copy(_) => "COPY",
        LogicalPlan::Dml(_) => "INSERT, UPDATE and DELETE",
        LogicalPlan::Statement(_) => "SET, PREPARE and transactions",
        _ => "CREATE and DROP",
    }
}

/// The image version `spec` names, if the principal has `right` on it (deleted versions too
/// when `deleted`, for `undelete`). An image they may not read fails exactly as one that does
/// not exist; one they may read but not change is denied.
pub(crate) async fn resolve(
    library: &Library,
    access: &Access,
    spec: &str,
    right: Right,
    deleted: bool,
) -> Result<ImageRow> {
    let absent = || missing_image(spec);
    let found = if deleted { library.resolve_any(spec).await } else { library.resolve(spec).await };
    match found {
        Ok(row) if access.principal.may(right, &row.name) => Ok(row),
        Ok(row) if access.may_read(&row.name) => Err(denied(format!("needs {right} on {}", row.name))),
        Ok(_) => Err(absent()),
        // A deleted version says so, but only to those who may read its name.
        Err(e) => match library.resolve_any(spec).await {
            Ok(row) if !access.may_read(&row.name) => Err(absent()),
            _ => Err(crate::functions::engine_err(e)),
        },
    }
}
