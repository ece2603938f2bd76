//! The ext4 reader against real images: trees built with `mke2fs -d` and checked, file by
//! file, against the source tree and against `debugfs` (stat, extents/blocks, ls order).
//! Then robustness: randomly corrupted images and e2fsprogs' corrupt fixtures must give Ok or
//! Err, never a panic or a hang.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use imagelake_connectors::ReadAt;
use imagelake_connectors::ext4::{self, Extent, FileKind, Filesystem};
use imagelake_tests::corrupt::{Xorshift, bounded, corrupt_rounds};
use imagelake_tests::output as run;

// ---------------------------------------------------------------------------------------------
// Helpers

/// The reader's rendering of a name: UTF-8, other bytes as \xNN.
fn escape(name: &[u8]) -> String {
    let mut out = String::new();
    for chunk in name.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The source tree

const SLOW_TARGET: &str = "a/target/that/is/definitely/longer/than/sixty/bytes/so/it/needs/a/block";
const DEPTH: usize = 14;

fn build_source(root: &Path) {
    let write = |rel: &str, data: &[u8]| {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    };
    // Deep nesting.
    let mut deep = PathBuf::new();
    for i in 0..DEPTH {
        deep.push(format!("d{i:02}"));
    }
    write(deep.join("deep.txt").to_str().unwrap(), b"at the bottom\n");
    // Empty, small, two-block and large files.
    write("empty", b"");
    for i in 0..20 {
        write(&format!("small/f{i:02}.txt"), format!("file {i}\n").repeat(i + 1).as_bytes());
    }
    write("two_blocks.bin", &vec![0x42; 5000]);
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let big: Vec<u8> = (0..5 << 20).map(|_| rng.next() as u8).collect();
    write("big.bin", &big);
    // Sparse: a byte at 10 MiB; one at 70 MiB (triple indirect with 1 KiB blocks); and many
    // separate 4 KiB chunks, one every 64 KiB, which make an extent tree deeper than the root.
    let sparse = |rel: &str, chunks: &[(u64, &[u8])], len: u64| {
        let f = fs::File::create(root.join(rel)).unwrap();
        for (offset, data) in chunks {
            std::os::unix::fs::FileExt::write_all_at(&f, data, *offset).unwrap();
        }
        f.set_len(len).unwrap();
    };
    sparse("sparse.bin", &[(10 << 20, b"Z")], (10 << 20) + 1);
    sparse("sparse_far.bin", &[(70 << 20, b"far")], (70 << 20) + 3);
    let chunk = vec![0x77u8; 4096];
    let chunks: Vec<(u64, &[u8])> = (0..200).map(|i| (i * 65536, chunk.as_slice())).collect();
    // No trailing hole: mke2fs -O inline_data drops trailing holes from the size.
    sparse("many_extents.bin", &chunks, 199 * 65536 + 4096);
    // All holes: ext4 variants fallocate it afterwards to get unwritten extents.
    sparse("prealloc", &[], 40960);
    // Hard links.
    write("hard_a", b"hard linked content\n");
    fs::create_dir_all(root.join("links")).unwrap();
    fs::hard_link(root.join("hard_a"), root.join("links/hard_b")).unwrap();
    // Symlinks.
    std::os::unix::fs::symlink("small/f01.txt", root.join("fast_link")).unwrap();
    std::os::unix::fs::symlink(SLOW_TARGET, root.join("slow_link")).unwrap();
    // Devices, fifo, socket.
    fs::create_dir_all(root.join("dev")).unwrap();
    run(Command::new("mknod").arg(root.join("dev/tty")).args(["c", "4", "5"]));
    run(Command::new("mknod").arg(root.join("dev/nvme")).args(["b", "259", "70000"]));
    run(Command::new("mknod").arg(root.join("dev/big_char")).args(["c", "1000", "300"]));
    run(Command::new("mkfifo").arg(root.join("dev/fifo")));
    let socket = std::os::unix::net::UnixListener::bind(root.join("dev/socket")).unwrap();
    drop(socket);
    // Extended attributes, ACLs.
    let setfattr = |rel: &str, name: &str, value: &str| {
        run(Command::new("setfattr").args(["-n", name, "-v", value]).arg(root.join(rel)));
    };
    setfattr("small/f00.txt", "user.test", "hello");
    setfattr("small/f00.txt", "user.binary", "0x00ff10fe");
    setfattr("small", "user.on_dir", "dir value");
    setfattr("dev/tty", "trusted.flag", "1");
    setfattr(
        "small/f02.txt",
        "system.posix_acl_access",
        // Version 2; user::rw-, group::r--, group:1234:r--, mask::r--, other::r--.
        concat!(
            "0x02000000",
            "01000600ffffffff",
            "04000400ffffffff",
            "08000400d2040000",
            "10000400ffffffff",
            "20000400ffffffff",
        ),
    );
    // Modes and owners.
    write("setuid_bin", b"#!/bin/sh\n");
    fs::set_permissions(root.join("setuid_bin"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    write("owned", b"owned by 1234:5678\n");
    fs::create_dir_all(root.join("owned_dir")).unwrap();
    for rel in ["owned", "owned_dir"] {
        std::os::unix::fs::lchown(root.join(rel), Some(1234), Some(5678)).unwrap();
    }
    // A name that is not UTF-8.
    fs::write(root.join(OsStr::from_bytes(b"bad\xffname")), b"odd name\n").unwrap();
    // Enough entries for an htree once e2fsck -D indexes it.
    for i in 0..300 {
        write(&format!("big_dir/entry_with_a_rather_long_name_{i:04}"), b"");
    }
}

/// What the source tree says about one path.
struct Source {
    real: PathBuf,
    meta: fs::Metadata,
}

fn walk_source(root: &Path) -> BTreeMap<String, Source> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((path, dir)) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let child = format!("{path}/{}", escape(entry.file_name().as_bytes()));
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push((child.clone(), entry.path()));
            }
            out.insert(child, Source { real: entry.path(), meta });
        }
    }
    out
}

