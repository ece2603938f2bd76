//! Exit statuses by kind of failure, as ripgrep has them, and standard output whose reader
//! may go away (`imagelake sql -c '...' | head -1`): that ends the command quietly, with 0.
//!
//! | status | meaning |
//! |--------|---------|
//! | 0  | success (also when standard output's reader closed it early) |
//! | 1  | the command ran and reports a problem: damage found by check or verify, patch conflicts, export refusals, a failed SQL statement |
//! | 2  | a usage or user error: bad arguments (clap's own status), an unknown image, a refused request ([`imagelake_engine::Error::User`], `NoImage`, `NotFound`) |
//! | 3  | an input image refused as bad ([`imagelake_engine::Error::Image`]) |
//! | 4  | the environment failed: I/O, the library directory, the catalog (`Io`, `Library`, `Catalog`, `Arrow`) |
//! | 70 | an internal error, a bug in imagelake: a panic, [`imagelake_engine::Error::Internal`] |
//!
//! The kind of an error is that of the first error of a known kind in its chain: the anyhow
//! chain, and inside DataFusion's `External`, `Context` and `Shared` wrappers (SQL wraps the
//! engine's errors in them). A failed SQL statement is the script's problem (1, as in sqlite3)
//! whatever lies under it (`sql -c "SELECT * FROM ls('nosuch', '/')"` exits 1), unless it is
//! a bug (70).

use datafusion::error::DataFusionError;
use std::any::Any;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// What went wrong, as far as the exit status tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The command ran and reports a problem it found (status 1).
    Problem,
    /// The command line or what it asked for is wrong: the user's to fix (status 2).
    Usage,
    /// An input image is bad (status 3).
    Image,
    /// The machine, the file system or the library failed (status 4).
    Environment,
    /// A bug in imagelake (status 70, as sysexits' EX_SOFTWARE).
    Internal,
}

impl Kind {
    pub fn status(self) -> i32 {
        match self {
            Kind::Problem => 1,
            Kind::Usage => 2,
            Kind::Image => 3,
            Kind::Environment => 4,
            Kind::Internal => 70,
        }
    }
}

/// An error the command line raises itself, with its kind.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    message: String,
}

impl Error {
    pub fn of(kind: Kind, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Error { kind, message: message.into() })
    }

    /// The command ran and found something wrong (status 1).
    pub fn problem(message: impl Into<String>) -> anyhow::Error {
        Error::of(Kind::Problem, message)
    }

    /// A bad request on the command line (status 2).
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Error::of(Kind::Usage, message)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The kind of `error`: that of the first cause of a known kind; a problem (1) if none is.
pub fn kind(error: &anyhow::Error) -> Kind {
    error.chain().find_map(kind_of).unwrap_or(Kind::Problem)
}

/// The kind of a DataFusion error (a failed SQL statement's), if it says.
pub fn datafusion_kind(error: &DataFusionError) -> Option<Kind> {
    match error {
        DataFusionError::External(inner) => kind_of(inner.as_ref()),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => datafusion_kind(inner),
        DataFusionError::Shared(inner) => datafusion_kind(inner),
        DataFusionError::IoError(_) | DataFusionError::ResourcesExhausted(_) => Some(Kind::Environment),
        DataFusionError::Internal(_) | DataFusionError::ExecutionJoin(_) => Some(Kind::Internal),
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::Configuration(_)
        | DataFusionError::NotImplemented(_) => Some(Kind::Usage),
        _ => None,
    }
}

/// A statement a command ran for its work (not the shell's) failed: its root cause's words,
/// and a missing or hidden image or a bad request as the user's (status 2).
pub fn sql(error: DataFusionError) -> anyhow::Error {
    use imagelake_sql::ErrorKind as Sql;
    let kind = datafusion_kind(&error).unwrap_or(match imagelake_sql::error_kind(&error) {
        Sql::NotFound | Sql::Denied | Sql::Invalid | Sql::Unsupported => Kind::Usage,
        _ => Kind::Problem,
    });
    Error::of(kind, error.find_root().message().into_owned())
}

fn kind_of(cause: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    use imagelake_engine::Error as Engine;
    if let Some(e) = cause.downcast_ref::<Error>() {
        return Some(e.kind);
    }
    if let Some(e) = cause.downcast_ref::<Engine>() {
        return Some(match e {
            Engine::User(_) | Engine::NoImage(_) | Engine::NotFound(_) => Kind::Usage,
            Engine::Image { .. } => Kind::Image,
            Engine::Library { .. } | Engine::Io { .. } | Engine::Catalog(_) | Engine::Arrow(_) => Kind::Environment,
            Engine::Internal(_) => Kind::Internal,
        });
    }
    if let Some(e) = cause.downcast_ref::<DataFusionError>() {
        return datafusion_kind(e);
    }
    if let Some(e) = cause.downcast_ref::<io::Error>() {
        return Some(e.get_ref().and_then(|inner| kind_of(inner)).unwrap_or(Kind::Environment));
    }
    if cause.downcast_ref::<clap::Error>().is_some() {
        return Some(Kind::Usage);
    }
    None
}

