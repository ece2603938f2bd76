//! Read functions: questions about one or two image versions, answered from the catalog (and,
//! for file contents, the store) without checking anything out.

use super::{Deferred, Lib, arity, block_on, engine_err, quote, text_arg};
use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::datasource::TableProvider;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;
use imagelake_engine::Error as EngineError;
use imagelake_engine::access::Right;
use std::sync::Arc;

/// The read table functions, by name.
pub fn table_functions(lib: &Lib) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    vec![
        ("compare", Arc::new(Compare(lib.clone()))),
        ("ls", Arc::new(Ls(lib.clone()))),
        ("file_lines", Arc::new(FileLines(lib.clone()))),
        ("image_stats", Arc::new(ImageStats(lib.clone()))),
    ]
}

pub fn register(ctx: &SessionContext, lib: &Lib) {
    for binary in [false, true] {
        ctx.register_udf(read_file(lib, binary));
    }
}

/// `read_text` (or, `binary`, `read_bytes`).
pub fn read_file(lib: &Lib, binary: bool) -> ScalarUDF {
    ScalarUDF::from(ReadFile { lib: lib.clone(), binary, signature: Signature::any(2, Volatility::Stable) })
}

fn time() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()))
}

/// Runs `sql` on the statement's own session and returns its rows.
async fn query(ctx: &SessionContext, sql: String) -> Result<Vec<RecordBatch>> {
    ctx.sql(&sql).await?.collect().await
}

/// `compare(old, new)`: one row per path that differs between two image versions, and one
/// per package that was added, removed, upgraded or downgraded.
#[derive(Debug)]
struct Compare(Lib);

const COMPARE_USAGE: &str = "compare(old image, new image), e.g. compare('web@1', 'web@2')";

impl TableFunctionImpl for Compare {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        arity("compare", COMPARE_USAGE, exprs, 2)?;
        let old = text_arg("compare", COMPARE_USAGE, exprs, 0, "old image")?;
        let new = text_arg("compare", COMPARE_USAGE, exprs, 1, "new image")?;
        let lib = self.0.clone();
        let schema = schema(&[
            ("entry", DataType::Utf8),
            ("change", DataType::Utf8),
            ("partition", DataType::Int64),
            ("path", DataType::Utf8),
            ("package", DataType::Utf8),
            ("old_kind", DataType::Utf8),
            ("new_kind", DataType::Utf8),
            ("old_hash", DataType::Utf8),
            ("new_hash", DataType::Utf8),
            ("old_size", DataType::Int64),
            ("new_size", DataType::Int64),
            ("old_mode", DataType::Int64),
            ("new_mode", DataType::Int64),
            ("old_uid", DataType::Int64),
            ("new_uid", DataType::Int64),
            ("old_gid", DataType::Int64),
            ("new_gid", DataType::Int64),
            ("old_version", DataType::Utf8),
            ("new_version", DataType::Utf8),
        ]);
        Ok(Deferred::new(schema, move |ctx| {
            let (lib, old, new) = (lib.clone(), old.clone(), new.clone());
            Box::pin(async move {
                let a = lib.image(&old, Right::Read).await?.image_id;
                let b = lib.image(&new, Right::Read).await?.image_id;
                query(&ctx, compare_sql(a, b)).await
            })
        }))
    }
}

