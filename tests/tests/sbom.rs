//! SBOMs from stored inventories, checked by the official validators offline
//! (cyclonedx-python-lib's strict JSON validator, spdx-tools) through tests/python/sbom_check.py,
//! their package lists against the managers' own (`dpkg-query`, `rpm -qa`; apk's database as
//! written, no apk binary existing for Debian), every purl through packageurl-python.

use imagelake_tests::{Library, dpkg_query, mkfs_ext, rpm, run, venv_python};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

type Rows = BTreeSet<(String, String, String)>;

/// The three documents of `image` (CycloneDX 1.5 and 1.6, SPDX 2.3), written with `-o` into
/// `dir`; the second CycloneDX 1.6 export, to standard output, must be the same bytes.
fn documents(lib: &Library, image: &str, dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (format, spec) in [("cyclonedx", "1.5"), ("cyclonedx", "1.6"), ("spdx", "2.3")] {
        let file = dir.join(format!("{image}-{format}-{spec}.json"));
        run(lib.command().args(["sbom", image, "--format", format, "--spec-version", spec, "-o"]).arg(&file));
        files.push(file);
    }
    let again = run(lib.command().args(["sbom", image]));
    assert_eq!(again.as_bytes(), std::fs::read(&files[1]).unwrap(), "the same version exported twice differs");
    files
}

/// sbom_check.py's verdict on each file.
fn check(files: &[PathBuf]) -> Vec<Value> {
    let script = imagelake_tests::repo_root().join("tests/python/sbom_check.py");
    let out = run(Command::new(venv_python()).arg(script).args(files));
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Each document is valid, its purls parse and print back as written, and it lists exactly
/// `expected` (name, version, arch).
fn assert_valid_listing(verdicts: &[Value], expected: &Rows) {
    assert_eq!(verdicts.len(), 3);
    for verdict in verdicts {
        let file = &verdict["file"];
        assert_eq!(verdict["errors"], serde_json::json!([]), "{file}: {}", verdict["errors"]);
        assert_eq!(verdict["bad_purls"], serde_json::json!([]), "{file}");
        let listed: Vec<(String, String, String)> =
            verdict["packages"].as_array().unwrap().iter().map(|p| (text(&p[0]), text(&p[1]), text(&p[2]))).collect();
        assert_eq!(listed.len(), expected.len(), "{file}: a package listed twice or missed");
        assert_eq!(&listed.into_iter().collect::<Rows>(), expected, "{file}");
        assert_eq!(verdict["purls"].as_array().unwrap().len(), expected.len(), "{file}: every package has a purl");
    }
}

/// Whether a copyright file points to a file of /usr/share/common-licenses/ by name (not to
/// the folder alone, as "can be found in /usr/share/common-licenses/ ." does).
fn names_common_license(copyright: &str) -> bool {
    copyright
        .split("/usr/share/common-licenses/")
        .skip(1)
        .any(|rest| rest.starts_with(|c: char| c.is_ascii_alphanumeric()))
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn component<'a>(bom: &'a Value, name: &str) -> &'a Value {
    bom["components"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name}"))
}

fn property<'a>(component: &'a Value, name: &str) -> Option<&'a str> {
    component["properties"].as_array()?.iter().find(|p| p["name"] == name)?["value"].as_str()
}

