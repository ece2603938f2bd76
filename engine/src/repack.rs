//! Repack rewrites settled packs harder, and prune deletes what no reader needs any more.
//!
//! Checkin compresses fast (zstd 3, 4 MiB frames) so that it keeps up with reading the image.
//! `repack` later copies every chunk of packs written at a lower level into new packs of
//! 32 MiB frames at level 19, each chunk once (copies left by concurrent checkins are
//! dropped). It never changes what a chunk is, only where it lives, so it runs while queries,
//! checkouts and checkins go on:
//!
//! 1. the new packs are published, and their `chunks` rows appended: from here every moved
//!    chunk has two rows, and readers may use either;
//! 2. the old packs are listed in `retired`, then their rows are deleted;
//! 3. `prune`, once no reader holds the `readers` lock, deletes the retired packs that no row
//!    points into, and the catalog files that newer table versions superseded.
//!
//! A crash anywhere leaves every chunk readable: at worst published packs nobody refers to,
//! or a `retired` list that the next prune works through.

use crate::catalog::ChunkRow;
use crate::store::{ChunkHash, ChunkLocation, ChunkReader, Compression, Frame, PackReader, PackWriter};
use crate::{Error, IoContext, Library, Progress, PruneSummary, Result, now_ns};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

#[derive(Clone, Default)]
pub struct RepackOptions {
    pub progress: Option<Arc<dyn Progress>>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RepackSummary {
    /// Packs rewritten, and their bytes on disk.
    pub packs_read: usize,
    pub bytes_before: u64,
    /// Packs written, and their bytes on disk.
    pub packs_written: usize,
    pub bytes_after: u64,
    pub chunks: usize,
    /// Second copies of chunks (stored by two concurrent checkins) left behind.
    pub duplicates_dropped: usize,
    pub prune: PruneSummary,
    pub seconds: f64,
}

impl Library {
    /// Rewrites every pack written below [`Compression::REPACK`]'s level, then prunes.
    pub async fn repack(&self, options: RepackOptions) -> Result<RepackSummary> {
        let started = Instant::now();
        let _only = self.only_repack()?;
        let reading = self.reading()?;
        let rows = self.catalog().chunk_rows().await?;
        let mut packs: BTreeMap<String, (i32, std::time::SystemTime, u64)> = BTreeMap::new();
        for (_, at) in &rows {
            if packs.contains_key(&at.pack) {
                continue;
            }
            let reader = PackReader::open(self.packs(), &at.pack).io_context(|| "opening a pack".into())?;
            let level = reader.level().io_context(|| format!("reading pack {}", at.pack))?;
            let (size, written) = self.packs().stat(&at.pack).io_context(|| format!("pack {}", at.pack))?;
            packs.insert(at.pack.clone(), (level, written, size));
        }
        let settled: BTreeSet<&String> =
            packs.iter().filter(|(_, p)| p.0 < Compression::REPACK.level).map(|(id, _)| id).collect();
        // Each chunk once; one that also lives in a pack that stays is not moved.
        let staying: HashSet<ChunkHash> =
            rows.iter().filter(|(_, at)| !settled.contains(&at.pack)).map(|(h, _)| *h).collect();
        let mut chosen = HashSet::new();
        let mut moving: Vec<(ChunkHash, ChunkLocation)> = Vec::new();
        let mut in_settled = 0;
        for (hash, at) in &rows {
            if settled.contains(&at.pack) {
                in_settled += 1;
                if !staying.contains(hash) && chosen.insert(*hash) {
                    moving.push((*hash, at.clone()));
                }
            }
        }
        // Oldest pack first and in file order: the order checkins wrote, which keeps the
        // chunks of one file (and of similar images) next to each other.
        moving.sort_by_key(|(_, at)| (packs[&at.pack].1, at.pack.clone(), at.offset, at.frame_offset));
        let mut summary = RepackSummary {
            packs_read: settled.len(),
            bytes_before: settled.iter().map(|id| packs[*id].2).sum(),
            chunks: moving.len(),
            duplicates_dropped: in_settled - moving.len(),
            ..RepackSummary::default()
        };
        if let Some(p) = &options.progress {
            p.phase("repacking", moving.iter().map(|(_, at)| u64::from(at.size)).sum());
        }

        if !settled.is_empty() {
            let library = self.clone();
            let progress = options.progress.clone();
            let written =
                tokio::task::spawn_blocking(move || copy(&library, &moving, Compression::REPACK, progress.as_deref()))
                    .await
                    .map_err(crate::task_failed("repacking"))??;
            let new_packs: BTreeSet<&str> = written.iter().map(|c| c.location.pack.as_str()).collect();
            summary.packs_written = new_packs.len();
            summary.bytes_after = new_packs.iter().map(|id| self.packs().size(id).unwrap_or(0)).sum();
            // New rows first: a chunk always has a row that leads to it.
            let rows: Vec<ChunkRow> = written.iter().map(ChunkRow::from).collect();
            self.catalog().append(&rows).await?;
            let ids: Vec<&str> = settled.iter().map(|s| s.as_str()).collect();
            self.retire_packs(&ids).await?;
        }
        drop(reading);
        {
            // Every table in one fragment where it can be: fewer, larger files read faster
            // and take less room.
            let _lock = self.lock()?;
            self.catalog().maintain(crate::catalog::Maintenance::FULL).await?;
        }
        summary.prune = self.prune().await?;
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }
}

/// Copies `moving` into new packs: one thread reads (each old frame decompressed once), the
/// others compress full frames as they come. At most one frame waits between them, so memory
/// stays at a few frames however large the store.
pub(crate) fn copy(
    library: &Library,
    moving: &[(ChunkHash, ChunkLocation)],
    compression: Compression,
    progress: Option<&dyn Progress>,
) -> Result<Vec<crate::store::StoredChunk>> {
    let reader = ChunkReader::new(library.packs());
    let seed = format!("repack/{}/{}", std::process::id(), now_ns());
    let writer = Mutex::new(PackWriter::new(library.packs(), library.tmp(), seed, compression));
    let (frames, waiting) = mpsc::sync_channel::<Frame>(1);
    let waiting = Mutex::new(waiting);
    let poisoned = || Error::User("a repack worker failed".into());
    let compressors = rayon::current_num_threads().max(1);
    let (read, compressed) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..compressors)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut failed = Ok(());
                    // After a failure, keep taking frames (and dropping them) so that the
                    // reader never waits on a full channel.
                    while let Ok(frame) = waiting.lock().map_err(|_| poisoned())?.recv() {
                        if failed.is_ok() {
                            failed = frame
                                .compress()
                                .and_then(|c| writer.lock().map_err(|_| std::io::Error::other("writer"))?.write(c))
                                .io_context(|| format!("writing packs of {}", library.location()));
                        }
                    }
                    failed
                })
            })
            .collect();
        let read = (|| -> Result<()> {
            for (hash, at) in moving {
                let data = reader.read(hash, at).io_context(|| "reading the store".into())?;
                let full = writer.lock().map_err(|_| poisoned())?.add(*hash, &data);
                if let Some(frame) = full
                    && frames.send(frame).is_err()
                {
                    break;
                }
                if let Some(p) = progress {
                    p.advance(u64::from(at.size));
                }
            }
            Ok(())
        })();
        drop(frames);
        let compressed: Result<()> = workers.into_iter().try_for_each(|w| w.join().map_err(|_| poisoned())?);
        (read, compressed)
    });
    read?;
    compressed?;
    let writer = writer.into_inner().map_err(|_| poisoned())?;
    writer.finish().io_context(|| format!("writing packs of {}", library.location()))
}
