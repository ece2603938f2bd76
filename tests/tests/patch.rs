//! `patch` on real Debian systems (tests/images/patch-trees.sh): the OS team's update A.0 ->
//! A.1 (apt-get install less bc, a new motd) carried onto B.1 (A.0 + nginx-light and a system
//! user), offline. Oracles: e2fsck -fn, the kernel's read-only loop mount, `dpkg --audit` and
//! `dpkg-query -W` over the mounted tree, and the catalog rows of the three inputs.

use imagelake_tests::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scenario() -> PathBuf {
    let script = repo_root().join("tests/images/patch-trees.sh");
    PathBuf::from(run(Command::new("bash").arg(script).arg(cache_dir())).trim())
}

/// A checkout of `spec`, its root filesystem mounted read-only by the kernel while `check`
/// runs; e2fsck -fn must find it clean first.
fn with_mounted(lib: &Library, spec: &str, check: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("disk.raw");
    lib.checkout(spec, &disk);
    let (name, version) = spec.split_once('@').expect("name@version");
    let rows = lib.sql(&format!(
        "SELECT p.start FROM partitions p JOIN images i USING (image_id) WHERE i.name = '{name}' AND i.version = {version} AND p.fs_type = 'ext4'"
    ));
    let start = rows[0]["start"].as_i64().expect("start");
    let fsck = attempt(Command::new("e2fsck").arg("-fn").arg(format!("{}?offset={start}", disk.display())));
    assert!(fsck.status.success(), "{spec}: e2fsck -fn:\n{}", String::from_utf8_lossy(&fsck.stdout));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    run(Command::new("mount").args(["-o", &format!("ro,loop,offset={start}")]).arg(&disk).arg(&mnt));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&mnt)));
    run(Command::new("umount").arg(&mnt));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// dpkg's own view of a mounted system: `--audit` says nothing, and the installed packages.
fn dpkg_packages(root: &Path) -> BTreeSet<String> {
    let admindir = root.join("var/lib/dpkg");
    let audit = attempt(Command::new("dpkg").arg(format!("--admindir={}", admindir.display())).arg("--audit"));
    let said = String::from_utf8_lossy(&audit.stdout).to_string() + &String::from_utf8_lossy(&audit.stderr);
    assert!(audit.status.success() && said.trim().is_empty(), "dpkg --audit: {said}");
    dpkg_query(&admindir).into_iter().map(|(name, _, _)| name).collect()
}

fn users(root: &Path) -> BTreeSet<String> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    passwd.lines().filter_map(|l| l.split(':').next()).map(str::to_string).collect()
}

