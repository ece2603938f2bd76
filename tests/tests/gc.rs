//! `delete`, `undelete` and `gc` on GPT disks made by sgdisk, mke2fs -d and mkfs.vfat:
//! gc frees a deleted version's unique bytes and nothing else, racing checkins lose
//! nothing, and versions share the segments of their manifests until none lists them.
//! Oracles: `cmp` of checkouts against their sources, `verify`, `check`, `du`, Lance.

use imagelake_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A GPT disk whose root filesystem holds `mib` MiB of random files (seeded by `seed`).
fn disk(dir: &Path, name: &str, seed: u64, mib: usize) -> PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    std::fs::create_dir_all(tree.join("data")).expect("mkdir");
    let mut rng = corrupt::Xorshift(seed);
    for i in 0..mib {
        std::fs::write(tree.join(format!("data/f{i}")), rng.bytes(1 << 20)).expect("write");
    }
    std::fs::write(tree.join("motd"), format!("{name}\n")).expect("write");
    let (root, esp, out) =
        (dir.join(format!("{name}.ext4")), dir.join(format!("{name}.esp")), dir.join(format!("{name}.raw")));
    mkfs_ext(&tree, &root, "ext4", &format!("{}M", mib + 16), &[]);
    mkfs_vfat(&esp, 2048);
    gpt_disk(&out, &root, &esp);
    out
}

fn pack_bytes(lib: &Library) -> u64 {
    let out = run(Command::new("du").arg("-sb").arg(lib.path().join("packs")));
    out.split_whitespace().next().and_then(|n| n.parse().ok()).expect("du")
}

fn json(lib: &Library, args: &[&str]) -> serde_json::Value {
    let out = run(lib.command().args(args).arg("--json"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn assert_checks_out(lib: &Library, spec: &str, source: &Path, scratch: &Path) {
    let out = scratch.join(format!("{}.out", spec.replace('@', "-")));
    let _ = std::fs::remove_file(&out);
    lib.checkout(spec, &out);
    assert_same_bytes(source, &out);
    std::fs::remove_file(&out).expect("rm");
}

fn assert_intact(lib: &Library) {
    let verify = run(lib.command().arg("verify"));
    assert!(verify.lines().next().unwrap_or_default().ends_with("intact"), "{verify}");
    let check = run(lib.command().arg("check"));
    assert!(check.contains("consistent"), "{check}");
}

#[test]
fn gc_frees_a_deleted_versions_unique_bytes_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = Library::new();
    // a@1 and b@1 share nothing; a@2 is a@1 with 6 MiB of new files (its unique bytes).
    let a1 = disk(dir.path(), "a1", 1, 4);
    let b1 = disk(dir.path(), "b1", 2, 4);
    lib.checkin(&a1, "a");
    lib.checkin(&b1, "b");
    let extra = dir.path().join("extra");
    std::fs::create_dir(&extra).expect("mkdir");
    let mut rng = corrupt::Xorshift(3);
    for i in 0..6 {
        std::fs::write(extra.join(format!("x{i}")), rng.bytes(1 << 20)).expect("write");
    }
    json(&lib, &["import", "a@1", extra.to_str().unwrap(), "/extra"]);
    let a2 = dir.path().join("a2.raw");
    lib.checkout("a@2", &a2);

    // What deleting it would free, asked before anyone deletes: its own chunks' stored bytes.
    let stats = lib.sql("SELECT unique_stored_bytes AS u, freed_if_deleted AS f FROM image_stats('a@2')");
    let unique = stats[0]["u"].as_u64().expect("unique");
    assert_eq!(stats[0]["f"].as_u64(), Some(unique));
    // Deleting a@1 with it would free a@1's bytes too (b shares nothing with either).
    let both = lib.sql("SELECT freed_if_deleted AS f FROM image_stats('a@1', 'a@2')");
    assert!(both.len() == 2 && both[0]["f"].as_u64().expect("f") > unique + 3_000_000, "{both:?}");
    assert!(unique > 6_000_000, "6 MiB of random data are a@2's own: {unique}");
    let before = pack_bytes(&lib);

    // delete hides, undelete restores, gc frees.
    run(lib.command().args(["delete", "a@2"]));
    assert!(lib.sql("SELECT version FROM images WHERE name = 'a'").iter().all(|r| r["version"].as_i64() == Some(1)));
    assert_eq!(
        lib.sql("SELECT count(*) AS n FROM files f JOIN images i USING (image_id) WHERE i.version = 2")[0]["n"]
            .as_i64(),
        Some(0)
    );
    let refused = attempt(lib.command().args(["checkout", "a@2"]).arg(dir.path().join("no.raw")));
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("deleted"));
    run(lib.command().args(["undelete", "a@2"]));
    assert_checks_out(&lib, "a@2", &a2, dir.path());
    run(lib.command().args(["delete", "a@2"]));

    let gc = json(&lib, &["gc"]);
    assert_eq!(gc["purged"], serde_json::json!(["a@2"]));
    let freed = before - pack_bytes(&lib);
    assert_eq!(gc["bytes_freed"].as_u64(), Some(freed));
    // Its unique bytes and nothing else: the pack of its new chunks, with the pack's own
    // header, frame index and trailer.
    assert!(freed >= unique && freed <= unique + 64 * 1024, "freed {freed}, a@2's unique stored bytes {unique}");
    let refused = attempt(lib.command().args(["undelete", "a@2"]));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("purged"));
    assert_checks_out(&lib, "a@1", &a1, dir.path());
    assert_checks_out(&lib, "b@1", &b1, dir.path());
    assert_intact(&lib);
    // A second gc has nothing to do.
    let again = json(&lib, &["gc"]);
    assert_eq!((again["chunks_freed"].as_u64(), again["bytes_freed"].as_i64()), (Some(0), Some(0)));
    let history = lib.sql("SELECT version, state FROM history('a') ORDER BY version");
    assert_eq!(history[1]["state"].as_str(), Some("purged"), "history keeps the purged version");
}

