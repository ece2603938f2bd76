//! `imagelake mount`: the FUSE tree of a version against the kernel's own read-only loop mount
//! of the same version's checked-out filesystem, entry by entry.

use imagelake_tests::{
    Library, Mounted, attempt, edited_listing, frame_of, is_mount_point, kernel_listing, mkfs_ext, run, sh,
    unique_bytes,
};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;

/// A library holding `files` (path, content) in an ext4 image of `size` as `t@1`, and the
/// tree it was made from.
fn checked_in(files: &[(String, Vec<u8>)], size: &str) -> (Library, PathBuf) {
    let lib = Library::new();
    let tree = lib.dir.path().join("tree");
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    imagelake_tests::server::tree(&tree, &files);
    let image = lib.dir.path().join("disk.raw");
    mkfs_ext(&tree, &image, "ext4", size, &[]);
    lib.checkin(&image, "t");
    (lib, tree)
}

#[test]
fn a_mount_shows_what_the_kernels_mount_of_the_checkout_shows() {
    let lib = Library::new();
    let work = lib.dir.path();
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    // Every kind of entry, hard links, a hole, set-id bits, owners, nanosecond times, xattrs.
    sh(&format!(
        "set -e; cd '{}'
         mkdir -p etc/sub usr/bin var/empty
         echo hello > etc/motd
         setfattr -n user.color -v blue etc/motd
         setfattr -n trusted.big -v \"$(head -c 300 /dev/zero | tr '\\0' a)\" etc/sub
         touch -d '2020-01-02 03:04:05.123456789' etc/motd
         head -c 3000000 /dev/urandom > usr/bin/big
         ln usr/bin/big usr/bin/big2
         chmod 4711 usr/bin/big
         ln -s ../etc/motd usr/motd-link
         ln -s /etc/absolute abs
         mkfifo fifo
         mknod null c 1 3
         mknod disk b 8 1
         truncate -s 5M sparse && echo tail >> sparse
         : > empty
         chown 1000:1001 etc/sub",
        tree.display()
    ));
    let image = work.join("disk.raw");
    mkfs_ext(&tree, &image, "ext4", "64M", &[]);
    lib.checkin(&image, "t");

    let (fuse, kernel) = (work.join("fuse"), work.join("kernel"));
    std::fs::create_dir_all(&fuse).unwrap();
    std::fs::create_dir_all(&kernel).unwrap();
    let mounted = Mounted::new(&lib, "t", &fuse, &[]);
    let said = &mounted.said;
    assert!(said.starts_with("mounted t@1 (partition 1,"), "{said}");
    assert!(is_mount_point(&fuse), "the command returns once the mount is ready");

    let checkout = work.join("out.raw");
    lib.checkout("t", &checkout);
    run(Command::new("mount").args(["-o", "loop,ro"]).arg(&checkout).arg(&kernel));
    let (ours, theirs) = (kernel_listing(&fuse), kernel_listing(&kernel));
    // statfs: block size, free blocks, inodes and free inodes as ext4 tells them (the kernel
    // counts blocks without the filesystem's own overhead, so the total differs).
    let room = |dir: &std::path::Path| sh(&format!("stat -f -c '%S %f %c %d' '{}'", dir.display()));
    let (our_room, their_room) = (room(&fuse), room(&kernel));
    run(Command::new("umount").arg(&kernel));
    assert_eq!(our_room, their_room, "statfs");
    assert_eq!(ours.0, theirs.0, "find -printf of every entry");
    assert_eq!(ours.1, theirs.1, "sha256 of every regular file");
    assert_eq!(ours.2, theirs.2, "getfattr of every entry");
    assert!(ours.0.contains("./usr/bin/big f 4711 0 0 3000000"), "{}", ours.0);
    assert!(ours.0.contains("./abs l 777 0 0 13") && ours.0.contains("/etc/absolute"), "targets as stored");
    assert!(ours.2.contains("user.color=\"blue\""), "{}", ours.2);

    // The tree is read-only, and holes read as zeros.
    assert!(std::fs::write(fuse.join("etc/motd"), "x").is_err(), "a read-only mount");
    let sparse = std::fs::read(fuse.join("sparse")).unwrap();
    assert!(sparse[..5 << 20].iter().all(|b| *b == 0) && sparse.ends_with(b"tail\n"));

    run(lib.command().arg("unmount").arg(&fuse));
    assert!(!is_mount_point(&fuse), "unmounted");
}

