//! Leases: what a flock is in a folder, on a bucket, where no kernel is shared. A lease is
//! one object, taken with a conditional create, renewed by its holder with a conditional
//! replace, and dead once its term has passed since the server last wrote it, on the
//! server's clock: a holder that stops (killed, stopped, cut off) loses it without anyone
//! having to trust another host's clock. A dead lease is taken over with `If-Match` of its
//! ETag, so of several takers exactly one wins, and the old holder's next renewal is
//! refused: it knows it lost the lease and must not act on it. `FORMAT.md` ("A library on a
//! bucket") says which keys are leases and what each guards.

use super::Bucket;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A lease's term when `IMAGELAKE_LEASE_SECONDS` does not say: long enough that a holder
/// renewing every third of it survives a slow network, short enough that a dead writer's
/// leftovers go the same hour.
const DEFAULT_TERM: Duration = Duration::from_secs(300);
/// How often a waiter looks whether a live lease is still there (one HEAD request).
const POLL: Duration = Duration::from_millis(100);
/// No lease outlives a day, whatever its object says (a damaged or hostile term).
const LONGEST_TERM: Duration = Duration::from_secs(24 * 3600);
/// The server stamps whole seconds: a lease is dead only a second after its term.
const STAMP_SLACK: Duration = Duration::from_secs(1);

/// What a lease object holds (JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseBody {
    /// 32 random hex digits, unique to this taking of the lease.
    pub holder: String,
    /// `reader`, `writer` or `maintenance`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<i64>,
    pub host: String,
    pub pid: u32,
    pub term_seconds: u64,
}

/// A lease object as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    Free,
    /// Held, for at most `left` more unless renewed. `body` is `None` for an object that is
    /// not a lease's JSON (it is then held for the taker's own term).
    Live {
        body: Option<LeaseBody>,
        left: Duration,
    },
    Dead {
        body: Option<LeaseBody>,
        etag: String,
    },
}

/// A lease this process holds.
pub struct Lease {
    bucket: Bucket,
    key: String,
    body: LeaseBody,
    /// The ETag of the lease object as this holder last wrote it.
    etag: Mutex<String>,
}

