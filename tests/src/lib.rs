//! Support for imagelake's end-to-end tests: real trees, real images made by real tools
//! (`mke2fs -d`, `sgdisk`, `sfdisk`, `mkfs.vfat`, `qemu-img`), independent oracles
//! (`debugfs`, the source tree) and a driver for the `imagelake` binary.
//!
//! Every helper panics with the failing command and its output: these run only in tests.

pub mod cluster;
pub mod corrupt;
pub mod debugfs;
pub mod dice;
pub mod exposure;
pub mod fleet;
pub mod lvm;
pub mod manifest;
pub mod questions;
pub mod rpm;
pub mod s3;
pub mod server;
pub mod tree;

pub use manifest::assert_files_match;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs a command, asserting success; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, asserting success; returns its whole output.
pub fn output(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command whatever its exit status (for commands expected to fail, and oracles whose
/// failure a test reports itself); returns its whole output.
pub fn attempt(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `sh -c SCRIPT`, asserting success.
pub fn sh(script: &str) -> String {
    run(Command::new("sh").arg("-c").arg(script))
}

/// The `imagelake` binary under test: `$IMAGELAKE_BIN`, else the `imagelake` built beside
/// the running binary (`target/debug/` for benches, one level up from `deps/` for tests).
pub fn imagelake_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IMAGELAKE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("running binary path");
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("imagelake"))
        .find(|bin| bin.exists())
        .expect("imagelake binary missing: run `cargo build --bin imagelake` first (scripts/test.sh does)")
}

/// `sql` answered once by a fresh `imagelake sql -c` process on the library in `folder`: its
/// wall seconds and peak memory in bytes. Through GNU time: a child spawned straight from a
/// large bench process would report that process's peak as its own (Linux carries it over exec).
pub fn fresh_answer(folder: &std::path::Path, sql: &str) -> (f64, u64) {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%M %e"]).arg(imagelake_bin()).arg("-L").arg(folder);
    cmd.args(["sql", "--format", "csv", "-c", sql]);
    let out = cmd.stdout(std::process::Stdio::null()).output().expect("/usr/bin/time");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stderr);
    let mut fields = text.lines().last().unwrap_or_default().split_whitespace();
    let kib: u64 = fields.next().and_then(|f| f.parse().ok()).expect("peak KiB");
    let seconds: f64 = fields.next().and_then(|f| f.parse().ok()).expect("seconds");
    (seconds, kib * 1024)
}

/// A library in a temporary directory, driven through the CLI.
pub struct Library {
    pub dir: tempfile::TempDir,
}

impl Default for Library {
    fn default() -> Self {
        Self::new()
    }
}

