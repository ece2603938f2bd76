//! Retiring packs and pruning what no reader needs any more.
//!
//! A pack a repack or gc has emptied is first *retired*: listed in `retired` (durably; on a
//! bucket, one object `retired/<id>` per pack), then
//! its `chunks` rows are deleted, once whatever it held that is still needed has rows in other
//! packs. `prune` deletes, when no reader holds the `readers` flock, the retired packs no row
//! points into and the catalog files of superseded Lance table versions. Checkin, repack, gc
//! and `check --reclaim` prune.

use crate::locks;
use crate::storage::Storage;
use crate::{Error, IoContext, Library, Result};
use std::fs::{self, File};
use std::io::Write;

/// The list of retired packs, in the library's folder; on a bucket, the prefix of their objects.
const RETIRED: &str = "retired";

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneSummary {
    /// Retired packs deleted, and their bytes.
    pub packs_deleted: usize,
    pub pack_bytes_freed: u64,
    /// Superseded catalog files deleted.
    pub catalog_bytes_freed: u64,
    /// True when a reader held on, so nothing was deleted: the next prune (after a checkin,
    /// a repack or `check --reclaim`) does it.
    pub readers_in_flight: bool,
}

impl Library {
    /// Every pack's id.
    pub(crate) fn pack_ids(&self) -> Result<Vec<String>> {
        self.packs().ids().io_context(|| format!("listing the packs of {}", self.location()))
    }

    /// The bytes of every pack.
    pub(crate) fn pack_bytes(&self) -> Result<u64> {
        Ok(self.pack_ids()?.iter().filter_map(|id| self.packs().size(id).ok()).sum())
    }

    /// Deletes, if no reader holds the `readers` lock, the retired packs no `chunks` row
    /// points into, and the catalog files of superseded table versions.
    pub async fn prune(&self) -> Result<PruneSummary> {
        let Some(_no_readers) = locks::no_readers(self.home())? else {
            return Ok(PruneSummary { readers_in_flight: true, ..PruneSummary::default() });
        };
        let mut summary = PruneSummary::default();
        {
            // The list is read and rewritten under the library lock, so that a repack's
            // additions are never lost.
            let _lock = self.lock()?;
            let listed = self.retired()?;
            if !listed.is_empty() {
                let referenced = self.catalog().packs_in_use(&listed).await?;
                for id in listed.iter().filter(|id| !referenced.contains(*id)) {
                    let name = || self.packs().name(id);
                    match self.packs().size(id) {
                        Ok(size) => {
                            self.packs().remove(id).io_context(|| format!("removing {}", name()))?;
                            summary.packs_deleted += 1;
                            summary.pack_bytes_freed += size;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::Io { context: format!("reading {}", name()), error: e }),
                    }
                }
                let left: Vec<&String> = listed.iter().filter(|id| referenced.contains(*id)).collect();
                match self.home() {
                    Storage::Folder(root) => write_list(&root.join(RETIRED), &left)?,
                    Storage::Bucket(bucket) => {
                        for id in listed.iter().filter(|id| !referenced.contains(*id)) {
                            let key = format!("{RETIRED}/{id}");
                            bucket.remove(&key).io_context(|| format!("removing {}", bucket.url(&key)))?;
                        }
                    }
                }
            }
        }
        summary.catalog_bytes_freed = self.catalog().cleanup().await?;
        Ok(summary)
    }

    /// Retires packs: lists them in `retired` (durably), then deletes their rows. Whatever
    /// they held that is still needed must have rows in other packs first.
    pub(crate) async fn retire_packs(&self, ids: &[&str]) -> Result<()> {
        self.retire(ids)?;
        self.catalog().delete_pack_rows(ids).await
    }

    /// Adds packs to the `retired` list (durably, before their rows go).
    fn retire(&self, ids: &[&str]) -> Result<()> {
        let root = match self.home() {
            Storage::Folder(root) => root,
            Storage::Bucket(bucket) => {
                for id in ids {
                    let key = format!("{RETIRED}/{id}");
                    bucket.put(&key, Vec::new()).io_context(|| format!("writing {}", bucket.url(&key)))?;
                }
                return Ok(());
            }
        };
        let _lock = self.lock()?;
        let path = root.join(RETIRED);
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .io_context(|| format!("opening {}", path.display()))?;
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .io_context(|| format!("writing {}", path.display()))
    }

    /// The packs listed as retired.
    pub(crate) fn retired(&self) -> Result<Vec<String>> {
        let root = match self.home() {
            Storage::Folder(root) => root,
            Storage::Bucket(bucket) => {
                let listed = bucket.list(RETIRED).io_context(|| format!("listing {}", bucket.url(RETIRED)))?;
                let prefix = format!("{RETIRED}/");
                return Ok(listed.into_iter().filter_map(|o| Some(o.key.strip_prefix(&prefix)?.to_string())).collect());
            }
        };
        let path = root.join(RETIRED);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::Io { context: format!("reading {}", path.display()), error: e }),
        }
    }
}

/// Rewrites (replaces, or removes when empty) the retired list.
fn write_list(path: &std::path::Path, ids: &[&String]) -> Result<()> {
    if ids.is_empty() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::Io { context: format!("removing {}", path.display()), error: e })
            }
            _ => Ok(()),
        };
    }
    let tmp = path.with_extension("tmp");
    let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
    fs::write(&tmp, text).io_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).io_context(|| format!("renaming {}", tmp.display()))
}