#[test]
fn gc_racing_checkins_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = Library::new();
    let keep = disk(dir.path(), "keep", 8, 2);
    lib.checkin(&keep, "keep");
    // Each round: a version whose chunks only it uses is deleted, then a checkin of the very
    // same disk (which finds every chunk in the store and stores none) races gc, which wants
    // to free them. Started apart by 0 to 1.4 s, gc first or the checkin first, so that gc
    // lands before, during and after the checkin's reading of the store and its commit.
    let delays = [0u64, 50, 150, 300, 600, 1000, 1400];
    let mut sources = Vec::new();
    for (round, delay_ms) in delays.into_iter().enumerate() {
        let source = disk(dir.path(), &format!("shared{round}"), 100 + round as u64, 4);
        let victim = format!("victim{round}");
        lib.checkin(&source, &victim);
        run(lib.command().args(["delete", &victim]));
        let name = format!("racer{round}");
        let gc = || lib.command().args(["gc", "--json"]).spawn().expect("gc");
        let checkin =
            || lib.command().arg("checkin").arg(&source).args(["--name", &name, "--json"]).spawn().expect("checkin");
        let (mut a, mut b) = if round % 2 == 0 {
            let a = checkin();
            std::thread::sleep(Duration::from_millis(delay_ms));
            (a, gc())
        } else {
            let a = gc();
            std::thread::sleep(Duration::from_millis(delay_ms));
            (a, checkin())
        };
        assert!(a.wait().expect("wait").success() && b.wait().expect("wait").success(), "round {round}");
        assert_checks_out(&lib, &format!("{name}@1"), &source, dir.path());
        sources.push(source);
    }
    // Every racer, after everything, and a last gc frees nothing any of them needs.
    run(lib.command().args(["gc", "--json"]));
    for (round, source) in sources.iter().enumerate() {
        assert_checks_out(&lib, &format!("racer{round}@1"), source, dir.path());
    }
    assert_checks_out(&lib, "keep@1", &keep, dir.path());
    assert_intact(&lib);
}

/// The stored rows of a catalog dataset (`files`, `extents`: once per segment, whatever
/// the versions that list it), read with Lance itself.
fn stored_rows(lib: &Library, table: &str) -> usize {
    let uri = lib.path().join(format!("catalog/{table}.lance"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dataset = lance::Dataset::open(uri.to_str().unwrap()).await.expect("open");
        dataset.count_rows(None).await.expect("count")
    })
}

