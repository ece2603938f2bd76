//! The store proves itself: `verify` reads every chunk back and names the images and files a
//! damaged one belongs to; `cat` reads one file of an image.

use imagelake_tests::{Library, frame_of, mkfs_ext, unique_bytes};
use std::os::unix::fs::FileExt;
use std::process::Output;

fn verify(lib: &Library, image: Option<&str>) -> (Output, serde_json::Value) {
    let out = lib.command().arg("verify").args(image).arg("--json").output().expect("imagelake verify");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify output is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out, report)
}

fn damaged_uses(report: &serde_json::Value) -> Vec<(String, String)> {
    let mut uses = Vec::new();
    for d in report["damaged"].as_array().unwrap() {
        for u in d["used_by"].as_array().unwrap() {
            uses.push((u["image"].as_str().unwrap().to_string(), u["path"].as_str().unwrap_or("").to_string()));
        }
    }
    uses
}

fn assert_intact(lib: &Library, image: Option<&str>) {
    let (out, report) = verify(lib, image);
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report["damaged"], serde_json::json!([]));
    assert_eq!(report["damaged_packs"], serde_json::json!([]));
    assert!(report["chunks"].as_u64().unwrap() > 0 && report["bytes_read"].as_u64().unwrap() > 0, "{report}");
}

fn assert_damaged(lib: &Library, reason: &str) -> serde_json::Value {
    let (out, report) = verify(lib, None);
    assert!(!out.status.success(), "verify passed a damaged store: {report}");
    let reasons: Vec<&str> =
        report["damaged"].as_array().unwrap().iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().all(|r| r.contains(reason)), "expected {reason:?} in {reasons:?}");
    report
}

#[test]
fn verify_finds_a_flipped_byte_a_truncated_pack_a_damaged_index_and_a_missing_pack() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::new();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    // Nothing shared: a frame of web's pack holds only chunks that web uses.
    for name in ["web", "db"] {
        std::fs::write(tree.join("etc/motd"), format!("{name}\n")).unwrap();
        std::fs::write(tree.join("etc/config"), unique_bytes(name, 300_000)).unwrap();
        let image = dir.path().join(format!("{name}.img"));
        mkfs_ext(&tree, &image, "ext4", "8M", &[]);
        lib.checkin(&image, name);
    }
    assert_intact(&lib, None);

    // One byte flipped inside the frame that holds web's /etc/config: the chunks of that frame
    // whose bytes it changes are damaged (one, for a flipped literal; all after it, when it
    // breaks the frame's entropy tables), and no other chunk is.
    let (pack, offset, length) = frame_of(&lib, "web", "/etc/config");
    let original = std::fs::read(&pack).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    let at = offset + length / 2;
    file.write_all_at(&[original[at as usize] ^ 0x40], at).unwrap();
    let report = assert_damaged(&lib, &format!("frame at offset {offset})"));
    let name = pack.file_stem().unwrap().to_str().unwrap();
    let in_frame =
        lib.sql(&format!("SELECT count(*) AS n FROM chunks WHERE pack = '{name}' AND pack_offset = {offset}"));
    let damaged = report["damaged"].as_array().unwrap();
    assert!(!damaged.is_empty() && damaged.len() as u64 <= in_frame[0]["n"].as_u64().unwrap(), "{report}");
    assert!(damaged.iter().all(|d| d["offset"] == offset && d["pack"] == name), "{report}");
    let uses = damaged_uses(&report);
    assert!(uses.contains(&("web@1".to_string(), "/etc/config".to_string())), "{report}");
    assert!(uses.iter().all(|(image, _)| image == "web@1"), "db keeps its own chunks: {report}");
    let text = lib.command().arg("verify").output().unwrap();
    assert!(!text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("used by web@1 /etc/config"), "{text:?}");
    // db does not use the chunk: its own verify passes, web's does not.
    assert_intact(&lib, Some("db"));
    assert!(!verify(&lib, Some("web@1")).0.status.success());
    // Reading the file now fails rather than returning wrong bytes.
    assert!(!lib.command().args(["cat", "web", "/etc/config"]).output().unwrap().status.success());
    std::fs::write(&pack, &original).unwrap();
    assert_intact(&lib, None);

    // Truncated inside that chunk: it and every chunk after it are named.
    file.set_len(at).unwrap();
    let report = assert_damaged(&lib, "truncated");
    assert!(damaged_uses(&report).contains(&("web@1".to_string(), "/etc/config".to_string())), "{report}");
    std::fs::write(&pack, &original).unwrap();

    // The trailer (the pack's own index) damaged: every chunk still reads, the pack is named.
    let end = original.len() as u64 - 1;
    file.write_all_at(&[original[end as usize] ^ 0x01], end).unwrap();
    let (out, report) = verify(&lib, None);
    assert!(!out.status.success(), "{report}");
    assert_eq!(report["damaged"], serde_json::json!([]), "{report}");
    let packs = report["damaged_packs"].as_array().unwrap();
    assert!(packs.len() == 1 && packs[0].as_str().unwrap().contains(name), "{report}");
    std::fs::write(&pack, &original).unwrap();

    // Missing: every chunk of the pack, with every image that uses one (web, and a copy of it
    // that stored nothing of its own).
    lib.checkin(&dir.path().join("web.img"), "copy");
    std::fs::rename(&pack, dir.path().join("aside.pack")).unwrap();
    let report = assert_damaged(&lib, "is missing");
    let images: std::collections::BTreeSet<String> = damaged_uses(&report).into_iter().map(|(i, _)| i).collect();
    assert!(images.contains("web@1") && images.contains("copy@1") && !images.contains("db@1"), "{report}");
    std::fs::rename(dir.path().join("aside.pack"), &pack).unwrap();
    assert_intact(&lib, None);
}

