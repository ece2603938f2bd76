//! The content-addressed store: chunks named by their blake3 hash, gathered into zstd frames
//! in immutable pack files. See `FORMAT.md` beside this file for the bytes on disk.
//!
//! Writers ([`PackWriter`]) gather chunks into frames, append the compressed frames to a pack
//! in `tmp/` and publish it with one rename when it is complete, so a reader never sees a
//! partial pack. Readers ([`ChunkReader`]) decompress a frame once for all its chunks. The catalog's
//! `chunks` table is the index (hash -> pack, offset); every pack also carries its own index
//! in its trailer, so the table can be rebuilt from the packs alone.

mod chunker;
mod pack;
mod reader;

pub use chunker::{CHUNK_MAX, Chunker};
pub use pack::{
    ChunkLocation, CompressedFrame, Compression, Frame, PackReader, PackWriter, StoredChunk, frame_share, pack_path,
};
pub use reader::{Chunk, ChunkReader};

/// A chunk's id: blake3 of its uncompressed bytes.
pub type ChunkHash = [u8; 32];

/// Lower-case hex, the form the catalog shows.
pub fn hex(hash: &ChunkHash) -> String {
    blake3::Hash::from_bytes(*hash).to_hex().to_string()
}

/// The id of every pack file of the library at `root`.
pub fn pack_ids(root: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut ids = Vec::new();
    for fan in std::fs::read_dir(root.join("packs"))? {
        let fan = fan?;
        if !fan.file_type()?.is_dir() {
            continue;
        }
        for pack in std::fs::read_dir(fan.path())? {
            if let Some(id) = pack?.file_name().to_str().and_then(|n| n.strip_suffix(".pack")) {
                ids.push(id.to_string());
            }
        }
    }
    ids.sort();
    Ok(ids)
}

/// Parses the catalog's hex form.
pub fn parse_hex(text: &str) -> Option<ChunkHash> {
    blake3::Hash::from_hex(text).ok().map(|h| *h.as_bytes())
}
