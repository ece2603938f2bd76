//! The source trees that test images are made from, and a walk of them as an oracle.

use crate::sh;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Builds a tree with every kind of entry a filesystem manifest must get right: hard links,
/// fast and slow symlinks, xattrs, device nodes, a fifo, empty, sparse and multi-extent large
/// files, a setuid binary, foreign owners and deep directories.
pub fn build(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let d = dir.display();
    sh(&format!(
        r#"set -e
        cd "{d}"
        mkdir -p etc usr/bin var/empty
        printf 'hello imagelake\n' > etc/motd
        printf 'root:x:0:0:root:/root:/bin/sh\n' > etc/passwd
        : > var/empty-file
        ln etc/motd etc/motd.hardlink
        ln -s motd etc/fast-link
        ln -s "/$(printf 'very/long/target/%.0s' 1 2 3 4 5)/beyond-sixty-bytes-so-it-needs-a-block" etc/slow-link
        head -c 300000 /dev/urandom > usr/bin/tool
        chmod 4755 usr/bin/tool
        head -c 5000 /dev/urandom > usr/bin/owned
        chown 1234:5678 usr/bin/owned
        chmod 640 usr/bin/owned
        setfattr -n user.checksum -v abc123 etc/motd
        setfattr -n user.origin -v imagelake etc/passwd
        mknod dev-null c 1 3
        mknod dev-sda b 8 0
        mkfifo fifo
        truncate -s 9M sparse
        # Data islands, and data at the very end (mke2fs -O inline_data drops trailing holes).
        for i in 1 3 5 7; do printf 'data%s' $i | dd of=sparse bs=1 seek=$((i * 1048576)) conv=notrunc 2>/dev/null; done
        printf 'end' | dd of=sparse bs=1 seek=$((9 * 1048576 - 3)) conv=notrunc 2>/dev/null
        head -c 12582912 /dev/urandom > large
        deep=.
        for i in $(seq 1 20); do deep=$deep/level$i; done
        mkdir -p "$deep" && printf 'bottom\n' > "$deep/file"
        touch -d '2001-02-03 04:05:06' etc/passwd
        "#
    ));
}

/// One entry of a source tree, as the host's `lstat` and a read of it say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path inside the image: "/etc/motd".
    pub path: String,
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub link_target: Option<String>,
    pub device: Option<(u32, u32)>,
    /// blake3 of the content, for regular files.
    pub content_hash: Option<String>,
}

/// Every entry below `root` (not `root` itself), depth first.
pub fn walk(root: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    visit(root, root, &mut out);
    out
}

fn visit(root: &Path, dir: &Path, out: &mut Vec<Entry>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        let m = std::fs::symlink_metadata(&path).expect("lstat");
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else {
            "file"
        };
        let rdev = m.rdev();
        out.push(Entry {
            path: format!("/{}", path.strip_prefix(root).expect("below root").display()),
            kind,
            mode: m.permissions().mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: if kind == "file" || kind == "symlink" { m.size() } else { 0 },
            mtime: m.mtime(),
            link_target: ft.is_symlink().then(|| std::fs::read_link(&path).expect("readlink").display().to_string()),
            device: (kind == "char" || kind == "block").then(|| (libc::major(rdev), libc::minor(rdev))),
            content_hash: (kind == "file")
                .then(|| blake3::hash(&std::fs::read(&path).expect("read")).to_hex().to_string()),
        });
        if kind == "dir" {
            visit(root, &path, out);
        }
    }
}
