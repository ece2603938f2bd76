//! Checkin indexes real images exactly, and checkout gives back the same bytes.
//!
//! Images are made by real tools from a tree with every kind of entry; the `files` rows are
//! compared column by column with two independent oracles: the source tree (paths, kinds,
//! owners, modes, sizes, times, link targets, device numbers, contents hashed with blake3)
//! and `debugfs` (inode numbers, link counts, xattrs, the physical extent map).

use imagelake_tests::{Library, assert_same_bytes, debugfs, gpt_disk, mbr_disk, mkfs_ext, mkfs_vfat, qemu_img_to_raw, run, tree};
use serde_json::Value;
use std::collections::HashMap;
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
    lib.checkout(&format!("{name}@{}", summary["version"]), &out);
    assert_same_bytes(raw, &out);
    std::fs::remove_file(&out).expect("rm");
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
    assert_eq!(rows[0]["bad_chunks"].as_i64(), Some(0), "image {id}: a data extent without a chunk, or a zero one with");
}

/// Every `files` row of one partition equals the oracles in every column.
fn assert_files_match(lib: &Library, image_id: i64, partition: i64, fs_image: &Path, partition_start: u64, block_size: u64, source: &Path) {
    let rows = lib.sql(&format!(
        "SELECT path, kind, mode, uid, gid, size, CAST(mtime AS BIGINT) AS mtime_ns, inode, nlink, link_target, \
         dev_major, dev_minor, content_hash, xattrs, extent_map \
         FROM files WHERE image_id = {image_id} AND partition = {partition} ORDER BY path"
    ));
    let rows: HashMap<String, &serde_json::Map<String, Value>> =
        rows.iter().map(|r| (r["path"].as_str().expect("path").to_string(), r)).collect();
    let expected = tree::walk(source);
    // mke2fs adds lost+found; the root is a row of its own.
    assert_eq!(rows.len(), expected.len() + 2, "row count for image {image_id} partition {partition}");
    let paths: Vec<String> = rows.keys().cloned().collect();
    let stats = debugfs::stat_all(fs_image, &paths);
    let int = |r: &serde_json::Map<String, Value>, k: &str| r.get(k).and_then(Value::as_i64);
    // Every row, the root and lost+found included, against debugfs.
    for (path, r) in &rows {
        let s = &stats[path];
        let kind = match s.kind.as_str() {
            "regular" => "file",
            "directory" => "dir",
            "character" => "char",
            "FIFO" => "fifo",
            other => other,
        };
        assert_eq!(r["kind"].as_str(), Some(kind), "{path} kind vs debugfs");
        assert_eq!(int(r, "mode"), Some(i64::from(s.mode & 0o7777)), "{path} mode vs debugfs");
        assert_eq!((int(r, "uid"), int(r, "gid")), (Some(i64::from(s.uid)), Some(i64::from(s.gid))), "{path} owner vs debugfs");
        assert_eq!(int(r, "size"), Some(s.size as i64), "{path} size vs debugfs");
    }
    for e in &expected {
        let r = rows.get(&e.path).unwrap_or_else(|| panic!("{} has no files row", e.path));
        let s = &stats[&e.path];
        let what = |col: &str| format!("{} column {col}", e.path);
        assert_eq!(r["kind"].as_str(), Some(e.kind), "{}", what("kind"));
        assert_eq!(int(r, "mode"), Some(i64::from(e.mode)), "{}", what("mode"));
        assert_eq!((int(r, "uid"), int(r, "gid")), (Some(i64::from(e.uid)), Some(i64::from(e.gid))), "{}", what("uid/gid"));
        if e.kind != "dir" {
            assert_eq!(int(r, "size"), Some(e.size as i64), "{}", what("size"));
        }
        assert_eq!(int(r, "mtime_ns"), Some(s.mtime.0 * 1_000_000_000 + i64::from(s.mtime.1)), "{}", what("mtime vs debugfs"));
        assert_eq!(s.mtime.0, e.mtime, "{}", what("mtime vs source"));
        assert_eq!(int(r, "inode"), Some(s.inode as i64), "{}", what("inode"));
        assert_eq!(int(r, "nlink"), Some(i64::from(s.links)), "{}", what("nlink"));
        assert_eq!(r.get("link_target").and_then(Value::as_str), e.link_target.as_deref(), "{}", what("link_target"));
        if let Some(fast) = &s.fast_link {
            assert_eq!(e.link_target.as_ref(), Some(fast), "{}", what("fast link vs debugfs"));
        }
        let dev = e.device.map(|(a, b)| (i64::from(a), i64::from(b)));
        assert_eq!(int(r, "dev_major").zip(int(r, "dev_minor")), dev, "{}", what("device"));
        assert_eq!(s.device, e.device, "{}", what("device vs debugfs"));
        assert_eq!(r.get("content_hash").and_then(Value::as_str), e.content_hash.as_deref(), "{}", what("content_hash"));
        // xattrs: names and values as debugfs prints them.
        let xattrs: Vec<(String, String)> = r["xattrs"].as_array().expect("xattrs list").iter()
            .map(|x| (x["name"].as_str().expect("name").to_string(), hex_to_text(x["value"].as_str().expect("value"))))
            .collect();
        let mut want = s.xattrs.clone();
        want.retain(|(n, _)| n != "system.data");
        assert_eq!(xattrs, want, "{}", what("xattrs"));
        // The physical extent map, in bytes from the start of the disk.
        let map: Vec<(u64, u64, u64, bool)> = r["extent_map"].as_array().expect("extent_map").iter()
            .map(|x| {
                let n = |k: &str| x[k].as_i64().expect("int") as u64;
                (n("file_offset") / block_size, (n("disk_offset") - partition_start) / block_size, n("length") / block_size, x["unwritten"].as_bool().expect("bool"))
            })
            .collect();
        let want: Vec<(u64, u64, u64, bool)> = if e.kind == "file" { s.extents.clone() } else { Vec::new() };
        assert_eq!(merge_runs(map), merge_runs(want), "{} {s:?}", what("extent_map vs debugfs"));
    }
    // Hard links are recognisable: one inode, two paths, nlink 2.
    assert_eq!(rows["/etc/motd"]["inode"], rows["/etc/motd.hardlink"]["inode"]);
    assert_eq!(int(rows["/etc/motd"], "nlink"), Some(2));
}

