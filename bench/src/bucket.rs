//! A library on object storage next to one in a folder: the five-image corpus
//! (`bench/corpus.sh`) checked in, checked out and asked a point question (README's first) in
//! a local folder and under a bucket prefix on the S3-compatible server the tests run
//! (SeaweedFS on loopback), image by image, in one run. For each command on the bucket: its
//! wall time next to the folder's, and the requests it sent (the count its trace ends with,
//! every retry included), with the packs it published and the table commits it made, which
//! bound a checkin's requests. Every checkout is compared with its original by `cmp`.
//!
//! Run: `cargo build --release --bin imagelake && cargo run --release -p imagelake-bench --bin bench-bucket [ROUNDS]`
//! (the request counts do not depend on the build; the times do).

use imagelake_engine::storage::{Bucket, S3Settings};
use imagelake_tests::s3::{self, S3Server};
use imagelake_tests::{assert_same_bytes, cache_dir, imagelake_bin, measure, repo_root, run};
use std::path::{Path, PathBuf};
use std::process::Command;

const IMAGES: [&str; 5] = ["base", "nginx", "curl", "mariadb", "postgresql"];
/// README's first question.
const QUESTION: &str = "SELECT i.name, i.version, p.name AS package, p.version AS package_version \
     FROM images i JOIN packages p USING (image_id) \
     WHERE p.name LIKE 'mariadb-server%' OR p.name LIKE 'mysql-server%' \
     ORDER BY i.name, i.version, package";

/// One command's run: wall seconds and the requests its trace counted (0 on a folder).
struct Ran {
    seconds: f64,
    requests: u64,
    stdout: String,
    /// Its trace: each phase with the requests sent by its end.
    trace: String,
}

/// Runs `cmd` traced, asserting success.
fn ran(cmd: &mut Command) -> Ran {
    let m = measure(cmd.env("IMAGELAKE_TRACE", "1"), None);
    assert!(m.status.success(), "{cmd:?} failed ({}):\n{}", m.status, m.stderr);
    // "trace  12.345 s  requests 81: 40 GET, ..."
    let requests =
        m.stderr.lines().find_map(|line| line.split_once("requests ")?.1.split(':').next()?.parse().ok()).unwrap_or(0);
    Ran { seconds: m.usage.wall_seconds, requests, stdout: m.stdout, trace: m.stderr }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Packs under the bucket library, and the sum of its tables' newest version numbers (each
/// commit adds one; a cleanup removes old manifests, never a number).
fn objects(bucket: &Bucket) -> (usize, u64) {
    let packs = bucket.list("packs").unwrap().len();
    let mut newest: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for object in bucket.list("catalog").unwrap() {
        let Some((table, manifest)) = object.key.split_once(".lance/_versions/") else { continue };
        let Some(named) = manifest.strip_suffix(".manifest").and_then(|v| v.parse::<u64>().ok()) else { continue };
        // Lance's V2 manifest names are u64::MAX - version, so that the newest sorts first.
        let version = if named > u64::MAX / 2 { u64::MAX - named } else { named };
        let entry = newest.entry(table.to_string()).or_default();
        *entry = (*entry).max(version);
    }
    (packs, newest.values().sum())
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let corpus =
        PathBuf::from(run(Command::new("bash").arg(repo_root().join("bench/corpus.sh")).arg(cache_dir())).trim());
    let server = S3Server::start();
    let work = tempfile::tempdir().unwrap();
    let folder = work.path().join("library");
    let url = server.url("bench");
    let settings = (server.env().into_iter())
        .fold(S3Settings::default(), |settings, (key, value)| settings.with(&key.to_ascii_lowercase(), &value));
    let bucket = Bucket::open(&settings, s3::BUCKET, "bench").unwrap();
    let cli = |library: &Path| {
        let mut cmd = Command::new(imagelake_bin());
        cmd.arg("-L").arg(library).envs(server.env()).env("IMAGELAKE_SCRATCH", work.path().join("scratch"));
        cmd
    };
    let on_bucket = PathBuf::from(&url);

    println!(
        "| image | checkin, folder | checkin, bucket | bucket / folder | requests | packs published | table commits |"
    );
    println!("|---|---|---|---|---|---|---|");
    let (mut checkin_requests, mut phases) = (0, String::new());
    for name in IMAGES {
        let disk = corpus.join(format!("{name}.raw"));
        let local = ran(cli(&folder).arg("checkin").arg(&disk).args(["--name", name]));
        let (packs, commits) = objects(&bucket);
        let remote = ran(cli(&on_bucket).arg("checkin").arg(&disk).args(["--name", name]));
        let (packs_after, commits_after) = objects(&bucket);
        checkin_requests += remote.requests;
        if name == "nginx" {
            phases = remote.trace.clone();
        }
        println!(
            "| {name} | {:.2} s | {:.2} s | {:.2}x | {} | {} | {} |",
            local.seconds,
            remote.seconds,
            remote.seconds / local.seconds,
            remote.requests,
            packs_after - packs,
            commits_after - commits
        );
    }
    println!("\nall five checkins: {checkin_requests} requests; nginx's, phase by phase:\n\n```text\n{phases}```\n");

    println!("| image | checkout, folder | checkout, bucket | bucket / folder | requests |");
    println!("|---|---|---|---|---|");
    for name in IMAGES {
        let disk = corpus.join(format!("{name}.raw"));
        let out = work.path().join("out.raw");
        let (mut local, mut remote, mut requests) = (Vec::new(), Vec::new(), 0);
        for round in 0..rounds {
            let _ = std::fs::remove_file(&out);
            local.push(ran(cli(&folder).args(["checkout", name]).arg(&out)).seconds);
            let _ = std::fs::remove_file(&out);
            let r = ran(cli(&on_bucket).args(["checkout", name]).arg(&out));
            if round == 0 {
                assert_same_bytes(&disk, &out);
            }
            remote.push(r.seconds);
            requests = r.requests;
        }
        let (local, remote) = (median(&mut local), median(&mut remote));
        println!("| {name} | {local:.2} s | {remote:.2} s | {:.2}x | {requests} |", remote / local);
    }

    let (mut local, mut remote, mut requests) = (Vec::new(), Vec::new(), 0);
    let mut answers = Vec::new();
    for _ in 0..rounds.max(5) {
        let l = ran(cli(&folder).args(["sql", "--format", "json", "-c", QUESTION]));
        let r = ran(cli(&on_bucket).args(["sql", "--format", "json", "-c", QUESTION]));
        answers.push((l.stdout, r.stdout));
        local.push(l.seconds);
        remote.push(r.seconds);
        requests = r.requests;
    }
    assert!(answers.iter().all(|(l, r)| l == r), "the bucket's answer is the folder's");
    let (local, remote) = (median(&mut local), median(&mut remote));
    println!(
        "\nREADME question 1 (a whole process each): folder {local:.2} s, bucket {remote:.2} s ({:.2}x), {requests} requests",
        remote / local
    );
}
