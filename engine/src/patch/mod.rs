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
//!
//! The decisions and outcomes are worked out without I/O in `decide.rs`; this file reads the
//! trees, fetches and merges the contents, and runs the edit around them.

mod decide;

pub use decide::Outcome;

use crate::catalog::FileKind;
use crate::edit::{Change, EditSummary};
use crate::locks::Scratch;
use crate::merge;
use crate::tree::{Entry, Tree};
use crate::{Error, Library, Result};
use decide::{Decision, Resolution, State, Take, decide, resolve};
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
    pub outcome: Outcome,
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
        // Per path: the decision, and the states in from, to and the target.
        let mut decided: BTreeMap<String, (Decision, State, State, State)> = BTreeMap::new();
        for path in paths {
            if let Some(decision) = decide(path, base, theirs, ours) {
                decided.insert(path.clone(), (decision, base.get(path), theirs.get(path), ours.get(path)));
            }
        }

        // Contents: every file the patch brings, and all three sides of every merge.
        let scratch = Scratch::new(self.tmp(), "patch")?;
        let mut wanted: [Vec<(String, u64)>; 3] = Default::default();
        for (decision, b, th, ou) in decided.values() {
            let sides = match decision {
                Decision::Apply | Decision::Conflict(_) => [None, None, *th],
                Decision::Merge(_) => [*ou, *b, *th],
                _ => [None, None, None],
            };
            for (side, e) in sides.into_iter().enumerate() {
                wanted[side].extend(e.and_then(content));
            }
        }
        // A rebuilt ld.so.cache reads the target's libraries: fetched with the rest.
        let rebuild = decided.values().any(|d| matches!(d.0, Decision::Rebuild));
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
        let mut rows = Vec::new();
        let merged_dir = scratch.dir.join("merged");
        std::fs::create_dir(&merged_dir)
            .map_err(|e| Error::Io { context: "creating the merge folder".into(), error: e })?;
        for (path, (decision, b, th, ou)) in &decided {
            // A merge reads its three sides.
            let merged = match decision {
                Decision::Merge(kind) => {
                    let read = |side: usize, e: &Option<&Entry>| {
                        e.map(|e| {
                            std::fs::read(file_of(side, e))
                                .map_err(|err| Error::Io { context: format!("reading {path}"), error: err })
                        })
                        .transpose()
                        .map(Option::unwrap_or_default)
                    };
                    let (bb, tt, oo) = (read(1, b)?, read(2, th)?, read(0, ou)?);
                    merge::merge(*kind, &bb, &tt, &oo)
                }
                _ => Ok(Vec::new()),
            };
            let merge = merged.as_ref().map(|_| ()).map_err(Vec::as_slice);
            let Resolution { rows: outcomes, take } = resolve(decision, *th, merge, on_conflict);
            rows.extend(outcomes.into_iter().map(|(outcome, detail)| PatchRow { path: path.clone(), outcome, detail }));
            match take {
                Take::Nothing => {}
                Take::Theirs => changes.extend(to_state(path, *th, ours, &|e| file_of(2, e))?),
                Take::Removal => changes.extend(to_state(path, None, ours, &|e| file_of(2, e))?),
                Take::Merged => {
                    let file = merged_dir.join(path.trim_start_matches('/').replace('/', "_"));
                    std::fs::write(&file, merged.as_deref().unwrap_or_default())
                        .map_err(|e| Error::Io { context: format!("writing the merge of {path}"), error: e })?;
                    let meta = decide::merged_meta(*ou, *th);
                    changes.push(Change::Write { path: path.clone(), source: file, meta });
                }
            }
        }
        let conflicts = rows.iter().filter(|r| r.outcome.is_conflict()).count();
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

fn content(e: &Entry) -> Option<(String, u64)> {
    (e.kind == FileKind::File).then(|| e.content_hash.clone().map(|h| (h, e.size))).flatten()
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
