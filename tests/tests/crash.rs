//! Crash safety: `imagelake checkin` killed with SIGKILL at random moments never leaves a
//! partial image or a broken library, and what the killed run left behind is reclaimable.

use imagelake_tests::{Library, assert_qcow2_checkout, assert_same_bytes, gpt_disk, mkfs_ext, mkfs_vfat, run, tree};
use std::process::{Command, Stdio};
use std::time::Instant;

fn check(lib: &Library, extra: &[&str]) -> serde_json::Value {
    let out = run(lib.command().arg("check").arg("--json").args(extra));
    serde_json::from_str(&out).expect("check report")
}

#[test]
fn checkin_killed_at_twenty_random_moments() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    tree::build(&p("tree"));
    mkfs_vfat(&p("esp.img"), 4096);
    let disk = p("disk.img");
    // Each round's disk holds 12 MiB never seen before, so every checkin writes packs.
    let fresh_disk = || {
        run(Command::new("sh")
            .arg("-c")
            .arg(format!("head -c 12582912 /dev/urandom > '{}'", p("tree/large").display())));
        mkfs_ext(&p("tree"), &p("root.img"), "ext4", "64M", &[]);
        let _ = std::fs::remove_file(&disk);
        gpt_disk(&disk, &p("root.img"), &p("esp.img"));
    };
    fresh_disk();
    let expected_files = tree::walk(&p("tree")).len() as i64 + 2;

    // How long an undisturbed checkin takes, to spread the kills over all of it.
    let lib = Library::new();
    let started = Instant::now();
    lib.checkin(&disk, "crash");
    let full = started.elapsed();

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut killed_before_commit = 0;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = full.mul_f64((seed % 1000) as f64 / 1000.0);
        fresh_disk();
        let versions_before =
            lib.sql("SELECT count(*) AS n FROM images WHERE name = 'crash'")[0]["n"].as_i64().unwrap();
        let mut child = lib
            .command()
            .arg("checkin")
            .arg(&disk)
            .args(["--name", "crash", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        let status = child.wait().unwrap();
        let versions = lib.sql("SELECT count(*) AS n FROM images WHERE name = 'crash'")[0]["n"].as_i64().unwrap();
        if versions == versions_before {
            killed_before_commit += 1;
        }
        eprintln!("round {round}: killed after {delay:?} ({status}), versions {versions_before} -> {versions}");

        // The library opens, is consistent, and shows only whole versions.
        let report = check(&lib, &[]);
        assert_eq!(report["problems"], serde_json::json!([]), "round {round}: {report}");
        let partial = lib.sql(&format!(
            "SELECT i.version, count(f.path) AS n FROM images i LEFT JOIN files f ON f.image_id = i.image_id AND f.partition = 3 \
             WHERE i.name = 'crash' GROUP BY i.version HAVING count(f.path) <> {expected_files}"
        ));
        assert!(partial.is_empty(), "round {round}: partial versions {partial:?}");

        // What the killed run left is reclaimable, and then nothing is left.
        let reclaimed = check(&lib, &["--reclaim"])["reclaimed"].clone();
        eprintln!("  reclaimed {reclaimed}");
        let after = check(&lib, &[]);
        assert_eq!(after["orphan_image_ids"], serde_json::json!([]), "round {round}: {after}");
        assert_eq!(after["stale_files"], serde_json::json!([]), "round {round}: {after}");
        assert_eq!(after["unrecorded_catalog_files"], serde_json::json!([]), "round {round}: {after}");
        assert_eq!(std::fs::read_dir(lib.path().join("tmp")).unwrap().count(), 0, "round {round}: tmp/ not empty");

        // The next checkin of the same image succeeds and is exact.
        let summary = lib.checkin(&disk, "crash");
        let out = p("out.raw");
        lib.checkout(&format!("crash@{}", summary["version"]), &out);
        assert_same_bytes(&disk, &out);
        assert_qcow2_checkout(&lib, &format!("crash@{}", summary["version"]), &disk);
        std::fs::remove_file(&out).unwrap();
    }
    assert!(
        killed_before_commit >= 5,
        "too few kills landed before the commit ({killed_before_commit}): the test would prove little"
    );
}
