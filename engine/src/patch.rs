//! `patch(target, from, to)`: carries diff(from, to) onto `target`, three-way at file level,
//! and makes the next version of `target` with the offline edits of `edit.rs`.
//!
//! For every path that differs between `from` and `to` (in the root filesystems):
//! - the target already has `to`'s state: nothing to do (`same`);
//! - the target still has `from`'s state: `to`'s state is applied (`applied`);
//! - the target changed it too: a file of `merge::STRUCTURED` (dpkg's status, debconf's
//!   databases, the account files, logs) is merged unit by unit (`merged`, or one `conflict`
//!   row per unit both sides changed); `/etc/ld.so.cache` is made anew by ldconfig from the
//!   libraries of the result (`rebuilt`); a cache its tool remakes when missing (apt's package
//!   caches, ldconfig's aux-cache) is removed (`dropped`); a backup of a previous state
//!   (`status-old`, `passwd-`) is the target's (`kept`); anything else is a `conflict`.
//!
//! Conflicts are resolved by `on_conflict`: `fail` (nothing is written), `ours` (the target's
//! state is kept) or `theirs` (`to`'s state is applied).

use crate::catalog::FileKind;
use crate::edit::{Change, EditSummary};
use crate::locks::Scratch;
use crate::merge;
use crate::tree::{Entry, Meta, Tree};
use crate::{Error, Library, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// What to do with a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Make no version.
    Fail,
    /// Keep the target's state.
    Ours,
    /// Apply the patch's state.
    Theirs,
}

impl std::str::FromStr for OnConflict {
    type Err = Error;
    fn from_str(s: &str) -> Result<OnConflict> {
        match s {
            "fail" => Ok(OnConflict::Fail),
            "ours" => Ok(OnConflict::Ours),
            "theirs" => Ok(OnConflict::Theirs),
            other => Err(Error::User(format!("on_conflict is fail, ours or theirs, not {other:?}"))),
        }
    }
}

/// One path the patch changes, and what became of it in the target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PatchRow {
    pub path: String,
    /// applied, same, merged, rebuilt, dropped, kept, conflict, ours (a conflict resolved by
    /// keeping the target's), theirs (resolved by applying the patch's).
    pub outcome: String,
    pub detail: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PatchSummary {
    pub target: String,
    pub from: String,
    pub to: String,
    /// The new version; None when nothing was written (a conflict under `fail`, or nothing
    /// to change).
    pub made: Option<EditSummary>,
    pub rows: Vec<PatchRow>,
    pub conflicts: usize,
    pub seconds: f64,
}

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
type State<'a> = Option<&'a Entry>;

/// A three-way decision, before contents are read.
enum Plan {
    Same,
    Apply,
    Merge(merge::Kind),
    Drop,
    Keep,
    Rebuild,
    Conflict(String),
}

