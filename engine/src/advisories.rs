//! Loading security advisories (OSV records) into the catalog's `advisories` table, one row
//! per record and affected package of the distributions imagelake matches (see
//! `connectors::advisories::ecosystem`). No image is read: `vulnerabilities` (SQL) matches the
//! rows against the inventories already stored.
//!
//! A load takes a JSON file (a record or an array of records), a zip of them (osv.dev's
//! per-ecosystem `all.zip`) or a folder of either. Every document is parsed before anything is
//! written, and a document or record that cannot be used fails the load, naming the file (and
//! the zip entry) and the record: nothing is half-loaded. Loading again replaces a record whose
//! `modified` time is newer than the stored one's and leaves the others as they are; a
//! withdrawn record is kept with its `withdrawn` time, which `vulnerabilities` honours.
//!
//! The new rows of a load are appended before the rows they replace are deleted, so that a
//! question asked meanwhile sees a record twice rather than not at all; a crash between the two
//! commits leaves the old rows, which the next load (or the same one again) removes.

use crate::catalog::AdvisoryRow;
use crate::{Error, IoContext, Library, Result};
use imagelake_connectors::advisories::{self, Advisory, ecosystem, ranges::Range};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a load did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LoadSummary {
    /// JSON documents read (files, and zip entries).
    pub documents: usize,
    /// Records read.
    pub records: usize,
    /// Records that name no package of a distribution imagelake matches (other ecosystems).
    pub ignored: usize,
    /// Records stored for the first time.
    pub added: usize,
    /// Records whose newer `modified` replaced the stored one.
    pub replaced: usize,
    /// Records stored already as they are (same or older `modified`).
    pub unchanged: usize,
    /// Of the records added or replaced, those withdrawn.
    pub withdrawn: usize,
    /// Rows written (one per record and affected package).
    pub rows: usize,
    pub seconds: f64,
}

/// The most documents of one load (osv.dev's largest ecosystem holds about 60,000 records).
const MAX_DOCUMENTS: usize = 1_000_000;

impl Library {
    /// Loads the OSV records at `path` (see the module's docs).
    pub async fn load_advisories(&self, path: &Path) -> Result<LoadSummary> {
        let started = Instant::now();
        let mut summary = LoadSummary::default();
        let path = path.to_path_buf();
        let documents = tokio::task::spawn_blocking(move || read_documents(&path))
            .await
            .map_err(crate::task_failed("reading advisories"))??;
        summary.documents = documents.len();
        // The newest of each id, of the distributions matched.
        let mut newest: BTreeMap<String, (i64, Advisory)> = BTreeMap::new();
        for (name, bytes) in &documents {
            let records = advisories::parse_document(bytes).map_err(|e| Error::User(format!("{name}: {e}")))?;
            for record in records {
                summary.records += 1;
                if !record.affected.iter().any(|a| ecosystem::of_ecosystem(&a.ecosystem).is_some()) {
                    summary.ignored += 1;
                    continue;
                }
                let modified = timestamp(&record.modified).ok_or_else(|| {
                    Error::User(format!("{name}: record {}: modified is not an RFC 3339 time", record.id))
                })?;
                if newest.get(&record.id).is_none_or(|(m, _)| *m < modified) {
                    newest.insert(record.id.clone(), (modified, record));
                }
            }
        }
        drop(documents);

        let _writing = self.writing().await?;
        let _lock = self.lock()?;
        let stored = self.catalog().stored_advisories().await?;
        let load = crate::now_ns();
        let (mut rows, mut changed) = (Vec::new(), Vec::new());
        // Ids whose older rows a crashed load left beside the newest, by the newest's load.
        let mut stale: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for (id, had) in &stored {
            if had.stale {
                stale.entry(had.load).or_default().push(id.clone());
            }
        }
        for (id, (modified, record)) in &newest {
            match stored.get(id) {
                Some(had) if had.modified >= *modified => {
                    summary.unchanged += 1;
                    continue;
                }
                Some(_) => summary.replaced += 1,
                None => summary.added += 1,
            }
            if record.withdrawn.is_some() {
                summary.withdrawn += 1;
            }
            changed.push(id.clone());
            rows.extend(advisory_rows(record, *modified, load));
        }
        summary.rows = rows.len();
        self.catalog().append(&rows).await?;
        self.catalog().delete_replaced_advisories(&changed, load).await?;
        let changed: std::collections::HashSet<String> = changed.into_iter().collect();
        for (kept, ids) in stale {
            let ids: Vec<String> = ids.into_iter().filter(|id| !changed.contains(id)).collect();
            self.catalog().delete_replaced_advisories(&ids, kept).await?;
        }
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }
}

