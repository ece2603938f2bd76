//! A progress bar on the terminal for long operations: bytes, rate and phase.

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;

/// One bar per phase; the finished phase's bar stays on screen as a line of history.
#[derive(Default)]
pub struct Bar {
    current: Mutex<Option<ProgressBar>>,
}

impl imagelake_engine::Progress for Bar {
    fn phase(&self, name: &str, total: u64) {
        let style = ProgressStyle::with_template(
            "{msg:32} {bar:30} {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::new(total).with_style(style).with_message(name.to_string());
        if let Ok(mut current) = self.current.lock()
            && let Some(done) = current.replace(bar)
        {
            done.finish();
        }
    }

    fn advance(&self, bytes: u64) {
        if let Ok(current) = self.current.lock()
            && let Some(bar) = current.as_ref()
        {
            bar.inc(bytes);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Ok(mut current) = self.current.lock()
            && let Some(bar) = current.take()
        {
            bar.finish();
        }
    }
}
