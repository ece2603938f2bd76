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

/// Where a span of a volume (a partition, a logical volume) lies on its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Offset in the volume.
    pub offset: u64,
    /// Offset on the disk.
    pub disk_offset: u64,
    pub len: u64,
}

/// The disk ranges that `[offset, offset + len)` of a volume lies in, in order; the part
/// past the volume's spans, if any, is left out.
pub fn to_disk(spans: &[Span], offset: u64, len: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let end = offset.saturating_add(len);
    let first = spans.partition_point(|s| s.offset + s.len <= offset);
    spans.get(first..).unwrap_or_default().iter().take_while(move |s| s.offset < end).map(move |s| {
        let from = offset.max(s.offset);
        let to = end.min(s.offset + s.len);
        (s.disk_offset + (from - s.offset), to - from)
    })
}

/// A volume made of spans of another source, in volume order: a logical volume of a disk.
pub struct Mapped<R> {
    inner: R,
    spans: Vec<Span>,
    size: u64,
}

impl<R: ReadAt> Mapped<R> {
    /// Fails when the spans do not tile `[0, size)` or reach past the end of `inner`.
    pub fn new(inner: R, spans: Vec<Span>) -> io::Result<Self> {
        let mut size = 0u64;
        for s in &spans {
            let fits = s.disk_offset.checked_add(s.len).is_some_and(|end| end <= inner.size());
            let next = size.checked_add(s.len).filter(|_| s.offset == size && fits);
            let Some(next) = next else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "span at volume offset {} (disk {}+{}) is out of place or past the disk's end",
                        s.offset, s.disk_offset, s.len
                    ),
                ));
            };
            size = next;
        }
        Ok(Mapped { inner, spans, size })
    }
}

impl<R: ReadAt> ReadAt for Mapped<R> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match offset.checked_add(buf.len() as u64) {
            Some(end) if end <= self.size => {}
            _ => return Err(eof(offset, buf.len(), self.size)),
        }
        let (len, mut done) = (buf.len(), 0usize);
        for (disk, n) in to_disk(&self.spans, offset, len as u64) {
            let part = buf.get_mut(done..done + n as usize).ok_or_else(|| eof(offset, len, self.size))?;
            self.inner.read_exact_at(part, disk)?;
            done += n as usize;
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.size
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