#[test]
fn files_kept_inside_their_inodes_read_as_the_kernel_reads_them_and_their_edits_commit() {
    let lib = Library::new();
    let work = lib.dir.path();
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    // Small files and folders that ext4 keeps in the inode (the first 60 bytes in i_block, the
    // rest in the "system.data" xattr); a large one in blocks beside them.
    sh(&format!(
        "set -e; cd '{}'
         mkdir -p etc/small
         echo inline > etc/hostname
         head -c 100 /dev/urandom > etc/id
         head -c 40 /dev/urandom > etc/small/key
         head -c 20000 /dev/urandom > etc/blocks",
        tree.display()
    ));
    let image = work.join("disk.raw");
    mkfs_ext(&tree, &image, "ext4", "16M", &["-O", "inline_data"]);
    let stat = run(Command::new("debugfs").args(["-R", "stat /etc/id"]).arg(&image));
    assert!(stat.contains("Size of inline data"), "/etc/id is kept inline: {stat}");
    lib.checkin(&image, "t");
    assert_eq!(run(lib.command().args(["cat", "t", "/etc/hostname"])), "inline\n");

    let (fuse, kernel) = (work.join("fuse"), work.join("kernel"));
    std::fs::create_dir_all(&fuse).unwrap();
    std::fs::create_dir_all(&kernel).unwrap();
    let mounted = Mounted::new(&lib, "t", &fuse, &[]);
    run(Command::new("mount").args(["-o", "loop,ro"]).arg(&image).arg(&kernel));
    let (ours, theirs) = (kernel_listing(&fuse), kernel_listing(&kernel));
    run(Command::new("umount").arg(&kernel));
    assert_eq!(ours.0, theirs.0, "find -printf of every entry");
    assert_eq!(ours.1, theirs.1, "sha256 of every regular file");
    run(lib.command().arg("unmount").arg(&mounted.dir));

    // Written in a writable mount, committed, and read again from the new version's inodes.
    let _writable = Mounted::new(&lib, "t", &fuse, &["--writable"]);
    sh(&format!(
        "set -e; cd '{}'
         echo changed > etc/hostname
         head -c 90 /dev/urandom > etc/small/new
         rm etc/id",
        fuse.display()
    ));
    let seen = edited_listing(&fuse);
    let said = run(lib.command().arg("commit").arg(&fuse));
    assert!(said.starts_with("committed t@2 from t@1"), "{said}");
    assert_eq!(edited_listing(&fuse), seen, "the mount reads the new version's inline files");
    let checkout = work.join("t2.raw");
    lib.checkout("t@2", &checkout);
    run(Command::new("e2fsck").arg("-fn").arg(&checkout));
    let stat = run(Command::new("debugfs").args(["-R", "stat /etc/small/new"]).arg(&checkout));
    assert!(stat.contains("Size of inline data"), "the new file is kept inline: {stat}");
    run(Command::new("mount").args(["-o", "loop,ro"]).arg(&checkout).arg(&kernel));
    let theirs = edited_listing(&kernel);
    run(Command::new("umount").arg(&kernel));
    assert_eq!(seen, theirs, "the kernel's mount of the commit shows what the mount showed");
    run(lib.command().arg("unmount").arg(&fuse));
}

#[test]
fn a_mount_that_cannot_be_made_says_why() {
    let (lib, _) = checked_in(&[("/etc/motd".into(), b"hi\n".to_vec())], "8M");
    let work = lib.dir.path();
    let missing = attempt(lib.command().arg("mount").arg("nosuch").arg(work));
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no image nosuch"), "{missing:?}");
    let nowhere = attempt(lib.command().arg("mount").arg("t").arg(work.join("no-such-dir")));
    assert_ne!(nowhere.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("no-such-dir"), "{nowhere:?}");
    let partition = attempt(lib.command().args(["mount", "t"]).arg(work).args(["--partition", "7"]));
    assert!(
        String::from_utf8_lossy(&partition.stderr).contains("no indexed filesystem on partition 7"),
        "{partition:?}"
    );
}

