//! Library-wide SQL on a Ballista cluster: one scheduler and two executors, each an
//! `imagelake cluster` process on loopback over the same library, answer every README
//! question and the fleet's questions exactly as one `imagelake sql` process does; an executor
//! killed in the middle of a question gives a clean error or the right answer, never a wrong
//! one, and the cluster answers again with the executor left. A server's user asks through
//! `serve --cluster` and gets what a server answering in its own process gives them, within
//! their grants.
//!
//! The cluster's processes run with `IMAGELAKE_KEEP_ROWS=0`: every catalog table is read
//! through Lance (fragments read at the planned table version in the executors, versions of
//! segments looked up as rows come), while the one process it is compared with keeps the
//! small tables in memory, as a small library does: two different paths to one answer.

use imagelake_engine::catalog::Maintenance;
use imagelake_tests::cluster::{Cluster, ask};
use imagelake_tests::fleet;
use imagelake_tests::questions::{self, readme_questions};
use imagelake_tests::server::{Server, add_users};
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

/// What a server's user asks, through `serve --cluster` and through a plain `serve`.
const AS_A_USER: &[&str] = &[
    "SELECT name, version FROM images ORDER BY name, version",
    "SELECT i.name, i.version, count(*) AS files, sum(f.size) AS bytes FROM files f JOIN images i USING (image_id) \
     GROUP BY i.name, i.version ORDER BY i.name, i.version",
    "SELECT count(*) FROM packages",
    "SELECT name, version FROM images WHERE name = 'plain'",
    "SELECT i.name, i.version, read_text(i.name || '@' || i.version, '/etc/nginx/sites-enabled/default') \
     FROM images i ORDER BY 1, 2",
    "SELECT read_text('plain@1', '/etc/os-release')",
    "SELECT read_text('nosuch@1', '/etc/os-release')",
    "SELECT name, version, logical_bytes, data_bytes, unique_bytes, shared_bytes, unique_stored_bytes, files, \
     packages, freed_if_deleted FROM image_stats('web@1', 'web@2')",
    "SELECT entry, change, path FROM compare('web@1', 'web@2') ORDER BY entry, path",
    "SELECT name, kind FROM ls('web@2', '/etc/nginx') ORDER BY name",
    "SELECT * FROM ls('plain', '/')",
    "SELECT * FROM ls('nosuch', '/')",
    "SELECT count(*) FROM chunks",
    "SELECT * FROM users()",
];

/// Asks each of `questions` as `user` of the server at `uri` with the ADBC Flight SQL driver;
/// one line of JSON each: the rows, or what kind of error it was.
fn ask_as(uri: &str, user: &str, password: &str, questions: &[&str]) -> Vec<String> {
    let script = r#"
import json, sys
import adbc_driver_flightsql.dbapi as flightsql
uri, user, password = sys.argv[1:4]
login = {"username": user, "password": password}
with flightsql.connect(uri, db_kwargs=login, autocommit=True) as conn:
    for sql in json.load(sys.stdin):
        cur = conn.cursor()
        try:
            cur.execute(sql)
            print(json.dumps({"rows": cur.fetchall()}, default=str))
        except Exception as e:
            text = str(e)
            kind = "missing" if "no image" in text else "denied" if "permission denied" in text else text
            print(json.dumps({"error": kind}))
        cur.close()
"#;
    let mut python = std::process::Command::new(imagelake_tests::venv_python())
        .arg("-c")
        .arg(script)
        .args([uri, user, password])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let questions = serde_json::to_vec(questions).unwrap();
    std::io::Write::write_all(&mut python.stdin.take().unwrap(), &questions).unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// `serve --cluster`: a user's questions go to the cluster and come back within their grants,
/// exactly as a server answering in its own process answers them: the images they may not
/// read are absent from every table, answer as missing in every function, and count in no
/// figure (`image_stats` counts only the versions they see as sharing a chunk).
#[tokio::test(flavor = "multi_thread")]
async fn serve_on_a_cluster_answers_each_user_within_their_grants() {
    let lib = imagelake_tests::Library::new();
    questions::library(lib.dir.path()).await;
    add_users(&lib, &[("ana", "a long enough password", false, &[("read", "web")])]);
    let cluster = Cluster::start(&lib.path(), 2, &[("IMAGELAKE_KEEP_ROWS", "0")]);
    let log = |name: &str| lib.dir.path().join(name);
    let served = Server::with_args(&lib, &["--cluster".into(), cluster.scheduler.clone().into()], log("cluster.log"));
    let alone = Server::with_args(&lib, &[], log("alone.log"));

    // The server's questions do go to the cluster.
    let explain = ask_as(&served.uri, "ana", "a long enough password", &["EXPLAIN SELECT count(*) FROM files"]);
    assert!(explain[0].contains("distributed_plan") && explain[0].contains("Fragments: files"), "{explain:?}");

    let on_cluster = ask_as(&served.uri, "ana", "a long enough password", AS_A_USER);
    let in_process = ask_as(&alone.uri, "ana", "a long enough password", AS_A_USER);
    assert_eq!(on_cluster.len(), AS_A_USER.len(), "{on_cluster:?}");
    for ((sql, cluster), alone) in AS_A_USER.iter().zip(&on_cluster).zip(&in_process) {
        assert_eq!(cluster, alone, "{sql}: the cluster and one process answer ana differently");
    }
    let answer = |sql: &str| &on_cluster[AS_A_USER.iter().position(|q| *q == sql).unwrap()];
    assert_eq!(answer(AS_A_USER[0]), r#"{"rows": [["web", 1], ["web", 2]]}"#);
    assert_eq!(answer(AS_A_USER[3]), r#"{"rows": []}"#);
    assert_eq!(answer(AS_A_USER[5]), answer(AS_A_USER[6]), "a hidden image reads as a missing one");
    assert_eq!(answer(AS_A_USER[10]), r#"{"error": "missing"}"#);
    assert_eq!(answer(AS_A_USER[11]), r#"{"error": "missing"}"#);
    assert_eq!(answer(AS_A_USER[13]), r#"{"error": "denied"}"#);
    assert!(answer(AS_A_USER[8]).len() > 20 && answer(AS_A_USER[9]).contains("sites-enabled"));
    // The library's owner sees plain's files, which ana's counts leave out.
    let owner = one_process(
        &lib.path(),
        "SELECT count(*) FROM files WHERE image_id IN (SELECT image_id FROM images WHERE name = 'plain')",
    );
    assert_ne!(owner.lines().nth(1), Some("0"), "{owner}");
    assert!(!answer(AS_A_USER[1]).contains("plain"));
    served.stop();
    alone.stop();
}