impl Library {
    pub fn new() -> Self {
        Library { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("lib")
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(imagelake_bin());
        cmd.arg("-L").arg(self.path());
        cmd
    }

    /// The command run as an unprivileged user (nobody, through setpriv), the library handed
    /// to that user first: what must work without root is run this way.
    pub fn command_unprivileged(&self) -> Command {
        run(Command::new("chown").args(["-R", "65534:65534"]).arg(self.path()));
        run(Command::new("chmod").arg("755").arg(self.dir.path()));
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(imagelake_bin())
            .arg("-L")
            .arg(self.path());
        cmd
    }

    /// Checks an image in; returns the JSON summary.
    pub fn checkin(&self, image: &Path, name: &str) -> serde_json::Value {
        let out = run(self.command().arg("checkin").arg(image).arg("--name").arg(name).arg("--json"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("checkin summary is not JSON ({e}): {out}"))
    }

    /// Checks an image version out to `out`; returns the JSON summary.
    pub fn checkout(&self, image: &str, out: &Path) -> serde_json::Value {
        let text = run(self.command().arg("checkout").arg(image).arg(out).arg("--json"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("checkout summary is not JSON ({e}): {text}"))
    }

    /// Runs a query; returns its rows as JSON objects.
    pub fn sql(&self, query: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let out = run(self.command().args(["sql", "--format", "json", "-c", query]));
        let rows: Vec<serde_json::Value> = if out.trim().is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("sql output is not JSON ({e}): {out}"))
        };
        rows.into_iter().map(|r| r.as_object().cloned().expect("row object")).collect()
    }
}

/// A qcow2 checkout passes `qemu-img check` and `qemu-img compare` with the raw disk, and
/// allocates only the clusters its non-zero extents touch (the disk's zeros stay unallocated).
pub fn assert_qcow2_checkout(lib: &Library, spec: &str, raw: &Path) {
    const CLUSTER: u64 = 65536;
    let out = raw.with_extension("out.qcow2");
    let summary = run(lib.command().args(["checkout", spec]).arg(&out).args(["--format", "qcow2", "--json"]));
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("summary");
    run(Command::new("qemu-img").args(["check", "-f", "qcow2"]).arg(&out));
    run(Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "qcow2"]).arg(raw).arg(&out));
    let map: serde_json::Value =
        serde_json::from_str(&run(Command::new("qemu-img").args(["map", "--output=json"]).arg(&out))).expect("map");
    let allocated: u64 =
        map.as_array().expect("map").iter().filter(|m| m["data"] == true).map(|m| m["length"].as_u64().unwrap()).sum();
    let extents = lib.sql(&format!(
        "SELECT disk_offset, length FROM extents WHERE image_id = {} AND kind <> 'zero'",
        summary["image_id"]
    ));
    let mut clusters = std::collections::BTreeSet::new();
    for e in &extents {
        let (at, len) = (e["disk_offset"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        clusters.extend(at / CLUSTER..(at + len).div_ceil(CLUSTER));
    }
    let written = summary["bytes_written"].as_u64().expect("written");
    assert!(
        allocated >= written && allocated <= clusters.len() as u64 * CLUSTER,
        "{spec}: {allocated} bytes allocated for {written} written in {} clusters",
        clusters.len()
    );
    std::fs::remove_file(&out).expect("rm");
}

/// Byte-for-byte equality of two files, by `cmp` (an independent oracle).
pub fn assert_same_bytes(a: &Path, b: &Path) {
    let out = Command::new("cmp").arg(a).arg(b).output().expect("cmp");
    assert!(
        out.status.success(),
        "{} and {} differ: {}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The raw bytes of any image `qemu-img` reads (the oracle for non-raw inputs).
pub fn qemu_img_to_raw(image: &Path, raw: &Path) {
    run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(image).arg(raw));
}

/// Where tests cache slow-to-build inputs (debootstrap trees), outside the clone.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("IMAGELAKE_TEST_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())).join(".cache/imagelake-tests")
    })
}

/// The repository root (for scripts under `tests/images/`). Cargo names the running package's
/// folder (one level below the root) at run time; the compile-time path is only a fallback,
/// because a target directory shared between clones keeps binaries built in another clone.
pub fn repo_root() -> PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    PathBuf::from(package).parent().expect("repo root").to_path_buf()
}

/// A new library holding one small ext4 image (`/etc/motd` and little else) as `name@1`;
/// `dir` holds its tree and image.
pub fn small_library(dir: &Path, name: &str) -> Library {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/motd"), "hi\n").unwrap();
    let img = dir.join("small.img");
    mkfs_ext(&tree, &img, "ext4", "8M", &[]);
    let lib = Library::new();
    lib.checkin(&img, name);
    lib
}

/// Makes an ext2/3/4 filesystem image of `size` from `tree` with `mke2fs -d`.
pub fn mkfs_ext(tree: &Path, out: &Path, fs_type: &str, size: &str, extra: &[&str]) {
    run(Command::new("mke2fs").args(["-q", "-F", "-t", fs_type]).args(extra).arg("-d").arg(tree).arg(out).arg(size));
}

