//! GPT and MBR (with EBR chains) readers, and filesystem signatures, over arbitrary bytes.
#![no_main]

use imagelake_connectors::partition;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let disk = data.to_vec();
    if let Ok(parts) = partition::read(&disk) {
        for p in parts {
            if let Ok(window) = imagelake_connectors::Window::new(&disk, p.start, p.size) {
                let _ = partition::fs_type(&window);
            }
        }
    }
});
