//! Users and grants from SQL, for administrators of the library (a server's remote way to do
//! what `imagelake user` and `imagelake grant` do on the machine):
//! - `users()` and `grants()`: who may sign in, and who may do what to which images;
//! - `user_add(name, password [, admin])`, `user_remove(name)`, `user_passwd(name, password)`,
//!   `revoke_tokens(name)`, `grant(user, right, pattern)` and `revoke(user, right, pattern)`:
//!   commands, each run once per executed statement (see `commands.rs`), one summary row.
//!
//! Every one of them refuses a principal who does not administer the library, while the
//! statement is planned.

use super::commands::{Command, command_table, fields, text};
use super::{Deferred, Lib, arity, engine_err, text_arg};
use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampSecondArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::datasource::TableProvider;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;
use imagelake_engine::Library;
use imagelake_engine::access::{Pattern, Right};
use std::sync::Arc;

/// `users` and `grants`, the read table functions among the users' commands.
pub fn table_functions(lib: &Lib) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    vec![("users", Arc::new(Users(lib.clone()))), ("grants", Arc::new(Grants(lib.clone())))]
}

pub fn register(ctx: &SessionContext, lib: &Lib) {
    for op in Op::ALL {
        ctx.register_udtf(op.name(), Arc::new(UserCommand { op, lib: lib.clone() }));
    }
}

/// Runs blocking access work (files, Argon2) off the async workers.
async fn blocking<T: Send + 'static>(
    library: &Arc<Library>,
    work: impl FnOnce(&Library) -> imagelake_engine::Result<T> + Send + 'static,
) -> Result<T> {
    let library = library.clone();
    tokio::task::spawn_blocking(move || work(&library))
        .await
        .map_err(|e| DataFusionError::Execution(format!("the command failed: {e}")))?
        .map_err(engine_err)
}

/// `users()`: name, whether they administer the library, when they were added.
#[derive(Debug)]
struct Users(Lib);

impl TableFunctionImpl for Users {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        arity("users", "users()", args.exprs(), 0)?;
        self.0.access.check_admin("users()")?;
        let schema = fields(&[
            ("name", DataType::Utf8),
            ("admin", DataType::Boolean),
            ("created_at", DataType::Timestamp(TimeUnit::Second, Some("UTC".into()))),
        ]);
        let (lib, out) = (self.0.clone(), schema.clone());
        Ok(Deferred::new(schema, move |_| {
            let (lib, out) = (lib.clone(), out.clone());
            Box::pin(async move {
                let users = blocking(&lib.library, |l| l.users()).await?;
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from_iter_values(users.iter().map(|u| u.name.as_str()))),
                    Arc::new(BooleanArray::from(users.iter().map(|u| u.admin).collect::<Vec<_>>())),
                    Arc::new(
                        TimestampSecondArray::from_iter_values(users.iter().map(|u| u.created_at)).with_timezone("UTC"),
                    ),
                ];
                Ok(vec![RecordBatch::try_new(out, columns)?])
            })
        }))
    }
}

/// `grants()`: one row per grant, `user`, `right` and the image `pattern` it covers.
#[derive(Debug)]
struct Grants(Lib);

