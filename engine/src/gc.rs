//! Deleting versions, and collecting what no version needs.
//!
//! `delete` hides a version: its `images.state` becomes `deleted`, names and SQL no longer see
//! it, and `undelete` brings it back. `gc` makes deletion final and frees the space:
//! 1. with the `writers` flock held exclusively, so that no checkin, edit or clone is between
//!    reading which chunks exist and committing rows that use them (they hold it shared, and
//!    gc waits for them; new ones wait for gc): leftovers of crashed operations are reclaimed,
//!    deleted versions become `purged` (their `images` row stays, for history) and their rows
//!    go, and with them the segments of `files` and `extents` no remaining version lists;
//! 2. every chunk that no remaining `extents` row uses is dead. A pack holding only dead
//!    chunks, or no chunk any row names (left by a killed repack or a refused edit), is
//!    retired; a pack that is at least `REWRITE_DEAD` dead has its live chunks copied into new
//!    packs first, then is retired; rows follow the order of `repack` (new rows, retired list,
//!    old rows deleted);
//! 3. `prune` deletes the retired packs once no reader holds the `readers` flock.

use crate::catalog::{ChunkRow, ImageRow, ImageState, ProvenanceRow};
use crate::store::{ChunkHash, ChunkLocation, Compression};
use crate::{Error, Library, PruneSummary, Result};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

/// The share of a pack's stored bytes that must be dead before gc rewrites it (below it, the
/// dead chunks stay until a later gc or repack: rewriting costs more than it frees).
const REWRITE_DEAD: f64 = 0.25;

/// Tables whose rows describe a version's disk (provenance stays, for history).
const VERSION_TABLES: [&str; 4] = ["partitions", "files", "packages", "extents"];

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcSummary {
    /// Deleted versions whose rows were removed, as `name@version`.
    pub purged: Vec<String>,
    /// Segments of `files` and `extents` that no version lists any more, deleted.
    pub segments_dropped: usize,
    /// Chunks no version uses any more.
    pub chunks_freed: u64,
    pub packs_retired: usize,
    pub packs_rewritten: usize,
    /// Bytes of packs before and after (after once `prune` has run).
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
    pub bytes_freed: i64,
    pub prune: PruneSummary,
    pub seconds: f64,
}

impl Library {
    /// Hides a version until `undelete` (or for good, at the next `gc`).
    pub async fn delete(&self, spec: &str) -> Result<ImageRow> {
        let image = self.resolve(spec).await?;
        self.set_state(&image, ImageState::Deleted, "delete").await
    }

    /// Brings back a version `delete` hid, if `gc` has not purged it.
    pub async fn undelete(&self, spec: &str) -> Result<ImageRow> {
        let image = self.resolve_any(spec).await?;
        match image.state {
            ImageState::Deleted => self.set_state(&image, ImageState::Active, "undelete").await,
            ImageState::Purged => {
                Err(Error::User(format!("{}@{} was purged by gc: it cannot be restored", image.name, image.version)))
            }
            _ => Err(Error::User(format!("{}@{} is not deleted", image.name, image.version))),
        }
    }

    async fn set_state(&self, image: &ImageRow, state: ImageState, operation: &str) -> Result<ImageRow> {
        let label = format!("{}@{}", image.name, image.version);
        let _lock = self.lock()?;
        self.catalog().set_state(image.image_id, state, &label).await?;
        let row = ProvenanceRow {
            image_id: image.image_id,
            parent_id: None,
            operation: operation.into(),
            arguments: serde_json::json!({ "image": label }).to_string(),
            actor: crate::library::actor(),
            at: crate::now_ns(),
        };
        self.catalog().append(&[row]).await?;
        Ok(ImageRow { state, ..image.clone() })
    }

