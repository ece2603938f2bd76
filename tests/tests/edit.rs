//! Offline edits (`replace-content`, `import`, `remove`, `set-meta`), `clone`, provenance and the
//! version tree, on a GPT disk made by sgdisk, mke2fs -d and mkfs.vfat. Oracles: e2fsck -fn,
//! debugfs, a read-only loop mount by the kernel, and the bytes of the checkouts.

use imagelake_tests::*;
use std::path::Path;
use std::process::Command;

/// A tree with the kinds an edit meets: files (one large, two hard-linked), a symlink and
/// nested directories.
fn make_tree(root: &Path) {
    sh(&format!(
        "set -e; cd {}; mkdir -p etc usr/bin var/lib/app/cache srv
         printf 'Welcome\\n' > etc/motd; printf 'host1\\n' > etc/hostname; chmod 640 etc/hostname
         head -c 3000000 /dev/urandom > usr/bin/big; chmod 755 usr/bin/big
         printf 'a\\n' > var/lib/app/one; printf 'b\\n' > var/lib/app/cache/two
         printf 'shared\\n' > srv/x; ln srv/x srv/y; ln -s ../etc/motd srv/motd-link",
        root.display()
    ));
}

struct Fixture {
    lib: Library,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).expect("mkdir");
        make_tree(&tree);
        let (root, esp, disk) = (dir.path().join("root.img"), dir.path().join("esp.img"), dir.path().join("a.raw"));
        mkfs_ext(&tree, &root, "ext4", "24M", &[]);
        mkfs_vfat(&esp, 2048);
        gpt_disk(&disk, &root, &esp);
        let lib = Library::new();
        lib.checkin(&disk, "a");
        Fixture { lib, dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Runs an edit command; returns its JSON summary.
    fn edit(&self, args: &[&str]) -> serde_json::Value {
        let out = run(self.lib.command().args(args).arg("--json"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: summary is not JSON ({e}): {out}"))
    }

    /// Checks a version out; returns the disk and the root filesystem as a device debugfs,
    /// e2fsck and dumpe2fs open (`disk?offset=N`).
    fn checkout(&self, spec: &str) -> (std::path::PathBuf, String) {
        let out = self.path(&format!("{}.raw", spec.replace('@', "-")));
        let _ = std::fs::remove_file(&out);
        self.lib.checkout(spec, &out);
        let (name, version) = spec.split_once('@').expect("name@version");
        let rows = self.lib.sql(&format!(
            "SELECT p.start FROM partitions p JOIN images i USING (image_id) WHERE i.name = '{name}' AND i.version = {version} AND p.fs_type = 'ext4'"
        ));
        let start = rows[0]["start"].as_i64().expect("start");
        let device = format!("{}?offset={start}", out.display());
        (out, device)
    }
}

fn debugfs(device: &str, request: &str) -> String {
    run(Command::new("debugfs").args(["-R", request, device]))
}

fn e2fsck_clean(device: &str) {
    let out = attempt(Command::new("e2fsck").args(["-fn", device]));
    assert!(out.status.success(), "e2fsck -fn finds {device} unclean:\n{}", String::from_utf8_lossy(&out.stdout));
}

/// 4 KiB blocks that differ between two disks of one size.
fn differing_blocks(a: &Path, b: &Path) -> usize {
    let (a, b) = (std::fs::read(a).expect("read"), std::fs::read(b).expect("read"));
    assert_eq!(a.len(), b.len(), "an edit keeps the disk's size");
    a.chunks(4096).zip(b.chunks(4096)).filter(|(x, y)| x != y).count()
}

/// The bytes of the disk outside the range [start, start + len).
fn outside(disk: &Path, start: usize, len: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(disk).expect("read");
    bytes.drain(start..start + len);
    bytes
}

#[test]
fn edits_make_new_versions_in_place_and_clean() {
    let f = Fixture::new();
    let (a1, dev1) = f.checkout("a@1");
    e2fsck_clean(&dev1);

    // replace: new content, owner and permissions kept; without root.
    let motd = f.path("motd");
    std::fs::write(&motd, "Patched offline\n").expect("write");
    run(Command::new("chmod").arg("755").arg(f.dir.path()));
    let out = run(f.lib.command_unprivileged().args([
        "replace-content",
        "a@1",
        "/etc/motd",
        motd.to_str().unwrap(),
        "--json",
    ]));
    let s: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((s["name"].as_str(), s["version"].as_i64(), s["parent"].as_str()), (Some("a"), Some(2), Some("a@1")));
    let (a2, dev2) = f.checkout("a@2");
    e2fsck_clean(&dev2);
    assert_eq!(debugfs(&dev2, "cat /etc/motd"), "Patched offline\n");
    assert_eq!(run(f.lib.command().args(["cat", "a@2", "/etc/motd"])), "Patched offline\n");
    // In place: a handful of blocks changed (the file's block, its inode, bitmaps, group
    // descriptors), and nothing outside the root partition.
    let changed = differing_blocks(&a1, &a2);
    assert!((1..=16).contains(&changed), "replacing one small file changed {changed} blocks of 4 KiB");
    let rows = f.lib.sql("SELECT start, size FROM partitions WHERE image_id = 1 AND fs_type = 'ext4'");
    let (start, size) = (rows[0]["start"].as_u64().unwrap() as usize, rows[0]["size"].as_u64().unwrap() as usize);
    assert!(outside(&a1, start, size) == outside(&a2, start, size), "bytes outside the edited partition changed");
    let meta = f.lib.sql(
        "SELECT image_id, mode, uid, gid FROM files WHERE path = '/etc/motd' AND image_id IN (1, 2) ORDER BY image_id",
    );
    assert_eq!((meta[0]["mode"].clone(), meta[0]["uid"].clone()), (meta[1]["mode"].clone(), meta[1]["uid"].clone()));

    // import: a host tree into a directory that does not exist yet.
    let kmod = f.path("kmod");
    sh(&format!(
        "set -e; mkdir -p {k}/kernel/drivers; printf 'module\\n' > {k}/kernel/drivers/x.ko; head -c 200000 /dev/urandom > {k}/kernel/big.ko; printf 'dep\\n' > {k}/modules.dep; ln -s modules.dep {k}/modules.alias; chmod 600 {k}/modules.dep",
        k = kmod.display()
    ));
    let s = f.edit(&["import", "a@2", kmod.to_str().unwrap(), "/lib/modules/6.1.0-test"]);
    assert_eq!(s["version"].as_i64(), Some(3));
    let (a3, dev3) = f.checkout("a@3");
    e2fsck_clean(&dev3);
    // The kernel's view of the imported tree equals the host's.
    let mnt = f.path("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let offset = dev3.rsplit_once("offset=").unwrap().1;
    run(Command::new("mount").args(["-o", &format!("ro,loop,offset={offset}")]).arg(&a3).arg(&mnt));
    let diff = attempt(Command::new("diff").arg("-r").arg(&kmod).arg(mnt.join("lib/modules/6.1.0-test")));
    let mode = run(Command::new("stat").args(["-c", "%a %u %g"]).arg(mnt.join("lib/modules/6.1.0-test/modules.dep")));
    let link = std::fs::read_link(mnt.join("lib/modules/6.1.0-test/modules.alias"));
    let motd_now = std::fs::read_to_string(mnt.join("etc/motd"));
    run(Command::new("umount").arg(&mnt));
    assert!(diff.status.success(), "imported tree differs: {}", String::from_utf8_lossy(&diff.stdout));
    assert_eq!(mode.trim(), "600 0 0", "host permissions, root's");
    assert_eq!(link.expect("link").to_str(), Some("modules.dep"));
    assert_eq!(motd_now.expect("motd"), "Patched offline\n", "earlier edits carry on");

    // remove: a directory with everything under it, and one of two hard links.
    f.edit(&["remove", "a@3", "/var/lib/app"]);
    let s = f.edit(&["remove", "a@4", "/srv/x"]);
    assert_eq!(s["version"].as_i64(), Some(5));
    let (_, dev5) = f.checkout("a@5");
    e2fsck_clean(&dev5);
    assert!(!debugfs(&dev5, "ls /var/lib").contains("app"), "{}", debugfs(&dev5, "ls /var/lib"));
    assert_eq!(debugfs(&dev5, "cat /srv/y"), "shared\n", "the other link keeps the content");
    let gone = f.lib.sql("SELECT count(*) AS n FROM files f JOIN images i USING (image_id) WHERE i.version = 5 AND (f.path LIKE '/var/lib/app%' OR f.path = '/srv/x')");
    assert_eq!(gone[0]["n"].as_i64(), Some(0));

    // set_meta: permissions and owners; with IMAGELAKE_TRACE, its phases on standard error.
    let args = ["set-meta", "a@5", "/etc/hostname", "--mode", "4711", "--uid", "33", "--gid", "44", "--json"];
    let traced = f.lib.command().env("IMAGELAKE_TRACE", "1").args(args).output().expect("set-meta");
    assert!(traced.status.success(), "{}", String::from_utf8_lossy(&traced.stderr));
    let phases: Vec<(f64, String)> = String::from_utf8_lossy(&traced.stderr)
        .lines()
        .filter_map(|l| {
            let (seconds, what) = l.strip_prefix("trace")?.split_once(" s  ")?;
            Some((seconds.trim().parse().ok()?, what.to_string()))
        })
        .collect();
    let names: Vec<&str> = phases.iter().map(|p| p.1.as_str()).collect();
    for phase in ["edit: changes made by debugfs", "edit: result checked (e2fsck, undo keys)", "checkin: committed"] {
        assert!(names.contains(&phase), "no {phase:?} among {names:?}");
    }
    assert!(phases.windows(2).all(|w| w[0].0 <= w[1].0), "phases out of order: {phases:?}");
    let (_, dev6) = f.checkout("a@6");
    e2fsck_clean(&dev6);
    let stat = debugfs(&dev6, "stat /etc/hostname");
    assert!(stat.contains("Mode:  04711"), "{stat}");
    assert!(stat.contains("User:    33   Group:    44"), "{stat}");

    // Every version stays as it was.
    let (again, _) = f.checkout("a@1");
    assert_same_bytes(&a1, &again);
    let motd1 = run(f.lib.command().args(["cat", "a@1", "/etc/motd"]));
    assert_eq!(motd1, "Welcome\n");

    // Provenance: the history, in SQL, and the tree `log` draws.
    let history = f.lib.sql("SELECT version, parent, operation, arguments FROM history('a') ORDER BY version");
    let ops: Vec<_> = history.iter().map(|r| r["operation"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(ops, ["checkin", "replace_content", "import", "remove", "remove", "set_meta"]);
    let parents: Vec<_> =
        history.iter().map(|r| r.get("parent").and_then(|p| p.as_str()).map(str::to_string)).collect();
    assert_eq!(parents[0], None);
    assert_eq!(
        parents[1..],
        [Some("a@1"), Some("a@2"), Some("a@3"), Some("a@4"), Some("a@5")].map(|p| p.map(str::to_string))
    );
    assert!(history[2]["arguments"].as_str().unwrap_or_default().contains("/lib/modules/6.1.0-test"));
    let log = run(f.lib.command().args(["log", "a"]));
    assert!(log.lines().next().unwrap_or_default().starts_with("* a@1  checkin"), "{log}");
    assert!(log.contains("└── * a@2  replace_content"), "{log}");
    assert_eq!(log.lines().count(), 6, "{log}");

    assert_eq!(run(f.lib.command().args(["verify"])).lines().next().map(|l| l.ends_with("intact")), Some(true));
    let check = run(f.lib.command().args(["check"]));
    assert!(check.contains("consistent") && !check.contains("leftovers"), "{check}");
}

#[test]
fn clone_copies_rows_not_bytes_and_sql_edits_every_image_a_query_finds() {
    let f = Fixture::new();
    let s = f.edit(&["clone", "a@1", "b"]);
    assert_eq!((s["name"].as_str(), s["version"].as_i64(), s["parent"].as_str()), (Some("b"), Some(1), Some("a@1")));
    let (a1, _) = f.checkout("a@1");
    let (b1, _) = f.checkout("b@1");
    assert_same_bytes(&a1, &b1);
    let stored = f.lib.sql("SELECT stored_bytes_new FROM images WHERE name = 'b'");
    assert_eq!(stored[0]["stored_bytes_new"].as_i64(), Some(0));
    let same = f.lib.sql(
        "SELECT (SELECT count(*) FROM files WHERE image_id = 1) AS a, (SELECT count(*) FROM files f JOIN images i USING (image_id) WHERE i.name = 'b') AS b",
    );
    assert_eq!(same[0]["a"], same[0]["b"]);
    let history = f.lib.sql("SELECT name, version, operation, parent FROM history('b')");
    assert_eq!(history.len(), 2, "b@1, then a@1 it was cloned from: {history:?}");
    assert_eq!((history[0]["operation"].as_str(), history[0]["parent"].as_str()), (Some("clone"), Some("a@1")));

    // One statement: import into every image the query returns (Mirage's "import kvm-kernel").
    let kmod = f.path("kmod");
    sh(&format!("set -e; mkdir -p {k}; printf 'm\\n' > {k}/m.ko", k = kmod.display()));
    let made = f.lib.sql(&format!(
        "SELECT name, import(name || '@' || CAST(version AS VARCHAR), '{}', '/lib/modules/extra') AS made FROM images ORDER BY name",
        kmod.display()
    ));
    let made: Vec<_> = made.iter().map(|r| r["made"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(made, ["a@2", "b@2"]);
    for spec in ["a@2", "b@2"] {
        let (_, device) = f.checkout(spec);
        e2fsck_clean(&device);
        assert_eq!(debugfs(&device, "cat /lib/modules/extra/m.ko"), "m\n");
    }
    // The table form returns a summary row.
    let rows = f.lib.sql("SELECT name, version, parent, operation FROM remove('b@2', '/etc/motd')");
    assert_eq!(rows[0]["version"].as_i64(), Some(3));
    assert_eq!(rows[0]["operation"].as_str(), Some("remove"));
}

#[test]
fn edits_that_cannot_be_done_are_refused_and_write_nothing() {
    let f = Fixture::new();
    let refused = |args: &[&str], expect: &str| {
        let out = attempt(f.lib.command().args(args));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && err.contains(expect), "{args:?}: expected {expect:?}, got {err}");
    };
    // More than the filesystem holds: refused before anything is written.
    let huge = f.path("huge");
    sh(&format!("head -c 40000000 /dev/urandom > {}", huge.display()));
    refused(&["replace", "a", "/usr/bin/big", huge.to_str().unwrap()], "not enough room");
    // Out of inodes: more files than the filesystem has free inodes.
    let many = f.path("many");
    std::fs::create_dir(&many).expect("mkdir");
    let free_inodes: usize = {
        let (_, device) = f.checkout("a@1");
        let text = run(Command::new("dumpe2fs").args(["-h", &device]));
        text.lines().find_map(|l| l.strip_prefix("Free inodes:")).and_then(|v| v.trim().parse().ok()).expect("free")
    };
    for i in 0..free_inodes + 1 {
        std::fs::write(many.join(format!("f{i}")), b"").expect("write");
    }
    refused(&["import", "a", many.to_str().unwrap(), "/many"], "not enough inodes");
    refused(&["remove", "a", "/no/such/file"], "does not exist");
    refused(&["replace", "a", "/etc", huge.to_str().unwrap()], "is a dir, not a regular file");
    refused(&["set-meta", "a", "/etc/motd", "--mode", "99"], "not a mode in octal");
    refused(&["clone", "a", "a"], "exists already");
    // A filesystem e2fsck finds unclean to begin with (an inode whose link count is wrong) is
    // not edited, and the error says it was so before the edit.
    let tree = f.path("tree");
    let (root, esp, dirty) = (f.path("dirty.ext4"), f.path("dirty.esp"), f.path("dirty.raw"));
    mkfs_ext(&tree, &root, "ext4", "24M", &[]);
    run(Command::new("debugfs").args(["-w", "-R", "sif /etc/hostname links_count 5"]).arg(&root));
    mkfs_vfat(&esp, 2048);
    gpt_disk(&dirty, &root, &esp);
    f.lib.checkin(&dirty, "dirty");
    refused(&["replace", "dirty", "/etc/motd", huge.to_str().unwrap()], "e2fsck finds the filesystem to edit unclean");
    let versions = f.lib.sql("SELECT count(*) AS n FROM images");
    assert_eq!(versions[0]["n"].as_i64(), Some(2), "no refused edit made a version");
    let tmp: Vec<_> =
        std::fs::read_dir(f.lib.path().join("tmp")).expect("tmp").flatten().map(|e| e.file_name()).collect();
    assert!(tmp.is_empty(), "scratch files left in tmp/: {tmp:?}");
}
