//! How `imagelake commit` and `unmount` reach the process serving a writable mount: a Unix
//! socket in its scratch area, beside `mount.json`, which names the mounted directory. One
//! request per connection, one line each way.

use crate::commit::Committer;
use imagelake_engine::{EditSummary, Error, IoContext, Result, held};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a writable mount is asked to do.
#[derive(Debug, Clone, Copy)]
pub enum Ask {
    /// Make the changes so far the next version, and go on serving it.
    Commit,
    /// Drop the changes when the mount ends, instead of committing them.
    Discard,
}

/// Answers asks on `scratch/control` from a thread of its own, for as long as the process runs.
pub fn listen(
    scratch: &Path,
    dir: &Path,
    committer: Arc<Committer>,
    discarded: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
) -> Result<()> {
    let socket = scratch.join("control");
    let listener = UnixListener::bind(&socket).io_context(|| format!("listening on {}", socket.display()))?;
    let dir = std::path::absolute(dir).io_context(|| format!("finding {}", dir.display()))?;
    let about = serde_json::json!({ "dir": dir.display().to_string() });
    let file = scratch.join("mount.json");
    std::fs::write(&file, about.to_string()).io_context(|| format!("writing {}", file.display()))?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(stream, &committer, &discarded, &runtime);
        }
    });
    Ok(())
}

fn answer(
    stream: UnixStream,
    committer: &Committer,
    discarded: &AtomicBool,
    runtime: &tokio::runtime::Handle,
) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let reply = match line.trim() {
        "commit" => match runtime.block_on(committer.commit()) {
            Ok(Some(s)) => format!("ok {}", committed(&s)),
            Ok(None) => "ok nothing to commit".to_string(),
            Err(e) => format!("error {}", e.to_string().replace('\n', " ")),
        },
        "discard" => {
            discarded.store(true, Ordering::SeqCst);
            "ok the changes will be dropped when the mount ends".to_string()
        }
        other => format!("error {other:?}: not a request (commit, discard)"),
    };
    (&stream).write_all(format!("{reply}\n").as_bytes())
}

/// What a commit made, in a line.
pub fn committed(s: &EditSummary) -> String {
    format!(
        "committed {}@{} from {}: {} entries changed, {} bytes new, {} stored, {:.1} s",
        s.name, s.version, s.parent, s.entries_changed, s.bytes_new, s.bytes_stored, s.seconds
    )
}

/// A writable mount's scratch area.
pub struct Area {
    pub area: PathBuf,
    /// The directory it was mounted on.
    pub dir: String,
}

/// What `mount.json` of `area` says (the mounted directory).
pub fn about(area: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(area.join("mount.json")).ok()?).ok()
}

/// The scratch areas of writable mounts of the library whose scratch folder is `tmp`, on
/// `dir` (any, if None), oldest first: live ones if `live`, else those no process holds.
pub fn areas(tmp: &Path, dir: Option<&Path>, live: bool) -> Vec<Area> {
    let dir = dir.and_then(|d| std::path::absolute(d).ok()).map(|d| d.display().to_string());
    let Ok(tmp) = std::fs::read_dir(tmp) else { return Vec::new() };
    let mut found: Vec<(u128, Area)> = (tmp.flatten())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            // mount-<pid>-<nanoseconds>
            let made: u128 = name.strip_prefix("mount-")?.rsplit('-').next()?.parse().ok()?;
            let on = about(&entry.path())?["dir"].as_str()?.to_string();
            if dir.as_ref().is_some_and(|d| *d != on) || held(&entry.path()) != live {
                return None;
            }
            Some((made, Area { area: entry.path(), dir: on }))
        })
        .collect();
    found.sort_by_key(|(made, _)| *made);
    found.into_iter().map(|(_, area)| area).collect()
}

/// Asks the writable mount on `dir` (of the library whose scratch folder is `tmp`); returns its
/// answer, or None when `dir` holds no writable mount of this library that is still served. If the
/// mount ends as it is asked (killed just then): for a discard, None once its process is gone, so
/// that its changes are dropped as any ended mount's are; for a commit, which it may or may not
/// have made, an error, and `commit` then finishes it from the journal.
pub fn ask(tmp: &Path, dir: &Path, what: Ask) -> Result<Option<String>> {
    let live = areas(tmp, Some(dir), true);
    let Some((area, mut stream)) =
        live.iter().find_map(|a| Some((a, UnixStream::connect(a.area.join("control")).ok()?)))
    else {
        return Ok(None);
    };
    let request = match what {
        Ask::Commit => "commit\n",
        Ask::Discard => "discard\n",
    };
    let mut line = String::new();
    // A mount killed meanwhile resets the connection or closes it unanswered: the same end.
    let _ = stream.write_all(request.as_bytes()).and_then(|_| BufReader::new(&stream).read_line(&mut line));
    match line.trim_end().split_once(' ') {
        Some(("ok", answer)) => Ok(Some(answer.to_string())),
        Some(("error", why)) => Err(Error::User(format!("the mount on {}: {why}", dir.display()))),
        _ if matches!(what, Ask::Discard) && ended(&area.area) => Ok(None),
        _ => Err(Error::User(format!("the mount on {} ended before it answered", dir.display()))),
    }
}

/// Waits a little for the process holding the scratch area `area` to be gone.
fn ended(area: &Path) -> bool {
    let started = std::time::Instant::now();
    while held(area) {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}
