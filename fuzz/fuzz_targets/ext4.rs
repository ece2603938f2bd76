//! The ext2/3/4 reader over arbitrary bytes: read the tree, then some of every file.
#![no_main]

use imagelake_connectors::ext4;
use libfuzzer_sys::fuzz_target;

#[path = "volume.rs"]
mod volume;

fuzz_target!(|data: &[u8]| {
    let image = volume::ZeroExtended { data, size: data.len() as u64 };
    let Ok(fs) = ext4::read(&image) else { return };
    volume::read_some_of_every_file(&fs.files, &image);
});
