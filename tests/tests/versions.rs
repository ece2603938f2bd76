//! Each package manager's version order (`connectors::packages::versions`) against the
//! manager's own: `dpkg --compare-versions` on 10,000 pairs of real Debian versions (this
//! machine's and the cached Debian trees' package databases: epochs, tildes, binNMUs), and
//! rpm's `labelCompare` (Debian's python3-rpm) on 10,000 pairs of the same versions read as
//! rpm EVRs and of their forms with rpm's caret. Not one disagreement is allowed.

use imagelake_connectors::packages::versions;
use imagelake_tests::{cache_dir, debian_tree};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

/// Every distinct `Version:` of this machine's dpkg database and of the cached Debian trees'.
fn real_versions() -> Vec<String> {
    debian_tree();
    let mut databases = vec![std::path::PathBuf::from("/var/lib/dpkg/status")];
    for tree in ["bookworm-mariadb", "bookworm-minbase", "bookworm-postgresql"] {
        databases.push(cache_dir().join(tree).join("var/lib/dpkg/status"));
    }
    let mut versions = BTreeSet::new();
    for database in databases {
        let text = std::fs::read_to_string(&database).unwrap_or_else(|e| panic!("{}: {e}", database.display()));
        versions.extend(text.lines().filter_map(|l| l.strip_prefix("Version: ")).map(str::to_string));
    }
    let versions: Vec<String> = versions.into_iter().collect();
    // The forms that make version orders hard must be there, or the test proves little.
    let count = |what: fn(&str) -> bool| versions.iter().filter(|v| what(v)).count();
    assert!(versions.len() >= 300, "only {} distinct versions", versions.len());
    assert!(count(|v| v.contains(':')) >= 20, "too few epochs");
    assert!(count(|v| v.contains('~')) >= 10, "too few tildes");
    assert!(count(|v| v.contains("+b")) >= 10, "too few binNMUs");
    versions
}

/// `n` pairs: half drawn at random, half neighbours in text order (which share the longest
/// prefixes, where orders differ in the details), and every version with itself.
fn pairs(versions: &[String], n: usize) -> Vec<(String, String)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    let mut pairs: Vec<(String, String)> = versions.iter().map(|v| (v.clone(), v.clone())).collect();
    while pairs.len() < n {
        let i = next(versions.len());
        let j = if pairs.len().is_multiple_of(2) {
            next(versions.len())
        } else {
            (i + 1 + next(8)).min(versions.len() - 1)
        };
        let (a, b) = (&versions[i], &versions[j]);
        pairs.push(if next(2) == 0 { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) });
    }
    pairs
}

fn sign(order: Ordering) -> i32 {
    order as i32
}

/// The disagreements of `ours` with the answers of an oracle, as lines to print.
fn disagreements(pairs: &[(String, String)], ours: fn(&str, &str) -> Ordering, theirs: &[i32]) -> Vec<String> {
    assert_eq!(theirs.len(), pairs.len(), "the oracle answered {} of {} pairs", theirs.len(), pairs.len());
    pairs
        .iter()
        .zip(theirs)
        .filter(|((a, b), t)| sign(ours(a, b)) != **t)
        .map(|((a, b), t)| format!("{a} vs {b}: ours {}, theirs {t}", sign(ours(a, b))))
        .collect()
}

/// Runs `program args` with `input` on standard input; its standard output, which must be one
/// of -1, 0, 1 per line.
fn oracle(program: &str, args: &[&str], input: String) -> Vec<i32> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect()
}

#[test]
fn dpkg_order_agrees_with_dpkg_on_10000_real_pairs() {
    let pairs = pairs(&real_versions(), 10_000);
    let script = r#"while read -r a b; do
        if dpkg --compare-versions "$a" lt "$b"; then echo -1
        elif dpkg --compare-versions "$a" eq "$b"; then echo 0
        else echo 1; fi
    done"#;
    let input: String = pairs.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    let theirs = oracle("bash", &["-c", script], input);
    let wrong = disagreements(&pairs, versions::dpkg, &theirs);
    assert!(wrong.is_empty(), "{} of {} pairs disagree with dpkg:\n{}", wrong.len(), pairs.len(), wrong.join("\n"));
    assert!(theirs.iter().filter(|t| **t == 0).count() < pairs.len() / 2, "mostly equal pairs prove little");
}

#[test]
fn rpm_order_agrees_with_label_compare_on_10000_pairs() {
    // Debian's versions read as EVRs, and their forms with rpm's caret (a snapshot after a
    // release) in place of `+`.
    let mut evrs = real_versions();
    let carets: Vec<String> = evrs.iter().filter(|v| v.contains('+')).map(|v| v.replace('+', "^")).collect();
    evrs.extend(carets);
    let pairs = pairs(&evrs, 10_000);
    // Split as rpm's EVR: epoch before the first ':', release after the last '-'.
    let script = r#"
import sys, rpm
def evr(s):
    e, _, rest = s.partition(":") if ":" in s and s.split(":", 1)[0].isdigit() else ("0", "", s)
    v, _, r = rest.rpartition("-") if "-" in rest else (rest, "", None)
    return (e, v, r)
for line in sys.stdin:
    a, b = line.split()
    print(rpm.labelCompare(evr(a), evr(b)))
"#;
    let input: String = pairs.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    // Debian's python3-rpm is installed for Debian's python.
    let theirs = oracle("/usr/bin/python3", &["-c", script], input);
    let wrong = disagreements(&pairs, versions::rpm, &theirs);
    assert!(
        wrong.is_empty(),
        "{} of {} pairs disagree with labelCompare:\n{}",
        wrong.len(),
        pairs.len(),
        wrong.join("\n")
    );
}
