//! LVM2 as installers lay it out: a GPT disk whose partitions are physical volumes of one
//! volume group, with ext4 logical volumes on them. The metadata is made by the real LVM
//! tools (without device-mapper: `--driverloaded n`); each volume's filesystem is written
//! where `pvs`/`lvs` say its extents are.

use imagelake_tests::lvm::lvm_disk;
use imagelake_tests::{
    Library, assert_files_match, assert_qcow2_checkout, assert_same_bytes, mkfs_ext, run, tree, write_at,
};
use std::process::Command;

#[test]
fn two_ext4_logical_volumes_on_two_physical_volumes() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    tree::build(&p("root-tree"));
    run(Command::new("cp").arg("-a").arg(p("root-tree")).arg(p("data-tree")));
    std::fs::write(p("data-tree/etc/motd"), "the data volume\n").unwrap();
    let disk = p("disk.img");
    let vg = format!("iltest{}", std::process::id());
    let placed = lvm_disk(&disk, 200, &[Some(96), None], &vg, &[("root", 48, 0), ("data", 40, 1)]);
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