/// A real Debian system (debootstrap minbase + mariadb-server): the SBOMs validate, list what
/// dpkg-query lists, carry the source packages dpkg-query names and the licenses the copyright
/// files state, and describe the system as scanners expect.
#[test]
fn debian_sboms_pass_the_validators_and_list_what_dpkg_lists() {
    let tree = imagelake_tests::debian_tree();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("debian.img");
    mkfs_ext(&tree, &image, "ext4", "900M", &[]);
    let lib = Library::new();
    let id = lib.checkin(&image, "debian")["image_id"].as_i64().unwrap();

    // Source packages and their versions, as dpkg itself reads them.
    let listed = run(Command::new("dpkg-query")
        .arg(format!("--admindir={}", tree.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${Package}\t${source:Package}\t${source:Version}\n"]));
    let sources: Rows = listed
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].into(), f[1].into(), f[2].into())
        })
        .collect();
    let ours: Rows = lib
        .sql(&format!("SELECT name, source, source_version FROM packages WHERE image_id = {id}"))
        .iter()
        .map(|r| (text(&r["name"]), text(&r["source"]), text(&r["source_version"])))
        .collect();
    assert_eq!(ours, sources);
    let differing = sources.iter().filter(|(name, source, _)| name != source).count();
    assert!(differing > 30, "binary packages built from another source: {differing}");

    // Licenses: every package whose copyright file states one has it, and the first it states.
    let licensed = lib.sql(&format!("SELECT name, licenses FROM packages WHERE image_id = {id}"));
    let licenses: BTreeMap<String, Vec<String>> = licensed
        .iter()
        .map(|r| (text(&r["name"]), r["licenses"].as_array().unwrap().iter().map(text).collect()))
        .collect();
    let mut stated = 0;
    for (name, list) in &licenses {
        let copyright =
            std::fs::read_to_string(tree.join(format!("usr/share/doc/{name}/copyright"))).unwrap_or_default();
        let first = copyright.lines().find_map(|l| l.strip_prefix("License:")).map(|v| v.trim().to_string());
        match first.filter(|f| !f.is_empty()) {
            Some(first) => {
                stated += 1;
                let head = first.split(" or ").next().unwrap().split(" and ").next().unwrap().split(" with ").next();
                assert!(list.iter().any(|l| Some(l.as_str()) == head), "{name}: {list:?} lacks {head:?}");
            }
            None if !names_common_license(&copyright) => {
                assert!(list.is_empty(), "{name}: {list:?} from a file that names none")
            }
            None => assert!(!list.is_empty(), "{name}: the file points to common-licenses"),
        }
    }
    assert!(stated > 50, "packages with a machine-readable copyright file: {stated}");

    let files = documents(&lib, "debian", work.path());
    assert_valid_listing(&check(&files), &dpkg_query(&tree.join("var/lib/dpkg")));

    let bom: Value = serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
    let os = bom["components"].as_array().unwrap().iter().find(|c| c["type"] == "operating-system").unwrap();
    assert_eq!((os["name"].as_str(), os["version"].as_str(), os.get("purl")), (Some("debian"), Some("12"), None));
    let libc6 = component(&bom, "libc6");
    let purl = libc6["purl"].as_str().unwrap();
    assert!(purl.starts_with("pkg:deb/debian/libc6@2.36-9%2Bdeb12u") && purl.contains("distro=debian-12"), "{purl}");
    assert!(purl.contains("arch=amd64") && purl.contains("&upstream=glibc"), "{purl}");
    assert_eq!(property(libc6, "aquasecurity:trivy:SrcName"), Some("glibc"));
    assert_eq!(property(libc6, "syft:metadata:source"), Some("glibc"));
    let spdx: Value = serde_json::from_slice(&std::fs::read(&files[2]).unwrap()).unwrap();
    let libc6 = spdx["packages"].as_array().unwrap().iter().find(|p| p["name"] == "libc6").unwrap();
    let version = libc6["versionInfo"].as_str().unwrap();
    assert_eq!(libc6["sourceInfo"], format!("built package from: glibc {version}"));
    assert!(
        spdx["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-OperatingSystem-debian-12"))
    );
}

