//! The XFS reader over arbitrary bytes: read the tree, then some of every file. mkfs.xfs
//! makes nothing smaller than 16 MiB, past libFuzzer's inputs, so the input is the start of a
//! volume of 64 MiB whose other bytes are zeros.
#![no_main]

use imagelake_connectors::{ReadAt, xfs};
use libfuzzer_sys::fuzz_target;

const VOLUME: u64 = 64 << 20;

struct ZeroExtended<'a>(&'a [u8]);

impl ReadAt for ZeroExtended<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > VOLUME {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.fill(0);
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.0.len());
        let n = (self.0.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(())
    }

    fn size(&self) -> u64 {
        VOLUME
    }
}

fuzz_target!(|data: &[u8]| {
    let volume = ZeroExtended(data);
    let Ok(fs) = xfs::read(&volume) else { return };
    let mut buf = vec![0u8; 64 * 1024];
    let mut budget: u64 = 16 << 20; // a file may claim terabytes of holes: read a bounded amount
    for file in fs.files.iter().filter(|f| f.kind == xfs::FileKind::File) {
        let n = file.size.min(buf.len() as u64).min(budget);
        if n == 0 {
            continue;
        }
        let _ = file.read_content(&volume, 0, &mut buf[..n as usize]);
        let _ = file.read_content(&volume, file.size - n, &mut buf[..n as usize]);
        budget -= n;
    }
});