fn source_kind(meta: &fs::Metadata) -> FileKind {
    let t = meta.file_type();
    match () {
        _ if t.is_file() => FileKind::File,
        _ if t.is_dir() => FileKind::Dir,
        _ if t.is_symlink() => FileKind::Symlink,
        _ if t.is_char_device() => FileKind::Char,
        _ if t.is_block_device() => FileKind::Block,
        _ if t.is_fifo() => FileKind::Fifo,
        _ => FileKind::Socket,
    }
}

// ---------------------------------------------------------------------------------------------
// debugfs

#[derive(Debug, Default)]
struct Stat {
    inode: u32,
    kind: String,
    mode: u32,
    flags: u32,
    uid: u32,
    gid: u32,
    size: u64,
    links: u32,
    mtime: u32,
    mtime_extra: Option<u32>,
    fast_link: Option<Vec<u8>>,
    device: Option<(u32, u32)>,
    /// Name, length, and the value when debugfs printed it in a form we can decode.
    xattrs: Vec<(String, usize, Option<Vec<u8>>)>,
    /// From "EXTENTS:" or "BLOCKS:", in blocks: (logical, physical, len, unwritten).
    map: Option<Vec<(u64, u64, u64, bool)>>,
}

/// Runs one debugfs with a command per path (raw name bytes) and splits its output per command.
fn debugfs(img: &Path, command: &str, paths: &[Vec<u8>]) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for path in paths {
        cmds.extend_from_slice(format!("{command} \"").as_bytes());
        cmds.extend_from_slice(path);
        cmds.extend_from_slice(b"\"\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let cmdfile = dir.path().join("cmds");
    fs::write(&cmdfile, cmds).unwrap();
    let out = run(Command::new("debugfs").arg("-f").arg(&cmdfile).arg(img));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut blocks: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        if line.starts_with(&format!("debugfs: {command} ")) {
            blocks.push(Vec::new());
        } else if let Some(block) = blocks.last_mut() {
            block.push(line.to_string());
        }
    }
    assert_eq!(blocks.len(), paths.len(), "debugfs output:\n{text}");
    blocks
}

/// The value after `label` among whitespace-separated tokens.
fn field<'a>(line: &'a str, label: &str) -> &'a str {
    let mut tokens = line.split_whitespace();
    tokens.by_ref().find(|t| *t == label);
    tokens.next().unwrap_or_else(|| panic!("no {label} in {line:?}"))
}

