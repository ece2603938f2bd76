//! Command summaries for a person (the `--json` form is their serde serialization): what a
//! checkin stored, what a checkout wrote, what check, verify and export found, the version tree.

use imagelake_engine::{
    CheckReport, CheckinSummary, CheckoutSummary, CloneSummary, EditSummary, ExportSummary, GcSummary, HistoryRow,
    PatchSummary, RepackSummary, VerifyReport,
};
use std::io::Write;
use std::path::Path;

/// Prints a command's summary: as JSON, or for a person with `human`.
pub fn report<T: serde::Serialize>(
    out: &mut dyn Write,
    json: bool,
    summary: &T,
    human: impl FnOnce(&mut dyn Write, &T) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(summary)?)?;
    } else {
        human(out, summary)?;
    }
    Ok(())
}

pub fn print_checkin(out: &mut dyn Write, file: &Path, s: &CheckinSummary) -> std::io::Result<()> {
    let parent = s.parent_id.map(|p| format!(", parent image {p}")).unwrap_or_default();
    writeln!(out, "checked in {}@{} (image {}{parent})", s.name, s.version, s.image_id)?;
    writeln!(out, "  source        {} ({}, {} virtual)", file.display(), s.source_format, bytes(s.virtual_size))?;
    writeln!(
        out,
        "  contents      {} partitions, {} files, {} packages{}",
        s.partitions,
        s.files,
        s.packages,
        s.os.as_deref().map(|o| format!(", {o}")).unwrap_or_default()
    )?;
    writeln!(out, "  bytes read    {}  (zeros, not stored: {})", bytes(s.bytes_read), bytes(s.bytes_zero))?;
    writeln!(
        out,
        "  new           {} in {} chunks, {} stored after compression",
        bytes(s.bytes_new),
        s.chunks_new,
        bytes(s.bytes_stored)
    )?;
    writeln!(
        out,
        "                {} of file contents, {} of metadata and free space",
        bytes(s.bytes_new_content),
        bytes(s.bytes_new.saturating_sub(s.bytes_new_content))
    )?;
    writeln!(out, "  deduplicated  {}", bytes(s.bytes_deduplicated))?;
    let rate = s.bytes_read as f64 / s.seconds.max(1e-9);
    writeln!(out, "  time          {:.2} s ({}/s)", s.seconds, bytes(rate as u64))?;
    for w in &s.warnings {
        writeln!(out, "  warning       {w}")?;
    }
    Ok(())
}

pub fn print_check(out: &mut dyn Write, r: &CheckReport) -> std::io::Result<()> {
    writeln!(
        out,
        "{} image versions, {} chunks in {} packs: {}",
        r.images,
        r.chunks,
        r.packs,
        if r.problems.is_empty() { "consistent" } else { "DAMAGED" }
    )?;
    for p in &r.problems {
        writeln!(out, "  problem   {p}")?;
    }
    if !r.orphan_image_ids.is_empty() || !r.stale_files.is_empty() || r.unused_segments > 0 {
        writeln!(
            out,
            "  leftovers {} uncommitted image ids, {} segments no version lists, {} stale tmp/ files \
             (check --reclaim deletes them)",
            r.orphan_image_ids.len(),
            r.unused_segments,
            r.stale_files.len()
        )?;
    }
    if !r.dead_leases.is_empty() {
        writeln!(
            out,
            "  leftovers {} leases whose holders died or stopped past their term (check --reclaim removes them)",
            r.dead_leases.len()
        )?;
    }
    if !r.unrecorded_catalog_files.is_empty() {
        writeln!(
            out,
            "  leftovers {} catalog files without a checksum, their writer gone before it recorded them \
             (check --reclaim records them)",
            r.unrecorded_catalog_files.len()
        )?;
    }
    Ok(())
}

/// What `check --reclaim` deleted or recorded, after the check's own lines.
pub fn print_reclaimed(out: &mut dyn Write, r: &CheckReport) -> std::io::Result<()> {
    writeln!(
        out,
        "reclaimed {} uncommitted image ids, {} unused segments, {} tmp/ files and {} dead leases; recorded {} \
         catalog files",
        r.orphan_image_ids.len(),
        r.unused_segments,
        r.stale_files.len(),
        r.dead_leases.len(),
        r.unrecorded_catalog_files.len()
    )
}

