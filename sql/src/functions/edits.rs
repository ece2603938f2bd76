//! Maintenance functions, each making a new image version: `replace_content`, `import`,
//! `remove`, `set_meta` and `clone`; and `history(name)`, the versions of an image with what
//! made each.
//!
//! Every maintenance function comes in two forms under one name:
//! - a table function with literal arguments returns one summary row, and runs as the
//!   commands of `commands.rs` run (once per executed statement, never while planning):
//!   `SELECT * FROM import('web@2', '/srv/kmod', '/lib/modules/6.1.0')`;
//! - a scalar function in a SELECT list runs once per row of a query and returns the new
//!   version as `name@version`, so that one statement maintains every image a query finds:
//!   `SELECT import(name, '/srv/kmod', '/lib/modules/6.1.0') FROM images WHERE ...`.

use super::commands::{Command, command_table, fields, int, seconds, text};
use super::{Deferred, Lib, arity, block_on, engine_err, text_arg, text_rows};
use crate::access;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::datasource::TableProvider;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use imagelake_engine::OnConflict;
use imagelake_engine::access::Right;
use std::path::Path;
use std::sync::Arc;

pub fn register(ctx: &SessionContext, lib: &Lib) {
    let lib = lib.clone();
    for op in Op::ALL {
        ctx.register_udtf(op.name(), Arc::new(EditTable { op, lib: lib.clone() }));
        let signature = Signature::any(op.arity(), Volatility::Volatile);
        ctx.register_udf(ScalarUDF::from(EditScalar { op, lib: lib.clone(), signature }));
    }
    ctx.register_udtf("patch", Arc::new(PatchTable { lib: lib.clone() }));
    let arities = vec![TypeSignature::Any(3), TypeSignature::Any(4)];
    ctx.register_udf(ScalarUDF::from(PatchScalar {
        lib: lib.clone(),
        signature: Signature::one_of(arities, Volatility::Volatile),
    }));
    ctx.register_udtf("gc", Arc::new(Gc { lib }));
}

