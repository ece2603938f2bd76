//! The Flight SQL benchmark: `imagelake serve` next to the same library in-process, in one run.
//!
//! - Point questions (bench-sql's three: which images ship mariadb-server, and the README's
//!   questions 1 and 2) answered by a long-lived `imagelake_sql::Session` in this process (as
//!   bench-sql asks them), and over Flight SQL from Python ADBC (bench/flight/client.py: a
//!   connection and a cursor reused, `execute` + `fetch_arrow_table`), each with 1 client and
//!   with 8 at once (in-process: 8 tokio tasks sharing the session; Flight: 8 client
//!   processes, each with its own connection, against one server); p50 and p99.
//! - `SELECT 1` asked the same ways, as the floor: what a statement costs around its work.
//! - The same questions from a Rust arrow-flight client, GetFlightInfo and DoGet timed apart:
//!   the server's share, without Python and the Go driver.
//! - `SELECT * FROM files` whole: rows/s in-process (streamed batch by batch, and collected),
//!   over Flight SQL into one Arrow table (ADBC) and batch by batch (the Rust client), and
//!   DuckDB's `fetch_arrow_table` over the same rows exported to Parquet; the server's peak
//!   RSS and CPU while it streams.
//!
//! The server is the release `imagelake serve` beside this binary, with an administrator
//! granted read on '*' (every image: no row filtering).
//!
//! The library: bench-sql's fleet of IMAGES real Debian images (default 8). With
//! `IMAGELAKE_BENCH_KEEP=DIR` it is built once into DIR/lib and reused by later runs.
//!
//! Run: `cargo build --release --bin imagelake && cargo run --release -p imagelake-bench
//! --bin bench-flight [IMAGES] [ROUNDS]`.

mod library;

use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::{StreamExt, TryStreamExt};
use imagelake_engine::Library;
use imagelake_sql::Session;
use imagelake_tests::{imagelake_bin, repo_root, venv_python};
use library::{SHIP_MARIADB, readme_question, real_library, rows};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs of each question per client per round.
const RUNS: usize = 40;
/// Clients at once in the concurrent case.
const CLIENTS: usize = 8;
/// Full scans per engine per round.
const SCANS: usize = 3;

const USER: &str = "bench";
const PASSWORD: &str = "bench-flight-password";
const SCAN: &str = "SELECT * FROM files";

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    // Nearest rank.
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn imagelake(library: &Path) -> Command {
    let mut cmd = Command::new(imagelake_bin());
    cmd.arg("-L").arg(library);
    cmd
}

fn check(cmd: &mut Command, stdin: Option<&str>) {
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("imagelake");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("imagelake");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `imagelake serve`, killed when dropped.
struct Server {
    child: Child,
    uri: String,
}

impl Server {
    fn start(library: &Path, data: &Path, log: &Path) -> Server {
        let mut child = imagelake(library)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-root"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("imagelake serve");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        std::thread::spawn(move || for _ in lines {});
        let uri = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("serve said {first:?}")).to_string();
        Server { child, uri }
    }

    fn status(&self, key: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>()))
            .and_then(Result::ok)
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("{key} in /proc status"))
    }

    /// User and system CPU time of the server so far.
    fn cpu_seconds(&self) -> f64 {
        let text = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("/proc stat");
        // The fields after the command's closing parenthesis; utime and stime are 14 and 15.
        let fields: Vec<&str> = text.rsplit_once(')').expect("stat").1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    /// Resets the peak RSS the kernel reports as VmHWM.
    fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").expect("clear_refs");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        end_within(&mut self.child, Duration::from_secs(5));
    }
}

