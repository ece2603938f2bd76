//! Content-defined chunking over a byte stream (FastCDC 2020), with the same cut points
//! whichever way the stream is fed: a cut is accepted only once `CHUNK_MAX` bytes past its
//! start are buffered (or the stream ended), which is all FastCDC ever looks at.

/// Chunk sizes. Small enough that a changed metadata block costs little; large enough that
/// the catalog stays small (a 1 GiB image is ~30k chunks).
pub const CHUNK_MIN: u32 = 8 * 1024;
pub const CHUNK_AVG: u32 = 32 * 1024;
pub const CHUNK_MAX: u32 = 128 * 1024;

/// Buffers a stream and hands out content-defined chunks as `(offset_in_stream, bytes)`.
#[derive(Default)]
pub struct Chunker {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    start: u64,
}

impl Chunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; calls `emit` for every chunk whose cut point is now final.
    pub fn push<E>(&mut self, data: &[u8], emit: &mut impl FnMut(u64, &[u8]) -> Result<(), E>) -> Result<(), E> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 4 * CHUNK_MAX as usize {
            self.cut(false, emit)?;
        }
        Ok(())
    }

    /// Ends the stream: emits what is left.
    pub fn finish<E>(&mut self, emit: &mut impl FnMut(u64, &[u8]) -> Result<(), E>) -> Result<(), E> {
        self.cut(true, emit)
    }

    fn cut<E>(&mut self, last: bool, emit: &mut impl FnMut(u64, &[u8]) -> Result<(), E>) -> Result<(), E> {
        let len = self.buf.len();
        let mut taken = 0;
        for chunk in fastcdc::v2020::FastCDC::new(&self.buf, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX) {
            if !last && chunk.offset + CHUNK_MAX as usize > len {
                break;
            }
            let end = chunk.offset + chunk.length;
            emit(self.start + chunk.offset as u64, &self.buf[chunk.offset..end])?;
            taken = end;
        }
        self.buf.drain(..taken);
        self.start += taken as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(data: &[u8], piece: usize) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        let mut c = Chunker::new();
        let mut emit = |off: u64, bytes: &[u8]| -> Result<(), ()> {
            out.push((off, bytes.len()));
            Ok(())
        };
        for p in data.chunks(piece) {
            c.push(p, &mut emit).unwrap();
        }
        c.finish(&mut emit).unwrap();
        out
    }

    #[test]
    fn cut_points_do_not_depend_on_how_the_stream_is_fed() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let data: Vec<u8> = (0..3_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let whole = chunks(&data, data.len());
        assert!(whole.len() > 20, "expected many chunks, got {}", whole.len());
        assert_eq!(whole, chunks(&data, 4096));
        assert_eq!(whole, chunks(&data, 1_000_003));
        assert_eq!(whole.iter().map(|c| c.1).sum::<usize>(), data.len());
    }
}
