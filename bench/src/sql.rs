//! The SQL benchmark: point questions ("which images ship mariadb-server", and the README's
//! "which images ship MySQL or MariaDB" and "which images contain file hash H") over a
//! library of real checked-in Debian images, answered by a long-lived imagelake session and
//! by DuckDB reading the same tables exported to Parquet, side by side in one run,
//! alternating; medians reported.
//!
//! The fleet: the cached debootstrap tree (bookworm minbase + mariadb-server) as `host-00`,
//! then one image per host, each a copy of the one before with its own hostname, machine id
//! and host file; `less` is installed by dpkg from `host-01` on, and mariadb-server is
//! removed (its files and its status entry) from the middle of the fleet on.
//!
//! Or the fleet: the five real images of the peers' corpus and N synthetic versions made from
//! their manifests (see `fleet.rs`); the hash question then asks for a libcrypto that the
//! hosts not yet updated still ship.
//!
//! Run: `cargo run --release -p imagelake-bench --bin bench-sql [IMAGES] [ROUNDS]`, or
//! `... --bin bench-sql fleet [N] [ROUNDS]`.

mod library;

use imagelake_engine::Library;
use imagelake_sql::Session;
use imagelake_tests::{fleet, fresh_answer, repo_root, run, venv_python};
use library::{SHIP_MARIADB, readme_question, real_library, rows};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

// As datafusion-cli does: planning a question allocates many small objects, and mimalloc
// serves them faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs of each question per engine per round.
const RUNS: usize = 10;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// DuckDB in a long-lived Python process (bench/duckdb/session.py).
struct DuckDb {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
    version: String,
}

impl DuckDb {
    fn start(parquet: &Path) -> DuckDb {
        let mut child = Command::new(venv_python())
            .arg(repo_root().join("bench/duckdb/session.py"))
            .arg(parquet)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the venv's python with duckdb (scripts/python-env.sh installs it)");
        let input = child.stdin.take().expect("stdin");
        let mut output = BufReader::new(child.stdout.take().expect("stdout"));
        let mut hello = String::new();
        output.read_line(&mut hello).expect("duckdb session starts");
        let hello: serde_json::Value = serde_json::from_str(&hello).expect("duckdb version line");
        let version = hello["duckdb"].as_str().expect("version").to_string();
        DuckDb { child, input, output, version }
    }