#[test]
fn eight_readers_agree_and_a_damaged_pack_is_eio_for_its_files_only() {
    let mut files = vec![
        ("/etc/motd".to_string(), b"hello\n".to_vec()),
        ("/etc/config".to_string(), unique_bytes("config", 300_000)),
    ];
    files.extend((0..40).map(|i| (format!("/data/{i}"), unique_bytes(&i.to_string(), 50_000 + i * 997))));
    let (lib, tree) = checked_in(&files, "32M");
    let work = lib.dir.path();
    let fuse = work.join("fuse");
    std::fs::create_dir_all(&fuse).unwrap();
    let _mounted = Mounted::new(&lib, "t", &fuse, &[]);

    // 8 readers at once (tar, sha256sum, find), each the same answer as one reader alone.
    let f = fuse.display();
    let reading = [
        format!("cd '{f}' && tar cf - --sort=name . | sha256sum"),
        format!("cd '{f}' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum"),
        format!("cd '{f}' && find . -printf '%p %s %i\\n' | LC_ALL=C sort | sha256sum"),
    ];
    let alone: Vec<String> = reading.iter().map(|r| sh(r)).collect();
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let script = reading[i % reading.len()].clone();
            std::thread::spawn(move || (i % 3, sh(&script)))
        })
        .collect();
    for reader in readers {
        let (which, got) = reader.join().unwrap();
        assert_eq!(got, alone[which], "reader {which} at once and alone");
    }
    run(lib.command().arg("unmount").arg(&fuse));

    // A byte flipped in the frame that holds /etc/config's first chunk. Through a new mount,
    // exactly the files whose chunks verify finds damaged read as I/O errors; every other file
    // reads as it was, and the mount goes on serving.
    let (pack, offset, length) = frame_of(&lib, "t", "/etc/config");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&pack).unwrap();
    let at = offset + length / 2;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    let verify = attempt(lib.command().args(["verify", "--json"]));
    assert!(!verify.status.success());
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    let damaged: std::collections::BTreeSet<String> = report["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["used_by"].as_array().unwrap().iter().filter_map(|u| u["path"].as_str().map(String::from)))
        .collect();
    assert!(!damaged.is_empty(), "{report}");
    let _remounted = Mounted::new(&lib, "t", &fuse, &[]);
    for path in files.iter().map(|(path, _)| path) {
        let read = std::fs::read(fuse.join(&path[1..]));
        if damaged.contains(path) {
            assert_eq!(read.map(|b| b.len()).map_err(|e| e.raw_os_error()), Err(Some(EIO)), "{path} is damaged");
        } else {
            let expected = std::fs::read(tree.join(&path[1..])).unwrap();
            assert!(read.is_ok_and(|b| b == expected), "{path} reads as it was");
        }
    }
    run(lib.command().arg("unmount").arg(&fuse));
}

/// An I/O error, as the kernel passes the mount's answer on.
const EIO: i32 = 5;

#[test]
fn a_vfat_mount_shows_what_mtools_shows() {
    let lib = Library::new();
    let work = lib.dir.path();
    let esp = work.join("esp.img");
    let (big, small) = (work.join("big.bin"), work.join("small.efi"));
    std::fs::write(&big, unique_bytes("esp", 200_000)).unwrap();
    std::fs::write(&small, "bootx\n").unwrap();
    run(Command::new("mkfs.vfat").arg("-C").arg(&esp).arg("8192"));
    let image = format!("{}", esp.display());
    run(Command::new("mmd").args(["-i", &image, "::/EFI", "::/EFI/debian"]));
    run(Command::new("mcopy").args(["-i", &image]).arg(&small).arg("::/EFI/debian/grubx64.efi"));
    run(Command::new("mcopy").args(["-i", &image]).arg(&big).arg("::/EFI/A Long File Name.bin"));
    lib.checkin(&esp, "esp");
    let fuse = work.join("fuse");
    std::fs::create_dir_all(&fuse).unwrap();
    let _mounted = Mounted::new(&lib, "esp", &fuse, &[]);

    // Every path mtools lists (folders end in '/'), and nothing else; each file's bytes as
    // mtools copies them out.
    let listed = run(Command::new("mdir").args(["-i", &image, "-/", "-b", "::/"]));
    let mut theirs: Vec<String> = listed.lines().map(|l| l.trim_start_matches("::").to_string()).collect();
    theirs.sort();
    let ours =
        sh(&format!("cd '{}' && find . -mindepth 1 -type d -printf '/%P/\\n' -o -printf '/%P\\n'", fuse.display()));
    let mut ours: Vec<String> = ours.lines().map(String::from).collect();
    ours.sort();
    assert_eq!(ours, theirs);
    for path in theirs.iter().filter(|p| !p.ends_with('/')) {
        let copied = work.join("copied");
        run(Command::new("mcopy").args(["-o", "-i", &image]).arg(format!("::{path}")).arg(&copied));
        let read = std::fs::read(fuse.join(&path[1..])).unwrap();
        assert!(read == std::fs::read(&copied).unwrap(), "{path} reads as mtools copies it");
    }
    run(lib.command().arg("unmount").arg(&fuse));
}

/// Bytes of every pack of the library.
fn stored(lib: &Library) -> u64 {
    sh(&format!("du -sb --apparent-size '{}' | cut -f1", lib.path().join("packs").display())).trim().parse().unwrap()
}