/// Makes a FAT filesystem image of `kib` KiB holding one file (an EFI system partition).
pub fn mkfs_vfat(out: &Path, kib: u64) {
    let _ = std::fs::remove_file(out);
    run(Command::new("mkfs.vfat").args(["-n", "EFI"]).arg("-C").arg(out).arg(kib.to_string()));
    let file = out.with_extension("bootx64");
    std::fs::write(&file, b"not really a bootloader\n").expect("write");
    run(Command::new("mmd").arg("-i").arg(out).arg("::/EFI"));
    run(Command::new("mcopy").arg("-i").arg(out).arg(&file).arg("::/EFI/BOOTX64.EFI"));
}

/// Writes `part` into `disk` at byte `offset` without truncating it.
pub fn write_at(disk: &Path, part: &Path, offset: u64) {
    run(Command::new("dd")
        .arg(format!("if={}", part.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "conv=notrunc,sparse", "status=none", "oflag=seek_bytes"])
        .arg(format!("seek={offset}")));
}

/// A GPT disk laid out as installers do: BIOS boot, an EFI system partition (vfat), and the
/// root filesystem image `root`, written with `sgdisk`.
pub fn gpt_disk(out: &Path, root: &Path, esp: &Path) {
    let root_mib = std::fs::metadata(root).expect("root image").len().div_ceil(1 << 20);
    let esp_mib = std::fs::metadata(esp).expect("esp image").len().div_ceil(1 << 20);
    let total = 1 + 1 + esp_mib + root_mib + 1;
    run(Command::new("truncate").arg(format!("-s{total}M")).arg(out));
    run(Command::new("sgdisk")
        .arg("-n1:2048:+1M")
        .arg("-t1:ef02")
        .arg("-c1:bios")
        .arg(format!("-n2:0:+{esp_mib}M"))
        .arg("-t2:ef00")
        .arg("-c2:EFI system")
        .arg(format!("-n3:0:+{root_mib}M"))
        .arg("-t3:8300")
        .arg("-c3:root")
        .arg(out));
    write_at(out, esp, (2048 + 2048) * 512);
    write_at(out, root, (2048 + 2048 + esp_mib * 2048) * 512);
}

/// An MBR disk written with `sfdisk`: `primary` in slot 1, and `logical` as partition 5
/// inside an extended partition (so its table is reached through an EBR).
pub fn mbr_disk(out: &Path, primary: &Path, logical: &Path) {
    let sectors = |p: &Path| std::fs::metadata(p).expect("image").len().div_ceil(512);
    let (p, l) = (sectors(primary), sectors(logical));
    let ext_start = 2048 + p.div_ceil(2048) * 2048;
    let logical_start = ext_start + 2048;
    run(Command::new("truncate").arg(format!("-s{}", (logical_start + l + 2048) * 512)).arg(out));
    let script = format!(
        "label: dos\nstart=2048, size={p}, type=83\nstart={ext_start}, size={}, type=5\nstart={logical_start}, size={l}, type=83\n",
        l + 2048
    );
    let mut child = Command::new("sfdisk")
        .arg("--quiet")
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sfdisk");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("script");
    assert!(child.wait().expect("sfdisk").success(), "sfdisk failed on {}", out.display());
    write_at(out, primary, 2048 * 512);
    write_at(out, logical, logical_start * 512);
}

/// What a finished child process used, from `wait4`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub max_rss_bytes: u64,
}

/// Runs `cmd` to completion, asserting success; returns its stdout and resource usage.
pub fn run_measured(cmd: &mut Command) -> (String, Usage) {
    let m = measure(cmd, None);
    assert!(m.status.success(), "{cmd:?} failed ({}):\n{}\n{}", m.status, m.stdout, m.stderr);
    (m.stdout, m.usage)
}

/// What a finished child did: its exit status, output and resource usage.
pub struct Measured {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub usage: Usage,
}