fn parse_stat(lines: &[String]) -> Stat {
    let mut stat = Stat::default();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        let trimmed = line.trim_start();
        if line.starts_with("Inode: ") {
            stat.inode = field(line, "Inode:").parse().unwrap();
            let after = line.split("Type: ").nth(1).unwrap();
            stat.kind = after.split("Mode:").next().unwrap().trim().to_string();
            stat.mode = u32::from_str_radix(field(line, "Mode:"), 8).unwrap();
            let flags = field(line, "Flags:").strip_prefix("0x").unwrap();
            stat.flags = u32::from_str_radix(flags, 16).unwrap();
        } else if line.starts_with("User: ") {
            stat.uid = field(line, "User:").parse().unwrap();
            stat.gid = field(line, "Group:").parse().unwrap();
            stat.size = field(line, "Size:").parse().unwrap();
        } else if line.starts_with("Links: ") {
            stat.links = field(line, "Links:").parse().unwrap();
        } else if let Some(rest) = trimmed.strip_prefix("mtime: 0x") {
            let stamp = rest.split(' ').next().unwrap();
            let mut parts = stamp.split(':');
            stat.mtime = u32::from_str_radix(parts.next().unwrap(), 16).unwrap();
            stat.mtime_extra = parts.next().map(|x| u32::from_str_radix(x, 16).unwrap());
        } else if let Some(rest) = line.strip_prefix("Fast link dest: \"") {
            stat.fast_link = Some(rest.strip_suffix('"').unwrap().as_bytes().to_vec());
        } else if let Some(rest) = line.split("Device major/minor number: ").nth(1) {
            let numbers = rest.split(' ').next().unwrap();
            let (major, minor) = numbers.split_once(':').unwrap();
            stat.device = Some((major.parse().unwrap(), minor.parse().unwrap()));
        } else if line == "Extended attributes:" {
            while let Some(attr) = lines.get(i + 1).and_then(|l| l.strip_prefix("  ")) {
                stat.xattrs.push(parse_xattr(attr));
                i += 1;
            }
        } else if line == "EXTENTS:" || line == "BLOCKS:" {
            let list = lines.get(i + 1).filter(|l| l.starts_with('(')).map_or("", |l| l);
            stat.map = Some(parse_map(list));
        }
        i += 1;
    }
    stat
}

/// `name (len) = "value"`, `name (len) = 00 ff `, or `name (len)`.
fn parse_xattr(line: &str) -> (String, usize, Option<Vec<u8>>) {
    let (name, rest) = line.split_once(" (").unwrap();
    let (len, rest) = rest.split_once(')').unwrap();
    let len: usize = len.parse().unwrap();
    let value = match rest.strip_prefix(" = ") {
        Some(quoted) if quoted.starts_with('"') => {
            let text = quoted.strip_prefix('"').unwrap().strip_suffix('"').unwrap();
            // Only plain text is compared; C escapes are left alone.
            (!text.contains('\\')).then(|| text.as_bytes().to_vec())
        }
        Some(hex) => Some(hex.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()),
        None => None,
    };
    (name.to_string(), len, value)
}

/// "(0-11):789-800, (IND):801, (12):802, (ETB0):2074, (0-9[u]):2272-2281"
fn parse_map(list: &str) -> Vec<(u64, u64, u64, bool)> {
    let mut out = Vec::new();
    for item in list.split(", ").filter(|s| !s.is_empty()) {
        let (logical, physical) = item.strip_prefix('(').unwrap().split_once("):").unwrap();
        if ["IND", "DIND", "TIND"].contains(&logical) || logical.starts_with("ETB") {
            continue;
        }
        let unwritten = logical.contains("[u]");
        let logical = logical.replace("[u]", "");
        let range = |s: &str| -> (u64, u64) {
            match s.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (s.parse().unwrap(), s.parse().unwrap()),
            }
        };
        let (l0, l1) = range(&logical);
        let (p0, p1) = range(physical);
        assert_eq!(l1 - l0, p1 - p0, "{item}");
        out.push((l0, p0, l1 - l0 + 1, unwritten));
    }
    out
}

/// Block runs to byte extents, sorted and merged as the reader does.
fn to_extents(map: &[(u64, u64, u64, bool)], bs: u64) -> Vec<Extent> {
    let mut runs = map.to_vec();
    runs.sort();
    let mut out: Vec<Extent> = Vec::new();
    for (l, p, n, u) in runs {
        let e = Extent { logical: l * bs, physical: p * bs, len: n * bs, unwritten: u, encoded: None };
        match out.last_mut() {
            Some(last)
                if last.unwritten == e.unwritten
                    && last.logical + last.len == e.logical
                    && last.physical + last.len == e.physical =>
            {
                last.len += e.len
            }
            _ => out.push(e),
        }
    }
    out
}

