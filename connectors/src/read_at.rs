use std::io;

/// A positioned, thread-safe byte source: a disk image, a partition, a file on the host.
///
/// Reads past `size()` fail with `UnexpectedEof`: a structure that points outside its
/// container is an error, never a short read taken for data.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` from `offset`, or fails.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The size in bytes.
    fn size(&self) -> u64;
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for std::sync::Arc<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof(offset, buf.len(), self.size()))?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| eof(offset, buf.len(), self.size()))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

/// A window `[start, start + len)` of another source: a partition of a disk.
pub struct Window<R> {
    inner: R,
    start: u64,
    len: u64,
}

impl<R: ReadAt> Window<R> {
    /// Fails when the window reaches past the end of `inner`.
    pub fn new(inner: R, start: u64, len: u64) -> io::Result<Self> {
        match start.checked_add(len) {
            Some(end) if end <= inner.size() => Ok(Window { inner, start, len }),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("range {start}+{len} lies past the end ({} bytes)", inner.size()),
            )),
        }
    }
}

impl<R: ReadAt> ReadAt for Window<R> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.len => self.inner.read_exact_at(buf, self.start + offset),
            _ => Err(eof(offset, buf.len(), self.len)),
        }
    }
    fn size(&self) -> u64 {
        self.len
    }
}

pub(crate) fn eof(offset: u64, len: usize, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at {offset} lies past the end ({size} bytes)"),
    )
}

/// True when every byte is zero (word at a time: this runs over every byte of an image).
pub fn is_zero(buf: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128; align_to only reinterprets the aligned middle.
    let (head, words, tail) = unsafe { buf.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}
