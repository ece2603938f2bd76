//! The command line: the global options and one variant per command, as clap parses them.
//! The doc comments are the `--help` text.

use crate::output::Format;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "imagelake", version, about = "A VM image library: images as structured data")]
pub struct Cli {
    /// The library directory (created on first use).
    #[arg(short = 'L', long, env = "IMAGELAKE_LIBRARY", default_value = "imagelake-library", global = true)]
    pub library: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Delta deployment: OUT is a raw disk (an earlier checkout of another version, grown or
        /// cut to this one's size) or a block device that holds it; rewrite only its 4 KiB
        /// blocks that differ, in place.
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
        /// First add a `chunks` row for every chunk a pack's own index lists and the catalog
        /// lacks (a damaged or lost `chunks` table made whole from the packs alone).
        #[arg(long)]
        rebuild_chunks: bool,
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
    /// HOST_FILE (its owner and permissions kept; a new file is root's, 0644). `replace` is
    /// an alias, kept for scripts.
    #[command(alias = "replace")]
    ReplaceContent {
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
    /// Write the software bill of materials of an image version from its stored inventory
    /// (no image is read): CycloneDX JSON (1.6, or 1.5 with --spec-version) or SPDX 2.3 JSON,
    /// the same bytes each time for the same version.
    Sbom {
        image: String,
        /// cyclonedx or spdx.
        #[arg(long, default_value = "cyclonedx")]
        format: String,
        /// 1.5 or 1.6 for CycloneDX, 2.3 for SPDX.
        #[arg(long)]
        spec_version: Option<String>,
        /// Write to FILE instead of standard output.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Security advisories (OSV records), matched against the stored inventories by the
    /// `vulnerabilities` view: `imagelake advisories load debian-all.zip`.
    Advisories {
        #[command(subcommand)]
        action: AdvisoryCommand,
    },
    /// VEX statements: an advisory does not affect some images (or one package of them), with
    /// a justification; `vulnerabilities` leaves out what a standing statement covers, and the
    /// CycloneDX SBOM carries the statement's analysis.
    Vex {
        #[command(subcommand)]
        action: VexCommand,
    },
    /// The packages added, removed, upgraded and downgraded (by each manager's version order)
    /// between two image versions, with their purls.
    SbomDiff {
        old: String,
        new: String,
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
    /// Mount the file tree of one filesystem of an image version (the only one, or
    /// --partition's) on DIR, served by FUSE from the catalog and the store: no disk is
    /// rebuilt. Returns once the mount is ready and goes on serving in the background
    /// (--foreground stays attached); `imagelake unmount DIR` or `umount DIR` ends it.
    Mount {
        image: String,
        dir: PathBuf,
        #[arg(long)]
        partition: Option<i64>,
        /// Changes made in the mount are kept in a scratch area of the library, and become
        /// the next version of the image at `imagelake commit DIR` and when the mount ends.
        #[arg(long)]
        writable: bool,
        /// Let other users use the mount too (FUSE's allow_other; the kernel still checks
        /// each request against the image's permissions). Needs root or `user_allow_other` in
        /// /etc/fuse.conf.
        #[arg(long)]
        allow_other: bool,
        /// Serve from this process until unmounted, instead of in the background.
        #[arg(long)]
        foreground: bool,
    },
    /// Make the changes in the writable mount on DIR the next version of its image; the mount
    /// goes on serving that version. A writable mount on DIR that ended without committing
    /// (killed) left its changes in the library: they are committed instead.
    Commit { dir: PathBuf },
    /// End a mount made by `imagelake mount`; a writable one commits its changes first (or
    /// those a writable mount on DIR that ended without committing left).
    Unmount {
        dir: PathBuf,
        /// Drop a writable mount's changes instead of committing them.
        #[arg(long)]
        discard: bool,
    },
    /// Manage the users of the library's server (`imagelake user add ana`): their passwords
    /// are asked at the terminal without echo, or read as the first line of standard input.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Give USER a RIGHT on the images PATTERN matches: `imagelake grant ana read on 'web*'`.
    /// RIGHT is read, write (includes read) or admin (includes both); PATTERN is an image
    /// name, a glob ('*' any run of characters, '?' one character) or '*' for every image.
    /// Quote a glob, or the shell expands it.
    Grant {
        user: String,
        right: String,
        /// The word `on`.
        on: String,
        pattern: String,
    },
    /// Take back a grant exactly as it was given: `imagelake revoke ana read on 'web*'`
    /// (exit status 1 when USER has no such grant).
    Revoke {
        user: String,
        right: String,
        /// The word `on`.
        on: String,
        pattern: String,
    },
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
        /// Ask the questions of a Ballista cluster serving this library, whose scheduler is
        /// at HOST:PORT (`imagelake cluster scheduler`); commands still run here.
        #[arg(long, value_name = "HOST:PORT")]
        cluster: Option<String>,
    },
    /// Run a process of a Ballista cluster that answers library-wide SQL (`sql --cluster`):
    /// one scheduler and any number of executors, each opening this library.
    Cluster {
        #[command(subcommand)]
        role: ClusterCommand,
    },
    /// Serve the library over Arrow Flight SQL (ADBC, JDBC, arrow-flight clients) until
    /// SIGINT or SIGTERM. Users log in with a user name and password (Basic auth in the
    /// handshake) and get a bearer token. Prints `listening on grpc://HOST:PORT` (or
    /// `grpc+tls://`) once it accepts connections.
    Serve {
        /// HOST:PORT to listen on; port 0 lets the system choose (the printed line names it).
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: String,
        /// A directory whose files SQL may read (checkin from a path); repeat for several.
        /// Without one, SQL reads no host files.
        #[arg(long = "data-root", value_name = "DIR")]
        data_roots: Vec<PathBuf>,
        /// The server's certificate chain (PEM): serve TLS. Needs --tls-key.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The server's private key (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require client certificates signed by this CA (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// How long a login's token stays valid: 30s, 15m, 12h, 7d.
        #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = duration)]
        token_ttl: std::time::Duration,
        /// Send users' questions to the Ballista cluster whose scheduler is at HOST:PORT
        /// (`imagelake cluster scheduler`), which answers within each user's grants; commands
        /// still run here. The cluster's ports do not authenticate: keep them where only this
        /// server and the cluster's operators reach them.
        #[arg(long, value_name = "HOST:PORT")]
        cluster: Option<String>,
    },
}

/// `--token-ttl`: a whole number with a unit, s, m, h or d.
fn duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration: write a number and a unit, such as 30s, 15m, 12h or 7d");
    let unit = text.chars().last().ok_or_else(bad)?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return Err(bad()),
    };
    let n: u64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
    match n.checked_mul(seconds) {
        Some(s) if s > 0 => Ok(std::time::Duration::from_secs(s)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(super::duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(super::duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(super::duration("12h"), Ok(Duration::from_secs(43200)));
        assert_eq!(super::duration("7d"), Ok(Duration::from_secs(604800)));
        for bad in ["", "h", "12", "0s", "-1h", "1.5h", "12 h", "99999999999999999999d"] {
            assert!(super::duration(bad).is_err(), "{bad}");
        }
    }
}

/// `imagelake cluster ...`: the processes of a cluster. Each runs until SIGINT or SIGTERM and
/// prints `listening on HOST:PORT` once it accepts connections.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The scheduler: plans each question against the library and hands its stages to the
    /// executors.
    Scheduler {
        /// HOST:PORT to listen on.
        #[arg(long, default_value = "127.0.0.1:50050")]
        listen: std::net::SocketAddr,
        /// Take an executor for dead, and run its tasks elsewhere, after this long without a
        /// heartbeat: 30s, 2m.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
        executor_timeout: std::time::Duration,
    },
    /// An executor: runs the tasks the scheduler hands it, reading the library itself.
    Executor {
        /// The scheduler's HOST:PORT.
        #[arg(long, value_name = "HOST:PORT")]
        scheduler: String,
        /// HOST:PORT of its Arrow Flight service (results and shuffles).
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: std::net::SocketAddr,
        /// Port of its gRPC service (tasks), on the same host.
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks it runs at once (0: one per core).
        #[arg(long, default_value_t = 0)]
        tasks: usize,
        /// How often it tells the scheduler it lives: 5s.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
        heartbeat: std::time::Duration,
    },
}

/// `imagelake user ...`: the users of the library's server, kept in its `access.json`.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user; their password is asked twice at the terminal, or read as the first line of
    /// standard input when that is not a terminal.
    Add {
        name: String,
        /// The user also administers the library over the server (users, grants, gc,
        /// repack), yet sees only the images their grants name.
        #[arg(long)]
        admin: bool,
    },
    /// Remove a user, with their grants and tokens.
    Remove { name: String },
    /// List the users: name, admin, when added, and their grants.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set a user's password (asked as for `user add`); every token of theirs is revoked.
    Passwd { name: String },
    /// Revoke every token of a user: their sessions end and they must log in again.
    RevokeTokens { name: String },
}

/// `imagelake advisories ...`.
#[derive(Subcommand)]
pub enum AdvisoryCommand {
    /// Load OSV records from a JSON file (a record or an array of them), a zip of them
    /// (osv.dev's per-ecosystem all.zip) or a folder of either: Debian, Ubuntu, Alpine, Rocky
    /// Linux, AlmaLinux and Red Hat records are kept; a record already stored is replaced when
    /// its `modified` time is newer. No image is read.
    Load {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// `imagelake vex ...`.
#[derive(Subcommand)]
pub enum VexCommand {
    /// State that ADVISORY (its id or any alias, e.g. CVE-2024-1234) does not affect the
    /// images --image names; kept with who said it and when.
    Add {
        advisory: String,
        /// An image name or glob ('web*', '*'), optionally @VERSION for one version.
        #[arg(long)]
        image: String,
        /// Only this package (its binary or source name).
        #[arg(long)]
        package: Option<String>,
        /// not_affected or false_positive.
        #[arg(long, default_value = "not_affected")]
        state: String,
        /// CycloneDX's justification, required for not_affected: code_not_present,
        /// code_not_reachable, requires_configuration, requires_dependency,
        /// requires_environment, protected_by_compiler, protected_at_runtime,
        /// protected_at_perimeter, protected_by_mitigating_control.
        #[arg(long)]
        justification: Option<String>,
        /// Free text: why.
        #[arg(long)]
        detail: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the standing statements (with --all, the revoked ones too).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a statement: what it covered is listed as vulnerable again. The statement stays
    /// on record, with who revoked it and when.
    Revoke {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

/// `--mode`: permissions in octal, as chmod takes them.
fn octal(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not a mode in octal (at most 7777)"))
}