fn debugfs_kind(kind: &str) -> FileKind {
    match kind {
        "regular" => FileKind::File,
        "directory" => FileKind::Dir,
        "symlink" => FileKind::Symlink,
        "character special" => FileKind::Char,
        "block special" => FileKind::Block,
        "FIFO" => FileKind::Fifo,
        "socket" => FileKind::Socket,
        other => panic!("debugfs type {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The comparison

struct Variant {
    name: &'static str,
    mke2fs: &'static [&'static str],
    /// Run `e2fsck -fyD` to index directories (htree).
    index_dirs: bool,
    /// debugfs -w commands run on the image after creation.
    edits: &'static [&'static str],
}

fn make_image(src: &Path, img: &Path, variant: &Variant, scratch: &Path) {
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-E", "root_owner=0:0", "-L", "label-x"])
        .args(variant.mke2fs)
        .arg("-d")
        .arg(src)
        .arg(img)
        .arg("64M"));
    if variant.index_dirs {
        // Exit status 1 means "errors corrected": the directories were rebuilt.
        let status = Command::new("e2fsck").arg("-fyD").arg(img).output().unwrap().status;
        assert!(matches!(status.code(), Some(0 | 1)), "e2fsck: {status}");
    }
    if !variant.edits.is_empty() {
        fs::write(scratch.join("xattr_value"), "v".repeat(6000)).unwrap();
        let cmds: String = variant.edits.iter().map(|c| format!("{c}\n")).collect();
        let cmdfile = scratch.join("edits");
        fs::write(&cmdfile, cmds).unwrap();
        run(Command::new("debugfs").current_dir(scratch).arg("-w").arg("-f").arg(&cmdfile).arg(img));
    }
}

