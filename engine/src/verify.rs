//! Verification: the store and the catalog prove their bytes. `check` trusts that a chunk is
//! what the catalog says once its pack is long enough; `verify` reads every chunk back (of the
//! whole library, or of the chunks one image uses), decompresses it and checks its blake3
//! hash, and holds each pack's own index (its trailer, from which the catalog can be rebuilt)
//! against the catalog's rows. A damaged chunk is reported with the images and files that use
//! it, so that the user knows what to re-check-in. The catalog's files are hashed again
//! against the checksums recorded when they were written (`catalog/integrity.rs`).

use crate::catalog::{CatalogProof, ExtentKind};
use crate::store::{ChunkHash, ChunkLocation, PackReader, Packs, hex, parse_hex};
use crate::{Error, Library, Result};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// The images whose chunks were read (`name@version`), in id order.
    pub images: Vec<String>,
    pub chunks: usize,
    pub packs: usize,
    /// Compressed bytes read from the packs.
    pub bytes_read: u64,
    pub damaged: Vec<DamagedChunk>,
    /// Packs damaged as a whole: their own index (the trailer that lets the catalog be
    /// rebuilt) unreadable, or, when the whole library is verified, their bytes not the ones
    /// their trailer's blake3 was made of (packs of format 3).
    pub damaged_packs: Vec<String>,
    /// The catalog's files, hashed again (all of them, whichever images were asked for: each
    /// holds rows of many).
    pub catalog: CatalogProof,
    /// Why the store was not read back, when the catalog's damage kept it from being read.
    pub store_unread: Option<String>,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.damaged.is_empty() && self.damaged_packs.is_empty() && self.catalog.damaged.is_empty()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedChunk {
    pub chunk: String,
    /// Where the catalog says it is (none for a chunk the catalog does not know).
    pub pack: Option<String>,
    pub offset: Option<u64>,
    pub reason: String,
    pub used_by: Vec<ChunkUse>,
}

/// One image's use of a damaged chunk: the file whose bytes it holds, or the part of the disk
/// (filesystem metadata, a raw partition) when it holds no file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ChunkUse {
    pub image: String,
    pub path: Option<String>,
    pub disk_offset: i64,
    pub kind: ExtentKind,
}

impl Library {
    /// Reads back every chunk of the library, or of image version `spec` only.
    pub async fn verify(&self, spec: Option<&str>) -> Result<VerifyReport> {
        let _reading = self.reading()?;
        // First, since every answer below comes from the catalog; a damaged catalog may leave
        // the store unreadable, which is then said rather than raised.
        let catalog = self.catalog().prove().await?;
        let mut report = VerifyReport { catalog, ..VerifyReport::default() };
        match crate::unless_panicked("reading the catalog", self.verify_store(spec, &mut report)).await {
            Err(e) if !report.catalog.damaged.is_empty() => report.store_unread = Some(e.to_string()),
            done => done?,
        }
        Ok(report)
    }

    async fn verify_store(&self, spec: Option<&str>, report: &mut VerifyReport) -> Result<()> {
        let mut images = self.images().await?;
        images.sort_by_key(|i| i.image_id);
        let mut damaged: BTreeMap<ChunkHash, (Option<ChunkLocation>, String)> = BTreeMap::new();
        let chunks = match spec {
            None => self.catalog().chunk_rows().await?.into_iter().collect::<HashMap<_, _>>(),
            Some(spec) => {
                let image = self.resolve(spec).await?;
                images.retain(|i| i.image_id == image.image_id);
                let mut used = BTreeSet::new();
                for e in self.catalog().disk_map(image.image_id, false).await? {
                    let Some(text) = e.chunk_hash else { continue };
                    let hash = parse_hex(&text).ok_or_else(|| {
                        Error::Catalog(format!("{spec}: extent at {} names chunk {text:?}", e.disk_offset))
                    })?;
                    used.insert(hash);
                }
                let used: Vec<ChunkHash> = used.into_iter().collect();
                let found = self.catalog().chunk_locations(&used).await?;
                for hash in used.iter().filter(|h| !found.contains_key(*h)) {
                    damaged.insert(*hash, (None, "is in no pack: the catalog has no row for it".into()));
                }
                found
            }
        };
        report.images = images.iter().map(|i| format!("{}@{}", i.name, i.version)).collect();
        report.chunks = chunks.len();

        let mut by_pack: BTreeMap<String, Vec<(ChunkHash, ChunkLocation)>> = BTreeMap::new();
        for (hash, at) in &chunks {
            by_pack.entry(at.pack.clone()).or_default().push((*hash, at.clone()));
        }
        if spec.is_none() {
            // Packs no row points into are proved whole too (`check --rebuild-chunks` reads
            // them), but retired ones, which wait to be deleted.
            let retired: BTreeSet<String> = self.retired()?.into_iter().collect();
            for id in self.pack_ids()?.into_iter().filter(|id| !retired.contains(id)) {
                by_pack.entry(id).or_default();
            }
        }
        report.packs = by_pack.len();
        let packs = self.packs().clone();
        // The whole of every pack when the whole library is verified (an image's verify reads
        // only the frames it uses).
        let whole = spec.is_none();
        let results: Vec<PackResult> = tokio::task::spawn_blocking(move || {
            by_pack.into_par_iter().map(|(pack, mut wanted)| verify_pack(&packs, &pack, &mut wanted, whole)).collect()
        })
        .await
        .map_err(crate::task_failed("verifying"))?;
        for result in results {
            report.bytes_read += result.bytes;
            report.damaged_packs.extend(result.index_damage);
            for (hash, reason) in result.damaged {
                damaged.insert(hash, (chunks.get(&hash).cloned(), reason));
            }
        }

        let mut uses = self.chunk_uses(damaged.keys().copied().collect(), &images).await?;
        report.damaged = damaged
            .into_iter()
            .map(|(hash, (at, reason))| DamagedChunk {
                chunk: hex(&hash),
                pack: at.as_ref().map(|a| a.pack.clone()),
                offset: at.as_ref().map(|a| a.offset),
                reason,
                used_by: uses.remove(&hash).unwrap_or_default(),
            })
            .collect();
        Ok(())
    }