/// Waits up to `time` for `child`, asked to end, to exit; then kills it.
fn end_within(child: &mut Child, time: Duration) {
    let asked = Instant::now();
    while asked.elapsed() < time {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// bench/flight/client.py: the Flight clients and DuckDB.
struct Client {
    child: Child,
    input: Option<std::process::ChildStdin>,
    output: BufReader<std::process::ChildStdout>,
    versions: serde_json::Value,
}

impl Client {
    fn start(uri: &str, parquet: &Path) -> Client {
        let mut child = Command::new(venv_python())
            .arg(repo_root().join("bench/flight/client.py"))
            .args([uri, USER, PASSWORD])
            .arg(parquet)
            .arg(CLIENTS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the venv's python (scripts/python-env.sh installs it)");
        let input = child.stdin.take().expect("stdin");
        let mut output = BufReader::new(child.stdout.take().expect("stdout"));
        let mut hello = String::new();
        output.read_line(&mut hello).expect("client starts");
        let versions = serde_json::from_str(&hello).unwrap_or_else(|e| panic!("client said {hello:?}: {e}"));
        Client { child, input: Some(input), output, versions }
    }

    fn ask(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        writeln!(self.input.as_mut().expect("stdin"), "{cmd}").expect("write to client");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("client answers");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("client: {e}: {line:?}"))
    }
}

impl Drop for Client {
    /// End of input: the client stops its Flight clients (they close their statements).
    fn drop(&mut self) {
        drop(self.input.take());
        end_within(&mut self.child, Duration::from_secs(15));
    }
}

/// Each client asks every question `RUNS` times in turn; the times of each question, pooled.
async fn in_process(session: &Arc<Session>, questions: &[String], clients: usize) -> Vec<Vec<f64>> {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (session, questions) = (session.clone(), questions.to_vec());
            tokio::spawn(async move {
                let mut times = vec![Vec::new(); questions.len()];
                for _ in 0..RUNS {
                    for (sql, times) in questions.iter().zip(&mut times) {
                        let started = Instant::now();
                        let answer = session.run(sql).await.unwrap_or_else(|e| panic!("{e}\n{sql}"));
                        times.push(started.elapsed().as_secs_f64());
                        assert!(!answer.batches.is_empty());
                    }
                }
                times
            })
        })
        .collect();
    let mut pooled = vec![Vec::new(); questions.len()];
    for task in tasks {
        for (all, times) in pooled.iter_mut().zip(task.await.expect("task")) {
            all.extend(times);
        }
    }
    pooled
}

async fn rust_login(uri: &str) -> FlightSqlServiceClient<tonic::transport::Channel> {
    let address = uri.replace("grpc://", "http://");
    // HTTP/2's default 64 KiB receive window would hold a large stream to a window update
    // per 64 KiB; grpc-go (ADBC's driver) grows its window as it measures the link.
    let channel = tonic::transport::Endpoint::new(address)
        .expect("uri")
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(16 << 20)
        .connect()
        .await
        .expect("connect");
    let mut client = FlightSqlServiceClient::new(channel);
    client.handshake(USER, PASSWORD).await.expect("handshake");
    client
}

/// The whole scan read by the Rust client, batch by batch (nothing kept); (seconds, rows).
async fn scan_rust(client: &mut FlightSqlServiceClient<tonic::transport::Channel>) -> (f64, usize) {
    let started = Instant::now();
    let info = client.execute(SCAN.to_string(), None).await.expect("GetFlightInfo");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = client.do_get(ticket).await.expect("DoGet");
    let mut rows = 0;
    while let Some(batch) = stream.try_next().await.expect("batch") {
        rows += batch.num_rows();
    }
    (started.elapsed().as_secs_f64(), rows)
}