fn check_variant(src: &Path, variant: &Variant) {
    let scratch = tempfile::tempdir().unwrap();
    let img = scratch.path().join("fs.img");
    make_image(src, &img, variant, scratch.path());
    let file = fs::File::open(&img).unwrap();
    assert!(ext4::probe(&file));
    let fs: Filesystem = ext4::read(&file).unwrap_or_else(|e| panic!("{}: {e}", variant.name));
    let v = variant.name;
    let bs = u64::from(fs.block_size);
    assert_eq!(fs.label, "label-x");
    assert_eq!(fs.uuid.len(), 36);
    let expected_type = variant.mke2fs.iter().find_map(|a| a.strip_prefix("ext")).unwrap();
    assert_eq!(fs.fs_type, format!("ext{expected_type}"), "{v}");

    // Paths and kinds against the source tree; order: "/" first, parents before children.
    let source = walk_source(src);
    assert_eq!(fs.files[0].path, "/");
    let mut index = HashMap::new();
    for (i, f) in fs.files.iter().enumerate() {
        assert!(index.insert(f.path.as_str(), i).is_none(), "{v}: {} listed twice", f.path);
        if i > 0 {
            let parent = f.path.rsplit_once('/').unwrap().0;
            let parent = if parent.is_empty() { "/" } else { parent };
            assert!(index.contains_key(parent), "{v}: {} before its parent", f.path);
        }
    }
    let listed: Vec<&str> = fs.files.iter().map(|f| f.path.as_str()).collect();
    let mut wanted: Vec<&str> = source.keys().map(String::as_str).collect();
    wanted.extend(["/", "/lost+found"]);
    let mut sorted = listed.clone();
    sorted.sort();
    wanted.sort();
    assert_eq!(sorted, wanted, "{v}: paths");

    // debugfs: one stat and one ls per path.
    let raw_paths: Vec<Vec<u8>> = fs
        .files
        .iter()
        .map(|f| match source.get(&f.path) {
            Some(s) => {
                let rel = s.real.strip_prefix(src).unwrap();
                [b"/", rel.as_os_str().as_bytes()].concat()
            }
            None => f.path.as_bytes().to_vec(),
        })
        .collect();
    let stats = debugfs(&img, "stat", &raw_paths);
    let dirs: Vec<usize> = (0..fs.files.len()).filter(|&i| fs.files[i].kind == FileKind::Dir).collect();
    let dir_paths: Vec<Vec<u8>> = dirs.iter().map(|&i| raw_paths[i].clone()).collect();
    let listings = debugfs(&img, "ls -p", &dir_paths);

    // Directory entries in on-disk order, as debugfs ls lists them.
    for (&i, lines) in dirs.iter().zip(&listings) {
        let dir = &fs.files[i];
        let on_disk: Vec<String> = lines
            .iter()
            .filter(|l| l.starts_with('/') && !l.starts_with("/0/"))
            .map(|l| escape(l.split('/').nth(5).unwrap().as_bytes()))
            .filter(|n| n != "." && n != "..")
            .collect();
        let prefix = if dir.path == "/" { String::from("/") } else { format!("{}/", dir.path) };
        let children: Vec<String> = fs
            .files
            .iter()
            .filter_map(|f| f.path.strip_prefix(&prefix))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(String::from)
            .collect();
        // debugfs prints names lossily; compare those that survived.
        let valid: Vec<&String> = children.iter().filter(|n| !n.contains("\\x")).collect();
        let on_disk: Vec<&String> = on_disk.iter().filter(|n| !n.contains('\u{fffd}')).collect();
        assert_eq!(valid, on_disk, "{v}: order of {}", dir.path);
    }

    let mut checked_content = 0;
    let mut max_inode = 0;
    for (f, lines) in fs.files.iter().zip(&stats) {
        let p = &f.path;
        let stat = parse_stat(lines);
        max_inode = max_inode.max(f.inode);
        if variant.index_dirs && p == "/big_dir" {
            assert!(stat.flags & 0x1000 != 0, "{v}: {p} is not an htree directory");
        }
        assert_eq!(f.inode, u64::from(stat.inode), "{v}: {p}: inode");
        assert_eq!(f.kind, debugfs_kind(&stat.kind), "{v}: {p}: kind");
        assert_eq!(f.mode, stat.mode, "{v}: {p}: mode");
        assert_eq!((f.uid, f.gid), (stat.uid, stat.gid), "{v}: {p}: owner");
        assert_eq!(f.size, stat.size, "{v}: {p}: size");
        assert_eq!(f.nlink, stat.links, "{v}: {p}: links");
        let extra = stat.mtime_extra.unwrap_or(0);
        assert_eq!(f.mtime, i64::from(stat.mtime as i32) + (i64::from(extra & 3) << 32), "{v}: {p}");
        assert_eq!(f.mtime_nsec, extra >> 2, "{v}: {p}: mtime nsec");
        if let Some(target) = &stat.fast_link {
            assert_eq!(f.link_target.as_ref(), Some(target), "{v}: {p}: fast link");
        }
        assert_eq!(f.rdev, stat.device, "{v}: {p}: device");
        let mut ours: Vec<(&str, usize)> = f.xattrs.iter().map(|(n, val)| (n.as_str(), val.len())).collect();
        let mut theirs: Vec<(&str, usize)> = stat
            .xattrs
            .iter()
            .filter(|(n, _, _)| n != "system.data")
            // debugfs converts ACLs to the xattr format: its length is not the raw one.
            .map(|(n, len, _)| (n.as_str(), if n.starts_with("system.posix_acl") { 0 } else { *len }))
            .collect();
        for x in &mut ours {
            if x.0.starts_with("system.posix_acl") {
                x.1 = 0;
            }
        }
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{v}: {p}: xattr names and sizes");
        for (name, _, value) in &stat.xattrs {
            if let (Some(value), false) = (value, name.starts_with("system.")) {
                let mine = f.xattrs.iter().find(|(n, _)| n == name).unwrap();
                assert_eq!(&mine.1, value, "{v}: {p}: xattr {name}");
            }
        }
        if f.kind == FileKind::File && f.inline_data.is_none() {
            let map = stat.map.as_ref().unwrap_or_else(|| panic!("{v}: {p}: no map"));
            assert_eq!(f.extents, to_extents(map, bs), "{v}: {p}: extents");
        } else {
            assert!(f.extents.is_empty(), "{v}: {p}: extents on a non-file");
        }

        // Against the source tree.
        let Some(s) = source.get(p) else { continue };
        let meta = &s.meta;
        assert_eq!(f.kind, source_kind(meta), "{v}: {p}: kind vs source");
        assert_eq!(f.mode, meta.mode() & 0o7777, "{v}: {p}: mode vs source");
        assert_eq!((f.uid, f.gid), (meta.uid(), meta.gid()), "{v}: {p}: owner vs source");
        if f.kind != FileKind::Dir {
            assert_eq!(f.mtime, meta.mtime(), "{v}: {p}: mtime vs source");
            assert_eq!(f.nlink as u64, meta.nlink(), "{v}: {p}: nlink vs source");
        }
        match f.kind {
            FileKind::Symlink => {
                let target = fs::read_link(&s.real).unwrap();
                assert_eq!(f.link_target.as_deref(), Some(target.as_os_str().as_bytes()), "{v}: {p}");
                assert_eq!(f.size, meta.size(), "{v}: {p}");
            }
            FileKind::Char | FileKind::Block => {
                let dev = meta.rdev();
                let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
                let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
                assert_eq!(f.rdev, Some((major as u32, minor as u32)), "{v}: {p}: rdev vs source");
            }
            FileKind::File => {
                assert_eq!(f.size, meta.size(), "{v}: {p}: size vs source");
                compare_content(&file, f, &s.real);
                checked_content += 1;
            }
            _ => {}
        }
    }
    assert!(checked_content > 300, "{v}: only {checked_content} files compared");

    // Spot checks of what the fixture was built to contain.
    let get = |path: &str| &fs.files[index[path]];
    let (a, b) = (get("/hard_a"), get("/links/hard_b"));
    assert_eq!((a.inode, a.nlink), (b.inode, 2), "{v}: hard links");
    assert!(get("/fast_link").link_target.as_deref() == Some(b"small/f01.txt".as_slice()));
    assert!(get("/slow_link").link_target.as_deref() == Some(SLOW_TARGET.as_bytes()));
    let f00 = get("/small/f00.txt");
    assert!(f00.xattrs.contains(&("user.test".into(), b"hello".to_vec())), "{v}");
    assert!(f00.xattrs.contains(&("user.binary".into(), vec![0, 0xff, 0x10, 0xfe])), "{v}");
    assert!(get("/small/f02.txt").xattrs.iter().any(|(n, _)| n == "system.posix_acl_access"));
    assert_eq!(get("/dev/nvme").rdev, Some((259, 70000)));
    assert_eq!(get("/dev/tty").rdev, Some((4, 5)));
    assert_eq!(get("/setuid_bin").mode, 0o4755);
    assert_eq!(get("/tmp").mode, 0o1777);
    assert_eq!((get("/owned_dir").uid, get("/owned_dir").gid), (1234, 5678));
    assert!(index.contains_key("/bad\\xffname"), "{v}");
    let deep = (0..DEPTH).map(|i| format!("/d{i:02}")).collect::<String>() + "/deep.txt";
    assert!(index.contains_key(deep.as_str()), "{v}");
    if bs < 65536 {
        // 200 separate chunks (one per block with 64 KiB blocks, all contiguous then);
        // group boundaries may split some further.
        assert!(get("/many_extents.bin").extents.len() >= 200, "{v}");
    }
    if variant.edits.iter().any(|e| e.starts_with("fallocate")) {
        let pre = get("/prealloc");
        assert!(!pre.extents.is_empty() && pre.extents.iter().all(|e| e.unwritten), "{v}");
    }
    if variant.edits.iter().any(|e| e.starts_with("ea_set")) {
        let (_, value) = get("/empty").xattrs.iter().find(|(n, _)| n == "user.big").unwrap();
        assert!(value.len() >= 4096 && value.iter().all(|&b| b == b'v'), "{v}");
    }
    if variant.mke2fs.contains(&"inline_data") {
        assert!(get("/small/f00.txt").inline_data.is_some(), "{v}");
    }
    // One inode read alone gives what the listing found inside it, and nothing for the rest.
    for f in fs.files.iter().filter(|f| f.kind == FileKind::File) {
        let alone = ext4::inline_content(&file, u32::try_from(f.inode).expect("an ext4 inode number"))
            .unwrap_or_else(|e| panic!("{v}: {}: {e}", f.path));
        assert_eq!(alone.as_ref().map(|(data, _)| data), f.inline_data.as_ref(), "{v}: {}", f.path);
        assert!(alone.is_none_or(|(_, size)| size == f.size), "{v}: {}", f.path);
    }
    println!("{v}: {} files checked, {checked_content} contents, inodes up to {max_inode}", fs.files.len());
}