/// Runs `cmd`, killing it (SIGKILL) if it is still running after `limit`; reaps it with
/// `wait4` so that its own peak memory is known.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also yields its rusage
pub fn measure(cmd: &mut Command, limit: Option<std::time::Duration>) -> Measured {
    use std::os::unix::process::ExitStatusExt;
    let started = std::time::Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    // Drain pipes on threads so a chatty child cannot block; a watchdog enforces the limit.
    let mut stdout = child.stdout.expect("stdout");
    let mut stderr = child.stderr.expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(limit) = limit {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + limit;
            while std::time::Instant::now() < deadline {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            // SAFETY: kill(2) on our own child, which is not reaped until `done` is set.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
    }
    let mut status = 0;
    // SAFETY: rusage is plain data, zero-initialised, and filled by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reaped, pid, "wait4 failed for {cmd:?}");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Measured {
        status: std::process::ExitStatus::from_raw(status),
        stdout: out.join().expect("stdout thread"),
        stderr: err.join().expect("stderr thread"),
        usage: Usage {
            wall_seconds: started.elapsed().as_secs_f64(),
            cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
            max_rss_bytes: usage.ru_maxrss as u64 * 1024,
        },
    }
}

/// The Debian bookworm tree (minbase + mariadb-server), debootstrapped once into the cache.
pub fn debian_tree() -> std::path::PathBuf {
    let script = repo_root().join("tests/images/debian-tree.sh");
    let out = run(Command::new("bash").arg(script).arg(cache_dir()));
    std::path::PathBuf::from(out.trim())
}

/// (name, version, arch) of every package, as dpkg itself reads the database.
pub fn dpkg_query(admindir: &Path) -> std::collections::BTreeSet<(String, String, String)> {
    let out = run(Command::new("dpkg-query").arg(format!("--admindir={}", admindir.display())).args([
        "-W",
        "-f",
        "${Package}\t${Version}\t${Architecture}\n",
    ]));
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

/// What `export` must reproduce of one entry of a file tree, read with `lstat` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The file type and permission bits (`st_mode`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
    /// Regular files: the blake3 of the content; symbolic links: the target.
    pub content: Option<String>,
    pub rdev: u64,
    pub xattrs: std::collections::BTreeMap<String, Vec<u8>>,
    /// For a non-directory with several names: all its names in the tree, sorted.
    pub hard_links: Vec<String>,
}

/// Every entry under `root` (as "/", "/etc", ...) with its [`Node`]. `skip` leaves out paths
/// and what is under them, except "/", which leaves out only the root's own node.
pub fn tree_nodes(root: &Path, skip: &[&str]) -> std::collections::BTreeMap<String, Node> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    fn xattrs(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
        let mut names = vec![0u8; 65536];
        // SAFETY: `c` is NUL-terminated; `names` is writable for its length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        assert!(n >= 0, "llistxattr {}: {}", path.display(), std::io::Error::last_os_error());
        names.truncate(n as usize);
        let mut out = std::collections::BTreeMap::new();
        for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let cname = std::ffi::CString::new(name).expect("name");
            let mut value = vec![0u8; 65536];
            // SAFETY: as above.
            let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
            assert!(len >= 0, "lgetxattr {}: {}", path.display(), std::io::Error::last_os_error());
            value.truncate(len as usize);
            out.insert(String::from_utf8_lossy(name).into_owned(), value);
        }
        out
    }
    let mut nodes = std::collections::BTreeMap::new();
    let mut inodes: std::collections::BTreeMap<(u64, u64), Vec<String>> = std::collections::BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), "/".to_string())];
    while let Some((path, name)) = stack.pop() {
        let skipped = skip.contains(&name.as_str());
        if skipped && name != "/" {
            continue;
        }
        let m = std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
        let kind = m.file_type();
        let content = if kind.is_file() {
            Some(blake3::hash(&std::fs::read(&path).expect("read")).to_hex().to_string())
        } else if kind.is_symlink() {
            Some(
                String::from_utf8_lossy(std::fs::read_link(&path).expect("readlink").as_os_str().as_bytes())
                    .into_owned(),
            )
        } else {
            None
        };
        if kind.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                let entry = entry.expect("entry");
                let child = entry.file_name().to_string_lossy().into_owned();
                let child_name = if name == "/" { format!("/{child}") } else { format!("{name}/{child}") };
                stack.push((entry.path(), child_name));
            }
        } else if m.nlink() > 1 {
            inodes.entry((m.dev(), m.ino())).or_default().push(name.clone());
        }
        let node = Node {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            content,
            rdev: m.rdev(),
            xattrs: xattrs(&path),
            hard_links: Vec::new(),
        };
        if !skipped {
            nodes.insert(name, node);
        }
    }
    for mut names in inodes.into_values() {
        names.sort();
        for n in &names {
            if let Some(node) = nodes.get_mut(n) {
                node.hard_links = names.clone();
            }
        }
    }
    nodes
}

