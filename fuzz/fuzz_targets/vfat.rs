//! The FAT12/16/32 reader over arbitrary bytes: read the tree, then some of every file.
#![no_main]

use imagelake_connectors::{fs, vfat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let image = data.to_vec();
    let Ok(fs) = vfat::read(&image) else { return };
    let mut buf = vec![0u8; 64 * 1024];
    for file in fs.files.iter().filter(|f| f.kind == fs::FileKind::File) {
        let n = file.size.min(buf.len() as u64) as usize;
        let _ = file.read_content(&image, 0, &mut buf[..n]);
    }
});
