//! The store proves itself: `verify` reads every chunk back and names the images and files a
//! damaged one belongs to; `cat` reads one file of an image.

use imagelake_tests::{Library, frame_of, mkfs_ext, unique_bytes};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Output;

fn verify(lib: &Library, image: Option<&str>) -> (Output, serde_json::Value) {
    let out = lib.command().arg("verify").args(image).arg("--json").output().expect("imagelake verify");
    let report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("verify output is not JSON ({e}): {out:?}"));
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

/// Every file of a library, relative to it, in the groups a flipped byte is tried in: packs,
/// catalog data, index segments, manifests, and the rest of the catalog (commits, deletion
/// files, version hints, the checksums themselves).
fn library_files(root: &Path) -> [Vec<String>; 5] {
    let mut groups: [Vec<String>; 5] = Default::default();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().map(Result::unwrap) {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                if relative != "tmp" {
                    folders.push(path);
                }
                continue;
            }
            if entry.metadata().unwrap().len() == 0 {
                continue; // the lock files: no byte to flip
            }
            let group = if relative.starts_with("packs/") {
                0
            } else if !relative.starts_with("catalog/") {
                continue; // the marker and the id counter, checked when the library opens
            } else if relative.contains("/data/") {
                1
            } else if relative.contains("/_indices/") {
                2
            } else if relative.ends_with(".manifest") {
                3
            } else {
                4
            };
            groups[group].push(relative);
        }
    }
    for group in &mut groups {
        group.sort();
    }
    groups
}

/// Whether a verify report names `file` (relative to the library) as damaged.
fn names(report: &serde_json::Value, file: &str) -> bool {
    let list = |key: &serde_json::Value| key.as_array().cloned().unwrap_or_default();
    match file.strip_prefix("catalog/") {
        Some(catalog_file) => list(&report["catalog"]["damaged"]).iter().any(|d| d["file"] == catalog_file),
        None => {
            let pack = Path::new(file).file_stem().unwrap().to_str().unwrap();
            list(&report["damaged_packs"]).iter().any(|p| p.as_str().unwrap_or_default().contains(pack))
                || list(&report["damaged"]).iter().any(|d| d["pack"] == pack)
        }
    }
}

/// A byte flipped at random in any file of the store or the catalog (packs, Lance data files,
/// index segments, manifests, commits, deletion files, version hints, the checksums) is
/// found by `verify`, with exit status 1 and the file named: 100 trials, 20 in each group.
#[test]
fn verify_finds_a_byte_flipped_in_any_file_of_the_packs_or_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::new();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    // Several checkins (indexes with segments), an edit, a repack (level-19 packs), and a
    // version deleted and collected (deletion files).
    for n in 0..5 {
        std::fs::write(tree.join("etc/motd"), format!("host {n}\n")).unwrap();
        std::fs::write(tree.join("etc/config"), unique_bytes(&format!("config {}", n % 2), 200_000)).unwrap();
        let image = dir.path().join(format!("{n}.img"));
        mkfs_ext(&tree, &image, "ext4", "8M", &[]);
        lib.checkin(&image, &format!("host{}", n % 3));
    }
    let motd = dir.path().join("motd");
    std::fs::write(&motd, "edited\n").unwrap();
    imagelake_tests::run(lib.command().args(["replace", "host1", "/etc/motd"]).arg(&motd));
    imagelake_tests::run(lib.command().arg("repack"));
    imagelake_tests::run(lib.command().args(["delete", "host0@1"]));
    imagelake_tests::run(lib.command().arg("gc"));
    std::fs::write(tree.join("etc/motd"), "after the repack\n").unwrap();
    let image = dir.path().join("last.img");
    mkfs_ext(&tree, &image, "ext4", "8M", &[]);
    lib.checkin(&image, "host2");
    assert_intact(&lib, None);

    let root = lib.path();
    let groups = library_files(&root);
    for (n, group) in groups.iter().enumerate() {
        assert!(!group.is_empty(), "group {n} has no file: {groups:?}");
    }
    assert!(groups[4].iter().any(|f| f.contains("/_deletions/")), "{groups:?}");
    assert!(groups[4].iter().any(|f| f == "catalog/checksums"), "{groups:?}");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % bound as u64) as usize
    };
    for trial in 0..100 {
        let group = &groups[trial % groups.len()];
        let file = &group[next(group.len())];
        let path = root.join(file);
        let original = std::fs::read(&path).unwrap();
        let at = next(original.len());
        let mut flipped = original.clone();
        flipped[at] ^= 1 << next(8);
        std::fs::write(&path, &flipped).unwrap();
        let (out, report) = verify(&lib, None);
        std::fs::write(&path, &original).unwrap();
        assert_eq!(out.status.code(), Some(1), "trial {trial}: byte {at} of {file}: {report}");
        assert!(names(&report, file), "trial {trial}: byte {at} of {file} is not named: {report}");
    }
    assert_intact(&lib, None);
}

