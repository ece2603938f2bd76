//! Rebuilding the `chunks` table from the packs' own indexes (as restic's `repair index`):
//! every pack carries, in its trailer, each chunk's place in it, so a `chunks` table that lost
//! rows (a damaged or deleted table, a restore that missed it) is made whole again from the
//! packs alone. Rows are only added, never changed or deleted: a chunk the table already
//! knows keeps its row.

use crate::catalog::ChunkRow;
use crate::store::{ChunkHash, ChunkLocation, PackReader, StoredChunk, frame_share};
use crate::{Library, Result};
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RebuildSummary {
    /// Packs whose index was read (retired packs are left out: their chunks live elsewhere).
    pub packs: usize,
    /// Chunks the packs' indexes list.
    pub chunks_listed: usize,
    /// Rows added for chunks the table did not know.
    pub rows_added: usize,
    /// Packs whose index could not be read, with why (`verify` reads their chunks one by one).
    pub unreadable: Vec<String>,
    pub seconds: f64,
}

impl Library {
    /// Adds a `chunks` row for every chunk a pack's index lists and the table lacks.
    pub async fn rebuild_chunks(&self) -> Result<RebuildSummary> {
        let started = Instant::now();
        // No repack or gc moves chunks, and no checkin adds rows, meanwhile.
        let _maintaining = self.maintaining().await?;
        let known = self.catalog().chunk_hashes().await?;
        let retired: HashSet<String> = self.retired()?.into_iter().collect();
        let ids = self.pack_ids()?;
        let packs = self.packs().clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut summary = RebuildSummary::default();
            let mut missing: Vec<StoredChunk> = Vec::new();
            let mut added: HashSet<ChunkHash> = HashSet::new();
            for id in ids.iter().filter(|id| !retired.contains(*id)) {
                let index = match PackReader::open(&packs, id).and_then(|p| p.index()) {
                    Ok(index) => index,
                    Err(e) => {
                        summary.unreadable.push(e.to_string());
                        continue;
                    }
                };
                summary.packs += 1;
                summary.chunks_listed += index.len();
                missing.extend(
                    stored_chunks(&index).into_iter().filter(|c| !known.contains(&c.hash) && added.insert(c.hash)),
                );
            }
            (summary, missing)
        });
        let (mut summary, missing) = read.await.map_err(crate::task_failed("reading the packs' indexes"))?;
        let rows: Vec<ChunkRow> = missing.iter().map(ChunkRow::from).collect();
        summary.rows_added = rows.len();
        if !rows.is_empty() {
            self.catalog().append(&rows).await?;
            let _lock = self.lock()?;
            self.catalog().maintain(crate::catalog::Maintenance::AFTER_CHECKIN).await?;
        }
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }
}

/// The chunks of one pack's index, each with its share of its frame's stored bytes (the
/// frame's size in proportion to the chunk's part of the frame's raw bytes, as a checkin
/// records it).
fn stored_chunks(index: &[(ChunkHash, ChunkLocation)]) -> Vec<StoredChunk> {
    let mut raw: BTreeMap<u64, u64> = BTreeMap::new();
    for (_, at) in index {
        *raw.entry(at.offset).or_default() += u64::from(at.size);
    }
    (index.iter())
        .map(|(hash, at)| {
            let frame_raw = raw.get(&at.offset).copied().unwrap_or(0);
            StoredChunk {
                hash: *hash,
                location: at.clone(),
                stored_size: frame_share(at.frame_size, at.size, frame_raw),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_shared_by_its_chunks_raw_bytes() {
        let at = |offset: u64, frame_size: u32, size: u32| ChunkLocation {
            pack: "p".into(),
            offset,
            frame_size,
            frame_offset: 0,
            size,
        };
        let check = |index: Vec<(ChunkHash, ChunkLocation)>, expected: Vec<u32>| {
            let shares: Vec<u32> = stored_chunks(&index).iter().map(|c| c.stored_size).collect();
            assert_eq!(shares, expected);
        };
        check(vec![], vec![]);
        check(vec![([1; 32], at(16, 100, 400))], vec![100]);
        check(vec![([1; 32], at(16, 100, 300)), ([2; 32], at(16, 100, 100))], vec![75, 25]);
        check(vec![([1; 32], at(16, 100, 300)), ([2; 32], at(116, 40, 100))], vec![100, 40]);
    }
}
