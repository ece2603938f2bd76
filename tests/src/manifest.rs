//! The manifest oracle: `files` rows compared, column by column, with the source tree the
//! filesystem was made from and with what `debugfs` says of the image.

use crate::{Library, debugfs, tree};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Every `files` row of one partition equals the oracles in every column.
pub fn assert_files_match(
    lib: &Library,
    image_id: i64,
    partition: i64,
    fs_image: &Path,
    partition_start: u64,
    block_size: u64,
    source: &Path,
) {
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
        assert_eq!(
            (int(r, "uid"), int(r, "gid")),
            (Some(i64::from(s.uid)), Some(i64::from(s.gid))),
            "{path} owner vs debugfs"
        );
        assert_eq!(int(r, "size"), Some(s.size as i64), "{path} size vs debugfs");
    }
    for e in &expected {
        let r = rows.get(&e.path).unwrap_or_else(|| panic!("{} has no files row", e.path));
        let s = &stats[&e.path];
        let what = |col: &str| format!("{} column {col}", e.path);
        assert_eq!(r["kind"].as_str(), Some(e.kind), "{}", what("kind"));
        assert_eq!(int(r, "mode"), Some(i64::from(e.mode)), "{}", what("mode"));
        assert_eq!(
            (int(r, "uid"), int(r, "gid")),
            (Some(i64::from(e.uid)), Some(i64::from(e.gid))),
            "{}",
            what("uid/gid")
        );
        if e.kind != "dir" {
            assert_eq!(int(r, "size"), Some(e.size as i64), "{}", what("size"));
        }
        assert_eq!(
            int(r, "mtime_ns"),
            Some(s.mtime.0 * 1_000_000_000 + i64::from(s.mtime.1)),
            "{}",
            what("mtime vs debugfs")
        );
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
        assert_eq!(
            r.get("content_hash").and_then(Value::as_str),
            e.content_hash.as_deref(),
            "{}",
            what("content_hash")
        );
        // xattrs: names and values as debugfs prints them.
        let xattrs: Vec<(String, String)> = r["xattrs"]
            .as_array()
            .expect("xattrs list")
            .iter()
            .map(|x| (x["name"].as_str().expect("name").to_string(), hex_to_text(x["value"].as_str().expect("value"))))
            .collect();
        let mut want = s.xattrs.clone();
        want.retain(|(n, _)| n != "system.data");
        assert_eq!(xattrs, want, "{}", what("xattrs"));
        // The physical extent map, in bytes from the start of the disk.
        let map: Vec<(u64, u64, u64, bool)> = r["extent_map"]
            .as_array()
            .expect("extent_map")
            .iter()
            .map(|x| {
                let n = |k: &str| x[k].as_i64().expect("int") as u64;
                (
                    n("file_offset") / block_size,
                    (n("disk_offset") - partition_start) / block_size,
                    n("length") / block_size,
                    x["unwritten"].as_bool().expect("bool"),
                )
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
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
    String::from_utf8(bytes).expect("test xattr values are text")
}
