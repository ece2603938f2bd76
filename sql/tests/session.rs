//! A long-lived session (the REPL, a notebook's server) reads each table at its newest
//! version on every statement, even though it keeps the datasets it opened.

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::util::display::array_value_to_string;
use imagelake_engine::Library;
use imagelake_sql::Session;
use imagelake_tests::{imagelake_bin, mkfs_ext, run};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

async fn count(session: &Session, sql: &str) -> i64 {
    let batches = session.run(sql).await.unwrap().batches;
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Checks `image` in as `name` from another process, as a second user would.
fn checkin_elsewhere(library: &Path, image: &Path, name: &str) {
    run(Command::new(imagelake_bin()).arg("-L").arg(library).arg("checkin").arg(image).args(["--name", name]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_sees_every_checkin_made_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/motd"), "hello\n").unwrap();
    let image = dir.path().join("small.img");
    mkfs_ext(&tree, &image, "ext4", "8M", &[]);
    let library = dir.path().join("lib");
    let session = Session::open(Arc::new(Library::open(&library).await.unwrap())).await.unwrap();
    let versions = "SELECT count(*) FROM images WHERE name = 'web'";
    let motds = "SELECT count(DISTINCT image_id) FROM files WHERE path = '/etc/motd'";
    // A small table, read from memory: kept per table version, read again after a commit.
    let filesystems = "SELECT count(*) FROM partitions WHERE fs_type = 'ext4'";
    assert_eq!(count(&session, versions).await, 0);

    // Right after a commit, and again once the tables have been still long enough for the
    // session to reuse what it opened, then right after the next commit.
    checkin_elsewhere(&library, &image, "web");
    assert_eq!(count(&session, versions).await, 1);
    assert_eq!(count(&session, motds).await, 1);
    assert_eq!(count(&session, filesystems).await, 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..3 {
        assert_eq!(count(&session, versions).await, 1);
        assert_eq!(count(&session, motds).await, 1);
        assert_eq!(count(&session, filesystems).await, 1);
    }
    checkin_elsewhere(&library, &image, "web");
    assert_eq!(count(&session, versions).await, 2);
    assert_eq!(count(&session, motds).await, 2);
    assert_eq!(count(&session, filesystems).await, 2);
    assert_eq!(
        session.run("SELECT read_text('web@2', '/etc/motd')").await.unwrap().batches[0]
            .column(0)
            .as_string::<i32>()
            .value(0),
        "hello\n"
    );
}

/// A session keeps the optimized plan of a query it ran; running the same text again must
/// still mean what the text means now.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_statement_means_what_it_means_now() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::open(Arc::new(Library::open(&dir.path().join("lib")).await.unwrap())).await.unwrap();
    let text = |sql: &'static str| {
        let session = &session;
        async move { array_value_to_string(session.run(sql).await.unwrap().batches[0].column(0), 0).unwrap() }
    };
    let from_view = "SELECT x FROM v";
    session.run("CREATE VIEW v AS SELECT 'first' AS x").await.unwrap();
    assert_eq!(text(from_view).await, "first");
    assert_eq!(text(from_view).await, "first");
    session.run("CREATE OR REPLACE VIEW v AS SELECT 'second' AS x").await.unwrap();
    assert_eq!(text(from_view).await, "second");

    // now() is folded into a constant while optimizing: a kept plan would repeat the time.
    let now = "SELECT CAST(now() AS VARCHAR)";
    let first = text(now).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_ne!(text(now).await, first);
}
