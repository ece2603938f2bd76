//! GPT and MBR (with EBR chains) readers, filesystem signatures, and LVM2 metadata (with
//! every logical volume mapped) over arbitrary bytes.
#![no_main]

use imagelake_connectors::{lvm, partition};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let disk = data.to_vec();
    if let Ok(vg) = lvm::read(&disk) {
        let here = |uuid: &str| (uuid == vg.pv_uuid).then_some(0);
        for lv in &vg.logical_volumes {
            let _ = vg.map(lv, &here);
        }
    }
    if let Ok(parts) = partition::read(&disk) {
        for p in parts {
            if let Ok(window) = imagelake_connectors::Window::new(&disk, p.start, p.size) {
                let _ = partition::fs_type(&window);
            }
        }
    }
});
