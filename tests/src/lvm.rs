//! LVM2 disks as installers lay them out, made by the real LVM tools without device-mapper
//! (`--driverloaded n`): a GPT disk whose partitions are the physical volumes of one volume
//! group, and linear logical volumes on them. Filesystems are then written where `pvs` and
//! `lvs` say each volume's extents are.

use crate::{LoopDevice, run};
use std::path::Path;
use std::process::Command;

const NO_BACKUP: &str = "backup { backup = 0 archive = 0 }";

fn lvm(args: &[&str]) -> String {
    run(Command::new(args[0]).args(&args[1..]).args(["--config", NO_BACKUP]))
}

/// Makes `out`, `size_mb` MiB: a BIOS boot partition, then one physical volume per entry of
/// `pv_mb` (its size in MiB; None takes the rest of the disk), all in volume group `vg`, with
/// the logical volumes `lvs` (name, MiB, index of the physical volume that holds it). Returns
/// each logical volume's byte offset in the disk, sorted by name.
pub fn lvm_disk(
    out: &Path,
    size_mb: u64,
    pv_mb: &[Option<u64>],
    vg: &str,
    lvs: &[(&str, u64, usize)],
) -> Vec<(String, u64)> {
    run(Command::new("truncate").arg(format!("-s{size_mb}M")).arg(out));
    let mut sgdisk = Command::new("sgdisk");
    sgdisk.args(["-n1:2048:+1M", "-t1:ef02"]);
    for (i, mb) in pv_mb.iter().enumerate() {
        let n = i + 2;
        sgdisk
            .arg(format!("-n{n}:0:{}", mb.map_or("0".to_string(), |mb| format!("+{mb}M"))))
            .arg(format!("-t{n}:8e00"));
    }
    run(sgdisk.arg(out));
    let sectors = |field: &str, n: usize| -> u64 {
        let info = run(Command::new("sgdisk").arg(format!("-i{n}")).arg(out));
        let line = info.lines().find(|l| l.starts_with(field)).expect("sgdisk field");
        line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    // The physical volumes, on loop devices over their partitions.
    let mut loops = Vec::new();
    for n in 2..2 + pv_mb.len() {
        let (first, last) = (sectors("First sector", n), sectors("Last sector", n));
        let dev = LoopDevice::over(out, first * 512, Some((last - first + 1) * 512));
        loops.push((dev.path.display().to_string(), first * 512, dev));
    }
    let result = std::panic::catch_unwind(|| {
        for (dev, _, _) in &loops {
            lvm(&["pvcreate", "-y", dev]);
        }
        let devs: Vec<&str> = loops.iter().map(|(d, _, _)| d.as_str()).collect();
        lvm(&[&["vgcreate", vg][..], &devs].concat());
        for (name, mb, pv) in lvs {
            let size = format!("{mb}M");
            lvm(&["lvcreate", "--driverloaded", "n", "-an", "-Zn", "-L", &size, "-n", name, vg, &loops[*pv].0]);
        }
        let extent = lvm(&["vgs", "--driverloaded", "n", "--noheadings", "--units", "b", "-o", "vg_extent_size", vg]);
        let extent: u64 = extent.trim().trim_end_matches('B').parse().unwrap();
        let ranges = lvm(&["lvs", "--driverloaded", "n", "--noheadings", "-o", "lv_name,seg_pe_ranges", vg]);
        let mut placed = Vec::new();
        for line in ranges.lines() {
            let mut f = line.split_whitespace();
            let (name, range) = (f.next().unwrap(), f.next().unwrap());
            let (dev, pes) = range.rsplit_once(':').unwrap();
            let first_pe: u64 = pes.split('-').next().unwrap().parse().unwrap();
            let (_, part_offset, _) = loops.iter().find(|(d, _, _)| d == dev).unwrap();
            let pe_start = lvm(&["pvs", "--driverloaded", "n", "--noheadings", "--units", "b", "-o", "pe_start", dev]);
            let pe_start: u64 = pe_start.trim().trim_end_matches('B').parse().unwrap();
            placed.push((name.to_string(), part_offset + pe_start + first_pe * extent));
        }
        placed
    });
    drop(loops);
    let mut placed = result.expect("LVM tools");
    placed.sort();
    placed
}

/// Checks the filesystem image `root` (of type `fs_type`, already checked in as `gpt_image`
/// inside a GPT partition) in again as `lvm_image`, the one logical volume of a new disk next
/// to it: its `files` rows are the same, and that disk checks out byte for byte. Returns how
/// many rows there are.
pub fn assert_reads_the_same_in_lvm(
    lib: &crate::Library,
    root: &Path,
    fs_type: &str,
    gpt_image: &str,
    lvm_image: &str,
) -> usize {
    let dir = root.parent().expect("a folder");
    let (disk, out) = (dir.join("lvm.img"), dir.join("lvm-out.img"));
    let root_mb = std::fs::metadata(root).expect("root").len().div_ceil(1 << 20);
    let vg = format!("il{fs_type}{}", std::process::id());
    let placed = lvm_disk(&disk, root_mb + 16, &[None], &vg, &[("root", root_mb, 0)]);
    crate::write_at(&disk, root, placed[0].1);
    lib.checkin(&disk, lvm_image);
    let rows = |image: &str, scheme: &str| {
        lib.sql(&format!(
            "SELECT f.path, f.kind, f.mode, f.uid, f.gid, f.size, f.mtime, f.inode, f.nlink, f.link_target, \
             f.dev_major, f.dev_minor, f.content_hash, f.xattrs FROM files f JOIN images i USING (image_id) \
             JOIN partitions p ON p.image_id = f.image_id AND p.partition = f.partition \
             WHERE i.name = '{image}' AND p.scheme = '{scheme}' AND p.fs_type = '{fs_type}' ORDER BY f.path"
        ))
    };
    let (in_lvm, in_gpt) = (rows(lvm_image, "lvm"), rows(gpt_image, "gpt"));
    assert!(in_lvm == in_gpt, "{fs_type} reads the same in a logical volume as in a partition");
    lib.checkout(lvm_image, &out);
    run(Command::new("cmp").arg(&disk).arg(&out));
    in_lvm.len()
}
