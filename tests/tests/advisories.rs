//! Advisories (OSV records, hand-written in tests/data/osv/) loaded into the library and
//! matched against stored inventories by `vulnerabilities`: by source package and its version
//! (Debian, Alpine) or by package (rpm), per release, with each manager's version order,
//! `last_affected` inclusive, version lists, withdrawn records, aliases, reloads that replace
//! only what changed, and bad records refused by name with nothing written.

use imagelake_tests::{Library, mkfs_ext, repo_root, rpm, run};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// An ext4 image of a Debian-like system: its os-release and a dpkg status of `packages`
/// (name, version, `Source:` field or "").
fn debian_image(dir: &Path, name: &str, version_id: &str, packages: &[(&str, &str, &str)]) -> std::path::PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    std::fs::create_dir_all(tree.join("var/lib/dpkg")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/os-release"), format!("ID=debian\nVERSION_ID=\"{version_id}\"\n")).unwrap();
    let status: String = packages
        .iter()
        .map(|(package, version, source)| {
            let source = if source.is_empty() { String::new() } else { format!("Source: {source}\n") };
            format!(
                "Package: {package}\nStatus: install ok installed\nArchitecture: amd64\n{source}Version: {version}\n\n"
            )
        })
        .collect();
    std::fs::write(tree.join("var/lib/dpkg/status"), status).unwrap();
    let image = dir.join(format!("{name}.img"));
    mkfs_ext(&tree, &image, "ext4", "8M", &[]);
    image
}

type Row = (String, String, String, Option<String>);

/// (image name, package, advisory, fixed version) of every `vulnerabilities` row.
fn vulnerabilities(lib: &Library) -> BTreeSet<Row> {
    lib.sql("SELECT image, package, advisory, fixed_version FROM vulnerabilities")
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap().to_string();
            (
                text("image"),
                text("package"),
                text("advisory"),
                r.get("fixed_version").and_then(|v| v.as_str()).map(str::to_string),
            )
        })
        .collect()
}

fn row(image: &str, package: &str, advisory: &str, fixed: Option<&str>) -> Row {
    (image.into(), package.into(), advisory.into(), fixed.map(str::to_string))
}

fn load(lib: &Library, path: &Path) -> serde_json::Value {
    let out = run(lib.command().args(["advisories", "load"]).arg(path).arg("--json"));
    serde_json::from_str(&out).unwrap()
}