/// Asserts that two trees hold the same entries with the same [`Node`]s, naming the first
/// differences.
pub fn assert_same_tree(
    expected: &std::collections::BTreeMap<String, Node>,
    got: &std::collections::BTreeMap<String, Node>,
) {
    let mut differences = Vec::new();
    for (path, want) in expected {
        match got.get(path) {
            None => differences.push(format!("{path:?}: missing")),
            Some(node) if node != want => differences.push(format!("{path:?}: expected {want:?}\n    got {node:?}")),
            Some(_) => {}
        }
    }
    differences.extend(got.keys().filter(|p| !expected.contains_key(*p)).map(|p| format!("{p:?}: not expected")));
    assert!(
        differences.is_empty(),
        "{} of {} entries differ:\n{}",
        differences.len(),
        expected.len(),
        differences.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The Python of the project's virtual environment (`$IMAGELAKE_VENV`, default
/// `~/.cache/imagelake-venv`), which `scripts/python-env.sh` fills from
/// `tests/python/requirements.txt`: the Flight SQL clients, pytest, DuckDB.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("IMAGELAKE_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/imagelake-venv")
    });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run `bash scripts/python-env.sh` (scripts/install-deps.sh does)",
        python.display()
    );
    python
}

/// Whether `dir` is a mount point now.
pub fn is_mount_point(dir: &Path) -> bool {
    let (Ok(dir), Ok(mounts)) = (std::fs::canonicalize(dir), std::fs::read_to_string("/proc/self/mounts")) else {
        return false;
    };
    mounts.lines().any(|l| l.split(' ').nth(1) == dir.to_str())
}

/// A mount made by `imagelake mount IMAGE DIR ARGS...`, with the line it printed; unmounted
/// when dropped if it still is, so that a failing test leaves no mount behind.
pub struct Mounted {
    pub dir: PathBuf,
    pub said: String,
}

