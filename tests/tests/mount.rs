//! `imagelake mount`: the FUSE tree of a version against the kernel's own read-only loop mount
//! of the same version's checked-out filesystem, entry by entry.

use imagelake_tests::{
    Library, Mounted, attempt, frame_of, is_mount_point, kernel_listing, mkfs_ext, run, sh, unique_bytes,
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