/// `history`, the read table function among the edits.
pub fn history(lib: &Lib) -> Arc<dyn datafusion::catalog::TableFunctionImpl> {
    Arc::new(History(lib.clone()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Replace,
    Import,
    Remove,
    SetMeta,
    Clone,
    Delete,
    Undelete,
}

impl Op {
    const ALL: [Op; 7] = [Op::Replace, Op::Import, Op::Remove, Op::SetMeta, Op::Clone, Op::Delete, Op::Undelete];

    fn name(self) -> &'static str {
        match self {
            Op::Replace => "replace_content",
            Op::Import => "import",
            Op::Remove => "remove",
            Op::SetMeta => "set_meta",
            Op::Clone => "clone",
            Op::Delete => "delete",
            Op::Undelete => "undelete",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Op::Replace => {
                "replace_content(image, path, host_file), e.g. replace_content('web@2', '/etc/motd', '/srv/motd')"
            }
            Op::Import => {
                "import(image, host_dir, target_dir), e.g. import('web@2', '/srv/kmod', '/lib/modules/6.1.0')"
            }
            Op::Remove => "remove(image, path), e.g. remove('web@2', '/etc/cron.daily/apt')",
            Op::SetMeta => {
                "set_meta(image, path, mode, uid, gid), mode in octal, NULL keeps one, e.g. set_meta('web@2', '/srv', '750', 33, NULL)"
            }
            Op::Clone => "clone(image, new_name), e.g. clone('base@1', 'web')",
            Op::Delete => "delete(image), e.g. delete('web@1'): hidden until undelete, gone at gc",
            Op::Undelete => "undelete(image), e.g. undelete('web@1')",
        }
    }

    fn arity(self) -> usize {
        match self {
            Op::Replace | Op::Import => 3,
            Op::Remove | Op::Clone => 2,
            Op::Delete | Op::Undelete => 1,
            Op::SetMeta => 5,
        }
    }

    /// Arguments that may be NULL (set_meta's mode, uid and gid: NULL keeps them).
    fn optional(self, i: usize) -> bool {
        self == Op::SetMeta && i >= 2
    }

    fn what(self, i: usize) -> &'static str {
        match (self, i) {
            (_, 0) => "image",
            (Op::Clone, _) => "name",
            (Op::Import, 1) => "host directory",
            (Op::Import, _) => "directory",
            (Op::Replace, 2) => "host file",
            (Op::SetMeta, 2) => "mode",
            (Op::SetMeta, 3) => "uid",
            (Op::SetMeta, 4) => "gid",
            _ => "path",
        }
    }

    /// Refuses the operation unless the session may do it: a new version needs write on its
    /// name (admin to delete or undelete it), the image it starts from read, and host paths
    /// must lie under the data roots.
    async fn check(self, lib: &Lib, args: &[Option<String>]) -> Result<Vec<String>> {
        let arg = |i: usize| args.get(i).cloned().flatten().unwrap_or_default();
        let (right, deleted) = match self {
            Op::Clone => (Right::Read, false),
            Op::Delete => (Right::Admin, false),
            Op::Undelete => (Right::Admin, true),
            _ => (Right::Write, false),
        };
        access::resolve(&lib.library, &lib.access, &arg(0), right, deleted).await?;
        let mut paths = Vec::new();
        match self {
            Op::Clone => lib.access.check_write(Right::Write, &arg(1), self.name())?,
            Op::Replace => paths.push(lib.access.host_path("host file", Path::new(&arg(2)))?),
            Op::Import => paths.push(lib.access.host_path("host folder", Path::new(&arg(1)))?),
            _ => {}
        }
        Ok(paths.into_iter().map(|p| p.display().to_string()).collect())
    }

    /// Runs the operation, once the session may; `args` has `arity()` values, None only
    /// where `optional`.
    async fn run(self, lib: &Lib, args: &[Option<String>]) -> Result<Made> {
        let checked = self.check(lib, args).await?;
        let mut args = args.to_vec();
        // The host path as checked (links resolved), so that what runs is what was allowed.
        match (self, checked.first()) {
            (Op::Replace, Some(path)) => args[2] = Some(path.clone()),
            (Op::Import, Some(path)) => args[1] = Some(path.clone()),
            _ => {}
        }
        let lib = &lib.library;
        let arg = |i: usize| args.get(i).cloned().flatten().unwrap_or_default();
        let number = |i: usize, radix: u32| -> Result<Option<u32>> {
            args.get(i).cloned().flatten().map(|v| u32::from_str_radix(v.trim(), radix)).transpose().map_err(|_| {
                DataFusionError::Execution(format!(
                    "{}(): the {} {:?} is not a number{}",
                    self.name(),
                    self.what(i),
                    arg(i),
                    if radix == 8 { " in octal" } else { "" }
                ))
            })
        };
        let edited = match self {
            Op::Replace => lib.replace_content(&arg(0), &arg(1), Path::new(&arg(2))).await,
            Op::Import => lib.import(&arg(0), Path::new(&arg(1)), &arg(2)).await,
            Op::Remove => lib.remove(&arg(0), &arg(1)).await,
            Op::SetMeta => {
                let (mode, uid, gid) = (number(2, 8)?, number(3, 10)?, number(4, 10)?);
                lib.set_meta(&arg(0), &arg(1), mode, uid, gid).await
            }
            Op::Delete | Op::Undelete => {
                let done = if self == Op::Delete { lib.delete(&arg(0)).await } else { lib.undelete(&arg(0)).await };
                let i = done.map_err(engine_err)?;
                let parent = i.parent_id.map(|p| p.to_string()).unwrap_or_default();
                return Ok(Made {
                    image_id: i.image_id,
                    name: i.name,
                    version: i.version,
                    parent,
                    entries_changed: 0,
                    bytes_stored: 0,
                    seconds: 0.0,
                });
            }
            Op::Clone => {
                let s = lib.clone_image(&arg(0), &arg(1)).await.map_err(engine_err)?;
                return Ok(Made {
                    image_id: s.image_id,
                    name: s.name,
                    version: s.version,
                    parent: s.parent,
                    entries_changed: 0,
                    bytes_stored: 0,
                    seconds: s.seconds,
                });
            }
        };
        let s = edited.map_err(engine_err)?;
        Ok(Made {
            image_id: s.image_id,
            name: s.name,
            version: s.version,
            parent: s.parent,
            entries_changed: s.entries_changed as i64,
            bytes_stored: s.bytes_stored as i64,
            seconds: s.seconds,
        })
    }
}

/// The new version an operation made.
struct Made {
    image_id: i64,
    name: String,
    version: i64,
    parent: String,
    entries_changed: i64,
    bytes_stored: i64,
    seconds: f64,
}

fn made_schema() -> SchemaRef {
    fields(&[
        ("image_id", DataType::Int64),
        ("name", DataType::Utf8),
        ("version", DataType::Int64),
        ("parent", DataType::Utf8),
        ("operation", DataType::Utf8),
        ("entries_changed", DataType::Int64),
        ("bytes_stored", DataType::Int64),
        ("seconds", DataType::Float64),
    ])
}

#[derive(Debug)]
struct EditTable {
    op: Op,
    lib: Lib,
}