fn count(lib: &Library, table: &str, spec: (&str, i64)) -> usize {
    let q = format!(
        "SELECT count(*) AS n FROM {table} t JOIN images i USING (image_id) WHERE i.name = '{}' AND i.version = {}",
        spec.0, spec.1
    );
    lib.sql(&q)[0]["n"].as_u64().expect("count") as usize
}

/// Versions share the segments of `files` and `extents` they have in common: an edit of one
/// file stores a few segments, a clone none; gc drops a segment only when no version lists
/// it any more, and `check` finds a version whose segment is missing.
#[test]
fn gc_drops_only_the_segments_no_version_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = Library::new();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).expect("mkdir");
    for i in 0..3000 {
        std::fs::write(tree.join(format!("etc/f{i:04}")), format!("file {i}\n")).expect("write");
    }
    let image = dir.path().join("a.img");
    mkfs_ext(&tree, &image, "ext4", "64M", &[]);
    lib.checkin(&image, "a");
    let (files_1, extents_1) = (stored_rows(&lib, "files"), stored_rows(&lib, "extents"));
    assert_eq!(files_1, count(&lib, "files", ("a", 1)));
    assert_eq!(extents_1, count(&lib, "extents", ("a", 1)));

    // One file edited: a few segments stored, not the version's 3,000 rows again.
    let motd = dir.path().join("motd");
    std::fs::write(&motd, "edited\n").expect("write");
    run(lib.command().args(["replace", "a", "/etc/f1234"]).arg(&motd));
    let edited_files = stored_rows(&lib, "files") - files_1;
    assert!(edited_files > 0 && edited_files < 3000 / 4, "the edit stored {edited_files} rows of files");
    assert_eq!(count(&lib, "files", ("a", 2)), count(&lib, "files", ("a", 1)));
    let a2 = dir.path().join("a2.raw");
    lib.checkout("a@2", &a2);

    // A clone lists a@1's segments again and stores no row.
    let stored = (stored_rows(&lib, "files"), stored_rows(&lib, "extents"));
    run(lib.command().args(["clone", "a@1", "c"]));
    assert_eq!((stored_rows(&lib, "files"), stored_rows(&lib, "extents")), stored);
    assert_eq!(count(&lib, "files", ("c", 1)), count(&lib, "files", ("a", 1)));

    // a@1 deleted: c@1 still lists every segment of it, so nothing goes.
    run(lib.command().args(["delete", "a@1"]));
    let gc = json(&lib, &["gc"]);
    assert_eq!((gc["segments_dropped"].as_u64(), gc["chunks_freed"].as_u64()), (Some(0), Some(0)), "{gc}");
    assert_eq!((stored_rows(&lib, "files"), stored_rows(&lib, "extents")), stored);
    // c@1 deleted too: what only they listed goes, and a@2 is all that is stored.
    run(lib.command().args(["delete", "c@1"]));
    let gc = json(&lib, &["gc"]);
    assert!(gc["segments_dropped"].as_u64() > Some(0), "{gc}");
    assert_eq!(stored_rows(&lib, "files"), count(&lib, "files", ("a", 2)));
    assert_eq!(stored_rows(&lib, "extents"), count(&lib, "extents", ("a", 2)));
    assert_checks_out(&lib, "a@2", &a2, dir.path());
    assert_intact(&lib);

    // A segment a@2 lists, its rows gone: check names the version and the segment.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let segment = runtime.block_on(async {
        use futures::TryStreamExt;
        let uri = lib.path().join("catalog/files.lance");
        let mut dataset = lance::Dataset::open(uri.to_str().unwrap()).await.expect("open");
        let mut scanner = dataset.scan();
        scanner.project(&["segment"]).expect("project");
        let batches: Vec<arrow::array::RecordBatch> =
            scanner.try_into_stream().await.expect("scan").try_collect().await.expect("read");
        let column = batches[0].column_by_name("segment").expect("segment");
        let segment = arrow::array::AsArray::as_string::<i32>(column).value(0).to_string();
        dataset.delete(&format!("segment = '{segment}'")).await.expect("delete");
        segment
    });
    let check = attempt(lib.command().args(["check", "--json"]));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).expect("json");
    assert_eq!(check.status.code(), Some(1), "{report}");
    let problems: Vec<&str> = report["problems"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
    assert!(
        problems.iter().any(|p| p.starts_with("a@2: segment") && p.contains(&segment) && p.contains("holds 0 of")),
        "{report}"
    );
}