impl Mounted {
    pub fn new(lib: &Library, image: &str, dir: &Path, args: &[&str]) -> Mounted {
        let said = run(lib.command().arg("mount").arg(image).arg(dir).args(args));
        Mounted { dir: dir.to_path_buf(), said }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mount_point(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills a mounted root filesystem: the tree, then the structures a copy alone would not make
/// (written as a real root holds them), and 3 MiB of bytes unique to `seed` at `/unique`.
pub fn fill_root(mnt: &Path, tree: &Path, seed: &str) {
    let m = mnt.display();
    run(Command::new("cp").arg("-a").arg(format!("{}/.", tree.display())).arg(mnt));
    sh(&format!(
        "set -e; cd '{m}'
         # Folders of every size (XFS's every form: short form, block, leaf, node, and one whose
         # block map is a B+tree, its blocks interleaved with a file's, so they fragment).
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
    std::fs::write(mnt.join("unique"), unique_bytes(seed, 3 << 20)).expect("write");
}

/// The packages imagelake indexed of the newest version of `image`: (name, version,
/// architecture), as `dpkg_query` gives them.
pub fn packages_of(lib: &Library, image: &str) -> std::collections::BTreeSet<(String, String, String)> {
    let rows = lib.sql(&format!(
        "SELECT p.name, p.version, p.arch FROM packages p JOIN images i USING (image_id) WHERE i.name = '{image}'"
    ));
    (rows.iter())
        .map(|r| {
            let text = |k: &str| r[k].as_str().expect("text").to_string();
            (text("name"), text("version"), text("arch"))
        })
        .collect()
}

/// What `find`, `sha256sum` and `getfattr` see of a mounted tree: every entry's path, kind,
/// permissions, owners, size, nanosecond mtime, link count, link target and inode number (so
/// hard-link groups too); a sha256 of every regular file; every extended attribute.
pub fn kernel_listing(dir: &Path) -> (String, String, String) {
    let d = dir.display();
    let find = sh(&format!("cd '{d}' && find . -printf '%p %y %m %U %G %s %T@ %n %l %i\\n' | LC_ALL=C sort"));
    let sums = sh(&format!("cd '{d}' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum"));
    // In path order, whatever order the filesystem lists a folder in.
    let xattrs = sh(&format!(
        "cd '{d}' && find . -print0 | LC_ALL=C sort -z | xargs -0 getfattr -h -d -m - --absolute-names 2>/dev/null || true"
    ));
    (find, sums, xattrs)
}

/// A loop device over a file (or a part of one), detached when dropped.
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    /// A loop device over `length` bytes of `file` from `offset` (all of it when None).
    pub fn over(file: &Path, offset: u64, length: Option<u64>) -> LoopDevice {
        let mut losetup = Command::new("losetup");
        losetup.arg("--offset").arg(offset.to_string());
        if let Some(length) = length {
            losetup.arg("--sizelimit").arg(length.to_string());
        }
        let dev = run(losetup.args(["-f", "--show"]).arg(file));
        LoopDevice { path: PathBuf::from(dev.trim()) }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// What `stat -f` tells of a mounted filesystem: block size, blocks, free blocks, inodes and
/// free inodes.
pub fn statfs(dir: &Path) -> Vec<u64> {
    let out = run(Command::new("stat").args(["-f", "-c", "%S %b %f %c %d"]).arg(dir));
    out.split_whitespace().map(|n| n.parse().expect("a number")).collect()
}

/// What the kernel shows of a mounted tree, for comparing a writable mount with the kernel's
/// mount of its commit: every entry's path, kind, permissions, owners, size (a folder's
/// follows its blocks, which only the commit lays out), nanosecond mtime, link count and link
/// target; the hard-link groups by path; a sha256 of every regular file; every xattr.
pub fn edited_listing(dir: &Path) -> (String, String, String, String) {
    let d = dir.display();
    let find = sh(&format!(
        "cd '{d}' && find . -type d -printf '%p %y %m %U %G - %T@ %n\\n' -o -printf '%p %y %m %U %G %s %T@ %n %l\\n' | LC_ALL=C sort"
    ));
    let groups = sh(&format!(
        "cd '{d}' && find . ! -type d -links +1 -printf '%i %p\\n' | LC_ALL=C sort -k2 | awk '{{g[$1] = g[$1] \" \" $2}} END {{for (i in g) print g[i]}}' | LC_ALL=C sort"
    ));
    let (_, sums, xattrs) = kernel_listing(dir);
    (find, groups, sums, xattrs)
}

/// Bytes no other file shares, so that they get chunks of their own.
pub fn unique_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = *blake3::hash(seed.as_bytes()).as_bytes();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = *blake3::hash(&block).as_bytes();
    }
    out.truncate(len);
    out
}

/// Where the first chunk of `path` in the newest `image` lives: its pack file, and the offset
/// and length of its frame there.
pub fn frame_of(lib: &Library, image: &str, path: &str) -> (PathBuf, u64, u64) {
    let rows = lib.sql(&format!(
        "SELECT c.pack, c.pack_offset, c.frame_size FROM files f \
         JOIN images i USING (image_id) \
         JOIN extents e ON e.image_id = f.image_id AND e.content_hash = f.content_hash \
         JOIN chunks c ON c.chunk_hash = e.chunk_hash \
         WHERE i.name = '{image}' AND f.path = '{path}' ORDER BY e.content_offset LIMIT 1"
    ));
    let pack = rows[0]["pack"].as_str().unwrap();
    let file = lib.path().join("packs").join(&pack[..2]).join(format!("{pack}.pack"));
    (file, rows[0]["pack_offset"].as_u64().unwrap(), rows[0]["frame_size"].as_u64().unwrap())
}
