//! Vulnerabilities, answered from what the catalog holds: the `vulnerabilities` view matches
//! every visible version's `packages` against the `advisories` rows (see the engine's
//! `advisories.rs`) of its system and release, by source package (and its version) where the
//! distribution's advisories name source packages (Debian, Ubuntu, Alpine), else by package,
//! with the package manager's own version order over the advisory's ranges and versions.
//! Withdrawn advisories match nothing. A standing VEX statement (the `vex` table, the engine's
//! `vex.rs`) takes the rows it covers out of `vulnerabilities` and into
//! `suppressed_vulnerabilities`, beside the statement, as Trivy's `--show-suppressed` lists them.
//!
//! The functions it uses are SQL's too: `osv_affects(ranges, versions, version, manager)`,
//! `osv_fixed(ranges, version, manager)`, `os_release(os, version_id)` and
//! `image_matches(pattern, name)`.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use imagelake_connectors::advisories::{ecosystem, ranges};
use std::sync::Arc;

/// Every version, package and advisory that affects it, as `m` (VEX statements aside).
const MATCHES: &str = "
WITH i AS (
  SELECT image_id, name, version, os_name, os_release(os_name, os_version) AS os_release FROM images
), p AS (
  SELECT p.image_id, i.name AS image, i.version AS image_version, p.manager, p.name, p.arch, p.version,
         p.source, coalesce(p.source_version, p.version) AS source_version, i.os_name, i.os_release
  FROM packages p JOIN i USING (image_id)
), a AS (
  SELECT id, aliases, severity, cvss_score, summary, os, release, manager, by_source, package, ranges, versions
  FROM advisories WHERE withdrawn IS NULL
), matched AS (
  SELECT p.*, a.id, a.aliases, a.severity, a.cvss_score, a.summary, a.ranges, a.versions,
         p.source_version AS matched_version
  FROM p JOIN a ON a.by_source AND a.os = p.os_name AND a.release = p.os_release
    AND a.manager = p.manager AND a.package = p.source
  UNION ALL
  SELECT p.*, a.id, a.aliases, a.severity, a.cvss_score, a.summary, a.ranges, a.versions,
         p.version AS matched_version
  FROM p JOIN a ON NOT a.by_source AND a.os = p.os_name AND a.release = p.os_release
    AND a.manager = p.manager AND a.package = p.name
)
, m AS (
  SELECT image_id, image, image_version, manager, name AS package, arch, version AS installed_version,
         source, source_version, id AS advisory, aliases, severity, cvss_score, summary,
         osv_fixed(ranges, matched_version, manager) AS fixed_version
  FROM matched
  WHERE osv_affects(ranges, versions, matched_version, manager)
)";

/// When the VEX statement `v` covers the row `m`: it stands, names the advisory or one of its
/// aliases, the image (and version), and the package by either name if it names one.
const COVERS: &str = "v.revoked_at IS NULL
  AND (v.advisory = m.advisory OR array_has(m.aliases, v.advisory))
  AND image_matches(v.image, m.image)
  AND (v.version IS NULL OR v.version = m.image_version)
  AND (v.package IS NULL OR v.package = m.package OR v.package = m.source)";

/// The rows of `m` no statement covers.
fn vulnerabilities() -> String {
    format!("{MATCHES}\nSELECT m.* FROM m WHERE NOT EXISTS (SELECT 1 FROM vex v WHERE {COVERS})")
}

/// The rows of `m` a statement covers, once per statement, with the statement.
fn suppressed() -> String {
    format!(
        "{MATCHES}\nSELECT m.*, v.id AS vex, v.state AS vex_state, v.justification AS vex_justification, \
         v.detail AS vex_detail, v.actor AS vex_actor, v.at AS vex_at FROM m JOIN vex v ON {COVERS}"
    )
}

/// Registers the functions and the `vulnerabilities` view on `ctx`.
pub async fn register(ctx: &SessionContext) -> Result<()> {
    for name in NAMES {
        if let Some(udf) = scalar_function(name) {
            ctx.register_udf(udf);
        }
    }
    for (name, sql) in [("vulnerabilities", vulnerabilities()), ("suppressed_vulnerabilities", suppressed())] {
        let plan = ctx.state().create_logical_plan(&sql).await?;
        let view = datafusion::catalog::view::ViewTable::new(plan, Some(sql));
        ctx.register_table(name, Arc::new(view))?;
    }
    Ok(())
}

