//! The advisories benchmark (issue 25). A fleet of HOSTS versions' inventories (the bookworm
//! tree's packages, each host's sources on rungs of their version ladders, one host in ten
//! Debian 11: `imagelake_tests::exposure`) written into a library, and ADVISORIES generated
//! OSV records, 300 of them about the fleet's sources. Measured:
//! - loading the records (a folder of one JSON file each, as osv.dev's zips hold them), loading
//!   them again unchanged, and again with a tenth of them newer;
//! - "which images does CVE-X affect" and "which images have fixable criticals", as the README
//!   asks them, medians of RUNS runs in a long-lived session (each answer checked against the
//!   brute-force count the exposure module finds on rung numbers);
//! - one version's SBOM (CycloneDX), median of RUNS runs in the session.
//!
//! No peer runs beside it: Trivy and grype scan one image (or its SBOM) at a time and neither
//! is installable on this machine; DuckDB has no dpkg version order to match with.
//!
//! Run: `cargo run --release -p imagelake-bench --bin bench-advisories [HOSTS] [ADVISORIES]`.

use datafusion::arrow::array::AsArray;
use imagelake_engine::Library;
use imagelake_sql::Session;
use imagelake_tests::exposure::{Advisory, Fleet, advisories, write_osv};
use std::collections::BTreeSet;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs of each question.
const RUNS: usize = 15;
/// Records about the fleet's sources; the rest name sources no host has.
const ABOUT_FLEET: usize = 300;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The seconds `sql` takes and the rows it answers.
async fn ask(session: &Session, sql: &str) -> (f64, usize) {
    let started = Instant::now();
    let answer = session.run(sql).await.unwrap_or_else(|e| panic!("imagelake: {e}\n{sql}"));
    (started.elapsed().as_secs_f64(), answer.batches.iter().map(|b| b.num_rows()).sum())
}

