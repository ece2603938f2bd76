//! LVM2 as installers lay it out: a GPT disk whose partitions are physical volumes of one
//! volume group, with ext4 logical volumes on them. The metadata is made by the real LVM
//! tools (without device-mapper: `--driverloaded n`); each volume's filesystem is written
//! where `pvs`/`lvs` say its extents are.

use imagelake_tests::{
    Library, assert_files_match, assert_qcow2_checkout, assert_same_bytes, mkfs_ext, run, tree, write_at,
};
use std::process::Command;

const NO_BACKUP: &str = "backup { backup = 0 archive = 0 }";

fn lvm(args: &[&str]) -> String {
    run(Command::new(args[0]).args(&args[1..]).args(["--config", NO_BACKUP]))
}

#[test]
fn two_ext4_logical_volumes_on_two_physical_volumes() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    tree::build(&p("root-tree"));
    run(Command::new("cp").arg("-a").arg(p("root-tree")).arg(p("data-tree")));
    std::fs::write(p("data-tree/etc/motd"), "the data volume\n").unwrap();
    let disk = p("disk.img");
    run(Command::new("truncate").arg("-s200M").arg(&disk));
    run(Command::new("sgdisk")
        .args(["-n1:2048:+1M", "-t1:ef02", "-n2:0:+96M", "-t2:8e00", "-n3:0:0", "-t3:8e00"])
        .arg(&disk));
    let sectors = |field: &str, n: u32| -> u64 {
        let out = run(Command::new("sgdisk").arg(format!("-i{n}")).arg(&disk));
        let line = out.lines().find(|l| l.starts_with(field)).expect("sgdisk field");
        line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    // The two physical volumes, on loop devices over their partitions.
    let mut loops = Vec::new();
    for n in [2, 3] {
        let (first, last) = (sectors("First sector", n), sectors("Last sector", n));
        let dev = run(Command::new("losetup")
            .arg("--offset")
            .arg((first * 512).to_string())
            .arg("--sizelimit")
            .arg(((last - first + 1) * 512).to_string())
            .args(["-f", "--show"])
            .arg(&disk));
        loops.push((dev.trim().to_string(), first * 512));
    }
    let vg = format!("iltest{}", std::process::id());
    let result = std::panic::catch_unwind(|| {
        lvm(&["pvcreate", "-y", &loops[0].0]);
        lvm(&["pvcreate", "-y", &loops[1].0]);
        lvm(&["vgcreate", &vg, &loops[0].0, &loops[1].0]);
        lvm(&["lvcreate", "--driverloaded", "n", "-an", "-Zn", "-L", "48M", "-n", "root", &vg, &loops[0].0]);
        lvm(&["lvcreate", "--driverloaded", "n", "-an", "-Zn", "-L", "40M", "-n", "data", &vg, &loops[1].0]);
        let extent = lvm(&["vgs", "--driverloaded", "n", "--noheadings", "--units", "b", "-o", "vg_extent_size", &vg]);
        let extent: u64 = extent.trim().trim_end_matches('B').parse().unwrap();
        let ranges = lvm(&["lvs", "--driverloaded", "n", "--noheadings", "-o", "lv_name,seg_pe_ranges", &vg]);
        let mut placed = Vec::new();
        for line in ranges.lines() {
            let mut f = line.split_whitespace();
            let (name, range) = (f.next().unwrap(), f.next().unwrap());
            let (dev, pes) = range.rsplit_once(':').unwrap();
            let first_pe: u64 = pes.split('-').next().unwrap().parse().unwrap();
            let (_, part_offset) = loops.iter().find(|(d, _)| d == dev).unwrap();
            let pe_start = lvm(&["pvs", "--driverloaded", "n", "--noheadings", "--units", "b", "-o", "pe_start", dev]);
            let pe_start: u64 = pe_start.trim().trim_end_matches('B').parse().unwrap();
            placed.push((name.to_string(), part_offset + pe_start + first_pe * extent));
        }
        placed
    });
    for (dev, _) in &loops {
        let _ = Command::new("losetup").arg("-d").arg(dev).status();
    }
    let mut placed = result.expect("LVM tools");
    placed.sort();
    assert_eq!(placed.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["data", "root"]);

    // Each volume's filesystem, written where LVM put its extents.
    mkfs_ext(&p("data-tree"), &p("data.img"), "ext4", "40M", &["-b", "4096"]);
    mkfs_ext(&p("root-tree"), &p("root.img"), "ext4", "48M", &["-b", "4096"]);
    for (name, offset) in &placed {
        write_at(&disk, &p(&format!("{name}.img")), *offset);
    }

    let lib = Library::new();
    let summary = lib.checkin(&disk, "lvm");
    let id = summary["image_id"].as_i64().unwrap();
    let rows = lib.sql(&format!("SELECT partition, scheme, type, name, start, fs_type, fs_label FROM partitions WHERE image_id = {id} ORDER BY partition"));
    let names: Vec<(String, String, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r["scheme"].as_str().unwrap().into(),
                r["name"].as_str().unwrap().into(),
                r.get("fs_type").and_then(|v| v.as_str()).map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("gpt".into(), "".into(), None),
            ("gpt".into(), "".into(), Some("lvm2".into())),
            ("gpt".into(), "".into(), Some("lvm2".into())),
            ("lvm".into(), format!("{vg}/root"), Some("ext4".into())),
            ("lvm".into(), format!("{vg}/data"), Some("ext4".into())),
        ]
    );
    for (row, name) in rows[3..].iter().zip(["root", "data"]) {
        let start = row["start"].as_u64().unwrap();
        assert_eq!(placed.iter().find(|p| p.0 == name).unwrap().1, start, "{name} start");
        assert_eq!(row["type"], "linear");
        let tree = p(&format!("{name}-tree"));
        assert_files_match(
            &lib,
            id,
            row["partition"].as_i64().unwrap(),
            &p(&format!("{name}.img")),
            start,
            4096,
            &tree,
        );
    }
    let out = p("out.raw");
    lib.checkout("lvm", &out);
    assert_same_bytes(&disk, &out);
    assert_qcow2_checkout(&lib, "lvm", &disk);
}