const NAMES: [&str; 4] = ["osv_affects", "osv_fixed", "os_release", "image_matches"];

/// The function of `name`, whose answer depends on its arguments alone.
pub fn scalar_function(name: &str) -> Option<ScalarUDF> {
    let text = |n| TypeSignature::Exact(vec![DataType::Utf8; n]);
    let list = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    let signature = match name {
        "osv_affects" => Signature::one_of(
            vec![TypeSignature::Exact(vec![DataType::Utf8, list, DataType::Utf8, DataType::Utf8])],
            Volatility::Immutable,
        ),
        "osv_fixed" => Signature::one_of(vec![text(3)], Volatility::Immutable),
        "os_release" | "image_matches" => Signature::one_of(vec![text(2)], Volatility::Immutable),
        _ => return None,
    };
    let name = NAMES.into_iter().find(|n| *n == name)?;
    Some(ScalarUDF::from(Osv { name, signature }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Osv {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for Osv {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(if matches!(self.name, "osv_affects" | "image_matches") { DataType::Boolean } else { DataType::Utf8 })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let n = args.number_rows;
        let text = |i: usize| arrays.get(i).map(|a| a.as_string::<i32>());
        fn value(column: Option<&datafusion::arrow::array::StringArray>, row: usize) -> Option<&str> {
            column.filter(|c| c.is_valid(row)).map(|c| c.value(row))
        }
        let out: ArrayRef = match self.name {
            "os_release" => {
                let (os, version) = (text(0), text(1));
                let mut out = StringBuilder::new();
                for row in 0..n {
                    let release = value(os, row).zip(value(version, row)).and_then(|(o, v)| ecosystem::of_image(o, v));
                    out.append_option(release);
                }
                Arc::new(out.finish())
            }
            "image_matches" => {
                let (pattern, name) = (text(0), text(1));
                let mut out = BooleanBuilder::new();
                for row in 0..n {
                    let matched = value(pattern, row).zip(value(name, row));
                    out.append_option(matched.map(|(p, n)| imagelake_engine::access::glob_matches(p, n)));
                }
                Arc::new(out.finish())
            }
            "osv_fixed" => {
                let (ranges, version, manager) = (text(0), text(1), text(2));
                let mut parsed = Parsed::default();
                let mut out = StringBuilder::new();
                for row in 0..n {
                    let fixed = match (value(ranges, row), value(version, row), value(manager, row)) {
                        (Some(r), Some(v), Some(m)) => ranges::affects(m, parsed.get(r)?, &[], v).flatten(),
                        _ => None,
                    };
                    out.append_option(fixed);
                }
                Arc::new(out.finish())
            }
            _ => {
                let (ranges, version, manager) = (text(0), text(2), text(3));
                let listed = arrays.get(1).map(|a| a.as_list::<i32>());
                let mut parsed = Parsed::default();
                let mut out = BooleanBuilder::new();
                for row in 0..n {
                    let (Some(r), Some(v), Some(m)) = (value(ranges, row), value(version, row), value(manager, row))
                    else {
                        out.append_null();
                        continue;
                    };
                    let versions: Vec<String> = match listed.filter(|l| l.is_valid(row)) {
                        Some(l) => {
                            let items = l.value(row);
                            let items = items.as_string::<i32>();
                            (0..items.len())
                                .filter(|&i| items.is_valid(i))
                                .map(|i| items.value(i).to_string())
                                .collect()
                        }
                        None => Vec::new(),
                    };
                    out.append_value(ranges::affects(m, parsed.get(r)?, &versions, v).is_some());
                }
                Arc::new(out.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The ranges of one batch's rows, each distinct text parsed once: the rows of a join repeat
/// a few advisories many times.
#[derive(Default)]
struct Parsed<'a>(std::collections::HashMap<&'a str, Vec<ranges::Range>>);

impl<'a> Parsed<'a> {
    fn get(&mut self, text: &'a str) -> Result<&[ranges::Range]> {
        if !self.0.contains_key(text) {
            let parsed = match ranges::Range::from_json(text) {
                Ok(ranges) => ranges,
                Err(e) => return exec_err!("advisory ranges: {e}"),
            };
            self.0.insert(text, parsed);
        }
        Ok(&self.0[text])
    }
}