#[test]
fn cat_writes_one_file_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::new();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    let content = unique_bytes("cat", 1_000_000);
    std::fs::write(tree.join("etc/blob"), &content).unwrap();
    std::os::unix::fs::symlink("../etc/blob", tree.join("etc/link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/hostname", tree.join("etc/escape")).unwrap();
    let image = dir.path().join("cat.img");
    mkfs_ext(&tree, &image, "ext4", "8M", &[]);
    lib.checkin(&image, "cat");
    for path in ["/etc/blob", "/etc/link"] {
        let out = lib.command().args(["cat", "cat@1", path]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout == content, "cat {path}: {} bytes differ from the tree's", out.stdout.len());
    }
    let missing = lib.command().args(["cat", "cat", "/etc/missing"]).output().unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("/etc/missing") && err.lines().count() == 1, "{err}");
    // A link that climbs out of the root stays inside the image: there is no /etc/hostname in
    // it, so the host's is never read.
    let escape = lib.command().args(["cat", "cat", "/etc/escape"]).output().unwrap();
    assert!(!escape.status.success() && escape.stdout.is_empty(), "{escape:?}");
    assert!(String::from_utf8_lossy(&escape.stderr).contains("/etc/hostname"), "{escape:?}");
}

fn check(lib: &Library, flags: &[&str]) -> (Output, serde_json::Value) {
    let out = lib.command().arg("check").args(flags).arg("--json").output().expect("imagelake check");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check output is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out, report)
}

/// The `chunks` table lost (deleted, as a damaged table or a restore that missed it would
/// leave it): `check --rebuild-chunks` makes it whole again from the packs' own indexes, with
/// the same stored sizes a checkin recorded, and every version reads back byte for byte.
#[test]
fn a_lost_chunks_table_is_rebuilt_from_the_packs() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::new();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    let mut images = Vec::new();
    for name in ["web", "db"] {
        std::fs::write(tree.join("etc/motd"), format!("{name}\n")).unwrap();
        std::fs::write(tree.join("etc/config"), unique_bytes(name, 600_000)).unwrap();
        let image = dir.path().join(format!("{name}.img"));
        mkfs_ext(&tree, &image, "ext4", "8M", &[]);
        lib.checkin(&image, name);
        images.push((name, image));
    }
    let totals = "SELECT count(*) AS n, sum(stored_size) AS stored, sum(size) AS size FROM chunks";
    let before = lib.sql(totals);
    assert!(before[0]["n"].as_u64().unwrap() > 10, "{before:?}");

    std::fs::remove_dir_all(lib.path().join("catalog/chunks.lance")).unwrap();
    let (out, report) = check(&lib, &[]);
    assert!(!out.status.success(), "check passed a library without chunk rows: {report}");
    assert!(report["problems"].to_string().contains("in no pack"), "{report}");

    let (out, report) = check(&lib, &["--rebuild-chunks"]);
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report["rebuilt"]["rows_added"], before[0]["n"], "{report}");
    assert_eq!(report["rebuilt"]["unreadable"], serde_json::json!([]), "{report}");
    assert_eq!(report["check"]["problems"], serde_json::json!([]), "{report}");
    assert_eq!(lib.sql(totals), before, "the rebuilt rows are the ones checkin wrote");
    assert_intact(&lib, None);
    for (name, image) in &images {
        let out = dir.path().join(format!("{name}.out"));
        let done = lib.command().args(["checkout", name, out.to_str().unwrap()]).output().unwrap();
        assert!(done.status.success(), "{done:?}");
        assert!(std::fs::read(&out).unwrap() == std::fs::read(image).unwrap(), "{name} differs after the rebuild");
    }
    // Nothing is missing any more: a second rebuild adds nothing.
    let (out, report) = check(&lib, &["--rebuild-chunks"]);
    assert!(out.status.success() && report["rebuilt"]["rows_added"] == 0, "{report}");
}
