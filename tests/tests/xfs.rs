//! XFS roots as structure, as RHEL, Rocky and Alma lay them out (in a partition, and in a
//! logical volume): made by `mkfs.xfs`, filled through the kernel's loop mount from a real
//! Debian tree, with what a real root holds
//! besides (xattrs and ACLs, hard links, sparse and preallocated files, folders big enough for
//! every directory form, long symbolic links, device nodes). The kernel's read-only mount is
//! the oracle for every row; `dpkg-query` for the packages; `cmp` for the checkout.

use imagelake_tests::lvm::assert_reads_the_same_in_lvm;
use imagelake_tests::{
    Library, Mounted, debian_tree, dpkg_query, fill_root, gpt_disk, kernel_listing, mkfs_ext, mkfs_vfat, packages_of,
    run, sh, statfs, tree_nodes, unique_bytes,
};
use std::path::Path;
use std::process::Command;

/// An XFS root filled from `tree`, `size_mb` big, made with `mkfs_args`.
fn xfs_image(out: &Path, tree: &Path, size_mb: u64, mkfs_args: &[&str]) {
    run(Command::new("truncate").arg(format!("-s{size_mb}M")).arg(out));
    run(Command::new("mkfs.xfs").args(["-q", "-f", "-L", "root"]).args(mkfs_args).arg(out));
    let mnt = out.with_extension("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    run(Command::new("mount").arg("-o").arg("loop").arg(out).arg(&mnt));
    let filled = std::panic::catch_unwind(|| fill_root(&mnt, tree, "xfs"));
    run(Command::new("umount").arg(&mnt));
    filled.expect("filling the XFS root");
}

/// Which directory forms the image holds, as `xfs_db` names the formats of some folders.
fn data_fork_format(image: &Path, inode: u64) -> String {
    let out = run(Command::new("xfs_db")
        .args(["-r", "-c"])
        .arg(format!("inode {inode}"))
        .args(["-c", "print core.format"])
        .arg(image));
    out.trim().to_string()
}

#[test]
fn an_xfs_root_in_a_gpt_disk_reads_as_the_kernel_mounts_it() {
    let debian = debian_tree();
    let tree = debian.parent().expect("cache").join("bookworm-minbase");
    let work = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| work.path().join(n);
    let used: u64 = sh(&format!("du -sm '{}' | cut -f1", tree.display())).trim().parse().expect("size");
    // Above mkfs.xfs's 300 MB floor.
    xfs_image(&path("root.img"), &tree, (used + used / 2 + 128).max(320), &[]);
    mkfs_vfat(&path("esp.img"), 8192);
    gpt_disk(&path("disk.img"), &path("root.img"), &path("esp.img"));

    // The same Debian tree on ext4 first: the XFS disk then adds as file contents only what
    // `fill_root` wrote besides the tree (12 MB interleaved, 3 MB unique, 1 MB of the sparse file,
    // a few bytes in each of 3,000 small files).
    let lib = Library::new();
    mkfs_ext(&tree, &path("ext4.img"), "ext4", &format!("{}M", used + used / 4 + 64), &[]);
    lib.checkin(&path("ext4.img"), "debian-ext4");
    let said = lib.checkin(&path("disk.img"), "rocky");
    assert_eq!(said["version"], 1, "{said}");
    eprintln!("the XFS disk after the same tree on ext4: {said}");
    let extras = 3000 * 4096 + (3 << 20) + (1 << 20);
    let content = said["bytes_new_content"].as_u64().expect("bytes_new_content");
    assert!((extras..extras + (64 << 10)).contains(&content), "new file contents {content}, extras {extras}");
    let parts = lib.sql("SELECT partition, fs_type, fs_label, fs_error FROM partitions ORDER BY partition");
    let text =
        |p: &serde_json::Map<String, serde_json::Value>, k: &str| p.get(k).and_then(|v| v.as_str().map(String::from));
    let root =
        parts.iter().find(|p| text(p, "fs_type").as_deref() == Some("xfs")).unwrap_or_else(|| panic!("{parts:?}"));
    assert_eq!((text(root, "fs_label").as_deref(), text(root, "fs_error")), (Some("root"), None), "{root:?}");

    // The kernel's mount of the same filesystem and imagelake's, from the rows alone.
    let (fuse, kernel) = (path("fuse"), path("kernel"));
    std::fs::create_dir(&fuse).expect("mkdir");
    std::fs::create_dir(&kernel).expect("mkdir");
    run(Command::new("mount").args(["-o", "loop,ro"]).arg(path("root.img")).arg(&kernel));
    let forms: Vec<String> = ["forms/block", "forms/leaf", "forms/node", "forms/btree", "etc/passwd", "long-link"]
        .iter()
        .map(|p| {
            let inode = std::fs::symlink_metadata(kernel.join(p)).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
            (p, inode.expect("stat"))
        })
        .map(|(p, inode)| format!("{p}: {}", data_fork_format(&path("root.img"), inode)))
        .collect();
    let theirs = kernel_listing(&kernel);
    let packages = dpkg_query(&kernel.join("var/lib/dpkg"));
    let kernel_room = statfs(&kernel);
    run(Command::new("umount").arg(&kernel));
    eprintln!("data fork formats: {forms:?}");
    assert!(forms[3].ends_with("3 (btree)"), "the big folder's block map is a B+tree: {forms:?}");
    assert!(forms[5].ends_with("2 (extents)"), "the long link is in a block: {forms:?}");

    let mounted = Mounted::new(&lib, "rocky", &fuse, &[]);
    let ours = kernel_listing(&fuse);
    // The mount's statfs, from the stored superblock, once it has read where contents lie
    // (the listing read every file): the kernel's, but for the few blocks it sets aside.
    let room = statfs(&fuse);
    assert_eq!((room[0], room[1], room[3], room[4]), (kernel_room[0], kernel_room[1], kernel_room[3], kernel_room[4]));
    assert!(room[2] >= kernel_room[2] && room[2] - kernel_room[2] < 256, "free blocks {room:?} {kernel_room:?}");
    run(lib.command().arg("unmount").arg(&mounted.dir));
    assert_eq!(ours.0, theirs.0, "find -printf of every entry (inode numbers too)");
    assert_eq!(ours.1, theirs.1, "sha256 of every regular file");
    assert_eq!(ours.2, theirs.2, "getfattr of every entry");
    let entries = ours.0.lines().count();
    eprintln!("{entries} entries the same");
    assert!(entries > 8_000, "{entries} entries");
    for expected in ["system.posix_acl_access=", "system.posix_acl_default=", "security.label=", "user.node300="] {
        assert!(ours.2.contains(expected), "{expected} is listed");
    }

    // The packages, as dpkg reads its own database on the kernel's mount.
    assert_eq!(packages_of(&lib, "rocky"), packages, "packages against dpkg-query");

    // Contents as contents: a file is stored once, whichever filesystem holds it.
    let content = lib.sql(
        "SELECT content_hash FROM files f JOIN images i USING (image_id) WHERE i.name = 'rocky' AND path = '/unique'",
    );
    assert_eq!(
        content[0]["content_hash"].as_str(),
        Some(blake3::hash(&unique_bytes("xfs", 3 << 20)).to_hex().as_str())
    );

    // The disk comes back byte for byte.
    lib.checkout("rocky", &path("out.img"));
    run(Command::new("cmp").arg(path("disk.img")).arg(path("out.img")));
    std::fs::remove_file(path("out.img")).expect("rm");

    // The same root as a logical volume: the same rows, and the disk back byte for byte.
    let in_lvm = assert_reads_the_same_in_lvm(&lib, &path("root.img"), "xfs", "rocky", "rocky-lvm");
    assert_eq!(in_lvm, entries, "the logical volume's rows");
}

/// A `mkfs.xfs -p` protofile of the tree under `root`: folders, regular files, symbolic
/// links, FIFOs and device nodes with their owners and permissions. What its syntax cannot
/// carry (names with white space, sticky bits, sockets) is left out of both filesystems made
/// from it.
fn protofile(root: &Path) -> String {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    fn spec(m: &std::fs::Metadata) -> Option<String> {
        let t = m.file_type();
        let kind = if t.is_dir() {
            'd'
        } else if t.is_file() {
            '-'
        } else if t.is_symlink() {
            'l'
        } else if t.is_fifo() {
            'p'
        } else if t.is_char_device() {
            'c'
        } else if t.is_block_device() {
            'b'
        } else {
            return None;
        };
        let mode = m.permissions().mode();
        let (u, g) = (if mode & 0o4000 != 0 { 'u' } else { '-' }, if mode & 0o2000 != 0 { 'g' } else { '-' });
        Some(format!("{kind}{u}{g}{:03o} {} {}", mode & 0o777, m.uid(), m.gid()))
    }
    fn dir(path: &Path, out: &mut String) {
        let mut entries: Vec<_> =
            std::fs::read_dir(path).expect("read_dir").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let Some(spec) = spec(&m) else { continue };
            if name.contains(char::is_whitespace) || name.starts_with('$') || name.starts_with(':') {
                continue;
            }
            let t = m.file_type();
            if t.is_dir() {
                out.push_str(&format!("{name} {spec}\n"));
                dir(&p, out);
                out.push_str("$\n");
            } else if t.is_file() {
                out.push_str(&format!("{name} {spec} {}\n", p.display()));
            } else if t.is_symlink() {
                let target = std::fs::read_link(&p).expect("readlink").to_string_lossy().into_owned();
                if !target.contains(char::is_whitespace) {
                    out.push_str(&format!("{name} {spec} {target}\n"));
                }
            } else if t.is_char_device() || t.is_block_device() {
                let rdev = m.rdev();
                out.push_str(&format!("{name} {spec} {} {}\n", libc::major(rdev), libc::minor(rdev)));
            } else {
                out.push_str(&format!("{name} {spec}\n"));
            }
        }
    }
    let mut out = String::from("imagelake\n0 0\nd--755 0 0\n");
    dir(root, &mut out);
    out.push_str("$\n");
    out
}

