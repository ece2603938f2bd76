//! `export`: an image's file tree written out with everything a filesystem keeps about it, and
//! nothing of a hostile image allowed to reach outside the target directory.

use imagelake_tests::{Library, assert_same_tree, gpt_disk, mkfs_ext, mkfs_vfat, sh, tree_nodes};
use std::path::Path;

/// A tree with every kind of entry and metadata `mke2fs -d` carries into ext4.
fn varied_tree(root: &Path) {
    let r = root.display();
    sh(&format!(
        r#"set -e
        mkdir -p '{r}/etc/ssl' '{r}/usr/bin' '{r}/tmp' '{r}/home/ann/.private' '{r}/dev'
        printf 'hello\n' > '{r}/etc/motd'
        head -c 1000003 /dev/urandom > '{r}/usr/bin/tool'
        : > '{r}/etc/empty'
        truncate -s 5M '{r}/var.sparse'; printf 'tail' >> '{r}/var.sparse'
        printf 'x' | dd of='{r}/var.sparse' bs=1 seek=1048576 conv=notrunc status=none
        printf 'one inode\n' > '{r}/usr/bin/a'; ln '{r}/usr/bin/a' '{r}/usr/bin/b'; ln '{r}/usr/bin/a' '{r}/etc/c'
        ln -s /usr/bin/tool '{r}/usr/bin/absolute'
        ln -s ../usr/bin/tool '{r}/etc/relative'
        ln -s ssl '{r}/etc/ssl-dir'
        ln -s /nowhere/at/all '{r}/etc/dangling'
        mkfifo '{r}/dev/fifo'; mknod '{r}/dev/null' c 1 3; mknod '{r}/dev/loop9' b 7 9
        printf 'spaces\n' > '{r}/home/ann/name with spaces'
        printf 'utf8\n' > '{r}/home/ann/naïve—file'
        printf 'ctl\n' > "{r}/home/ann/$(printf 'bell\007\033[31m')"
        chmod 4755 '{r}/usr/bin/tool'; chmod 2711 '{r}/usr/bin/a'; chmod 1777 '{r}/tmp'
        chmod 0700 '{r}/home/ann/.private'; chmod 0640 '{r}/etc/motd'
        chown -R 1000:1000 '{r}/home/ann'; chown 0:42 '{r}/etc/motd'; chown -h 7:8 '{r}/etc/relative'
        setfattr -n user.comment -v 'kept' '{r}/etc/motd'
        setfattr -n user.binary -v 0x00ff10 '{r}/usr/bin/tool'
        setfattr -n trusted.note -v 'root only' '{r}/etc/empty'
        # Whole seconds: mke2fs -d stores no nanoseconds.
        find '{r}' -depth -exec touch -h -d '@1700000000' {{}} +
        touch -h -d '@1234567890' '{r}/etc/relative' '{r}/usr/bin/a'
        "#
    ));
}

fn libc_makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8) | ((major >> 12) << 32) | (minor & 0xff) | ((minor >> 8) << 12)
}

fn export(lib: &Library, args: &[&str]) -> std::process::Output {
    lib.command().arg("export").args(args).output().expect("runs")
}