/// User and system CPU time of this process so far.
fn own_cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// One Rust arrow-flight client (`FlightSqlServiceClient` over one tonic channel) asking each
/// question `RUNS` times on a statement it prepared once, as ADBC does: GetFlightInfo, then
/// DoGet read to the end. Per question the times of [GetFlightInfo, DoGet, both]: the
/// server's and the loopback's share of a statement, without Python and the Go driver.
async fn rust_client(uri: &str, questions: &[String]) -> Vec<[Vec<f64>; 3]> {
    let mut client = rust_login(uri).await;
    let mut all = Vec::new();
    for sql in questions {
        let mut prepared = client.prepare(sql.clone(), None).await.expect("prepare");
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..RUNS {
            let started = Instant::now();
            let info = prepared.execute().await.expect("GetFlightInfo");
            let informed = started.elapsed().as_secs_f64();
            let ticket = info.endpoint[0].ticket.clone().expect("ticket");
            let mut stream = client.do_get(ticket).await.expect("DoGet");
            let mut rows = 0;
            while let Some(batch) = stream.try_next().await.expect("batch") {
                rows += batch.num_rows();
            }
            let both = started.elapsed().as_secs_f64();
            assert!(rows > 0, "no rows over Flight for\n{sql}");
            times[0].push(informed);
            times[1].push(both - informed);
            times[2].push(both);
        }
        prepared.close().await.expect("close");
        all.push(times);
    }
    all
}

fn over_flight(
    client: &mut Client,
    questions: &[String],
    clients: usize,
    shared_cursor: bool,
    expected: &[Vec<Vec<String>>],
) -> Vec<Vec<f64>> {
    let answer = client.ask(serde_json::json!(
        {"op": "points", "questions": questions, "runs": RUNS, "clients": clients, "shared_cursor": shared_cursor}
    ));
    let theirs: Vec<Vec<Vec<String>>> = serde_json::from_value(answer["rows"].clone()).expect("rows");
    for ((ours, theirs), sql) in expected.iter().zip(&theirs).zip(questions) {
        assert_eq!(ours, theirs, "in-process and Flight SQL disagree on\n{sql}");
    }
    serde_json::from_value(answer["times"].clone()).expect("times")
}

