//! Kept columns (the engine's `catalog/kept.rs`) as SQL sees them: a table past the small
//! bound is read through Lance by a question that looks a few rows up, until a question reads
//! the columns it needs whole; then later questions answer from memory, with the same rows,
//! until a commit makes a new table version.

use datafusion::arrow::util::pretty::pretty_format_batches;
use imagelake_sql::Session;
use imagelake_tests::exposure::Fleet;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread")]
async fn a_large_table_read_whole_is_kept_by_column_until_a_commit() {
    let work = tempfile::tempdir().unwrap();
    let library = Arc::new(imagelake_engine::Library::open(&work.path().join("lib")).await.unwrap());
    // 300 hosts of about 139 packages each: past the 32,768 rows kept whenever asked about.
    let fleet = Fleet::generate(300, 0x6e57);
    fleet.write(&library, 1).await;
    let session = Session::open(library.clone()).await.unwrap();
    let text = async |sql: &str| pretty_format_batches(&session.run(sql).await.unwrap().batches).unwrap().to_string();
    let point = "SELECT image_id, version FROM packages WHERE name = 'libc6' ORDER BY image_id";
    let through_lance = |plan: &str| plan.contains("LanceRead");

    assert!(through_lance(&text(&format!("EXPLAIN {point}")).await));
    let from_lance = text(point).await;
    let hosts = fleet.hosts.iter().filter(|h| fleet.installed(h).any(|p| p.package.name == "libc6")).count();
    assert!(hosts > 0 && from_lance.lines().count() == hosts + 4, "{hosts} hosts with libc6:\n{from_lance}");

    // A question over every row of two of the three columns keeps those two only.
    text("SELECT max(image_id), max(name) FROM packages").await;
    assert!(through_lance(&text(&format!("EXPLAIN {point}")).await));
    // Once the third is read whole too, the point question is answered from memory, alike.
    text("SELECT max(version) FROM packages").await;
    let plan = text(&format!("EXPLAIN {point}")).await;
    assert!(!through_lance(&plan), "{plan}");
    assert_eq!(text(point).await, from_lance);

    // A commit makes a new version of `packages`: read through Lance again, with its new rows.
    let one_more = Fleet::generate(1, 0x6e58);
    one_more.write(&library, 301).await;
    let more = one_more.hosts.iter().filter(|h| one_more.installed(h).any(|p| p.package.name == "libc6")).count();
    assert!(through_lance(&text(&format!("EXPLAIN {point}")).await));
    let grown = text(point).await;
    assert_eq!(grown.lines().count(), hosts + more + 4, "{grown}");
    text("SELECT max(image_id), max(name), max(version) FROM packages").await;
    assert!(!through_lance(&text(&format!("EXPLAIN {point}")).await));
    assert_eq!(text(point).await, grown);

    // A bound of 0 keeps nothing.
    library.catalog().keep_small_tables_up_to(0);
    assert!(through_lance(&text(&format!("EXPLAIN {point}")).await));
    assert_eq!(text(point).await, grown);
}
