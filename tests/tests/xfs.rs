//! XFS roots as structure, as RHEL, Rocky and Alma lay them out: made by `mkfs.xfs`, filled
//! through the kernel's loop mount from a real Debian tree, with what a real root holds
//! besides (xattrs and ACLs, hard links, sparse and preallocated files, folders big enough for
//! every directory form, long symbolic links, device nodes). The kernel's read-only mount is
//! the oracle for every row; `dpkg-query` for the packages; `cmp` for the checkout.

use imagelake_tests::{
    Library, Mounted, debian_tree, dpkg_query, gpt_disk, kernel_listing, mkfs_vfat, run, sh, unique_bytes,
};
use std::path::Path;
use std::process::Command;

/// Fills a mounted XFS filesystem: the tree, then the structures a copy alone would not make.
fn fill(mnt: &Path, tree: &Path) {
    let m = mnt.display();
    run(Command::new("cp").arg("-a").arg(format!("{}/.", tree.display())).arg(mnt));
    sh(&format!(
        "set -e; cd '{m}'
         # Folders of every form: short form, block, leaf, node, and one whose block map is a
         # B+tree (its blocks interleaved with a file's, so they fragment).
         mkdir -p forms/block forms/leaf forms/node forms/btree
         for i in $(seq 1 20); do : > forms/block/f$i; done
         for i in $(seq 1 200); do : > forms/leaf/entry-$i; done
         for i in $(seq 1 1500); do : > forms/node/a-longer-entry-name-$i; done
         for i in $(seq 1 3000); do echo $i > forms/btree/a-long-name-to-fill-blocks-$i; \
           head -c 4096 /dev/urandom >> forms/interleaved; done
         # Attributes: short form, a leaf, a tree of leaves, a remote value, an ACL, security.
         setfattr -n user.short -v hello etc/hostname
         for i in $(seq 1 40); do setfattr -n user.leaf$i -v value-$i-yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy etc/fstab; done
         for i in $(seq 1 300); do setfattr -n user.node$i -v value-$i-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz etc/passwd; done
         setfattr -n user.remote -v \"$(head -c 5000 /dev/zero | tr '\\0' r)\" etc/group
         setfacl -m u:1000:rw,g:1000:r etc/shadow
         setfacl -d -m u:1000:rwx srv
         setfattr -n security.label -v system_u:object_r:etc_t:s0 etc/os-release
         # Hard links, holes, unwritten extents, links inside the inode and in a block.
         ln etc/passwd etc/passwd.hard
         ln usr/bin/bash usr/bin/bash.hard
         dd if=/dev/urandom of=sparse bs=1M count=1 seek=50 status=none
         fallocate -l 8M preallocated
         printf 'written head' > prealloc-beyond-eof && fallocate -n -o 0 -l 4M prealloc-beyond-eof
         ln -s \"$(head -c 900 /dev/zero | tr '\\0' a)\" long-link
         ln -s etc/passwd short-link
         mkfifo fifo; mknod char-dev c 4 5; mknod block-dev b 8 1
         touch -d '2100-01-01 00:00:00.123456789' far-future
         touch -d '1960-01-01 00:00:00' before-epoch"
    ));
    std::fs::write(mnt.join("unique"), unique_bytes("xfs", 3 << 20)).expect("write");
}

/// An XFS root filled from `tree`, `size_mb` big, made with `mkfs_args`.
fn xfs_image(out: &Path, tree: &Path, size_mb: u64, mkfs_args: &[&str]) {
    run(Command::new("truncate").arg(format!("-s{size_mb}M")).arg(out));
    run(Command::new("mkfs.xfs").args(["-q", "-f", "-L", "root"]).args(mkfs_args).arg(out));
    let mnt = out.with_extension("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    run(Command::new("mount").arg("-o").arg("loop").arg(out).arg(&mnt));
    let filled = std::panic::catch_unwind(|| fill(&mnt, tree));
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

    let lib = Library::new();
    let said = lib.checkin(&path("disk.img"), "rocky");
    assert_eq!(said["version"], 1, "{said}");
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
    run(Command::new("umount").arg(&kernel));
    eprintln!("data fork formats: {forms:?}");
    assert!(forms[3].ends_with("3 (btree)"), "the big folder's block map is a B+tree: {forms:?}");
    assert!(forms[5].ends_with("2 (extents)"), "the long link is in a block: {forms:?}");

    let mounted = Mounted::new(&lib, "rocky", &fuse, &[]);
    let ours = kernel_listing(&fuse);
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
    let rows =
        lib.sql("SELECT p.name, p.version, p.arch FROM packages p JOIN images i USING (image_id) WHERE i.name = 'rocky'");
    let ours: std::collections::BTreeSet<(String, String, String)> = rows
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().expect("text").to_string();
            (text("name"), text("version"), text("arch"))
        })
        .collect();
    assert_eq!(ours, packages, "packages against dpkg-query");

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
}