/// The whole scan in-process, batch by batch as the server's DoGet reads it (nothing kept),
/// or collected into memory; (seconds, rows).
async fn scan_in_process(session: &Session, collect: bool) -> (f64, usize) {
    let started = Instant::now();
    let planned = session.plan(SCAN, None).await.expect("plan");
    let mut stream = planned.execute().await.expect("execute");
    let mut rows = 0;
    let mut kept = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.expect("batch");
        rows += batch.num_rows();
        if collect {
            kept.push(batch);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(kept);
    (seconds, rows)
}

fn scan_remote(client: &mut Client, op: &str) -> (f64, usize) {
    let answer = client.ask(serde_json::json!({"op": op, "sql": SCAN}));
    (answer["seconds"].as_f64().expect("seconds"), answer["rows"].as_u64().expect("rows") as usize)
}

async fn open_library(hosts: usize) -> (Arc<Library>, Option<tempfile::TempDir>) {
    match std::env::var_os("IMAGELAKE_BENCH_KEEP").map(PathBuf::from) {
        Some(dir) if dir.join("lib").exists() => {
            eprintln!("reusing the library in {}", dir.join("lib").display());
            (Arc::new(Library::open(&dir.join("lib")).await.expect("library")), None)
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).expect("mkdir");
            (real_library(&dir, hosts).await, None)
        }
        None => {
            let work = tempfile::tempdir().expect("tempdir");
            (real_library(work.path(), hosts).await, Some(work))
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("IMAGES ROUNDS are numbers"));
    let hosts = args.next().unwrap_or(8).max(2);
    let rounds = args.next().unwrap_or(5).max(1);
    let (library, _library_dir) = open_library(hosts).await;
    let work = tempfile::tempdir().expect("tempdir");

    // The user the clients log in as: an administrator who may read every image.
    let root = library.folder().expect("a folder library").to_path_buf();
    let _ = imagelake(&root).args(["user", "remove", USER]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    check(imagelake(&root).args(["user", "add", USER, "--admin"]), Some(&format!("{PASSWORD}\n")));
    check(imagelake(&root).args(["grant", USER, "read", "ON", "*"]), None);

    let session = Arc::new(Session::open(library.clone()).await.expect("session"));
    let parquet = work.path().join("files.parquet");
    session.run(&format!("COPY (SELECT * FROM files) TO '{}'", parquet.display())).await.expect("export");
    let h = rows(
        &session
            .run("SELECT content_hash FROM files WHERE path = '/usr/bin/less' ORDER BY image_id LIMIT 1")
            .await
            .expect("hash")
            .batches,
    );
    let labels = [
        "the floor: `SELECT 1` (no table, nothing to read)",
        "which images ship mariadb-server",
        "1. which images ship MySQL or MariaDB",
        "2. which images contain file hash H (/usr/bin/less)",
    ];
    let questions = vec![
        "SELECT 1".to_string(),
        SHIP_MARIADB.to_string(),
        readme_question(1),
        readme_question(2).replace("<hash>", &h[0][0]),
    ];
    let expected: Vec<_> = {
        let mut v = Vec::new();
        for sql in &questions {
            v.push(rows(&session.run(sql).await.expect("answer").batches));
        }
        v
    };

    let data = work.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let server = Server::start(&root, &data, &work.path().join("serve.log"));
    eprintln!("server at {}", server.uri);
    let mut client = Client::start(&server.uri, &parquet);

    // Per question: [in-process 1, in-process 8, Flight 1, Flight 8, Flight 1 on one cursor].
    let mut points = vec![vec![Vec::new(); 5]; questions.len()];
    // Per question: the Rust client's [GetFlightInfo, DoGet, both].
    let mut rust = vec![[Vec::new(), Vec::new(), Vec::new()]; questions.len()];
    let mut walls = [0.0f64; 5];
    // [in-process streamed, in-process collected, Flight, DuckDB, Flight to the Rust client]:
    // seconds of each scan.
    let mut scans = vec![Vec::new(); 5];
    let mut own_cpu = Vec::new();
    let mut scanner = rust_login(&server.uri).await;
    let mut total_rows = None;
    let mut peak = 0u64;
    let mut before = 0u64;
    let mut server_cpu = Vec::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (case, clients) in [(0, 1), (1, CLIENTS), (2, 1), (3, CLIENTS), (4, 1)] {
            let started = Instant::now();
            let times = if case < 2 {
                in_process(&session, &questions, clients).await
            } else {
                over_flight(&mut client, &questions, clients, case == 4, &expected)
            };
            walls[case] += started.elapsed().as_secs_f64();
            for (q, t) in times.into_iter().enumerate() {
                points[q][case].extend(t);
            }
        }
        for (q, times) in rust_client(&server.uri, &questions).await.into_iter().enumerate() {
            for (kept, t) in rust[q].iter_mut().zip(times) {
                kept.extend(t);
            }
        }
        for _ in 0..SCANS {
            let mut got = Vec::new();
            for (case, times) in scans.iter_mut().enumerate() {
                let (seconds, n) = match case {
                    0 => {
                        let cpu = own_cpu_seconds();
                        let r = scan_in_process(&session, false).await;
                        own_cpu.push(own_cpu_seconds() - cpu);
                        r
                    }
                    1 => scan_in_process(&session, true).await,
                    2 => {
                        before = before.max(server.status("VmRSS:"));
                        server.reset_peak();
                        let cpu = server.cpu_seconds();
                        let r = scan_remote(&mut client, "scan");
                        server_cpu.push(server.cpu_seconds() - cpu);
                        peak = peak.max(server.status("VmHWM:"));
                        r
                    }
                    3 => scan_remote(&mut client, "duckdb"),
                    _ => scan_rust(&mut scanner).await,
                };
                times.push(seconds);
                got.push(n);
            }
            assert!(got.iter().all(|n| *n == got[0]), "row counts differ: {got:?}");
            total_rows = Some(got[0]);
        }
    }
    let total_rows = total_rows.expect("scanned") as f64;
    let commit = Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(repo_root()).output();
    let commit = commit.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();

    println!(
        "Library: {hosts} images, {} `files` rows; commit {commit}; {rounds} rounds; adbc-driver-flightsql {}, DuckDB {}.\n",
        total_rows,
        client.versions["adbc_driver_flightsql"].as_str().unwrap_or("?"),
        client.versions["duckdb"].as_str().unwrap_or("?")
    );
    println!("Point questions: {RUNS} runs per client per round, {rounds} rounds; p50 / p99.\n");
    println!(
        "| question | in-process, 1 | Flight, 1 client | ratio p50 (p99) | in-process, {CLIENTS} at once | Flight, {CLIENTS} clients | ratio p50 (p99) |\n|---|---|---|---|---|---|---|"
    );
    let ms = |v: &[f64]| format!("{:.2} / {:.2} ms", percentile(v, 50.0) * 1e3, percentile(v, 99.0) * 1e3);
    let ratio = |a: &[f64], b: &[f64]| {
        format!(
            "**{:.2}x** ({:.2}x)",
            percentile(b, 50.0) / percentile(a, 50.0),
            percentile(b, 99.0) / percentile(a, 99.0)
        )
    };
    for (label, t) in labels.iter().zip(&points) {
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            ms(&t[0]),
            ms(&t[2]),
            ratio(&t[0], &t[2]),
            ms(&t[1]),
            ms(&t[3]),
            ratio(&t[1], &t[3])
        );
    }
    println!("\nFlight, 1 client, every question on one cursor (ADBC prepares each statement anew):\n");
    for (label, t) in labels.iter().zip(&points) {
        println!("- {label}: {} ({})", ms(&t[4]), ratio(&t[0], &t[4]));
    }
    println!(
        "\nFlight, 1 Rust arrow-flight client, a prepared statement per question; p50 / p99 of \
         GetFlightInfo, DoGet, and both (ratio to in-process, 1):\n"
    );
    for ((label, t), p) in labels.iter().zip(&rust).zip(&points) {
        println!("- {label}: {}; {}; {} ({})", ms(&t[0]), ms(&t[1]), ms(&t[2]), ratio(&p[0], &t[2]));
    }
    let answered = (RUNS * questions.len() * rounds) as f64;
    println!(
        "\nThroughput (statements/s, wall time of each case): in-process 1: {:.0}, {CLIENTS}: {:.0}; Flight 1: {:.0}, {CLIENTS}: {:.0}\n",
        answered / walls[0],
        answered * CLIENTS as f64 / walls[1],
        answered / walls[2],
        answered * CLIENTS as f64 / walls[3]
    );
    println!("`{SCAN}` ({total_rows} rows), {} runs each; medians:\n", SCANS * rounds);
    println!("| how | time | rows/s | vs in-process streamed |\n|---|---|---|---|");
    let median = |v: &[f64]| percentile(v, 50.0);
    let base = total_rows / median(&scans[0]);
    for (name, s) in [
        "in-process, streamed batch by batch",
        "in-process, collected",
        "Flight SQL, ADBC `fetch_arrow_table`",
        "DuckDB `fetch_arrow_table` over Parquet",
        "Flight SQL, Rust arrow-flight client, batch by batch",
    ]
    .iter()
    .zip(&scans)
    {
        let rate = total_rows / median(s);
        println!("| {name} | {:.1} ms | {:.0} | {:.2}x |", median(s) * 1e3, rate, rate / base);
    }
    println!(
        "\nServer RSS before a scan {:.0} MiB, peak during it {:.0} MiB; server CPU time per Flight scan {:.1} ms, \
         this process's per in-process streamed scan {:.1} ms (medians).",
        before as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        median(&server_cpu) * 1e3,
        median(&own_cpu) * 1e3
    );
    drop(client);
    drop(server);
}
