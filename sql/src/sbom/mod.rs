//! SBOMs of image versions, from the inventories the catalog already holds (no image is read):
//! `sbom(image [, format [, spec_version]])` returns one row holding the document, CycloneDX
//! 1.5 or 1.6 JSON ([`cyclonedx`]) or SPDX 2.3 JSON ([`spdx`]); `sbom_diff(old, new)` returns
//! the packages added, removed, upgraded and downgraded between two versions. Both are read
//! table functions: a session sees the images its principal may read, and no other.
//!
//! A document is a function of the version and the VEX statements that cover it: its time is
//! the version's `created_at` and its serial number and namespace derive from the version's
//! name, number and id, so the same version exported twice is byte-identical. A CycloneDX
//! document carries each standing statement that covers the version as a vulnerability with
//! its analysis, affecting the packages its advisory matches (or the image, where none).

mod cyclonedx;
pub mod purl;
mod spdx;

use crate::functions::{Deferred, Lib, text_arg};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::datasource::TableProvider;
use datafusion::prelude::SessionContext;
use imagelake_connectors::packages::versions;
use imagelake_engine::access::Right;
use imagelake_engine::catalog::{ImageRow, VexRow};
use std::sync::Arc;

/// The SBOM table functions, by name.
pub fn table_functions(lib: &Lib) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    vec![("sbom", Arc::new(Sbom(lib.clone()))), ("sbom_diff", Arc::new(SbomDiff(lib.clone())))]
}

/// The system an image runs, from its os-release (`ID`, `VERSION_ID`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Os {
    pub id: Option<String>,
    pub version_id: Option<String>,
}

impl Os {
    /// syft's `distro` qualifier: `debian-12`.
    pub fn distro(&self) -> Option<String> {
        Some(format!("{}-{}", self.id.as_deref()?, self.version_id.as_deref()?))
    }

    /// A purl's namespace: the os-release ID, as syft names the vendor (`rhel` is `redhat`,
    /// every openSUSE `opensuse`); without one, the distribution the manager comes from.
    pub fn purl_namespace(&self, kind: &str) -> String {
        match self.id.as_deref() {
            Some("rhel") => "redhat".into(),
            Some(id) if id.starts_with("opensuse") => "opensuse".into(),
            Some(id) => id.to_lowercase(),
            None if kind == "deb" => "debian".into(),
            None if kind == "apk" => "alpine".into(),
            None => "redhat".into(),
        }
    }

    /// The name scanners know the system by (Trivy's OS families): os-release IDs but for
    /// Red Hat, AlmaLinux, Oracle and Amazon Linux.
    pub fn family(&self) -> Option<&str> {
        Some(match self.id.as_deref()? {
            "rhel" => "redhat",
            "almalinux" => "alma",
            "ol" => "oracle",
            "amzn" => "amazon",
            "sles_sap" => "sles",
            id => id,
        })
    }
}

/// One installed package, as the `packages` table holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Package {
    pub manager: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    pub source: String,
    /// NULL for images checked in before library format 5 (then taken as the package's own).
    pub source_version: Option<String>,
    pub epoch: Option<i64>,
    pub release: Option<String>,
    pub source_rpm: Option<String>,
    /// NULL for images checked in before library format 5: unknown, not none.
    pub licenses: Option<Vec<String>>,
}

impl Package {
    pub fn source_version(&self) -> &str {
        self.source_version.as_deref().unwrap_or(&self.version)
    }
}

/// What an SBOM says of one image version.
pub struct Inventory {
    pub image: ImageRow,
    pub os: Os,
    /// Ordered by manager, name, architecture and version.
    pub packages: Vec<Package>,
    /// The standing VEX statements that cover the version, oldest first.
    pub analyses: Vec<Analysis>,
}

/// A VEX statement that covers a version, and the packages of the version its advisory
/// matches (indexes into [`Inventory::packages`]).
pub struct Analysis {
    pub statement: VexRow,
    pub packages: Vec<usize>,
}

