//! The catalog proves its files: which files a table version is made of, recording their
//! checksums after each commit (`checksums.rs` keeps them), and hashing them again for
//! `verify`.
//!
//! A file is recorded once a commit that uses it has returned, so every file a committed
//! version uses is complete when hashed, and files being written by another process (not yet
//! committed) are never recorded half-written. The short gap between a commit and its record
//! is why [`Catalog::prove`] waits a little for the sums of a live file before calling it
//! unrecorded.

use super::checksums::{self, Sum};
use super::{Catalog, DATASETS};
use crate::storage::Storage;
use crate::{Error, IoContext, Result};
use lance::Dataset;
use lance::dataset::builder::DatasetBuilder;
use lance::index::DatasetIndexExt;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// How long `prove` waits for a writer that has committed to record its files.
const RECORD_GRACE: Duration = Duration::from_secs(10);

/// What hashing the catalog's files again found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CatalogProof {
    /// Catalog files hashed, and their bytes.
    pub files: usize,
    pub bytes: u64,
    pub damaged: Vec<DamagedCatalogFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct DamagedCatalogFile {
    /// The file, under the library's `catalog/` folder.
    pub file: String,
    /// The table it belongs to (none for the checksums themselves).
    pub table: Option<String>,
    /// What the file holds for its table.
    pub held: String,
    pub reason: String,
}

/// The files a table version uses, under the catalog folder, each with what it holds.
async fn version_files(files: &Storage, table: &str, dataset: &Dataset) -> Result<BTreeMap<String, String>> {
    let version = dataset.version().version;
    let base = format!("{table}.lance");
    let storage = files;
    let mut files = BTreeMap::new();
    let manifest = dataset.manifest_location().path.filename().unwrap_or_default().to_string();
    files.insert(format!("{base}/_versions/{manifest}"), format!("the manifest of table version {version}"));
    if let Some(transaction) = &dataset.manifest().transaction_file {
        files.insert(format!("{base}/_transactions/{transaction}"), format!("the commit of table version {version}"));
    }
    for fragment in dataset.manifest().fragments.iter() {
        let id = fragment.id;
        let rows = fragment.physical_rows.map(|n| format!(", {n} rows")).unwrap_or_default();
        let data = fragment.files.iter().chain(fragment.overlays.iter().map(|o| &o.data_file));
        for file in data {
            files.insert(format!("{base}/data/{}", file.path), format!("rows of fragment {id}{rows}"));
        }
        if let Some(deleted) = &fragment.deletion_file {
            let name = format!("{id}-{}-{}.{}", deleted.read_version, deleted.id, deleted.file_type.suffix());
            files.insert(format!("{base}/_deletions/{name}"), format!("the deleted rows of fragment {id}"));
        }
    }
    let err = |e: lance::Error| Error::Catalog(format!("reading the indexes of {table}: {e}"));
    for index in dataset.load_indices().await.map_err(err)?.iter() {
        let folder = format!("{base}/_indices/{}", index.uuid);
        let held = format!("a segment of index {}", index.name);
        match &index.files {
            Some(list) => {
                for file in list {
                    files.insert(format!("{folder}/{}", file.path), held.clone());
                }
            }
            // Lance lists an index's files from some version on; before it, the folder is.
            None => {
                let listed = storage.list(&folder).io_context(|| format!("listing {}", storage.name(&folder)))?;
                for object in listed {
                    files.insert(object.key, held.clone());
                }
            }
        }
    }
    Ok(files)
}

impl Catalog {
    /// Records the checksums of the files of `dataset`'s version not recorded yet. Called
    /// after every commit, with the dataset the commit returned.
    pub(super) async fn record(&self, table: &str, dataset: &Dataset) -> Result<()> {
        let mut files = version_files(&self.files, table, dataset).await?;
        let (storage, table, version) = (self.files.clone(), table.to_string(), dataset.version().version);
        // On a bucket, reading every version's checksums at each commit would cost a request
        // per version: the files new in this version are those its predecessor lacks (Lance
        // never writes a name twice). Without the predecessor, every recorded sum is read.
        let mut known = None;
        if self.files.folder().is_none()
            && let Some(previous) = version.checked_sub(1).filter(|v| *v > 0)
            && let Ok(previous) = dataset.checkout_version(previous).await
        {
            known = Some(version_files(&self.files, &table, &previous).await?);
        }
        tokio::task::spawn_blocking(move || {
            match known {
                Some(known) => files.retain(|f, _| !known.contains_key(f)),
                None => {
                    let recorded = checksums::load(&storage)?;
                    files.retain(|f, _| !recorded.sums.contains_key(f));
                }
            }
            checksums::record(&storage, &table, version, &files.into_keys().collect::<Vec<_>>())
        })
        .await
        .map_err(crate::task_failed("recording catalog checksums"))?
    }