    fn ask(&mut self, sql: &str) -> (f64, Vec<Vec<String>>) {
        writeln!(self.input, "{}", serde_json::Value::from(sql)).expect("write to duckdb");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("duckdb answers");
        let answer: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("duckdb: {e}: {line}"));
        let rows = answer["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r.as_array().expect("row").iter().map(|c| c.as_str().expect("cell").to_string()).collect())
            .collect();
        (answer["seconds"].as_f64().expect("seconds"), rows)
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ask(session: &Session, sql: &str) -> (f64, Vec<Vec<String>>) {
    let started = Instant::now();
    let answer = session.run(sql).await.unwrap_or_else(|e| panic!("imagelake: {e}\n{sql}"));
    (started.elapsed().as_secs_f64(), rows(&answer.batches))
}

async fn count(session: &Session, table: &str) -> String {
    ask(session, &format!("SELECT count(*) FROM {table}")).await.1[0][0].clone()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let is_fleet = args.first().is_some_and(|a| a == "fleet");
    if is_fleet {
        args.remove(0);
    }
    let mut args = args.iter().map(|a| a.parse::<usize>().expect("IMAGES ROUNDS are numbers"));
    let hosts = args.next().unwrap_or(if is_fleet { 10_000 } else { 8 }).max(2);
    let rounds = args.next().unwrap_or(5).max(1);
    let work = tempfile::tempdir().expect("tempdir");
    let (library, hash_of) = if is_fleet {
        (fleet::corpus_library(work.path(), hosts).await, "/usr/lib/x86_64-linux-gnu/libcrypto.so.3")
    } else {
        (real_library(work.path(), hosts).await, "/usr/bin/less")
    };
    let session = Session::open(library.clone()).await.expect("session");
    let parquet = work.path().join("parquet");
    std::fs::create_dir(&parquet).expect("mkdir");
    for table in imagelake_engine::catalog::TABLES {
        let to = parquet.join(format!("{table}.parquet"));
        session.run(&format!("COPY (SELECT * FROM {table}) TO '{}'", to.display())).await.expect("export");
    }
    let h =
        ask(&session, &format!("SELECT content_hash FROM files WHERE path = '{hash_of}' ORDER BY image_id LIMIT 1"))
            .await
            .1;
    let questions = [
        ("which images ship mariadb-server", SHIP_MARIADB.to_string()),
        ("1. which images ship MySQL or MariaDB", readme_question(1)),
        (
            if is_fleet {
                "2. which images contain file hash H (libcrypto.so.3 before the updates)"
            } else {
                "2. which images contain file hash H (/usr/bin/less)"
            },
            readme_question(2).replace("<hash>", &h[0][0]),
        ),
    ];
    questions_side_by_side(&session, &parquet, &library, &questions, hosts, rounds).await;
}

async fn questions_side_by_side(
    session: &Session,
    parquet: &Path,
    library: &Library,
    questions: &[(&str, String)],
    hosts: usize,
    rounds: usize,
) {
    let mut duckdb = DuckDb::start(parquet);
    // Per question: imagelake asked the same text again (its optimized plan kept), imagelake
    // asked a text it has never seen (a fresh comment), and DuckDB after each, so that every
    // run of one engine follows a run of the other.
    let mut times = vec![(Vec::new(), Vec::new(), Vec::new()); questions.len()];
    let mut fresh = 0;
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for ((_, sql), (again, new, theirs)) in questions.iter().zip(&mut times) {
            for _ in 0..RUNS {
                fresh += 1;
                for (text, ours) in [(sql.clone(), &mut *again), (format!("{sql} -- run {fresh}"), &mut *new)] {
                    let (ours_s, ours_rows) = ask(session, &text).await;
                    let (theirs_s, theirs_rows) = duckdb.ask(sql);
                    assert_eq!(ours_rows, theirs_rows, "imagelake and DuckDB disagree on\n{text}");
                    assert!(!ours_rows.is_empty(), "no rows for\n{text}");
                    ours.push(ours_s);
                    theirs.push(theirs_s);
                }
            }
        }
    }

    // Each question once more in a process of its own, for the memory answering it takes.
    let folder = library.folder().expect("a folder library");
    let peaks: Vec<(f64, u64)> = questions.iter().map(|(_, sql)| fresh_answer(folder, sql)).collect();
    let catalog = run(Command::new("du").arg("-sb").arg(library.folder().expect("a folder library").join("catalog")));
    let catalog: u64 = catalog.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let images: usize = count(session, "images").await.parse().unwrap_or(1);
    println!(
        "Catalog: {:.1} MiB on disk, {:.1} KiB per image version.\n",
        catalog as f64 / 1048576.0,
        catalog as f64 / 1024.0 / images.max(1) as f64
    );
    for ((label, _), (seconds, peak)) in questions.iter().zip(&peaks) {
        println!(
            "- {label}: a fresh `imagelake sql -c` process answers in {seconds:.2} s with a peak of {:.0} MiB",
            *peak as f64 / 1048576.0
        );
    }
    println!();
    println!("Library: {hosts} images; rows: ");
    for table in ["images", "files", "packages", "extents", "chunks"] {
        println!("- {table}: {}", count(session, table).await);
    }
    println!("\nDuckDB {}; {rounds} rounds of {RUNS} runs each, alternating.\n", duckdb.version);
    println!(
        "| question | imagelake, asked again | imagelake, new text | DuckDB | ratio again | ratio new |\n\
         |---|---|---|---|---|---|"
    );
    for ((label, _), (again, new, theirs)) in questions.iter().zip(&mut times) {
        let (a, n, d) = (median(again), median(new), median(theirs));
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}x | {:.2}x |",
            a * 1e3,
            n * 1e3,
            d * 1e3,
            a / d,
            n / d
        );
    }
}
