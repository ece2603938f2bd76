//! Consistency of a library, and reclaiming what crashed operations left behind.
//!
//! `check` reads the catalog and the pack folder and reports every broken invariant: a
//! committed version whose extents do not tile its disk, an extent whose chunk is in no pack,
//! a chunk whose pack is missing or too short, two versions with one name and number, a
//! catalog file a table's newest version uses that is missing, unrecorded or of another size
//! than it was written with (`verify` reads the files and the packs through). It also
//! lists leftovers, which are harmless (readers never see them) but take space: rows of image
//! ids that never committed, segments no version lists, files in `tmp/` that no running
//! process holds, and on a bucket the leases whose holders died.
//! `reclaim` deletes the leftovers; it holds the library lock, and skips every checkin still in
//! flight, so it is safe while other checkins run.

use crate::catalog::{ExtentKind, ImageState};
use crate::locks::{InFlight, held};
use crate::{IoContext, Library, Result};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Tables whose rows belong to an image version.
const IMAGE_TABLES: [&str; 5] = ["partitions", "files", "packages", "extents", "provenance"];

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CheckReport {
    pub images: usize,
    pub chunks: usize,
    pub packs: usize,
    /// Broken invariants: each one is damage.
    pub problems: Vec<String>,
    /// Image ids with rows but no committed version, and no checkin in flight.
    pub orphan_image_ids: Vec<i64>,
    /// Files in `tmp/` that no running process holds.
    pub stale_files: Vec<String>,
    /// On a bucket: the leases (keys under `leases/`) whose term ran out unrenewed.
    pub dead_leases: Vec<String>,
    /// Stored segments of `files` and `extents` that no version lists (left by a crashed
    /// checkin or a gc that stopped half way).
    pub unused_segments: usize,
    /// Catalog files a table's newest version uses that have no checksum: their writer died
    /// between its commit and its record (`reclaim` records them, as the table's next commit
    /// would).
    pub unrecorded_catalog_files: Vec<String>,
    /// What `reclaim`'s prune deleted: packs a repack retired, superseded catalog files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<crate::PruneSummary>,
}

impl Library {
    /// Checks the library's invariants and lists its leftovers.
    pub async fn check(&self) -> Result<CheckReport> {
        let _reading = self.reading()?;
        // The catalog's own files first: if one is damaged, the questions below may fail, and
        // that is then said rather than raised.
        let (catalog, unrecorded_catalog_files) = self.catalog().check_files().await?;
        let mut report = CheckReport { unrecorded_catalog_files, ..CheckReport::default() };
        let checked = crate::unless_panicked("reading the catalog", self.check_rows(&mut report)).await;
        let damaged = !catalog.is_empty();
        report.problems.extend(catalog);
        match checked {
            Err(e) if damaged => report.problems.push(format!("the rest was not checked: {e}")),
            done => done?,
        }
        Ok(report)
    }

