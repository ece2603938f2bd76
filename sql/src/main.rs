//! The `imagelake` command: checkin, checkout and SQL over a library.

use clap::{Parser, Subcommand};
use imagelake_engine::{
    CheckinOptions, CheckinSummary, CheckoutOptions, CheckoutSummary, ExportOptions, ExportSummary, Library,
    RepackOptions, RepackSummary,
};
use imagelake_sql::output::Format;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

// As datafusion-cli does: planning a question allocates many small objects, and mimalloc
// serves them faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