impl Inventory {
    /// `web@3`.
    pub fn title(&self) -> String {
        format!("{}@{}", self.image.name, self.image.version)
    }

    /// A UUID that is the same for the same version and differs between versions (the blake3
    /// of the version's name, number and id, shaped as a version 4 UUID would be).
    pub fn uuid(&self) -> String {
        let key = format!("imagelake sbom {} {} {}", self.image.name, self.image.version, self.image.image_id);
        let mut b = *blake3::hash(key.as_bytes()).as_bytes();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
    }

    /// The version's creation time, RFC 3339 in UTC to the second.
    pub fn created(&self) -> String {
        rfc3339(self.image.created_at)
    }
}

/// A time (nanoseconds since the epoch) in RFC 3339, UTC, to the second.
pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The inventory of the version `spec` names, as the session `ctx` sees it.
async fn inventory(lib: &Lib, ctx: &SessionContext, spec: &str) -> Result<Inventory> {
    let image = lib.image(spec, Right::Read).await?;
    let sql = format!(
        "SELECT manager, name, version, arch, source, source_version, epoch, release, source_rpm, licenses \
         FROM packages WHERE image_id = {} ORDER BY manager, name, arch, version",
        image.image_id
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut packages = Vec::new();
    for batch in &batches {
        let column = |name: &str, to: &DataType| column_as(batch, "packages", name, to);
        let names = ["manager", "name", "version", "arch", "source", "source_version", "release", "source_rpm"];
        let texts = names.iter().map(|n| column(n, &DataType::Utf8)).collect::<Result<Vec<_>>>()?;
        let text = |i: usize, row: usize| {
            let column = texts[i].as_string::<i32>();
            column.is_valid(row).then(|| column.value(row).to_string())
        };
        let epoch = column("epoch", &DataType::Int64)?;
        let epoch = epoch.as_primitive::<Int64Type>();
        let licenses = column("licenses", &DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))))?;
        let licenses = licenses.as_list::<i32>();
        for row in 0..batch.num_rows() {
            let list = licenses.is_valid(row).then(|| {
                let values = licenses.value(row);
                let values = values.as_string::<i32>();
                (0..values.len()).filter(|&i| values.is_valid(i)).map(|i| values.value(i).to_string()).collect()
            });
            packages.push(Package {
                manager: text(0, row).unwrap_or_default(),
                name: text(1, row).unwrap_or_default(),
                version: text(2, row).unwrap_or_default(),
                arch: text(3, row).unwrap_or_default(),
                source: text(4, row).unwrap_or_default(),
                source_version: text(5, row),
                epoch: epoch.is_valid(row).then(|| epoch.value(row)),
                release: text(6, row),
                source_rpm: text(7, row),
                licenses: list,
            });
        }
    }
    let os = Os { id: image.os_name.clone(), version_id: image.os_version.clone() };
    let analyses = analyses(lib, ctx, &image, &packages).await?;
    Ok(Inventory { image, os, packages, analyses })
}

/// The column `name` of a batch of `table`'s rows, as `to`: decoded by name, not position,
/// and cast to the type read here (a scan may give views).
fn column_as(batch: &RecordBatch, table: &str, name: &str, to: &DataType) -> Result<ArrayRef> {
    let found = batch.column_by_name(name);
    let found = found.ok_or_else(|| DataFusionError::Internal(format!("sbom: {table} has no {name}")))?;
    Ok(cast(found, to)?)
}

