//! Checkout: a version's disk rebuilt from its extents and the store.
//!
//! The output is written to `OUT.partial` and renamed over `OUT` when complete, so a failed
//! checkout never leaves a half-written image under the requested name. Zero extents are
//! never written (the file is sparse there); chunks are read, decompressed and checked
//! against their hash in parallel batches, and written in disk order.

use crate::catalog::{ChunkRow, ExtentKind, ExtentRow, Table};
use crate::store::{ChunkHash, ChunkLocation, PackReader, parse_hex};
use crate::{Error, IoContext, Library, Result};
use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use rayon::prelude::*;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckoutSummary {
    pub image_id: i64,
    pub name: String,
    pub version: i64,
    pub output: PathBuf,
    pub virtual_size: u64,
    pub bytes_written: u64,
    pub bytes_zero: u64,
    pub seconds: f64,
}

/// Extents handled per parallel batch: bounds memory to about this many chunks.
const BATCH: usize = 256;

impl Library {
    /// Writes the raw disk of image version `spec` to `out`.
    pub async fn checkout(&self, spec: &str, out: &Path) -> Result<CheckoutSummary> {
        let started = Instant::now();
        let image = self.resolve(spec).await?;
        let extents = self.extents(image.image_id).await?;
        let locations = self.chunk_locations().await?;
        let (root, out_path, size) = (self.root().to_path_buf(), out.to_path_buf(), image.virtual_size as u64);
        let (written, zero) =
            tokio::task::spawn_blocking(move || write_disk(&root, &out_path, size, &extents, &locations))
                .await
                .map_err(|e| Error::User(format!("checkout failed: {e}")))??;
        Ok(CheckoutSummary {
            image_id: image.image_id,
            name: image.name,
            version: image.version,
            output: out.to_path_buf(),
            virtual_size: size,
            bytes_written: written,
            bytes_zero: zero,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The disk map of one image, in disk order.
    pub async fn extents(&self, image_id: i64) -> Result<Vec<ExtentRow>> {
        let columns = ["disk_offset", "length", "kind", "chunk_hash", "chunk_offset"];
        let filter = format!("image_id = {image_id}");
        let batches = self.catalog().scan(ExtentRow::NAME, &columns, Some(&filter)).await?;
        let mut extents = Vec::new();
        for b in &batches {
            let (off, len) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_primitive::<Int64Type>());
            let (kind, chunk) = (b.column(2).as_string::<i32>(), b.column(3).as_string::<i32>());
            let chunk_off = b.column(4).as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                let kind = ExtentKind::parse(kind.value(r)).ok_or_else(|| {
                    Error::Catalog(format!("extents of image {image_id}: unknown kind {:?}", kind.value(r)))
                })?;
                extents.push(ExtentRow {
                    image_id,
                    disk_offset: off.value(r),
                    length: len.value(r),
                    kind,
                    chunk_hash: chunk.is_valid(r).then(|| chunk.value(r).to_string()),
                    chunk_offset: chunk_off.value(r),
                    content_hash: None,
                    content_offset: None,
                });
            }
        }
        extents.sort_by_key(|e| e.disk_offset);
        Ok(extents)
    }

    /// Where every chunk of the store lives.
    pub async fn chunk_locations(&self) -> Result<HashMap<ChunkHash, ChunkLocation>> {
        let columns = ["chunk_hash", "size", "stored_size", "pack", "pack_offset"];
        let batches = self.catalog().scan(ChunkRow::NAME, &columns, None).await?;
        let mut map = HashMap::new();
        add_locations(&batches, &mut map);
        Ok(map)
    }
}

/// Adds the rows of a `chunks` scan (chunk_hash, size, stored_size, pack, pack_offset) to `map`.
pub(crate) fn add_locations(batches: &[arrow::array::RecordBatch], map: &mut HashMap<ChunkHash, ChunkLocation>) {
    for b in batches {
        let hash = b.column(0).as_string::<i32>();
        let (size, stored) = (b.column(1).as_primitive::<Int64Type>(), b.column(2).as_primitive::<Int64Type>());
        let (pack, offset) = (b.column(3).as_string::<i32>(), b.column(4).as_primitive::<Int64Type>());
        for r in 0..b.num_rows() {
            let Some(h) = parse_hex(hash.value(r)) else { continue };
            map.insert(
                h,
                ChunkLocation {
                    pack: pack.value(r).to_string(),
                    offset: offset.value(r) as u64,
                    stored_size: stored.value(r) as u32,
                    size: size.value(r) as u32,
                },
            );
        }
    }
}

fn write_disk(
    root: &Path,
    out: &Path,
    size: u64,
    extents: &[ExtentRow],
    locations: &HashMap<ChunkHash, ChunkLocation>,
) -> Result<(u64, u64)> {
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    let file = File::create(&partial).io_context(|| format!("creating {}", partial.display()))?;
    file.set_len(size).io_context(|| format!("sizing {}", partial.display()))?;
    let mut packs: HashMap<String, PackReader> = HashMap::new();
    let (mut written, mut zero) = (0u64, 0u64);
    for batch in extents.chunks(BATCH) {
        // Read every distinct chunk of the batch in parallel.
        let mut wanted: HashMap<ChunkHash, &ChunkLocation> = HashMap::new();
        for e in batch.iter().filter(|e| e.kind != ExtentKind::Zero) {
            let hash = e
                .chunk_hash
                .as_deref()
                .and_then(parse_hex)
                .ok_or_else(|| Error::Catalog(format!("extent at {} has no valid chunk hash", e.disk_offset)))?;
            let at = locations
                .get(&hash)
                .ok_or_else(|| Error::Catalog(format!("chunk {} is in no pack", crate::store::hex(&hash))))?;
            wanted.insert(hash, at);
        }
        for at in wanted.values() {
            if !packs.contains_key(&at.pack) {
                let reader = PackReader::open(root, &at.pack).io_context(|| "opening pack".into())?;
                packs.insert(at.pack.clone(), reader);
            }
        }
        let chunks: HashMap<ChunkHash, Vec<u8>> = wanted
            .par_iter()
            .map(|(hash, at)| {
                let pack = &packs[&at.pack];
                pack.read(hash, at).map(|data| (*hash, data)).io_context(|| "reading the store".into())
            })
            .collect::<Result<_>>()?;
        for e in batch {
            if e.kind == ExtentKind::Zero {
                zero += e.length as u64;
                continue;
            }
            let data = e.chunk_hash.as_deref().and_then(parse_hex).and_then(|h| chunks.get(&h));
            let piece = data
                .and_then(|d| d.get(e.chunk_offset as usize..(e.chunk_offset + e.length) as usize))
                .ok_or_else(|| Error::Catalog(format!("extent at {} reaches past its chunk", e.disk_offset)))?;
            file.write_all_at(piece, e.disk_offset as u64).io_context(|| format!("writing {}", partial.display()))?;
            written += piece.len() as u64;
        }
    }
    file.sync_all().io_context(|| format!("syncing {}", partial.display()))?;
    std::fs::rename(&partial, out).io_context(|| format!("renaming {} to {}", partial.display(), out.display()))?;
    Ok((written, zero))
}
