//! Checkin indexes real images exactly, and checkout gives back the same bytes.
//!
//! Images are made by real tools from a tree with every kind of entry; the `files` rows are
//! compared column by column with two independent oracles: the source tree (paths, kinds,
//! owners, modes, sizes, times, link targets, device numbers, contents hashed with blake3)
//! and `debugfs` (inode numbers, link counts, xattrs, the physical extent map).

use imagelake_tests::{
    Library, assert_files_match, assert_qcow2_checkout, assert_same_bytes, gpt_disk, mbr_disk, mkfs_ext, mkfs_vfat,
    qemu_img_to_raw, run, tree,
};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        tree::build(&dir.path().join("tree"));
        Fixture { dir }
    }
    fn tree(&self) -> std::path::PathBuf {
        self.dir.path().join("tree")
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// Checks `image` in, checks it out, and compares the bytes (with `raw` as the expected
/// disk when the input is not raw). Returns the new image id.
fn round_trip(lib: &Library, image: &Path, raw: &Path, name: &str) -> i64 {
    let summary = lib.checkin(image, name);
    let id = summary["image_id"].as_i64().expect("image_id");
    assert_extents_tile_the_disk(lib, id);
    let out = image.with_extension("out");
    let spec = format!("{name}@{}", summary["version"]);
    lib.checkout(&spec, &out);
    assert_same_bytes(raw, &out);
    std::fs::remove_file(&out).expect("rm");
    assert_qcow2_checkout(lib, &spec, raw);
    id
}

/// The extents table alone says how to rebuild the disk: its rows tile `[0, virtual_size)`
/// with no gap and no overlap, and only zero extents lack a chunk.
fn assert_extents_tile_the_disk(lib: &Library, id: i64) {
    let rows = lib.sql(&format!(
        "SELECT count(*) AS n, \
           sum(CASE WHEN prev_end IS NULL AND disk_offset <> 0 OR prev_end <> disk_offset THEN 1 ELSE 0 END) AS breaks, \
           sum(length) AS covered, \
           sum(CASE WHEN (kind = 'zero') = (chunk_hash IS NULL) THEN 0 ELSE 1 END) AS bad_chunks \
         FROM (SELECT disk_offset, length, kind, chunk_hash, \
                      lag(disk_offset + length) OVER (ORDER BY disk_offset) AS prev_end \
               FROM extents WHERE image_id = {id})"
    ));
    let size = lib.sql(&format!("SELECT virtual_size FROM images WHERE image_id = {id}"))[0]["virtual_size"].as_i64();
    assert!(rows[0]["n"].as_i64().unwrap() > 0);
    assert_eq!(rows[0]["breaks"].as_i64(), Some(0), "image {id}: extents leave a gap or overlap");
    assert_eq!(rows[0]["covered"].as_i64(), size, "image {id}: extents do not cover the disk");
    assert_eq!(
        rows[0]["bad_chunks"].as_i64(),
        Some(0),
        "image {id}: a data extent without a chunk, or a zero one with"
    );
}

#[test]
fn bare_ext2_ext3_ext4_are_indexed_exactly_and_round_trip() {
    let fx = Fixture::new();
    let lib = Library::new();
    let variants: [(&str, &str, &[&str], u64); 5] = [
        ("ext4", "ext4", &["-b", "4096"], 4096),
        ("ext4-1k", "ext4", &["-b", "1024"], 1024),
        ("ext4-inline", "ext4", &["-b", "4096", "-O", "inline_data"], 4096),
        ("ext3", "ext3", &["-b", "4096"], 4096),
        ("ext2", "ext2", &["-b", "1024"], 1024),
    ];
    for (name, fs_type, extra, block_size) in variants {
        let img = fx.path(&format!("{name}.img"));
        mkfs_ext(&fx.tree(), &img, fs_type, "64M", extra);
        let id = round_trip(&lib, &img, &img, name);
        assert_files_match(&lib, id, 1, &img, 0, block_size, &fx.tree());
        let part = lib.sql(&format!("SELECT scheme, fs_type FROM partitions WHERE image_id = {id}"));
        assert_eq!(part.len(), 1);
        assert_eq!(part[0]["scheme"], "none");
        assert_eq!(part[0]["fs_type"], fs_type, "{name}");
    }
}

#[test]
fn gpt_and_mbr_disks_raw_and_qcow2_round_trip() {
    let fx = Fixture::new();
    let lib = Library::new();
    let root = fx.path("root.img");
    mkfs_ext(&fx.tree(), &root, "ext4", "48M", &["-b", "4096"]);
    let esp = fx.path("esp.img");
    mkfs_vfat(&esp, 8 * 1024);
    let gpt = fx.path("gpt.img");
    gpt_disk(&gpt, &root, &esp);

    let id = round_trip(&lib, &gpt, &gpt, "gpt");
    let parts = lib.sql(&format!("SELECT partition, scheme, type, name, start, size, fs_type FROM partitions WHERE image_id = {id} ORDER BY partition"));
    let summary: Vec<(i64, String, Option<String>)> = parts
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["name"].as_str().unwrap().to_string(),
                p.get("fs_type").and_then(Value::as_str).map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "bios".to_string(), None),
            (2, "EFI system".to_string(), Some("vfat".to_string())),
            (3, "root".to_string(), Some("ext4".to_string())),
        ]
    );
    assert!(parts.iter().all(|p| p["scheme"] == "gpt"));
    assert_eq!(parts[1]["type"], "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI system partition type GUID");
    // The EFI system partition is indexed too: its file, with the content mtools wrote.
    let esp = lib.sql(&format!(
        "SELECT path, kind, size, content_hash FROM files WHERE image_id = {id} AND partition = 2 ORDER BY path"
    ));
    let paths: Vec<&str> = esp.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/", "/EFI", "/EFI/BOOTX64.EFI"]);
    let boot = std::fs::read(fx.path("esp.bootx64")).unwrap();
    assert_eq!(esp[2]["content_hash"].as_str(), Some(blake3::hash(&boot).to_hex().as_str()));
    let root_start = parts[2]["start"].as_u64().unwrap();
    assert_files_match(&lib, id, 3, &root, root_start, 4096, &fx.tree());

    // qcow2, plain and compressed: checkout equals what qemu-img reads.
    for (name, extra) in [("qcow2", &[][..]), ("qcow2-compressed", &["-c"][..])] {
        let q = fx.path(&format!("{name}.qcow2"));
        run(Command::new("qemu-img").args(["convert", "-O", "qcow2"]).args(extra).arg(&gpt).arg(&q));
        let raw = fx.path(&format!("{name}.raw"));
        qemu_img_to_raw(&q, &raw);
        let qid = round_trip(&lib, &q, &raw, name);
        let format = lib.sql(&format!("SELECT source_format FROM images WHERE image_id = {qid}"));
        assert_eq!(format[0]["source_format"], "qcow2");
        // The same disk in another container stores nothing new but the tiny qcow2-free bits.
        let rows = lib.sql(&format!("SELECT count(*) AS n FROM files WHERE image_id = {qid} AND partition = 3"));
        assert_eq!(rows[0]["n"].as_i64(), Some(tree::walk(&fx.tree()).len() as i64 + 2));
    }

    // MBR with a primary ext4 and a logical ext2 reached through an EBR.
    let logical = fx.path("logical.img");
    mkfs_ext(&fx.tree(), &logical, "ext2", "24M", &["-b", "1024"]);
    let mbr = fx.path("mbr.img");
    mbr_disk(&mbr, &root, &logical);
    let id = round_trip(&lib, &mbr, &mbr, "mbr");
    let parts = lib.sql(&format!(
        "SELECT partition, scheme, type, start, fs_type FROM partitions WHERE image_id = {id} ORDER BY partition"
    ));
    let got: Vec<(i64, String, String)> = parts
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["type"].as_str().unwrap().to_string(),
                p["fs_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, vec![(1, "0x83".into(), "ext4".into()), (5, "0x83".into(), "ext2".into())]);
    assert!(parts.iter().all(|p| p["scheme"] == "mbr"));
    assert_files_match(&lib, id, 5, &logical, parts[1]["start"].as_u64().unwrap(), 1024, &fx.tree());
}

