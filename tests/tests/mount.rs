//! `imagelake mount`: the FUSE tree of a version against the kernel's own read-only loop mount
//! of the same version's checked-out filesystem, entry by entry.

use imagelake_tests::{Library, attempt, is_mount_point, kernel_listing, mkfs_ext, run, sh};
use std::process::Command;

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
    let said = run(lib.command().arg("mount").arg("t").arg(&fuse));
    assert!(said.starts_with("mounted t@1 (partition 1,"), "{said}");
    assert!(is_mount_point(&fuse), "the command returns once the mount is ready");

    let checkout = work.join("out.raw");
    lib.checkout("t", &checkout);
    run(Command::new("mount").args(["-o", "loop,ro"]).arg(&checkout).arg(&kernel));
    let (ours, theirs) = (kernel_listing(&fuse), kernel_listing(&kernel));
    run(Command::new("umount").arg(&kernel));
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
    let statfs = sh(&format!("stat -f -c '%b %c' '{}'", fuse.display()));
    assert_ne!(statfs.trim(), "0 0", "statfs tells the tree's size and inodes");

    run(lib.command().arg("unmount").arg(&fuse));
    assert!(!is_mount_point(&fuse), "unmounted");
}

#[test]
fn a_mount_that_cannot_be_made_says_why() {
    let lib = Library::new();
    let work = lib.dir.path();
    let tree = work.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/motd"), "hi\n").unwrap();
    let image = work.join("disk.raw");
    mkfs_ext(&tree, &image, "ext4", "8M", &[]);
    lib.checkin(&image, "t");
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
