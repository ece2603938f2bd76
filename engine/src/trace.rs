//! `IMAGELAKE_TRACE=1`: the phases of a command on standard error, each with the seconds
//! since the command started, to see where a slow one spends its time (BENCHMARKS.md's
//! breakdowns come from it). `IMAGELAKE_TRACE=pause` also waits a little after each phase,
//! so that a crash test's kill lands between that phase and the next. The last line says
//! how many requests the command sent to object storage, if any.

use crate::storage::Requests;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Notes on standard error that a phase ended, when `IMAGELAKE_TRACE` is set; the first
/// call starts the clock.
pub fn phase(what: &str) {
    static ORIGIN: OnceLock<Option<(Instant, bool)>> = OnceLock::new();
    let traced = ORIGIN.get_or_init(|| std::env::var("IMAGELAKE_TRACE").ok().map(|v| (Instant::now(), v == "pause")));
    if let Some((origin, pause)) = traced {
        {
            // The time is taken under the lock: lines from several threads stay in order.
            let mut err = std::io::stderr().lock();
            let at = origin.elapsed().as_secs_f64();
            // On a bucket, how many requests it took to get here.
            let _ = match crate::storage::requests().total() {
                0 => writeln!(err, "trace {at:7.3} s  {what}"),
                sent => writeln!(err, "trace {at:7.3} s  {what}  [{sent} requests]"),
            };
        }
        if *pause {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Notes, when `IMAGELAKE_TRACE` is set, the requests the command sent to object storage.
pub fn finish() {
    let sent = crate::storage::requests();
    if std::env::var_os("IMAGELAKE_TRACE").is_some() && sent.total() > 0 {
        let Requests { get, head, put, list, delete, other } = sent;
        phase(&format!(
            "requests {}: {get} GET, {head} HEAD, {put} PUT, {list} LIST, {delete} DELETE, {other} other",
            sent.total()
        ));
    }
}