pub fn print_rebuilt(out: &mut dyn Write, r: &imagelake_engine::RebuildSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "rebuilt chunks: {} rows added from the indexes of {} packs ({} chunks listed) in {:.2} s",
        r.rows_added, r.packs, r.chunks_listed, r.seconds
    )?;
    for why in &r.unreadable {
        writeln!(out, "  unreadable index: {why}")?;
    }
    Ok(())
}

pub fn print_export(out: &mut dyn Write, s: &ExportSummary) -> std::io::Result<()> {
    writeln!(out, "exported {} (partition {}) to {}", s.image, s.partition, s.dir.display())?;
    writeln!(
        out,
        "  {} directories, {} files ({}), {} symbolic links, {} hard links, {} special files in {:.2} s",
        s.dirs,
        s.files,
        bytes(s.bytes),
        s.symlinks,
        s.hard_links,
        s.specials,
        s.seconds
    )?;
    if !s.owners {
        writeln!(out, "  owners not set: only root may give files to other users")?;
    }
    // Names come from the image: printed escaped, so that control bytes cannot drive the terminal.
    for p in &s.refused {
        writeln!(out, "  refused {:?}: {}", p.path, p.why)?;
    }
    for p in &s.failed {
        writeln!(out, "  failed {:?}: {}", p.path, p.why)?;
    }
    Ok(())
}

pub fn print_verify(out: &mut dyn Write, r: &VerifyReport) -> std::io::Result<()> {
    let whom = match r.images.as_slice() {
        [one] => one.clone(),
        all => format!("{} image versions", all.len()),
    };
    writeln!(
        out,
        "{} chunks in {} packs read back ({} compressed) for {whom}: {}",
        r.chunks,
        r.packs,
        bytes(r.bytes_read),
        match (&r.store_unread, r.damaged.is_empty() && r.damaged_packs.is_empty()) {
            (Some(_), _) => "NOT READ",
            (None, true) => "intact",
            (None, false) => "DAMAGED",
        }
    )?;
    let catalog = &r.catalog;
    writeln!(
        out,
        "{} catalog files hashed again ({}): {}",
        catalog.files,
        bytes(catalog.bytes),
        if catalog.damaged.is_empty() { "intact" } else { "DAMAGED" }
    )?;
    for d in &catalog.damaged {
        let table = d.table.as_deref().map(|t| format!("table {t}, ")).unwrap_or_default();
        writeln!(out, "  damaged catalog file {} ({table}{}): {}", d.file, d.held, d.reason)?;
    }
    if let Some(why) = &r.store_unread {
        writeln!(out, "the store was not read back, the catalog being damaged: {why}")?;
    }
    for pack in &r.damaged_packs {
        writeln!(out, "  damaged index {pack}")?;
    }
    for d in &r.damaged {
        writeln!(out, "  damaged chunk {}: {}", d.chunk, d.reason)?;
        for u in &d.used_by {
            match &u.path {
                Some(path) => writeln!(out, "    used by {} {path}", u.image)?,
                None => writeln!(out, "    used by {} ({} bytes at disk offset {})", u.image, u.kind, u.disk_offset)?,
            }
        }
        if d.used_by.is_empty() {
            writeln!(out, "    used by no committed image")?;
        }
    }
    Ok(())
}

pub fn print_repack(out: &mut dyn Write, s: &RepackSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "repacked {} packs ({}) into {} ({}): {} chunks, {} second copies dropped, {:.1} s",
        s.packs_read,
        bytes(s.bytes_before),
        s.packs_written,
        bytes(s.bytes_after),
        s.chunks,
        s.duplicates_dropped,
        s.seconds
    )?;
    if s.prune.readers_in_flight {
        writeln!(out, "  readers were in flight: the old packs go at the next prune (check --reclaim)")
    } else {
        writeln!(
            out,
            "  deleted {} retired packs ({}) and {} of superseded catalog files",
            s.prune.packs_deleted,
            bytes(s.prune.pack_bytes_freed),
            bytes(s.prune.catalog_bytes_freed)
        )
    }
}

pub fn print_patch(out: &mut dyn Write, s: &PatchSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "patch {} with diff({}, {}): {} paths, {} conflicts",
        s.target,
        s.from,
        s.to,
        s.rows.len(),
        s.conflicts
    )?;
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in &s.rows {
        *counts.entry(r.outcome.as_str()).or_default() += 1;
        if !matches!(r.outcome, imagelake_engine::Outcome::Applied | imagelake_engine::Outcome::Same) {
            writeln!(out, "  {:<8} {:?}: {}", r.outcome, r.path, r.detail)?;
        }
    }
    let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    writeln!(out, "  {}", counts.join(", "))?;
    match &s.made {
        Some(m) => print_edit(out, m),
        None if s.conflicts > 0 => writeln!(out, "  nothing written"),
        None => writeln!(out, "  nothing to change: the target has the patch already"),
    }
}