#[test]
fn advisories_match_the_stored_inventories() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    let lib = Library::new();
    let deb12 = debian_image(
        work.path(),
        "deb12",
        "12",
        &[
            ("libc6", "2.36-9+deb12u4", "glibc"),
            ("libc-bin", "2.36-9+deb12u4", "glibc"),
            // A binNMU: the binary's version is past the advisory's last affected one, its
            // source's is not.
            ("libfoo1", "1.2-2+b1", "foo (1.2-2)"),
            ("foo-utils", "1.2-3", "foo"),
            ("libssl3", "3.0.11-1~deb12u2", "openssl"),
            ("bash", "5.2.15-2+b2", ""),
        ],
    );
    lib.checkin(&deb12, "deb12");
    let deb11 = debian_image(
        work.path(),
        "deb11",
        "11",
        &[("libc6", "2.31-13+deb11u5", "glibc"), ("libssl1.1", "1.1.1w-0+deb11u1", "openssl")],
    );
    lib.checkin(&deb11, "deb11");
    // Rocky Linux: a real rpm database, hello 3:1.2-4.
    let rpms = rpm::build(work.path(), &[("hello", "Epoch: 3\n", 1)]);
    std::fs::create_dir_all(p("rocky/etc")).unwrap();
    std::fs::write(p("rocky/etc/os-release"), "ID=\"rocky\"\nVERSION_ID=\"9.4\"\n").unwrap();
    rpm::install(&rpm::debian_binary(), &p("rocky"), "/var/lib/rpm", "sqlite", &rpms);
    mkfs_ext(&p("rocky"), &p("rocky.img"), "ext4", "16M", &[]);
    lib.checkin(&p("rocky.img"), "rocky");
    // Alpine: busybox-binsh, built from busybox.
    std::fs::create_dir_all(p("alpine/lib/apk/db")).unwrap();
    std::fs::create_dir_all(p("alpine/etc")).unwrap();
    std::fs::write(p("alpine/etc/os-release"), "ID=alpine\nVERSION_ID=3.20.3\n").unwrap();
    std::fs::write(p("alpine/lib/apk/db/installed"), "P:busybox-binsh\nV:1.36.1-r29\nA:x86_64\no:busybox\n\n").unwrap();
    mkfs_ext(&p("alpine"), &p("alpine.img"), "ext4", "8M", &[]);
    lib.checkin(&p("alpine.img"), "alpine");

    let data = repo_root().join("tests/data/osv");
    let loaded = load(&lib, &data);
    assert_eq!(
        (&loaded["documents"], &loaded["records"], &loaded["ignored"], &loaded["added"], &loaded["withdrawn"]),
        (&4.into(), &8.into(), &1.into(), &7.into(), &1.into()),
        "{loaded}"
    );
    let expected: BTreeSet<Row> = [
        row("deb12", "libc6", "DSA-9001-1", Some("2.36-9+deb12u7")),
        row("deb12", "libc-bin", "DSA-9001-1", Some("2.36-9+deb12u7")),
        row("deb12", "libfoo1", "DEBIAN-CVE-2024-9002", None),
        row("deb12", "libssl3", "DEBIAN-CVE-2024-9003", None),
        row("deb11", "libc6", "DSA-9001-1", Some("2.31-13+deb11u9")),
        row("deb11", "libssl1.1", "DEBIAN-CVE-2024-9005", None),
        row("rocky", "hello", "RLSA-2024:9006", Some("3:1.2-5")),
        row("alpine", "busybox-binsh", "ALPINE-CVE-2024-9007", Some("1.36.1-r30")),
    ]
    .into_iter()
    .collect();
    assert_eq!(vulnerabilities(&lib), expected);

    // By alias (a DSA's CVE), with the severity each record says.
    let hits = lib.sql(
        "SELECT DISTINCT image, severity, cvss_score FROM vulnerabilities \
         WHERE array_has(aliases, 'CVE-2024-9001') ORDER BY image",
    );
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!((hits[0]["image"].as_str(), hits[1]["image"].as_str()), (Some("deb11"), Some("deb12")));
    assert_eq!((hits[0]["severity"].as_str(), hits[0]["cvss_score"].as_f64()), (Some("CRITICAL"), Some(9.8)));
    let words =
        lib.sql("SELECT advisory, severity FROM vulnerabilities WHERE image IN ('deb12', 'rocky') ORDER BY advisory");
    let words: Vec<(String, Option<String>)> = words
        .iter()
        .map(|r| (r["advisory"].as_str().unwrap().into(), r.get("severity").and_then(|s| s.as_str()).map(Into::into)))
        .collect();
    assert!(words.contains(&("DEBIAN-CVE-2024-9002".into(), Some("LOW".into()))), "{words:?}");
    assert!(words.contains(&("RLSA-2024:9006".into(), Some("IMPORTANT".into()))), "{words:?}");
    // The withdrawn record is kept, and matches nothing.
    let withdrawn =
        lib.sql("SELECT count(*) AS n FROM advisories WHERE id = 'DEBIAN-CVE-2024-9004' AND withdrawn IS NOT NULL");
    assert_eq!(withdrawn[0]["n"], 1);

    // Loading again changes nothing; a newer record replaces the stored one, an older does not.
    let again = load(&lib, &data);
    assert_eq!(
        (&again["added"], &again["replaced"], &again["unchanged"]),
        (&0.into(), &0.into(), &7.into()),
        "{again}"
    );
    let rows_before = lib.sql("SELECT count(*) AS n FROM advisories")[0]["n"].clone();
    let record = std::fs::read_to_string(data.join("debian/DSA-9001-1.json")).unwrap();
    let newer =
        record.replace("2024-05-01T10:00:00Z", "2024-05-02T00:00:00Z").replace("2.36-9+deb12u7", "2.36-9+deb12u3");
    std::fs::write(p("newer.json"), &newer).unwrap();
    let older = record.replace("2024-05-01T10:00:00Z", "2024-04-01T00:00:00Z").replace("2.36-9+deb12u7", "9.9");
    std::fs::write(p("older.json"), &older).unwrap();
    let replaced = load(&lib, &p("newer.json"));
    assert_eq!((&replaced["replaced"], &replaced["rows"]), (&1.into(), &2.into()), "{replaced}");
    assert_eq!(load(&lib, &p("older.json"))["unchanged"], 1);
    assert_eq!(lib.sql("SELECT count(*) AS n FROM advisories")[0]["n"], rows_before, "the old rows were replaced");
    let now: BTreeSet<Row> = expected.iter().filter(|r| !(r.0 == "deb12" && r.2 == "DSA-9001-1")).cloned().collect();
    assert_eq!(vulnerabilities(&lib), now, "deb12's libc is past the newer record's fix");

    // A zip of records (as osv.dev publishes them) loads as the folder does.
    let zip = p("debian-all.zip");
    let script = "import sys, zipfile, pathlib\nwith zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    \
                  for f in sorted(pathlib.Path(sys.argv[2]).glob('*.json')): z.write(f, f.name)\n";
    run(Command::new("python3").args(["-c", script]).arg(&zip).arg(data.join("debian")));
    let other = Library::new();
    other.checkin(&deb12, "deb12");
    let zipped = load(&other, &zip);
    assert_eq!((&zipped["documents"], &zipped["added"]), (&3.into(), &5.into()), "{zipped}");
    let deb12_only: BTreeSet<Row> = expected.iter().filter(|r| r.0 == "deb12").cloned().collect();
    assert_eq!(vulnerabilities(&other), deb12_only);

    // A record that cannot be used fails the load by name, and nothing of it is written.
    std::fs::create_dir_all(p("bad")).unwrap();
    std::fs::write(p("bad/a.json"), newer.replace("2024-05-02T00:00:00Z", "2024-09-01T00:00:00Z")).unwrap();
    std::fs::write(
        p("bad/b.json"),
        r#"{"id": "DSA-1-1", "modified": "2024-01-01T00:00:00Z", "affected": [{"package": {"name": "x"}}]}"#,
    )
    .unwrap();
    let out = lib.command().args(["advisories", "load"]).arg(p("bad")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("b.json") && stderr.contains("record DSA-1-1: affected[0]: no package ecosystem"),
        "{stderr}"
    );
    assert_eq!(lib.sql("SELECT count(*) AS n FROM advisories")[0]["n"], rows_before);
    assert_eq!(vulnerabilities(&lib), now);
}

