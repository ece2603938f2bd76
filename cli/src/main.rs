//! The `imagelake` command: checkin, checkout and SQL over a library.

use clap::{Parser, Subcommand};
use imagelake_engine::{
    CheckinOptions, CheckinSummary, CheckoutOptions, CheckoutSummary, ExportOptions, ExportSummary, Library,
    RepackOptions, RepackSummary,
};
use output::Format;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

// As datafusion-cli does: planning a question allocates many small objects, and mimalloc
// serves them faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod output;
mod progress;
mod repl;

#[derive(Parser)]
#[command(name = "imagelake", version, about = "A VM image library: images as structured data")]
struct Cli {
    /// The library directory (created on first use).
    #[arg(short = 'L', long, env = "IMAGELAKE_LIBRARY", default_value = "imagelake-library", global = true)]
    library: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a disk image (raw or qcow2) in as the next version of NAME.
    Checkin {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// Store what has a bad structure (a filesystem that does not parse, a partition past
        /// the end of the disk, no partition table and no filesystem) as raw bytes, with a
        /// warning, instead of refusing the image.
        #[arg(long)]
        raw_on_error: bool,
        /// Print the summary as JSON (and no progress bar).
        #[arg(long)]
        json: bool,
    },
    /// Write the disk of an image version (NAME, NAME@VERSION or an image id) to OUT.
    Checkout {
        image: String,
        out: PathBuf,
        /// raw, qcow2 (both written natively), or vmdk, vdi, vhdx, vpc (through qemu-img).
        #[arg(long, default_value = "raw")]
        format: String,
        /// Replace OUT even if it is not an earlier checkout of this library.
        #[arg(long)]
        force: bool,
        /// Delta deployment: OUT is a raw disk of the same size (an earlier checkout of another
        /// version); rewrite only its 4 KiB blocks that differ, in place.
        #[arg(long)]
        update: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check the library's consistency and list what crashed operations left behind
    /// (exit status 1 on damage).
    Check {
        /// Delete the leftovers (rows of checkins that never committed, stale tmp/ files).
        #[arg(long)]
        reclaim: bool,
        #[arg(long)]
        json: bool,
    },
    /// Rewrite the packs checkins wrote (zstd 3, 4 MiB frames) at zstd 19 in 32 MiB frames,
    /// compact the catalog, and delete what no reader needs any more. Queries, checkouts and
    /// checkins may run meanwhile.
    Repack {
        #[arg(long)]
        json: bool,
    },
    /// Read back every chunk of the store (or of the chunks one image uses), check each
    /// against its hash and the packs against the catalog, and list the damaged chunks with
    /// the images and files that use them (exit status 1 on damage).
    Verify {
        /// NAME, NAME@VERSION or an image id; the whole library without it.
        image: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write the file tree of one filesystem of an image version into DIR (new or empty), with
    /// owners (as root), modes, times, extended attributes, hard links, symbolic links and
    /// device nodes. Entries whose names or link targets would leave DIR are refused and
    /// listed (exit status 1), never followed.
    Export {
        image: String,
        dir: PathBuf,
        /// The partition number (as in the `partitions` table) when the image has several
        /// filesystems.
        #[arg(long)]
        partition: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// Make the next version of an image with the file at PATH taking the content of
    /// HOST_FILE (its owner and permissions kept; a new file is root's, 0644).
    Replace {
        image: String,
        path: String,
        host_file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Make the next version of an image with the tree of HOST_DIR copied into TARGET_DIR
    /// (made when absent), as root's, with the host's permissions and times.
    Import {
        image: String,
        host_dir: PathBuf,
        target_dir: String,
        #[arg(long)]
        json: bool,
    },
    /// Make the next version of an image without PATH (a directory goes with everything under it).
    Remove {
        image: String,
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// Make the next version of an image with new permissions or owners of PATH.
    SetMeta {
        image: String,
        path: String,
        /// Permissions in octal, as chmod takes them (755, 4755).
        #[arg(long, value_parser = octal)]
        mode: Option<u32>,
        #[arg(long)]
        uid: Option<u32>,
        #[arg(long)]
        gid: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Make version 1 of a new image NEW_NAME whose disk is IMAGE's (no byte is stored again).
    Clone {
        image: String,
        new_name: String,
        #[arg(long)]
        json: bool,
    },
    /// Carry diff(FROM, TO) onto TARGET, three-way, making TARGET's next version: a path the
    /// target still has as FROM had it takes TO's state; dpkg's status, debconf's databases,
    /// the account files and logs are merged unit by unit; anything else both changed is a
    /// conflict (exit status 1 under --on-conflict fail, and nothing is written).
    Patch {
        target: String,
        from: String,
        to: String,
        /// fail (write nothing), ours (keep the target's state) or theirs (take TO's).
        #[arg(long, default_value = "fail")]
        on_conflict: String,
        #[arg(long)]
        json: bool,
    },
    /// Hide an image version: names and SQL no longer see it; undelete brings it back, until gc.
    Delete { image: String },
    /// Bring back a version delete hid (not once gc has purged it).
    Undelete { image: String },
    /// Purge deleted versions and free the chunks no remaining version uses (packs that are
    /// mostly dead rewritten, wholly dead ones deleted once no reader needs them). Checkins,
    /// edits and readers may run meanwhile.
    Gc {
        #[arg(long)]
        json: bool,
    },
    /// Draw the tree of versions NAME belongs to: what made each version, who and when.
    Log {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Write one file of an image version (NAME, NAME@VERSION or an image id) to standard
    /// output. Symbolic links are followed inside the image, never out of it.
    Cat { image: String, path: String },
    /// Run SQL over the catalog: the statements of -c, of a script FILE, or of standard
    /// input; on a terminal without either, an interactive shell (.help lists its commands).
    Sql {
        /// The statement(s) to run, separated by ';'.
        #[arg(short = 'c', long = "command")]
        command: Option<String>,
        /// A script: SQL statements ended by ';', '--' comments, meta-commands such as
        /// `.mode csv` on lines of their own. It stops at the first error (exit status 1).
        #[arg(conflicts_with = "command")]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[tokio::main]
async fn main() {
    imagelake_engine::trace::phase("started");
    // No transparent huge pages in this process (nor in the tools it runs): mimalloc asks
    // for them on its arenas, and a command that touches its memory once then pays the
    // kernel to clear each 2 MiB page whole (half a patch's CPU time and twice its peak
    // memory; BENCHMARKS.md). SAFETY: this prctl only sets a flag of the process.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let library = Arc::new(Library::open(&cli.library).await?);
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Checkin { file, name, raw_on_error, json } => {
            let progress = progress_bar(json);
            let options = CheckinOptions { raw_on_error, progress: progress.clone() };
            let summary = library.checkin(&file, &name, options).await;
            drop(progress);
            report(&mut stdout, json, &summary?, |out, s| print_checkin(out, &file, s))?;
        }
        Command::Checkout { image, out, format, force, update, json } => {
            let progress = progress_bar(json);
            let options = CheckoutOptions { format: Some(format), force, update, progress: progress.clone() };
            let summary = library.checkout(&image, &out, &options).await;
            drop((progress, options));
            report(&mut stdout, json, &summary?, print_checkout)?;
        }
        Command::Check { reclaim, json } => {
            let report = library.check().await?;
            let reclaimed = if reclaim { Some(library.reclaim().await?) } else { None };
            if json {
                let value = match &reclaimed {
                    Some(r) => serde_json::json!({ "check": report, "reclaimed": r }),
                    None => serde_json::to_value(&report)?,
                };
                writeln!(stdout, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                print_check(&mut stdout, &report)?;
                if let Some(r) = &reclaimed {
                    writeln!(
                        stdout,
                        "reclaimed {} uncommitted image ids and {} tmp/ files",
                        r.orphan_image_ids.len(),
                        r.stale_files.len()
                    )?;
                }
            }
            if !report.problems.is_empty() {
                anyhow::bail!("the library is damaged: {} problems", report.problems.len());
            }
        }
        Command::Repack { json } => {
            let progress = progress_bar(json);
            let summary = library.repack(RepackOptions { progress: progress.clone() }).await;
            drop(progress);
            report(&mut stdout, json, &summary?, print_repack)?;
        }
        Command::Verify { image, json } => {
            let verified = library.verify(image.as_deref()).await?;
            report(&mut stdout, json, &verified, print_verify)?;
            if !verified.damaged.is_empty() || !verified.damaged_packs.is_empty() {
                anyhow::bail!(
                    "the store is damaged: {} chunks, {} pack indexes",
                    verified.damaged.len(),
                    verified.damaged_packs.len()
                );
            }
        }
        Command::Export { image, dir, partition, json } => {
            let progress = progress_bar(json);
            let options = ExportOptions { partition, progress: progress.clone() };
            let summary = library.export(&image, &dir, &options).await;
            drop((progress, options));
            let summary = summary?;
            report(&mut stdout, json, &summary, print_export)?;
            if !summary.refused.is_empty() || !summary.failed.is_empty() {
                anyhow::bail!(
                    "{} entries refused, {} not written completely",
                    summary.refused.len(),
                    summary.failed.len()
                );
            }
        }
        Command::Replace { image, path, host_file, json } => {
            let summary = library.replace_content(&image, &path, &host_file).await?;
            report(&mut stdout, json, &summary, print_edit)?;
        }
        Command::Import { image, host_dir, target_dir, json } => {
            let summary = library.import(&image, &host_dir, &target_dir).await?;
            report(&mut stdout, json, &summary, print_edit)?;
        }
        Command::Remove { image, path, json } => {
            let summary = library.remove(&image, &path).await?;
            report(&mut stdout, json, &summary, print_edit)?;
        }
        Command::SetMeta { image, path, mode, uid, gid, json } => {
            if mode.is_none() && uid.is_none() && gid.is_none() {
                anyhow::bail!("set-meta: give --mode, --uid or --gid");
            }
            let summary = library.set_meta(&image, &path, mode, uid, gid).await?;
            report(&mut stdout, json, &summary, print_edit)?;
        }
        Command::Patch { target, from, to, on_conflict, json } => {
            let s = library.patch(&target, &from, &to, on_conflict.parse()?).await?;
            report(&mut stdout, json, &s, print_patch)?;
            if s.made.is_none() && s.conflicts > 0 {
                anyhow::bail!("{} conflicts: nothing was written", s.conflicts);
            }
        }
        Command::Delete { image } => {
            let i = library.delete(&image).await?;
            writeln!(stdout, "deleted {}@{} (undelete restores it until gc)", i.name, i.version)?;
        }
        Command::Undelete { image } => {
            let i = library.undelete(&image).await?;
            writeln!(stdout, "restored {}@{}", i.name, i.version)?;
        }
        Command::Gc { json } => {
            let s = library.gc().await?;
            report(&mut stdout, json, &s, |out, s| {
                writeln!(
                    out,
                    "gc: {} versions purged{}, {} chunks freed, {} packs retired ({} rewritten), {} freed, {:.2} s",
                    s.purged.len(),
                    if s.purged.is_empty() { String::new() } else { format!(" ({})", s.purged.join(", ")) },
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
            })?;
        }
        Command::Clone { image, new_name, json } => {
            let s = library.clone_image(&image, &new_name).await?;
            report(&mut stdout, json, &s, |out, s| {
                writeln!(
                    out,
                    "cloned {} as {}@{} (image {}) in {:.2} s",
                    s.parent, s.name, s.version, s.image_id, s.seconds
                )
            })?;
        }
        Command::Log { name, json } => {
            let family = library.family(&name).await?;
            if json {
                writeln!(stdout, "{}", serde_json::to_string_pretty(&family)?)?;
            } else {
                write!(stdout, "{}", draw_versions(&family, &name))?;
            }
        }
        Command::Cat { image, path } => {
            let data = library.read_file(&image, &path).await?;
            stdout.write_all(&data)?;
        }
        Command::Sql { command, file, format } => {
            let session = Arc::new(imagelake_sql::Session::open(library.clone()).await?);
            let input = match (command, file) {
                (Some(command), _) => repl::Input::Command(command),
                (None, Some(file)) => repl::Input::File(file),
                (None, None) if std::io::stdin().is_terminal() => repl::Input::Terminal,
                (None, None) => repl::Input::Stdin,
            };
            repl::run(session, input, format, &cli.library, &mut stdout).await?;
        }
    }
    Ok(())
}

/// A progress bar on standard error, when that is a terminal and the summary is not JSON.
fn progress_bar(json: bool) -> Option<Arc<dyn imagelake_engine::Progress>> {
    (!json && std::io::stderr().is_terminal())
        .then(|| Arc::new(progress::Bar::default()) as Arc<dyn imagelake_engine::Progress>)
}

/// Prints a command's summary: as JSON, or for a person with `human`.
fn report<T: serde::Serialize>(
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

fn print_checkin(out: &mut dyn Write, file: &std::path::Path, s: &CheckinSummary) -> std::io::Result<()> {
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
    writeln!(out, "  deduplicated  {}", bytes(s.bytes_deduplicated))?;
    let rate = s.bytes_read as f64 / s.seconds.max(1e-9);
    writeln!(out, "  time          {:.2} s ({}/s)", s.seconds, bytes(rate as u64))?;
    for w in &s.warnings {
        writeln!(out, "  warning       {w}")?;
    }
    Ok(())
}

fn print_check(out: &mut dyn Write, r: &imagelake_engine::CheckReport) -> std::io::Result<()> {
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
    if !r.orphan_image_ids.is_empty() || !r.stale_files.is_empty() {
        writeln!(
            out,
            "  leftovers {} uncommitted image ids, {} stale tmp/ files (check --reclaim deletes them)",
            r.orphan_image_ids.len(),
            r.stale_files.len()
        )?;
    }
    Ok(())
}

fn print_export(out: &mut dyn Write, s: &ExportSummary) -> std::io::Result<()> {
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

fn print_verify(out: &mut dyn Write, r: &imagelake_engine::VerifyReport) -> std::io::Result<()> {
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
        if r.damaged.is_empty() && r.damaged_packs.is_empty() { "intact" } else { "DAMAGED" }
    )?;
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

fn print_repack(out: &mut dyn Write, s: &RepackSummary) -> std::io::Result<()> {
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

fn octal(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not a mode in octal (at most 7777)"))
}

fn print_patch(out: &mut dyn Write, s: &imagelake_engine::PatchSummary) -> std::io::Result<()> {
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
        if r.outcome != "applied" && r.outcome != "same" {
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

fn print_edit(out: &mut dyn Write, s: &imagelake_engine::EditSummary) -> std::io::Result<()> {
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
/// ├── * base@2  replace {"path":"/etc/motd"}  alice  2026-11-26 03:20
/// └── web@1  clone  bob  2026-11-26 03:25
/// ```
fn draw_versions(family: &[imagelake_engine::HistoryRow], name: &str) -> String {
    use std::collections::HashMap;
    let ids: std::collections::HashSet<i64> = family.iter().map(|r| r.image_id).collect();
    let mut children: HashMap<Option<i64>, Vec<&imagelake_engine::HistoryRow>> = HashMap::new();
    for r in family {
        children.entry(r.parent_id.filter(|p| ids.contains(p))).or_default().push(r);
    }
    for list in children.values_mut() {
        list.sort_by_key(|r| (r.at, r.image_id));
    }
    fn line(r: &imagelake_engine::HistoryRow, name: &str) -> String {
        let mark = if r.name == name { "* " } else { "" };
        let when = chrono::DateTime::from_timestamp_nanos(r.at).format("%Y-%m-%d %H:%M:%S");
        let args = if r.arguments == "{}" { String::new() } else { format!(" {}", r.arguments) };
        let state = if r.state == "active" { String::new() } else { format!("  [{}]", r.state) };
        format!("{mark}{}@{}  {}{args}  {}  {when}{state}", r.name, r.version, r.operation, r.actor)
    }
    fn walk(
        out: &mut String,
        children: &HashMap<Option<i64>, Vec<&imagelake_engine::HistoryRow>>,
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

fn print_checkout(out: &mut dyn Write, s: &CheckoutSummary) -> std::io::Result<()> {
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
    match (&s.previous, s.unexpected_blocks) {
        (Some(previous), Some(0)) => writeln!(out, "  updated in place from {previous}, which it held exactly"),
        (Some(previous), Some(n)) => writeln!(
            out,
            "  updated in place from {previous}; {n} blocks had changed since its checkout and were repaired too"
        ),
        _ => Ok(()),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}
