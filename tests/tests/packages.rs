//! Package databases of every family, built by their real tools or in their documented
//! format, read into `packages` exactly as the managers themselves list them.

use imagelake_tests::{Library, mkfs_ext, rpm, run, sh};
use std::collections::BTreeSet;
use std::process::Command;

type Rows = BTreeSet<(String, String, String)>;

fn package_rows(lib: &Library, id: i64, manager: &str) -> Rows {
    lib.sql(&format!("SELECT name, version, arch FROM packages WHERE image_id = {id} AND manager = '{manager}'"))
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["version"].as_str().unwrap().into(),
                r["arch"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// Real packages from rpmbuild (name, epoch line, number of files), installed by Debian's rpm
/// into `work/tree` (its sqlite database at /var/lib/rpm); returns what `rpm -qa` lists.
fn rpm_tree(work: &std::path::Path, packages: &[(&str, &str, usize)]) -> Rows {
    let p = |n: &str| work.join(n);
    let rpms = rpm::build(work, packages);
    std::fs::create_dir_all(p("tree/etc")).unwrap();
    std::fs::write(p("tree/etc/os-release"), "ID=fedora\nVERSION_ID=40\n").unwrap();
    rpm::install(&rpm::debian_binary(), &p("tree"), "/var/lib/rpm", "sqlite", &rpms);
    rpm::query_all(&rpm::debian_binary(), &p("tree/var/lib/rpm"), "sqlite")
}

#[test]
fn rpm_sqlite_database_made_by_rpm() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    // Two real packages, one with an epoch.
    let expected = rpm_tree(work.path(), &[("hello", "Epoch: 3\n", 1), ("tiny-tool", "", 1)]);
    assert_eq!(expected.len(), 2, "{expected:?}");

    mkfs_ext(&p("tree"), &p("fedora.img"), "ext4", "16M", &[]);
    let lib = Library::new();
    let summary = lib.checkin(&p("fedora.img"), "fedora");
    let id = summary["image_id"].as_i64().unwrap();
    assert_eq!(package_rows(&lib, id, "rpm"), expected);
    assert!(expected.contains(&("hello".into(), "3:1.2-4".into(), "noarch".into())));
    let sources = lib.sql(&format!("SELECT source FROM packages WHERE image_id = {id} ORDER BY name"));
    assert_eq!(sources[0]["source"], "hello");
    // The database was read from a private copy that is gone again.
    assert_eq!(std::fs::read_dir(lib.path().join("tmp")).unwrap().count(), 0);

    // An old Berkeley DB database is not misread: the checkin says it is not indexed.
    std::fs::remove_dir_all(p("tree/var/lib/rpm")).unwrap();
    std::fs::create_dir_all(p("tree/var/lib/rpm")).unwrap();
    std::fs::write(p("tree/var/lib/rpm/Packages"), vec![0u8; 8192]).unwrap();
    mkfs_ext(&p("tree"), &p("rhel7.img"), "ext4", "16M", &[]);
    let summary = lib.checkin(&p("rhel7.img"), "rhel7");
    assert_eq!(summary["packages"], 0);
    assert!(summary["warnings"].to_string().contains("Berkeley DB"), "{summary}");
}

/// RHEL 7 and 8 keep rpm's database in Berkeley DB: the same headers rpm wrote, loaded into
/// a hash database by the Berkeley DB library's own `db_load`, read by rpm's `bdb_ro` backend
/// as the oracle, in an XFS root as RHEL lays it out.
#[test]
fn rpm_berkeley_db_database_made_by_db_load() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    // A package of 600 files: its header spans several overflow pages.
    let installed = rpm_tree(work.path(), &[("hello", "Epoch: 3\n", 1), ("tiny-tool", "", 1), ("many-files", "", 600)]);
    let rpmdb = p("tree/var/lib/rpm");
    // db_load's text format: a key line and a value line per record, bytes outside printable
    // ASCII as \xx; keys are package numbers in the machine's byte order.
    let dump = r#"
import sqlite3, sys
esc = lambda b: ''.join(chr(x) if 32 <= x < 127 and x != 92 else '\\%02x' % x for x in b)
for hnum, blob in sqlite3.connect(sys.argv[1]).execute('SELECT hnum, blob FROM Packages'):
    print(esc(hnum.to_bytes(4, sys.byteorder)))
    print(esc(blob))
"#;
    let records = run(Command::new("python3").arg("-c").arg(dump).arg(rpmdb.join("rpmdb.sqlite")));
    for f in std::fs::read_dir(&rpmdb).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    std::fs::write(p("records"), records).unwrap();
    run(Command::new("sh").arg("-c").arg(format!(
        "db5.3_load -T -t hash '{}' < '{}'",
        rpmdb.join("Packages").display(),
        p("records").display()
    )));
    let expected = rpm::query_all(&rpm::debian_binary(), &rpmdb, "bdb_ro");
    assert_eq!(expected, installed, "rpm reads the Berkeley DB database as it read its own");
    // Every header lies on overflow pages, the big one on more than one.
    let stat = run(Command::new("db5.3_stat").arg("-d").arg(rpmdb.join("Packages")));
    let count = |what: &str| -> u64 {
        let line = stat.lines().find(|l| l.ends_with(what)).unwrap_or_else(|| panic!("{what}: {stat}"));
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(count("Number of overflow pages") > 3, "{stat}");

    // In an XFS root.
    run(Command::new("truncate").arg("-s320M").arg(p("rhel.img")));
    run(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(p("rhel.img")));
    std::fs::create_dir(p("mnt")).unwrap();
    run(Command::new("mount").arg("-o").arg("loop").arg(p("rhel.img")).arg(p("mnt")));
    let copied = Command::new("cp").arg("-a").arg(format!("{}/.", p("tree").display())).arg(p("mnt")).status();
    run(Command::new("umount").arg(p("mnt")));
    assert!(copied.unwrap().success());
    let lib = Library::new();
    let summary = lib.checkin(&p("rhel.img"), "rhel8");
    let id = summary["image_id"].as_i64().unwrap();
    assert_eq!(summary["warnings"], serde_json::json!([]), "{summary}");
    assert_eq!(package_rows(&lib, id, "rpm"), expected);
    assert!(expected.contains(&("many-files".into(), "1.2-4".into(), "noarch".into())));

    // Cut short, the database is not misread: the checkin says why it is not indexed.
    let db = std::fs::read(rpmdb.join("Packages")).unwrap();
    std::fs::write(rpmdb.join("Packages"), &db[..db.len() / 2]).unwrap();
    mkfs_ext(&p("tree"), &p("cut.img"), "ext4", "16M", &[]);
    let summary = lib.checkin(&p("cut.img"), "cut");
    assert_eq!(summary["packages"], 0);
    assert!(summary["warnings"].to_string().contains("Berkeley DB: the file holds"), "{summary}");
}

/// SUSE Linux Enterprise 15 keeps rpm's database in NDB, `/usr/lib/sysimage/rpm/Packages.db`
/// with `/var/lib/rpm` a link to its folder, on a btrfs root in a snapshot subvolume. The
/// database is written and erased from by rpm itself (built with NDB by scripts/rpm-ndb.sh),
/// whose `rpm -qa` is the oracle.
#[test]
fn rpm_ndb_database_made_by_rpm_on_a_suse_btrfs_root() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    let ndb = rpm::ndb_binary();
    // A header spanning many blocks, an epoch, and a package erased again: a free slot.
    let rpms = rpm::build(work.path(), &[("hello", "Epoch: 3\n", 1), ("tiny-tool", "", 1), ("many-files", "", 600)]);
    let tree = p("tree");
    rpm::install(&ndb, &tree, "/usr/lib/sysimage/rpm", "ndb", &rpms);
    rpm::erase(&ndb, &tree, "/usr/lib/sysimage/rpm", "tiny-tool");
    std::fs::create_dir_all(tree.join("var/lib")).unwrap();
    std::os::unix::fs::symlink("../../usr/lib/sysimage/rpm", tree.join("var/lib/rpm")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/os-release"), "NAME=\"SLES\"\nID=\"sles\"\nVERSION_ID=\"15.6\"\n").unwrap();
    let dbpath = tree.join("usr/lib/sysimage/rpm");
    assert!(dbpath.join("Packages.db").exists() && !dbpath.join("rpmdb.sqlite").exists());
    let expected = rpm::query_all(&ndb, &dbpath, "ndb");
    let names: Vec<&str> = expected.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names, ["hello", "many-files"]);

    // SUSE's layout: the root is a snapshot below `@`, the default subvolume; written under
    // compress=zstd, so the database is read through compressed extents.
    let image = p("sles.img");
    run(Command::new("truncate").arg("-s128M").arg(&image));
    run(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&image));
    std::fs::create_dir(p("mnt")).unwrap();
    run(Command::new("mount").arg("-o").arg("loop,compress=zstd").arg(&image).arg(p("mnt")));
    let (m, t) = (p("mnt").display().to_string(), tree.display().to_string());
    let made = std::panic::catch_unwind(|| {
        sh(&format!(
            "set -e; cd '{m}'
             btrfs subvolume create @ > /dev/null && mkdir -p @/.snapshots/1
             btrfs subvolume create @/.snapshots/1/snapshot > /dev/null
             cp -a --reflink=never '{t}/.' @/.snapshots/1/snapshot/
             btrfs subvolume set-default @/.snapshots/1/snapshot
             sync"
        ))
    });
    run(Command::new("umount").arg(p("mnt")));
    made.expect("making the filesystem");
    let lib = Library::new();
    let summary = lib.checkin(&image, "sles");
    let id = summary["image_id"].as_i64().unwrap();
    assert_eq!(summary["warnings"], serde_json::json!([]), "{summary}");
    assert_eq!(package_rows(&lib, id, "rpm"), expected);
    assert!(expected.contains(&("hello".into(), "3:1.2-4".into(), "noarch".into())));
    let facts = lib.sql("SELECT os_name FROM images");
    assert_eq!(facts[0]["os_name"].as_str(), Some("sles"), "{facts:?}");

    // A bit flipped in a package's blob: the checkin says which package and why.
    let db = std::fs::read(dbpath.join("Packages.db")).unwrap();
    let mut flipped = db.clone();
    let last = flipped.len() - 40;
    flipped[last] ^= 1;
    std::fs::write(dbpath.join("Packages.db"), flipped).unwrap();
    mkfs_ext(&tree, &p("flipped.img"), "ext4", "16M", &[]);
    let summary = lib.checkin(&p("flipped.img"), "flipped");
    assert_eq!(summary["packages"], 0);
    assert!(summary["warnings"].to_string().contains("NDB: slot "), "{summary}");
    assert!(summary["warnings"].to_string().contains("Adler-32"), "{summary}");
}

