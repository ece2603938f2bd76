//! Arrow Flight SQL end to end: a library of real images (ext4 made by `mke2fs -d`, a GPT
//! disk by `sgdisk`), users and grants made with the command line, `imagelake serve` started
//! on it, and the Python clients (ADBC's Flight SQL driver, `pyarrow.flight`) run by pytest
//! from the project's venv over `tests/python/`. The server is stopped with SIGTERM and must
//! exit 0 promptly; pytest's output is printed when it fails.
//!
//! The library: `web@1`, `web@2` (nginx upgraded, files added, changed and removed),
//! `webapp@1` (a GPT disk: BIOS boot, EFI system partition, root), `db@1` (whose secrets a
//! `web*` reader must never see), and `bulk@1` with nine clones `bulk2`..`bulk10`, 100,102
//! files each: a million real `files` rows for the streaming test.

use imagelake_tests::{Library, gpt_disk, mkfs_ext, mkfs_vfat, repo_root, run, venv_python};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Users, their passwords, whether `--admin`, and their grants.
const USERS: &[(&str, &str, bool, &[(&str, &str)])] = &[
    ("admin", "admin-pw-5c1e", true, &[("admin", "*")]),
    ("reader", "reader-pw-93ab", false, &[("read", "web*")]),
    ("writer", "writer-pw-0d7f", false, &[("write", "web*")]),
    ("dbreader", "dbreader-pw-61c2", false, &[("read", "db")]),
    ("revokee", "revokee-pw-c4e8", false, &[("read", "web*")]),
    ("nogrants", "nogrants-pw-2b90", false, &[]),
];

/// Files of `bulk@1` (plus the root, lost+found and the folders): 100 folders of 1000.
const BULK_DIRS: usize = 100;
const BULK_FILES: usize = 1000;
const BULK_COPIES: usize = 10;