fn compare_content(src: &fs::File, f: &ext4::File, real: &Path) {
    let want = fs::File::open(real).unwrap();
    let mut offset = 0;
    let mut ours = vec![0; 1 << 20];
    let mut theirs = vec![0; 1 << 20];
    while offset < f.size {
        let n = (f.size - offset).min(1 << 20) as usize;
        f.read_content(src, offset, &mut ours[..n]).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&want, &mut theirs[..n], offset).unwrap();
        assert!(ours[..n] == theirs[..n], "{}: content differs in the MiB at {offset}", f.path);
        offset += n as u64;
    }
    // Unaligned reads, crossing block and extent boundaries.
    let mut rng = Xorshift(f.inode * 0x9E37_79B9 + 1);
    for _ in 0..if f.size > 0 { 8 } else { 0 } {
        let offset = rng.next() % f.size;
        let n = (rng.next() % 70_000).min(f.size - offset) as usize;
        f.read_content(src, offset, &mut ours[..n]).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&want, &mut theirs[..n], offset).unwrap();
        assert!(ours[..n] == theirs[..n], "{}: {n} bytes at {offset}", f.path);
    }
    assert!(f.read_content(src, f.size, &mut [0]).is_err(), "{}: read past the end", f.path);
}

#[test]
fn images_match_debugfs_and_source() {
    let src = tempfile::tempdir().unwrap();
    build_source(src.path());
    const EXT4_EDITS: &[&str] = &["fallocate /prealloc 0 9"];
    let variants = [
        Variant { name: "ext2", mke2fs: &["-t", "ext2"], index_dirs: false, edits: &[] },
        Variant { name: "ext2, 128-byte inodes", mke2fs: &["-t", "ext2", "-I", "128"], index_dirs: false, edits: &[] },
        Variant { name: "ext3", mke2fs: &["-t", "ext3"], index_dirs: true, edits: &[] },
        Variant {
            name: "ext4, 1 KiB blocks",
            mke2fs: &["-t", "ext4", "-b", "1024"],
            index_dirs: false,
            edits: EXT4_EDITS,
        },
        Variant {
            name: "ext4, 4 KiB blocks, htree, EA inode",
            mke2fs: &["-t", "ext4", "-b", "4096", "-O", "ea_inode"],
            index_dirs: true,
            edits: &["fallocate /prealloc 0 9", "ea_set -f xattr_value /empty user.big"],
        },
        Variant {
            name: "ext4, inline data",
            mke2fs: &["-t", "ext4", "-O", "inline_data"],
            index_dirs: false,
            edits: &[],
        },
        Variant {
            name: "ext4, 64bit, meta_bg",
            // Small groups and few inodes per group: files spread over several metagroups.
            mke2fs: &["-t", "ext4", "-b", "1024", "-g", "512", "-N", "1024", "-O", "64bit,meta_bg,^resize_inode"],
            index_dirs: false,
            edits: EXT4_EDITS,
        },
        Variant { name: "ext4, 64 KiB blocks", mke2fs: &["-t", "ext4", "-b", "65536"], index_dirs: false, edits: &[] },
        Variant {
            name: "ext4, bigalloc",
            mke2fs: &["-t", "ext4", "-b", "4096", "-O", "bigalloc", "-C", "16384"],
            index_dirs: false,
            edits: &[],
        },
    ];
    for variant in &variants {
        check_variant(src.path(), variant);
    }
}