/// The standing VEX statements that cover `image`, each with the packages of `packages` whose
/// rows it takes out of `vulnerabilities`.
async fn analyses(lib: &Lib, ctx: &SessionContext, image: &ImageRow, packages: &[Package]) -> Result<Vec<Analysis>> {
    let statements = lib.library.vex().await.map_err(crate::external)?;
    let mut analyses: Vec<Analysis> = statements
        .into_iter()
        .filter(|s| s.covers(&image.name, image.version))
        .map(|statement| Analysis { statement, packages: Vec::new() })
        .collect();
    if analyses.is_empty() {
        return Ok(analyses);
    }
    let sql = format!(
        "SELECT DISTINCT vex, manager, package, arch, installed_version FROM suppressed_vulnerabilities \
         WHERE image_id = {}",
        image.image_id
    );
    for batch in ctx.sql(&sql).await?.collect().await? {
        let names = ["vex", "manager", "package", "arch", "installed_version"];
        let texts = names
            .iter()
            .map(|name| column_as(&batch, "suppressed_vulnerabilities", name, &DataType::Utf8))
            .collect::<Result<Vec<_>>>()?;
        let text = |i: usize, row: usize| texts[i].as_string::<i32>().value(row).to_string();
        for row in 0..batch.num_rows() {
            let key = (text(1, row), text(2, row), text(3, row), text(4, row));
            let found = packages
                .iter()
                .position(|p| (&p.manager, &p.name, &p.arch, &p.version) == (&key.0, &key.1, &key.2, &key.3));
            let analysis = analyses.iter_mut().find(|a| a.statement.id == text(0, row));
            if let (Some(index), Some(analysis)) = (found, analysis) {
                analysis.packages.push(index);
            }
        }
    }
    for analysis in &mut analyses {
        analysis.packages.sort_unstable();
        analysis.packages.dedup();
    }
    Ok(analyses)
}

/// `[epoch:]version[-release]` apart: dpkg's epoch, upstream version and revision, or rpm's
/// epoch, version and release (the release after the last `-`, which neither allows in the
/// version).
pub fn split_version(version: &str) -> (Option<&str>, &str, Option<&str>) {
    let (epoch, rest) = match version.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => (Some(e), rest),
        _ => (None, version),
    };
    match rest.rsplit_once('-') {
        Some((v, r)) if !v.is_empty() && !r.is_empty() => (epoch, v, Some(r)),
        _ => (epoch, rest, None),
    }
}

/// The SPDX license identifier `words` name exactly, if any: an identifier in use, in any
/// case (`BSD-3-clause`), or the short forms Debian's copyright files and rpm use for one: a
/// GNU license with a bare version and `+` for "or later" (`GPL-2`, `LGPL-2.1+`), a version
/// without its `.0` (`Apache-2`). Words that name no license exactly (`BSD`, `GPL`,
/// `permissive`) name none: no license is guessed.
pub fn spdx_id(words: &str) -> Option<&'static str> {
    let (base, or_later) = match words.strip_suffix('+') {
        Some(base) => (base, true),
        None => (words, false),
    };
    let known = |name: &str| {
        let found = ::spdx::identifiers::LICENSES.iter().find(|l| l.name.eq_ignore_ascii_case(name))?;
        ::spdx::license_id(found.name).filter(|l| !l.is_deprecated()).map(|l| l.name)
    };
    let upper = base.to_ascii_uppercase();
    let gnu = ["GPL-", "LGPL-", "AGPL-", "GFDL-"].iter().any(|family| upper.starts_with(family));
    let version = base.rsplit('-').next().unwrap_or_default();
    let with_minor = (!version.is_empty() && version.bytes().all(|b| b.is_ascii_digit())).then(|| format!("{base}.0"));
    [Some(base.to_string()), with_minor].into_iter().flatten().find_map(|name| match (gnu, or_later) {
        (true, true) => known(&format!("{name}-or-later")),
        (true, false) => known(&format!("{name}-only")).or_else(|| known(&name)),
        (false, false) => known(&name),
        (false, true) => None,
    })
}

/// The document formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CycloneDX JSON of spec version 1.5 or 1.6.
    CycloneDx(&'static str),
    /// SPDX 2.3 JSON.
    Spdx,
}

