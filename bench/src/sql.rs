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
//! Run: `cargo run --release -p imagelake-bench --bin bench-sql [IMAGES] [ROUNDS]`

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use imagelake_engine::Library;
use imagelake_sql::Session;
use imagelake_tests::{cache_dir, debian_tree, mkfs_ext, repo_root, run, sh};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

// As datafusion-cli does: planning a question allocates many small objects, and mimalloc
// serves them faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The point question as the SQL issue words it; README question 1 asks the broader one.
const SHIP_MARIADB: &str = "SELECT i.name, i.version, p.version AS package_version \
     FROM images i JOIN packages p USING (image_id) \
     WHERE p.name = 'mariadb-server' ORDER BY i.name, i.version";

/// Runs of each question per engine per round.
const RUNS: usize = 10;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).expect("formatter"))
            .collect();
        rows.extend((0..b.num_rows()).map(|r| formatters.iter().map(|f| f.value(r).to_string()).collect()));
    }
    rows
}

/// The SQL of README question `n`.
fn readme_question(n: u32) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let block = readme.split(&format!("\n### {n}. ")).nth(1).expect("question in README");
    block.split("```sql\n").nth(1).and_then(|s| s.split("```").next()).expect("sql block").trim().to_string()
}

/// Makes the next host's tree from the previous one, in place.
fn next_host(tree: &Path, host: usize, hosts: usize) {
    let t = tree.display();
    sh(&format!(
        "cd '{t}' && echo host-{host:02} > etc/hostname && echo {host:032x} > etc/machine-id \
         && echo 'role=web host={host}' > etc/imagelake-host"
    ));
    if host == 1 {
        let deb = sh(&format!("ls {}/debs/less_*.deb", cache_dir().display())).trim().to_string();
        run(Command::new("dpkg")
            .arg(format!("--root={t}"))
            .arg("-i")
            .arg(deb)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"));
    }
    if host == hosts / 2 {
        // dpkg --remove would run mariadb's maintainer scripts on this machine: remove its
        // files and its status entry instead, which is what the catalog sees of a removal.
        sh(&format!(
            r#"cd '{t}' && while read -r f; do [ -d ".$f" ] || rm -f ".$f"; done < var/lib/dpkg/info/mariadb-server.list
            rm var/lib/dpkg/info/mariadb-server.*
            awk 'BEGIN {{ RS = ""; ORS = "\n\n" }} index($0, "Package: mariadb-server\n") != 1' var/lib/dpkg/status > status.new
            mv status.new var/lib/dpkg/status"#
        ));
    }
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
        let mut child = Command::new("python3")
            .arg(repo_root().join("bench/duckdb/session.py"))
            .arg(parquet)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with duckdb (scripts/install-deps.sh installs it)");
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
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("IMAGES ROUNDS are numbers"));
    let hosts = args.next().unwrap_or(8).max(2);
    let rounds = args.next().unwrap_or(5).max(1);

    let work = tempfile::tempdir().expect("tempdir");
    let tree = work.path().join("tree");
    run(Command::new("cp").arg("-a").arg(debian_tree()).arg(&tree));
    let library = Arc::new(Library::open(&work.path().join("lib")).await.expect("library"));
    let image = work.path().join("root.img");
    for host in 0..hosts {
        eprintln!("checking in host-{host:02} of {hosts}");
        if host > 0 {
            next_host(&tree, host, hosts);
        }
        mkfs_ext(&tree, &image, "ext4", "1G", &[]);
        library.checkin(&image, &format!("host-{host:02}"), Default::default()).await.expect("checkin");
    }
    std::fs::remove_file(&image).expect("rm image");
    std::fs::remove_dir_all(&tree).expect("rm tree");

    let session = Session::open(library.clone()).await.expect("session");
    let parquet = work.path().join("parquet");
    std::fs::create_dir(&parquet).expect("mkdir");
    for table in imagelake_engine::catalog::TABLES {
        let to = parquet.join(format!("{table}.parquet"));
        session.run(&format!("COPY (SELECT * FROM {table}) TO '{}'", to.display())).await.expect("export");
    }
    let less = ask(&session, "SELECT content_hash FROM files WHERE path = '/usr/bin/less' LIMIT 1").await.1;
    let questions = [
        ("which images ship mariadb-server", SHIP_MARIADB.to_string()),
        ("1. which images ship MySQL or MariaDB", readme_question(1)),
        ("2. which images contain file hash H (/usr/bin/less)", readme_question(2).replace("<hash>", &less[0][0])),
    ];

    let mut duckdb = DuckDb::start(&parquet);
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
                    let (ours_s, ours_rows) = ask(&session, &text).await;
                    let (theirs_s, theirs_rows) = duckdb.ask(sql);
                    assert_eq!(ours_rows, theirs_rows, "imagelake and DuckDB disagree on\n{text}");
                    assert!(!ours_rows.is_empty(), "no rows for\n{text}");
                    ours.push(ours_s);
                    theirs.push(theirs_s);
                }
            }
        }
    }

    println!("Library: {hosts} images; rows: ");
    for table in ["images", "files", "packages", "extents", "chunks"] {
        println!("- {table}: {}", count(&session, table).await);
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
