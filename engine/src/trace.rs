//! `IMAGELAKE_TRACE=1`: the phases of a command on standard error, each with the seconds
//! since the command started, to see where a slow one spends its time (BENCHMARKS.md's
//! breakdowns come from it).

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

/// Notes on standard error that a phase ended, when `IMAGELAKE_TRACE` is set; the first
/// call starts the clock.
pub fn phase(what: &str) {
    static ORIGIN: OnceLock<Option<Instant>> = OnceLock::new();
    if let Some(origin) = ORIGIN.get_or_init(|| std::env::var_os("IMAGELAKE_TRACE").map(|_| Instant::now())) {
        // The time is taken under the lock: lines from several threads stay in order.
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "trace {:7.3} s  {what}", origin.elapsed().as_secs_f64());
    }
}
