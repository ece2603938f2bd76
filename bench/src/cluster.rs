//! The cluster benchmark: library-wide questions asked of one `imagelake sql` process and of a
//! Ballista cluster (a scheduler and two executors, `imagelake cluster` processes on loopback)
//! over the same library, side by side in one run, alternating; each question asked by a
//! fresh `imagelake sql -c` process, its time from start to exit; medians reported, answers
//! compared.
//!
//! The library: the five real images of the peers' corpus and N synthetic versions made from
//! their manifests (`imagelake_tests::fleet`). On two cores the goal is the same answers, not
//! a speed-up: every process shares the same two cores.
//!
//! Run: `cargo run -p imagelake-bench --bin bench-cluster [HOSTS] [ROUNDS]`.

use imagelake_tests::cluster::{Cluster, ask};
use imagelake_tests::fleet;
use imagelake_tests::questions::readme_questions;
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Asks `sql` in a fresh process (on the cluster at `scheduler`, or alone): seconds, answer.
fn timed(library: &std::path::Path, scheduler: Option<&str>, sql: &str) -> (f64, String) {
    let started = Instant::now();
    let out = ask(library, scheduler, sql).output().expect("imagelake sql");
    let seconds = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{sql}\n{}", String::from_utf8_lossy(&out.stderr));
    (seconds, String::from_utf8(out.stdout).expect("utf-8 rows"))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("HOSTS ROUNDS are numbers"));
    let hosts = args.next().unwrap_or(1000).max(2);
    let rounds = args.next().unwrap_or(3).max(1);
    let work = tempfile::tempdir().expect("tempdir");
    let library = fleet::corpus_library(work.path(), hosts).await;
    let folder = library.folder().expect("a folder library").to_path_buf();
    let (_, hash) = timed(
        &folder,
        None,
        "SELECT content_hash FROM files WHERE path = '/usr/lib/x86_64-linux-gnu/libcrypto.so.3' \
         ORDER BY image_id LIMIT 1",
    );
    let hash = hash.lines().nth(1).expect("a libcrypto").to_string();
    let readme = readme_questions();
    let questions = [
        ("1. which images ship MySQL or MariaDB", readme[&1].clone()),
        ("2. which images contain file hash H (libcrypto.so.3)", readme[&2].replace("<hash>", &hash)),
        ("10. how are a package's versions spread", readme[&10].clone()),
        ("11. images by OS release", readme[&11].clone()),
        (
            "files, bytes and contents of every image",
            "SELECT i.name, count(*) AS files, sum(f.size) AS bytes, count(DISTINCT f.content_hash) AS contents \
             FROM files f JOIN images i USING (image_id) GROUP BY i.name ORDER BY i.name"
                .to_string(),
        ),
    ];
    let cluster = Cluster::start(&folder, 2, &[]);
    let mut times = vec![(Vec::new(), Vec::new()); questions.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for ((label, sql), (alone, distributed)) in questions.iter().zip(&mut times) {
            let (a, one) = timed(&folder, None, sql);
            let (b, many) = timed(&folder, Some(&cluster.scheduler), sql);
            assert_eq!(one, many, "one process and the cluster disagree on {label}");
            assert!(one.lines().count() > 1, "no rows for {label}");
            alone.push(a);
            distributed.push(b);
        }
    }
    println!("Library: 5 real images and {hosts} synthetic versions; {rounds} rounds, alternating.\n");
    println!("| question | one process | cluster (1 scheduler, 2 executors) | ratio |\n|---|---|---|---|");
    for ((label, _), (alone, distributed)) in questions.iter().zip(&mut times) {
        let (a, b) = (median(alone), median(distributed));
        println!("| {label} | {a:.2} s | {b:.2} s | {:.1}x |", b / a);
    }
}