impl Format {
    /// `cyclonedx` (1.6 unless `spec_version` says 1.5) or `spdx` (2.3); the error names what
    /// is known.
    pub fn parse(format: &str, spec_version: Option<&str>) -> Result<Format> {
        match (format.to_ascii_lowercase().as_str(), spec_version) {
            ("cyclonedx" | "cdx", None | Some("1.6")) => Ok(Format::CycloneDx("1.6")),
            ("cyclonedx" | "cdx", Some("1.5")) => Ok(Format::CycloneDx("1.5")),
            ("spdx", None | Some("2.3")) => Ok(Format::Spdx),
            ("cyclonedx" | "cdx" | "spdx", Some(v)) => {
                plan_err!("sbom(): {format} spec version {v} is not written; CycloneDX 1.5 or 1.6, SPDX 2.3")
            }
            _ => plan_err!("sbom(): unknown format {format:?}; the formats are 'cyclonedx' and 'spdx'"),
        }
    }
}

/// The document of `inventory` in `format`, ending in a newline.
pub fn document(inventory: &Inventory, format: Format) -> String {
    let value = match format {
        Format::CycloneDx(spec_version) => cyclonedx::document(inventory, spec_version),
        Format::Spdx => spdx::document(inventory),
    };
    // Keys sorted (serde_json's maps), two-space indents.
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// `sbom(image [, format [, spec_version]])`: one row, `document`.
#[derive(Debug)]
struct Sbom(Lib);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn license_words_name_spdx_identifiers_only_exactly() {
        for (words, id) in [
            ("MIT", Some("MIT")),
            ("BSD-3-clause", Some("BSD-3-Clause")),
            ("GPL-2", Some("GPL-2.0-only")),
            ("GPL-2+", Some("GPL-2.0-or-later")),
            ("LGPL-2.1+", Some("LGPL-2.1-or-later")),
            ("GPL-3.0-or-later", Some("GPL-3.0-or-later")),
            ("Apache-2", Some("Apache-2.0")),
            ("Zlib", Some("Zlib")),
            ("GPL", None),
            ("BSD", None),
            ("MIT+", None),
            ("public-domain", None),
            ("GPL-2.0", Some("GPL-2.0-only")),
        ] {
            assert_eq!(spdx_id(words), id, "{words}");
        }
        assert_eq!(split_version("1:2.36-9+b1"), (Some("1"), "2.36", Some("9+b1")));
        assert_eq!(split_version("5.2"), (None, "5.2", None));
        assert_eq!(split_version("a:1-2-3"), (None, "a:1-2", Some("3")));
    }
}

const SBOM_USAGE: &str = "sbom(image [, 'cyclonedx' | 'spdx' [, spec version]]), e.g. sbom('web@2', 'spdx')";

impl TableFunctionImpl for Sbom {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 3 {
            return plan_err!("sbom() takes 1 to 3 arguments: {SBOM_USAGE}");
        }
        let image = text_arg("sbom", SBOM_USAGE, exprs, 0, "image")?;
        let format =
            if exprs.len() > 1 { text_arg("sbom", SBOM_USAGE, exprs, 1, "format")? } else { "cyclonedx".into() };
        let spec = if exprs.len() > 2 { Some(text_arg("sbom", SBOM_USAGE, exprs, 2, "spec version")?) } else { None };
        let format = Format::parse(&format, spec.as_deref())?;
        let lib = self.0.clone();
        let schema = Arc::new(Schema::new(vec![Field::new("document", DataType::Utf8, false)]));
        Ok(Deferred::new(schema.clone(), move |ctx| {
            let (lib, image, schema) = (lib.clone(), image.clone(), schema.clone());
            Box::pin(async move {
                let inventory = inventory(&lib, &ctx, &image).await?;
                let column = StringArray::from(vec![document(&inventory, format)]);
                Ok(vec![RecordBatch::try_new(schema, vec![Arc::new(column)])?])
            })
        }))
    }
}

/// `sbom_diff(old, new)`: one row per package added, removed, upgraded or downgraded (by its
/// manager's version order), with its purl in each version.
#[derive(Debug)]
struct SbomDiff(Lib);

const SBOM_DIFF_USAGE: &str = "sbom_diff(old image, new image), e.g. sbom_diff('web@1', 'web@2')";

/// The columns of `sbom_diff`.
pub fn diff_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("change", false),
        text("manager", false),
        text("name", false),
        text("arch", false),
        text("old_version", true),
        text("new_version", true),
        text("old_purl", true),
        text("new_purl", true),
    ]))
}

