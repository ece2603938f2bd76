//! Security advisories in the OSV format (ossf/osv-schema), as osv.dev publishes them for
//! Debian, Ubuntu, Alpine, Rocky Linux, AlmaLinux and Red Hat: a record names a
//! vulnerability, its aliases (a DSA's CVE), a severity, and per affected package (an
//! ecosystem such as `Debian:12` and a name) the version ranges and lists it affects.
//!
//! [`parse`] reads one record (a document is untrusted: a record it cannot use is an error
//! that names the record and the field); [`ecosystem`] says which systems and packages an
//! ecosystem's records are about; [`ranges`] decides whether a version lies in a package's
//! ranges by the package manager's own order.

pub mod ecosystem;
pub mod ranges;

use serde_json::Value;

/// One OSV record, as far as matching and reporting need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Advisory {
    pub id: String,
    /// RFC 3339, as the record says (compared after parsing, by the loader).
    pub modified: String,
    pub published: Option<String>,
    /// Set when the record was taken back: it no longer affects anything.
    pub withdrawn: Option<String>,
    pub aliases: Vec<String>,
    pub summary: Option<String>,
    /// The record's severity (see [`Severity`]).
    pub severity: Option<Severity>,
    pub affected: Vec<Affected>,
}

/// How severe: from a CVSS vector where the record gives one (v4 before v3, scored by the
/// `cvss` crate), else the record's own word (`database_specific.severity`, Debian's
/// `urgency`), upper-cased.
#[derive(Debug, Clone, PartialEq)]
pub struct Severity {
    /// `CRITICAL`, `HIGH`, `MEDIUM`, `LOW`, `NONE`, or the record's own word.
    pub label: String,
    pub score: Option<f64>,
    pub vector: Option<String>,
}

/// One affected package of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Affected {
    pub ecosystem: String,
    pub package: String,
    pub purl: Option<String>,
    /// Ranges of type ECOSYSTEM or SEMVER (GIT ranges name commits, not package versions, and
    /// are left out).
    pub ranges: Vec<ranges::Range>,
    /// Versions listed one by one.
    pub versions: Vec<String>,
    /// The package's own severity, where it differs from the record's.
    pub severity: Option<Severity>,
}

/// The most bytes of one record or document read (osv.dev's largest records are a few MiB).
pub const MAX_DOCUMENT: usize = 64 << 20;

/// The records of one JSON document: a record, or an array of them (as some exports write).
pub fn parse_document(text: &[u8]) -> Result<Vec<Advisory>, String> {
    if text.len() > MAX_DOCUMENT {
        return Err(format!("{} bytes, more than the {MAX_DOCUMENT} read of one document", text.len()));
    }
    let value: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    match value {
        Value::Array(records) => records.iter().map(parse).collect(),
        record => Ok(vec![parse(&record)?]),
    }
}

/// One OSV record. Its errors name the record (when it has an id) and the field.
pub fn parse(record: &Value) -> Result<Advisory, String> {
    let text = |v: &Value, field: &str| -> Result<Option<String>, String> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{field} is not a string")),
        }
    };
    let texts = |v: &Value, field: &str| -> Result<Vec<String>, String> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string).ok_or_else(|| format!("{field} holds a non-string")))
                .collect(),
            Some(_) => Err(format!("{field} is not a list")),
        }
    };
    if !record.is_object() {
        return Err("a record is not a JSON object".into());
    }
    let id = text(record, "id")?.filter(|i| !i.is_empty()).ok_or("a record has no id")?;
    let named = |e: String| format!("record {id}: {e}");
    let modified = text(record, "modified").map_err(named)?.ok_or_else(|| named("no modified time".into()))?;
    let own = severity(record);
    let mut affected = Vec::new();
    let entries = match record.get("affected") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => return Err(named("affected is not a list".into())),
    };
    for (i, entry) in entries.iter().enumerate() {
        let at = |e: String| named(format!("affected[{i}]: {e}"));
        let package = entry.get("package").ok_or_else(|| at("no package".into()))?;
        let ecosystem = text(package, "ecosystem").map_err(at)?.ok_or_else(|| at("no package ecosystem".into()))?;
        let name = text(package, "name").map_err(at)?.ok_or_else(|| at("no package name".into()))?;
        let mut found = Vec::new();
        for (r, range) in entry.get("ranges").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if let Some(range) = ranges::Range::parse(range).map_err(|e| at(format!("ranges[{r}]: {e}")))? {
                found.push(range);
            }
        }
        affected.push(Affected {
            ecosystem,
            package: name,
            purl: text(package, "purl").map_err(at)?,
            ranges: found,
            versions: texts(entry, "versions").map_err(at)?,
            severity: severity(entry),
        });
    }
    Ok(Advisory {
        id: id.clone(),
        modified,
        published: text(record, "published").map_err(named)?,
        withdrawn: text(record, "withdrawn").map_err(named)?,
        aliases: texts(record, "aliases").map_err(named)?,
        summary: text(record, "summary").map_err(named)?,
        severity: own,
        affected,
    })
}