#[test]
fn a_writable_mount_commits_exactly_its_changes_as_the_next_version() {
    let lib = Library::new();
    let work = lib.dir.path();
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(work.join("kernel-1"), unique_bytes("kernel 1", 3_000_000)).unwrap();
    sh(&format!(
        "set -e; cd '{}'
         mkdir -p etc/network boot srv/old srv/data var run
         printf 'auto eth0\\niface eth0 inet dhcp\\n' > etc/network/interfaces
         cp '{}' boot/vmlinuz
         echo hello > etc/motd
         echo secret > etc/shadow
         echo '127.0.0.1 localhost' > etc/hosts
         echo a > srv/old/a
         echo b > srv/data/b
         touch -d '2020-01-02 03:04:05.123456789' etc/hosts",
        tree.display(),
        work.join("kernel-1").display()
    ));
    let image = work.join("disk.raw");
    mkfs_ext(&tree, &image, "ext4", "64M", &[]);
    lib.checkin(&image, "t");
    let before = stored(&lib);

    let fuse = work.join("fuse");
    std::fs::create_dir_all(&fuse).unwrap();
    let mounted = Mounted::new(&lib, "t", &fuse, &["--writable"]);
    assert!(mounted.said.contains("writable"), "{}", mounted.said);
    // Once the contents are known (a read waits for them), statfs tells ext4's free blocks.
    std::fs::read(fuse.join("etc/motd")).unwrap();
    let free_before: u64 = sh(&format!("stat -f -c '%f' '{}'", fuse.display())).trim().parse().unwrap();
    let kernel_2 = work.join("kernel-2");
    std::fs::write(&kernel_2, unique_bytes("kernel 2", 4_000_000)).unwrap();
    sh(&format!(
        "set -e; cd '{}'
         sed -i s/dhcp/static/ etc/network/interfaces
         cp '{}' boot/vmlinuz
         rm etc/motd
         mkdir -p opt/app/lib
         chmod 600 etc/shadow
         setfattr -n user.origin -v mount etc/hosts
         ln etc/hosts etc/hosts.hard
         mv srv/old srv/new
         mv srv/data var/data
         mkfifo run/fifo",
        fuse.display(),
        kernel_2.display()
    ));
    let seen = edited_listing(&fuse);
    assert!(seen.1.contains("./etc/hosts ./etc/hosts.hard"), "a hard link: {}", seen.1);
    let free =
        |dir: &std::path::Path| -> u64 { sh(&format!("stat -f -c '%f' '{}'", dir.display())).trim().parse().unwrap() };
    assert!(free(&fuse) + 4_000_000 / 4096 <= free_before, "statfs counts the blocks written");
    let said = run(lib.command().arg("commit").arg(&fuse));
    assert!(said.starts_with("committed t@2 from t@1"), "{said}");

    // compare(old, new) lists exactly those changes.
    let rows = lib.sql("SELECT change, path FROM compare('t@1', 't@2') WHERE entry = 'file' ORDER BY path");
    let changes: Vec<String> =
        rows.iter().map(|r| format!("{} {}", r["change"].as_str().unwrap(), r["path"].as_str().unwrap())).collect();
    // Each change, and each folder whose entries changed (its mtime with them): no other path.
    let expected = [
        "metadata /",
        "modified /boot/vmlinuz",
        "metadata /etc",
        "metadata /etc/hosts",
        "added /etc/hosts.hard",
        "removed /etc/motd",
        "metadata /etc/network",
        "modified /etc/network/interfaces",
        "metadata /etc/shadow",
        "added /opt",
        "added /opt/app",
        "added /opt/app/lib",
        "metadata /run",
        "added /run/fifo",
        "metadata /srv",
        "removed /srv/data",
        "removed /srv/data/b",
        "added /srv/new",
        "added /srv/new/a",
        "removed /srv/old",
        "removed /srv/old/a",
        "metadata /var",
        "added /var/data",
        "added /var/data/b",
    ];
    assert_eq!(changes, expected);
    let arguments = lib.sql("SELECT p.operation, p.arguments FROM provenance p JOIN images i USING (image_id) WHERE i.name = 't' AND i.version = 2");
    assert_eq!(arguments[0]["operation"], "mount");
    let arguments: serde_json::Value = serde_json::from_str(arguments[0]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["changed"].as_array().unwrap().iter().any(|p| p == "/etc/motd"), "{arguments}");

    // The new version's checkout is clean, and the kernel's mount of it shows what the mount
    // showed before the commit.
    let checkout = work.join("t2.raw");
    lib.checkout("t@2", &checkout);
    run(Command::new("e2fsck").arg("-fn").arg(&checkout));
    let kernel = work.join("kernel");
    std::fs::create_dir_all(&kernel).unwrap();
    run(Command::new("mount").args(["-o", "loop,ro"]).arg(&checkout).arg(&kernel));
    let theirs = edited_listing(&kernel);
    let room = |dir: &std::path::Path| sh(&format!("stat -f -c '%S %f %c %d' '{}'", dir.display()));
    let their_room = room(&kernel);
    run(Command::new("umount").arg(&kernel));
    assert_eq!(room(&fuse), their_room, "statfs of the mount serving t@2");
    assert_eq!(seen.0, theirs.0, "find -printf of every entry");
    assert_eq!(seen.1, theirs.1, "hard-link groups");
    assert_eq!(seen.2, theirs.2, "sha256 of every regular file");
    assert_eq!(seen.3, theirs.3, "getfattr of every entry");

    // The old version is as it was, byte for byte; the store grew by about the bytes written.
    let old = work.join("t1.raw");
    lib.checkout("t@1", &old);
    run(Command::new("cmp").arg(&old).arg(&image));
    let grown = stored(&lib) - before;
    assert!((4_000_000..4_600_000).contains(&grown), "the store grew by {grown} bytes for 4 MB written");

    // The mount serves the new version, and goes on taking changes: unmount commits them.
    assert_eq!(std::fs::read(fuse.join("boot/vmlinuz")).unwrap(), std::fs::read(&kernel_2).unwrap());
    assert_eq!(edited_listing(&fuse), seen, "the mount's tree is unchanged by the commit");
    std::fs::write(fuse.join("etc/motd"), "back\n").unwrap();
    let said = run(lib.command().arg("unmount").arg(&fuse));
    assert!(said.starts_with("committed t@3 from t@2"), "{said}");
    assert!(!is_mount_point(&fuse));
    assert_eq!(run(lib.command().args(["cat", "t@3", "/etc/motd"])), "back\n");

    // --discard drops the changes; nothing is left in the library's scratch folder.
    let _again = Mounted::new(&lib, "t", &fuse, &["--writable"]);
    std::fs::write(fuse.join("etc/dropped"), "x").unwrap();
    run(lib.command().args(["unmount", "--discard"]).arg(&fuse));
    let versions = lib.sql("SELECT max(version) AS v FROM images WHERE name = 't'");
    assert_eq!(versions[0]["v"], 3, "no version from a discarded mount");
    let check = run(lib.command().args(["check", "--json"]));
    let report: serde_json::Value = serde_json::from_str(&check).unwrap();
    assert_eq!(report["stale_files"], serde_json::json!([]), "{report}");
}