impl TableFunctionImpl for EditTable {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (op, exprs) = (self.op, args.exprs());
        arity(op.name(), op.usage(), exprs, op.arity())?;
        let mut values = Vec::new();
        for i in 0..op.arity() {
            let null = matches!(exprs.get(i), Some(Expr::Literal(v, _)) if v.is_null());
            values.push(match null {
                true if op.optional(i) => None,
                true => return plan_err!("{}(): the {} cannot be NULL; usage: {}", op.name(), op.what(i), op.usage()),
                false => Some(text_arg(op.name(), op.usage(), exprs, i, op.what(i))?),
            });
        }
        let (lib, schema) = (self.lib.clone(), made_schema());
        let label = format!(
            "{}({})",
            op.name(),
            values.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect::<Vec<_>>().join(", ")
        );
        let out = schema.clone();
        let job = self.lib.detached(async move {
            let m = op.run(&lib, &values).await?;
            let columns = vec![
                int(m.image_id),
                text(m.name),
                int(m.version),
                text(m.parent),
                text(op.name()),
                int(m.entries_changed),
                int(m.bytes_stored),
                seconds(m.seconds),
            ];
            Ok(RecordBatch::try_new(out, columns)?)
        });
        command_table(args.session(), schema, Command::new(label, job))
    }
}

/// The per-row form: runs the operation for each row and returns the new version.
#[derive(Debug, PartialEq, Eq, Hash)]
struct EditScalar {
    op: Op,
    lib: Lib,
    signature: Signature,
}

impl ScalarUDFImpl for EditScalar {
    fn name(&self) -> &str {
        self.op.name()
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let op = self.op;
        let mut out = Vec::with_capacity(args.number_rows);
        for values in text_rows(&args)? {
            // A NULL where a value is needed: nothing to do for this row.
            if values.iter().enumerate().any(|(i, v)| v.is_none() && !op.optional(i)) {
                out.push(None);
                continue;
            }
            let m = block_on(self.lib.acting(op.run(&self.lib, &values)))??;
            out.push(Some(format!("{}@{}", m.name, m.version)));
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// `history(name)`: the versions of an image, newest first, then those they came from under
/// other names, each with the operation that made it.
#[derive(Debug)]
struct History(Lib);

const HISTORY_USAGE: &str = "history(name), e.g. history('web')";

impl TableFunctionImpl for History {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        arity("history", HISTORY_USAGE, exprs, 1)?;
        let name = text_arg("history", HISTORY_USAGE, exprs, 0, "name")?;
        let schema = fields(&[
            ("image_id", DataType::Int64),
            ("name", DataType::Utf8),
            ("version", DataType::Int64),
            ("parent_id", DataType::Int64),
            ("parent", DataType::Utf8),
            ("operation", DataType::Utf8),
            ("arguments", DataType::Utf8),
            ("actor", DataType::Utf8),
            ("at", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))),
            ("state", DataType::Utf8),
        ]);
        let (lib, out) = (self.0.clone(), schema.clone());
        Ok(Deferred::new(schema, move |_| {
            let (lib, name, out) = (lib.clone(), name.clone(), out.clone());
            Box::pin(async move {
                // A name the session may not read has no history; versions it came from under
                // such names are left out, and so is a parent the session may not read.
                if !lib.access.may_read(&name) {
                    return Err(crate::access::missing_image(&name));
                }
                let mut rows = lib.library.history(&name).await.map_err(engine_err)?;
                if lib.access.restricted() {
                    rows.retain(|r| lib.access.may_read(&r.name));
                    for r in &mut rows {
                        let parent_name = r.parent.as_deref().and_then(|p| p.rsplit_once('@')).map(|(n, _)| n);
                        if parent_name.is_some_and(|n| !lib.access.may_read(n)) {
                            (r.parent, r.parent_id) = (None, None);
                        }
                    }
                }
                let s = |f: fn(&imagelake_engine::HistoryRow) -> Option<&str>| {
                    Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>())) as _
                };
                let columns = vec![
                    Arc::new(Int64Array::from(rows.iter().map(|r| r.image_id).collect::<Vec<_>>())) as _,
                    s(|r| Some(&r.name)),
                    Arc::new(Int64Array::from(rows.iter().map(|r| r.version).collect::<Vec<_>>())) as _,
                    Arc::new(Int64Array::from(rows.iter().map(|r| r.parent_id).collect::<Vec<_>>())) as _,
                    s(|r| r.parent.as_deref()),
                    s(|r| Some(&r.operation)),
                    s(|r| Some(&r.arguments)),
                    s(|r| Some(&r.actor)),
                    Arc::new(
                        TimestampNanosecondArray::from(rows.iter().map(|r| r.at).collect::<Vec<_>>())
                            .with_timezone("UTC"),
                    ) as _,
                    s(|r| Some(r.state.as_str())),
                ];
                Ok(vec![RecordBatch::try_new(out, columns)?])
            })
        }))
    }
}

const PATCH_USAGE: &str = "patch(target, from, to [, on_conflict]), on_conflict fail (the default), ours or theirs, e.g. patch('app@1', 'base@1', 'base@2')";

