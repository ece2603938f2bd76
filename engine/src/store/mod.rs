//! The content-addressed store: chunks named by their blake3 hash, zstd-compressed into
//! immutable pack files. See `FORMAT.md` beside this file for the bytes on disk.
//!
//! Writers ([`PackWriter`]) append compressed chunks to a pack in `tmp/` and publish it with
//! one rename when it is complete, so a reader never sees a partial pack. The catalog's
//! `chunks` table is the index (hash -> pack, offset); every pack also carries its own index
//! in its trailer, so the table can be rebuilt from the packs alone.

mod chunker;
mod pack;

pub use chunker::{CHUNK_MAX, Chunker};
pub use pack::{ChunkLocation, PackReader, PackWriter, StoredChunk, pack_path};

/// A chunk's id: blake3 of its uncompressed bytes.
pub type ChunkHash = [u8; 32];

/// Lower-case hex, the form the catalog shows.
pub fn hex(hash: &ChunkHash) -> String {
    blake3::Hash::from_bytes(*hash).to_hex().to_string()
}

/// Parses the catalog's hex form.
pub fn parse_hex(text: &str) -> Option<ChunkHash> {
    blake3::Hash::from_hex(text).ok().map(|h| *h.as_bytes())
}
