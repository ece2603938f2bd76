//! `imagelake sql` as a person uses it: the shell in a real pseudo-terminal (typing, Tab
//! completion, history across restarts, Ctrl-C during a long query, errors that keep the
//! shell, `.mode` and `.output`), and scripts from a file, `-c` and standard input.

use imagelake_tests::{Library, small_library};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any expected output may take (a debug build starting DataFusion is not quick).
const WAIT: Duration = Duration::from_secs(30);
const UP: &str = "\x1b[A";
const TAB: &str = "\t";
const CTRL_C: &str = "\x03";
const CTRL_D: &str = "\x04";

/// A process on the slave side of a pseudo-terminal, and what it has written so far.
struct Terminal {
    master: std::fs::File,
    child: Child,
    screen: Arc<(Mutex<Vec<u8>>, Condvar)>,
    /// How much of the cleaned output `expect` has consumed.
    seen: usize,
}

impl Terminal {
    /// Starts `imagelake sql` on a new terminal of 250 columns, with its history in `history`.
    fn shell(lib: &Library, history: &Path) -> Terminal {
        let mut cmd = lib.command();
        cmd.arg("sql").env("IMAGELAKE_HISTORY", history).env("TERM", "xterm");
        Terminal::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Terminal {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize { ws_row: 50, ws_col: 250, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two descriptors, which are owned from here on.
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // A session of its own with the terminal as its controlling one, so that
                // Ctrl-C on it sends SIGINT as on a real terminal.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        drop(cmd); // closes our copies of the slave side: reads end when the child exits
        let screen = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let mut reader = master.try_clone().unwrap();
        let shared = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                let (lock, ready) = &*shared;
                lock.lock().unwrap().extend_from_slice(&buf[..n]);
                ready.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        Terminal { master, child, screen, seen: 0 }
    }

    fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Everything written so far, without escape sequences and carriage returns.
    fn text(&self) -> String {
        clean(&self.screen.0.lock().unwrap())
    }

    /// Waits until `pattern` appears after what earlier calls consumed; returns what came
    /// before it.
    fn expect(&mut self, pattern: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let (lock, ready) = &*self.screen;
        let mut bytes = lock.lock().unwrap();
        loop {
            let text = clean(&bytes);
            if let Some(i) = text[self.seen..].find(pattern) {
                let before = text[self.seen..self.seen + i].to_string();
                self.seen += i + pattern.len();
                return before;
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "no {pattern:?} within {WAIT:?}; after what was expected before, the terminal shows:\n{}",
                    &text[self.seen..]
                );
            }
            bytes = ready.wait_timeout(bytes, deadline - now).unwrap().0;
        }
    }

    /// Types a line after the prompt has appeared.
    fn line(&mut self, text: &str) {
        self.expect("imagelake> ");
        self.send(text);
        self.send("\r");
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the shell did not exit; it shows:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Terminal output as text: CSI and OSC sequences and carriage returns removed. An
/// unfinished sequence at the end is left out until it is complete.
fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' | '\x07' => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn typing_completion_and_errors_in_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let lib = small_library(dir.path(), "webserver");
    let mut term = Terminal::shell(&lib, &dir.path().join("history"));
    term.expect(".help");

    // A table name, then an image name inside a string (its closing quote added).
    term.expect("imagelake> ");
    term.send(&format!("SELECT count(*) AS n FROM ima{TAB}"));
    term.expect("FROM images");
    term.send(&format!(" WHERE name = 'webs{TAB}"));
    term.expect("'webserver'");
    term.send(";\r");
    assert!(term.expect("1 row").contains("| 1 "), "{}", term.text());

    // A column name.
    term.expect("imagelake> ");
    term.send(&format!("SELECT virtual_s{TAB}"));
    term.expect("virtual_size");
    term.send(" AS bytes FROM images;\r");
    assert!(term.expect("1 row").contains("| 8388608 "), "{}", term.text());

    // A meta-command, then its argument.
    term.expect("imagelake> ");
    term.send(&format!(".sch{TAB}"));
    term.expect(".schema");
    term.send(&format!(" ima{TAB}"));
    term.expect(".schema images");
    term.send("\r");
    let schema = term.expect("rows");
    assert!(schema.contains("| virtual_size ") && schema.contains("| Int64 "), "{schema}");

    // A syntax error says where, and the shell goes on.
    term.line("SELEC 1;");
    term.expect("error: ");
    let error = term.expect("\n");
    assert!(error.starts_with("line 1, column 1: syntax error") && error.contains("SELEC"), "{error}");
    term.line("SELECT 40 + 2 AS answer;");
    assert!(term.expect("1 row").contains("| 42 "), "{}", term.text());

    // A statement over two lines, with a ';' in a string; two statements on one line.
    term.line("SELECT 'a;b' AS s,");
    term.expect("      ..> ");
    term.send("  6 * 7 AS p;\r");
    let result = term.expect("1 row");
    assert!(result.contains("| a;b | 42 |"), "{result}");
    term.line("SELECT 1 AS one; SELECT 2 AS two;");
    assert!(term.expect("1 row").contains("| one |"), "{}", term.text());
    assert!(term.expect("1 row").contains("| two |"), "{}", term.text());

    // A planning error and an unknown meta-command keep the shell too.
    term.line("SELECT nope FROM images;");
    term.expect("error: ");
    assert!(term.expect("\n").contains("nope"), "{}", term.text());
    term.line(".frob");
    term.expect("error: unknown command .frob (.help lists the commands)");

    // Ctrl-D leaves.
    term.expect("imagelake> ");
    term.send(CTRL_D);
    assert!(term.wait().success());
}

#[test]
fn history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let lib = small_library(dir.path(), "webserver");
    let history = dir.path().join("history");
    let mut term = Terminal::shell(&lib, &history);
    term.line("SELECT 6 * 7");
    term.expect("      ..> ");
    term.send("  AS remembered;\r");
    assert!(term.expect("1 row").contains("| 42 "), "{}", term.text());
    term.line(".quit");
    assert!(term.wait().success());
    drop(term);
    let saved = std::fs::read_to_string(&history).unwrap();
    assert!(saved.contains("SELECT 6 * 7") && saved.contains("AS remembered;"), "{saved}");

    // Up recalls `.quit`, Up again the two-line statement; Enter runs it.
    let mut term = Terminal::shell(&lib, &history);
    term.expect("imagelake> ");
    term.send(UP);
    term.expect(".quit");
    term.send(UP);
    term.expect("AS remembered;");
    term.send("\r");
    assert!(term.expect("1 row").contains("| 42 "), "{}", term.text());
    term.expect("imagelake> ");
    assert!(term.child.try_wait().unwrap().is_none(), "the shell left: {}", term.text());
}

/// User and system CPU time of a process so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after "(comm)": state is the 1st, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn ctrl_c_cancels_a_running_query_and_clears_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let lib = small_library(dir.path(), "webserver");
    let mut term = Terminal::shell(&lib, &dir.path().join("history"));
    // Ten trillion rows: hours, not seconds.
    term.line("SELECT count(*) AS n FROM range(0, 10000000000000) WHERE value % 7 = 3;");
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    term.send(CTRL_C);
    term.expect("query cancelled");
    assert!(sent.elapsed() < Duration::from_secs(5), "cancelling took {:?}", sent.elapsed());
    // The query stopped, not just its wait: the shell idles.
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_seconds(term.child.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_seconds(term.child.id()) - before;
    assert!(used < 0.3, "the cancelled query still runs: {used:.2} s of CPU in 1 s");
    term.line("SELECT 1 + 1 AS after;");
    assert!(term.expect("1 row").contains("| 2 "), "{}", term.text());

    // Ctrl-C at the prompt drops what was typed; the shell stays.
    term.expect("imagelake> ");
    term.send("SELECT 'never run' AS dropped");
    term.expect("AS dropped");
    term.send(CTRL_C);
    term.line("SELECT 3 AS kept;");
    let result = term.expect("1 row");
    assert!(result.contains("| 3 ") && !result.contains("| dropped"), "{result}");
    // So does Ctrl-C on a continuation line: the statement begun is dropped.
    term.line("SELECT 'half' AS h,");
    term.expect("      ..> ");
    term.send(CTRL_C);
    term.line("SELECT 4 AS whole;");
    let result = term.expect("1 row");
    assert!(result.contains("| 4 ") && !result.contains("half |"), "{result}");
}

#[test]
fn modes_output_file_timer_and_meta_commands() {
    let dir = tempfile::tempdir().unwrap();
    let lib = small_library(dir.path(), "webserver");
    let mut term = Terminal::shell(&lib, &dir.path().join("history"));
    term.line(".mode csv");
    term.line("SELECT 1 AS a, 'x' AS b;");
    term.expect("a,b\n1,x\n");
    term.line(".mode line");
    term.line("SELECT 1 AS a, 22 AS bbb UNION ALL SELECT 3, 44 ORDER BY a;");
    term.expect("  a = 1\nbbb = 22\n\n  a = 3\nbbb = 44\n");
    term.line(".mode json");
    term.line("SELECT 5 AS j;");
    term.expect("[{\"j\":5}]");
    term.line(".mode html");
    term.expect("error: unknown mode 'html'");
    term.line(".mode table");

    let file = dir.path().join("results.txt");
    term.line(&format!(".output {}", file.display()));
    term.line("SELECT 'to the file' AS f;");
    term.line("SELECT 'also to the file' AS f2;");
    term.line(".output");
    term.line("SELECT 'on screen' AS g;");
    assert!(term.expect("1 row").contains("| on screen |"), "{}", term.text());
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(written.contains("| to the file |") && written.contains("| also to the file |"), "{written}");
    assert!(!written.contains("on screen"), "{written}");
    assert!(!term.text().contains("| to the file |"), "{}", term.text());

    term.line(".timer on");
    term.line("SELECT 1 AS t;");
    term.expect("Run Time: ");
    term.line(".timer off");

    term.line(".images");
    let images = term.expect("1 row");
    assert!(images.contains("| name ") && images.contains("| created_at ") && images.contains("| os "), "{images}");
    assert!(images.contains("| webserver | 1 "), "{images}");
    term.line(".tables");
    let tables = term.expect("rows");
    for table in ["images", "partitions", "files", "packages", "extents", "chunks", "provenance"] {
        assert!(tables.contains(&format!("| {table} ")), "{tables}");
    }
    term.line(".schema nosuch");
    term.expect("error: no table named nosuch (.tables lists them)");
    term.line(".help");
    term.expect(".output [FILE]");
    term.line(".exit");
    assert!(term.wait().success());
}

fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn scripts_from_a_file_command_line_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let lib = small_library(dir.path(), "webserver");
    let script = write_script(
        dir.path(),
        "good.sql",
        "-- two statements and a meta-command\nSELECT 40 + 2 AS answer;\n.mode csv\nSELECT name, version\n  FROM images; SELECT 'x;y' AS s;\n",
    );
    let out = lib.command().arg("sql").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("| 42 ") && stdout.contains("name,version\nwebserver,1\n") && stdout.contains("s\nx;y\n"),
        "{stdout}"
    );

    // Several statements in -c; the last may go without its ';'.
    let out = lib.command().args(["sql", "--format", "line", "-c", "SELECT 1 AS a; SELECT 2 AS b"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a = 1\nb = 2\n");

    // A statement that returns nothing prints nothing; a query without rows, its columns.
    let out = lib
        .command()
        .args(["sql", "--format", "csv", "-c", "CREATE VIEW v AS SELECT 1 AS one;\nSELECT * FROM v WHERE one = 2;"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n");

    // Standard input that is not a terminal is a script.
    let mut child = lib
        .command()
        .args(["sql", "--format", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"SELECT 5 AS five;\nSELECT 6 AS six;\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "five\n5\nsix\n6\n");
}

#[test]
fn a_script_stops_at_its_first_error_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let lib = small_library(dir.path(), "webserver");
    let bad =
        write_script(dir.path(), "bad.sql", "SELECT 1 AS fine;\n\nSELECT nope\n  FROM images;\nSELECT 2 AS never;\n");
    let out = lib.command().arg("sql").arg(&bad).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.starts_with("error: ") && stderr.contains("bad.sql, line 3") && stderr.contains("nope"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stdout.contains("| fine |") && !stdout.contains("never"), "{stdout}");

    // A syntax error names its line and column in the script.
    let syntax = write_script(dir.path(), "syntax.sql", "SELECT 1;\n-- then\n  SELEC 2;\n");
    let out = lib.command().arg("sql").arg(&syntax).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("syntax.sql, line 3, column 3: syntax error"), "{stderr}");

    // An unknown meta-command too.
    let meta = write_script(dir.path(), "meta.sql", "SELECT 1;\n.frob\n");
    let out = lib.command().arg("sql").arg(&meta).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("meta.sql, line 2: unknown command .frob"), "{stderr}");
}