fn compare_sql(a: i64, b: i64) -> String {
    let files = |id| {
        format!(
            "SELECT partition, path, kind, content_hash, size, mode, uid, gid, mtime, link_target, \
             dev_major, dev_minor, xattrs FROM files WHERE image_id = {id}"
        )
    };
    let packages = |id| format!("SELECT manager, name, arch, version FROM packages WHERE image_id = {id}");
    format!(
        "WITH a AS ({fa}), b AS ({fb}), pa AS ({pa}), pb AS ({pb})
        SELECT 'file' AS entry,
          CASE WHEN a.path IS NULL THEN 'added' WHEN b.path IS NULL THEN 'removed'
               WHEN a.kind <> b.kind OR (a.content_hash IS DISTINCT FROM b.content_hash)
                 OR (a.link_target IS DISTINCT FROM b.link_target)
                 OR (a.dev_major IS DISTINCT FROM b.dev_major) OR (a.dev_minor IS DISTINCT FROM b.dev_minor)
               THEN 'modified' ELSE 'metadata' END AS change,
          coalesce(b.partition, a.partition) AS partition, coalesce(b.path, a.path) AS path,
          CAST(NULL AS VARCHAR) AS package, a.kind AS old_kind, b.kind AS new_kind,
          a.content_hash AS old_hash, b.content_hash AS new_hash, a.size AS old_size, b.size AS new_size,
          a.mode AS old_mode, b.mode AS new_mode, a.uid AS old_uid, b.uid AS new_uid,
          a.gid AS old_gid, b.gid AS new_gid,
          CAST(NULL AS VARCHAR) AS old_version, CAST(NULL AS VARCHAR) AS new_version
        FROM a FULL OUTER JOIN b ON a.partition = b.partition AND a.path = b.path
        WHERE a.path IS NULL OR b.path IS NULL OR a.kind <> b.kind
          OR (a.content_hash IS DISTINCT FROM b.content_hash) OR (a.link_target IS DISTINCT FROM b.link_target)
          OR (a.dev_major IS DISTINCT FROM b.dev_major) OR (a.dev_minor IS DISTINCT FROM b.dev_minor)
          OR a.mode <> b.mode OR a.uid <> b.uid OR a.gid <> b.gid OR a.mtime <> b.mtime
          OR a.xattrs <> b.xattrs
        UNION ALL
        SELECT 'package',
          CASE WHEN pa.name IS NULL THEN 'added' WHEN pb.name IS NULL THEN 'removed'
               WHEN version_cmp(pa.version, pb.version, pa.manager) < 0 THEN 'upgraded'
               WHEN version_cmp(pa.version, pb.version, pa.manager) > 0 THEN 'downgraded' ELSE 'modified' END,
          NULL, NULL, coalesce(pb.name, pa.name), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
          NULL, NULL, NULL, NULL, pa.version AS old_version, pb.version AS new_version
        FROM pa FULL OUTER JOIN pb ON pa.manager = pb.manager AND pa.name = pb.name AND pa.arch = pb.arch
        WHERE pa.name IS NULL OR pb.name IS NULL OR pa.version <> pb.version
        ORDER BY entry, partition, path, package",
        fa = files(a),
        fb = files(b),
        pa = packages(a),
        pb = packages(b),
    )
}

/// `ls(image, dir)`: the entries of a directory (or the file itself, as `ls` does).
#[derive(Debug)]
struct Ls(Lib);

const LS_USAGE: &str = "ls(image, directory), e.g. ls('web@2', '/etc')";

impl TableFunctionImpl for Ls {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        arity("ls", LS_USAGE, exprs, 2)?;
        let spec = text_arg("ls", LS_USAGE, exprs, 0, "image")?;
        let dir = text_arg("ls", LS_USAGE, exprs, 1, "directory")?;
        let lib = self.0.clone();
        let schema = schema(&[
            ("name", DataType::Utf8),
            ("kind", DataType::Utf8),
            ("size", DataType::Int64),
            ("mode", DataType::Int64),
            ("uid", DataType::Int64),
            ("gid", DataType::Int64),
            ("mtime", time()),
            ("link_target", DataType::Utf8),
            ("content_hash", DataType::Utf8),
            ("partition", DataType::Int64),
            ("path", DataType::Utf8),
        ]);
        Ok(Deferred::new(schema, move |ctx| {
            let (lib, spec, dir) = (lib.clone(), spec.clone(), dir.clone());
            Box::pin(async move {
                let image = lib.image(&spec, Right::Read).await?;
                let found = lib.library.find_file(&spec, image.image_id, &dir).await.map_err(engine_err)?;
                let select = "SELECT regexp_replace(path, '^.*/', '') AS name, kind, size, mode, uid, gid, mtime, \
                              link_target, content_hash, partition, path FROM files";
                let scope = format!("image_id = {} AND partition = {}", image.image_id, found.partition);
                let sql = if found.kind == imagelake_engine::catalog::FileKind::Dir {
                    let prefix = if found.path == "/" { "/".to_string() } else { format!("{}/", found.path) };
                    format!(
                        "{select} WHERE {scope} AND path <> '/' AND starts_with(path, {q}) \
                         AND strpos(substr(path, {n}), '/') = 0 ORDER BY path",
                        q = quote(&prefix),
                        n = prefix.chars().count() + 1
                    )
                } else {
                    format!("{select} WHERE {scope} AND path = {}", quote(&found.path))
                };
                query(&ctx, sql).await
            })
        }))
    }
}