// ---------------------------------------------------------------------------------------------
// Robustness

/// Reads the filesystem and up to `cap` bytes of each regular file; never panics by contract.
fn read_everything(src: &dyn ReadAt, cap: u64) -> Result<usize, ext4::Error> {
    let fs = ext4::read(src)?;
    common::read_contents(&fs, src, cap);
    Ok(fs.files.len())
}

fn small_image(args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for i in 0..6 {
        let d = src.join(format!("dir{i}/sub"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("file"), format!("content {i}\n").repeat(i * 50)).unwrap();
        fs::write(src.join(format!("dir{i}/tiny")), b"tiny").unwrap();
    }
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    fs::write(src.join("big"), big).unwrap();
    std::os::unix::fs::symlink("dir0/tiny", src.join("fast")).unwrap();
    std::os::unix::fs::symlink("x".repeat(100), src.join("slow")).unwrap();
    fs::hard_link(src.join("big"), src.join("dir1/big_again")).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("dir2/f{i}")), b"x").unwrap();
    }
    run(Command::new("setfattr").args(["-n", "user.a", "-v", "b"]).arg(src.join("dir0/tiny")));
    // Nearly the same image on every run (mke2fs still takes nanoseconds from the clock), so
    // that a failing round can be reproduced: fixed times, UUID and hash seed.
    run(Command::new("find").arg(&src).args(["-exec", "touch", "-h", "-d", "@1700000000", "{}", "+"]));
    let img = dir.path().join("img");
    run(Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args(["-q", "-F", "-U", "0b9c3d2e-1f2a-4b5c-8d7e-6f5a4b3c2d1e"])
        .args(["-E", "hash_seed=6b1d2c3e-4f50-4a6b-9c7d-8e9fa0b1c2d3"])
        .args(args)
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg("8M"));
    fs::read(img).unwrap()
}

