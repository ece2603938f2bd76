//! Command functions change the library: each runs exactly once per executed statement, never
//! while planning or under EXPLAIN, and is not skipped when the optimizer removes its scan.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use imagelake_engine::Library;
use imagelake_sql::Session;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Fixture {
    dir: tempfile::TempDir,
    session: Session,
    image: PathBuf,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/motd"), "hello\n").unwrap();
    let image = dir.path().join("small.img");
    imagelake_tests::mkfs_ext(&tree, &image, "ext4", "8M", &[]);
    let library = Arc::new(Library::open(&dir.path().join("lib")).await.unwrap());
    let session = Session::open(library).await.unwrap();
    Fixture { dir, session, image }
}

impl Fixture {
    fn q(&self, text: &str) -> String {
        text.replace("IMG", &self.image.display().to_string()).replace("DIR", &self.dir.path().display().to_string())
    }

    async fn versions(&self, name: &str) -> i64 {
        let rows =
            self.session.run(&format!("SELECT count(*) FROM images WHERE name = '{name}'")).await.unwrap().batches;
        rows[0].column(0).as_primitive::<Int64Type>().value(0)
    }
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkin_runs_once_per_executed_statement() {
    let f = fixture().await;
    // Planning and EXPLAIN never run it.
    f.session.context().sql(&f.q("SELECT * FROM checkin('IMG', 'a')")).await.unwrap();
    let explained = f.session.run(&f.q("EXPLAIN SELECT * FROM checkin('IMG', 'a')")).await.unwrap().batches;
    assert!(rows(&explained) > 0);
    assert_eq!(f.versions("a").await, 0);

    // Executed: exactly once, and its summary row says what it did.
    let out = f.session.run(&f.q("SELECT name, version, files FROM checkin('IMG', 'a')")).await.unwrap().batches;
    assert_eq!(rows(&out), 1);
    assert_eq!(out[0].column(1).as_primitive::<Int64Type>().value(0), 1);
    assert_eq!(f.versions("a").await, 1);

    // A CTE read twice: one checkin, its row twice.
    let out = f
        .session
        .run(&f.q("WITH c AS (SELECT * FROM checkin('IMG', 'b')) SELECT * FROM c UNION ALL SELECT * FROM c"))
        .await
        .unwrap()
        .batches;
    assert_eq!(rows(&out), 2);
    assert_eq!(f.versions("b").await, 1);

    // LIMIT 0 and WHERE false remove the scan from the plan; the command still runs, once.
    let out = f.session.run(&f.q("SELECT * FROM checkin('IMG', 'c') LIMIT 0")).await.unwrap().batches;
    assert_eq!(rows(&out), 0);
    assert_eq!(f.versions("c").await, 1);
    f.session.run(&f.q("SELECT * FROM checkin('IMG', 'c') WHERE false")).await.unwrap();
    assert_eq!(f.versions("c").await, 2);

    // EXPLAIN ANALYZE executes the statement: once.
    f.session.run(&f.q("EXPLAIN ANALYZE SELECT * FROM checkin('IMG', 'd')")).await.unwrap();
    assert_eq!(f.versions("d").await, 1);

    // Planned twice (as a Flight SQL server does: GetFlightInfo, then DoGet), executed once.
    let ctx = f.session.context();
    let _first = ctx.sql(&f.q("SELECT * FROM checkin('IMG', 'e')")).await.unwrap();
    let second = ctx.sql(&f.q("SELECT * FROM checkin('IMG', 'e')")).await.unwrap();
    let frame = second.clone();
    second.collect().await.unwrap();
    // The same plan collected again reuses the command's result.
    frame.collect().await.unwrap();
    assert_eq!(f.versions("e").await, 1);

    // A command cannot hide in a view, where it would run whenever the view is read.
    let err = f.session.run(&f.q("CREATE VIEW v AS SELECT * FROM checkin('IMG', 'f')")).await.unwrap_err();
    assert!(err.to_string().contains("cannot be part of a view"), "{err}");
    assert_eq!(f.versions("f").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn checkouts_run_once_and_per_row() {
    let f = fixture().await;
    for name in ["a", "b", "c"] {
        f.session.run(&f.q(&format!("SELECT * FROM checkin('IMG', '{name}')"))).await.unwrap();
    }
    let out =
        f.session.run(&f.q("SELECT bytes_written FROM checkout('a', 'DIR/a.raw') LIMIT 0")).await.unwrap().batches;
    assert_eq!(rows(&out), 0);
    imagelake_tests::assert_same_bytes(&f.image, &f.dir.path().join("a.raw"));
    let explained = f.session.run(&f.q("EXPLAIN SELECT * FROM checkout('b', 'DIR/b.raw')")).await.unwrap().batches;
    assert!(rows(&explained) > 0);
    assert!(!f.dir.path().join("b.raw").exists());

    // One checkout per row of a query, and only for its rows.
    let out = f
        .session
        .run(&f.q("SELECT name, checkout_to(name, 'DIR/out-' || name || '.raw') AS done FROM images WHERE name <> 'b' ORDER BY name"))
        .await
        .unwrap().batches;
    assert_eq!(rows(&out), 2);
    let done = out[0].column(1).as_string::<i32>();
    assert!(done.value(0).ends_with("out-a.raw"), "{}", done.value(0));
    for name in ["a", "c"] {
        imagelake_tests::assert_same_bytes(&f.image, &f.dir.path().join(format!("out-{name}.raw")));
    }
    assert!(!f.dir.path().join("out-b.raw").exists());
    let missing = Path::new("/nonexistent-dir/x.raw").display().to_string();
    let err = f.session.run(&format!("SELECT checkout_to('a', '{missing}')")).await.unwrap_err().to_string();
    assert!(err.contains("checkout_to(a, /nonexistent-dir/x.raw)"), "{err}");
}