pub fn print_edit(out: &mut dyn Write, s: &EditSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "made {}@{} (image {}) from {} by {}: {} changes, {} stored, {:.2} s",
        s.name,
        s.version,
        s.image_id,
        s.parent,
        s.operation,
        s.entries_changed,
        bytes(s.bytes_stored),
        s.seconds
    )?;
    for w in &s.warnings {
        writeln!(out, "  warning {w}")?;
    }
    Ok(())
}

/// The version tree, parents above children, the versions of `name` marked with `*`:
///
/// ```text
/// * base@1  checkin  alice  2026-11-26 03:12
/// ├── * base@2  replace_content {"path":"/etc/motd"}  alice  2026-11-26 03:20
/// └── web@1  clone  bob  2026-11-26 03:25
/// ```
pub fn draw_versions(family: &[HistoryRow], name: &str) -> String {
    use std::collections::HashMap;
    let ids: std::collections::HashSet<i64> = family.iter().map(|r| r.image_id).collect();
    let mut children: HashMap<Option<i64>, Vec<&HistoryRow>> = HashMap::new();
    for r in family {
        children.entry(r.parent_id.filter(|p| ids.contains(p))).or_default().push(r);
    }
    for list in children.values_mut() {
        list.sort_by_key(|r| (r.at, r.image_id));
    }
    fn line(r: &HistoryRow, name: &str) -> String {
        let mark = if r.name == name { "* " } else { "" };
        let when = chrono::DateTime::from_timestamp_nanos(r.at).format("%Y-%m-%d %H:%M:%S");
        let args = if r.arguments == "{}" { String::new() } else { format!(" {}", r.arguments) };
        let state = if r.state == imagelake_engine::catalog::ImageState::Active {
            String::new()
        } else {
            format!("  [{}]", r.state)
        };
        format!("{mark}{}@{}  {}{args}  {}  {when}{state}", r.name, r.version, r.operation, r.actor)
    }
    fn walk(
        out: &mut String,
        children: &HashMap<Option<i64>, Vec<&HistoryRow>>,
        parent: Option<i64>,
        prefix: &str,
        name: &str,
    ) {
        let Some(list) = children.get(&parent) else { return };
        for (i, r) in list.iter().enumerate() {
            let last = i + 1 == list.len();
            let (branch, more) = match (parent, last) {
                (None, _) => ("", ""),
                (Some(_), true) => ("└── ", "    "),
                (Some(_), false) => ("├── ", "│   "),
            };
            out.push_str(&format!("{prefix}{branch}{}\n", line(r, name)));
            walk(out, children, Some(r.image_id), &format!("{prefix}{more}"), name);
        }
    }
    let mut out = String::new();
    walk(&mut out, &children, None, "", name);
    out
}

pub fn print_checkout(out: &mut dyn Write, s: &CheckoutSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "checked out {}@{} (image {}) to {} ({})",
        s.name,
        s.version,
        s.image_id,
        s.output.display(),
        s.format
    )?;
    writeln!(
        out,
        "  {} virtual, {} written, {} left sparse, {:.2} s",
        bytes(s.virtual_size),
        bytes(s.bytes_written),
        bytes(s.bytes_zero),
        s.seconds
    )?;
    if s.bytes_punched > 0 {
        writeln!(out, "  {} that the version has as zeros made holes, not written", bytes(s.bytes_punched))?;
    }
    if let Some(from) = s.resized_from {
        writeln!(out, "  resized from {} to the version's {}", bytes(from), bytes(s.virtual_size))?;
    }
    match (&s.previous, s.unexpected_blocks) {
        (Some(previous), Some(0)) => writeln!(out, "  updated in place from {previous}, which it held exactly"),
        (Some(previous), Some(n)) => writeln!(
            out,
            "  updated in place from {previous}; {n} blocks had changed since its checkout and were repaired too"
        ),
        _ => Ok(()),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

pub fn print_gc(out: &mut dyn Write, s: &GcSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "gc: {} versions purged{}, {} segments and {} chunks freed, {} packs retired ({} rewritten), {} freed, {:.2} s",
        s.purged.len(),
        if s.purged.is_empty() { String::new() } else { format!(" ({})", s.purged.join(", ")) },
        s.segments_dropped,
        s.chunks_freed,
        s.packs_retired,
        s.packs_rewritten,
        bytes(s.bytes_freed.max(0) as u64),
        s.seconds
    )?;
    if s.prune.readers_in_flight {
        writeln!(out, "  readers were in flight: the retired packs go at the next gc or check --reclaim")?;
    }
    Ok(())
}