    /// Purges deleted versions and frees the chunks no remaining version uses (see the module
    /// docs). Safe while checkins, edits and readers run.
    pub async fn gc(&self) -> Result<GcSummary> {
        let started = Instant::now();
        let (_only, writers) = self.maintaining().await?;
        let mut summary = GcSummary { pack_bytes_before: self.pack_bytes()?, ..GcSummary::default() };
        self.reclaim_leftovers().await?;

        // Deleted versions become purged first, then lose their rows: a crash in between
        // leaves purged versions whose rows the next gc removes.
        let images = self.images().await?;
        for image in images.iter().filter(|i| i.state == ImageState::Deleted) {
            self.set_state(image, ImageState::Purged, "gc").await?;
            summary.purged.push(format!("{}@{}", image.name, image.version));
        }
        let purged: Vec<i64> = images.iter().filter(|i| i.state.is_hidden()).map(|i| i.image_id).collect();
        for table in VERSION_TABLES {
            self.catalog().delete_versions(table, &purged).await?;
        }
        // A segment lives while any version lists it.
        summary.segments_dropped = self.catalog().drop_unused_segments().await?;

        // Live: what the extents of the remaining versions use.
        let live = self.catalog().used_chunks().await?;
        let rows = self.catalog().chunk_rows().await?;
        let Choice { mut retire, rewrite, moving, chunks_freed } = choose(&rows, &live, &self.pack_ids()?);
        summary.chunks_freed = chunks_freed;
        if !moving.is_empty() {
            let library = self.clone();
            let reading = self.reading()?;
            let written =
                tokio::task::spawn_blocking(move || crate::repack::copy(&library, &moving, Compression::CHECKIN, None))
                    .await
                    .map_err(crate::task_failed("gc, copying live chunks"))??;
            drop(reading);
            let rows: Vec<ChunkRow> = written.iter().map(ChunkRow::from).collect();
            self.catalog().append(&rows).await?;
        }
        summary.packs_rewritten = rewrite.len();
        retire.extend(rewrite);
        summary.packs_retired = retire.len();
        if !retire.is_empty() {
            let ids: Vec<&str> = retire.iter().map(String::as_str).collect();
            self.retire_packs(&ids).await?;
        }
        drop(writers);
        {
            let _lock = self.lock()?;
            self.catalog().maintain(crate::catalog::Maintenance::AFTER_CHECKIN).await?;
        }
        summary.prune = self.prune().await?;
        summary.pack_bytes_after = self.pack_bytes()?;
        summary.bytes_freed = summary.pack_bytes_before as i64 - summary.pack_bytes_after as i64;
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }
}

/// The packs gc frees, and how (see the module docs).
#[derive(Debug)]
struct Choice {
    /// Packs retired as they are: no live chunk, or no row at all.
    retire: BTreeSet<String>,
    /// Packs at least `REWRITE_DEAD` dead: retired once their live chunks moved.
    rewrite: BTreeSet<String>,
    /// The live chunks of rewritten packs no kept pack holds, each once, in store order.
    moving: Vec<(ChunkHash, ChunkLocation)>,
    /// Chunks no version uses any more.
    chunks_freed: u64,
}