#[test]
fn apk_installed_database() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    std::fs::create_dir_all(p("tree/lib/apk/db")).unwrap();
    // The documented format (apk-tools: "Apk spec", installed database), as Alpine writes it.
    std::fs::write(p("tree/lib/apk/db/installed"), "\
C:Q1Y6cQ0CFNmE0o9GmPfqEjvVmErbE=\nP:musl\nV:1.2.5-r0\nA:x86_64\nS:411323\nI:655360\nT:the musl c library (libc) implementation\n\
U:https://musl.libc.org/\nL:MIT\no:musl\nm:Natanael Copa <ncopa@alpinelinux.org>\nt:1711560435\nc:53bb8ad54e9a4b5a8f5c2b9c6d2fc0\n\
F:lib\nR:ld-musl-x86_64.so.1\na:0:0:755\nZ:Q1abc=\n\n\
C:Q1abc=\nP:busybox-binsh\nV:1.36.1-r29\nA:x86_64\nS:1547\nI:1\nT:busybox ash /bin/sh\no:busybox\n\n").unwrap();
    mkfs_ext(&p("tree"), &p("alpine.img"), "ext4", "8M", &[]);
    let lib = Library::new();
    let id = lib.checkin(&p("alpine.img"), "alpine")["image_id"].as_i64().unwrap();
    let expected: Rows = [("musl", "1.2.5-r0", "x86_64"), ("busybox-binsh", "1.36.1-r29", "x86_64")]
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(package_rows(&lib, id, "apk"), expected);
    let rows = lib
        .sql(&format!("SELECT source, installed_size FROM packages WHERE image_id = {id} AND name = 'busybox-binsh'"));
    assert_eq!((rows[0]["source"].as_str(), rows[0]["installed_size"].as_i64()), (Some("busybox"), Some(1)));
}
