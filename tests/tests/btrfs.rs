//! btrfs roots as structure, as Fedora and openSUSE lay them out (in a partition, and in a
//! logical volume): made by `mkfs.btrfs`, with `root` and `home` subvolumes, filled through the
//! kernel's loop mount from a real Debian tree and what a real root holds besides (see
//! `fill_root`), with copies written under `compress=zstd`, `lzo` and `zlib`, a reflinked
//! copy and a snapshot. The kernel's read-only mount of the top level is the oracle for every
//! row; `btrfs inspect-internal dump-tree` that the compressions, inline extents and shared
//! extents are there; `dpkg-query` for the packages; `cmp` for the checkout.

use imagelake_tests::lvm::assert_reads_the_same_in_lvm;
use imagelake_tests::{
    Library, Mounted, debian_tree, dpkg_query, fill_root, gpt_disk, kernel_listing, mkfs_ext, mkfs_vfat, packages_of,
    run, sh, statfs, unique_bytes,
};
use std::path::Path;
use std::process::Command;

/// A btrfs filesystem `size_mb` big, its `root` subvolume filled from `tree` (the root an
/// `/etc/fstab` mounts at `/`), with copies of some of it compressed, a reflinked file, a
/// `home` subvolume and a snapshot of `root` that then changed a little.
fn btrfs_image(out: &Path, tree: &Path, size_mb: u64) {
    run(Command::new("truncate").arg(format!("-s{size_mb}M")).arg(out));
    run(Command::new("mkfs.btrfs").args(["-q", "-f", "-L", "fedora"]).arg(out));
    let mnt = out.with_extension("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    run(Command::new("mount").arg("-o").arg("loop").arg(out).arg(&mnt));
    let m = mnt.display();
    let filled = std::panic::catch_unwind(|| {
        run(Command::new("btrfs").args(["subvolume", "create"]).arg(mnt.join("root")));
        run(Command::new("btrfs").args(["subvolume", "create"]).arg(mnt.join("home")));
        fill_root(&mnt.join("root"), tree, "btrfs");
        sh(&format!(
            "set -e; cd '{m}'
             printf 'UUID=0 / btrfs subvol=root,compress=zstd:1 0 0\\nUUID=0 /home btrfs subvol=home 0 0\\n' > root/etc/fstab
             mkdir -p home/ann && cp -a root/etc/skel/. home/ann/ && echo notes > home/ann/notes
             chown -R 1000:1000 home/ann
             cp --reflink=always root/usr/bin/bash root/bash.reflink
             mount -o remount,compress=zstd . && cp -a --reflink=never root/usr/share/doc root/doc.zstd
             mount -o remount,compress=lzo . && cp -a --reflink=never root/usr/share/doc root/doc.lzo
             mount -o remount,compress=zlib . && cp -a --reflink=never root/usr/bin root/bin.zlib
             # A file whose first half is compressed, its second half not.
             head -c 262144 root/usr/bin/bash > root/half-compressed
             mount -o remount,compress=no . && head -c 1048576 /dev/urandom >> root/half-compressed
             mkdir snapshots && btrfs subvolume snapshot root snapshots/root-1 > /dev/null
             echo changed > snapshots/root-1/etc/hostname && rm snapshots/root-1/etc/passwd.hard
             sync"
        ));
    });
    run(Command::new("umount").arg(&mnt));
    filled.expect("filling the btrfs filesystem");
}

/// The kernel's `find -printf` lines with each file's inode number as imagelake numbers it:
/// within a subvolume other than the top level, the subvolume's id above bit 40.
fn with_subvolume_inodes(find: &str, subvolumes: &[(u64, String)]) -> String {
    let renumbered = find.lines().map(|line| {
        let subvolume = subvolumes.iter().filter(|(_, path)| {
            let rest = line.strip_prefix(&format!("./{path}"));
            rest.is_some_and(|r| r.starts_with(' ') || r.starts_with('/'))
        });
        // The innermost subvolume that holds the path.
        let id = subvolume.max_by_key(|(_, path)| path.len()).map_or(0, |(id, _)| *id);
        let (head, ino) = line.rsplit_once(' ').expect("a line ends with the inode number");
        format!("{head} {}\n", id << 40 | ino.parse::<u64>().expect("inode number"))
    });
    renumbered.collect()
}

#[test]
fn a_btrfs_root_with_subvolumes_snapshots_and_compression_reads_as_the_kernel_mounts_it() {
    let debian = debian_tree();
    let tree = debian.parent().expect("cache").join("bookworm-minbase");
    let work = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| work.path().join(n);
    let used: u64 = sh(&format!("du -sm '{}' | cut -f1", tree.display())).trim().parse().expect("size");
    btrfs_image(&path("root.img"), &tree, used * 3 + 256);
    mkfs_vfat(&path("esp.img"), 8192);
    gpt_disk(&path("disk.img"), &path("root.img"), &path("esp.img"));

    // What the kernel wrote, by btrfs's own dump: every compression, inline extents, and
    // extents shared between the snapshot and its source.
    let dump = run(Command::new("btrfs").args(["inspect-internal", "dump-tree"]).arg(path("root.img")));
    for (code, what) in [(1, "zlib"), (2, "lzo"), (3, "zstd")] {
        assert!(dump.contains(&format!("extent compression {code} ({what})")), "the kernel wrote {what} extents");
    }
    assert!(dump.contains("inline extent data size"), "the kernel wrote inline extents");

    // The same Debian tree on ext4 first: the btrfs disk then adds as file contents only what
    // `fill_root` wrote besides the tree (12 MB interleaved, 3 MB unique, 1 MB of the sparse
    // file). Compressed files (even in part, as `half-compressed`) and inline ones are read
    // through btrfs, so their disk bytes are all that is kept of them; the reflink and the
    // snapshot add nothing.
    let lib = Library::new();
    mkfs_ext(&tree, &path("ext4.img"), "ext4", &format!("{}M", used + used / 4 + 64), &[]);
    lib.checkin(&path("ext4.img"), "debian-ext4");
    let said = lib.checkin(&path("disk.img"), "fedora");
    eprintln!("the btrfs disk after the same tree on ext4: {said}");
    let extras = 3000 * 4096 + (3 << 20) + (1 << 20);
    let content = said["bytes_new_content"].as_u64().expect("bytes_new_content");
    assert!((extras..extras + (64 << 10)).contains(&content), "new file contents {content}, extras {extras}");
    let parts = lib.sql("SELECT partition, fs_type, fs_label, fs_error FROM partitions WHERE fs_type = 'btrfs'");
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!(parts[0]["fs_label"].as_str(), Some("fedora"), "{parts:?}");
    assert!(parts[0].get("fs_error").is_none_or(serde_json::Value::is_null), "{parts:?}");

    // The kernel's mount of the top level and imagelake's, from the rows alone.
    let (fuse, kernel) = (path("fuse"), path("kernel"));
    std::fs::create_dir(&fuse).expect("mkdir");
    std::fs::create_dir(&kernel).expect("mkdir");
    run(Command::new("mount").args(["-o", "loop,ro"]).arg(path("root.img")).arg(&kernel));
    let subvolumes: Vec<(u64, String)> = run(Command::new("btrfs").args(["subvolume", "list"]).arg(&kernel))
        .lines()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words[1].parse().expect("id"), words.last().expect("path").to_string())
        })
        .collect();
    let encoded = run(Command::new("filefrag").arg("-v").arg(kernel.join("root/doc.zstd/bash/copyright")));
    let theirs = kernel_listing(&kernel);
    let packages = dpkg_query(&kernel.join("root/var/lib/dpkg"));
    let kernel_room = statfs(&kernel);
    run(Command::new("umount").arg(&kernel));
    assert_eq!(subvolumes.len(), 3, "{subvolumes:?}");
    assert!(encoded.contains("encoded"), "the copy under compress=zstd is compressed: {encoded}");

    let mounted = Mounted::new(&lib, "fedora", &fuse, &[]);
    let ours = kernel_listing(&fuse);
    // statfs, from the stored superblock once the mount knows where contents lie (the listing
    // read every file): the kernel's, but that it also counts the second copy of metadata and
    // its reserve as used.
    let room = statfs(&fuse);
    run(lib.command().arg("unmount").arg(&mounted.dir));
    assert_eq!((room[0], room[1], room[3], room[4]), (kernel_room[0], kernel_room[1], 0, 0), "{room:?}");
    assert!(room[2] >= kernel_room[2] && room[2] - kernel_room[2] < 4096, "free blocks {room:?} {kernel_room:?}");
    assert_eq!(ours.0, with_subvolume_inodes(&theirs.0, &subvolumes), "find -printf of every entry (inodes too)");
    assert_eq!(ours.1, theirs.1, "sha256 of every regular file");
    assert_eq!(ours.2, theirs.2, "getfattr of every entry");
    let entries = ours.0.lines().count();
    eprintln!("{entries} entries the same");
    assert!(entries > 20_000, "{entries} entries");
    for expected in ["system.posix_acl_access=", "system.posix_acl_default=", "security.label=", "user.node300="] {
        assert!(ours.2.contains(expected), "{expected} is listed");
    }

    // Which subvolume each file is in, from its number; extents the snapshot and the reflink
    // share with their source are the same disk ranges.
    let rows = lib.sql(
        "SELECT path, inode >> 40 AS subvolume, extent_map FROM files f JOIN images i USING (image_id) \
         WHERE i.name = 'fedora' AND path IN ('/root/etc/os-release', '/home/ann/notes', \
         '/snapshots/root-1/usr/bin/bash', '/root/usr/bin/bash', '/root/bash.reflink') ORDER BY path",
    );
    let id_of = |name: &str| subvolumes.iter().find(|(_, p)| p == name).map(|s| s.0).expect("subvolume");
    let subvolume_of: Vec<(&str, u64)> =
        rows.iter().map(|r| (r["path"].as_str().expect("path"), r["subvolume"].as_u64().expect("id"))).collect();
    assert_eq!(
        subvolume_of,
        [
            ("/home/ann/notes", id_of("home")),
            ("/root/bash.reflink", id_of("root")),
            ("/root/etc/os-release", id_of("root")),
            ("/root/usr/bin/bash", id_of("root")),
            ("/snapshots/root-1/usr/bin/bash", id_of("snapshots/root-1")),
        ]
    );
    let map = |i: usize| rows[i]["extent_map"].to_string();
    assert!(!rows[3]["extent_map"].as_array().expect("list").is_empty(), "bash has extents");
    assert_eq!((map(1), map(4)), (map(3), map(3)), "the reflink and the snapshot share bash's extents");

    // The packages of the subvolume /etc/fstab mounts at /, as dpkg reads its own database.
    assert_eq!(packages_of(&lib, "fedora"), packages, "packages against dpkg-query");
    let os = lib.sql("SELECT os_name FROM images WHERE name = 'fedora'");
    assert_eq!(os[0]["os_name"].as_str(), Some("debian"), "the facts of the root subvolume: {os:?}");

    // Contents read back through cat: compressed and inline ones too.
    for (file, expected) in [
        ("/root/doc.lzo/bash/copyright", tree.join("usr/share/doc/bash/copyright")),
        ("/root/bin.zlib/bash", tree.join("usr/bin/bash")),
        ("/root/etc/hostname", tree.join("etc/hostname")),
    ] {
        let out = lib.command().args(["cat", "fedora", file]).output().expect("cat");
        assert!(out.status.success(), "cat {file}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, std::fs::read(&expected).expect("read"), "{file}");
    }
    let unique = lib.sql("SELECT content_hash FROM files WHERE path = '/root/unique'");
    assert_eq!(
        unique[0]["content_hash"].as_str(),
        Some(blake3::hash(&unique_bytes("btrfs", 3 << 20)).to_hex().as_str())
    );

    // The disk comes back byte for byte.
    lib.checkout("fedora", &path("out.img"));
    run(Command::new("cmp").arg(path("disk.img")).arg(path("out.img")));
    std::fs::remove_file(path("out.img")).expect("rm");

    // The same filesystem as a logical volume: the same rows, and the disk back byte for byte.
    let in_lvm = assert_reads_the_same_in_lvm(&lib, &path("root.img"), "btrfs", "fedora", "fedora-lvm");
    assert_eq!(in_lvm, entries, "the logical volume's rows");
}