/// Chooses, from the `chunks` rows, the `live` chunks (those the remaining versions' extents
/// use) and the ids of the pack files there are, what gc retires and rewrites.
fn choose(rows: &[(ChunkHash, ChunkLocation)], live: &HashSet<ChunkHash>, pack_files: &[String]) -> Choice {
    // Per pack: (live stored bytes, all stored bytes), by the rows' frame shares.
    let mut packs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut dead_chunks = HashSet::new();
    for (hash, at) in rows {
        let share = u64::from(at.size);
        let entry = packs.entry(at.pack.clone()).or_default();
        entry.1 += share;
        if live.contains(hash) {
            entry.0 += share;
        } else {
            dead_chunks.insert(*hash);
        }
    }
    let mut retire: BTreeSet<String> = packs.iter().filter(|(_, (l, _))| *l == 0).map(|(id, _)| id.clone()).collect();
    // Pack files no row names at all.
    retire.extend(pack_files.iter().filter(|id| !packs.contains_key(*id)).cloned());
    let rewrite: BTreeSet<String> = packs
        .iter()
        .filter(|(_, (l, all))| *l > 0 && (*all - *l) as f64 >= REWRITE_DEAD * *all as f64)
        .map(|(id, _)| id.clone())
        .collect();
    // Live chunks of rewritten packs move, each once, unless a kept pack has them too.
    let kept: HashSet<ChunkHash> = rows
        .iter()
        .filter(|(_, at)| !rewrite.contains(&at.pack) && !retire.contains(&at.pack))
        .map(|(h, _)| *h)
        .collect();
    let mut moving: Vec<(ChunkHash, ChunkLocation)> = Vec::new();
    let mut chosen = HashSet::new();
    for (hash, at) in rows {
        if rewrite.contains(&at.pack) && live.contains(hash) && !kept.contains(hash) && chosen.insert(*hash) {
            moving.push((*hash, at.clone()));
        }
    }
    moving.sort_by(|a, b| (&a.1.pack, a.1.offset, a.1.frame_offset).cmp(&(&b.1.pack, b.1.offset, b.1.frame_offset)));
    Choice { retire, rewrite, moving, chunks_freed: dead_chunks.len() as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `choose` over `rows` (`"<chunk> <pack>@<offset> <stored bytes>"`, the chunk a
    /// number), the `live` chunks and the pack files there are, and compares what it chose
    /// with `expect`, line by line: `retire`, `rewrite`, `moving` (`<chunk> <pack>@<offset>`)
    /// and `freed`.
    fn check(rows: &[&str], live: &[u8], pack_files: &[&str], expect: &str) {
        let hash = |n: u8| -> ChunkHash { [n; 32] };
        let rows: Vec<(ChunkHash, ChunkLocation)> = rows
            .iter()
            .map(|row| {
                let parse = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("{row:?}: {s:?} is not a number"));
                let [chunk, at, size] = row.split(' ').collect::<Vec<_>>()[..] else { panic!("{row:?}") };
                let (pack, offset) = at.split_once('@').unwrap_or_else(|| panic!("{row:?}"));
                let location = ChunkLocation {
                    pack: pack.to_string(),
                    offset: parse(offset),
                    frame_size: 0,
                    frame_offset: 0,
                    size: parse(size) as u32,
                };
                (hash(parse(chunk) as u8), location)
            })
            .collect();
        let live: HashSet<ChunkHash> = live.iter().map(|n| hash(*n)).collect();
        let pack_files: Vec<String> = pack_files.iter().map(|p| p.to_string()).collect();
        let Choice { retire, rewrite, moving, chunks_freed } = choose(&rows, &live, &pack_files);
        let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(" ");
        let moving: Vec<String> = moving.iter().map(|(h, at)| format!("{} {}@{}", h[0], at.pack, at.offset)).collect();
        let got = format!(
            "retire: {}\nrewrite: {}\nmoving: {}\nfreed: {chunks_freed}",
            list(&retire),
            list(&rewrite),
            moving.join(", ")
        );
        let got: Vec<&str> = got.lines().map(str::trim_end).collect();
        let expect: Vec<&str> = expect.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        assert_eq!(got, expect, "\n{}", got.join("\n"));
    }

    #[test]
    fn nothing_to_do_without_dead_chunks() {
        check(&[], &[], &[], "retire:\nrewrite:\nmoving:\nfreed: 0");
        check(
            &["1 a@0 100", "2 a@100 100"],
            &[1, 2],
            &["a"],
            "
            retire:
            rewrite:
            moving:
            freed: 0",
        );
    }

    #[test]
    fn a_wholly_dead_pack_is_retired() {
        check(
            &["1 a@0 100", "2 a@100 100", "3 b@0 100"],
            &[3],
            &["a", "b"],
            "
            retire: a
            rewrite:
            moving:
            freed: 2",
        );
    }

    #[test]
    fn a_pack_no_row_names_is_retired() {
        check(
            &["1 a@0 100"],
            &[1],
            &["a", "left-by-a-killed-repack"],
            "
            retire: left-by-a-killed-repack
            rewrite:
            moving:
            freed: 0",
        );
    }

    #[test]
    fn a_mostly_dead_pack_is_rewritten_and_its_live_chunks_move() {
        check(
            &["1 a@0 100", "2 a@100 300", "3 a@400 100"],
            &[1, 3],
            &["a"],
            "
            retire:
            rewrite: a
            moving: 1 a@0, 3 a@400
            freed: 1",
        );
    }

    #[test]
    fn a_little_dead_pack_is_kept() {
        check(
            &["1 a@0 301", "2 a@301 100"],
            &[1],
            &["a"],
            "
            retire:
            rewrite:
            moving:
            freed: 1",
        );
    }

    #[test]
    fn a_quarter_dead_is_rewritten() {
        // By stored bytes, not chunks: 100 of 400 is exactly the quarter.
        check(
            &["1 a@0 300", "2 a@300 100"],
            &[1],
            &["a"],
            "
            retire:
            rewrite: a
            moving: 1 a@0
            freed: 1",
        );
        check(
            &["1 a@0 100", "2 a@100 100", "3 a@200 100", "4 a@300 100"],
            &[1, 2, 3],
            &["a"],
            "
            retire:
            rewrite: a
            moving: 1 a@0, 2 a@100, 3 a@200
            freed: 1",
        );
        check(
            &["1 a@0 100", "2 a@100 100", "3 a@200 100", "4 a@300 99"],
            &[1, 2, 3],
            &["a"],
            "
            retire:
            rewrite:
            moving:
            freed: 1",
        );
    }

    #[test]
    fn a_live_chunk_a_kept_pack_holds_does_not_move() {
        check(
            &["1 a@0 100", "1 b@0 100", "2 b@100 100", "3 b@200 100"],
            &[1, 3],
            &["a", "b"],
            "
            retire:
            rewrite: b
            moving: 3 b@200
            freed: 1",
        );
    }

    #[test]
    fn a_live_chunk_of_two_rewritten_packs_moves_once() {
        check(
            &["1 b@0 100", "2 b@100 100", "1 a@0 100", "3 a@100 100"],
            &[1],
            &["a", "b"],
            "
            retire:
            rewrite: a b
            moving: 1 b@0
            freed: 2",
        );
    }

    #[test]
    fn moving_chunks_go_in_store_order() {
        check(
            &["4 b@300 10", "3 a@900 10", "2 b@0 10", "1 a@100 10", "9 a@0 30", "9 b@10 30"],
            &[1, 2, 3, 4],
            &["a", "b"],
            "
            retire:
            rewrite: a b
            moving: 1 a@100, 3 a@900, 2 b@0, 4 b@300
            freed: 1",
        );
    }
}