    /// `check` of the rows: versions, chunks and packs, extents, leftovers.
    async fn check_rows(&self, report: &mut CheckReport) -> Result<()> {
        let images = self.images().await?;
        let committed: HashSet<i64> = images.iter().map(|i| i.image_id).collect();
        report.images = images.len();

        let mut seen = HashSet::new();
        for i in &images {
            if !seen.insert((i.name.clone(), i.version)) {
                report.problems.push(format!("{}@{} is committed twice", i.name, i.version));
            }
        }

        let chunks = self.catalog().chunk_rows().await?.into_iter().collect::<HashMap<_, _>>();
        report.chunks = chunks.len();
        let mut pack_sizes: HashMap<String, Option<u64>> = HashMap::new();
        for (hash, at) in &chunks {
            let size = *pack_sizes.entry(at.pack.clone()).or_insert_with(|| self.packs().size(&at.pack).ok());
            match size {
                None => report.problems.push(format!(
                    "chunk {} is in pack {}, which is missing",
                    crate::store::hex(hash),
                    at.pack
                )),
                Some(len) if at.offset.saturating_add(u64::from(at.frame_size)) > len => report.problems.push(format!(
                    "chunk {} lies past the end of pack {} ({len} bytes)",
                    crate::store::hex(hash),
                    at.pack
                )),
                Some(_) => {}
            }
        }
        report.packs = pack_sizes.len();

        // Extents: per committed image, a tiling of its disk by chunks that exist.
        // Synthetic versions (benchmark data made of manifests) have no disk to tile, nor have
        // versions gc purged.
        let sizes: HashMap<i64, i64> = images
            .iter()
            .filter(|i| !matches!(i.state, ImageState::Synthetic | ImageState::Purged))
            .map(|i| (i.image_id, i.virtual_size))
            .collect();
        let mut extents: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for e in self.catalog().all_extents().await? {
            if !committed.contains(&e.image_id) {
                continue;
            }
            extents.entry(e.image_id).or_default().push((e.disk_offset, e.length));
            if e.kind != ExtentKind::Zero {
                let known =
                    e.chunk_hash.as_deref().and_then(crate::store::parse_hex).is_some_and(|h| chunks.contains_key(&h));
                if !known {
                    report.problems.push(format!(
                        "image {}: extent at {} names a chunk that is in no pack",
                        e.image_id, e.disk_offset
                    ));
                }
            }
        }
        for (id, size) in &sizes {
            let mut runs = extents.remove(id).unwrap_or_default();
            runs.sort_unstable();
            let mut at = 0;
            for (off, len) in runs {
                if off != at {
                    report.problems.push(format!("image {id}: its extents break at byte {at}"));
                    break;
                }
                at = off + len;
            }
            if at != *size {
                report.problems.push(format!("image {id}: its extents cover {at} of {size} bytes"));
            }
        }

        // Every segment a version lists, stored whole.
        let listed: HashSet<i64> =
            images.iter().filter(|i| i.state != ImageState::Purged).map(|i| i.image_id).collect();
        let (broken, unused) = self.catalog().check_segments(&listed).await?;
        let names: HashMap<i64, String> =
            images.iter().map(|i| (i.image_id, format!("{}@{}", i.name, i.version))).collect();
        for b in broken {
            report.problems.push(format!(
                "{}: segment {} of its {} holds {} of its {} rows",
                names.get(&b.image_id).cloned().unwrap_or_else(|| format!("image {}", b.image_id)),
                b.segment,
                b.manifest,
                b.found,
                b.expected
            ));
        }
        report.unused_segments = unused;

        report.orphan_image_ids = self.orphan_image_ids(&committed).await?.into_iter().collect();
        report.stale_files = self.stale_files()?;
        report.dead_leases = crate::locks::dead_leases(self.home())?;
        Ok(())
    }

    /// Deletes the leftovers of crashed operations; returns what it found and deleted.
    pub async fn reclaim(&self) -> Result<CheckReport> {
        let mut report = self.reclaim_leftovers().await?;
        report.pruned = Some(self.prune().await?);
        Ok(report)
    }

    pub(crate) async fn reclaim_leftovers(&self) -> Result<CheckReport> {
        let _lock = self.lock()?;
        // Under the lock no version commits, so `committed` cannot go stale.
        let committed: HashSet<i64> = self.images().await?.iter().map(|i| i.image_id).collect();
        let orphans = self.orphan_image_ids(&committed).await?;
        let ids: Vec<i64> = orphans.iter().copied().collect();
        for table in IMAGE_TABLES {
            self.catalog().delete_versions(table, &ids).await?;
        }
        let unused_segments = self.catalog().drop_unused_segments().await?;
        let stale = self.stale_files()?;
        for name in &stale {
            let path = self.tmp().join(name);
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.io_context(|| format!("removing {}", path.display()))?;
        }
        let (_, unrecorded_catalog_files) = self.catalog().check_files().await?;
        self.catalog().record_all().await?;
        let dead_leases = crate::locks::end_all_dead_leases(self.home())?;
        Ok(CheckReport {
            unrecorded_catalog_files,
            dead_leases,
            orphan_image_ids: orphans.into_iter().collect(),
            stale_files: stale,
            unused_segments,
            ..CheckReport::default()
        })
    }

    /// Ids with rows in some image table, not committed, and with no checkin in flight.
    async fn orphan_image_ids(&self, committed: &HashSet<i64>) -> Result<BTreeSet<i64>> {
        let mut ids = BTreeSet::new();
        for table in IMAGE_TABLES {
            ids.extend(self.catalog().image_ids(table).await?.into_iter().filter(|id| !committed.contains(id)));
        }
        let candidates: Vec<i64> = ids.iter().copied().collect();
        let in_flight = InFlight::held(self.home(), self.tmp(), &candidates)?;
        ids.retain(|id| !in_flight.contains(id));
        Ok(ids)
    }

    /// Files in `tmp/` that no process holds: unpublished packs, scratch conversions and
    /// in-flight markers of crashed checkins.
    fn stale_files(&self) -> Result<Vec<String>> {
        let tmp = self.tmp();
        let mut stale = Vec::new();
        for entry in std::fs::read_dir(tmp).io_context(|| format!("reading {}", tmp.display()))? {
            let entry = entry.io_context(|| format!("reading {}", tmp.display()))?;
            if !held(&entry.path()) {
                stale.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        stale.sort();
        Ok(stale)
    }
}
