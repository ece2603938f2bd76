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
use datafusion::common::{HashMap, Result, exec_err, hash_map::Entry};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use imagelake_connectors::advisories::{ecosystem, ranges};
use std::sync::Arc;

/// Every version, package and advisory that affects it, as `m` (VEX statements aside). The
/// packages meet the advisories first, by package manager and name, which keeps only the rows
/// of the few sources a question's advisories name; those meet their versions' systems and
/// releases after.
const MATCHES: &str = "
WITH a AS (
  SELECT id, aliases, severity, cvss_score, summary, os, release, manager, by_source, package, ranges, versions
  FROM advisories WHERE withdrawn IS NULL
), p AS (
  SELECT image_id, manager, name, arch, version, source, coalesce(source_version, version) AS source_version
  FROM packages
), matched AS (
  SELECT p.*, a.id, a.aliases, a.severity, a.cvss_score, a.summary, a.os, a.release, a.ranges, a.versions,
         p.source_version AS matched_version
  FROM a JOIN p ON a.by_source AND a.manager = p.manager AND a.package = p.source
  UNION ALL
  SELECT p.*, a.id, a.aliases, a.severity, a.cvss_score, a.summary, a.os, a.release, a.ranges, a.versions,
         p.version AS matched_version
  FROM a JOIN p ON NOT a.by_source AND a.manager = p.manager AND a.package = p.name
), i AS (
  SELECT image_id, name AS image, version AS image_version, os_name, os_release(os_name, os_version) AS os_release
  FROM images
), m AS (
  SELECT x.image_id, i.image, i.image_version, x.manager, x.name AS package, x.arch, x.version AS installed_version,
         x.source, x.source_version, x.id AS advisory, x.aliases, x.severity, x.cvss_score, x.summary,
         osv_fixed(x.ranges, x.matched_version, x.manager) AS fixed_version
  FROM i JOIN matched x ON i.image_id = x.image_id AND i.os_name = x.os AND i.os_release = x.release
  WHERE osv_affects(x.ranges, x.versions, x.matched_version, x.manager)
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
    // The table's lists (items never null) and any other list, without a cast of either.
    let list = |nullable| DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, nullable)));
    let versions =
        |nullable| TypeSignature::Exact(vec![DataType::Utf8, list(nullable), DataType::Utf8, DataType::Utf8]);
    let signature = match name {
        "osv_affects" => Signature::one_of(vec![versions(false), versions(true)], Volatility::Immutable),
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
            // osv_fixed(ranges, version, manager), osv_affects(ranges, versions, version, manager)
            _ => {
                let fixed = self.name == "osv_fixed";
                let (ranges, version, manager) =
                    if fixed { (text(0), text(1), text(2)) } else { (text(0), text(2), text(3)) };
                let listed = arrays.get(1).filter(|_| !fixed).map(|a| a.as_list::<i32>());
                let mut answers = Answers::default();
                // Only the answer asked for is built: osv_fixed's texts, or osv_affects's flags.
                let (mut affected, mut fixes) = (BooleanBuilder::new(), StringBuilder::new());
                for row in 0..n {
                    let (Some(r), Some(v), Some(m)) = (value(ranges, row), value(version, row), value(manager, row))
                    else {
                        if fixed {
                            fixes.append_null()
                        } else {
                            affected.append_null()
                        }
                        continue;
                    };
                    let versions = match listed.filter(|l| l.is_valid(row)) {
                        Some(l) => {
                            let (start, end) = (l.value_offsets()[row] as usize, l.value_offsets()[row + 1] as usize);
                            let items = l.values().as_string::<i32>();
                            (start..end).filter(|&i| items.is_valid(i)).map(|i| items.value(i)).collect()
                        }
                        None => Vec::new(),
                    };
                    let answer = answers.get(r, versions, v, m)?;
                    if fixed {
                        fixes.append_option(answer.as_ref().and_then(|f| f.as_deref()));
                    } else {
                        affected.append_value(answer.is_some());
                    }
                }
                if fixed { Arc::new(fixes.finish()) } else { Arc::new(affected.finish()) }
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// One batch's answers: the rows of a join repeat a few advisories and a few installed
/// versions many times, so each distinct range text is parsed once and each distinct question
/// (ranges, listed versions, version, manager) answered once.
#[derive(Default)]
struct Answers<'a> {
    parsed: HashMap<&'a str, Vec<ranges::Range>>,
    answered: HashMap<Question<'a>, Option<Option<String>>>,
}

/// A range check's arguments: ranges, listed versions, installed version, manager.
type Question<'a> = (&'a str, Vec<&'a str>, &'a str, &'a str);

impl<'a> Answers<'a> {
    /// Whether `version` is affected, and the fixed version if one is known.
    fn get(
        &mut self,
        text: &'a str,
        listed: Vec<&'a str>,
        version: &'a str,
        manager: &'a str,
    ) -> Result<&Option<Option<String>>> {
        let parsed = match self.parsed.entry(text) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => match ranges::Range::from_json(text) {
                Ok(ranges) => e.insert(ranges),
                Err(e) => return exec_err!("advisory ranges: {e}"),
            },
        };
        Ok(match self.answered.entry((text, listed, version, manager)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let answer = ranges::affects(manager, parsed, &e.key().1, version);
                e.insert(answer)
            }
        })
    }
}