#[test]
fn export_reproduces_every_kind_of_entry_and_its_metadata() {
    let work = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| work.path().join(n);
    let tree = path("tree");
    varied_tree(&tree);
    mkfs_ext(&tree, &path("root.img"), "ext4", "64M", &[]);
    mkfs_vfat(&path("esp.img"), 8 * 1024);
    gpt_disk(&path("disk.img"), &path("root.img"), &path("esp.img"));
    let lib = Library::new();
    lib.checkin(&path("disk.img"), "host");
    let root = lib.sql("SELECT partition FROM partitions WHERE name = 'root'")[0]["partition"].as_i64().expect("root");

    // Two filesystems: the root one (with /etc) unless the user names another; a partition
    // with no filesystem is refused, and the user told which there are.
    let out = export(&lib, &["host", path("x").to_str().unwrap(), "--partition", "9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("partitions with files") && stderr.contains(&root.to_string()),
        "{stderr}"
    );
    assert!(!path("x").exists(), "a refused export creates nothing");
    let out = export(&lib, &["host", path("x").to_str().unwrap(), "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["partition"].as_i64(), Some(root), "the root filesystem by default");
    std::fs::remove_dir_all(path("x")).unwrap();

    let to = path("export");
    let out = export(&lib, &["host", to.to_str().unwrap(), "--partition", &root.to_string(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    eprintln!("{summary:#}");
    assert_eq!(summary["hard_links"], 2);
    assert_eq!(summary["specials"], 3);
    assert_eq!(summary["refused"].as_array().map(Vec::len), Some(0));
    // mke2fs adds lost+found; the root directory's metadata is the filesystem's own.
    let expected = tree_nodes(&tree, &["/"]);
    let got = tree_nodes(&to, &["/", "/lost+found"]);
    assert_same_tree(&expected, &got);
    // What the comparison covered, so that it cannot pass on a tree that lost its metadata.
    let tool = &got["/usr/bin/tool"];
    assert_eq!((tool.mode & 0o7777, tool.xattrs["user.binary"].as_slice()), (0o4755, &[0u8, 0xff, 0x10][..]));
    assert_eq!(got["/etc/empty"].xattrs["trusted.note"], b"root only");
    assert_eq!((got["/etc/motd"].uid, got["/etc/motd"].gid, got["/etc/relative"].uid), (0, 42, 7));
    assert_eq!(got["/usr/bin/a"].mtime_ns, 1_234_567_890_000_000_000);
    assert_eq!(got["/tmp"].mtime_ns, 1_700_000_000_000_000_000);
    assert_eq!(got["/etc/c"].hard_links, ["/etc/c", "/usr/bin/a", "/usr/bin/b"]);
    assert_eq!((got["/dev/loop9"].rdev, got["/dev/null"].mode & 0o170000), (libc_makedev(7, 9), 0o020000));
    // Holes stay holes: the 5 MiB sparse file takes a few blocks.
    let blocks =
        sh(&format!("stat -c %b '{}'", to.join("var.sparse").display())).trim().parse::<u64>().expect("blocks");
    assert!(blocks * 512 < 64 * 1024, "var.sparse takes {} bytes", blocks * 512);

    // Into a directory that holds something: refused, and nothing touched.
    let busy = path("busy-dir");
    std::fs::create_dir(&busy).expect("mkdir");
    std::fs::write(busy.join("mine"), b"keep").expect("write");
    let out = export(&lib, &["host", busy.to_str().unwrap(), "--partition", &root.to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert_eq!(std::fs::read_dir(&busy).expect("ls").count(), 1);
}

/// Renames `from` to `to` (same length) in the directory block of `dir` of the ext4 image
/// `fs`, as a hostile image's author would. The filesystem has no metadata checksums.
fn rename_in_dir_block(fs: &Path, dir: &str, from: &[u8], to: &[u8]) {
    let block = sh(&format!("debugfs -R 'blocks {dir}' '{}' 2>/dev/null", fs.display()));
    let block: u64 = block.split_whitespace().next().expect("a block").parse().expect("block number");
    let mut image = std::fs::read(fs).expect("read");
    let start = (block * 4096) as usize;
    let data = &mut image[start..start + 4096];
    let at = data.windows(from.len()).position(|w| w == from).expect("name in the directory block");
    data[at..at + from.len()].copy_from_slice(to);
    std::fs::write(fs, image).expect("write");
}

#[test]
fn a_hostile_image_exports_without_reaching_outside() {
    let work = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| work.path().join(n);
    // What the image's links aim at on this host: nothing may appear here, and its secret
    // must never be read.
    let outside = path("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(path("secret"), b"host secret\n").expect("write");
    let tree = path("tree");
    let o = outside.display();
    sh(&format!(
        r#"set -e
        mkdir -p '{t}/etc' '{t}/trXp'
        printf 'payload\n' > '{t}/trXp/payload'
        ln -s '{o}' '{t}/trap'
        ln -s ../../../../../../../../../../{secret} '{t}/etc/climb'
        ln -s '/etc/passwd' '{t}/etc/absolute'
        ln -s '../etc/absolute' '{t}/etc/inside'
        printf 'ctl\n' > "{t}/etc/$(printf 'esc\033]0;pwned\007')"
        printf 'one\n' > '{t}/aXb'
        "#,
        t = tree.display(),
        secret = path("secret").display().to_string().trim_start_matches('/'),
    ));
    let fs = path("root.img");
    mkfs_ext(&tree, &fs, "ext4", "16M", &["-b", "4096", "-O", "^metadata_csum,^dir_index"]);
    // Two entries named "trap" in one directory: a link to the host's `outside`, and a
    // directory holding `payload`. A naive writer makes the link, then writes through it.
    rename_in_dir_block(&fs, "/", b"trXp", b"trap");
    let lib = Library::new();
    lib.checkin(&fs, "evil");

    let to = path("export");
    let out = export(&lib, &["evil", to.to_str().unwrap(), "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "refused entries make export fail: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    eprintln!("{summary:#}");
    let refused: Vec<String> = summary["refused"]
        .as_array()
        .expect("refused")
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert!(refused.contains(&"/etc/climb".to_string()), "{refused:?}");
    assert!(refused.iter().any(|p| p.starts_with("/trap")), "one of the two /trap entries is refused: {refused:?}");
    assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 0, "the export wrote outside its directory");
    assert!(to.join("etc/climb").symlink_metadata().is_err());
    // What stays inside is exported as it is: absolute targets name paths of the image.
    assert_eq!(std::fs::read_link(to.join("etc/absolute")).expect("link"), Path::new("/etc/passwd"));
    assert_eq!(std::fs::read_link(to.join("etc/inside")).expect("link"), Path::new("../etc/absolute"));
    assert_eq!(std::fs::read(to.join("etc/esc\x1b]0;pwned\x07")).expect("control bytes"), b"ctl\n");
    // The human report prints names escaped: no raw escape sequence reaches the terminal.
    let out = export(&lib, &["evil", path("again").to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("refused \"/etc/climb\"") && !report.contains('\x1b'), "{report}");

    // cat through the climbing link resolves inside the image, never reaching the host file.
    let out = lib.command().args(["cat", "evil", "/etc/climb"]).output().expect("runs");
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("host secret"));

    // A name with '/' in it cannot be in a valid directory: the image is refused, named.
    rename_in_dir_block(&fs, "/", b"aXb", b"a/b");
    let out = lib.command().arg("checkin").arg(&fs).args(["--name", "slash"]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&fs.display().to_string()) && stderr.contains("a/b"), "{stderr}");
}