#[test]
fn versions_dedup_and_names() {
    let fx = Fixture::new();
    let lib = Library::new();
    let img = fx.path("a.img");
    mkfs_ext(&fx.tree(), &img, "ext4", "32M", &[]);
    let first = lib.checkin(&img, "web");
    assert_eq!(first["version"], 1);
    // The same image again: a new version whose every chunk is already stored.
    let second = lib.checkin(&img, "web");
    assert_eq!(second["version"], 2);
    assert_eq!(second["parent_id"], first["image_id"]);
    assert_eq!(second["bytes_new"], 0, "{second}");
    assert_eq!(
        second["bytes_deduplicated"],
        first["bytes_new"].as_u64().unwrap() + first["bytes_deduplicated"].as_u64().unwrap()
    );
    // A bare name means the newest version.
    let newest = lib.sql("SELECT name, version, parent_id FROM images WHERE name = 'web' ORDER BY version");
    assert_eq!(newest.len(), 2);
    let out = fx.path("web.out");
    let co = lib.checkout("web", &out);
    assert_eq!(co["version"], 2);
    assert_same_bytes(&img, &out);
    // Bad names and unknown versions are errors that say so.
    let bad = lib.command().args(["checkin"]).arg(&img).args(["--name", "a@b"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid image name"));
    let missing = lib.command().args(["checkout", "web@9"]).arg(&out).output().unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no image web@9"), "{missing:?}");
}

#[test]
fn a_swap_partition_is_stored_raw_and_listed_beside_empty_xfs_and_btrfs() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    // Real xfs and btrfs made by their own tools, in a GPT disk with a swap partition.
    run(Command::new("truncate").arg("-s320M").arg(p("xfs.img")));
    run(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(p("xfs.img")));
    run(Command::new("truncate").arg("-s128M").arg(p("btrfs.img")));
    run(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(p("btrfs.img")));
    run(Command::new("truncate").arg("-s8M").arg(p("swap.img")));
    run(Command::new("mkswap").arg(p("swap.img")));
    let disk = p("disk.img");
    run(Command::new("truncate").arg("-s460M").arg(&disk));
    run(Command::new("sgdisk")
        .args(["-n1:2048:+320M", "-t1:8300", "-n2:0:+128M", "-t2:8300", "-n3:0:+8M", "-t3:8200"])
        .arg(&disk));
    let start = |n: u64| (2048 + n) * 512;
    imagelake_tests::write_at(&disk, &p("xfs.img"), start(0));
    imagelake_tests::write_at(&disk, &p("btrfs.img"), start(320 * 2048));
    imagelake_tests::write_at(&disk, &p("swap.img"), start(448 * 2048));
    let lib = Library::new();
    let id = round_trip(&lib, &disk, &disk, "others");
    let rows = lib
        .sql(&format!("SELECT partition, fs_type, fs_error FROM partitions WHERE image_id = {id} ORDER BY partition"));
    let types: Vec<Option<&str>> = rows.iter().map(|r| r.get("fs_type").and_then(Value::as_str)).collect();
    assert_eq!(types, [Some("xfs"), Some("btrfs"), Some("swap")]);
    assert!(rows.iter().all(|r| r.get("fs_error").is_none_or(Value::is_null)), "{rows:?}");
    // The empty XFS and btrfs are indexed (their roots alone); nothing of swap is.
    let files = lib.sql(&format!("SELECT partition, path FROM files WHERE image_id = {id} ORDER BY partition"));
    let files: Vec<(Option<i64>, Option<&str>)> =
        files.iter().map(|f| (f["partition"].as_i64(), f["path"].as_str())).collect();
    assert_eq!(files, [(Some(1), Some("/")), (Some(2), Some("/"))]);
}
