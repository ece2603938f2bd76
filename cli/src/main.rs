//! The `imagelake` command: checkin, checkout, edits and SQL over a library.
//!
//! This crate is the program and nothing else: the command line ([`args`]), one dispatch per
//! command ([`commands`]), summaries for a person ([`print`]), query results ([`output`]), the
//! progress bar ([`progress`]), passwords typed for `user add` ([`password`]), the SQL shell
//! and scripts ([`repl`]), and the exit status of each kind of failure ([`exit`]): 0 success
//! (a closed standard output included), 1 the command ran and reports a problem, 2 a usage or
//! user error, 3 a bad input image, 4 the environment failed, 70 an internal error (a bug).
//! The library is `imagelake-engine`, SQL is `imagelake-sql`.

use clap::Parser;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;

// As datafusion-cli does: planning a question allocates many small objects, and mimalloc
// serves them faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod commands;
mod exit;
mod mount;
mod output;
mod password;
mod print;
mod progress;
mod repl;

/// The stack of each runtime thread: plans travel to a cluster as protobuf, encoded and decoded
/// by recursion over the plan's depth, and tokio's 2 MiB overflowed on the README's question 8
/// in a debug build.
const THREAD_STACK: usize = 16 << 20;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(THREAD_STACK).build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("imagelake: cannot start its runtime: {e}");
            std::process::exit(exit::Kind::Environment.status());
        }
    }
}

async fn run() {
    imagelake_engine::trace::phase("started");
    // No transparent huge pages in this process (nor in the tools it runs): mimalloc asks
    // for them on its arenas, and a command that touches its memory once then pays the
    // kernel to clear each 2 MiB page whole (half a patch's CPU time and twice its peak
    // memory; BENCHMARKS.md). SAFETY: this prctl only sets a flag of the process.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    // Usage errors exit with clap's status, 2.
    let cli = args::Cli::parse();
    let status = match AssertUnwindSafe(commands::run(cli)).catch_unwind().await {
        Ok(result) => exit::status(result),
        Err(panic) => exit::panicked(panic),
    };
    imagelake_engine::trace::finish();
    if status != 0 {
        std::process::exit(status);
    }
}