/// The versions (host names) `matches` says are affected, by brute force on rung numbers.
fn affected_hosts(fleet: &Fleet, records: &[Advisory], matches: impl Fn(&Advisory, Option<u8>) -> bool) -> usize {
    let mut hosts = BTreeSet::new();
    for host in &fleet.hosts {
        for installed in fleet.installed(host) {
            let source = Some(installed.package.source);
            let hit = records
                .iter()
                .filter(|a| a.source == source)
                .any(|a| a.affects(host.release, installed.rung).is_some_and(|fixed| matches(a, fixed)));
            if hit {
                hosts.insert(&host.name);
                break;
            }
        }
    }
    hosts.len()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("HOSTS ADVISORIES are numbers"));
    let hosts = args.next().unwrap_or(10_000).max(10);
    let total = args.next().unwrap_or(10_000).max(ABOUT_FLEET);
    let work = tempfile::tempdir().expect("tempdir");
    let folder = work.path().join("lib");
    let library = std::sync::Arc::new(Library::open(&folder).await.expect("library"));

    let fleet = Fleet::generate(hosts, 0x5eed_f1ee7);
    let started = Instant::now();
    fleet.write(&library, 1).await;
    library.catalog().maintain(imagelake_engine::catalog::Maintenance::FULL).await.expect("indexes");
    library.prune().await.expect("prune");
    let written = started.elapsed().as_secs_f64();
    let packages: usize = fleet.hosts.iter().map(|h| fleet.installed(h).count()).sum();

    let records = advisories(&fleet, total, ABOUT_FLEET, 0xadd5);
    let osv = work.path().join("osv");
    write_osv(&fleet, &records, &osv);
    let first = library.load_advisories(&osv).await.expect("load");
    let again = library.load_advisories(&osv).await.expect("load again");
    // A tenth of the records newer, as a day's osv.dev export changes some.
    for advisory in records.iter().step_by(10) {
        let path = osv.join(format!("{}.json", advisory.id));
        let text = std::fs::read_to_string(&path).expect("record");
        std::fs::write(&path, text.replace("2024-06-01T00:00:00Z", "2024-07-01T00:00:00Z")).expect("record");
    }
    let newer = library.load_advisories(&osv).await.expect("load newer");
    assert_eq!((first.added, again.unchanged, newer.replaced), (total, total, total.div_ceil(10)));

    // CVE-X: the fleet's record whose range is open from 0 (every Debian 12 host with the
    // package), the most hosts one record hits.
    let x = records
        .iter()
        .find(|a| a.source.is_some() && a.release == "12" && !a.withdrawn && a.upper.is_none() && a.versions.is_empty())
        .expect("an open record")
        .clone();
    let cve_x = format!(
        "SELECT DISTINCT image, image_version FROM vulnerabilities \
         WHERE advisory = '{0}' OR array_has(aliases, '{0}') ORDER BY image",
        x.alias
    );
    let criticals = "SELECT DISTINCT image, image_version FROM vulnerabilities \
         WHERE severity = 'CRITICAL' AND fixed_version IS NOT NULL ORDER BY image";
    let x_hosts = affected_hosts(&fleet, &records, |a, _| a.id == x.id);
    let critical_hosts = affected_hosts(&fleet, &records, |a, fixed| {
        fixed.is_some() && a.cvss.is_some_and(|(_, severity)| severity == "CRITICAL")
    });
    let sbom = "SELECT document FROM sbom('host-00042')";

    let session = Session::open(library.clone()).await.expect("session");
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for run in 0..RUNS {
        for (q, (sql, expected)) in
            [(cve_x.as_str(), Some(x_hosts)), (criticals, Some(critical_hosts)), (sbom, None)].into_iter().enumerate()
        {
            let (seconds, answer) = ask(&session, sql).await;
            if let Some(expected) = expected {
                assert_eq!(answer, expected, "run {run}: {sql}");
            }
            times[q].push(seconds);
        }
    }
    // Where a question's time goes, when asked for (`IMAGELAKE_BENCH_EXPLAIN=1`).
    if std::env::var_os("IMAGELAKE_BENCH_EXPLAIN").is_some() {
        for sql in [cve_x.as_str(), criticals] {
            let plan = session.run(&format!("EXPLAIN ANALYZE {sql}")).await.expect("explain");
            for batch in &plan.batches {
                let column = batch.column_by_name("plan").expect("EXPLAIN answers a plan");
                column.as_string::<i32>().iter().flatten().for_each(|line| eprintln!("{line}"));
            }
        }
    }
    let document = session.run(sbom).await.expect("sbom");
    let column = document.batches[0].column_by_name("document").expect("sbom() answers a document");
    let bytes = column.as_string::<i32>().value(0).len();

    println!("Fleet: {hosts} versions, {packages} package rows, written and indexed in {written:.1} s.");
    println!("Advisories: {total} OSV records ({ABOUT_FLEET} about the fleet's sources), {} rows.\n", first.rows);
    println!("| step | time |\n|---|---|");
    println!("| load {total} records into an empty table | {:.2} s |", first.seconds);
    println!("| load them again, unchanged | {:.2} s |", again.seconds);
    println!("| load them again, a tenth newer ({} replaced) | {:.2} s |", newer.replaced, newer.seconds);
    let labels = [
        format!("which images does {} affect ({x_hosts} versions)", x.alias),
        format!("which images have fixable criticals ({critical_hosts} versions)"),
        format!("one SBOM (CycloneDX, {bytes} bytes, `sbom('host-00042')`)"),
    ];
    // The first run reads `packages` whole (and keeps it, see the engine's `catalog/kept.rs`).
    println!("\n| question | first in the session | median of {RUNS} |\n|---|---|---|");
    for (q, label) in labels.iter().enumerate() {
        println!("| {label} | {:.1} ms | {:.1} ms |", times[q][0] * 1e3, median(times[q].clone()) * 1e3);
    }
}
