//! Extents kept compressed, as btrfs writes them: a zlib stream, a zstd frame, or lzo in
//! btrfs's own framing (a total length, then one segment per sector of output, each with its
//! length, no segment header straddling a sector).
//!
//! A stream that ends before the extent's decoded length is followed by zeros, and one that
//! runs past it is cut, as the kernel reads them. Input is untrusted: nothing here decodes
//! more than the extent's decoded length, which callers bound by [`MAX_DECODED`].

use crate::bytes::le32;
use crate::fs::Compression;
use std::io::Read;

/// The most a compressed btrfs extent decodes to (`BTRFS_MAX_UNCOMPRESSED`).
pub const MAX_DECODED: u64 = 128 << 10;
/// The largest zstd window btrfs writes (`ZSTD_BTRFS_MAX_WINDOWLOG`); a frame asking for
/// more is refused rather than given the memory.
const ZSTD_WINDOW_LOG: u32 = 17;
/// The bytes of an lzo length field.
const LZO_LEN: usize = 4;

/// The `decoded_len` bytes that `stored` decodes to; `sector` is the filesystem's sector size,
/// which frames lzo segments. Errors say what is wrong with the stream.
pub fn decode(compression: Compression, stored: &[u8], decoded_len: usize, sector: usize) -> Result<Vec<u8>, String> {
    let mut out = match compression {
        Compression::Zlib => read_up_to(flate2::read::ZlibDecoder::new(stored), decoded_len, "zlib")?,
        Compression::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(stored).map_err(|e| format!("zstd: {e}"))?.single_frame();
            decoder.window_log_max(ZSTD_WINDOW_LOG).map_err(|e| format!("zstd: {e}"))?;
            read_up_to(decoder, decoded_len, "zstd")?
        }
        Compression::Lzo => lzo_segments(stored, decoded_len, sector)?,
    };
    out.resize(decoded_len, 0);
    Ok(out)
}

/// At most `len` bytes from a decoder; an error of the stream is the stream's.
fn read_up_to(decoder: impl Read, len: usize, name: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(len);
    decoder.take(len as u64).read_to_end(&mut out).map_err(|e| format!("{name}: {e}"))?;
    Ok(out)
}

/// btrfs's lzo framing: the total stored length, then segments of a length and that many bytes
/// of LZO1X, each decoding to at most one sector; a segment's length field never straddles a
/// sector, so fewer than four bytes left in one are padding.
fn lzo_segments(stored: &[u8], decoded_len: usize, sector: usize) -> Result<Vec<u8>, String> {
    let total = le32(stored, 0) as usize;
    if total < LZO_LEN || total > stored.len() {
        return Err(format!("lzo: a total length of {total} in {} stored bytes", stored.len()));
    }
    let sector = sector.max(LZO_LEN);
    let mut out = Vec::with_capacity(decoded_len);
    let mut at = LZO_LEN;
    while out.len() < decoded_len && at < total {
        let left_in_sector = sector - at % sector;
        if left_in_sector < LZO_LEN {
            at += left_in_sector;
            continue;
        }
        let len = le32(stored, at) as usize;
        at += LZO_LEN;
        let segment = at
            .checked_add(len)
            .filter(|&end| end <= total)
            .and_then(|end| stored.get(at..end))
            .ok_or_else(|| format!("lzo: a segment of {len} bytes at {at} passes the total length {total}"))?;
        let mut piece = vec![0; sector];
        let n = lzo::decompress_into(segment, &mut piece).map_err(|e| format!("lzo: segment at {at}: {e}"))?;
        let n = n.min(decoded_len - out.len());
        out.extend_from_slice(piece.get(..n).unwrap_or_default());
        at += len;
    }
    Ok(out)
}