/// (image, version, package, advisory) of every row of `view`.
fn listed(lib: &Library, view: &str) -> BTreeSet<(String, i64, String, String)> {
    let rows = lib.sql(&format!("SELECT image, image_version, package, advisory FROM {view}"));
    let text = |r: &serde_json::Map<String, serde_json::Value>, k: &str| r[k].as_str().unwrap().to_string();
    rows.iter()
        .map(|r| (text(r, "image"), r["image_version"].as_i64().unwrap(), text(r, "package"), text(r, "advisory")))
        .collect()
}

fn vex(lib: &Library, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&run(lib.command().arg("vex").args(args).arg("--json"))).unwrap()
}

/// VEX statements: one by a CVE alias on a glob of images and a source package, one on one
/// version; what they cover leaves `vulnerabilities` for `suppressed_vulnerabilities`, the
/// CycloneDX SBOM carries their analyses (valid under the strict validator) on the packages
/// they cover, a bad statement is refused by its part with nothing kept, and a revoked one
/// stays on record while what it covered is listed again.
#[test]
fn vex_statements_hide_what_they_cover() {
    let work = tempfile::tempdir().unwrap();
    let lib = Library::new();
    let bookworm = [
        ("libc6", "2.36-9+deb12u4", "glibc"),
        ("libc-bin", "2.36-9+deb12u4", "glibc"),
        ("libssl3", "3.0.11-1~deb12u2", "openssl"),
    ];
    let deb12 = debian_image(work.path(), "deb12", "12", &bookworm);
    let deb11 = debian_image(work.path(), "deb11", "11", &[("libc6", "2.31-13+deb11u5", "glibc")]);
    for (image, name) in [(&deb12, "web-a"), (&deb12, "web-a"), (&deb11, "web-b"), (&deb12, "db")] {
        lib.checkin(image, name);
    }
    load(&lib, &repo_root().join("tests/data/osv/debian"));
    let before = listed(&lib, "vulnerabilities");
    let glibc = |image: &str, version: i64, package: &str| {
        (image.to_string(), version, package.to_string(), "DSA-9001-1".to_string())
    };
    let ssl = |image: &str, version: i64| {
        (image.to_string(), version, "libssl3".to_string(), "DEBIAN-CVE-2024-9003".to_string())
    };
    let expected: BTreeSet<_> = [
        glibc("web-a", 1, "libc6"),
        glibc("web-a", 1, "libc-bin"),
        glibc("web-a", 2, "libc6"),
        glibc("web-a", 2, "libc-bin"),
        glibc("web-b", 1, "libc6"),
        glibc("db", 1, "libc6"),
        glibc("db", 1, "libc-bin"),
        ssl("web-a", 1),
        ssl("web-a", 2),
        ssl("db", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(before, expected);

    // By the DSA's CVE, on the web images, for the source package glibc.
    let by_alias = vex(
        &lib,
        &[
            "add",
            "CVE-2024-9001",
            "--image",
            "web-*",
            "--package",
            "glibc",
            "--justification",
            "code_not_reachable",
            "--detail",
            "iconv is never called with untrusted input",
        ],
    );
    let alias_id = by_alias["id"].as_str().unwrap().to_string();
    assert_eq!(
        (&by_alias["state"], &by_alias["actor"]),
        (&"not_affected".into(), &std::env::var("USER").unwrap_or("root".into()).into())
    );
    // One version only, as a false positive.
    let pinned = vex(&lib, &["add", "DEBIAN-CVE-2024-9003", "--image", "web-a@1", "--state", "false_positive"]);
    let hidden: BTreeSet<_> = expected
        .iter()
        .filter(|r| r.0.starts_with("web-") && r.3 == "DSA-9001-1")
        .cloned()
        .chain([ssl("web-a", 1)])
        .collect();
    assert_eq!(listed(&lib, "vulnerabilities"), expected.difference(&hidden).cloned().collect());
    assert_eq!(listed(&lib, "suppressed_vulnerabilities"), hidden);
    let why = lib.sql("SELECT DISTINCT vex, vex_state, vex_justification, vex_detail FROM suppressed_vulnerabilities WHERE image = 'web-b'");
    assert_eq!(why.len(), 1);
    assert_eq!(
        (why[0]["vex"].as_str(), why[0]["vex_justification"].as_str()),
        (Some(alias_id.as_str()), Some("code_not_reachable"))
    );

    // The SBOM of web-a@1 carries both analyses, on the packages they cover; db's none.
    let mut files = Vec::new();
    for spec in ["1.5", "1.6"] {
        let file = work.path().join(format!("web-a-{spec}.json"));
        run(lib.command().args(["sbom", "web-a@1", "--spec-version", spec, "-o"]).arg(&file));
        files.push(file);
    }
    let script = repo_root().join("tests/python/sbom_check.py");
    let verdicts = run(Command::new(imagelake_tests::venv_python()).arg(script).args(&files));
    for verdict in verdicts.lines() {
        let verdict: serde_json::Value = serde_json::from_str(verdict).unwrap();
        assert_eq!(verdict["errors"], serde_json::json!([]), "{verdict}");
    }
    let document: serde_json::Value = serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
    let analyses = document["vulnerabilities"].as_array().unwrap();
    assert_eq!(analyses.len(), 2, "{analyses:?}");
    let (first, second) = (&analyses[0], &analyses[1]);
    assert_eq!(
        (first["id"].as_str(), first["analysis"]["state"].as_str()),
        (Some("CVE-2024-9001"), Some("not_affected"))
    );
    assert_eq!(first["analysis"]["justification"], "code_not_reachable");
    let refs: BTreeSet<&str> =
        first["affects"].as_array().unwrap().iter().map(|a| a["ref"].as_str().unwrap()).collect();
    let purls: BTreeSet<&str> = document["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "libc6" || c["name"] == "libc-bin")
        .map(|c| c["bom-ref"].as_str().unwrap())
        .collect();
    assert_eq!((refs.len(), &refs), (2, &purls));
    assert_eq!(
        (second["id"].as_str(), second["analysis"]["state"].as_str()),
        (Some("DEBIAN-CVE-2024-9003"), Some("false_positive"))
    );
    assert!(second["affects"][0]["ref"].as_str().unwrap().starts_with("pkg:deb/debian/libssl3@"), "{second}");
    let db: serde_json::Value = serde_json::from_str(&run(lib.command().args(["sbom", "db"]))).unwrap();
    assert!(db.get("vulnerabilities").is_none(), "no statement covers db");

    // Bad statements are refused by their part; nothing is kept.
    for (args, says) in [
        (vec!["add", "CVE-2024-9001", "--image", "web-*"], "needs a justification"),
        (vec!["add", "CVE-2024-9001", "--image", "web/x", "--state", "false_positive"], "not an image pattern"),
        (vec!["add", "CVE 9001", "--image", "db", "--state", "false_positive"], "not an advisory id"),
        (vec!["add", "CVE-2024-9001", "--image", "db", "--justification", "because"], "unknown justification"),
        (vec!["revoke", "0000000000000000"], "no VEX statement 0000000000000000"),
    ] {
        let out = lib.command().arg("vex").args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(vex(&lib, &["list"]).as_array().unwrap().len(), 2);

    // Revoked: listed again; the statement stays on record, with who revoked it.
    let revoked = vex(&lib, &["revoke", &alias_id]);
    assert!(revoked["revoked_at"].as_i64().is_some() && revoked["revoked_by"].is_string(), "{revoked}");
    assert_eq!(listed(&lib, "suppressed_vulnerabilities"), [ssl("web-a", 1)].into_iter().collect());
    assert_eq!(listed(&lib, "vulnerabilities"), expected.iter().filter(|r| **r != ssl("web-a", 1)).cloned().collect());
    let standing = vex(&lib, &["list"]);
    assert_eq!(
        standing.as_array().unwrap().iter().map(|s| s["id"].clone()).collect::<Vec<_>>(),
        [pinned["id"].clone()]
    );
    assert_eq!(vex(&lib, &["list", "--all"]).as_array().unwrap().len(), 2);
    let again = lib.command().args(["vex", "revoke", &alias_id]).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("revoked already"));
}

/// A fleet of 10,000 versions (the bookworm tree's 139 packages, each host's sources on rungs
/// of their version ladders, one host in ten Debian 11) and 500 generated advisories, 80 about
/// the fleet's sources: `vulnerabilities` equals what a brute-force check finds, deciding each
/// package and advisory on rung numbers (no version order), VEX statements included.
#[test]
fn a_fleet_of_10000_versions_matches_a_brute_force_check() {
    use imagelake_tests::exposure::{Fleet, advisories, write_osv};
    let work = tempfile::tempdir().unwrap();
    let lib = Library::new();
    let fleet = Fleet::generate(10_000, 0x5eed_f1ee7);
    let records = advisories(&fleet, 500, 80, 0xadd5);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let library = imagelake_engine::Library::open(&lib.path()).await.unwrap();
        fleet.write(&library, 1).await;
    });
    write_osv(&fleet, &records, &work.path().join("osv"));
    let loaded = load(&lib, &work.path().join("osv"));
    assert_eq!((&loaded["records"], &loaded["added"]), (&500.into(), &500.into()), "{loaded}");
    // One statement by alias on a hundred hosts, one on one host's one package.
    let about = |n: usize| records.iter().filter(|a| a.source.is_some() && !a.withdrawn).nth(n).unwrap().clone();
    let (glob, pinned) = (about(0), about(1));
    let pinned_host = &fleet.hosts[4242];
    let pinned_package = fleet.installed(pinned_host).find(|p| Some(p.package.source) == pinned.source);
    vex(&lib, &["add", &glob.alias, "--image", "host-00*", "--state", "false_positive"]);
    if let Some(p) = &pinned_package {
        vex(
            &lib,
            &[
                "add",
                &pinned.id,
                "--image",
                &format!("{}@1", pinned_host.name),
                "--package",
                &p.package.name,
                "--justification",
                "requires_configuration",
            ],
        );
    }

    let mut expected = BTreeSet::new();
    for host in &fleet.hosts {
        for installed in fleet.installed(host) {
            for advisory in records.iter().filter(|a| a.source == Some(installed.package.source)) {
                let Some(fixed) = advisory.affects(host.release, installed.rung) else { continue };
                let hidden_by_glob = advisory.id == glob.id && host.name.starts_with("host-00");
                let hidden_by_pin = advisory.id == pinned.id
                    && host.name == pinned_host.name
                    && pinned_package.as_ref().is_some_and(|p| p.package.name == installed.package.name);
                if hidden_by_glob || hidden_by_pin {
                    continue;
                }
                let version = &fleet.sources[installed.package.source].1;
                let fixed = fixed.map(|f| imagelake_tests::exposure::rung(version, f)).unwrap_or_default();
                expected.insert(format!("{},{},{},{fixed}", host.name, installed.package.name, advisory.id));
            }
        }
    }
    let out = run(lib.command().args([
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT image, package, advisory, fixed_version FROM vulnerabilities",
    ]));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("image,package,advisory,fixed_version"));
    let found: Vec<&str> = lines.collect();
    let answered: BTreeSet<String> = found.iter().map(|l| l.to_string()).collect();
    assert_eq!(answered.len(), found.len(), "a row listed twice");
    let missing: Vec<_> = expected.difference(&answered).take(5).collect();
    let extra: Vec<_> = answered.difference(&expected).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, not expected {extra:?}");
    assert!(expected.len() > 100_000, "the fleet has {} vulnerable rows", expected.len());
    eprintln!("fleet: {} rows of vulnerabilities, as the brute-force check finds", expected.len());
}