    /// Records the files of every table's newest version that have no checksum (a library from
    /// before checksums, upgraded; files whose writer died between its commit and its record):
    /// what they hold now is taken as true.
    pub(crate) async fn record_all(&self) -> Result<()> {
        for table in DATASETS {
            let dataset = self.dataset(table).await?;
            self.record(table, &dataset).await?;
        }
        Ok(())
    }

    /// Every table's newest version and the files it uses, read afresh (never from the
    /// catalog's cache, so that what is checked is what is on disk now).
    async fn live(&self) -> Live {
        let mut live = Live::default();
        for table in DATASETS {
            // Lance may panic on a damaged manifest rather than refuse it.
            let opened = crate::unless_panicked("opening the table", async {
                // A session of its own (the object stores but none of the caches).
                let session = lance::session::Session::new(0, 0, self.session.store_registry());
                let dataset = DatasetBuilder::from_uri(&self.table_uri(table))
                    .with_session(std::sync::Arc::new(session))
                    .load()
                    .await
                    .map_err(|e| Error::Catalog(e.to_string()))?;
                let files = version_files(&self.files, table, &dataset).await?;
                Ok((dataset.version().version, files))
            })
            .await;
            match opened {
                Ok((version, files)) => {
                    live.versions.insert(table, version);
                    live.files.extend(files.into_iter().map(|(f, held)| (f, (table.to_string(), held))));
                }
                Err(e) => {
                    live.versions.insert(table, 0);
                    live.unopened.push((table, e.to_string()));
                }
            }
        }
        live
    }

    /// Those of `files` that are still missing or have no recorded checksum.
    fn still_unrecorded(&self, mut files: Vec<String>) -> Result<Vec<String>> {
        let recorded = checksums::load(&self.files)?;
        files.retain(|f| !recorded.sums.contains_key(f) || !self.file_exists(f));
        Ok(files)
    }

    /// Whether `file` (under the catalog) is there; one that cannot be looked up is not.
    fn file_exists(&self, file: &str) -> bool {
        matches!(self.files.size(file), Ok(Some(_)))
    }