impl TableFunctionImpl for Grants {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        arity("grants", "grants()", args.exprs(), 0)?;
        self.0.access.check_admin("grants()")?;
        let schema = fields(&[("user", DataType::Utf8), ("right", DataType::Utf8), ("pattern", DataType::Utf8)]);
        let (lib, out) = (self.0.clone(), schema.clone());
        Ok(Deferred::new(schema, move |_| {
            let (lib, out) = (lib.clone(), out.clone());
            Box::pin(async move {
                let grants = blocking(&lib.library, |l| l.grants()).await?;
                let column = |f: fn(&imagelake_engine::access::Grant) -> String| -> ArrayRef {
                    Arc::new(StringArray::from_iter_values(grants.iter().map(f)))
                };
                let columns = vec![
                    column(|g| g.user.clone()),
                    column(|g| g.right.to_string()),
                    column(|g| g.pattern.to_string()),
                ];
                Ok(vec![RecordBatch::try_new(out, columns)?])
            })
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Passwd,
    RevokeTokens,
    Grant,
    Revoke,
}

impl Op {
    const ALL: [Op; 6] = [Op::Add, Op::Remove, Op::Passwd, Op::RevokeTokens, Op::Grant, Op::Revoke];

    fn name(self) -> &'static str {
        match self {
            Op::Add => "user_add",
            Op::Remove => "user_remove",
            Op::Passwd => "user_passwd",
            Op::RevokeTokens => "revoke_tokens",
            Op::Grant => "grant",
            Op::Revoke => "revoke",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Op::Add => "user_add(name, password [, admin]), e.g. user_add('ana', 'correct horse', false)",
            Op::Remove => "user_remove(name), e.g. user_remove('ana')",
            Op::Passwd => "user_passwd(name, password), e.g. user_passwd('ana', 'battery staple')",
            Op::RevokeTokens => "revoke_tokens(name): signs every session of the user out, e.g. revoke_tokens('ana')",
            Op::Grant => "grant(user, right, pattern), right read, write or admin, e.g. grant('ana', 'read', 'web*')",
            Op::Revoke => "revoke(user, right, pattern), e.g. revoke('ana', 'read', 'web*')",
        }
    }

    /// The values of its arguments (literals), checked; a password stays out of labels.
    fn arguments(self, exprs: &[Expr]) -> Result<Vec<String>> {
        let (name, usage) = (self.name(), self.usage());
        let arg = |i: usize, what: &str| text_arg(name, usage, exprs, i, what);
        Ok(match self {
            Op::Add => {
                if exprs.len() != 2 {
                    arity(name, usage, exprs, 3)?;
                }
                let admin = match exprs.get(2) {
                    None => false,
                    Some(Expr::Literal(datafusion::common::ScalarValue::Boolean(Some(b)), _)) => *b,
                    Some(other) => return plan_err!("{name}(): admin must be true or false, not {other}"),
                };
                vec![arg(0, "name")?, arg(1, "password")?, admin.to_string()]
            }
            Op::Remove | Op::RevokeTokens => {
                arity(name, usage, exprs, 1)?;
                vec![arg(0, "name")?]
            }
            Op::Passwd => {
                arity(name, usage, exprs, 2)?;
                vec![arg(0, "name")?, arg(1, "password")?]
            }
            Op::Grant | Op::Revoke => {
                arity(name, usage, exprs, 3)?;
                let right = Right::parse(&arg(1, "right")?).map_err(|e| DataFusionError::Plan(e.to_string()))?;
                let pattern = Pattern::parse(&arg(2, "pattern")?).map_err(|e| DataFusionError::Plan(e.to_string()))?;
                vec![arg(0, "user")?, right.to_string(), pattern.to_string()]
            }
        })
    }

    /// Does it; returns what it did, in words.
    fn run(self, library: &Library, args: &[String]) -> imagelake_engine::Result<String> {
        let user = &args[0];
        Ok(match self {
            Op::Add => {
                let admin = args[2] == "true";
                library.add_user(user, &args[1], admin)?;
                format!("added {user}{}", if admin { " (administrator)" } else { "" })
            }
            Op::Remove => {
                library.remove_user(user)?;
                format!("removed {user}, their grants and their tokens")
            }
            Op::Passwd => {
                library.set_password(user, &args[1])?;
                format!("changed the password of {user} and signed out their sessions")
            }
            Op::RevokeTokens => format!("revoked {} tokens of {user}", library.revoke_tokens(user)?),
            Op::Grant | Op::Revoke => {
                let right = Right::parse(&args[1])?;
                let pattern = Pattern::parse(&args[2])?;
                if self == Op::Grant {
                    library.grant(user, right, &pattern)?;
                    format!("granted {right} on {pattern} to {user}")
                } else if library.revoke(user, right, &pattern)? {
                    format!("revoked {right} on {pattern} from {user}")
                } else {
                    format!("{user} had no {right} grant on {pattern}")
                }
            }
        })
    }
}

fn summary_schema() -> SchemaRef {
    fields(&[("operation", DataType::Utf8), ("user", DataType::Utf8), ("done", DataType::Utf8)])
}

#[derive(Debug)]
struct UserCommand {
    op: Op,
    lib: Lib,
}

impl TableFunctionImpl for UserCommand {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let op = self.op;
        self.lib.access.check_admin(&format!("{}()", op.name()))?;
        let values = op.arguments(args.exprs())?;
        let label = format!("{}({})", op.name(), values[0]);
        let (library, schema) = (self.lib.library.clone(), summary_schema());
        let out = schema.clone();
        let job = self.lib.detached(async move {
            let user = values[0].clone();
            let done = blocking(&library, move |l| op.run(l, &values)).await?;
            Ok(RecordBatch::try_new(out, vec![text(op.name()), text(user), text(done)])?)
        });
        command_table(args.session(), schema, Command::new(label, job))
    }
}
