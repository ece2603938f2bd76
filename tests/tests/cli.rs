//! The `imagelake` command's contract with scripts: exit statuses by kind of failure (2 a
//! usage or user error, 3 a bad input image, 1 a problem the command reports), and a closed
//! standard output (`| head -1`) as a quiet success.

use imagelake_tests::{Library, attempt, run, small_library};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_and_user_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::new();
    let out = attempt(lib.command().args(["checkout", "nosuch@1"]).arg(dir.path().join("x")));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).starts_with("error: ") && stderr(&out).contains("nosuch@1"), "{out:?}");
    assert!(!dir.path().join("x").exists());

    // clap's own errors, and a bad request the command line checks itself.
    let out = attempt(lib.command().args(["checkout", "--no-such-flag"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = attempt(lib.command().args(["set-meta", "small", "/etc/motd"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("give --mode, --uid or --gid"), "{out:?}");
    let out = attempt(lib.command().args(["sql", "/nonexistent/script.sql"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // A library URL this build cannot serve is refused by name, not made a folder of that
    // name ("s3:" or "gs:") in the working directory.
    for url in ["gs://images/factory", "s3://Bad_Bucket/x"] {
        let out = attempt(
            Command::new(imagelake_tests::imagelake_bin())
                .current_dir(dir.path())
                .args(["-L", url, "sql", "-c", "SELECT 1"]),
        );
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(stderr(&out).contains(url), "{out:?}");
    }
    // A bucket that cannot be reached is an I/O error that names it, after the client's
    // retries (its endpoint a loopback port nobody listens on).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = attempt(
        Command::new(imagelake_tests::imagelake_bin())
            .current_dir(dir.path())
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{closed}"))
            .envs([("AWS_ALLOW_HTTP", "true"), ("AWS_REGION", "us-east-1")])
            .envs([("AWS_ACCESS_KEY_ID", "nobody"), ("AWS_SECRET_ACCESS_KEY", "nothing")])
            .args(["-L", "s3://images/factory", "sql", "-c", "SELECT 1"]),
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(stderr(&out).contains("s3://images/factory/imagelake.json"), "{out:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was created");
}

/// 1 MiB of bytes with neither a partition table nor a filesystem (a fixed xorshift stream,
/// so that the 0x55AA of an MBR cannot turn up by chance).
fn noise(path: &Path) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut bytes = Vec::with_capacity(1 << 20);
    while bytes.len() < 1 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes[510] = 0;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_bad_image_exits_3_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lib = small_library(dir.path(), "small");
    let random = dir.path().join("random.img");
    noise(&random);
    let out = attempt(lib.command().arg("checkin").arg(&random).args(["--name", "random"]));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stderr(&out).starts_with("error: ") && stderr(&out).contains("random.img"), "{out:?}");

    // A qcow2 cut short: its clusters lie past the end of the file.
    let qcow2 = dir.path().join("cut.qcow2");
    run(Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(dir.path().join("small.img")).arg(&qcow2));
    let len = std::fs::metadata(&qcow2).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&qcow2).unwrap().set_len(len / 2).unwrap();
    let out = attempt(lib.command().arg("checkin").arg(&qcow2).args(["--name", "cut"]));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stderr(&out).contains("truncated"), "{out:?}");

    let names = lib.sql("SELECT name FROM images ORDER BY name");
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn a_problem_the_command_reports_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let lib = small_library(dir.path(), "small");
    // A failed statement is the script's problem, whatever failed under it.
    let out = attempt(lib.command().args(["sql", "-c", "SELECT * FROM ls('nosuch', '/')"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = attempt(lib.command().args(["check"]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// Reads the first `n` bytes of the command's output and closes the pipe, as `| head -c N`
/// does (`head -1` would read all of the JSON format's one line).
fn head(cmd: &mut Command, n: usize) -> (String, Output) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = vec![0; n];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let mut err = Vec::new();
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    let status = child.wait().unwrap();
    (String::from_utf8_lossy(&first).into_owned(), Output { status, stdout: Vec::new(), stderr: err })
}

#[test]
fn a_closed_standard_output_is_a_quiet_success() {
    let lib = Library::new();
    // Far more output than a pipe holds, so that the writes after `head` left fail.
    for (format, first) in [("table", "+"), ("csv", "value"), ("json", "[{"), ("line", "value = 1")] {
        let (line, out) = head(
            lib.command().args(["sql", "--format", format, "-c", "SELECT * FROM generate_series(1,100000)"]),
            first.len(),
        );
        assert_eq!(line, first, "{format}");
        assert_eq!(out.status.code(), Some(0), "{format}: {out:?}");
        assert!(out.stderr.is_empty(), "{format}: {}", stderr(&out));
    }

    // A summary printed into a pipe already closed.
    for args in [&["check"][..], &["sql", "-c", "SELECT 1; SELECT 2"], &["log", "nosuch"]] {
        let mut child = lib.command().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = child.wait().unwrap();
        if args[0] == "log" {
            // An error is still an error: the pipe was never written.
            assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        } else {
            assert_eq!(status.code(), Some(0), "{args:?}: {err}");
            assert!(err.is_empty(), "{args:?}: {err}");
        }
    }
}