/// `patch(target, from, to [, on_conflict])` as a table: one row per path the patch changes,
/// with what became of it in the target, and the version made (NULL when nothing was written).
#[derive(Debug)]
struct PatchTable {
    lib: Lib,
}

impl TableFunctionImpl for PatchTable {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() != 3 {
            arity("patch", PATCH_USAGE, exprs, 4)?;
        }
        let mut values = Vec::new();
        for (i, what) in ["image", "image", "image", "on_conflict"].iter().enumerate().take(exprs.len()) {
            values.push(text_arg("patch", PATCH_USAGE, exprs, i, what)?);
        }
        let on_conflict: OnConflict = values
            .get(3)
            .map_or(Ok(OnConflict::Fail), |v| v.parse())
            .map_err(|e| DataFusionError::Plan(e.to_string()))?;
        let schema = fields(&[
            ("path", DataType::Utf8),
            ("outcome", DataType::Utf8),
            ("detail", DataType::Utf8),
            ("made", DataType::Utf8),
        ]);
        let (lib, out) = (self.lib.clone(), schema.clone());
        let label = format!("patch({})", values.join(", "));
        let job = self.lib.detached(async move {
            check_patch(&lib, &values).await?;
            let s = lib.library.patch(&values[0], &values[1], &values[2], on_conflict).await.map_err(engine_err)?;
            let made = s.made.as_ref().map(|m| format!("{}@{}", m.name, m.version));
            let column = |f: fn(&imagelake_engine::PatchRow) -> &str| {
                Arc::new(StringArray::from(s.rows.iter().map(f).collect::<Vec<_>>())) as _
            };
            let columns = vec![
                column(|r| &r.path),
                column(|r| r.outcome.as_str()),
                column(|r| &r.detail),
                Arc::new(StringArray::from(vec![made.as_deref(); s.rows.len()])) as _,
            ];
            Ok(RecordBatch::try_new(out, columns)?)
        });
        command_table(args.session(), schema, Command::new(label, job))
    }
}

/// `patch(target, from, to [, on_conflict])` per row: the version made, `N conflicts` when a
/// conflict under `fail` left the target as it was, or NULL when the target had every change.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PatchScalar {
    lib: Lib,
    signature: Signature,
}

impl ScalarUDFImpl for PatchScalar {
    fn name(&self) -> &str {
        "patch"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let mut out = Vec::with_capacity(args.number_rows);
        for values in text_rows(&args)? {
            let Some(values) = values.into_iter().collect::<Option<Vec<String>>>() else {
                out.push(None);
                continue;
            };
            let on_conflict: OnConflict = values
                .get(3)
                .map_or(Ok(OnConflict::Fail), |v| v.parse())
                .map_err(|e| DataFusionError::Execution(e.to_string()))?;
            block_on(check_patch(&self.lib, &values))??;
            let s = block_on(self.lib.acting(self.lib.library.patch(&values[0], &values[1], &values[2], on_conflict)))?
                .map_err(engine_err)?;
            out.push(match (&s.made, s.conflicts) {
                (Some(m), _) => Some(format!("{}@{}", m.name, m.version)),
                (None, 0) => None,
                (None, c) => Some(format!("{c} conflicts")),
            });
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// A patch writes a new version of its target and reads the two versions whose difference
/// it applies.
async fn check_patch(lib: &Lib, values: &[String]) -> Result<()> {
    lib.image(&values[0], Right::Write).await?;
    lib.image(&values[1], Right::Read).await?;
    lib.image(&values[2], Right::Read).await?;
    Ok(())
}

/// `gc()`: purges deleted versions and frees what no version uses; one summary row.
#[derive(Debug)]
struct Gc {
    lib: Lib,
}

impl TableFunctionImpl for Gc {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        arity("gc", "gc()", args.exprs(), 0)?;
        self.lib.access.check_admin("gc()")?;
        let schema = fields(&[
            ("purged", DataType::Utf8),
            ("chunks_freed", DataType::Int64),
            ("packs_retired", DataType::Int64),
            ("packs_rewritten", DataType::Int64),
            ("bytes_freed", DataType::Int64),
            ("seconds", DataType::Float64),
        ]);
        let (lib, out) = (self.lib.clone(), schema.clone());
        let job = self.lib.detached(async move {
            let s = lib.library.gc().await.map_err(engine_err)?;
            let columns = vec![
                text(s.purged.join(", ")),
                int(s.chunks_freed as i64),
                int(s.packs_retired as i64),
                int(s.packs_rewritten as i64),
                int(s.bytes_freed),
                seconds(s.seconds),
            ];
            Ok(RecordBatch::try_new(out, columns)?)
        });
        command_table(args.session(), schema, Command::new("gc()".into(), job))
    }
}