    /// `check`'s look at the catalog's files, without reading them: every file a newest table
    /// version uses is there, with a recorded checksum and the size it was written with
    /// (`prove` reads them). Returns what is wrong, one line each, and the files that have no
    /// checksum: a writer died between its commit and its record (the next commit to their
    /// table, or `record_all`, records them).
    pub async fn check_files(&self) -> Result<(Vec<String>, Vec<String>)> {
        let Live { files, unopened, .. } = self.live().await;
        let mut problems: Vec<String> =
            unopened.into_iter().map(|(table, why)| format!("catalog table {table} cannot be opened: {why}")).collect();
        let recorded = checksums::load(&self.files)?;
        problems.extend(
            recorded.damaged_lines.iter().map(|(log, n, why)| format!("catalog/{log} line {n} is damaged: {why}")),
        );
        let mut waiting = Vec::new();
        for (file, (table, held)) in &files {
            let (Some(sum), Ok(Some(size))) = (recorded.sums.get(file), self.files.size(file)) else {
                waiting.push(file.clone());
                continue;
            };
            if size != sum.size {
                problems.push(format!(
                    "catalog file {file} (table {table}, {held}) holds {size} bytes, {} when it was written",
                    sum.size
                ));
            }
        }
        let deadline = std::time::Instant::now() + RECORD_GRACE;
        while !waiting.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            waiting = self.still_unrecorded(waiting)?;
        }
        let (unrecorded, missing): (Vec<String>, Vec<String>) =
            waiting.into_iter().partition(|file| self.file_exists(file));
        for file in missing {
            let (table, held) = files.get(&file).cloned().unwrap_or_default();
            problems.push(format!("catalog file {file} (table {table}, {held}) is missing"));
        }
        Ok((problems, unrecorded))
    }

    /// Hashes every catalog file that has a recorded checksum (the newest version of every
    /// table and whatever superseded files are not deleted yet) and checks that every file a
    /// newest version uses has one and is there. The caller holds the readers lock, so that
    /// nothing is deleted meanwhile.
    pub async fn prove(&self) -> Result<CatalogProof> {
        let Live { files: live, versions, unopened } = self.live().await;

        let storage = self.files.clone();
        let (tables_live, opened) = (live.clone(), versions.iter().filter(|(_, v)| **v > 0).map(|(t, _)| *t).collect());
        let hashed = tokio::task::spawn_blocking(move || hash_recorded(&storage, &tables_live, &opened))
            .await
            .map_err(crate::task_failed("hashing the catalog's files"))??;
        let mut proof = CatalogProof { files: hashed.files, bytes: hashed.bytes, ..CatalogProof::default() };
        let mut damaged = hashed.damaged;

        // A file a newest version uses must be there and recorded, and each version hint must
        // name that version or a later one. A writer that has just committed records its files
        // and rewrites its hint a moment later, so what is wrong is looked at again for a
        // while before it is reported.
        let mut waiting: Vec<String> = hashed.unrecorded_live;
        let hints = |versions: &BTreeMap<&str, u64>| -> Vec<DamagedCatalogFile> {
            versions.iter().filter_map(|(table, version)| hint_problem(&self.files, table, *version)).collect()
        };
        let mut wrong_hints = hints(&versions);
        let deadline = std::time::Instant::now() + RECORD_GRACE;
        while !(waiting.is_empty() && wrong_hints.is_empty()) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            waiting = self.still_unrecorded(waiting)?;
            wrong_hints = hints(&versions);
        }
        damaged.extend(wrong_hints);
        let lines_damaged = damaged.iter().any(|d| checksums::is_log(&d.file));
        for file in waiting {
            let (table, held) = live.get(&file).cloned().unwrap_or_default();
            let reason = if !self.file_exists(&file) {
                "is missing"
            } else if lines_damaged {
                "no checksum is recorded for it (its line in checksums may be the damaged one)"
            } else {
                "no checksum is recorded for it: its writer died between its commit and recording it \
                 (`imagelake check --reclaim` records it)"
            };
            damaged.push(DamagedCatalogFile { file, table: Some(table), held, reason: reason.into() });
        }
        // A table that would not open is named by its damaged file when one was found.
        for (table, why) in unopened {
            if !damaged.iter().any(|d| d.table.as_deref() == Some(table)) {
                damaged.push(DamagedCatalogFile {
                    file: format!("{table}.lance"),
                    table: Some(table.to_string()),
                    held: "the table".into(),
                    reason: format!("cannot be opened: {why}"),
                });
            }
        }
        damaged.sort();
        proof.damaged = damaged;
        Ok(proof)
    }
}

