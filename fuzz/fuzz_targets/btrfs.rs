//! The btrfs reader over arbitrary bytes: read every subvolume's tree, then some of every file
//! (compressed extents decoded). The input is the start of a volume of 64 MiB whose other
//! bytes are zeros; the seeds are small mixed-block-group filesystems whose metadata and data
//! lie in their first 6 MiB.
#![no_main]

use imagelake_connectors::btrfs;
use libfuzzer_sys::fuzz_target;

#[path = "volume.rs"]
mod volume;

fuzz_target!(|data: &[u8]| {
    let volume = volume::ZeroExtended { data, size: 64 << 20 };
    let Ok(fs) = btrfs::read(&volume) else { return };
    volume::read_some_of_every_file(&fs.files, &volume);
});
