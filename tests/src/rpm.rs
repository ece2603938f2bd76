//! Real rpm databases: packages built by `rpmbuild`, installed, erased and listed by `rpm`
//! itself, with Debian's rpm (sqlite) or the one scripts/rpm-ndb.sh builds with NDB.

use crate::run;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (name, EVR, arch) of each package, as `rpm -qa` prints them.
pub type Listed = BTreeSet<(String, String, String)>;

/// Debian's rpm: its database is sqlite, and it reads Berkeley DB through `bdb_ro`.
pub fn debian_binary() -> PathBuf {
    "rpm".into()
}

/// rpm with its NDB backend, built by scripts/rpm-ndb.sh (which the test command runs).
pub fn ndb_binary() -> PathBuf {
    let prefix = std::env::var_os("IMAGELAKE_RPM_NDB").unwrap_or_else(|| "/opt/imagelake/rpm-ndb".into());
    let rpm = Path::new(&prefix).join("bin/rpm");
    assert!(rpm.exists(), "{} is missing: scripts/install-deps.sh builds it", rpm.display());
    rpm
}

/// Builds a noarch package per (name, epoch line such as "Epoch: 3\n", number of files) in
/// `work`, and returns the .rpm files.
pub fn build(work: &Path, packages: &[(&str, &str, usize)]) -> Vec<PathBuf> {
    let top = work.join("rpmbuild");
    for (name, epoch, files) in packages {
        let spec = format!(
            "Name: {name}\nVersion: 1.2\nRelease: 4\n{epoch}Summary: t\nLicense: MIT\nBuildArch: noarch\n%description\nt\n\
             %install\nmkdir -p %{{buildroot}}/usr/share/{name}\n\
             for i in $(seq 1 {files}); do echo hi > %{{buildroot}}/usr/share/{name}/greeting-$i; done\n\
             %files\n/usr/share/{name}\n"
        );
        let path = work.join(format!("{name}.spec"));
        std::fs::write(&path, spec).unwrap();
        run(Command::new("rpmbuild").arg("--define").arg(format!("_topdir {}", top.display())).arg("-bb").arg(&path));
    }
    packages.iter().map(|(name, _, _)| top.join(format!("RPMS/noarch/{name}-1.2-4.noarch.rpm"))).collect()
}

/// Installs `rpms` into `root` with `rpm`, its database at `dbpath` in the root (such as
/// `/var/lib/rpm`) with `backend` (sqlite, ndb).
pub fn install(rpm: &Path, root: &Path, dbpath: &str, backend: &str, rpms: &[PathBuf]) {
    run(Command::new(rpm)
        .arg("--root")
        .arg(root)
        .args(["--dbpath", dbpath, "--define"])
        .arg(format!("_db_backend {backend}"))
        .args(["-i", "--nodeps", "--noscripts"])
        .args(rpms));
}

/// Erases the package `name` from the database at `dbpath` in `root` with `rpm`.
pub fn erase(rpm: &Path, root: &Path, dbpath: &str, name: &str) {
    run(Command::new(rpm).arg("--root").arg(root).args(["--dbpath", dbpath, "-e", "--nodeps", "--noscripts", name]));
}

/// What `rpm -qa` lists of the database in the host folder `dbpath` with `backend` (sqlite, bdb_ro, ndb).
pub fn query_all(rpm: &Path, dbpath: &Path, backend: &str) -> Listed {
    let listed = run(Command::new(rpm)
        .arg("--dbpath")
        .arg(dbpath)
        .arg("--define")
        .arg(format!("_db_backend {backend}"))
        .args(["-qa", "--qf", "%{NAME}\\t%{EVR}\\t%{ARCH}\\n"]));
    listed
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].into(), f[1].into(), f[2].into())
        })
        .collect()
}