/// XFS version 4 (no checksums, smaller headers, older inodes), which this kernel no longer
/// mounts: made from the same protofile as a version 5 filesystem, it reads as the same tree,
/// and the version 5 one as the kernel shows it. Checked in after it, the version 4 disk adds
/// no file content to the store, only its metadata.
#[test]
fn xfs_version_4_reads_as_the_version_5_made_from_the_same_protofile() {
    let debian = debian_tree();
    let tree = debian.parent().expect("cache").join("bookworm-minbase");
    let work = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| work.path().join(n);
    // Folders of every form: /etc and dpkg's info big ones, /usr/share/doc many small ones.
    let proto = path("proto");
    let mut text = String::from("imagelake\n0 0\nd--755 0 0\n");
    for sub in ["etc", "usr/bin", "usr/share/doc", "var/lib/dpkg/info"] {
        let inner = protofile(&tree.join(sub));
        let body = inner.lines().skip(3).collect::<Vec<_>>();
        let name = sub.replace('/', "-");
        text.push_str(&format!("{name} d--755 0 0\n{}\n", body.join("\n")));
    }
    text.push_str("$\n");
    std::fs::write(&proto, &text).expect("write");
    for (name, crc) in [("v5.img", "crc=1"), ("v4.img", "crc=0")] {
        run(Command::new("truncate").arg("-s320M").arg(path(name)));
        run(Command::new("mkfs.xfs").args(["-q", "-f", "-m", crc, "-p"]).arg(&proto).arg(path(name)));
    }
    let lib = Library::new();
    lib.checkin(&path("v5.img"), "v5");
    let v4 = lib.checkin(&path("v4.img"), "v4");
    let rows = |image: &str| {
        lib.sql(&format!(
            "SELECT path, kind, mode, uid, gid, CASE WHEN kind = 'dir' THEN 0 ELSE size END AS size, nlink, \
             link_target, dev_major, dev_minor, content_hash, xattrs FROM files f JOIN images i USING (image_id) \
             WHERE i.name = '{image}' ORDER BY path"
        ))
    };
    let (v5_rows, v4_rows) = (rows("v5"), rows("v4"));
    assert!(v5_rows.len() > 1_400, "{} rows", v5_rows.len());
    assert_eq!(v4_rows, v5_rows, "version 4 rows against version 5 rows");
    let fs_types = lib.sql("SELECT fs_type FROM partitions ORDER BY image_id");
    assert!(fs_types.iter().all(|p| p.get("fs_type").and_then(|v| v.as_str()) == Some("xfs")), "{fs_types:?}");
    // Every file content of the second filesystem was already in the store.
    assert_eq!(v4["bytes_new_content"], 0, "{v4}");
    let new = v4["bytes_new"].as_u64().expect("bytes_new");
    assert!(new < 8 << 20, "version 4's new bytes are its metadata: {new}");

    // The version 5 filesystem as the kernel mounts it.
    let (fuse, kernel) = (path("fuse"), path("kernel"));
    std::fs::create_dir(&fuse).expect("mkdir");
    std::fs::create_dir(&kernel).expect("mkdir");
    run(Command::new("mount").args(["-o", "loop,ro"]).arg(path("v5.img")).arg(&kernel));
    let theirs = kernel_listing(&kernel);
    let kernel_nodes = tree_nodes(&kernel, &["/"]);
    run(Command::new("umount").arg(&kernel));
    // `export` and `cat` of the version 4 filesystem: the same tree and bytes.
    run(lib.command().args(["export", "v4"]).arg(path("export")));
    let exported = tree_nodes(&path("export"), &["/"]);
    let strip = |nodes: &std::collections::BTreeMap<String, imagelake_tests::Node>| -> Vec<(String, u32, u32, u32, Option<String>)> {
        nodes.iter().map(|(p, n)| (p.clone(), n.mode, n.uid, n.gid, n.content.clone())).collect()
    };
    assert_eq!(strip(&exported), strip(&kernel_nodes), "export of version 4 against the kernel's mount of version 5");
    let passwd = run(lib.command().args(["cat", "v4", "/etc/passwd"]));
    assert_eq!(passwd.as_bytes(), std::fs::read(tree.join("etc/passwd")).expect("passwd"));
    let mounted = Mounted::new(&lib, "v5", &fuse, &[]);
    let ours = kernel_listing(&fuse);
    run(lib.command().arg("unmount").arg(&mounted.dir));
    assert_eq!(ours, theirs, "the version 5 filesystem against the kernel's mount");
}