/// `file_lines(image, path)`: a text file, one row per line (to grep configuration in SQL).
#[derive(Debug)]
struct FileLines(Lib);

const LINES_USAGE: &str = "file_lines(image, path), e.g. file_lines('web@2', '/etc/passwd')";

impl TableFunctionImpl for FileLines {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        arity("file_lines", LINES_USAGE, exprs, 2)?;
        let spec = text_arg("file_lines", LINES_USAGE, exprs, 0, "image")?;
        let path = text_arg("file_lines", LINES_USAGE, exprs, 1, "path")?;
        let lib = self.0.clone();
        let schema = schema(&[("line_number", DataType::Int64), ("line", DataType::Utf8)]);
        let out = schema.clone();
        Ok(Deferred::new(schema, move |_| {
            let (lib, spec, path, schema) = (lib.clone(), spec.clone(), path.clone(), out.clone());
            Box::pin(async move {
                lib.image(&spec, Right::Read).await?;
                let data = lib.library.read_file(&spec, &path).await.map_err(engine_err)?;
                let text = String::from_utf8_lossy(&data);
                let lines: Vec<&str> = text.lines().collect();
                let numbers: ArrayRef = Arc::new(Int64Array::from_iter_values(1..=lines.len() as i64));
                let lines: ArrayRef = Arc::new(StringArray::from(lines));
                Ok(vec![RecordBatch::try_new(schema, vec![numbers, lines])?])
            })
        }))
    }
}

/// `image_stats(image)`: how much an image version holds, and how much of it only it holds.
#[derive(Debug)]
struct ImageStats(Lib);

const STATS_USAGE: &str = "image_stats(image [, image ...]), e.g. image_stats('web@1', 'web@2')";

impl TableFunctionImpl for ImageStats {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() {
            arity("image_stats", STATS_USAGE, exprs, 1)?;
        }
        let specs = (0..exprs.len())
            .map(|i| text_arg("image_stats", STATS_USAGE, exprs, i, "image"))
            .collect::<Result<Vec<_>>>()?;
        let lib = self.0.clone();
        let schema = schema(&[
            ("image_id", DataType::Int64),
            ("name", DataType::Utf8),
            ("version", DataType::Int64),
            ("logical_bytes", DataType::Int64),
            ("data_bytes", DataType::Int64),
            ("unique_bytes", DataType::Int64),
            ("shared_bytes", DataType::Int64),
            ("unique_stored_bytes", DataType::Int64),
            ("files", DataType::Int64),
            ("packages", DataType::Int64),
            ("freed_if_deleted", DataType::Int64),
        ]);
        Ok(Deferred::new(schema, move |ctx| {
            let (lib, specs) = (lib.clone(), specs.clone());
            Box::pin(async move {
                let mut ids = Vec::new();
                for spec in &specs {
                    ids.push(lib.image(spec, Right::Read).await?.image_id);
                }
                ids.dedup();
                let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
                // What deleting all the listed versions (then gc) would free: the stored bytes
                // of the chunks no other version uses.
                let freed = query(
                    &ctx,
                    format!(
                        "WITH theirs AS (SELECT DISTINCT chunk_hash FROM extents WHERE image_id IN ({list}) AND chunk_hash IS NOT NULL),
                              others AS (SELECT DISTINCT e.chunk_hash FROM extents e JOIN theirs USING (chunk_hash) WHERE e.image_id NOT IN ({list}))
                         SELECT coalesce(sum(c.stored_size), 0) AS freed FROM theirs t JOIN chunks c USING (chunk_hash)
                         WHERE t.chunk_hash NOT IN (SELECT chunk_hash FROM others)"
                    ),
                )
                .await?;
                let freed = freed
                    .first()
                    .and_then(|b| b.column_by_name("freed"))
                    .and_then(|c| datafusion::arrow::compute::cast(c, &DataType::Int64).ok())
                    .map_or(0, |c| {
                        use datafusion::arrow::array::AsArray;
                        c.as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0)
                    });
                let mut rows = Vec::new();
                for id in ids {
                    // A chunk is the image's own when no other image's extents use it.
                    let sql = format!(
                        "WITH mine AS (SELECT DISTINCT chunk_hash FROM extents WHERE image_id = {id} AND chunk_hash IS NOT NULL),
                         users AS (SELECT e.chunk_hash, count(DISTINCT e.image_id) AS images
                                   FROM extents e JOIN mine USING (chunk_hash) GROUP BY e.chunk_hash),
                         sizes AS (SELECT coalesce(sum(c.size) FILTER (WHERE u.images = 1), 0) AS unique_bytes,
                                          coalesce(sum(c.size) FILTER (WHERE u.images > 1), 0) AS shared_bytes,
                                          coalesce(sum(c.stored_size) FILTER (WHERE u.images = 1), 0) AS unique_stored
                                   FROM users u JOIN chunks c USING (chunk_hash))
                         SELECT i.image_id, i.name, i.version, i.virtual_size,
                           (SELECT coalesce(sum(length), 0) FROM extents WHERE image_id = {id} AND kind <> 'zero') AS data,
                           s.unique_bytes, s.shared_bytes, s.unique_stored,
                           (SELECT count(*) FROM files WHERE image_id = {id}) AS files,
                           (SELECT count(*) FROM packages WHERE image_id = {id}) AS packages,
                           {freed} AS freed_if_deleted
                         FROM images i, sizes s WHERE i.image_id = {id}"
                    );
                    rows.extend(query(&ctx, sql).await?);
                }
                Ok(rows)
            })
        }))
    }
}