/// A `dpkg` status database in its documented format.
fn dpkg_status(packages: &[(&str, &str)]) -> String {
    packages
        .iter()
        .map(|(name, version)| {
            format!(
                "Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: misc\n\
                 Installed-Size: 100\nMaintainer: Debian <debian@example.org>\nArchitecture: amd64\n\
                 Version: {version}\nDescription: {name}\n the {name} package\n"
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes `files` (path, content) under `root`.
fn tree(root: &Path, files: &[(&str, String)]) {
    for (path, content) in files {
        let at = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, content).unwrap();
    }
}

fn os_release() -> String {
    "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n".into()
}

/// The images, checked in; copies of their disks are left in `data` (the server's data root).
fn build_library(work: &Path, data: &Path) -> Library {
    let lib = Library::new();
    let nginx_conf: String =
        (0..40).map(|i| format!("    # line {i}\n")).collect::<String>() + "worker_processes auto;\n";

    let web1 = work.join("web1");
    tree(
        &web1,
        &[
            ("etc/os-release", os_release()),
            ("etc/hostname", "web\n".into()),
            ("etc/motd", "welcome to web, version 1\n".into()),
            ("etc/nginx/nginx.conf", nginx_conf.clone()),
            ("srv/www/index.html", "<h1>web 1</h1>\n".repeat(50)),
            ("srv/www/old.html", "old page\n".into()),
            (
                "var/lib/dpkg/status",
                dpkg_status(&[("libc6", "2.36-9"), ("nginx", "1.22.1-9"), ("openssl", "3.0.11-1~deb12u1")]),
            ),
        ],
    );
    let web2 = work.join("web2");
    tree(
        &web2,
        &[
            ("etc/os-release", os_release()),
            ("etc/hostname", "web\n".into()),
            ("etc/motd", "welcome to web, version 2\n".into()),
            ("etc/nginx/nginx.conf", nginx_conf.replace("auto", "4")),
            ("srv/www/index.html", "<h1>web 2</h1>\n".repeat(50)),
            ("srv/www/about.html", "about us\n".repeat(20)),
            (
                "var/lib/dpkg/status",
                dpkg_status(&[
                    ("curl", "7.88.1-10"),
                    ("libc6", "2.36-9"),
                    ("nginx", "1.22.1-9+deb12u1"),
                    ("openssl", "3.0.11-1~deb12u1"),
                ]),
            ),
        ],
    );
    let webapp = work.join("webapp");
    tree(
        &webapp,
        &[
            ("etc/os-release", os_release()),
            ("etc/hostname", "webapp\n".into()),
            ("etc/motd", "welcome to webapp\n".into()),
            ("etc/app/app.conf", "listen = 8080\nworkers = 4\n".into()),
            ("opt/app/app.py", "print('hello')\n".repeat(30)),
            (
                "var/lib/dpkg/status",
                dpkg_status(&[("libc6", "2.36-9"), ("nginx", "1.22.1-9"), ("python3", "3.11.2-1+b1")]),
            ),
        ],
    );
    let db = work.join("db");
    tree(
        &db,
        &[
            ("etc/os-release", os_release()),
            ("etc/hostname", "db\n".into()),
            ("etc/motd", "welcome to db\n".into()),
            ("etc/mysql/secret.cnf", "[client]\npassword = hunter2-db-secret\n".into()),
            (
                "var/lib/dpkg/status",
                dpkg_status(&[("libc6", "2.36-9"), ("mariadb-server", "1:10.11.6-0+deb12u1")]),
            ),
        ],
    );
    let images = work.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for (tree, name) in [(&web1, "web"), (&web2, "web"), (&db, "db")] {
        let img = images.join(format!("{}.img", tree.file_name().unwrap().to_str().unwrap()));
        mkfs_ext(tree, &img, "ext4", "16M", &[]);
        lib.checkin(&img, name);
    }
    let root = images.join("webapp-root.img");
    mkfs_ext(&webapp, &root, "ext4", "16M", &[]);
    let esp = images.join("webapp-esp.img");
    mkfs_vfat(&esp, 2048);
    let disk = images.join("webapp.img");
    gpt_disk(&disk, &root, &esp);
    lib.checkin(&disk, "webapp");

    // A million real rows: one image of 100,000 empty files, cloned (catalog rows only).
    let bulk = work.join("bulk");
    for d in 0..BULK_DIRS {
        let dir = bulk.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..BULK_FILES {
            std::fs::File::create(dir.join(format!("f{f:04}"))).unwrap();
        }
    }
    let img = images.join("bulk.img");
    let inodes = (BULK_DIRS * (BULK_FILES + 1) + 1000).to_string();
    mkfs_ext(&bulk, &img, "ext4", "256M", &["-N", &inodes]);
    lib.checkin(&img, "bulk");
    for i in 2..=BULK_COPIES {
        run(lib.command().args(["clone", "bulk@1", &format!("bulk{i}")]));
    }

    // The data root holds disks a remote checkin may read.
    std::fs::create_dir_all(data.join("incoming")).unwrap();
    for name in ["web2.img", "db.img"] {
        std::fs::copy(images.join(name), data.join("incoming").join(name)).unwrap();
    }
    std::fs::write(data.join("motd.new"), "welcome, replaced remotely\n").unwrap();
    lib
}

fn add_users(lib: &Library) {
    for (name, password, admin, grants) in USERS {
        let mut cmd = lib.command();
        cmd.args(["user", "add", name]);
        if *admin {
            cmd.arg("--admin");
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "user add {name}: {out:?}");
        for (right, pattern) in *grants {
            run(lib.command().args(["grant", name, right, "ON", pattern]));
        }
    }
}

/// A running `imagelake serve`, killed when dropped (a test that panics leaves no server).
struct Server {
    child: Child,
    uri: String,
    stderr: PathBuf,
}

impl Server {
    fn start(lib: &Library, data: &Path, ttl: &str, log: PathBuf) -> Server {
        let err = std::fs::File::create(&log).unwrap();
        let mut child = lib
            .command()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-root"])
            .arg(data)
            .args(["--token-ttl", ttl])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("imagelake serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // The first line says where it listens; the rest is drained so the server never blocks.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let mut server = Server { child, uri: String::new(), stderr: log };
        let first = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(Ok(line))) => line,
            other => panic!("serve printed no first line ({other:?}); stderr:\n{}", server.stderr_text()),
        };
        let uri = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {first:?}"));
        assert!(uri.starts_with("grpc://127.0.0.1:") && !uri.ends_with(":0"), "first line: {first:?}");
        server.uri = uri.to_string();
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM; the server must exit 0 within a few seconds.
    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let asked = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0), "serve after SIGTERM: {status}; stderr:\n{}", self.stderr_text());
                break;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(10),
                "serve still running 10 s after SIGTERM; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(5), "serve took {took:?} to stop after SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn python_clients_over_flight_sql() {
    let python = venv_python();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let lib = build_library(work.path(), &data);
    // A disk outside the data root, and a link inside it that leads out.
    std::fs::copy(work.path().join("images/db.img"), outside.join("db.img")).unwrap();
    std::os::unix::fs::symlink(&outside, data.join("escape")).unwrap();
    add_users(&lib);

    let server = Server::start(&lib, &data, "30s", work.path().join("serve.log"));
    // A second server on the same library whose tokens expire at once, for the expiry test.
    let short = Server::start(&lib, &data, "2s", work.path().join("serve-short.log"));
    let users: serde_json::Map<String, serde_json::Value> =
        USERS.iter().map(|(name, password, ..)| (name.to_string(), (*password).into())).collect();
    let started = Instant::now();
    let pytest = Command::new(&python)
        .args(["-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "--color=no"])
        .arg(".")
        // IMAGELAKE_PYTEST_ARGS="-k cancel -x" picks tests while working on them.
        .args(std::env::var("IMAGELAKE_PYTEST_ARGS").unwrap_or_default().split_whitespace())
        .current_dir(repo_root().join("tests/python"))
        .env("IMAGELAKE_FLIGHT_URI", &server.uri)
        .env("IMAGELAKE_FLIGHT_PID", server.pid().to_string())
        .env("IMAGELAKE_FLIGHT_SHORT_URI", &short.uri)
        .env("IMAGELAKE_FLIGHT_SHORT_TTL", "2")
        .env("IMAGELAKE_FLIGHT_USERS", serde_json::Value::Object(users).to_string())
        .env("IMAGELAKE_LIBRARY", lib.path())
        .env("IMAGELAKE_DATA_ROOT", &data)
        .env("IMAGELAKE_OUTSIDE", &outside)
        .env("IMAGELAKE_BIN", imagelake_tests::imagelake_bin())
        .env("IMAGELAKE_BULK_ROWS", (BULK_COPIES * (BULK_DIRS * (BULK_FILES + 1) + 2)).to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("pytest from the venv");
    let took = started.elapsed();
    let text = format!("{}{}", String::from_utf8_lossy(&pytest.stdout), String::from_utf8_lossy(&pytest.stderr));
    println!("pytest ({took:.1?}):\n{text}");
    let (log, short_log) = (server.stderr_text(), short.stderr_text());
    short.stop();
    server.stop();
    if !pytest.status.success() {
        println!("--- serve's stderr:\n{log}\n--- the short-TTL serve's stderr:\n{short_log}");
        panic!("pytest failed ({}): its output is above", pytest.status);
    }
}