/// openSUSE's layout: the root is the default subvolume (a snapshot under `@`), with no
/// `/etc/fstab` line naming it. Its facts are the image's, and the rows (of `cat` and
/// `export` too) are still the top level's.
#[test]
fn the_default_subvolume_is_the_operating_systems_root() {
    let work = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| work.path().join(n);
    let (image, mnt) = (path("btrfs.img"), path("mnt"));
    std::fs::create_dir(&mnt).expect("mkdir");
    run(Command::new("truncate").arg("-s128M").arg(&image));
    run(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&image));
    run(Command::new("mount").arg("-o").arg("loop").arg(&image).arg(&mnt));
    let m = mnt.display();
    let made = std::panic::catch_unwind(|| {
        sh(&format!(
            "set -e; cd '{m}'
             btrfs subvolume create @ > /dev/null && mkdir -p @/.snapshots/1
             btrfs subvolume create @/.snapshots/1/snapshot > /dev/null
             mkdir -p @/.snapshots/1/snapshot/etc
             printf 'NAME=\"openSUSE Tumbleweed\"\\nID=opensuse-tumbleweed\\n' > @/.snapshots/1/snapshot/etc/os-release
             echo tumbleweed > @/.snapshots/1/snapshot/etc/hostname
             btrfs subvolume set-default @/.snapshots/1/snapshot"
        ))
    });
    run(Command::new("umount").arg(&mnt));
    made.expect("making the filesystem");
    // As installed: beside an EFI system partition, on a GPT disk.
    mkfs_vfat(&path("esp.img"), 8192);
    gpt_disk(&path("disk.img"), &image, &path("esp.img"));
    let lib = Library::new();
    lib.checkin(&path("disk.img"), "suse");
    let facts = lib.sql("SELECT os_name, hostname FROM images");
    assert_eq!(facts[0]["os_name"].as_str(), Some("opensuse-tumbleweed"), "{facts:?}");
    assert_eq!(facts[0]["hostname"].as_str(), Some("tumbleweed"), "{facts:?}");
    let hostname = run(lib.command().args(["cat", "suse", "/@/.snapshots/1/snapshot/etc/hostname"]));
    assert_eq!(hostname, "tumbleweed\n");
    // Export and mount find the root filesystem by the /etc at the top of its snapshot.
    run(lib.command().args(["export", "suse"]).arg(path("export")));
    let exported = std::fs::read_to_string(path("export/@/.snapshots/1/snapshot/etc/os-release"));
    assert!(exported.expect("exported").contains("Tumbleweed"));
    std::fs::create_dir(path("fuse")).expect("mkdir");
    let mounted = Mounted::new(&lib, "suse", &path("fuse"), &[]);
    let read = std::fs::read_to_string(path("fuse/@/.snapshots/1/snapshot/etc/hostname"));
    run(lib.command().arg("unmount").arg(&mounted.dir));
    assert_eq!(read.expect("read through the mount"), "tumbleweed\n");
}