/// The severity a record (or an affected entry) states: the highest-versioned CVSS vector
/// that scores, else its own word.
fn severity(v: &Value) -> Option<Severity> {
    let vectors = v.get("severity").and_then(Value::as_array).into_iter().flatten();
    let mut scored: Vec<(u8, Severity)> = vectors
        .filter_map(|s| {
            let kind = s.get("type")?.as_str()?;
            let vector = s.get("score")?.as_str()?;
            let rank = match kind {
                "CVSS_V4" => 4,
                "CVSS_V3" => 3,
                _ => return None,
            };
            let cvss: cvss::Cvss = vector.parse().ok()?;
            let label = cvss.severity().to_string().to_uppercase();
            Some((rank, Severity { label, score: Some(cvss.score()), vector: Some(vector.to_string()) }))
        })
        .collect();
    scored.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
    if let Some((_, best)) = scored.into_iter().next() {
        return Some(best);
    }
    let word = v
        .pointer("/database_specific/severity")
        .or_else(|| v.pointer("/ecosystem_specific/urgency"))
        .or_else(|| v.pointer("/ecosystem_specific/severity"))
        .and_then(Value::as_str)
        .filter(|w| !w.is_empty() && w.len() <= 40)?;
    Some(Severity { label: word.to_uppercase(), score: None, vector: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_their_errors() {
        let text = br#"{"id": "DSA-5678-1", "modified": "2024-05-01T00:00:00Z", "aliases": ["CVE-2024-1234"],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected": [{"package": {"ecosystem": "Debian:12", "name": "glibc"},
              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.36-9+deb12u4"}]},
                         {"type": "GIT", "repo": "x", "events": [{"introduced": "abc"}]}],
              "ecosystem_specific": {"urgency": "medium"}}]}"#;
        let records = parse_document(text).unwrap();
        let a = &records[0];
        assert_eq!((a.id.as_str(), a.aliases.as_slice()), ("DSA-5678-1", &["CVE-2024-1234".to_string()][..]));
        let severity = a.severity.as_ref().unwrap();
        assert_eq!((severity.label.as_str(), severity.score), ("CRITICAL", Some(9.8)));
        assert_eq!(a.affected[0].ranges.len(), 1, "the GIT range is left out");
        assert_eq!(a.affected[0].severity.as_ref().unwrap().label, "MEDIUM");
        let v4 = serde_json::json!({"id": "X", "modified": "2024-01-01T00:00:00Z", "severity": [
            {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N"},
            {"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}]});
        assert_eq!(parse(&v4).unwrap().severity.unwrap().vector.unwrap().split('/').next(), Some("CVSS:4.0"));

        for (bad, says) in [
            (&b"[1]"[..], "not a JSON object"),
            (br#"{"modified": "x"}"#, "no id"),
            (br#"{"id": "A"}"#, "record A: no modified"),
            (
                br#"{"id": "A", "modified": "x", "affected": [{"package": {"name": "p"}}]}"#,
                "record A: affected[0]: no package ecosystem",
            ),
            (br#"{"id": "A", "modified": "x", "aliases": "CVE-1"}"#, "aliases is not a list"),
            (b"{", "not JSON"),
        ] {
            let e = parse_document(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
