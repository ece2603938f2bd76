//! The library: a content-addressed store of chunks in packs ([`store`]), a catalog of Lance
//! tables ([`catalog`]), and the operations over them ([`checkin`], [`checkout`], ...).
//! ARCHITECTURE.md draws the modules' layers; `scripts/modules.sh` keeps them free of cycles.
//!
//! **Architecture Invariant:** the engine knows nothing of SQL or DataFusion; it reads the
//! catalog only through `catalog/`'s questions, and is driven by `sql/` and `cli/`.

pub mod access;
pub mod advisories;
pub mod catalog;
pub mod check;
pub mod checkin;
pub mod checkout;
mod contents;
mod derived;
pub mod edit;
pub mod export;
pub mod gc;
mod library;
mod locks;
pub mod merge;
pub mod patch;
mod prune;
mod ranges;
pub mod read;
pub mod rebuild;
pub mod repack;
pub mod storage;
pub mod store;
mod stored_disk;
pub mod trace;
mod tree;
pub mod verify;
pub mod versions;
pub mod vex;
mod written;

pub use check::CheckReport;
pub use checkin::{CheckinOptions, CheckinSummary};
pub use checkout::{CheckoutOptions, CheckoutSummary};
pub use edit::{Change, EditSummary, Meta};
pub use export::{ExportOptions, ExportSummary};
pub use gc::GcSummary;
pub use library::{FORMAT_VERSION, ImageSpec, Library, acting_for};
pub use locks::{ReadGuard, Scratch, held};
pub use patch::{OnConflict, Outcome, PatchRow, PatchSummary};
pub use prune::PruneSummary;
pub use read::FoundFile;
pub use rebuild::RebuildSummary;
pub use repack::{RepackOptions, RepackSummary};
pub use stored_disk::{UnmappedContents, padded_hash};
pub use verify::VerifyReport;
pub use versions::{CloneSummary, HistoryRow};

/// An engine error. Messages name the image, the structure or the path that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller asked for something that does not exist or cannot be: the user's to fix.
    #[error("{0}")]
    User(String),
    /// No image version answers to this spec (a name, `name@version` or an id).
    #[error("no image {0} in the library")]
    NoImage(String),
    /// The image version exists but has no such file (SQL reads it as NULL).
    #[error("{0}")]
    NotFound(String),
    /// An input image is bad: unreadable, truncated or corrupt.
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    /// The library directory is not usable.
    #[error("library {path}: {message}")]
    Library { path: String, message: String },
    /// The I/O error's text is part of the message (and so not also a `source`, which
    /// `anyhow` would print a second time).
    #[error("{context}: {error}")]
    Io { context: String, error: std::io::Error },
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("catalog rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A bug in imagelake (a task that panicked, a state that cannot be): not the user's,
    /// the image's or the environment's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Progress of a long operation (checkin, checkout, export, repack), phase by phase.
pub trait Progress: Send + Sync {
    /// A phase of `total` bytes begins.
    fn phase(&self, name: &str, total: u64);
    /// `bytes` more of the current phase are done (called from any thread).
    fn advance(&self, bytes: u64);
}

/// Adds context to I/O errors: `.io_context(|| format!("reading {path}"))`.
pub trait IoContext<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| Error::Io { context: context(), error })
    }
}

/// For a blocking task that panicked or was cancelled: a bug in imagelake, never the user's
/// or the image's fault. `doing` says what the task was for.
pub(crate) fn task_failed(doing: impl std::fmt::Display) -> impl FnOnce(tokio::task::JoinError) -> Error {
    move |e| Error::Internal(format!("{doing}: {e}"))
}

/// Runs `work`, turning a panic in it into an `Internal` error that says what it was doing:
/// for reads of a catalog that may be damaged, where Lance can panic on what it decodes.
pub(crate) async fn unless_panicked<T>(doing: &str, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(done) => done,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            Err(Error::Internal(format!("{doing}: {why}")))
        }
    }
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