impl Lease {
    /// The term of the leases this process takes: `IMAGELAKE_LEASE_SECONDS`, else 5 minutes.
    pub fn term() -> Duration {
        std::env::var("IMAGELAKE_LEASE_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TERM)
            .clamp(Duration::from_secs(1), LONGEST_TERM)
    }

    /// Takes the lease at `key` for `term`: creates it if there is none, takes it over if it
    /// is dead. Returns the live lease's state when another holds it.
    pub fn take(
        bucket: &Bucket,
        key: &str,
        kind: &str,
        image_id: Option<i64>,
        term: Duration,
    ) -> io::Result<Result<Lease, LeaseState>> {
        Lease::take_as(bucket, key, Lease::new_body(super::random_name()?, kind, image_id, term))
    }

    /// Takes a lease of this process's own, `<under>/<holder>.json`: nobody else takes that
    /// key, so it is the holder's at once (a reader, a writer, a checkin in flight).
    pub fn take_own(
        bucket: &Bucket,
        under: &str,
        kind: &str,
        image_id: Option<i64>,
        term: Duration,
    ) -> io::Result<Lease> {
        let holder = super::random_name()?;
        let key = format!("{under}/{holder}.json");
        match Lease::take_as(bucket, &key, Lease::new_body(holder, kind, image_id, term))? {
            Ok(lease) => Ok(lease),
            Err(_) => {
                Err(io::Error::other(format!("{}: a lease under a fresh random name was there", bucket.url(&key))))
            }
        }
    }

    /// Takes the lease at `key`, waiting while another holds it (looking every tenth of a
    /// second whether it is gone, and at its age only once its term may have run out), until
    /// it is taken or `enough` says the wait is no longer needed (`None` then).
    pub fn wait(
        bucket: &Bucket,
        key: &str,
        kind: &str,
        term: Duration,
        mut enough: impl FnMut() -> io::Result<bool>,
    ) -> io::Result<Option<Lease>> {
        loop {
            if enough()? {
                return Ok(None);
            }
            let left = match Lease::take(bucket, key, kind, None, term)? {
                Ok(lease) => return Ok(Some(lease)),
                Err(LeaseState::Live { left, .. }) => left,
                Err(_) => continue,
            };
            let until = Instant::now() + left;
            while Instant::now() < until && bucket.size(key)?.is_some() && !enough()? {
                std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
            }
        }
    }

    fn new_body(holder: String, kind: &str, image_id: Option<i64>, term: Duration) -> LeaseBody {
        LeaseBody {
            holder,
            kind: kind.to_string(),
            image_id,
            host: hostname(),
            pid: std::process::id(),
            term_seconds: term.clamp(Duration::from_secs(1), LONGEST_TERM).as_secs(),
        }
    }

    fn take_as(bucket: &Bucket, key: &str, body: LeaseBody) -> io::Result<Result<Lease, LeaseState>> {
        let term = Duration::from_secs(body.term_seconds);
        let bytes = serde_json::to_vec(&body).map_err(io::Error::other)?;
        let lease = |etag: String| Lease {
            bucket: bucket.clone(),
            key: key.to_string(),
            body: body.clone(),
            etag: Mutex::new(etag),
        };
        // Each turn either wins or sees another holder win a race; a lease that changes
        // hands this often is not worth waiting for.
        for _ in 0..8 {
            if let Some(etag) = bucket.put_new_tagged(key, bytes.clone())? {
                return Ok(Ok(lease(etag)));
            }
            match Lease::state(bucket, key, term)? {
                LeaseState::Free => continue,
                live @ LeaseState::Live { .. } => return Ok(Err(live)),
                LeaseState::Dead { etag, .. } => {
                    if let Some(etag) = bucket.put_if_match(key, bytes.clone(), &etag)? {
                        return Ok(Ok(lease(etag)));
                    }
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("the lease {} changed hands 8 times while it was being taken", bucket.url(key)),
        ))
    }

    /// The lease at `key` as the server's clock judges it. An object that is not a lease's JSON
    /// lives for `term` (the asker's own) after it was written.
    pub fn state(bucket: &Bucket, key: &str, term: Duration) -> io::Result<LeaseState> {
        let Some(found) = bucket.get_tagged(key)? else { return Ok(LeaseState::Free) };
        Ok(judge(found, bucket.server_now()?, term))
    }

    /// Every lease object under `under` and its state, by key, judged by one reading of the
    /// server's clock (taken after the objects were read, so none looks younger than it is).
    pub fn states(bucket: &Bucket, under: &str, term: Duration) -> io::Result<Vec<(String, LeaseState)>> {
        let mut found = Vec::new();
        for object in bucket.list(under)? {
            if let Some(tagged) = bucket.get_tagged(&object.key)? {
                found.push((object.key, tagged));
            }
        }
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let now = bucket.server_now()?;
        Ok(found.into_iter().map(|(key, tagged)| (key, judge(tagged, now, term))).collect())
    }

    pub fn body(&self) -> &LeaseBody {
        &self.body
    }

    /// The lease's key, as messages name it.
    pub fn url(&self) -> String {
        self.bucket.url(&self.key)
    }

    /// Renews the lease for another term: `false` if it was taken over (or removed) meanwhile,
    /// when its holder must stop acting on it.
    pub fn renew(&self) -> io::Result<bool> {
        let bytes = serde_json::to_vec(&self.body).map_err(io::Error::other)?;
        let mut etag = self.etag.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match self.bucket.put_if_match(&self.key, bytes, &etag)? {
            Some(renewed) => {
                *etag = renewed;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Gives the lease up. A lease lost meanwhile is another's now and is left alone; S3 has
    /// no conditional delete, so the renewal just before the delete is what keeps the window
    /// in which a taker could lose its fresh lease to it down to one request.
    pub fn release(&self) -> io::Result<()> {
        if self.renew()? { self.bucket.remove(&self.key) } else { Ok(()) }
    }
}

/// A lease object's state at the server's time `now`.
fn judge(found: super::Tagged, now: chrono::DateTime<chrono::Utc>, term: Duration) -> LeaseState {
    let body: Option<LeaseBody> = serde_json::from_slice(&found.bytes).ok();
    let term = body.as_ref().map_or(term, |b| Duration::from_secs(b.term_seconds)).min(LONGEST_TERM) + STAMP_SLACK;
    let age = (now - found.modified).to_std().unwrap_or_default();
    match term.checked_sub(age) {
        Some(left) if !left.is_zero() => LeaseState::Live { body, left },
        _ => LeaseState::Dead { body, etag: found.etag },
    }
}

/// A lease renewed on a thread of its own every third of its term, and released when dropped.
/// A renewal refused (the lease was taken over as dead) marks it lost; its holder asks
/// [`Kept::confirm`] before acting on it.
pub struct Kept {
    lease: Arc<Lease>,
    lost: Arc<AtomicBool>,
    /// Dropped to stop the renewer.
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Kept {
    pub fn new(lease: Lease) -> io::Result<Kept> {
        let (lease, lost) = (Arc::new(lease), Arc::new(AtomicBool::new(false)));
        let (stop, stopped) = mpsc::channel::<()>();
        let every = Duration::from_secs(lease.body.term_seconds) / 3;
        let (renewed, marked) = (lease.clone(), lost.clone());
        let renewer = std::thread::Builder::new().name("imagelake-lease".into()).spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                // A failed request is tried again at the next turn: the lease lives a term.
                if let Ok(false) = renewed.renew() {
                    marked.store(true, Ordering::SeqCst);
                    return;
                }
            }
        })?;
        Ok(Kept { lease, lost, stop: Some(stop), renewer: Some(renewer) })
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Renews the lease now: `false` if it is lost, when its holder must not act on it (a
    /// writer must not commit). The renewal gives the holder a whole term from here.
    pub fn confirm(&self) -> io::Result<bool> {
        if self.lost.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let kept = self.lease.renew()?;
        if !kept {
            self.lost.store(true, Ordering::SeqCst);
        }
        Ok(kept)
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        // One that cannot be released dies at the end of its term.
        if !self.lost.load(Ordering::SeqCst) {
            let _ = self.lease.release();
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}
