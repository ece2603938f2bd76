//! Structured three-way merges of the files that every package install touches, for `patch`:
//! two installs on one base both rewrite dpkg's `status`, apt's `extended_states`, debconf's
//! databases, the account files and the logs, and a merge by line or by file would call each
//! of them a conflict. Each is merged by its own unit instead: a stanza by package or template
//! name, an account entry by name, a log by what was appended.
//!
//! `base` is the file in the version the patch starts from, `theirs` in the version it goes to,
//! `ours` in the target. The result is `ours` with every unit that changed from `base` to
//! `theirs` carried over, unless `ours` changed that unit differently: a conflict, named.

use std::collections::{HashMap, HashSet};

/// How a file is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RFC 822 stanzas separated by blank lines, keyed by the values of these fields.
    Stanzas(&'static [&'static str]),
    /// `name:...` lines keyed by name; `id` is the field that must stay unique (uid, gid).
    Entries { id: Option<usize> },
    /// A log that only grows: what `theirs` appended is appended to `ours`.
    Log,
}

/// The files merged by structure, and how.
pub const STRUCTURED: [(&str, Kind); 13] = [
    ("/var/lib/dpkg/status", Kind::Stanzas(&["Package", "Architecture"])),
    ("/var/lib/dpkg/available", Kind::Stanzas(&["Package", "Architecture"])),
    ("/var/lib/apt/extended_states", Kind::Stanzas(&["Package", "Architecture"])),
    ("/var/cache/debconf/config.dat", Kind::Stanzas(&["Name"])),
    ("/var/cache/debconf/templates.dat", Kind::Stanzas(&["Name"])),
    ("/var/cache/debconf/passwords.dat", Kind::Stanzas(&["Name"])),
    ("/etc/passwd", Kind::Entries { id: Some(2) }),
    ("/etc/group", Kind::Entries { id: Some(2) }),
    ("/etc/shadow", Kind::Entries { id: None }),
    ("/etc/gshadow", Kind::Entries { id: None }),
    ("/var/log/dpkg.log", Kind::Log),
    ("/var/log/apt/history.log", Kind::Log),
    ("/var/log/apt/term.log", Kind::Log),
];

/// Logs that only grow, besides those of `STRUCTURED`.
pub fn kind_of(path: &str) -> Option<Kind> {
    STRUCTURED
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, k)| *k)
        .or_else(|| (path == "/var/log/alternatives.log" || path == "/var/log/bootstrap.log").then_some(Kind::Log))
}

/// Merges the three versions of a file of `kind`: the merged bytes, or the conflicts found
/// (each naming the unit: a package, a template, an account).
pub fn merge(kind: Kind, base: &[u8], theirs: &[u8], ours: &[u8]) -> Result<Vec<u8>, Vec<String>> {
    match kind {
        Kind::Log => {
            let appended = theirs
                .strip_prefix(base)
                .ok_or_else(|| vec!["the patch rewrote the log, not appended to it".to_string()])?;
            let mut out = ours.to_vec();
            if !out.is_empty() && !out.ends_with(b"\n") && !appended.is_empty() {
                out.push(b'\n');
            }
            out.extend_from_slice(appended);
            Ok(out)
        }
        Kind::Stanzas(fields) => {
            let units = |text: &[u8]| stanzas(&String::from_utf8_lossy(text), fields);
            let mut merged = merge_units(units(base), units(theirs), units(ours))?;
            // In the order dpkg and debconf write them: by name (then architecture).
            merged.sort_by(|(a, _), (b, _)| a.split(':').cmp(b.split(':')));
            // And with one blank line after every stanza.
            Ok(merged.iter().map(|(_, s)| format!("{}\n\n", s.trim_end_matches('\n'))).collect::<String>().into_bytes())
        }
        Kind::Entries { id } => {
            let units = |text: &[u8]| entries(&String::from_utf8_lossy(text));
            let (base, theirs, ours) = (units(base), units(theirs), units(ours));
            let added: HashSet<String> = {
                let before: HashMap<&String, &String> = base.iter().map(|(k, v)| (k, v)).collect();
                theirs.iter().filter(|(k, v)| before.get(k) != Some(&v)).map(|(k, _)| k.clone()).collect()
            };
            let merged = merge_units(base, theirs, ours)?;
            if let Some(field) = id {
                check_ids(&merged, field, &added)?;
            }
            Ok(merged.iter().map(|(_, line)| format!("{line}\n")).collect::<String>().into_bytes())
        }
    }
}

/// Every id (uid, gid) held by one name only: an entry the patch brings whose id another name
/// of the target holds is a conflict.
fn check_ids(merged: &[(String, String)], field: usize, added: &HashSet<String>) -> Result<(), Vec<String>> {
    let mut holders: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, line) in merged {
        if let Some(id) = line.split(':').nth(field) {
            holders.entry(id).or_default().push(name);
        }
    }
    let mut clashes: Vec<String> = holders
        .iter()
        .filter(|(_, names)| names.len() > 1 && names.iter().any(|n| added.contains(*n)))
        .map(|(id, names)| format!("id {id} is held by {} (a uid/gid clash)", names.join(" and ")))
        .collect();
    clashes.sort();
    if clashes.is_empty() { Ok(()) } else { Err(clashes) }
}

