//! What the tests that talk to `imagelake serve` share (tests/serve.rs, tests/flight.rs,
//! tests/notebooks.rs):
//! trees written from (path, content) lists, a `dpkg` status database, users and grants made
//! with the command line, and the server itself, started on a free port and stopped with
//! SIGTERM.

use crate::{Library, run};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A user: name, password, whether `--admin`, and grants (right, pattern).
pub type User<'a> = (&'a str, &'a str, bool, &'a [(&'a str, &'a str)]);

/// A `dpkg` status database in its documented format.
pub fn dpkg_status(packages: &[(&str, &str)]) -> String {
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
pub fn tree<C: AsRef<[u8]>>(root: &Path, files: &[(&str, C)]) {
    for (path, content) in files {
        let at = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, content).unwrap();
    }
}

/// Debian 12's `/etc/os-release`, shortened.
pub fn os_release() -> String {
    "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n".into()
}

/// Adds each user with `imagelake user add` (the password on standard input) and their grants
/// with `imagelake grant`.
pub fn add_users(lib: &Library, users: &[User]) {
    for (name, password, admin, grants) in users {
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
pub struct Server {
    child: Child,
    /// Where it listens, as it printed it: `grpc://127.0.0.1:PORT`.
    pub uri: String,
    stderr: PathBuf,
}

impl Server {
    /// `imagelake serve --listen 127.0.0.1:0 --data-root DATA [--token-ttl TTL]`, its standard
    /// error into `log`; returns once it printed where it listens.
    pub fn start(lib: &Library, data: &Path, ttl: Option<&str>, log: PathBuf) -> Server {
        let mut args = vec!["--data-root".into(), data.as_os_str().to_owned()];
        if let Some(ttl) = ttl {
            args.extend(["--token-ttl".into(), ttl.into()]);
        }
        Server::with_args(lib, &args, log)
    }

    /// `imagelake serve --listen 127.0.0.1:0 ARGS...`, its standard error into `log`; returns
    /// once it printed where it listens (`grpc://` or, with TLS, `grpc+tls://`).
    pub fn with_args(lib: &Library, args: &[std::ffi::OsString], log: PathBuf) -> Server {
        let err = std::fs::File::create(&log).unwrap();
        let mut cmd = lib.command();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err).spawn().expect("imagelake serve");
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
        let address = uri.strip_prefix("grpc://").or_else(|| uri.strip_prefix("grpc+tls://"));
        assert!(address.is_some_and(|a| a.starts_with("127.0.0.1:") && !a.ends_with(":0")), "first line: {first:?}");
        server.uri = uri.to_string();
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM; the server must exit 0 within a few seconds.
    pub fn stop(mut self) {
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