#[test]
fn patch_carries_an_os_update_onto_a_middleware_image_offline() {
    let scenario = scenario();
    let lib = Library::new();
    lib.checkin(&scenario.join("a0.raw"), "a");
    lib.checkin(&scenario.join("a1.raw"), "a");
    lib.checkin(&scenario.join("b1.raw"), "b");
    lib.checkin(&scenario.join("b1c.raw"), "c");

    // B.2 = B.1 + diff(A.0, A.1): no conflict. Without root: the edit, the filesystem checks
    // and ldconfig (in a user namespace) all run as nobody.
    let out = run(lib.command_unprivileged().args(["patch", "b@1", "a@1", "a@2", "--json"]));
    let summary: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(summary["conflicts"].as_u64(), Some(0), "{out}");
    assert_eq!(summary["made"]["name"].as_str(), Some("b"));
    assert_eq!(summary["made"]["version"].as_i64(), Some(2));
    let outcome = |path: &str| {
        summary["rows"].as_array().expect("rows").iter().find(|r| r["path"] == path).map(|r| r["outcome"].to_string())
    };
    assert_eq!(outcome("/var/lib/dpkg/status").as_deref(), Some("\"merged\""), "{out}");
    assert_eq!(outcome("/usr/bin/less").as_deref(), Some("\"applied\""), "{out}");

    assert_eq!(outcome("/etc/ld.so.cache").as_deref(), Some("\"rebuilt\""), "{out}");
    let (mut a1_packages, mut a1_libraries) = (BTreeSet::new(), BTreeSet::new());
    with_mounted(&lib, "a@2", |root| (a1_packages, a1_libraries) = (dpkg_packages(root), libraries(root)));
    let (mut b1_users, mut b1_libraries) = (BTreeSet::new(), BTreeSet::new());
    with_mounted(&lib, "b@1", |root| (b1_users, b1_libraries) = (users(root), libraries(root)));
    assert!(!a1_libraries.is_superset(&b1_libraries) && !b1_libraries.is_superset(&a1_libraries));
    assert!(b1_users.contains("nginx"));
    with_mounted(&lib, "b@2", |root| {
        let packages = dpkg_packages(root);
        for p in ["nginx-light", "less", "bc"] {
            assert!(packages.contains(p), "dpkg-query -W of B.2 lacks {p}: {packages:?}");
        }
        assert!(a1_packages.is_subset(&packages), "B.2 lacks packages of A.1");
        assert_eq!(std::fs::read_to_string(root.join("etc/motd")).expect("motd"), "A.1: updated by the OS team\n");
        assert!(b1_users.is_subset(&users(root)), "B.2 lost users of B.1");
        assert!(root.join("usr/bin/less").is_file() && root.join("usr/sbin/nginx").is_file());
        // The linker's cache, rebuilt, knows the libraries of both installs.
        let both: BTreeSet<String> = a1_libraries.union(&b1_libraries).cloned().collect();
        assert_eq!(libraries(root), both);
    });
    // Every file A.1's install added, and every file B.1's added, is in B.2 as it was, but for
    // those both added and the patch merged (or rebuilt, dropped, kept).
    let combined: BTreeSet<String> = summary["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| !matches!(r["outcome"].as_str(), Some("applied" | "same")))
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .collect();
    for (side, base) in [("a@2", "a@1"), ("b@1", "a@1")] {
        let (name, v) = side.split_once('@').unwrap();
        let missing = lib.sql(&format!(
            "WITH side AS (SELECT f.path, f.content_hash FROM files f JOIN images i USING (image_id) WHERE i.name = '{name}' AND i.version = {v} AND f.partition = 3 AND f.kind = 'file'),
                  base AS (SELECT f.path FROM files f JOIN images i USING (image_id) WHERE i.name = 'a' AND i.version = 1 AND f.partition = 3),
                  b2 AS (SELECT f.path, f.content_hash FROM files f JOIN images i USING (image_id) WHERE i.name = 'b' AND i.version = 2 AND f.partition = 3)
             SELECT side.path FROM side LEFT JOIN b2 ON side.path = b2.path AND side.content_hash = b2.content_hash
             WHERE side.path NOT IN (SELECT path FROM base) AND b2.path IS NULL"
        ));
        let missing: Vec<_> =
            missing.iter().filter_map(|r| r["path"].as_str()).filter(|p| !combined.contains(*p)).collect();
        assert!(missing.is_empty(), "files {side} added to {base} are missing from b@2: {missing:?}");
    }

    // The motd edited in B.1 as well: one conflict row, and with fail nothing is written.
    let failed = attempt(lib.command().args(["patch", "c@1", "a@1", "a@2", "--json"]));
    assert!(!failed.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&failed.stdout).expect("json");
    let conflicts: Vec<_> =
        summary["rows"].as_array().expect("rows").iter().filter(|r| r["outcome"] == "conflict").collect();
    assert_eq!(conflicts.len(), 1, "{summary}");
    assert_eq!(conflicts[0]["path"].as_str(), Some("/etc/motd"));
    assert!(summary["made"].is_null());
    assert_eq!(lib.sql("SELECT count(*) AS n FROM images WHERE name = 'c'")[0]["n"].as_i64(), Some(1));
    let sql = lib.sql("SELECT path, outcome FROM patch('c@1', 'a@1', 'a@2') WHERE outcome = 'conflict'");
    assert_eq!(sql.len(), 1);
    // `ours` keeps the target's motd and applies the rest.
    let kept = lib.sql("SELECT DISTINCT made FROM patch('c@1', 'a@1', 'a@2', 'ours')");
    assert_eq!(kept[0]["made"].as_str(), Some("c@2"));
    assert_eq!(run(lib.command().args(["cat", "c@2", "/etc/motd"])), "B.1: edited by the middleware team\n");

    // RC2 as one statement: a stand-in kernel module tree imported into every newest version
    // a query returns; each result passes the same checks.
    let kmod = tempfile::tempdir().expect("tempdir");
    sh(&format!(
        "set -e; cd {}; mkdir -p kernel/drivers/net; head -c 100000 /dev/urandom > kernel/drivers/net/e1000.ko; printf 'kernel/drivers/net/e1000.ko:\\n' > modules.dep",
        kmod.path().display()
    ));
    let made = lib.sql(&format!(
        "SELECT name, import(name || '@' || CAST(version AS VARCHAR), '{}', '/lib/modules/6.1.0-rc2') AS made
         FROM images i WHERE version = (SELECT max(version) FROM images j WHERE j.name = i.name) ORDER BY name",
        kmod.path().display()
    ));
    let made: Vec<String> = made.iter().map(|r| r["made"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(made, ["a@3", "b@3", "c@3"]);
    for spec in &made {
        with_mounted(&lib, spec, |root| {
            dpkg_packages(root);
            let diff = attempt(Command::new("diff").arg("-r").arg(kmod.path()).arg(root.join("lib/modules/6.1.0-rc2")));
            assert!(diff.status.success(), "{spec}: {}", String::from_utf8_lossy(&diff.stdout));
        });
    }
    let history = lib.sql("SELECT version, operation FROM history('b') ORDER BY version");
    let ops: Vec<_> = history.iter().filter_map(|r| r["operation"].as_str()).collect();
    assert_eq!(ops, ["checkin", "patch", "import"]);
    assert!(run(lib.command().arg("verify")).lines().next().unwrap_or_default().ends_with("intact"));
}

/// The entries of a mounted system's /etc/ld.so.cache, as `ldconfig -p` prints them.
fn libraries(root: &Path) -> BTreeSet<String> {
    let out = run(Command::new("ldconfig").arg("-p").arg("-C").arg(root.join("etc/ld.so.cache")));
    out.lines().filter(|l| l.contains("=>")).map(|l| l.trim().to_string()).collect()
}