/// One Debian tree on ext4 (`mke2fs -d`), XFS (filled through a loop mount) and btrfs
/// (`mkfs.btrfs --rootdir`, which also stores each symbolic link's NUL), checked in one after
/// the other: the second and third add no file content, only their own metadata. The btrfs
/// one reads as the kernel mounts it.
#[test]
fn one_tree_on_ext4_xfs_and_btrfs_is_stored_once() {
    let debian = debian_tree();
    let tree = debian.parent().expect("cache").join("bookworm-minbase");
    let work = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| work.path().join(n);
    let used: u64 = sh(&format!("du -sm '{}' | cut -f1", tree.display())).trim().parse().expect("size");
    let size = format!("{}M", (used + used / 2 + 128).max(320));
    mkfs_ext(&tree, &path("ext4.img"), "ext4", &size, &[]);
    run(Command::new("truncate").arg(format!("-s{size}")).arg(path("xfs.img")));
    run(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(path("xfs.img")));
    std::fs::create_dir(path("mnt")).expect("mkdir");
    run(Command::new("mount").arg("-o").arg("loop").arg(path("xfs.img")).arg(path("mnt")));
    let copied = std::panic::catch_unwind(|| {
        run(Command::new("cp").arg("-a").arg(format!("{}/.", tree.display())).arg(path("mnt")));
    });
    run(Command::new("umount").arg(path("mnt")));
    copied.expect("filling the XFS filesystem");
    run(Command::new("truncate").arg(format!("-s{size}")).arg(path("btrfs.img")));
    run(Command::new("mkfs.btrfs").args(["-q", "-f", "--rootdir"]).arg(&tree).arg(path("btrfs.img")));

    let lib = Library::new();
    let mut said = Vec::new();
    for fs in ["ext4", "xfs", "btrfs"] {
        let summary = lib.checkin(&path(&format!("{fs}.img")), fs);
        eprintln!("{fs}: {summary}");
        said.push((summary["bytes_new_content"].as_u64(), summary["bytes_new"].as_u64().expect("bytes_new")));
    }
    assert!(said[0].0.expect("content") > 100 << 20, "the first tree's contents are new: {said:?}");
    for (fs, (content, new)) in ["xfs", "btrfs"].iter().zip(&said[1..]) {
        assert_eq!(*content, Some(0), "{fs} adds no file content: {said:?}");
        assert!(*new < 64 << 20, "{fs} adds its metadata alone: {said:?}");
    }

    let (fuse, kernel) = (path("fuse"), path("kernel"));
    std::fs::create_dir(&fuse).expect("mkdir");
    std::fs::create_dir(&kernel).expect("mkdir");
    run(Command::new("mount").args(["-o", "loop,ro"]).arg(path("btrfs.img")).arg(&kernel));
    let theirs = kernel_listing(&kernel);
    run(Command::new("umount").arg(&kernel));
    let mounted = Mounted::new(&lib, "btrfs", &fuse, &[]);
    let ours = kernel_listing(&fuse);
    run(lib.command().arg("unmount").arg(&mounted.dir));
    assert_eq!(ours.0, theirs.0, "find -printf of every entry");
    assert_eq!(ours.1, theirs.1, "sha256 of every regular file");
    assert_eq!(ours.2, theirs.2, "getfattr of every entry");
}