pub fn print_clone(out: &mut dyn Write, s: &CloneSummary) -> std::io::Result<()> {
    writeln!(out, "cloned {} as {}@{} (image {}) in {:.2} s", s.parent, s.name, s.version, s.image_id, s.seconds)
}

/// `user list`: one line per user, their grants last.
pub fn print_users(
    out: &mut dyn Write,
    users: &[imagelake_engine::access::UserInfo],
    grants: &[imagelake_engine::access::Grant],
) -> std::io::Result<()> {
    if users.is_empty() {
        return writeln!(out, "no users (imagelake user add NAME adds one)");
    }
    let width = users.iter().map(|u| u.name.len()).max().unwrap_or(0).max(4);
    writeln!(out, "{:<width$}  ADMIN  ADDED                GRANTS", "NAME")?;
    for u in users {
        let added = chrono::DateTime::from_timestamp(u.created_at, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| u.created_at.to_string());
        let theirs: Vec<String> =
            grants.iter().filter(|g| g.user == u.name).map(|g| format!("{} on '{}'", g.right, g.pattern)).collect();
        let theirs = if theirs.is_empty() { "-".to_string() } else { theirs.join(", ") };
        writeln!(out, "{:<width$}  {:<5}  {added:<19}  {theirs}", u.name, if u.admin { "yes" } else { "no" })?;
    }
    Ok(())
}

/// `sbom-diff`'s groups (see `imagelake_sql::sbom::diff_json`), one line per package.
pub fn print_sbom_diff(out: &mut dyn Write, diff: &serde_json::Value) -> std::io::Result<()> {
    let text = |entry: &serde_json::Value, key: &str| entry[key].as_str().unwrap_or("").to_string();
    let mut any = false;
    for change in ["added", "removed", "upgraded", "downgraded", "modified"] {
        for entry in diff[change].as_array().into_iter().flatten() {
            any = true;
            let versions = match change {
                "added" => text(entry, "new_version"),
                "removed" => text(entry, "old_version"),
                _ => format!("{} -> {}", text(entry, "old_version"), text(entry, "new_version")),
            };
            let name = format!("{}:{}", text(entry, "name"), text(entry, "arch"));
            writeln!(out, "{change:<10} {:<5} {name:<40} {versions}", text(entry, "manager"))?;
        }
    }
    if !any {
        writeln!(out, "no package differs")?;
    }
    Ok(())
}

pub fn print_advisories_loaded(
    out: &mut dyn Write,
    s: &imagelake_engine::advisories::LoadSummary,
) -> std::io::Result<()> {
    writeln!(
        out,
        "loaded {} records from {} documents in {:.1}s: {} added, {} replaced (newer), {} unchanged, {} of other ecosystems ignored; {} withdrawn; {} rows",
        s.records, s.documents, s.seconds, s.added, s.replaced, s.unchanged, s.ignored, s.withdrawn, s.rows
    )
}

/// VEX statements, one line each: id, advisory, images (and package), state and
/// justification, who said it and when (and who revoked it).
pub fn print_vex(out: &mut dyn Write, rows: &[imagelake_engine::catalog::VexRow]) -> std::io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "no VEX statements (imagelake vex add ADVISORY --image PATTERN adds one)");
    }
    let time = |ns: i64| chrono::DateTime::from_timestamp_nanos(ns).format("%Y-%m-%d %H:%M:%S").to_string();
    for r in rows {
        let mut images = r.image.clone();
        if let Some(v) = r.version {
            images.push_str(&format!("@{v}"));
        }
        if let Some(p) = &r.package {
            images.push_str(&format!(" package {p}"));
        }
        let why = r.justification.as_deref().map(|j| format!(" ({j})")).unwrap_or_default();
        write!(out, "{}  {} {}{why} on {images}, by {} at {}", r.id, r.advisory, r.state, r.actor, time(r.at))?;
        if let (Some(by), Some(at)) = (&r.revoked_by, r.revoked_at) {
            write!(out, "; revoked by {by} at {}", time(at))?;
        }
        writeln!(out)?;
        if let Some(detail) = &r.detail {
            writeln!(out, "    {}", detail.replace('\n', "\n    "))?;
        }
    }
    Ok(())
}