/// The newest version of every table: the files they use (file -> (table, what it holds)),
/// each table's version (0 for one that would not open), and why those would not.
#[derive(Default)]
struct Live {
    files: BTreeMap<String, (String, String)>,
    versions: BTreeMap<&'static str, u64>,
    unopened: Vec<(&'static str, String)>,
}

struct Hashed {
    files: usize,
    bytes: u64,
    damaged: Vec<DamagedCatalogFile>,
    /// Files the newest versions use that no line records.
    unrecorded_live: Vec<String>,
}

/// Hashes every recorded file of the catalog, many at once.
fn hash_recorded(files: &Storage, live: &BTreeMap<String, (String, String)>, opened: &HashSet<&str>) -> Result<Hashed> {
    let recorded = checksums::load(files)?;
    let mut damaged: Vec<DamagedCatalogFile> = recorded
        .damaged_lines
        .iter()
        .map(|(log, n, why)| DamagedCatalogFile {
            file: log.clone(),
            table: None,
            held: "the checksums of the catalog's files".into(),
            reason: format!("line {n} is damaged: {why}"),
        })
        .collect();
    let present: Vec<String> = walk(files)?;
    let present_set: HashSet<&String> = present.iter().collect();
    let checked: Vec<(&String, Sum, std::io::Result<Sum>)> = present
        .par_iter()
        .filter_map(|file| recorded.sums.get(file).map(|sum| (file, *sum, Sum::of(files, file))))
        .collect();
    let (mut files, mut bytes) = (0, 0);
    for (file, want, found) in checked {
        let reason = match found {
            Ok(found) if found == want => {
                files += 1;
                bytes += found.size;
                continue;
            }
            Ok(found) if found.size != want.size => {
                format!("holds {} bytes, {} when it was written", found.size, want.size)
            }
            Ok(found) => {
                format!("its blake3 is {}, {} when it was written", &hex_of(&found)[..16], &hex_of(&want)[..16])
            }
            Err(e) => format!("cannot be read: {e}"),
        };
        let (table, held) = match live.get(file) {
            Some((table, held)) => (table.clone(), held.clone()),
            None if opened.contains(table_of(file)) => {
                (table_of(file).to_string(), format!("{} of a superseded table version", kind_of(file)))
            }
            None => (table_of(file).to_string(), kind_of(file).to_string()),
        };
        damaged.push(DamagedCatalogFile { file: file.clone(), table: Some(table), held, reason });
    }
    let unrecorded_live = live
        .keys()
        .filter(|f| !recorded.sums.contains_key(*f) || !present_set.contains(f))
        .filter(|f| !damaged.iter().any(|d| &d.file == *f))
        .cloned()
        .collect();
    Ok(Hashed { files, bytes, damaged, unrecorded_live })
}

fn hex_of(sum: &Sum) -> String {
    crate::store::hex(&sum.hash)
}

/// The table a path under the catalog folder belongs to.
fn table_of(file: &str) -> &str {
    file.split('/').next().and_then(|t| t.strip_suffix(".lance")).unwrap_or(file)
}

/// What a file holds, by its folder.
fn kind_of(file: &str) -> &'static str {
    match file.split('/').nth(1) {
        Some("_versions") => "the manifest",
        Some("_transactions") => "the commit",
        Some("data") => "rows",
        Some("_deletions") => "deleted rows",
        Some("_indices") => "an index segment",
        _ => "a file",
    }
}

/// Every file of the catalog, by its key under it, but the checksums' own files and the
/// version hints (checked by [`hint_problem`]).
fn walk(files: &Storage) -> Result<Vec<String>> {
    let listed = files.list("").io_context(|| format!("listing {}", files.name("")))?;
    Ok(listed
        .into_iter()
        .map(|object| object.key)
        .filter(|key| !checksums::is_log(key) && !key.ends_with("/_versions/latest_version_hint.json"))
        .collect())
}

/// Lance rewrites `_versions/latest_version_hint.json` at every commit, after the manifest:
/// it must name the newest version seen (0 for a table that would not open) or a later one
/// whose manifest exists.
fn hint_problem(files: &Storage, table: &str, version: u64) -> Option<DamagedCatalogFile> {
    let file = format!("{table}.lance/_versions/latest_version_hint.json");
    let damaged = |reason: String| DamagedCatalogFile {
        file: file.clone(),
        table: Some(table.to_string()),
        held: "the hint to the newest table version".into(),
        reason,
    };
    let versions = format!("{table}.lance/_versions");
    let text = match files.read(&file) {
        Ok(Some(text)) => text,
        Ok(None) => return None,
        Err(e) => return Some(damaged(format!("cannot be read: {e}"))),
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Hint {
        version: u64,
    }
    let hinted = match serde_json::from_slice::<Hint>(&text) {
        Ok(hint) => hint.version,
        Err(e) => return Some(damaged(format!("is not the JSON Lance writes: {e}"))),
    };
    let exists = |key: String| matches!(files.size(&key), Ok(Some(_)));
    let has_manifest =
        |v: u64| exists(format!("{versions}/{}.manifest", u64::MAX - v)) || exists(format!("{versions}/{v}.manifest"));
    (hinted < version || !has_manifest(hinted))
        .then(|| damaged(format!("names table version {hinted}; the newest is {version}")))
}
