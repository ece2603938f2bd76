//! A volume for the filesystem targets: the fuzz input at its start, zeros after, up to a size
//! (filesystem tools make nothing as small as libFuzzer's inputs), and the reads a checkin
//! makes of what a reader lists.

use imagelake_connectors::ReadAt;
use imagelake_connectors::fs::{File, FileKind};

pub struct ZeroExtended<'a> {
    pub data: &'a [u8],
    pub size: u64,
}

impl ReadAt for ZeroExtended<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.size {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.fill(0);
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.data.len());
        let n = (self.data.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// Reads the head and tail of every regular file, within a budget: a file may claim terabytes
/// of holes.
pub fn read_some_of_every_file(files: &[File], volume: &dyn ReadAt) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut budget: u64 = 16 << 20;
    for file in files.iter().filter(|f| f.kind == FileKind::File) {
        let n = file.size.min(buf.len() as u64).min(budget);
        if n == 0 {
            continue;
        }
        let _ = file.read_content(volume, 0, &mut buf[..n as usize]);
        let _ = file.read_content(volume, file.size - n, &mut buf[..n as usize]);
        budget -= n;
    }
}
