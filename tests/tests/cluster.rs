//! Library-wide SQL on a Ballista cluster: one scheduler and two executors, each an
//! `imagelake cluster` process on loopback over the same library, answer every README
//! question and the fleet's questions exactly as one `imagelake sql` process does; an executor
//! killed in the middle of a question gives a clean error or the right answer, never a wrong
//! one, and the cluster answers again with the executor left.
//!
//! The cluster's processes run with `IMAGELAKE_KEEP_ROWS=0`: every catalog table is read
//! through Lance (fragments read at the planned table version in the executors, versions of
//! segments looked up as rows come), while the one process it is compared with keeps the
//! small tables in memory, as a small library does: two different paths to one answer.

use imagelake_engine::catalog::Maintenance;
use imagelake_tests::cluster::{Cluster, ask};
use imagelake_tests::fleet;
use imagelake_tests::questions::{self, readme_questions};
use std::path::Path;
use std::time::{Duration, Instant};

/// The rows one process answers `sql` with (it must answer).
fn one_process(library: &Path, sql: &str) -> String {
    let out = ask(library, None, sql).output().unwrap();
    assert!(out.status.success(), "{sql}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn assert_same_answer(cluster: &Cluster, label: &str, sql: &str) -> usize {
    let expected = one_process(&cluster.library, sql);
    let out = cluster.ask(sql);
    assert!(out.status.success(), "{label} on the cluster: {}\n{sql}", String::from_utf8_lossy(&out.stderr));
    let answer = String::from_utf8(out.stdout).unwrap();
    assert_eq!(answer, expected, "{label}: the cluster and one process disagree\n{sql}");
    expected.lines().count() - 1
}

/// A fleet-wide question that takes the cluster a few seconds: every file row of every version.
const FILES_BY_IMAGE: &str = "SELECT i.name, count(*) AS files, sum(f.size) AS bytes, \
     count(DISTINCT f.content_hash) AS contents \
     FROM files f JOIN images i USING (image_id) GROUP BY i.name ORDER BY i.name";

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_answers_as_one_process_and_survives_a_killed_executor() {
    let dir = tempfile::tempdir().unwrap();
    let (library, trees) = questions::library(dir.path()).await;
    let folder = dir.path().join("lib");
    let cluster = Cluster::start(&folder, 2, &[("IMAGELAKE_KEEP_ROWS", "0")]);

    // The plan crosses processes: stages for the executors, catalog tables read as fragments.
    let explain = cluster.ask("EXPLAIN SELECT path, count(*) FROM files GROUP BY path");
    let explain = String::from_utf8_lossy(&explain.stdout).to_string();
    assert!(explain.contains("distributed_plan") && explain.contains("stage_id=2"), "{explain}");
    assert!(explain.contains("Fragments: files"), "{explain}");

    // Every README question, as written there.
    let libssl = std::fs::read(trees.web1.join("usr/lib/x86_64-linux-gnu/libssl.so.3")).unwrap();
    let hash = blake3::hash(&libssl).to_hex().to_string();
    let readme = readme_questions();
    assert!(readme.len() >= 13, "{} questions", readme.len());
    let mut answered = 0;
    for (n, sql) in &readme {
        let rows = assert_same_answer(&cluster, &format!("README question {n}"), &sql.replace("<hash>", &hash));
        answered += usize::from(rows > 0);
    }
    assert!(answered >= 12, "only {answered} README questions have rows");

    // The fleet: 300 hosts made from web@1 and web@2, indexed as a large library is.
    let mut bases = library.images().await.unwrap();
    bases.retain(|i| i.name == "web");
    let first = library.images().await.unwrap().iter().map(|i| i.image_id).max().unwrap() + 1;
    fleet::generate(&library, &bases, 300, first).await;
    library.catalog().maintain(Maintenance::FULL).await.unwrap();
    let fleet_questions = [
        ("which images ship mariadb-server", readme[&1].replace("mysql-server%", "mariadb-server")),
        ("README 1 on the fleet", readme[&1].clone()),
        ("README 2 on the fleet", readme[&2].replace("<hash>", &hash)),
        ("README 10 on the fleet", readme[&10].clone()),
        ("README 11 on the fleet", readme[&11].clone()),
        ("files by image", FILES_BY_IMAGE.to_string()),
        (
            "the newest libssl3 per host",
            "SELECT i.name, max(p.version) AS version FROM packages p JOIN images i USING (image_id) \
             WHERE p.name = 'libssl3' GROUP BY i.name ORDER BY i.name"
                .to_string(),
        ),
    ];
    for (label, sql) in &fleet_questions {
        let rows = assert_same_answer(&cluster, label, sql);
        assert!(rows > 0, "{label}: no rows");
    }

    // An executor killed in the middle of a question.
    let expected = one_process(&folder, FILES_BY_IMAGE);
    let started = Instant::now();
    let asked = cluster.ask(FILES_BY_IMAGE);
    assert!(asked.status.success());
    let duration = started.elapsed();
    eprintln!("files by image: {duration:?} on the cluster");
    let mut client = ask(&folder, Some(&cluster.scheduler), FILES_BY_IMAGE).spawn().unwrap();
    std::thread::sleep(duration / 3);
    assert!(client.try_wait().unwrap().is_none(), "the question ended before the kill ({duration:?} before)");
    let mut cluster = cluster;
    let executor = &mut cluster.processes[1];
    executor.kill().unwrap();
    executor.wait().unwrap();
    let waited = Instant::now();
    let out = loop {
        if client.try_wait().unwrap().is_some() {
            break client.wait_with_output().unwrap();
        }
        assert!(waited.elapsed() < Duration::from_secs(180), "the question hangs after the executor died");
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.success() {
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected, "a retried answer differs");
    } else {
        assert_eq!(out.status.code(), Some(1), "a failed question is the statement's failure: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.trim().is_empty(), "{stderr}");
        let printed = String::from_utf8(out.stdout).unwrap();
        assert!(expected.starts_with(&printed), "a failed question printed rows of another answer: {printed}");
    }
    eprintln!("killed an executor mid-question: status {:?} after {:?}, {stderr}", out.status.code(), waited.elapsed());
    // The executor left answers alone once the scheduler has taken the other for dead.
    std::thread::sleep(Duration::from_secs(5));
    assert_same_answer(&cluster, "files by image, on the executor left", FILES_BY_IMAGE);
}