/// Corrupts `pristine` `rounds` times (each round restored before the next) at positions
/// drawn by `pick`, reads everything each time and counts (panics, ok, errors).
fn fuzz(
    pristine: Vec<u8>,
    rounds: usize,
    pick: impl Fn(&mut Xorshift) -> Vec<usize> + Send + 'static,
) -> (usize, usize, usize) {
    corrupt_rounds(pristine, rounds, pick, |image| read_everything(image, 1 << 20).is_ok())
}

#[test]
fn corrupted_images_never_panic() {
    let images = [
        ("ext4 1k", small_image(&["-t", "ext4", "-b", "1024"])),
        ("ext4 4k inline", small_image(&["-t", "ext4", "-b", "4096", "-O", "inline_data"])),
        ("ext2 1k", small_image(&["-t", "ext2", "-b", "1024"])),
    ];
    let mut total_panics = 0;
    for (name, pristine) in images {
        assert!(read_everything(&pristine, u64::MAX).is_ok(), "{name}: pristine image");
        let limit = pristine.len().min(2 << 20);
        // 16 random bytes anywhere in the first 2 MiB.
        let spread =
            move |rng: &mut Xorshift| (0..16).map(|_| (rng.next() % limit as u64) as usize).collect::<Vec<_>>();
        let (panics, ok, err) = fuzz(pristine.clone(), 2000, spread);
        println!("{name}, 16 bytes anywhere: {ok} ok, {err} errors, {panics} panics");
        total_panics += panics;
        // 1 to 4 of the non-zero bytes outside file contents: metadata, so that rounds
        // reach deep into the structures instead of hitting free space or data.
        let mut data = vec![false; limit];
        for f in ext4::read(&pristine).unwrap().files {
            for e in f.extents {
                let (start, end) = (e.physical as usize, (e.physical + e.len) as usize);
                data[start.min(limit)..end.min(limit)].fill(true);
            }
        }
        let nonzero: Vec<usize> = (0..limit).filter(|&i| pristine[i] != 0 && !data[i]).collect();
        let dense = move |rng: &mut Xorshift| {
            let n = rng.next() % 4 + 1;
            (0..n).map(|_| nonzero[(rng.next() % nonzero.len() as u64) as usize]).collect()
        };
        let (panics, ok, err) = fuzz(pristine, 10000, dense);
        println!("{name}, 1-4 metadata bytes: {ok} ok, {err} errors, {panics} panics");
        total_panics += panics;
    }
    assert_eq!(total_panics, 0, "the reader panicked");
}

#[test]
fn e2fsprogs_corrupt_fixtures_never_panic() {
    let dir = Path::new("/work/shared/fixtures/ext4-corrupt");
    let mut fixtures: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".img.gz"))
        .collect();
    fixtures.sort();
    assert!(!fixtures.is_empty());
    let (mut ok, mut err, mut panics) = (0, 0, 0);
    for gz in fixtures {
        let mut img = tempfile::NamedTempFile::new().unwrap();
        let out = run(Command::new("gzip").arg("-dc").arg(&gz));
        img.write_all(&out.stdout).unwrap();
        let file = img.reopen().unwrap();
        let name = gz.file_name().unwrap().to_string_lossy().into_owned();
        let started = Instant::now();
        let result =
            bounded(Duration::from_secs(60), move || std::panic::catch_unwind(|| read_everything(&file, 8 << 20)));
        let took = started.elapsed();
        match result {
            Err(_) => {
                panics += 1;
                println!("{name}: PANIC");
            }
            Ok(Ok(n)) => {
                ok += 1;
                println!("{name}: ok, {n} files ({took:?})");
            }
            Ok(Err(e)) => {
                err += 1;
                println!("{name}: {e} ({took:?})");
            }
        }
    }
    println!("fixtures: {ok} ok, {err} errors, {panics} panics");
    assert_eq!(panics, 0);
}
