//! The pure half of `patch`: what to do at a path the patch changes, decided from the three
//! trees alone (before any content is read), and what that decision comes to under
//! `on_conflict` once the contents are merged: the rows the patch reports, and the state the
//! target takes. No I/O here; `mod.rs` reads, fetches, merges and edits around it.

use super::OnConflict;
use crate::catalog::FileKind;
use crate::merge;
use crate::tree::{Entry, Meta, Tree};

/// Caches their tool rebuilds when they are missing: dropped when both sides changed them.
const CACHES: [&str; 3] =
    ["/var/cache/apt/pkgcache.bin", "/var/cache/apt/srcpkgcache.bin", "/var/cache/ldconfig/aux-cache"];

/// Copies of a previous state, and a compressed log of the last run only: the target's are
/// kept when both sides changed them.
const BACKUPS: [&str; 9] = [
    "/var/lib/dpkg/status-old",
    "/var/cache/debconf/config.dat-old",
    "/var/cache/debconf/templates.dat-old",
    "/var/cache/debconf/passwords.dat-old",
    "/etc/passwd-",
    "/etc/group-",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/var/log/apt/eipp.log.xz",
];

/// A path's entry in one tree, if it has one.
pub(super) type State<'a> = Option<&'a Entry>;

/// A three-way decision at one path, before contents are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The target has the patch's state already.
    Same,
    /// The target still has the state the patch starts from: the patch's is applied.
    Apply,
    /// Both changed a file merged unit by unit (`merge::STRUCTURED`).
    Merge(merge::Kind),
    /// Both changed a cache its tool remakes when missing: removed.
    Drop,
    /// Both changed a backup of a previous state: the target's is kept.
    Keep,
    /// Both changed `/etc/ld.so.cache`: made anew by ldconfig from the result.
    Rebuild,
    /// Anything else both changed, and why, for a person.
    Conflict(String),
}

/// What became of a path the patch changes, in the target: a patch row's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The target had the state the patch starts from, and took the patch's.
    Applied,
    /// The target had the patch's state already.
    Same,
    /// Both changed a structured file: merged unit by unit.
    Merged,
    /// `/etc/ld.so.cache`, made anew from the libraries of the result.
    Rebuilt,
    /// A cache both changed, removed (its tool rebuilds it).
    Dropped,
    /// A backup both changed: the target's stays.
    Kept,
    /// A conflict left unresolved (`fail`), or a unit of a merge both changed differently.
    Conflict,
    /// A conflict resolved by keeping the target's state.
    Ours,
    /// A conflict resolved by applying the patch's state.
    Theirs,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Same => "same",
            Outcome::Merged => "merged",
            Outcome::Rebuilt => "rebuilt",
            Outcome::Dropped => "dropped",
            Outcome::Kept => "kept",
            Outcome::Conflict => "conflict",
            Outcome::Ours => "ours",
            Outcome::Theirs => "theirs",
        }
    }

    /// A conflict, however it was resolved: what `PatchSummary::conflicts` counts.
    pub fn is_conflict(self) -> bool {
        matches!(self, Outcome::Conflict | Outcome::Ours | Outcome::Theirs)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that widths (`{:<8}`) apply.
        f.pad(self.as_str())
    }
}

/// The state the target takes at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// None: its own stays (for `/etc/ld.so.cache`, until the edit makes it anew).
    Nothing,
    /// The patch's (`theirs`).
    Theirs,
    /// Nothing at all: the path is removed, if the target has it.
    Removal,
    /// The merge of the three sides.
    Merged,
}

/// What a decision comes to: the patch's rows for the path (outcome, detail), and the state
/// the target takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolution {
    pub rows: Vec<(Outcome, String)>,
    pub take: Take,
}

/// The decision at `path`, or None when the patch leaves it alone (`base` and `theirs`
/// agree there). `base` is the version the patch starts from, `theirs` the one it goes to,
/// `ours` the target.
pub(crate) fn decide(path: &str, base: &Tree, theirs: &Tree, ours: &Tree) -> Option<Decision> {
    let (b, th, ou) = (base.get(path), theirs.get(path), ours.get(path));
    if same(b, th) {
        return None;
    }
    Some(if same(ou, th) {
        Decision::Same
    } else if same(ou, b) {
        Decision::Apply
    } else if let (Some(kind), true) = (merge::kind_of(path), [b, th, ou].iter().all(|e| is_file(*e))) {
        Decision::Merge(kind)
    } else if CACHES.contains(&path) {
        Decision::Drop
    } else if BACKUPS.contains(&path) {
        Decision::Keep
    } else if path == crate::derived::LD_CACHE && ou.is_some() && th.is_some() {
        Decision::Rebuild
    } else if th.is_none() && ou.is_some_and(|e| e.kind == FileKind::Dir) && added_under(path, base, ours) {
        Decision::Conflict("the patch removes the directory, and the target added entries under it".into())
    } else {
        Decision::Conflict(format!("the target has {}, the patch changes {} to {}", state(ou), state(b), state(th)))
    })
}

