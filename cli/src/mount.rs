//! `imagelake mount` and `unmount`. Without `--foreground`, the command starts itself again
//! with it, in a session of its own, and returns once that process says the mount is ready (as
//! sshfs and guestmount do); its errors reach the same standard error.

use crate::exit::{self, Stdout};
use imagelake_engine::Library;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// The line a mount prints once it is ready: what the background start waits for.
const READY: &str = "mounted ";
/// Set for the mount started in the background: once ready, it lets go of the starting
/// command's output, so that whoever reads that output sees it end (as fuse's daemonize does).
const DETACHED: &str = "IMAGELAKE_MOUNT_DETACHED";

/// mimalloc's setting of how long freed memory is kept before it is given back, read as the
/// process starts.
const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

fn detach() {
    // SAFETY: plain system calls on this process's own descriptors.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
    }
}

/// How to mount: `--partition`, `--writable`, `--allow-other`.
#[derive(Debug, Clone, Copy)]
pub struct How {
    pub partition: Option<i64>,
    pub writable: bool,
    pub allow_other: bool,
}

/// Serves the mount from this process until it is unmounted.
pub async fn foreground(
    library: Arc<Library>,
    image: &str,
    dir: &Path,
    how: How,
    stdout: &mut Stdout,
) -> anyhow::Result<()> {
    let How { partition, writable, allow_other } = how;
    let mut loaded = imagelake_mount::load(library, image, partition, writable).await?;
    loaded.allow_other = allow_other;
    if let Some(pending) = loaded.contents() {
        tokio::spawn(pending.read());
    }
    let line = format!(
        "{READY}{} (partition {}, {} inodes{}) on {}",
        loaded.image,
        loaded.partition,
        loaded.inodes,
        if writable { ", writable" } else { "" },
        dir.display()
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
    let dir = dir.to_path_buf();
    let (ready, mounted) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let served = tokio::task::spawn_blocking(move || {
        imagelake_mount::serve(loaded, &dir, threads, runtime, || {
            let _ = ready.send(());
        })
    });
    if mounted.await.is_ok() {
        // Whoever waits for this line may be gone by the time the mount ends: not an error.
        let _ = writeln!(stdout, "{line}").and_then(|_| stdout.flush());
        if std::env::var_os(DETACHED).is_some() {
            detach();
        }
    }
    // A writable mount commits what changed since its last commit as it ends.
    if let Some(s) = served.await?? {
        let _ = writeln!(stdout, "committed {}@{} from {} as the mount ended", s.name, s.version, s.parent);
    }
    Ok(())
}

/// Starts the mount in a process of its own and returns once it is ready.
pub fn background(library: &Path, image: &str, dir: &Path, how: How) -> anyhow::Result<String> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("-L").arg(library).arg("mount").arg(image).arg(dir).arg("--foreground");
    if let Some(p) = how.partition {
        command.arg("--partition").arg(p.to_string());
    }
    for (set, flag) in [(how.writable, "--writable"), (how.allow_other, "--allow-other")] {
        if set {
            command.arg(flag);
        }
    }
    // A mount lives long and its frames come and go: memory freed goes back to the system at
    // once (mimalloc's default waits, and a thread that frees little may keep it for long).
    if std::env::var_os(PURGE_DELAY).is_none() {
        command.env(PURGE_DELAY, "0");
    }
    command.env(DETACHED, "1").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    // SAFETY: setsid is async-signal-safe; the mount outlives this command and its terminal.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut first)?;
    if first.starts_with(READY) {
        return Ok(first.trim_end().to_string());
    }
    // It ended without mounting, and said why on standard error: its status is this one's.
    let status = child.wait()?;
    let kind = match status.code() {
        Some(2) => exit::Kind::Usage,
        Some(3) => exit::Kind::Image,
        Some(4) => exit::Kind::Environment,
        Some(70) => exit::Kind::Internal,
        _ => exit::Kind::Problem,
    };
    Err(exit::Error::of(kind, format!("the mount of {image} on {} failed", dir.display())))
}

/// `imagelake commit DIR` and `unmount DIR` when no live mount is on DIR: commits (or with
/// `discard`, drops) what writable mounts on DIR that ended without committing left, oldest
/// first. Returns how many there were.
pub async fn unsaved(library: &Library, dir: &Path, discard: bool, stdout: &mut Stdout) -> anyhow::Result<usize> {
    let unsaved = imagelake_mount::areas(library.tmp(), Some(dir), false);
    for area in &unsaved {
        let said = match discard {
            true => {
                drop(imagelake_engine::Scratch::adopt(&area.area)?);
                "dropped the changes".to_string()
            }
            false => match imagelake_mount::recover(library, &area.area).await? {
                imagelake_mount::Recovered::Committed(s) => imagelake_mount::committed(&s),
                imagelake_mount::Recovered::Already(version) => format!("committed already as {version}"),
                imagelake_mount::Recovered::Nothing => "nothing to commit".to_string(),
            },
        };
        writeln!(stdout, "{said} (the mount on {} ended without committing)", area.dir)?;
    }
    Ok(unsaved.len())
}