#[test]
fn a_writable_mount_killed_while_writing_leaves_the_library_clean() {
    let (lib, _) = checked_in(&[("/etc/motd".into(), b"hi\n".to_vec())], "16M");
    let work = lib.dir.path();
    let fuse = work.join("fuse");
    std::fs::create_dir_all(&fuse).unwrap();
    let _mounted = Mounted::new(&lib, "t", &fuse, &["--writable"]);
    let writer = std::thread::spawn({
        let target = fuse.join("etc/big");
        move || {
            let of = format!("of={}", target.display());
            attempt(Command::new("dd").arg("if=/dev/urandom").arg(of).args(["bs=1M", "count=200"]))
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    run(Command::new("kill").arg("-9").arg(server_of(&fuse)));
    let _ = writer.join();
    let _ = Command::new("umount").arg("-l").arg(&fuse).status();

    let check = attempt(lib.command().args(["check", "--json"]));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let stale = report["stale_files"].as_array().unwrap();
    assert!(stale.iter().any(|f| f.as_str().unwrap().contains("mount-")), "the scratch area is listed: {report}");
    let versions = lib.sql("SELECT count(*) AS n FROM images WHERE name = 't'");
    assert_eq!(versions[0]["n"], 1, "the old version only");
    run(lib.command().args(["check", "--reclaim"]));
    let report: serde_json::Value = serde_json::from_str(&run(lib.command().args(["check", "--json"]))).unwrap();
    assert_eq!(report["stale_files"], serde_json::json!([]), "reclaimed: {report}");
}

#[test]
fn a_killed_writable_mount_keeps_every_change_it_acknowledged_for_commit_to_make_a_version() {
    let (lib, _) = checked_in(
        &[
            ("/etc/motd".into(), b"hi\n".to_vec()),
            ("/etc/hosts".into(), b"127.0.0.1 localhost\n".to_vec()),
            ("/srv/old/a".into(), b"a\n".to_vec()),
        ],
        "32M",
    );
    let work = lib.dir.path();
    let fuse = work.join("fuse");
    std::fs::create_dir_all(&fuse).unwrap();
    std::fs::write(work.join("big"), unique_bytes("written before the kill", 3_000_000)).unwrap();
    let _mounted = Mounted::new(&lib, "t", &fuse, &["--writable"]);
    // Changes, a commit (nodes made before it keep their numbers after it), more changes to
    // what the commit made and to the rest; then the process is killed, nothing synced.
    sh(&format!(
        "set -e; cd '{}'
         mkdir -p opt/app
         echo one > opt/app/first
         ln -s ../etc/hosts opt/app/hosts-link",
        fuse.display()
    ));
    assert!(run(lib.command().arg("commit").arg(&fuse)).starts_with("committed t@2 from t@1"));
    sh(&format!(
        "set -e; cd '{}'
         echo two >> opt/app/first
         ln opt/app/first opt/app/first.hard
         mv opt/app opt/renamed
         cp '{}' opt/renamed/big
         truncate -s 1000000 opt/renamed/big
         rm etc/motd
         chmod 640 etc/hosts
         chown 7:8 etc/hosts
         setfattr -n user.origin -v journal etc/hosts
         touch -d '2021-02-03 04:05:06.7' srv/old/a
         mv srv/old srv/new
         mkfifo srv/fifo
         mknod srv/null c 1 3",
        fuse.display(),
        work.join("big").display()
    ));
    let seen = edited_listing(&fuse);
    let big = std::fs::read(fuse.join("opt/renamed/big")).unwrap();
    run(Command::new("kill").arg("-9").arg(server_of(&fuse)));
    let _ = Command::new("umount").arg("-l").arg(&fuse).status();

    let said = run(lib.command().arg("check"));
    assert!(said.contains(&format!("the writable mount on {} ended without committing", fuse.display())), "{said}");
    let said = run(lib.command().arg("commit").arg(&fuse));
    assert!(said.starts_with("committed t@3 from t@2"), "{said}");
    assert!(said.ends_with(&format!("(the mount on {} ended without committing)\n", fuse.display())), "{said}");

    // t@3 is the tree the mount showed when it was killed: its checkout clean, and the kernel's
    // mount of it shows the same entries, times, links, contents and xattrs.
    let checkout = work.join("t3.raw");
    lib.checkout("t@3", &checkout);
    run(Command::new("e2fsck").arg("-fn").arg(&checkout));
    let kernel = work.join("kernel");
    std::fs::create_dir_all(&kernel).unwrap();
    run(Command::new("mount").args(["-o", "loop,ro"]).arg(&checkout).arg(&kernel));
    let theirs = edited_listing(&kernel);
    let their_big = std::fs::read(kernel.join("opt/renamed/big")).unwrap();
    run(Command::new("umount").arg(&kernel));
    assert_eq!(seen.0, theirs.0, "find -printf of every entry");
    assert_eq!(seen.1, theirs.1, "hard-link groups");
    assert_eq!(seen.2, theirs.2, "sha256 of every regular file");
    assert_eq!(seen.3, theirs.3, "getfattr of every entry");
    assert!(big.len() == 1_000_000 && big == their_big, "the truncated copy");
    let arguments = lib.sql(
        "SELECT p.arguments FROM provenance p JOIN images i USING (image_id) WHERE i.name = 't' AND i.version = 3",
    );
    let arguments: serde_json::Value = serde_json::from_str(arguments[0]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments["recovered"], true, "{arguments}");

    // Committed once: the scratch area is gone, and there is nothing left to commit.
    let report: serde_json::Value = serde_json::from_str(&run(lib.command().args(["check", "--json"]))).unwrap();
    assert_eq!(report["stale_files"], serde_json::json!([]), "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    let again = attempt(lib.command().arg("commit").arg(&fuse));
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("holds no writable mount"), "{again:?}");

    // A killed mount's changes can be dropped instead: `unmount --discard`.
    let _again = Mounted::new(&lib, "t", &fuse, &["--writable"]);
    std::fs::write(fuse.join("etc/dropped"), "x").unwrap();
    run(Command::new("kill").arg("-9").arg(server_of(&fuse)));
    let said = run(lib.command().args(["unmount", "--discard"]).arg(&fuse));
    assert!(said.starts_with("dropped the changes (the mount on"), "{said}");
    assert!(!is_mount_point(&fuse));
    let report: serde_json::Value = serde_json::from_str(&run(lib.command().args(["check", "--json"]))).unwrap();
    assert_eq!(report["stale_files"], serde_json::json!([]), "{report}");
    assert_eq!(lib.sql("SELECT max(version) AS v FROM images WHERE name = 't'")[0]["v"], 3);
}

/// The pid of the process serving `dir` for image `t`.
fn server_of(dir: &std::path::Path) -> String {
    // ([m] keeps pgrep from matching the shell that runs it.)
    sh(&format!("pgrep -f -- '[m]ount t {} --foreground'", dir.display())).trim().to_string()
}

#[test]
fn a_writable_mount_killed_while_it_commits_leaves_the_old_version_or_the_new_one_whole_and_commit_finishes() {
    use std::io::BufRead;
    let (lib, _) = checked_in(&[("/etc/motd".into(), b"hi\n".to_vec())], "64M");
    let work = lib.dir.path();
    let fuse = work.join("fuse");
    std::fs::create_dir_all(&fuse).unwrap();
    let content = unique_bytes("committed while killed", 20 << 20);
    // The mount is killed as the commit reaches each of its phases in turn (IMAGELAKE_TRACE
    // names them on standard error as they end, and waits after each), the last after the
    // commit itself; killed between its provenance row and its images row, the version was
    // never made, and `commit` then makes it.
    let phases = [
        "edit: metadata in a scratch file, found clean",
        "edit: changes made by debugfs",
        "edit: result checked (e2fsck, undo keys)",
        "checkin: disk read, new chunks stored",
        "checkin: rows appended",
        "commit: provenance appended",
        "checkin: committed",
    ];
    for (round, phase) in phases.into_iter().enumerate() {
        let mut server = lib
            .command()
            .args(["mount", "t"])
            .arg(&fuse)
            .args(["--writable", "--foreground"])
            .env("IMAGELAKE_TRACE", "pause")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = String::new();
        std::io::BufReader::new(server.stdout.take().unwrap()).read_line(&mut said).unwrap();
        assert!(said.starts_with("mounted "), "{said}");
        let _mounted = Mounted { dir: fuse.clone(), said };
        let name = format!("etc/big-{round}");
        // Every round's file is committed in the end: the last round's goes, to leave room.
        if round > 0 {
            std::fs::remove_file(fuse.join(format!("etc/big-{}", round - 1))).unwrap();
        }
        std::fs::write(fuse.join(&name), &content).unwrap();
        let mut commit = lib.command().arg("commit").arg(&fuse).stdout(std::process::Stdio::null()).spawn().unwrap();
        let stderr = server.stderr.take().unwrap();
        let reached = std::thread::spawn(move || {
            std::io::BufReader::new(stderr).lines().map_while(Result::ok).any(|line| line.ends_with(phase))
        });
        // A commit that fails never reaches the phase, and the mount goes on serving.
        while !reached.is_finished() {
            if let Some(status) = commit.try_wait().unwrap() {
                assert!(status.success() || reached.is_finished(), "round {round}: the commit failed: {status}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(reached.join().unwrap(), "round {round}: the commit never reached {phase:?}");
        server.kill().unwrap();
        server.wait().unwrap();
        let _ = commit.wait_with_output();
        let _ = Command::new("umount").arg("-l").arg(&fuse).status();

        let check = attempt(lib.command().args(["check", "--json"]));
        let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
        assert_eq!(report["problems"], serde_json::json!([]), "round {round}: {report}");
        // The new version, whole, only once the commit is made; the old one until then.
        let latest = || lib.sql("SELECT max(version) AS v FROM images WHERE name = 't'")[0]["v"].as_i64().unwrap();
        let has = |version: i64| {
            let rows = lib.sql(&format!(
                "SELECT count(*) AS n FROM files f JOIN images i USING (image_id) \
                 WHERE i.name = 't' AND i.version = {version} AND f.path = '/{name}'"
            ));
            rows[0]["n"].as_i64() == Some(1)
        };
        let killed_at = latest();
        let committed = has(killed_at);
        eprintln!("round {round}, killed after {phase:?}: t@{killed_at}, committed: {committed}");
        assert!(committed || round < phases.len() - 1, "the commit was made before the kill");
        assert!(!committed || round >= phases.len() - 2, "a version from a commit killed before it was made");
        // `commit` then makes the version the kill prevented, and never one made already.
        let said = run(lib.command().arg("commit").arg(&fuse));
        let expected = match committed {
            true => format!("committed already as t@{killed_at}"),
            false => format!("committed t@{} from t@{killed_at}", killed_at + 1),
        };
        assert!(said.starts_with(&expected), "round {round}: {said}");
        let spec = format!("t@{}", latest());
        assert_eq!(latest(), round as i64 + 2, "one version a round");
        assert!(has(latest()), "round {round}: {spec} has the file");
        run(lib.command().args(["check", "--reclaim"]));
        let checkout = work.join("latest.raw");
        lib.checkout(&spec, &checkout);
        run(Command::new("e2fsck").arg("-fn").arg(&checkout));
        std::fs::remove_file(&checkout).unwrap();
        let read = lib.command().args(["cat", &spec, &format!("/{name}")]).output().unwrap();
        assert!(read.stdout == content, "round {round}: {spec} holds the file whole");
    }
    let report: serde_json::Value = serde_json::from_str(&run(lib.command().args(["check", "--json"]))).unwrap();
    assert_eq!(report["stale_files"], serde_json::json!([]), "reclaimed: {report}");
}

#[test]
fn a_writable_mount_of_a_filesystem_edits_cannot_change_is_refused() {
    let lib = Library::new();
    let work = lib.dir.path();
    let esp = work.join("esp.img");
    run(Command::new("mkfs.vfat").arg("-C").arg(&esp).arg("4096"));
    lib.checkin(&esp, "esp");
    let fuse = work.join("fuse");
    std::fs::create_dir_all(&fuse).unwrap();
    let refused = attempt(lib.command().args(["mount", "esp"]).arg(&fuse).arg("--writable"));
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no ext2/3/4 filesystem to edit"), "{refused:?}");
    assert!(!is_mount_point(&fuse));
}

#[test]
fn fsx_in_a_writable_mount_then_committed_equals_fsx_on_a_kernel_filesystem() {
    let (lib, _) = checked_in(&[("/etc/motd".into(), b"hi\n".to_vec())], "64M");
    let work = lib.dir.path();
    let (fuse, host, artifacts) = (work.join("fuse"), work.join("host"), work.join("fsx"));
    for dir in [&fuse, &host, &artifacts] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let _mounted = Mounted::new(&lib, "t", &fuse, &["--writable"]);
    // The same seed gives the same 100,000 operations: once in the mount, once on the host's
    // own filesystem, at once. fsx checks every read against what it wrote.
    let runs: Vec<_> = [&fuse, &host]
        .into_iter()
        .map(|dir| {
            let mut fsx = Command::new("fsx");
            fsx.args(["-N", "100000", "-S", "20261202", "-P"]).arg(&artifacts).arg(dir.join("fsx.file"));
            std::thread::spawn(move || run(&mut fsx))
        })
        .collect();
    for fsx in runs {
        assert!(fsx.join().unwrap().contains("All operations completed A-OK"));
    }
    let expected = std::fs::read(host.join("fsx.file")).unwrap();
    assert!(std::fs::read(fuse.join("fsx.file")).unwrap() == expected, "the mount's file is fsx's");
    let said = run(lib.command().arg("unmount").arg(&fuse));
    assert!(said.starts_with("committed t@2 from t@1"), "{said}");
    let committed = lib.command().args(["cat", "t@2", "/fsx.file"]).output().unwrap();
    assert!(committed.status.success() && committed.stdout == expected, "the committed file is fsx's");
}

/// pjdfstest cases that pass on the kernel's ext4 and not on a writable mount, and why (the
/// README says the same).
const PJDFSTEST_KNOWN: &[(&str, &str)] = &[(
    "link::link_count_max",
    "skipped: glibc's pathconf knows LINK_MAX only for the filesystem types it names, and a FUSE mount is none of them",
)];

/// pjdfstest's verdict on `dir` (with `other` on another filesystem): each case with `ok`,
/// `FAILED` or `skipped`.
fn pjdfstest(
    dir: &std::path::Path,
    other: &std::path::Path,
    config: &std::path::Path,
) -> std::collections::BTreeMap<String, String> {
    let out = attempt(Command::new("pjdfstest").arg("-c").arg(config).arg("-p").arg(dir).arg("-s").arg(other));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (case, verdict) = (words.next()?, words.next()?);
            (case.contains("::") && matches!(verdict, "ok" | "FAILED" | "skipped"))
                .then(|| (case.to_string(), verdict.to_string()))
        })
        .collect()
}

#[test]
fn pjdfstest_on_a_writable_mount_passes_where_ext4_does_or_as_documented() {
    let (lib, _) = checked_in(&[("/etc/motd".into(), b"hi\n".to_vec())], "64M");
    let work = lib.dir.path();
    let config = work.join("pjdfstest.toml");
    // Every feature Linux and ext4 have (the others are FreeBSD's); read-only remounts are
    // not tried.
    std::fs::write(
        &config,
        "[features]\nposix_fallocate = {}\nrename_ctime = {}\nutime_now = {}\nutimensat = {}\n\
         [settings]\nnaptime = 0.01\nallow_remount = false\n\
         [dummy_auth]\nentries = [[\"nobody\", \"nogroup\"], [\"daemon\", \"daemon\"]]\n",
    )
    .unwrap();
    // The kernel's ext4 on a loop device: what a filesystem of the same kind answers.
    let (fuse, kernel, other, disk) =
        (work.join("fuse"), work.join("kernel"), work.join("other"), work.join("ext4.raw"));
    for dir in [&fuse, &kernel, &other] {
        std::fs::create_dir_all(dir).unwrap();
    }
    run(Command::new("truncate").args(["-s", "64M"]).arg(&disk));
    run(Command::new("mkfs.ext4").arg("-q").arg(&disk));
    run(Command::new("mount").args(["-o", "loop"]).arg(&disk).arg(&kernel));
    sh(&format!("chmod 755 '{}'", kernel.display()));
    let ext4 = pjdfstest(&kernel, &other, &config);
    run(Command::new("umount").arg(&kernel));
    let mounted = Mounted::new(&lib, "t", &fuse, &["--writable", "--allow-other"]);
    let ours = pjdfstest(&mounted.dir, &other, &config);
    assert_eq!(ours.keys().collect::<Vec<_>>(), ext4.keys().collect::<Vec<_>>(), "the same cases ran");
    assert!(ours.len() > 300, "pjdfstest ran: {ours:?}");
    let count = |verdicts: &std::collections::BTreeMap<String, String>, verdict: &str| {
        verdicts.values().filter(|v| *v == verdict).count()
    };
    eprintln!(
        "pjdfstest on the mount: {} passed, {} failed, {} skipped; on ext4: {} passed, {} failed, {} skipped",
        count(&ours, "ok"),
        count(&ours, "FAILED"),
        count(&ours, "skipped"),
        count(&ext4, "ok"),
        count(&ext4, "FAILED"),
        count(&ext4, "skipped"),
    );
    let worse: Vec<String> = (ours.iter())
        .filter(|(case, verdict)| *verdict != "ok" && ext4.get(*case).is_some_and(|v| v != *verdict))
        .map(|(case, verdict)| format!("{case} {verdict}"))
        .collect();
    let known: Vec<String> =
        PJDFSTEST_KNOWN.iter().map(|(case, why)| format!("{case} {}", why.split(':').next().unwrap())).collect();
    assert_eq!(worse, known, "the cases only the mount does not pass are the documented ones");
    run(lib.command().args(["unmount", "--discard"]).arg(&fuse));
}
