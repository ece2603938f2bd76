//! Package databases of every family, built by their real tools or in their documented
//! format, read into `packages` exactly as the managers themselves list them.

use imagelake_tests::{Library, mkfs_ext, run};
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

#[test]
fn rpm_sqlite_database_made_by_rpm() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    // Two real packages from rpmbuild, one with an epoch, installed by rpm into a tree.
    for (name, epoch) in [("hello", "Epoch: 3\n"), ("tiny-tool", "")] {
        let spec = format!(
            "Name: {name}\nVersion: 1.2\nRelease: 4\n{epoch}Summary: t\nLicense: MIT\nBuildArch: noarch\n%description\nt\n\
             %install\nmkdir -p %{{buildroot}}/usr/share/{name}\necho hi > %{{buildroot}}/usr/share/{name}/greeting\n\
             %files\n/usr/share/{name}/greeting\n"
        );
        std::fs::write(p(&format!("{name}.spec")), spec).unwrap();
        run(Command::new("rpmbuild")
            .arg("--define")
            .arg(format!("_topdir {}", p("top").display()))
            .arg("-bb")
            .arg(p(&format!("{name}.spec"))));
    }
    std::fs::create_dir_all(p("tree/etc")).unwrap();
    std::fs::write(p("tree/etc/os-release"), "ID=fedora\nVERSION_ID=40\n").unwrap();
    let rpms: Vec<_> = std::fs::read_dir(p("top/RPMS/noarch")).unwrap().map(|e| e.unwrap().path()).collect();
    run(Command::new("rpm")
        .arg("--root")
        .arg(p("tree"))
        .args(["--dbpath", "/var/lib/rpm", "-i", "--nodeps", "--noscripts"])
        .args(&rpms));
    let listed = run(Command::new("rpm").arg("--root").arg(p("tree")).args([
        "--dbpath",
        "/var/lib/rpm",
        "-qa",
        "--qf",
        "%{NAME}\\t%{EVR}\\t%{ARCH}\\n",
    ]));
    let expected: Rows = listed
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].into(), f[1].into(), f[2].into())
        })
        .collect();
    assert_eq!(expected.len(), 2, "{listed}");

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