/// `read_text(image, path)` and `read_bytes(image, path)`: a file's content, per row. A path
/// the image does not have reads as NULL, so one query can ask every image.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct ReadFile {
    pub(super) lib: Lib,
    binary: bool,
    signature: Signature,
}

impl ScalarUDFImpl for ReadFile {
    fn name(&self) -> &str {
        if self.binary { "read_bytes" } else { "read_text" }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(if self.binary { DataType::Binary } else { DataType::Utf8 })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let n = if scalar { 1 } else { args.number_rows };
        let mut columns = Vec::new();
        for a in &args.args {
            columns.push(datafusion::arrow::compute::cast(&a.to_array(n)?, &DataType::Utf8)?);
        }
        let (Some(images), Some(paths)) = (columns.first(), columns.get(1)) else {
            return exec_err!("{}(image, path) takes two arguments", self.name());
        };
        use datafusion::arrow::array::AsArray;
        let (images, paths) = (images.as_string::<i32>(), paths.as_string::<i32>());
        let mut contents: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
        for i in 0..n {
            if images.is_null(i) || paths.is_null(i) {
                contents.push(None);
                continue;
            }
            let (image, path) = (images.value(i), paths.value(i));
            // An image the session may not read fails as a missing one does.
            let read = match block_on(self.lib.hidden(image))? {
                true => Err(EngineError::NoImage(image.to_string())),
                false => block_on(self.lib.library.read_file(image, path))?,
            };
            match read {
                Ok(data) => contents.push(Some(data)),
                Err(EngineError::NotFound(_)) => contents.push(None),
                Err(e @ EngineError::NoImage(_)) => {
                    return Err(crate::access::missing(format!("{}: {e}", self.name())));
                }
                Err(e) => return exec_err!("{}: {e}", self.name()),
            }
        }
        let array: ArrayRef = if self.binary {
            Arc::new(contents.iter().map(|c| c.as_deref()).collect::<BinaryArray>())
        } else {
            Arc::new(
                contents
                    .iter()
                    .map(|c| c.as_deref().map(|d| String::from_utf8_lossy(d).into_owned()))
                    .collect::<StringArray>(),
            )
        };
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?))
        } else {
            Ok(ColumnarValue::Array(array))
        }
    }
}