/// What `decision` comes to under `on_conflict`. `theirs` is the patch's state at the path;
/// `merge` says, for a `Merge`, whether the three sides merged (`Err` names the units both
/// changed differently: one `conflict` row each, and under `theirs` the patch's state is
/// taken whole); other decisions ignore it.
pub(crate) fn resolve(
    decision: &Decision,
    theirs: State,
    merge: Result<(), &[String]>,
    on_conflict: OnConflict,
) -> Resolution {
    let one = |outcome: Outcome, detail: String, take: Take| Resolution { rows: vec![(outcome, detail)], take };
    match decision {
        Decision::Same => one(Outcome::Same, "the target has the patch's state already".into(), Take::Nothing),
        Decision::Apply => one(Outcome::Applied, state(theirs), Take::Theirs),
        Decision::Drop => {
            one(Outcome::Dropped, "a cache both sides changed: its tool rebuilds it when missing".into(), Take::Removal)
        }
        Decision::Keep => one(
            Outcome::Kept,
            "a backup or last-run log both sides changed: the target's is kept".into(),
            Take::Nothing,
        ),
        Decision::Rebuild => {
            one(Outcome::Rebuilt, "made anew by ldconfig from the libraries of the result".into(), Take::Nothing)
        }
        Decision::Merge(kind) => match merge {
            Ok(()) => one(Outcome::Merged, describe(*kind), Take::Merged),
            Err(units) => Resolution {
                rows: units.iter().map(|unit| (Outcome::Conflict, unit.clone())).collect(),
                take: if on_conflict == OnConflict::Theirs { Take::Theirs } else { Take::Nothing },
            },
        },
        Decision::Conflict(why) => match on_conflict {
            OnConflict::Fail => one(Outcome::Conflict, why.clone(), Take::Nothing),
            OnConflict::Ours => one(Outcome::Ours, why.clone(), Take::Nothing),
            OnConflict::Theirs => one(Outcome::Theirs, why.clone(), Take::Theirs),
        },
    }
}

/// The owner, permissions and time of a merged file: the target's (else the patch's, else
/// root's 0644), at the later of the two sides' times.
pub(super) fn merged_meta(ours: State, theirs: State) -> Meta {
    let mut meta = ours
        .map(|e| e.meta())
        .unwrap_or_else(|| theirs.map(|e| e.meta()).unwrap_or(Meta { mode: 0o644, uid: 0, gid: 0, mtime: 0 }));
    meta.mtime = theirs.map_or(meta.mtime, |e| e.mtime).max(meta.mtime);
    meta
}

fn describe(kind: merge::Kind) -> String {
    match kind {
        merge::Kind::Stanzas(fields) => format!("merged stanza by stanza (by {})", fields.join(" and ")),
        merge::Kind::Entries { .. } => "merged entry by entry (by name)".into(),
        merge::Kind::Log => "merged by appending what the patch logged".into(),
    }
}

/// True when `ours` has an entry under directory `path` that `base` does not.
fn added_under(path: &str, base: &Tree, ours: &Tree) -> bool {
    let prefix = format!("{path}/");
    ours.range(prefix.clone()..).take_while(|(p, _)| p.starts_with(&prefix)).any(|(p, _)| !base.contains_key(p))
}

fn same(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.same(b),
        (None, None) => true,
        _ => false,
    }
}

fn is_file(e: Option<&Entry>) -> bool {
    e.is_none_or(|e| e.kind == FileKind::File)
}