/// The three-way merge of keyed units, in `ours`' order, with units the patch adds placed after
/// the unit that precedes them in `theirs` (or at the end): a user the patch adds goes after
/// the one it followed.
fn merge_units(
    base: Vec<(String, String)>,
    theirs: Vec<(String, String)>,
    ours: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, Vec<String>> {
    let map = |v: &[(String, String)]| v.iter().map(|(k, s)| (k.clone(), s.clone())).collect::<HashMap<_, _>>();
    let (b, t) = (map(&base), map(&theirs));
    let mut result = ours;
    let mut conflicts = Vec::new();
    let mut keys: Vec<&String> = base.iter().map(|(k, _)| k).chain(theirs.iter().map(|(k, _)| k)).collect();
    let mut seen = HashSet::new();
    keys.retain(|k| seen.insert(*k));
    for key in keys {
        let (was, now) = (b.get(key), t.get(key));
        if was == now {
            continue;
        }
        let at = result.iter().position(|(k, _)| k == key);
        let mine = at.map(|i| &result[i].1);
        if mine == now {
            continue;
        }
        if mine != was {
            conflicts.push(format!("{key} changed in the target and in the patch differently"));
            continue;
        }
        match (at, now) {
            (Some(i), Some(unit)) => result[i].1 = unit.clone(),
            (Some(i), None) => {
                result.remove(i);
            }
            (None, Some(unit)) => {
                let before = theirs.iter().position(|(k, _)| k == key).and_then(|p| p.checked_sub(1));
                let after = before
                    .and_then(|p| theirs.get(p))
                    .and_then(|(prev, _)| result.iter().position(|(k, _)| k == prev))
                    .map_or(result.len(), |i| i + 1);
                result.insert(after, (key.clone(), unit.clone()));
            }
            (None, None) => {}
        }
    }
    if conflicts.is_empty() { Ok(result) } else { Err(conflicts) }
}

/// The stanzas of a control file, keyed by `fields` (joined by `:`), each as its text.
fn stanzas(text: &str, fields: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n").map(|s| s.trim_matches('\n')).filter(|s| !s.is_empty()) {
        let value = |field: &str| {
            stanza.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::trim)).unwrap_or("")
        };
        let key = fields.iter().map(|f| value(f)).collect::<Vec<_>>().join(":");
        out.push((key, stanza.to_string()));
    }
    out
}

/// The `name:...` lines of an account file, keyed by name.
fn entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| (l.split(':').next().unwrap_or_default().to_string(), l.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: Kind = Kind::Stanzas(&["Package", "Architecture"]);

    fn status(packages: &[(&str, &str)]) -> Vec<u8> {
        packages
            .iter()
            .map(|(p, v)| format!("Package: {p}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {v}\n\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn two_installs_on_one_base_merge_by_package() {
        let base = status(&[("base-files", "1"), ("libc6", "2.36")]);
        let theirs = status(&[("base-files", "1"), ("less", "590"), ("libc6", "2.36"), ("zstd", "1.5")]);
        let ours = status(&[("base-files", "1"), ("libc6", "2.36"), ("nginx-light", "1.22")]);
        let merged = merge(STATUS, &base, &theirs, &ours).unwrap();
        assert_eq!(
            String::from_utf8(merged).unwrap(),
            String::from_utf8(status(&[
                ("base-files", "1"),
                ("less", "590"),
                ("libc6", "2.36"),
                ("nginx-light", "1.22"),
                ("zstd", "1.5")
            ]))
            .unwrap()
        );
        // A package the patch upgrades that the target upgraded otherwise is a conflict, named.
        let ours = status(&[("base-files", "1"), ("libc6", "2.37")]);
        let theirs = status(&[("base-files", "1"), ("libc6", "2.38")]);
        let conflicts = merge(STATUS, &base, &theirs, &ours).unwrap_err();
        assert_eq!(conflicts, ["libc6:amd64 changed in the target and in the patch differently"]);
        // The same change on both sides is no conflict; a removal carries over.
        let theirs = status(&[("libc6", "2.37")]);
        assert_eq!(merge(STATUS, &base, &theirs, &ours).unwrap(), status(&[("libc6", "2.37")]));
    }

    #[test]
    fn accounts_merge_by_name_and_refuse_an_id_clash() {
        let kind = Kind::Entries { id: Some(2) };
        let base = b"root:x:0:0::/root:/bin/sh\n";
        let theirs = b"root:x:0:0::/root:/bin/sh\nmysql:x:101:101::/nonexistent:/bin/false\n";
        let ours = b"root:x:0:0::/root:/bin/sh\nnginx:x:100:100::/nonexistent:/bin/false\n";
        let merged = String::from_utf8(merge(kind, base, theirs, ours).unwrap()).unwrap();
        // The user the patch adds goes after the one it followed there.
        assert_eq!(
            merged.lines().map(|l| l.split(':').next().unwrap()).collect::<Vec<_>>(),
            ["root", "mysql", "nginx"]
        );
        let theirs = b"root:x:0:0::/root:/bin/sh\nmysql:x:100:100::/nonexistent:/bin/false\n";
        let err = merge(kind, base, theirs, ours).unwrap_err();
        assert_eq!(err, ["id 100 is held by mysql and nginx (a uid/gid clash)"]);
    }

    #[test]
    fn logs_merge_by_appending() {
        let merged = merge(Kind::Log, b"a\n", b"a\nthe patch\n", b"a\nthe target\n").unwrap();
        assert_eq!(merged, b"a\nthe target\nthe patch\n");
        assert!(merge(Kind::Log, b"a\n", b"rotated\n", b"a\n").is_err());
        assert_eq!(kind_of("/var/log/dpkg.log"), Some(Kind::Log));
        assert_eq!(kind_of("/etc/motd"), None);
    }
}