/// Merges runs that continue each other (debugfs and our reader may split them differently).
fn merge_runs(runs: Vec<(u64, u64, u64, bool)>) -> Vec<(u64, u64, u64, bool)> {
    let mut out: Vec<(u64, u64, u64, bool)> = Vec::new();
    for r in runs {
        match out.last_mut() {
            Some(l) if l.0 + l.2 == r.0 && l.1 + l.2 == r.1 && l.3 == r.3 => l.2 += r.2,
            _ => out.push(r),
        }
    }
    out
}

/// arrow-json writes binary values as hex; debugfs prints printable values as text.
fn hex_to_text(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
    String::from_utf8(bytes).expect("test xattr values are text")
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
    let summary: Vec<(i64, String, Option<String>)> = parts.iter()
        .map(|p| (p["partition"].as_i64().unwrap(), p["name"].as_str().unwrap().to_string(), p.get("fs_type").and_then(Value::as_str).map(str::to_string)))
        .collect();
    assert_eq!(summary, vec![
        (1, "bios".to_string(), None),
        (2, "EFI system".to_string(), Some("vfat".to_string())),
        (3, "root".to_string(), Some("ext4".to_string())),
    ]);
    assert!(parts.iter().all(|p| p["scheme"] == "gpt"));
    assert_eq!(parts[1]["type"], "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI system partition type GUID");
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
        let rows = lib.sql(&format!("SELECT count(*) AS n FROM files WHERE image_id = {qid}"));
        assert_eq!(rows[0]["n"].as_i64(), Some(tree::walk(&fx.tree()).len() as i64 + 2));
    }

    // MBR with a primary ext4 and a logical ext2 reached through an EBR.
    let logical = fx.path("logical.img");
    mkfs_ext(&fx.tree(), &logical, "ext2", "24M", &["-b", "1024"]);
    let mbr = fx.path("mbr.img");
    mbr_disk(&mbr, &root, &logical);
    let id = round_trip(&lib, &mbr, &mbr, "mbr");
    let parts = lib.sql(&format!("SELECT partition, scheme, type, start, fs_type FROM partitions WHERE image_id = {id} ORDER BY partition"));
    let got: Vec<(i64, String, String)> = parts.iter()
        .map(|p| (p["partition"].as_i64().unwrap(), p["type"].as_str().unwrap().to_string(), p["fs_type"].as_str().unwrap().to_string()))
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
    assert_eq!(second["bytes_deduplicated"], first["bytes_new"].as_u64().unwrap() + first["bytes_deduplicated"].as_u64().unwrap());
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
