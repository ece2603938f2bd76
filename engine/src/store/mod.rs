//! The content-addressed store: chunks named by their blake3 hash, gathered into zstd frames
//! in immutable pack files. See `FORMAT.md` beside this file for the bytes on disk.
//!
//! Writers ([`PackWriter`]) gather chunks into frames, append the compressed frames to a pack
//! in a temporary file and publish it at once when it is complete (a rename in a folder, one
//! PUT on a bucket: see `packs.rs`), so a reader never sees a partial pack. Readers ([`ChunkReader`]) decompress a frame once for all its chunks. The catalog's
//! `chunks` table is the index (hash -> pack, offset); every pack also carries its own index
//! in its trailer, so the table can be rebuilt from the packs alone.

mod chunker;
mod pack;
mod packs;
mod reader;

pub use chunker::{CHUNK_MAX, Chunker};
pub use pack::{ChunkLocation, CompressedFrame, Compression, Frame, PackReader, PackWriter, StoredChunk, frame_share};
pub use packs::{Packs, pack_key, pack_path};
pub use reader::{Chunk, ChunkReader};

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