/// The rows of one record: one per affected package of a matched distribution.
fn advisory_rows(record: &Advisory, modified: i64, load: i64) -> Vec<AdvisoryRow> {
    record
        .affected
        .iter()
        .filter_map(|affected| {
            let release = ecosystem::of_ecosystem(&affected.ecosystem)?;
            let severity = affected.severity.as_ref().or(record.severity.as_ref());
            Some(AdvisoryRow {
                id: record.id.clone(),
                modified,
                published: record.published.as_deref().and_then(timestamp),
                withdrawn: record.withdrawn.as_deref().and_then(timestamp),
                aliases: record.aliases.clone(),
                summary: record.summary.clone(),
                severity: severity.map(|s| s.label.clone()),
                cvss_score: severity.and_then(|s| s.score),
                cvss_vector: severity.and_then(|s| s.vector.clone()),
                ecosystem: affected.ecosystem.clone(),
                os: release.os.to_string(),
                release: release.release,
                manager: release.manager.to_string(),
                by_source: release.by_source,
                package: affected.package.clone(),
                purl: affected.purl.clone(),
                ranges: Range::to_json(&affected.ranges),
                versions: affected.versions.clone(),
                load,
            })
        })
        .collect()
}

/// An RFC 3339 time as nanoseconds since the epoch.
fn timestamp(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text).ok()?.timestamp_nanos_opt()
}

/// The JSON documents at `path`, each with the name errors give it: a file, a zip's entries
/// (`all.zip:DSA-1-1.json`), or a folder's files and zips, in name order.
fn read_documents(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    if path.is_dir() {
        walk(path, &mut files)?;
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut documents = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let is_zip = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip"));
        if is_zip {
            read_zip(&file, &name, &mut documents)?;
        } else {
            let size = std::fs::metadata(&file).io_context(|| format!("reading {name}"))?.len();
            if size > advisories::MAX_DOCUMENT as u64 {
                return Err(Error::User(format!("{name}: {size} bytes, more than an advisory document may hold")));
            }
            documents.push((name.clone(), std::fs::read(&file).io_context(|| format!("reading {name}"))?));
        }
        if documents.len() > MAX_DOCUMENTS {
            return Err(Error::User(format!("{}: more than {MAX_DOCUMENTS} documents", path.display())));
        }
    }
    Ok(documents)
}

/// The `.json` and `.zip` files under `dir` (links to folders not followed).
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).io_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.io_context(|| format!("reading {}", dir.display()))?;
        let kind = entry.file_type().io_context(|| format!("reading {}", entry.path().display()))?;
        let path = entry.path();
        if kind.is_dir() {
            walk(&path, files)?;
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json") || e.eq_ignore_ascii_case("zip")) {
            files.push(path);
        }
    }
    Ok(())
}

/// The `.json` entries of a zip, each read to at most `MAX_DOCUMENT` bytes whatever its
/// header claims.
fn read_zip(file: &Path, name: &str, documents: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let opened = std::fs::File::open(file).io_context(|| format!("reading {name}"))?;
    let bad = |e: String| Error::User(format!("{name}: not a zip archive imagelake can read: {e}"));
    let mut archive = zip::ZipArchive::new(opened).map_err(|e| bad(e.to_string()))?;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
        let entry_name = entry.name().map_err(|e| bad(e.to_string()))?.to_string();
        if !entry.is_file() || !entry_name.to_ascii_lowercase().ends_with(".json") {
            continue;
        }
        let entry_name = format!("{name}:{entry_name}");
        let mut bytes = Vec::new();
        let limit = advisories::MAX_DOCUMENT as u64 + 1;
        (&mut entry).take(limit).read_to_end(&mut bytes).map_err(|e| Error::User(format!("{entry_name}: {e}")))?;
        if bytes.len() > advisories::MAX_DOCUMENT {
            return Err(Error::User(format!("{entry_name}: more than an advisory document may hold")));
        }
        documents.push((entry_name, bytes));
        if documents.len() > MAX_DOCUMENTS {
            return Err(Error::User(format!("{name}: more than {MAX_DOCUMENTS} documents")));
        }
    }
    Ok(())
}
