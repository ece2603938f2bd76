//! End to end on a real Debian system: debootstrap (minbase + mariadb-server) in a GPT disk
//! (BIOS boot, EFI vfat, ext4 root) converted to qcow2; then a second version made as images
//! really change: the disk copied, its root loop-mounted and given one more package in place.

use imagelake_tests::{
    Library, Mounted, assert_qcow2_checkout, assert_same_bytes, assert_same_tree, attempt, cache_dir, debian_tree,
    dpkg_query, edited_listing, gpt_disk, kernel_listing, mkfs_ext, mkfs_vfat, run, run_measured, sh, tree_nodes,
};
use std::collections::BTreeSet;
use std::process::Command;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

#[test]
fn debian_mariadb_image_end_to_end() {
    let tree = debian_tree();
    let work = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| work.path().join(n);
    mkfs_ext(&tree, &path("root.img"), "ext4", "1200M", &[]);
    mkfs_vfat(&path("esp.img"), 32 * 1024);
    gpt_disk(&path("disk.img"), &path("root.img"), &path("esp.img"));
    let qcow2 = path("web.qcow2");
    run(Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(path("disk.img")).arg(&qcow2));

    let lib = Library::new();
    let (out, checkin) = run_measured(lib.command().arg("checkin").arg(&qcow2).args(["--name", "web", "--json"]));
    let first: serde_json::Value = serde_json::from_str(&out).expect("summary");
    eprintln!("checkin of web@1: {checkin:?}\n{first:#}");
    let image_id = first["image_id"].as_i64().expect("id");

    // The question of the issue, in SQL.
    let hits = lib.sql("SELECT i.name FROM images i JOIN packages p USING (image_id) WHERE p.name = 'mariadb-server'");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["name"], "web");

    // packages equal dpkg-query's view of the same database exactly.
    let rows = lib.sql(&format!("SELECT name, version, arch FROM packages WHERE image_id = {image_id}"));
    let ours: BTreeSet<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["version"].as_str().unwrap().into(),
                r["arch"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(ours.len(), rows.len(), "duplicate package rows");
    assert_eq!(ours, dpkg_query(&tree.join("var/lib/dpkg")));
    assert!(ours.len() > 100, "a minbase + mariadb system has well over 100 packages, got {}", ours.len());

    // The root filesystem's rows number what find counts (plus lost+found, made by mke2fs).
    let found = sh(&format!("find '{}' | wc -l", tree.display())).trim().parse::<i64>().expect("count");
    let root_rows = lib.sql(&format!(
        "SELECT count(*) AS n FROM files f JOIN partitions p USING (image_id, partition) WHERE f.image_id = {image_id} AND p.name = 'root'"
    ));
    assert_eq!(root_rows[0]["n"].as_i64(), Some(found + 1));
    let facts = lib.sql(&format!("SELECT os_name, os_version, hostname FROM images WHERE image_id = {image_id}"));
    assert_eq!(
        (facts[0]["os_name"].as_str(), facts[0]["os_version"].as_str(), facts[0]["hostname"].as_str()),
        (Some("debian"), Some("12"), Some("imagelake-test"))
    );

    // Byte-exact checkout, streaming: under 1 GiB of memory both ways.
    let (_, checkout) = run_measured(lib.command().args(["checkout", "web@1"]).arg(path("web1.raw")).arg("--json"));
    eprintln!("checkout of web@1: {checkout:?}");
    assert_same_bytes(&path("disk.img"), &path("web1.raw"));
    run(Command::new("qemu-img").args(["compare", "-q"]).arg(&qcow2).arg(path("web1.raw")));
    assert_qcow2_checkout(&lib, "web@1", &path("disk.img"));
    // export of the root filesystem equals the debootstrap tree: every path, mode, owner,
    // time (to the second: mke2fs -d stores no nanoseconds), link target, hard-link group,
    // extended attribute and content.
    let root = lib.sql(&format!("SELECT partition FROM partitions WHERE image_id = {image_id} AND name = 'root'"));
    let root = root[0]["partition"].as_i64().expect("root partition").to_string();
    let (out, export) =
        run_measured(lib.command().args(["export", "web@1"]).arg(path("tree")).args(["--partition", &root, "--json"]));
    eprintln!("export of web@1: {export:?}\n{out}");
    let mut expected = tree_nodes(&tree, &["/"]);
    for node in expected.values_mut() {
        node.mtime_ns -= node.mtime_ns.rem_euclid(1_000_000_000);
    }
    let got = tree_nodes(&path("tree"), &["/", "/lost+found"]);
    assert_same_tree(&expected, &got);
    assert!(got.values().any(|n| n.hard_links.len() > 1), "the tree has hard links, and they were compared");
    assert!(export.max_rss_bytes < GIB, "export peak memory {} MiB", export.max_rss_bytes / MIB);
    assert!(checkin.max_rss_bytes < GIB, "checkin peak memory {} MiB", checkin.max_rss_bytes / MIB);
    assert!(checkout.max_rss_bytes < GIB, "checkout peak memory {} MiB", checkout.max_rss_bytes / MIB);
    // Hashing and compression use both cores: at least as many threads did that work as the
    // machine has cores (CPU time above wall time shows it too when nothing else runs: see
    // the log).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(first["threads"].as_u64().unwrap_or(0) >= cores, "{first}");
    eprintln!("checkin CPU/wall: {:.2}", checkin.cpu_seconds / checkin.wall_seconds);

    // web@2: the same disk, one more package installed in place through a loop mount.
    std::fs::remove_file(path("web1.raw")).expect("rm");
    let disk2 = path("disk2.img");
    std::fs::copy(path("disk.img"), &disk2).expect("copy");
    let root_start = lib.sql(&format!("SELECT start FROM partitions WHERE image_id = {image_id} AND name = 'root'"))[0]
        ["start"]
        .as_u64()
        .expect("start");
    let mnt = path("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let deb = sh(&format!("ls {}/debs/less_*.deb", cache_dir().display())).trim().to_string();
    run(Command::new("mount").arg("-o").arg(format!("loop,offset={root_start}")).arg(&disk2).arg(&mnt));
    let install = Command::new("dpkg")
        .arg(format!("--root={}", mnt.display()))
        .arg("-i")
        .arg(&deb)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("dpkg");
    let installed = sh(&format!(
        "cd '{m}' && grep -v '^/$' var/lib/dpkg/info/less.list | while read -r f; do [ -f \".$f\" ] && [ ! -L \".$f\" ] && echo \".$f\"; done \
         | tar -cf - -T - | zstd -3 -c | wc -c",
        m = mnt.display()
    ));
    run(Command::new("umount").arg(&mnt));
    assert!(install.status.success(), "dpkg -i failed: {}", String::from_utf8_lossy(&install.stderr));
    let package_compressed: u64 = installed.trim().parse().expect("size");

    let second = lib.checkin(&disk2, "web");
    eprintln!("checkin of web@2: {second:#}\nless's installed files, tar | zstd -3: {package_compressed} bytes");
    assert_eq!(second["version"], 2);
    // web@2 mounted by imagelake shows what the kernel's mount of its disk (disk2, byte-equal)
    // shows, entry by entry.
    let (fuse, kernel) = (path("fuse"), path("kernel"));
    std::fs::create_dir(&fuse).expect("mkdir");
    std::fs::create_dir(&kernel).expect("mkdir");
    let _mounted = Mounted::new(&lib, "web@2", &fuse, &["--partition", &root]);
    run(Command::new("mount").arg("-o").arg(format!("loop,ro,offset={root_start}")).arg(&disk2).arg(&kernel));
    let (ours, theirs) = (kernel_listing(&fuse), kernel_listing(&kernel));
    run(Command::new("umount").arg(&kernel));
    run(lib.command().arg("unmount").arg(&fuse));
    assert_eq!(ours.0, theirs.0, "find -printf of every entry of web@2's root");
    assert_eq!(ours.1, theirs.1, "sha256 of every regular file of web@2's root");
    assert_eq!(ours.2, theirs.2, "getfattr of every entry of web@2's root");
    assert!(
        ours.0.lines().count() > 10_000 && ours.0.contains("./usr/bin/less f "),
        "{} entries",
        ours.0.lines().count()
    );
    assert_eq!(second["parent_id"].as_i64(), Some(image_id));
    let stored = second["bytes_stored"].as_u64().expect("stored");
    assert!(
        stored <= package_compressed + 2 * MIB,
        "web@2 stored {stored} new bytes; the package's files compress to {package_compressed}"
    );
    let dedup = second["bytes_deduplicated"].as_u64().expect("dedup");
    assert!(dedup > 9 * first["bytes_new"].as_u64().expect("new") / 10, "web@2 deduplicated only {dedup} bytes");
    let hits =
        lib.sql("SELECT i.version FROM images i JOIN packages p USING (image_id) WHERE p.name = 'less' ORDER BY 1");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["version"], 2);
    let out2 = path("web2.raw");
    let full = lib.checkout("web@2", &out2)["bytes_written"].as_u64().expect("written");
    assert_same_bytes(&disk2, &out2);

    // Delta deployment of web@2 over a checkout of web@1 leaves web@2's bytes, and writes at
    // least the bytes in which the two disks differ and at most the 4 KiB blocks holding them
    // (cmp is the oracle; a block shared by two extents may be written in part).
    let web1 = path("web1.raw");
    lib.checkout("web@1", &web1);
    let differ = sh(&format!(
        "cmp -l '{}' '{}' | awk '{{ n++; b = int(($1 - 1) / 4096); if (b != last) {{ blocks++; last = b }} }} \
         END {{ print n, blocks }}'",
        web1.display(),
        disk2.display()
    ));
    let counts: Vec<u64> = differ.split_whitespace().map(|n| n.parse().expect("count")).collect();
    let (bytes, blocks) = (counts[0], counts[1]);
    let delta = run(lib.command().args(["checkout", "web@2"]).arg(&web1).args(["--update", "--json"]));
    let delta: serde_json::Value = serde_json::from_str(&delta).expect("summary");
    assert_same_bytes(&disk2, &web1);
    let written = delta["bytes_written"].as_u64().expect("written");
    let punched = delta["bytes_punched"].as_u64().expect("punched");
    eprintln!(
        "delta deployment wrote {written} bytes and punched {punched} ({bytes} differ, in {blocks} blocks); a full \
         checkout {full}: {:.0}x fewer",
        full as f64 / written as f64
    );
    // Every differing byte is written or, where web@2 has zeros, in a block made a hole.
    let changed = written + punched;
    assert!(bytes > 0 && bytes <= changed && changed <= blocks * 4096, "{delta}");
    // The target was identified from its marks as web@1, and held exactly that.
    assert_eq!((delta["previous"].as_str(), delta["unexpected_blocks"].as_u64()), (Some("web@1"), Some(0)), "{delta}");

    // A disk changed after its checkout is found out, not trusted: one byte changed where
    // nothing differs between the versions is reported as one unexpected block, and repaired.
    let mut disk = std::fs::read(&web1).expect("read");
    let at = 300 << 20;
    disk[at] ^= 0x5a;
    std::fs::write(&web1, &disk).expect("write");
    drop(disk);
    let again = run(lib.command().args(["checkout", "web@2"]).arg(&web1).args(["--update", "--json"]));
    let again: serde_json::Value = serde_json::from_str(&again).expect("summary");
    assert_eq!(
        (again["previous"].as_str(), again["unexpected_blocks"].as_u64(), again["bytes_written"].as_u64()),
        (Some("web@2"), Some(1), Some(4096)),
        "{again}"
    );
    assert_same_bytes(&disk2, &web1);
    std::fs::remove_file(&web1).expect("rm");

    // web@3: the edits of Mirage's Xen-to-KVM conversion, made in a writable mount of web@2's
    // root and committed. compare lists exactly them, e2fsck finds the new root clean, and the
    // kernel's mount of its checkout shows what the mount showed.
    let kernel_file = path("vmlinuz");
    std::fs::write(&kernel_file, imagelake_tests::unique_bytes("kvm kernel", 8 << 20)).expect("kernel");
    // The root filesystem by default, of the disk's two (EFI's vfat and the ext4 root).
    let writable = Mounted::new(&lib, "web@2", &fuse, &["--writable"]);
    assert!(writable.said.contains(&format!("(partition {root},")), "{}", writable.said);
    let moved = sh(&format!("cd '{}' && find etc/mysql/conf.d | LC_ALL=C sort", fuse.display()));
    sh(&format!(
        "set -e; cd '{}'
         sed -i s/imagelake-test/imagelake-kvm/ etc/hostname
         cp '{}' boot/vmlinuz
         rm etc/motd
         mkdir -p opt/kvm/lib
         chmod 600 etc/mysql/my.cnf.fallback
         setfattr -n user.origin -v kvm etc/issue
         ln etc/issue etc/issue.kvm
         mv etc/mysql/conf.d etc/mysql/conf.d.kvm
         mkfifo run/kvm.fifo",
        fuse.display(),
        kernel_file.display()
    ));
    let seen = edited_listing(&fuse);
    let said = run(lib.command().arg("commit").arg(&fuse));
    assert!(said.starts_with("committed web@3 from web@2"), "{said}");
    let mut expected: BTreeSet<String> = [
        "metadata /boot",
        "added /boot/vmlinuz",
        "metadata /etc",
        "modified /etc/hostname",
        "metadata /etc/issue",
        "added /etc/issue.kvm",
        "removed /etc/motd",
        "metadata /etc/mysql",
        "metadata /etc/mysql/my.cnf.fallback",
        "metadata /opt",
        "added /opt/kvm",
        "added /opt/kvm/lib",
        "metadata /run",
        "added /run/kvm.fifo",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for old in moved.lines() {
        expected.insert(format!("removed /{old}"));
        expected.insert(format!("added /{}", old.replacen("conf.d", "conf.d.kvm", 1)));
    }
    let rows = lib.sql("SELECT change, path FROM compare('web@2', 'web@3') WHERE entry = 'file'");
    let changes: BTreeSet<String> =
        rows.iter().map(|r| format!("{} {}", r["change"].as_str().unwrap(), r["path"].as_str().unwrap())).collect();
    assert_eq!(changes, expected, "compare(web@2, web@3)");
    let web3 = path("web3.raw");
    lib.checkout("web@3", &web3);
    let fsck = attempt(Command::new("e2fsck").arg("-fn").arg(format!("{}?offset={root_start}", web3.display())));
    assert!(fsck.status.success(), "e2fsck -fn of web@3's root: {}", String::from_utf8_lossy(&fsck.stdout));
    run(Command::new("mount").arg("-o").arg(format!("loop,ro,offset={root_start}")).arg(&web3).arg(&kernel));
    let theirs = edited_listing(&kernel);
    run(Command::new("umount").arg(&kernel));
    assert_eq!(seen.0, theirs.0, "find -printf of every entry of web@3's root");
    assert_eq!(seen.1, theirs.1, "hard-link groups of web@3's root");
    assert_eq!(seen.2, theirs.2, "sha256 of every regular file of web@3's root");
    assert_eq!(seen.3, theirs.3, "getfattr of every entry of web@3's root");
    assert_eq!(
        lib.sql("SELECT hostname FROM images WHERE name = 'web' AND version = 3")[0]["hostname"],
        "imagelake-kvm"
    );
    let said = run(lib.command().arg("unmount").arg(&writable.dir));
    assert!(said.contains("nothing to commit"), "{said}");
}

/// The other two Debian systems of the mount's equivalence (minbase, and minbase +
/// postgresql), each in an ext4 image: the mount of the checked-in version shows what the
/// kernel's read-only mount of the same image shows, entry by entry.
#[test]
fn minbase_and_postgresql_mounts_show_what_the_kernel_shows() {
    let debian = debian_tree();
    let cache = debian.parent().expect("cache").to_path_buf();
    for variant in ["minbase", "postgresql"] {
        let tree = cache.join(format!("bookworm-{variant}"));
        let work = tempfile::tempdir().expect("tempdir");
        let path = |n: &str| work.path().join(n);
        let used: u64 = sh(&format!("du -sm '{}' | cut -f1", tree.display())).trim().parse().expect("size");
        mkfs_ext(&tree, &path("root.img"), "ext4", &format!("{}M", used + used / 4 + 64), &[]);
        let lib = Library::new();
        lib.checkin(&path("root.img"), variant);
        let (fuse, kernel) = (path("fuse"), path("kernel"));
        std::fs::create_dir(&fuse).expect("mkdir");
        std::fs::create_dir(&kernel).expect("mkdir");
        let mounted = Mounted::new(&lib, variant, &fuse, &[]);
        run(Command::new("mount").args(["-o", "loop,ro"]).arg(path("root.img")).arg(&kernel));
        let (ours, theirs) = (kernel_listing(&fuse), kernel_listing(&kernel));
        run(Command::new("umount").arg(&kernel));
        run(lib.command().arg("unmount").arg(&mounted.dir));
        assert_eq!(ours.0, theirs.0, "{variant}: find -printf of every entry");
        assert_eq!(ours.1, theirs.1, "{variant}: sha256 of every regular file");
        assert_eq!(ours.2, theirs.2, "{variant}: getfattr of every entry");
        let entries = ours.0.lines().count();
        eprintln!("{variant}: {entries} entries the same");
        assert!(entries > 4_000, "{variant}: {entries} entries");
        if variant == "postgresql" {
            assert!(ours.0.contains("/usr/lib/postgresql/15/bin/postgres f "), "postgres is there");
        }
    }
}