impl TableFunctionImpl for SbomDiff {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        crate::functions::arity("sbom_diff", SBOM_DIFF_USAGE, exprs, 2)?;
        let old = text_arg("sbom_diff", SBOM_DIFF_USAGE, exprs, 0, "old image")?;
        let new = text_arg("sbom_diff", SBOM_DIFF_USAGE, exprs, 1, "new image")?;
        let lib = self.0.clone();
        Ok(Deferred::new(diff_schema(), move |ctx| {
            let (lib, old, new) = (lib.clone(), old.clone(), new.clone());
            Box::pin(async move {
                let (old, new) = (inventory(&lib, &ctx, &old).await?, inventory(&lib, &ctx, &new).await?);
                Ok(vec![diff(&old, &new)?])
            })
        }))
    }
}

/// `sbom_diff`'s rows as JSON, grouped by change (`added`, `removed`, `upgraded`,
/// `downgraded`, `modified`), each entry its package's name, manager, architecture, versions
/// and purls (a CycloneDX `bom-ref` in either BOM), absent values left out.
pub fn diff_json(batches: &[RecordBatch]) -> Result<serde_json::Value> {
    let mut groups = serde_json::Map::new();
    for change in ["added", "removed", "upgraded", "downgraded", "modified"] {
        groups.insert(change.into(), serde_json::Value::Array(Vec::new()));
    }
    let names = diff_schema();
    for batch in batches {
        let columns =
            (0..batch.num_columns()).map(|i| cast(batch.column(i), &DataType::Utf8)).collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let mut entry = serde_json::Map::new();
            for (field, column) in names.fields().iter().zip(&columns).skip(1) {
                let column = column.as_string::<i32>();
                if column.is_valid(row) {
                    entry.insert(field.name().clone(), column.value(row).into());
                }
            }
            let change = columns[0].as_string::<i32>().value(row);
            if let Some(serde_json::Value::Array(list)) = groups.get_mut(change) {
                list.push(entry.into());
            }
        }
    }
    Ok(groups.into())
}

/// The packages that differ between two inventories, by (manager, name, arch), in that order.
fn diff(old: &Inventory, new: &Inventory) -> Result<RecordBatch> {
    use std::collections::BTreeMap;
    let keyed = |inventory: &Inventory| -> BTreeMap<(String, String, String), Package> {
        let packages = inventory.packages.iter().cloned();
        packages.map(|p| ((p.manager.clone(), p.name.clone(), p.arch.clone()), p)).collect()
    };
    let (before, after) = (keyed(old), keyed(new));
    let mut keys: Vec<_> = before.keys().chain(after.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let mut columns: [Vec<Option<String>>; 8] = Default::default();
    for key in keys {
        let (a, b) = (before.get(&key), after.get(&key));
        let change = match (a, b) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(a), Some(b)) => {
                match versions::compare(&key.0, &a.version, &b.version).unwrap_or(a.version.cmp(&b.version)) {
                    std::cmp::Ordering::Less => "upgraded",
                    std::cmp::Ordering::Greater => "downgraded",
                    // The same version, or one the order holds equal ("1.0" and "01.0").
                    std::cmp::Ordering::Equal if a.version == b.version => continue,
                    std::cmp::Ordering::Equal => "modified",
                }
            }
            (None, None) => continue,
        };
        let row = [
            Some(change.to_string()),
            Some(key.0.clone()),
            Some(key.1.clone()),
            Some(key.2.clone()),
            a.map(|p| p.version.clone()),
            b.map(|p| p.version.clone()),
            a.and_then(|p| purl::purl(&old.os, p)),
            b.and_then(|p| purl::purl(&new.os, p)),
        ];
        for (column, value) in columns.iter_mut().zip(row) {
            column.push(value);
        }
    }
    let arrays = columns.into_iter().map(|c| Arc::new(StringArray::from(c)) as Arc<dyn Array>).collect();
    Ok(RecordBatch::try_new(diff_schema(), arrays)?)
}
