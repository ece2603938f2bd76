//! What the filesystem readers' tests share.

use imagelake_connectors::ReadAt;
use imagelake_connectors::fs::{FileKind, Filesystem};

/// Reads up to `cap` bytes of each regular file of `fs`, a megabyte at a time. Errors reading
/// content (an extent in a truncated image) stop that file; panics are what the tests look for.
pub fn read_contents(fs: &Filesystem, src: &dyn ReadAt, cap: u64) {
    let mut buf = vec![0; 1 << 20];
    for f in fs.files.iter().filter(|f| f.kind == FileKind::File) {
        let mut offset = 0;
        while offset < f.size.min(cap) {
            let n = (f.size.min(cap) - offset).min(1 << 20) as usize;
            if f.read_content(src, offset, &mut buf[..n]).is_err() {
                break;
            }
            offset += n as u64;
        }
    }
}
