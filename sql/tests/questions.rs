//! The README's questions, run as written there against real checked-in Debian images, each
//! answer checked against an independent tool reading the source trees.
//!
//! Images: `web@1` (debootstrap bookworm + mariadb-server), `web@2` (the same tree with `less`
//! installed by dpkg, an nginx site, a setuid helper, a world-writable file, a second uid-0
//! account, a packaged file edited and one removed) and `plain@1` (a small tree with a copy of
//! libssl and an nginx site on another port).

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use imagelake_sql::Session;
use imagelake_tests::questions::{self, readme_questions};
use imagelake_tests::{dpkg_query, sh, tree};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

fn cells(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    rows
}

fn strings(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter().map(|r| r.iter().map(|c| c.to_string()).collect()).collect()
}

/// Paths below `root` that `find` prints for `args`, as the image shows them ("/etc/x").
fn find(root: &Path, args: &str) -> BTreeSet<String> {
    let out = sh(&format!("cd '{}' && find . {args} -printf '/%P\\n'", root.display()));
    out.lines().map(|l| l.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_readme_question_matches_an_independent_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let (library, t) = questions::library(dir.path()).await;
    let session = Session::open(library.clone()).await.unwrap();
    let questions = readme_questions();
    assert!(questions.len() >= 12, "{} questions", questions.len());
    let images = [("web", "1", &t.web1), ("web", "2", &t.web2), ("plain", "1", &t.plain)];
    // Each question is asked twice: with the small tables kept in memory (a small library, as
    // here) and read through Lance and its indexes (a large library); both answer the same.
    let ask = async |n: u32, replace: &[(&str, &str)]| {
        let mut sql = questions[&n].clone();
        for (from, to) in replace {
            sql = sql.replace(from, to);
        }
        let mut answers = Vec::new();
        for rows in [usize::MAX, 0] {
            library.catalog().keep_small_tables_up_to(rows);
            let answer = session.run(&sql).await.unwrap_or_else(|e| panic!("question {n}: {e}\n{sql}"));
            answers.push(cells(&answer.batches));
        }
        library.catalog().keep_small_tables_up_to(usize::MAX);
        assert_eq!(answers[0], answers[1], "question {n} from memory and through Lance");
        answers.swap_remove(0)
    };

    // 1. dpkg-query over each tree's database.
    let mut expected = Vec::new();
    for (name, version, root) in &images {
        let admin = root.join("var/lib/dpkg");
        if !admin.exists() {
            continue;
        }
        for (package, package_version, _) in dpkg_query(&admin) {
            if package.starts_with("mariadb-server") || package.starts_with("mysql-server") {
                expected.push(vec![name.to_string(), version.to_string(), package, package_version]);
            }
        }
    }
    expected.sort();
    assert!(!expected.is_empty());
    assert_eq!(ask(1, &[]).await, expected, "question 1");

    // 2. find + blake3 over each tree.
    let libssl = std::fs::read(t.web1.join("usr/lib/x86_64-linux-gnu/libssl.so.3")).unwrap();
    let hash = blake3::hash(&libssl).to_hex().to_string();
    let mut expected = Vec::new();
    for (name, version, root) in &images {
        for path in find(root, &format!("-type f -size {}c", libssl.len())) {
            let bytes = std::fs::read(root.join(path.trim_start_matches('/'))).unwrap();
            if blake3::hash(&bytes).to_hex().as_str() == hash {
                expected.push(vec![name.to_string(), version.to_string(), path]);
            }
        }
    }
    expected.sort();
    assert_eq!(expected.len(), 3, "libssl in web@1, web@2 and plain");
    assert_eq!(ask(2, &[("<hash>", &hash)]).await, expected, "question 2");

    // 3. find and diff -r over the two trees, dpkg-query over their databases.
    let (before, after) = (find(&t.web1, "-mindepth 1"), find(&t.web2, "-mindepth 1"));
    let mut files: Vec<(String, String)> = Vec::new();
    files.extend(after.difference(&before).map(|p| (p.clone(), "added".to_string())));
    files.extend(before.difference(&after).map(|p| (p.clone(), "removed".to_string())));
    let diff = Command::new("diff").args(["-rq", "--no-dereference"]).arg(&t.web1).arg(&t.web2).output().unwrap();
    let (file, link) = (format!("Files {}/", t.web1.display()), format!("Symbolic links {}/", t.web1.display()));
    for line in String::from_utf8_lossy(&diff.stdout).lines() {
        if let Some(rest) = line.strip_prefix(&file).or_else(|| line.strip_prefix(&link)) {
            let path = rest.split(" and ").next().unwrap();
            files.push((format!("/{path}"), "modified".to_string()));
        }
    }
    files.sort();
    let mut expected: Vec<Vec<String>> = files
        .into_iter()
        .map(|(path, change)| vec!["file".into(), change, path, String::new(), String::new(), String::new()])
        .collect();
    let (old, new) = (dpkg_query(&t.web1.join("var/lib/dpkg")), dpkg_query(&t.web2.join("var/lib/dpkg")));
    for (package, version, _) in new.difference(&old) {
        assert!(!old.iter().any(|(p, ..)| p == package), "only additions are made");
        expected.push(vec![
            "package".into(),
            "added".into(),
            String::new(),
            package.clone(),
            String::new(),
            version.clone(),
        ]);
    }
    assert!(expected.iter().any(|r| r[3] == "less"));
    assert!(expected.iter().any(|r| r[2] == "/usr/bin/less" && r[1] == "added"));
    assert!(expected.iter().any(|r| r[2] == "/var/lib/dpkg/status" && r[1] == "modified"));
    let mut answer = ask(3, &[]).await;
    answer.sort();
    expected.sort();
    assert_eq!(answer, expected, "question 3");

    // 4. and 6. find -perm.
    let per_image = |args: &str, extra: &dyn Fn(&str) -> bool| {
        let mut rows = Vec::new();
        for (name, version, root) in &images {
            for path in find(root, args).into_iter().filter(|p| extra(p)) {
                rows.push(vec![name.to_string(), version.to_string(), path]);
            }
        }
        rows.sort();
        rows
    };
    let setuid = per_image("-type f -perm -4000", &|_| true);
    assert!(setuid.iter().any(|r| r[2] == "/usr/local/bin/helper"));
    assert_eq!(ask(4, &[]).await, setuid, "question 4");

    // 5. awk over /etc/passwd.
    let awk = sh(&format!("awk -F: '$3 == 0 && $1 != \"root\" {{ print $1 }}' '{}/etc/passwd'", t.web2.display()));
    let expected: Vec<Vec<String>> = awk.lines().map(|l| vec![l.to_string()]).collect();
    assert_eq!(expected, strings(&[&["toor"]]));
    assert_eq!(ask(5, &[]).await, expected, "question 5");

    let mut writable: Vec<Vec<String>> = Vec::new();
    for (name, version, root) in &images {
        let kinds = sh(&format!(
            "cd '{}' && find . -mindepth 1 -perm -0002 ! -type l ! -path ./tmp ! -path './tmp/*' -printf '/%P\\t%y\\n'",
            root.display()
        ));
        for line in kinds.lines() {
            let (path, y) = line.split_once('\t').unwrap();
            let kind = match y {
                "f" => "file",
                "d" => "dir",
                "c" => "char",
                "b" => "block",
                "p" => "fifo",
                "s" => "socket",
                other => panic!("find kind {other}"),
            };
            writable.push(vec![name.to_string(), version.to_string(), path.to_string(), kind.to_string()]);
        }
    }
    writable.sort();
    assert!(writable.iter().any(|r| r[2] == "/srv/drop.txt"));
    assert_eq!(ask(6, &[]).await, writable, "question 6");

    // 7. find -printf %s, the ten biggest.
    let mut sizes: Vec<u64> = Vec::new();
    for (_, _, root) in &images {
        let out = sh(&format!("find '{}' -type f -printf '%s\\n'", root.display()));
        sizes.extend(out.lines().map(|l| l.parse::<u64>().unwrap()));
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let answer: Vec<u64> = ask(7, &[]).await.iter().map(|r| r[3].parse().unwrap()).collect();
    assert_eq!(answer, sizes[..10].to_vec(), "question 7");

    // 8. distinct blake3 of the non-empty regular files of each tree, intersected.
    let contents = |root: &Path| -> BTreeSet<String> {
        tree::walk(root).into_iter().filter(|e| e.kind == "file" && e.size > 0).filter_map(|e| e.content_hash).collect()
    };
    let sets: Vec<(String, BTreeSet<String>)> =
        images.iter().map(|(n, v, root)| (format!("{n}@{v}"), contents(root))).collect();
    let mut expected = Vec::new();
    for (i, (a, sa)) in sets.iter().enumerate() {
        for (b, sb) in sets.iter().skip(i + 1) {
            let shared = sa.intersection(sb).count();
            if shared > 0 {
                expected.push((std::cmp::Reverse(shared), a.clone(), b.clone()));
            }
        }
    }
    expected.sort();
    let expected: Vec<Vec<String>> = expected.into_iter().map(|(n, a, b)| vec![a, b, n.0.to_string()]).collect();
    assert_eq!(ask(8, &[]).await, expected, "question 8");

    // 9. grep -E over each tree's nginx site.
    let mut expected = Vec::new();
    for (name, version, root) in &images {
        let site = root.join("etc/nginx/sites-enabled/default");
        let hit = Command::new("grep").args(["-qE", r"listen\s+80\b"]).arg(&site).status().unwrap().success();
        if hit {
            expected.push(vec![name.to_string(), version.to_string()]);
        }
    }
    assert_eq!(expected, strings(&[&["web", "2"]]));
    assert_eq!(ask(9, &[]).await, expected, "question 9");

    // 10. dpkg-query per tree, counted.
    let mut spread: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (_, _, root) in &images {
        let admin = root.join("var/lib/dpkg");
        if admin.exists() {
            for (package, version, _) in dpkg_query(&admin) {
                if ["base-files", "less", "libc6"].contains(&package.as_str()) {
                    *spread.entry((package, version)).or_default() += 1;
                }
            }
        }
    }
    let expected: Vec<Vec<String>> = spread.into_iter().map(|((p, v), n)| vec![p, v, n.to_string()]).collect();
    assert_eq!(ask(10, &[]).await, expected, "question 10");

    // 11. each tree's os-release, read by the shell.
    let mut releases: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (_, _, root) in &images {
        let out = sh(&format!("(. '{}/etc/os-release' && printf '%s\\t%s' \"$ID\" \"$VERSION_ID\")", root.display()));
        let (id, version) = out.split_once('\t').unwrap();
        *releases.entry((id.to_string(), version.to_string())).or_default() += 1;
    }
    let expected: Vec<Vec<String>> = releases.into_iter().map(|((i, v), n)| vec![i, v, n.to_string()]).collect();
    assert_eq!(ask(11, &[]).await, expected, "question 11");

    // 12. md5sum -c in the tree.
    let check = Command::new("md5sum")
        .args(["-c", "--quiet", "var/lib/dpkg/info/base-files.md5sums"])
        .current_dir(&t.web2)
        .output()
        .unwrap();
    let expected: Vec<Vec<String>> = String::from_utf8_lossy(&check.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": FAILED"))
        .map(|p| vec![format!("/{p}")])
        .collect();
    assert_eq!(expected, strings(&[&["/usr/share/base-files/dot.bashrc"]]));
    assert_eq!(ask(12, &[]).await, expected, "question 12");

    // 13. web@2 was made by a second mke2fs run, so its metadata blocks are its own, but its
    // file contents are nearly all web@1's: at least the bytes of what was added are unique,
    // and they are a small part of what is shared.
    let stats = ask(13, &[]).await;
    let num = |i: usize| stats[0][i].parse::<u64>().unwrap();
    assert_eq!(num(2), 1 << 30);
    let added = sh(&format!("du -sb --apparent-size '{}/usr/bin/less'", t.web2.display()));
    let added: u64 = added.split_whitespace().next().unwrap().parse().unwrap();
    assert!(num(3) >= added && num(3) < num(4) / 20, "unique bytes {} of {} shared", num(3), num(4));

    // `files` and `extents` are stored in segments that versions share: a filter on image_id
    // narrows the scan to a version's segments, any other way of picking a version finds the
    // versions of the rows read; both answer the same, row for row. Once with the versions of
    // every segment kept in memory (a small library), once looked up as a large library does.
    let rows = async |sql: &str| cells(&session.run(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).batches);
    for (table, key, kept) in [
        ("files", "path", true),
        ("extents", "disk_offset", true),
        ("files", "path", false),
        ("extents", "disk_offset", false),
    ] {
        library.catalog().keep_small_tables_up_to(if kept { usize::MAX } else { 0 });
        let all = format!("SELECT image_id, {key}, content_hash FROM {table}");
        let joined = rows(&format!(
            "SELECT t.image_id, t.{key}, t.content_hash FROM {table} t JOIN images i USING (image_id) \
             WHERE i.name = 'web' ORDER BY 1, 2"
        ))
        .await;
        assert!(joined.len() > 1000, "{table}: {} rows", joined.len());
        for filter in ["image_id IN (1, 2)", "image_id = 1 OR image_id = 2", "image_id BETWEEN 1 AND 2", "image_id < 3"]
        {
            assert_eq!(
                rows(&format!("{all} WHERE {filter} ORDER BY 1, 2")).await,
                joined,
                "{table} WHERE {filter}, {kept}"
            );
        }
        let one = rows(&format!("{all} WHERE image_id = 2 ORDER BY 1, 2")).await;
        assert_eq!(one, joined.iter().filter(|r| r[0] == "2").cloned().collect::<Vec<_>>(), "{table}: web@2");
        assert!(rows(&format!("{all} WHERE image_id = 99")).await.is_empty(), "{table}: no version 99");
        assert!(rows(&format!("{all} WHERE image_id = 1 AND image_id = 2")).await.is_empty());
    }
    // Only a filter on image_id narrows the scan of the stored rows to segments: the kept
    // map of every segment's versions (a small library) must not become a filter naming them all.
    // Whether the stored rows are read from memory (`segment@5 IN (SET) (...)` in a filter) or
    // through Lance (`segment IN (...)` pushed into its scan).
    let narrowed = |plan: &str| {
        plan.contains("segment IN")
            || plan
                .split("segment@")
                .skip(1)
                .any(|rest| rest.trim_start_matches(|c: char| c.is_ascii_digit()).starts_with(" IN"))
    };
    let plan = async |sql: &str| format!("{:?}", rows(&format!("EXPLAIN {sql}")).await);
    let by_hash = "SELECT path FROM files WHERE content_hash = 'x'";
    for kept in [usize::MAX, 0] {
        library.catalog().keep_small_tables_up_to(kept);
        assert!(!narrowed(&plan(by_hash).await), "{}", plan(by_hash).await);
        let one = plan(&format!("{by_hash} AND image_id = 1")).await;
        assert!(narrowed(&one), "{one}");
    }
    // A small library's tables are read from memory, a large one's through Lance.
    for (kept, through_lance) in [(usize::MAX, false), (0, true)] {
        library.catalog().keep_small_tables_up_to(kept);
        let packages = plan("SELECT version FROM packages WHERE name = 'less'").await;
        assert_eq!(packages.contains("LanceRead"), through_lance, "{packages}");
    }
    library.catalog().keep_small_tables_up_to(usize::MAX);
    // Two scans of one table in one statement, each narrowed to its own version.
    let same = rows(
        "SELECT count(*) FROM files a JOIN files b ON a.path = b.path AND a.content_hash = b.content_hash \
         WHERE a.image_id = 1 AND b.image_id = 2",
    )
    .await;
    assert!(same[0][0].parse::<u64>().unwrap() > 1000, "{same:?}");
}