/// Rewrites the library at `root` as format 2 wrote it: no checksums, and every version's
/// `files` and `extents` rows stored whole under its image id (no `segments`).
fn downgrade_to_format_2(root: &Path) {
    use arrow::array::RecordBatchIterator;
    use imagelake_engine::catalog::{ExtentRow, FileRow, Table};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let library = imagelake_engine::Library::open(root).await.unwrap();
        let columns: Vec<String> = FileRow::schema().fields().iter().map(|f| f.name().clone()).collect();
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let (mut files, mut extents) = (Vec::new(), Vec::new());
        for image in library.images().await.unwrap() {
            files.extend(library.catalog().files(image.image_id, None, &columns).await.unwrap());
            extents.extend(library.catalog().disk_map(image.image_id, true).await.unwrap());
        }
        drop(library);
        let catalog = root.join("catalog");
        for (table, batch) in
            [("files", FileRow::batch(&files).unwrap()), ("extents", ExtentRow::batch(&extents).unwrap())]
        {
            let uri = catalog.join(format!("{table}.lance"));
            std::fs::remove_dir_all(&uri).unwrap();
            let schema = batch.schema();
            let rows = RecordBatchIterator::new([Ok(batch)], schema);
            lance::Dataset::write(rows, uri.to_str().unwrap(), None).await.unwrap();
        }
        std::fs::remove_dir_all(catalog.join("segments.lance")).unwrap();
        std::fs::remove_file(catalog.join("checksums")).unwrap();
    });
    drop_package_columns(root);
}

/// The columns format 5 added to `packages`.
const PACKAGE_COLUMNS: [&str; 5] = ["source_version", "epoch", "release", "source_rpm", "licenses"];

/// Takes from the library at `root` the columns format 5 added to `packages`, as a library of
/// format 4 lacks them.
fn drop_package_columns(root: &Path) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let uri = root.join("catalog/packages.lance");
        let mut dataset = lance::Dataset::open(uri.to_str().unwrap()).await.unwrap();
        dataset.drop_columns(&PACKAGE_COLUMNS).await.unwrap();
    });
}

