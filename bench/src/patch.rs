//! The patch benchmark: Mirage's deployer scenario (tests/images/patch-trees.sh: A.0 a Debian
//! minbase, A.1 = A.0 + `apt-get install less bc` and a new motd, B.1 = A.0 + nginx-light and
//! a system user) done two ways, side by side in one run, alternating, several rounds:
//!
//! - `imagelake patch b@1 a@1 a@2`: offline, from the catalog and the store;
//! - the unstructured route to the same result: `imagelake checkout b@1`, a loop mount of its
//!   root filesystem, `apt-get install less bc` in a chroot, the same motd, unmount,
//!   `imagelake checkin`; once with the packages already downloaded (the network not timed),
//!   once with apt-get downloading them from the mirror, as it does by default.
//!
//! Both results are checked to hold the same packages (name and version, from the catalog).
//! Runs as root (mount, chroot). Run: `cargo build --release --bin imagelake && cargo run
//! --release -p imagelake-bench --bin bench-patch [ROUNDS]`

use imagelake_tests::{Library, cache_dir, repo_root, run, sh};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One way to B.2, timed: its wall seconds.
type Route<'a> = Box<dyn Fn() -> f64 + 'a>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The root filesystem's first byte in a version's disk.
fn root_start(lib: &Library, name: &str, version: i64) -> i64 {
    let rows = lib.sql(&format!(
        "SELECT p.start FROM partitions p JOIN images i USING (image_id) WHERE i.name = '{name}' AND i.version = {version} AND p.fs_type = 'ext4'"
    ));
    rows[0]["start"].as_i64().expect("start")
}

fn packages(lib: &Library, name: &str, version: i64) -> BTreeSet<(String, String)> {
    lib.sql(&format!(
        "SELECT p.name, p.version FROM packages p JOIN images i USING (image_id) WHERE i.name = '{name}' AND i.version = {version}"
    ))
    .iter()
    .map(|r| (r["name"].as_str().unwrap_or_default().to_string(), r["version"].as_str().unwrap_or_default().to_string()))
    .collect()
}

/// Runs `script` in a chroot of the mounted system at `root`, as patch-trees.sh does.
fn in_chroot(root: &Path, script: &str) {
    sh(&format!(
        "set -e; r={r}; cp /etc/resolv.conf $r/etc/resolv.conf; printf '#!/bin/sh\\nexit 101\\n' > $r/usr/sbin/policy-rc.d; chmod 755 $r/usr/sbin/policy-rc.d
         mount -t proc proc $r/proc
         chroot $r env DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c '{script}' > /dev/null 2>&1 || {{ umount $r/proc; exit 1; }}
         umount $r/proc; rm -f $r/usr/sbin/policy-rc.d",
        r = root.display()
    ));
}

fn main() {
    let rounds = std::env::args().nth(1).map_or(3, |r| r.parse::<usize>().expect("ROUNDS is a number")).max(1);
    let scenario = PathBuf::from(
        run(Command::new("bash").arg(repo_root().join("tests/images/patch-trees.sh")).arg(cache_dir())).trim(),
    );
    let work = tempfile::tempdir().expect("tempdir");
    let debs = work.path().join("debs");
    let mnt = work.path().join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    std::fs::create_dir_all(&debs).expect("mkdir");

    let (mut offline, mut unstructured, mut downloading) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let lib = Library::new();
        lib.checkin(&scenario.join("a0.raw"), "a");
        lib.checkin(&scenario.join("a1.raw"), "a");
        lib.checkin(&scenario.join("b1.raw"), "b");
        let disk = work.path().join("b.raw");
        let start = root_start(&lib, "b", 1);
        if round == 0 {
            // The packages, downloaded once and kept: the network is not what is timed.
            let _ = std::fs::remove_file(&disk);
            lib.checkout("b@1", &disk);
            run(Command::new("mount").args(["-o", &format!("loop,offset={start}")]).arg(&disk).arg(&mnt));
            in_chroot(&mnt, "apt-get install -y --download-only --no-install-recommends less bc");
            sh(&format!("cp {}/var/cache/apt/archives/*.deb {}/", mnt.display(), debs.display()));
            run(Command::new("umount").arg(&mnt));
        }

        let mut ways: Vec<(&str, Route)> = vec![
            (
                "patch",
                Box::new(|| {
                    let started = Instant::now();
                    run(lib.command().args(["patch", "b@1", "a@1", "a@2", "--json"]));
                    started.elapsed().as_secs_f64()
                }),
            ),
            ("apt", Box::new(|| apt_route(&lib, &disk, &mnt, start, Some(&debs)))),
            ("apt, downloading", Box::new(|| apt_route(&lib, &disk, &mnt, start, None))),
        ];
        // Each route first in turn.
        ways.rotate_left(round % 3);
        let mut made = Vec::new();
        for (way, f) in &ways {
            // The previous route's writes reach the disk first, untimed.
            sh("sync");
            let seconds = f();
            eprintln!("  {way}: {seconds:.2} s");
            match *way {
                "patch" => offline.push(seconds),
                "apt" => unstructured.push(seconds),
                _ => downloading.push(seconds),
            }
            made.push(lib.sql("SELECT max(version) AS v FROM images WHERE name = 'b'")[0]["v"].as_i64().expect("v"));
        }
        // The same result: the packages of A.1 and of B.1, at their versions, and the motd.
        let motd = |v: i64| run(lib.command().args(["cat", &format!("b@{v}"), "/etc/motd"]));
        for pair in made.windows(2) {
            assert_eq!(packages(&lib, "b", pair[0]), packages(&lib, "b", pair[1]), "the routes give other packages");
            assert_eq!(motd(pair[0]), motd(pair[1]));
        }
    }
    let (p, a, d) = (median(offline), median(unstructured), median(downloading));
    let target = |r: f64| if r >= 4.0 { "met" } else { "**missed**" };
    println!("Deployer scenario (tests/images/patch-trees.sh), {rounds} rounds, medians; release build.\n");
    println!("| route | wall time | unstructured / patch |");
    println!("|---|---|---|");
    println!("| `imagelake patch b@1 a@1 a@2` | {p:.2} s | |");
    println!(
        "| checkout, loop mount, `apt-get install less bc` in a chroot (packages already downloaded), motd, unmount, checkin | {a:.2} s | **{:.1}x** (target ≥ 4x: {}) |",
        a / p,
        target(a / p)
    );
    println!(
        "| the same, apt-get downloading the packages from the mirror | {d:.2} s | **{:.1}x** (target ≥ 4x: {}) |",
        d / p,
        target(d / p)
    );
}

/// The unstructured route: checkout, loop mount, apt-get in a chroot (from `debs` when given,
/// else downloading), the motd, unmount, checkin. Returns its wall time.
fn apt_route(lib: &Library, disk: &Path, mnt: &Path, start: i64, debs: Option<&Path>) -> f64 {
    let started = Instant::now();
    let _ = std::fs::remove_file(disk);
    lib.checkout("b@1", disk);
    run(Command::new("mount").args(["-o", &format!("loop,offset={start}")]).arg(disk).arg(mnt));
    if let Some(debs) = debs {
        sh(&format!("cp {}/*.deb {}/var/cache/apt/archives/", debs.display(), mnt.display()));
    }
    in_chroot(
        mnt,
        "apt-get install -y --no-install-recommends less bc && rm -f /var/cache/apt/archives/*.deb && printf \"A.1: updated by the OS team\\n\" > /etc/motd",
    );
    run(Command::new("umount").arg(mnt));
    lib.checkin(disk, "b");
    started.elapsed().as_secs_f64()
}
