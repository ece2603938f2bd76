//! The ext2/3/4 reader over arbitrary bytes: read the tree, then some of every file.
#![no_main]

use imagelake_connectors::ext4;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let image = data.to_vec();
    let Ok(fs) = ext4::read(&image) else { return };
    let mut buf = vec![0u8; 64 * 1024];
    let mut budget: u64 = 16 << 20; // a file may claim terabytes of holes: read a bounded amount
    for file in fs.files.iter().filter(|f| f.kind == ext4::FileKind::File) {
        let n = file.size.min(buf.len() as u64).min(budget);
        if n == 0 {
            continue;
        }
        let _ = file.read_content(&image, 0, &mut buf[..n as usize]);
        let tail = file.size - n;
        let _ = file.read_content(&image, tail, &mut buf[..n as usize]);
        budget -= n;
    }
});