impl Library {
    /// Applies diff(`from`, `to`) to `target`, making its next version (see the module docs).
    pub async fn patch(&self, target: &str, from: &str, to: &str, on_conflict: OnConflict) -> Result<PatchSummary> {
        let started = Instant::now();
        let label = |i: &crate::catalog::ImageRow| format!("{}@{}", i.name, i.version);
        let (t, f, o) = tokio::try_join!(self.resolve(target), self.resolve(from), self.resolve(to))?;
        let tree = |image: &crate::catalog::ImageRow| {
            let (label, id) = (label(image), image.image_id);
            async move {
                let (partition, _, _) = self.root_filesystem(&label, id).await?;
                self.tree(id, partition).await
            }
        };
        // The target's tree is read once, for the decisions and for the edit.
        let target_id = t.image_id.to_string();
        let (edited, base, theirs) = tokio::try_join!(self.edit_parent(&target_id), tree(&f), tree(&o))?;
        crate::trace::phase("patch: three trees read");
        let (ours, base, theirs) = (&edited.tree, &base, &theirs);

        // Every path that differs between from and to, with its three states.
        let mut paths: Vec<&String> = base.keys().chain(theirs.keys()).collect();
        paths.sort();
        paths.dedup();
        let mut rows = Vec::new();
        // Per path: the decision, and the states in from, to and the target.
        let mut decided: BTreeMap<String, (Plan, State, State, State)> = BTreeMap::new();
        for path in paths {
            let (b, th, ou) = (base.get(path), theirs.get(path), ours.get(path));
            if same(b, th) {
                continue;
            }
            let plan = if same(ou, th) {
                Plan::Same
            } else if same(ou, b) {
                Plan::Apply
            } else if let (Some(kind), true) = (merge::kind_of(path), [b, th, ou].iter().all(|e| is_file(*e))) {
                Plan::Merge(kind)
            } else if CACHES.contains(&path.as_str()) {
                Plan::Drop
            } else if BACKUPS.contains(&path.as_str()) {
                Plan::Keep
            } else if path == crate::derived::LD_CACHE && ou.is_some() && th.is_some() {
                Plan::Rebuild
            } else if th.is_none() && ou.is_some_and(|e| e.kind == FileKind::Dir) && added_under(path, base, ours) {
                Plan::Conflict("the patch removes the directory, and the target added entries under it".into())
            } else {
                Plan::Conflict(format!("the target has {}, the patch changes {} to {}", state(ou), state(b), state(th)))
            };
            decided.insert(path.clone(), (plan, b, th, ou));
        }

        // Contents: every file the patch brings, and all three sides of every merge.
        let scratch = Scratch::new(self.root(), "patch")?;
        let mut wanted: [Vec<(String, u64)>; 3] = Default::default();
        for (plan, b, th, ou) in decided.values() {
            let sides = match plan {
                Plan::Apply | Plan::Conflict(_) => [None, None, *th],
                Plan::Merge(_) => [*ou, *b, *th],
                _ => [None, None, None],
            };
            for (side, e) in sides.into_iter().enumerate() {
                wanted[side].extend(e.and_then(content));
            }
        }
        // A rebuilt ld.so.cache reads the target's libraries: fetched with the rest.
        let rebuild = decided.values().any(|d| matches!(d.0, Plan::Rebuild));
        if rebuild {
            wanted[0].extend(crate::derived::known_inputs(ours));
        }
        for (side, wanted) in wanted.iter_mut().enumerate() {
            let dir = scratch.dir.join(side.to_string());
            std::fs::create_dir(&dir)
                .map_err(|e| Error::Io { context: format!("creating {}", dir.display()), error: e })?;
            wanted.sort();
            wanted.dedup();
        }
        // The target's pieces are known from its disk map, read for the edit.
        let side = |i: usize, image: &crate::catalog::ImageRow| {
            let extents = (i == 0).then_some(edited.extents.as_slice());
            self.materialize(image.image_id, extents, &wanted[i], scratch.dir.join(i.to_string()))
        };
        // Meanwhile the edit prepares its scratch filesystem; a failure there matters only if
        // there is something to write.
        let fetch = async { tokio::try_join!(side(0, &t), side(1, &f), side(2, &o)) };
        let (prepared, fetched) = tokio::join!(self.prepare_edit(&edited), fetch);
        fetched?;
        crate::trace::phase("patch: contents fetched, edit prepared");
        let file_of = |side: usize, e: &Entry| {
            scratch.dir.join(side.to_string()).join(e.content_hash.clone().unwrap_or_default())
        };

        let mut changes = Vec::new();
        let mut conflicts = 0;
        let merged_dir = scratch.dir.join("merged");
        std::fs::create_dir(&merged_dir)
            .map_err(|e| Error::Io { context: "creating the merge folder".into(), error: e })?;
        for (path, (plan, b, th, ou)) in &decided {
            let row = |outcome: &str, detail: String| PatchRow { path: path.clone(), outcome: outcome.into(), detail };
            match plan {
                Plan::Same => rows.push(row("same", "the target has the patch's state already".into())),
                Plan::Apply => {
                    changes.extend(to_state(path, *th, ours, &|e| file_of(2, e))?);
                    rows.push(row("applied", state(*th)));
                }
                Plan::Drop => {
                    changes.extend(ou.map(|_| Change::Remove { path: path.clone() }));
                    rows.push(row("dropped", "a cache both sides changed: its tool rebuilds it when missing".into()));
                }
                Plan::Keep => {
                    rows.push(row("kept", "a backup or last-run log both sides changed: the target's is kept".into()))
                }
                Plan::Rebuild => {
                    rows.push(row("rebuilt", "made anew by ldconfig from the libraries of the result".into()));
                }
                Plan::Merge(kind) => {
                    let read = |side: usize, e: &Option<&Entry>| {
                        e.map(|e| {
                            std::fs::read(file_of(side, e))
                                .map_err(|err| Error::Io { context: format!("reading {path}"), error: err })
                        })
                        .transpose()
                        .map(Option::unwrap_or_default)
                    };
                    let (bb, tt, oo) = (read(1, b)?, read(2, th)?, read(0, ou)?);
                    match merge::merge(*kind, &bb, &tt, &oo) {
                        Ok(bytes) => {
                            let file = merged_dir.join(path.trim_start_matches('/').replace('/', "_"));
                            std::fs::write(&file, bytes)
                                .map_err(|e| Error::Io { context: format!("writing the merge of {path}"), error: e })?;
                            let mut meta = ou.map(|e| e.meta()).unwrap_or_else(|| {
                                th.map(|e| e.meta()).unwrap_or(Meta { mode: 0o644, uid: 0, gid: 0, mtime: 0 })
                            });
                            meta.mtime = th.map_or(meta.mtime, |e| e.mtime).max(meta.mtime);
                            changes.push(Change::Write { path: path.clone(), source: file, meta });
                            rows.push(row("merged", describe(*kind)));
                        }
                        Err(units) => {
                            conflicts += units.len();
                            for unit in &units {
                                rows.push(row("conflict", unit.clone()));
                            }
                            if on_conflict == OnConflict::Theirs {
                                changes.extend(to_state(path, *th, ours, &|e| file_of(2, e))?);
                            }
                        }
                    }
                }
                Plan::Conflict(why) => {
                    conflicts += 1;
                    match on_conflict {
                        OnConflict::Fail => rows.push(row("conflict", why.clone())),
                        OnConflict::Ours => rows.push(row("ours", why.clone())),
                        OnConflict::Theirs => {
                            changes.extend(to_state(path, *th, ours, &|e| file_of(2, e))?);
                            rows.push(row("theirs", why.clone()));
                        }
                    }
                }
            }
        }
        let summary = |made: Option<EditSummary>, rows: Vec<PatchRow>| PatchSummary {
            target: label(&t),
            from: label(&f),
            to: label(&o),
            made,
            rows,
            conflicts,
            seconds: started.elapsed().as_secs_f64(),
        };
        if (conflicts > 0 && on_conflict == OnConflict::Fail) || (changes.is_empty() && !rebuild) {
            return Ok(summary(None, rows));
        }
        order(&mut changes);
        let arguments = serde_json::json!({
            "target": label(&t), "from": label(&f), "to": label(&o),
            "on_conflict": on_conflict, "conflicts": conflicts,
        });
        let target_contents = scratch.dir.join("0");
        let ld_cache = rebuild.then_some(target_contents.as_path());
        crate::trace::phase("patch: changes decided and merged");
        let made = self.edit_with(edited, prepared?, &changes, "patch", arguments, ld_cache).await?;
        drop(scratch);
        Ok(summary(Some(made), rows))
    }
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

fn content(e: &Entry) -> Option<(String, u64)> {
    (e.kind == FileKind::File).then(|| e.content_hash.clone().map(|h| (h, e.size))).flatten()
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

/// The changes that give `path` the state `to` in a target whose tree is `ours`.
fn to_state(path: &str, to: Option<&Entry>, ours: &Tree, file: &dyn Fn(&Entry) -> PathBuf) -> Result<Vec<Change>> {
    let path = path.to_string();
    let Some(e) = to else {
        // Entries under a removed directory have rows of their own, removed first (`order`).
        return Ok(if ours.contains_key(&path) { vec![Change::Remove { path }] } else { Vec::new() });
    };
    Ok(match e.kind {
        FileKind::File => vec![Change::Write { path, source: file(e), meta: e.meta() }],
        FileKind::Dir => vec![Change::Mkdir { path, meta: e.meta() }],
        FileKind::Symlink => {
            vec![Change::Symlink { path, target: e.link_target.clone().unwrap_or_default(), meta: e.meta() }]
        }
        other => {
            return Err(Error::User(format!("{path}: the patch makes a {other}, which an edit cannot make yet")));
        }
    })
}

/// Directories made before what goes in them; removals after the rest, deepest first, so
/// that a directory is empty when it goes.
fn order(changes: &mut [Change]) {
    let key = |c: &Change| match c {
        Change::Remove { path } => (1, std::cmp::Reverse(path.clone()), String::new()),
        Change::Mkdir { path, .. }
        | Change::Write { path, .. }
        | Change::Symlink { path, .. }
        | Change::SetMeta { path, .. } => (0, std::cmp::Reverse(String::new()), path.clone()),
    };
    changes.sort_by_key(key);
}
