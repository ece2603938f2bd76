//! The XFS reader over arbitrary bytes: read the tree, then some of every file. mkfs.xfs
//! makes nothing smaller than 16 MiB, past libFuzzer's inputs, so the input is the start of a
//! volume of 64 MiB whose other bytes are zeros.
#![no_main]

use imagelake_connectors::xfs;
use libfuzzer_sys::fuzz_target;

#[path = "volume.rs"]
mod volume;

fuzz_target!(|data: &[u8]| {
    let volume = volume::ZeroExtended { data, size: 64 << 20 };
    let Ok(fs) = xfs::read(&volume) else { return };
    volume::read_some_of_every_file(&fs.files, &volume);
});