/// rpm (built by rpmbuild, installed by rpm) and apk trees: valid SBOMs listing what `rpm -qa`
/// and the apk database list; rpm's epoch, release and source rpm in purls and properties;
/// sbom-diff between two apk versions; bad requests are refused by name.
#[test]
fn rpm_and_apk_sboms_and_their_diff() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    let rpms = rpm::build(work.path(), &[("hello", "Epoch: 3\n", 1), ("tiny-tool", "", 1)]);
    std::fs::create_dir_all(p("rpm/etc")).unwrap();
    std::fs::write(p("rpm/etc/os-release"), "ID=rocky\nVERSION_ID=9.4\n").unwrap();
    rpm::install(&rpm::debian_binary(), &p("rpm"), "/var/lib/rpm", "sqlite", &rpms);
    let expected = rpm::query_all(&rpm::debian_binary(), &p("rpm/var/lib/rpm"), "sqlite");
    mkfs_ext(&p("rpm"), &p("rocky.img"), "ext4", "16M", &[]);
    let lib = Library::new();
    lib.checkin(&p("rocky.img"), "rocky");
    let files = documents(&lib, "rocky", work.path());
    assert_valid_listing(&check(&files), &expected);
    let bom: Value = serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
    let hello = component(&bom, "hello");
    assert_eq!(
        hello["purl"],
        "pkg:rpm/rocky/hello@1.2-4?arch=noarch&distro=rocky-9.4&epoch=3&upstream=hello-1.2-4.src.rpm"
    );
    assert_eq!(
        (hello["version"].as_str(), property(hello, "aquasecurity:trivy:SrcEpoch")),
        (Some("3:1.2-4"), Some("3"))
    );
    assert_eq!(hello["licenses"], serde_json::json!([{ "license": { "id": "MIT" } }]));

    // apk: two versions of one system; the database in Alpine's documented format.
    let apk = |version: &str, records: &[(&str, &str, &str)]| {
        let tree = p(&format!("apk-{version}"));
        std::fs::create_dir_all(tree.join("lib/apk/db")).unwrap();
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/os-release"), "ID=alpine\nVERSION_ID=3.20.3\n").unwrap();
        let db: String = records
            .iter()
            .map(|(name, version, origin)| {
                format!("C:Q1abc=\nP:{name}\nV:{version}\nA:x86_64\nL:MIT\no:{origin}\nI:4096\n\n")
            })
            .collect();
        std::fs::write(tree.join("lib/apk/db/installed"), db).unwrap();
        let image = p(&format!("alpine-{version}.img"));
        mkfs_ext(&tree, &image, "ext4", "8M", &[]);
        lib.checkin(&image, "alpine");
        records.iter().map(|(n, v, _)| (n.to_string(), v.to_string(), "x86_64".to_string())).collect::<Rows>()
    };
    let first = apk(
        "1",
        &[("musl", "1.2.5-r0", "musl"), ("busybox-binsh", "1.36.1-r29", "busybox"), ("zlib", "1.3.1-r2", "zlib")],
    );
    apk("2", &[("musl", "1.2.5-r1", "musl"), ("zlib", "1.3.1-r1", "zlib"), ("g++", "13.2.1_git20240309-r0", "gcc")]);
    let files = documents(&lib, "alpine@1", work.path());
    assert_valid_listing(&check(&files), &first);
    let diff: Value =
        serde_json::from_str(&run(lib.command().args(["sbom-diff", "alpine@1", "alpine@2", "--json"]))).unwrap();
    let names =
        |change: &str| -> Vec<String> { diff[change].as_array().unwrap().iter().map(|e| text(&e["name"])).collect() };
    assert_eq!(
        (names("added"), names("removed"), names("upgraded"), names("downgraded")),
        (
            vec!["g++".to_string()],
            vec!["busybox-binsh".to_string()],
            vec!["musl".to_string()],
            vec!["zlib".to_string()]
        )
    );
    assert_eq!(
        diff["added"][0]["new_purl"],
        "pkg:apk/alpine/g%2B%2B@13.2.1_git20240309-r0?arch=x86_64&distro=alpine-3.20.3&upstream=gcc"
    );
    assert_eq!(diff["upgraded"][0]["old_version"], "1.2.5-r0");
    let rows = lib.sql("SELECT change, name FROM sbom_diff('alpine@1', 'alpine@2') ORDER BY name");
    assert_eq!(rows.len(), 4);

    // Requests that cannot be answered say which part is wrong (exit status 2).
    for (args, says) in [
        (vec!["sbom", "nosuch"], "nosuch"),
        (vec!["sbom", "alpine", "--format", "xml"], "unknown format \"xml\""),
        (vec!["sbom", "alpine", "--spec-version", "1.2"], "spec version 1.2"),
    ] {
        let out = lib.command().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