/// A state, for a person: "absent", "a file of 120 bytes", "a directory", ...
fn state(e: Option<&Entry>) -> String {
    match e {
        None => "absent".into(),
        Some(e) if e.kind == FileKind::File => {
            format!("a file of {} bytes ({:o}, {}:{})", e.size, e.mode, e.uid, e.gid)
        }
        Some(e) if e.kind == FileKind::Symlink => format!("a link to {}", e.link_target.as_deref().unwrap_or("?")),
        Some(e) if e.kind == FileKind::Dir => format!("a directory ({:o}, {}:{})", e.mode, e.uid, e.gid),
        Some(e) => format!("a {}", e.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::tests::{entry, tree};
    use OnConflict::{Fail, Ours, Theirs};

    /// Decides `path` in the trees `[base, theirs, ours]`, resolves the decision under
    /// `on_conflict` with `merge` (for a merge: `Err` holds the units in conflict), and
    /// compares the decision, the rows (`outcome: detail`) and what the target takes with
    /// `expect`, line by line.
    fn check(
        path: &str,
        [base, theirs, ours]: [&[(&str, &str)]; 3],
        on_conflict: OnConflict,
        merge: Result<(), &[&str]>,
        expect: &str,
    ) {
        let (base, theirs, ours) = (tree(base), tree(theirs), tree(ours));
        let got = match decide(path, &base, &theirs, &ours) {
            None => "untouched".to_string(),
            Some(decision) => {
                let units: Vec<String> = merge.err().unwrap_or_default().iter().map(|u| u.to_string()).collect();
                let merge = if merge.is_ok() { Ok(()) } else { Err(units.as_slice()) };
                let Resolution { rows, take } = resolve(&decision, theirs.get(path), merge, on_conflict);
                let rows = rows.iter().map(|(outcome, detail)| format!("{outcome}: {detail}\n"));
                format!("{decision:?}\n{}takes {take:?}", rows.collect::<String>())
            }
        };
        let expect: Vec<&str> = expect.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        assert_eq!(got.lines().collect::<Vec<_>>(), expect, "\n{got}");
    }

    const MOTD_A: &[(&str, &str)] = &[("/etc/motd", "file:a")];
    const MOTD_B: &[(&str, &str)] = &[("/etc/motd", "file:bb")];
    const MOTD_C: &[(&str, &str)] = &[("/etc/motd", "file:ccc")];
    const NONE: &[(&str, &str)] = &[];

    #[test]
    fn a_path_the_patch_does_not_change_is_untouched() {
        check("/etc/motd", [MOTD_A, MOTD_A, MOTD_B], Fail, Ok(()), "untouched");
        check("/etc/motd", [NONE, NONE, MOTD_B], Fail, Ok(()), "untouched");
    }

    #[test]
    fn same_when_the_target_has_the_patchs_state() {
        check(
            "/etc/motd",
            [MOTD_A, MOTD_B, MOTD_B],
            Fail,
            Ok(()),
            "Same
             same: the target has the patch's state already
             takes Nothing",
        );
        // A directory, by permissions and owners.
        let open = &[("/opt", "dir")];
        check(
            "/opt",
            [&[("/opt", "dir:700")], open, open],
            Fail,
            Ok(()),
            "Same
             same: the target has the patch's state already
             takes Nothing",
        );
    }

    #[test]
    fn applied_when_the_target_has_the_state_the_patch_starts_from() {
        check(
            "/etc/motd",
            [MOTD_A, MOTD_B, MOTD_A],
            Fail,
            Ok(()),
            "Apply
             applied: a file of 2 bytes (644, 0:0)
             takes Theirs",
        );
        check(
            "/etc/motd",
            [NONE, MOTD_B, NONE],
            Fail,
            Ok(()),
            "Apply
             applied: a file of 2 bytes (644, 0:0)
             takes Theirs",
        );
        check(
            "/etc/motd",
            [MOTD_A, NONE, MOTD_A],
            Fail,
            Ok(()),
            "Apply
             applied: absent
             takes Theirs",
        );
        check(
            "/etc/motd",
            [MOTD_A, &[("/etc/motd", "link:issue")], MOTD_A],
            Fail,
            Ok(()),
            "Apply
             applied: a link to issue
             takes Theirs",
        );
    }

    #[test]
    fn merged_when_both_changed_a_structured_file() {
        let status = |content| [("/var/lib/dpkg/status", content)];
        check(
            "/var/lib/dpkg/status",
            [&status("file:a"), &status("file:bb"), &status("file:ccc")],
            Fail,
            Ok(()),
            r#"Merge(Stanzas(["Package", "Architecture"]))
               merged: merged stanza by stanza (by Package and Architecture)
               takes Merged"#,
        );
        let passwd = |content| [("/etc/passwd", content)];
        check(
            "/etc/passwd",
            [&passwd("file:a"), &passwd("file:bb"), &passwd("file:ccc")],
            Fail,
            Ok(()),
            "
            Merge(Entries { id: Some(2) })
            merged: merged entry by entry (by name)
            takes Merged",
        );
        // A side without the file merges as an empty one.
        let log = |content| [("/var/log/dpkg.log", content)];
        check(
            "/var/log/dpkg.log",
            [NONE, &log("file:bb"), &log("file:ccc")],
            Fail,
            Ok(()),
            "
            Merge(Log)
            merged: merged by appending what the patch logged
            takes Merged",
        );
    }

    #[test]
    fn a_merge_that_fails_is_a_conflict_per_unit_under_every_on_conflict() {
        let status = |content| [("/var/lib/dpkg/status", content)];
        let sides: [&[(&str, &str)]; 3] = [&status("file:a"), &status("file:bb"), &status("file:ccc")];
        let units: &[&str] = &["less changed in the target and in the patch differently", "vim changed too"];
        let decision = r#"Merge(Stanzas(["Package", "Architecture"]))"#;
        let rows = "conflict: less changed in the target and in the patch differently
                    conflict: vim changed too";
        check("/var/lib/dpkg/status", sides, Fail, Err(units), &format!("{decision}\n{rows}\ntakes Nothing"));
        check("/var/lib/dpkg/status", sides, Ours, Err(units), &format!("{decision}\n{rows}\ntakes Nothing"));
        check("/var/lib/dpkg/status", sides, Theirs, Err(units), &format!("{decision}\n{rows}\ntakes Theirs"));
    }

    #[test]
    fn a_structured_path_that_is_not_a_file_on_every_side_is_a_conflict() {
        let status = |spec| [("/var/lib/dpkg/status", spec)];
        check(
            "/var/lib/dpkg/status",
            [&status("file:a"), &status("file:bb"), &status("link:x")],
            Fail,
            Ok(()),
            r#"
            Conflict("the target has a link to x, the patch changes a file of 1 bytes (644, 0:0) to a file of 2 bytes (644, 0:0)")
            conflict: the target has a link to x, the patch changes a file of 1 bytes (644, 0:0) to a file of 2 bytes (644, 0:0)
            takes Nothing"#,
        );
    }

    #[test]
    fn rebuilt_when_both_changed_ld_so_cache() {
        let cache = |content| [("/etc/ld.so.cache", content)];
        check(
            "/etc/ld.so.cache",
            [&cache("file:a"), &cache("file:bb"), &cache("file:ccc")],
            Fail,
            Ok(()),
            "
            Rebuild
            rebuilt: made anew by ldconfig from the libraries of the result
            takes Nothing",
        );
        // Removed by the patch: nothing to rebuild, a conflict.
        check(
            "/etc/ld.so.cache",
            [&cache("file:a"), NONE, &cache("file:ccc")],
            Fail,
            Ok(()),
            r#"
            Conflict("the target has a file of 3 bytes (644, 0:0), the patch changes a file of 1 bytes (644, 0:0) to absent")
            conflict: the target has a file of 3 bytes (644, 0:0), the patch changes a file of 1 bytes (644, 0:0) to absent
            takes Nothing"#,
        );
    }

    #[test]
    fn dropped_when_both_changed_a_cache() {
        let cache = |content| [("/var/cache/apt/pkgcache.bin", content)];
        check(
            "/var/cache/apt/pkgcache.bin",
            [&cache("file:a"), &cache("file:bb"), &cache("file:ccc")],
            Fail,
            Ok(()),
            "
            Drop
            dropped: a cache both sides changed: its tool rebuilds it when missing
            takes Removal",
        );
    }

    #[test]
    fn kept_when_both_changed_a_backup() {
        let backup = |content| [("/etc/passwd-", content)];
        check(
            "/etc/passwd-",
            [&backup("file:a"), &backup("file:bb"), &backup("file:ccc")],
            Fail,
            Ok(()),
            "
            Keep
            kept: a backup or last-run log both sides changed: the target's is kept
            takes Nothing",
        );
    }

    #[test]
    fn a_conflict_is_resolved_by_on_conflict() {
        let decision = r#"Conflict("the target has a file of 3 bytes (644, 0:0), the patch changes a file of 1 bytes (644, 0:0) to a file of 2 bytes (644, 0:0)")"#;
        let why = "the target has a file of 3 bytes (644, 0:0), the patch changes a file of 1 bytes (644, 0:0) to a file of 2 bytes (644, 0:0)";
        let sides = [MOTD_A, MOTD_B, MOTD_C];
        check("/etc/motd", sides, Fail, Ok(()), &format!("{decision}\nconflict: {why}\ntakes Nothing"));
        check("/etc/motd", sides, Ours, Ok(()), &format!("{decision}\nours: {why}\ntakes Nothing"));
        check("/etc/motd", sides, Theirs, Ok(()), &format!("{decision}\ntheirs: {why}\ntakes Theirs"));
    }

    #[test]
    fn a_conflict_names_each_sides_state() {
        check(
            "/srv",
            [&[("/srv", "dir")], &[("/srv", "fifo")], &[("/srv", "dir:700")]],
            Fail,
            Ok(()),
            r#"
            Conflict("the target has a directory (700, 0:0), the patch changes a directory (755, 0:0) to a fifo")
            conflict: the target has a directory (700, 0:0), the patch changes a directory (755, 0:0) to a fifo
            takes Nothing"#,
        );
        check(
            "/etc/motd",
            [NONE, MOTD_B, MOTD_C],
            Ours,
            Ok(()),
            r#"
            Conflict("the target has a file of 3 bytes (644, 0:0), the patch changes absent to a file of 2 bytes (644, 0:0)")
            ours: the target has a file of 3 bytes (644, 0:0), the patch changes absent to a file of 2 bytes (644, 0:0)
            takes Nothing"#,
        );
    }

    #[test]
    fn removing_a_directory_the_target_added_entries_under_is_a_conflict() {
        let base: &[(&str, &str)] = &[("/opt", "dir"), ("/opt/a", "file:a")];
        let ours: &[(&str, &str)] = &[("/opt", "dir:700"), ("/opt/a", "file:a"), ("/opt/b", "file:b")];
        check(
            "/opt",
            [base, NONE, ours],
            Fail,
            Ok(()),
            r#"
            Conflict("the patch removes the directory, and the target added entries under it")
            conflict: the patch removes the directory, and the target added entries under it
            takes Nothing"#,
        );
        check(
            "/opt",
            [base, NONE, ours],
            Theirs,
            Ok(()),
            r#"
            Conflict("the patch removes the directory, and the target added entries under it")
            theirs: the patch removes the directory, and the target added entries under it
            takes Theirs"#,
        );
        // Without entries of its own under it, the generic conflict; `/optx` is not under it.
        let ours: &[(&str, &str)] = &[("/opt", "dir:700"), ("/opt/a", "file:a"), ("/optx", "file:b")];
        check(
            "/opt",
            [base, NONE, ours],
            Fail,
            Ok(()),
            r#"
            Conflict("the target has a directory (700, 0:0), the patch changes a directory (755, 0:0) to absent")
            conflict: the target has a directory (700, 0:0), the patch changes a directory (755, 0:0) to absent
            takes Nothing"#,
        );
    }

    #[test]
    fn outcomes_read_as_lowercase_words() {
        let all = [
            (Outcome::Applied, false),
            (Outcome::Same, false),
            (Outcome::Merged, false),
            (Outcome::Rebuilt, false),
            (Outcome::Dropped, false),
            (Outcome::Kept, false),
            (Outcome::Conflict, true),
            (Outcome::Ours, true),
            (Outcome::Theirs, true),
        ];
        let got: Vec<String> = all
            .iter()
            .map(|(o, _)| format!("{o} {} {}", serde_json::to_string(o).unwrap_or_default(), o.is_conflict()))
            .collect();
        let expect: Vec<String> = all.iter().map(|(o, c)| format!("{0} \"{0}\" {c}", o.as_str())).collect();
        assert_eq!(got, expect);
        assert_eq!(
            all.map(|(o, _)| o.as_str()),
            ["applied", "same", "merged", "rebuilt", "dropped", "kept", "conflict", "ours", "theirs"]
        );
        assert_eq!(format!("[{:<8}]", Outcome::Ours), "[ours    ]");
    }

    #[test]
    fn a_merged_file_keeps_the_targets_owner_at_the_later_time() {
        let at = |spec: &str, mode: u32, uid: u32, mtime: i64| Entry { mode, uid, mtime, ..entry(spec) };
        let (ours, theirs) = (at("file:a", 0o600, 5, 10), at("file:b", 0o644, 0, 20));
        let meta = |m: Meta| (m.mode, m.uid, m.gid, m.mtime);
        assert_eq!(meta(merged_meta(Some(&ours), Some(&theirs))), (0o600, 5, 0, 20));
        assert_eq!(meta(merged_meta(Some(&theirs), Some(&ours))), (0o644, 0, 0, 20));
        assert_eq!(meta(merged_meta(None, Some(&theirs))), (0o644, 0, 0, 20));
        assert_eq!(meta(merged_meta(Some(&ours), None)), (0o600, 5, 0, 10));
        assert_eq!(meta(merged_meta(None, None)), (0o644, 0, 0, 0));
    }
}
