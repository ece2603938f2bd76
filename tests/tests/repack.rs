//! `imagelake repack`: settled packs rewritten at zstd 19 while checkins and readers go on,
//! and killed at any moment without losing a byte.

use imagelake_tests::{Library, assert_same_bytes, mkfs_ext, run};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

/// Text no other image holds: compressible like real files, unique like a new release.
fn write_text(path: &Path, seed: &str, len: usize) {
    let mut out = String::with_capacity(len + 100);
    let mut n = 0u64;
    while out.len() < len {
        let h = blake3::hash(format!("{seed}/{n}").as_bytes()).to_hex();
        out.push_str(&format!("line {n} of {seed}: value={} checksum={}\n", &h[..8], &h[8..24]));
        n += 1;
    }
    std::fs::write(path, out).unwrap();
}

/// An ext4 image holding `shared` (the same in every image) and 4 MB of its own.
fn image(work: &Path, name: &str) -> PathBuf {
    let tree = work.join(format!("{name}.tree"));
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    write_text(&tree.join("etc/shared"), "shared", 3_000_000);
    write_text(&tree.join("etc/own"), name, 4_000_000);
    let out = work.join(format!("{name}.img"));
    mkfs_ext(&tree, &out, "ext4", "24M", &[]);
    out
}

fn repack(lib: &Library) -> serde_json::Value {
    serde_json::from_str(&run(lib.command().args(["repack", "--json"]))).expect("repack summary")
}

/// Every version checks out byte-exact, `verify` reads every chunk back, `check` is clean.
fn assert_whole(lib: &Library, images: &[(&str, &Path)], work: &Path) {
    for (name, original) in images {
        let out = work.join("out.raw");
        let _ = std::fs::remove_file(&out);
        lib.checkout(name, &out);
        assert_same_bytes(original, &out);
    }
    let verify: serde_json::Value = serde_json::from_str(&run(lib.command().args(["verify", "--json"]))).unwrap();
    assert_eq!(verify["damaged"], serde_json::json!([]), "{verify}");
    let check: serde_json::Value = serde_json::from_str(&run(lib.command().args(["check", "--json"]))).unwrap();
    assert_eq!(check["problems"], serde_json::json!([]), "{check}");
}

fn pack_files(lib: &Library) -> Vec<PathBuf> {
    let mut packs = Vec::new();
    for fan in std::fs::read_dir(lib.path().join("packs")).unwrap() {
        for pack in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            packs.push(pack.unwrap().path());
        }
    }
    packs
}

/// The zstd level in a pack's header.
fn level(pack: &Path) -> u32 {
    let bytes = std::fs::read(pack).unwrap();
    u32::from_le_bytes(bytes[12..16].try_into().unwrap())
}

#[test]
fn repack_shrinks_the_store_while_checkins_and_readers_go_on() {
    let work = tempfile::tempdir().unwrap();
    let (a, b, c) = (image(work.path(), "a"), image(work.path(), "b"), image(work.path(), "c"));
    let lib = Library::new();
    lib.checkin(&a, "a");
    lib.checkin(&b, "b");
    let before: u64 = pack_files(&lib).iter().map(|p| p.metadata().unwrap().len()).sum();
    assert!(pack_files(&lib).iter().all(|p| level(p) == 3));

    // A checkin and a stream of readers while the repack runs.
    let checkin = lib.command().args(["checkin", c.to_str().unwrap(), "--name", "c", "--json"]).spawn().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let summary = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = lib.command().args(["cat", "a", "/etc/shared"]).output().unwrap();
                assert!(out.status.success(), "cat during a repack: {}", String::from_utf8_lossy(&out.stderr));
                assert_eq!(
                    out.stdout.len(),
                    std::fs::metadata(work.path().join("a.tree/etc/shared")).unwrap().len() as usize
                );
                let rows = lib.sql("SELECT count(*) AS n FROM files WHERE path = '/etc/own'");
                assert!(rows[0]["n"].as_u64().unwrap() >= 2);
                reads += 1;
            }
            reads
        });
        let summary = repack(&lib);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0, "no read ran during the repack");
        summary
    });
    let checked_in = checkin.wait_with_output().unwrap();
    assert!(checked_in.status.success());

    // a's and b's packs (and maybe c's, if it was published in time) were rewritten: the
    // shared file once, everything smaller, and nothing of the old packs left behind.
    assert!(summary["packs_read"].as_u64().unwrap() >= 2, "{summary}");
    let (was, is) = (summary["bytes_before"].as_u64().unwrap(), summary["bytes_after"].as_u64().unwrap());
    assert!(is < was * 9 / 10, "repack should save at least a tenth here: {was} -> {is}");
    assert!(was >= before, "a's and b's packs were all read: {before} -> {summary}");
    assert_whole(&lib, &[("a", &a), ("b", &b), ("c", &c)], work.path());

    // Once c's packs are repacked too, every pack is level 19 and no retired pack is left.
    let again = repack(&lib);
    assert_eq!(again["prune"]["readers_in_flight"], false, "{again}");
    assert!(pack_files(&lib).iter().all(|p| level(p) == 19), "{again}");
    assert!(!lib.path().join("retired").exists());
    let third = repack(&lib);
    assert_eq!(third["packs_read"], 0, "nothing left to repack: {third}");
    assert_whole(&lib, &[("a", &a), ("b", &b), ("c", &c)], work.path());
}

#[test]
fn repack_killed_at_any_moment_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (image(work.path(), "a"), image(work.path(), "b"));
    let lib = Library::new();
    lib.checkin(&a, "a");
    lib.checkin(&b, "b");
    let started = Instant::now();
    let probe = Library::new();
    probe.checkin(&a, "a");
    probe.checkin(&b, "b");
    repack(&probe);
    let full = started.elapsed();

    for round in 0..6u32 {
        let mut child = lib.command().args(["repack", "--json"]).stdout(Stdio::null()).spawn().unwrap();
        std::thread::sleep(full * round / 6);
        let _ = child.kill();
        child.wait().unwrap();
        assert_whole(&lib, &[("a", &a), ("b", &b)], work.path());
    }
    // The leftovers go: a repack finishes and check --reclaim prunes.
    repack(&lib);
    run(lib.command().args(["check", "--reclaim", "--json"]));
    // Every pack a repack retired is gone. (A kill between publishing new packs and appending
    // their rows leaves level-19 packs nobody refers to: garbage collection removes those.)
    assert!(!lib.path().join("retired").exists());
    let on_disk = pack_files(&lib);
    assert!(on_disk.iter().all(|p| level(p) == 19), "{on_disk:?}");
    assert_whole(&lib, &[("a", &a), ("b", &b)], work.path());
}