/// A library of format 4 gains the columns format 5 added to `packages` when it is opened:
/// the rows it had hold NULL there (their images are not read again), a new checkin fills
/// them, and verify finds the catalog whole.
#[test]
fn a_format_4_library_gains_the_package_columns() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let dpkg = tree.join("var/lib/dpkg");
    std::fs::create_dir_all(&dpkg).unwrap();
    std::fs::write(
        dpkg.join("status"),
        "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc (2.36-9)\n\
         Version: 2.36-9+b1\n\nPackage: libc-bin\nStatus: install ok installed\nArchitecture: amd64\n\
         Source: glibc\nVersion: 2.36-9\n",
    )
    .unwrap();
    // libc-bin's documentation folder is a link to libc6's, as Debian makes such folders.
    let doc = tree.join("usr/share/doc");
    std::fs::create_dir_all(doc.join("libc6")).unwrap();
    std::fs::write(
        doc.join("libc6/copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
         Files: *\nLicense: LGPL-2.1+\n see /usr/share/common-licenses/LGPL-2.1\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("libc6", doc.join("libc-bin")).unwrap();
    let image = dir.path().join("a.img");
    mkfs_ext(&tree, &image, "ext4", "8M", &[]);
    let lib = Library::new();
    lib.checkin(&image, "a");
    // (JSON rows leave NULLs out: no epoch here.)
    let question =
        "SELECT name, version, source, source_version, epoch, licenses FROM packages ORDER BY image_id, name";
    let filled = serde_json::json!([
        {"name": "libc-bin", "version": "2.36-9", "source": "glibc", "source_version": "2.36-9",
         "licenses": ["LGPL-2.1+", "LGPL-2.1"]},
        {"name": "libc6", "version": "2.36-9+b1", "source": "glibc", "source_version": "2.36-9",
         "licenses": ["LGPL-2.1+", "LGPL-2.1"]},
    ]);
    let rows = |lib: &Library| {
        serde_json::Value::from(lib.sql(question).into_iter().map(serde_json::Value::from).collect::<Vec<_>>())
    };
    assert_eq!(rows(&lib), filled);

    let root = lib.path();
    let marker = root.join("imagelake.json");
    let written = std::fs::read_to_string(&marker).unwrap();
    drop_package_columns(&root);
    std::fs::write(&marker, written.replace("\"format_version\": 5", "\"format_version\": 4")).unwrap();
    let (out, report) = verify(&lib, None);
    assert!(out.status.success(), "{report}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), written, "the marker says format 5 again");
    let upgraded = rows(&lib);
    for row in upgraded.as_array().unwrap() {
        assert!(
            row["version"].is_string() && row.get("source_version").is_none() && row.get("licenses").is_none(),
            "{row}"
        );
    }
    lib.checkin(&image, "a");
    let both = rows(&lib);
    assert_eq!(both.as_array().unwrap()[2..], filled.as_array().unwrap()[..], "{both}");
    assert_intact(&lib, None);
}

/// A library of format 2 (before the catalog's checksums and shared segments) is upgraded
/// once, when it is opened: its `files` and `extents` rows are stored in segments, SQL and
/// checkout answer as before, its files are recorded and verify proves them from then on; a
/// file without its line, or cut short, is reported. A format this build does not know is
/// refused, naming it.
#[test]
fn a_format_2_library_is_upgraded_once_and_an_unknown_format_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::new();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/config"), unique_bytes("upgrade", 100_000)).unwrap();
    let image = dir.path().join("a.img");
    mkfs_ext(&tree, &image, "ext4", "8M", &[]);
    lib.checkin(&image, "a");
    let config = dir.path().join("config");
    std::fs::write(&config, b"edited\n").unwrap();
    imagelake_tests::run(lib.command().args(["replace", "a", "/etc/config"]).arg(&config));
    let root = lib.path();
    let marker = root.join("imagelake.json");
    let written = std::fs::read_to_string(&marker).unwrap();
    assert!(written.contains("\"format_version\": 5"), "{written}");
    let questions = [
        "SELECT image_id, partition, path, kind, mode, size, mtime, inode, content_hash FROM files ORDER BY image_id, path",
        "SELECT image_id, disk_offset, length, kind, chunk_hash, content_hash FROM extents ORDER BY image_id, disk_offset",
    ];
    let answers: Vec<_> = questions.iter().map(|q| lib.sql(q)).collect();
    assert!(answers[0].len() == 8 && answers[1].len() > 20, "{answers:?}");
    let before = dir.path().join("before.img");
    lib.checkout("a@2", &before);

    downgrade_to_format_2(&root);
    std::fs::write(&marker, written.replace("\"format_version\": 5", "\"format_version\": 2")).unwrap();
    let (out, report) = verify(&lib, None);
    assert!(out.status.success(), "{report}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), written, "the marker says format 5 again");
    assert!(!root.join("catalog.old").exists() && !root.join("catalog.next").exists());
    for (question, answer) in questions.iter().zip(&answers) {
        assert_eq!(&lib.sql(question), answer, "{question}");
    }
    let after = dir.path().join("after.img");
    lib.checkout("a@2", &after);
    imagelake_tests::assert_same_bytes(&before, &after);
    let recorded = std::fs::read_to_string(root.join("catalog/checksums")).unwrap();
    assert!(recorded.lines().count() >= 8 * 2, "a manifest and a commit per table at least: {recorded}");
    assert_eq!(report["catalog"]["files"].as_u64(), Some(recorded.lines().count() as u64), "{report}");

    // A live file whose line is lost (as when a writer dies between its commit and its record)
    // is not taken on trust by verify; check lists it as a leftover, and reclaim records it.
    let kept: String =
        recorded.lines().filter(|l| !l.contains("files.lance/data/")).map(|l| format!("{l}\n")).collect();
    std::fs::write(root.join("catalog/checksums"), &kept).unwrap();
    let (out, report) = verify(&lib, None);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let damaged = report["catalog"]["damaged"].as_array().unwrap();
    assert!(
        !damaged.is_empty()
            && damaged.iter().all(|d| d["file"].as_str().unwrap().starts_with("files.lance/data/")
                && d["table"] == "files"
                && d["reason"].as_str().unwrap().contains("no checksum is recorded")),
        "{report}"
    );
    let unproved: Vec<&serde_json::Value> = damaged.iter().map(|d| &d["file"]).collect();
    let check: serde_json::Value =
        serde_json::from_str(&imagelake_tests::run(lib.command().args(["check", "--json"]))).unwrap();
    assert_eq!(check["problems"], serde_json::json!([]), "{check}");
    assert_eq!(check["unrecorded_catalog_files"].as_array().unwrap().iter().collect::<Vec<_>>(), unproved, "{check}");
    imagelake_tests::run(lib.command().args(["check", "--reclaim"]));
    assert_intact(&lib, None);
    // (The reclaim's prune also dropped the files the upgrade's own commits superseded.)
    let (_, report) = verify(&lib, None);
    assert_eq!(
        report["catalog"]["files"].as_u64(),
        Some(std::fs::read_to_string(root.join("catalog/checksums")).unwrap().lines().count() as u64),
        "{report}"
    );

    // `check` finds a catalog file cut short by its size alone, and says so rather than fail
    // on what Lance then cannot read.
    let data = std::fs::read_dir(root.join("catalog/files.lance/data")).unwrap().next().unwrap().unwrap().path();
    let original = std::fs::read(&data).unwrap();
    std::fs::write(&data, &original[..original.len() - 10]).unwrap();
    let check = lib.command().args(["check", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(check.status.code(), Some(1), "{report}");
    let name = data.file_name().unwrap().to_str().unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains(name) && p.as_str().unwrap().contains("when it was written")),
        "{report}"
    );
    std::fs::write(&data, &original).unwrap();
    assert_eq!(
        imagelake_tests::run(lib.command().arg("check")).lines().next().map(|l| l.ends_with("consistent")),
        Some(true)
    );

    std::fs::write(&marker, written.replace("\"format_version\": 5", "\"format_version\": 9")).unwrap();
    let refused = lib.command().arg("verify").output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("format version 9"), "{stderr}");
}