/// Set once a write to standard output found its reader gone.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether `error` comes from standard output's reader going away: then the command ends
/// quietly, and successfully. Rust ignores SIGPIPE, so such a write fails with EPIPE, which
/// may reach here wrapped (anyhow, DataFusion, Arrow) or only as text (Arrow's CSV writer):
/// [`Stdout`] notes it where it happens.
pub fn is_closed_output(error: &anyhow::Error) -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed) || error.chain().any(is_broken_pipe)
}

pub fn is_broken_pipe(cause: &(dyn std::error::Error + 'static)) -> bool {
    match cause.downcast_ref::<io::Error>() {
        Some(e) => e.kind() == io::ErrorKind::BrokenPipe || e.get_ref().is_some_and(|inner| is_broken_pipe(inner)),
        None => cause.downcast_ref::<DataFusionError>().is_some_and(|e| match e {
            DataFusionError::IoError(e) => e.kind() == io::ErrorKind::BrokenPipe,
            _ => false,
        }),
    }
}

/// Standard output (locked, line-buffered), noting a closed pipe for [`is_closed_output`].
pub struct Stdout(io::StdoutLock<'static>);

impl Stdout {
    pub fn lock() -> Stdout {
        Stdout(io::stdout().lock())
    }
}

fn note<T>(result: io::Result<T>) -> io::Result<T> {
    if let Err(e) = &result
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
    result
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        note(self.0.write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        note(self.0.write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        note(self.0.flush())
    }
}

/// Reports how the command ended on standard error and returns its exit status.
pub fn status(result: anyhow::Result<()>) -> i32 {
    let Err(error) = result else { return 0 };
    if is_closed_output(&error) {
        return 0;
    }
    let kind = kind(&error);
    let text = format!("{error:#}");
    if kind == Kind::Internal {
        internal(text.strip_prefix("internal error: ").unwrap_or(&text));
    } else {
        eprintln!("error: {text}");
    }
    kind.status()
}

/// The exit status of a command that panicked (the panic hook has printed where).
pub fn panicked(payload: Box<dyn Any + Send>) -> i32 {
    internal(&panic_message(payload.as_ref()));
    Kind::Internal.status()
}

/// The message of a panic's payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (None, Some(s)) => s.clone(),
        (None, None) => "a panic".to_string(),
    }
}

fn internal(message: &str) {
    eprintln!("imagelake: internal error (a bug in imagelake, please report it): {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_through_wrappers() {
        let engine = |e: imagelake_engine::Error| DataFusionError::External(Box::new(e));
        let not_found = anyhow::Error::new(engine(imagelake_engine::Error::NotFound("no image x".into())));
        assert_eq!(kind(&not_found), Kind::Usage);
        let image = DataFusionError::Context(
            "checkin".into(),
            Box::new(engine(imagelake_engine::Error::Image { image: "a".into(), message: "bad".into() })),
        );
        assert_eq!(kind(&anyhow::Error::new(image)), Kind::Image);
        let shared = DataFusionError::Shared(std::sync::Arc::new(engine(imagelake_engine::Error::Catalog("x".into()))));
        assert_eq!(kind(&anyhow::Error::new(shared).context("opening")), Kind::Environment);
        let bug = anyhow::Error::new(imagelake_engine::Error::Internal("a task panicked".into()));
        assert_eq!(kind(&bug).status(), 70);
        assert_eq!(kind(&Error::usage("give --mode")).status(), 2);
        assert_eq!(kind(&anyhow::anyhow!("no kind")).status(), 1);
        let pipe = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(pipe.chain().any(is_broken_pipe));
        assert!(!not_found.chain().any(is_broken_pipe));
    }

    #[test]
    fn a_panic_is_an_internal_error() {
        use futures::FutureExt;
        let caught = futures::executor::block_on(std::panic::AssertUnwindSafe(async { panic!("boom") }).catch_unwind());
        let payload = caught.expect_err("the panic is caught");
        assert_eq!(panic_message(payload.as_ref()), "boom");
        assert_eq!(panicked(payload), 70);
    }
}