    /// Which of `images` use the given chunks, and for what.
    async fn chunk_uses(
        &self,
        hashes: Vec<ChunkHash>,
        images: &[crate::catalog::ImageRow],
    ) -> Result<HashMap<ChunkHash, Vec<ChunkUse>>> {
        let names: HashMap<i64, String> =
            images.iter().map(|i| (i.image_id, format!("{}@{}", i.name, i.version))).collect();
        // (image, content hash) -> the uses waiting for a path.
        let mut by_content: HashMap<(i64, String), Vec<(ChunkHash, usize)>> = HashMap::new();
        let mut uses: HashMap<ChunkHash, Vec<ChunkUse>> = HashMap::new();
        for e in self.catalog().extents_in_chunks(&hashes).await? {
            let (Some(image), Some(hash)) = (names.get(&e.image_id), e.chunk_hash.as_deref().and_then(parse_hex))
            else {
                continue;
            };
            let list = uses.entry(hash).or_default();
            list.push(ChunkUse { image: image.clone(), path: None, disk_offset: e.disk_offset, kind: e.kind });
            if let Some(content) = e.content_hash {
                by_content.entry((e.image_id, content)).or_default().push((hash, list.len() - 1));
            }
        }
        let contents: Vec<String> =
            by_content.keys().map(|(_, c)| c.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        for file in self.catalog().files_with_contents(&contents).await? {
            let Some(content) = file.content_hash else { continue };
            let Some(waiting) = by_content.get(&(file.image_id, content)) else { continue };
            for (hash, i) in waiting {
                if let Some(u) = uses.get_mut(hash).and_then(|l| l.get_mut(*i)) {
                    // Hard links share a content: the first path names it.
                    u.path.get_or_insert_with(|| file.path.clone());
                }
            }
        }
        for list in uses.values_mut() {
            list.sort();
            list.dedup();
        }
        Ok(uses)
    }
}

/// What reading one pack back found.
#[derive(Default)]
struct PackResult {
    bytes: u64,
    damaged: Vec<(ChunkHash, String)>,
    index_damage: Vec<String>,
}

/// Reads every wanted chunk of one pack in file order, each frame once, and with `whole` the
/// whole pack against its trailer's blake3.
fn verify_pack(packs: &Packs, pack: &str, wanted: &mut [(ChunkHash, ChunkLocation)], whole: bool) -> PackResult {
    let all = |reason: String| PackResult {
        damaged: wanted.iter().map(|(h, _)| (*h, reason.clone())).collect(),
        ..PackResult::default()
    };
    let reader = match PackReader::open(packs, pack) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return all(format!("pack {pack} is missing")),
        Err(e) => return all(format!("pack {pack} cannot be opened: {e}")),
    };
    // The pack's own index must list each chunk where the catalog says it is; a pack whose
    // trailer is gone (truncated) still has its chunks read one by one.
    let mut result = PackResult::default();
    let index: Option<HashMap<ChunkHash, ChunkLocation>> = match reader.index() {
        Ok(entries) => Some(entries.into_iter().collect()),
        Err(e) => {
            result.index_damage.push(e.to_string());
            None
        }
    };
    if whole && index.is_some() {
        match reader.prove_whole() {
            Ok(None) => {}
            Ok(Some(why)) => result.index_damage.push(why),
            Err(e) => result.index_damage.push(format!("pack {pack} cannot be read whole: {e}")),
        }
    }
    let length = reader.file_len().unwrap_or(0);
    wanted.sort_by_key(|(_, at)| (at.offset, at.frame_offset));
    let bad = &mut result.damaged;
    // The frame last read: (offset, its bytes or what is wrong with them).
    let mut frame: Option<(u64, Result<Vec<u8>, String>)> = None;
    for (hash, at) in wanted.iter() {
        let end = at.offset.saturating_add(u64::from(at.frame_size));
        if end > length {
            bad.push((*hash, format!("lies past the end of pack {pack} ({length} bytes): the pack is truncated")));
            continue;
        }
        if let Some(index) = &index
            && index.get(hash) != Some(at)
        {
            bad.push((*hash, format!("the catalog and pack {pack}'s own index disagree on where it is")));
            continue;
        }
        if frame.as_ref().is_none_or(|(offset, _)| *offset != at.offset) {
            match reader.read_frame(at.offset, at.frame_size) {
                Ok(data) => frame = Some((at.offset, data)),
                Err(e) => {
                    bad.push((*hash, format!("cannot be read from pack {pack}: {e}")));
                    frame = None;
                    continue;
                }
            }
            result.bytes += u64::from(at.frame_size);
        }
        let Some((_, data)) = &frame else { continue };
        let checked = data.as_ref().map_err(String::clone).and_then(|d| PackReader::chunk_of(d, hash, at));
        if let Err(why) = checked {
            bad.push((*hash, format!("{why} (pack {pack}, frame at offset {})", at.offset)));
        }
    }
    result
}
