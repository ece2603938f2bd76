//! The one error type of the connectors: a [`kind`](Error::kind) to decide on, and a message
//! naming the structure that is wrong, to show.
//!
//! Callers decide by the kind, never by the text (the text is for people, and may change):
//!
//! - [`ErrorKind::Corrupt`]: the bytes are bad. A structure fails its checks (a magic, a
//!   count out of range, a table or an extent that points outside its container, a loop).
//!   A read past the end of a [`ReadAt`](crate::ReadAt) is this kind too: sources fail
//!   reads past their end (`UnexpectedEof`), and only a structure pointing there asks for
//!   one, so a truncated image is corrupt, not an I/O failure.
//! - [`ErrorKind::Unsupported`]: valid, but not something imagelake reads (an ext4
//!   compression or encryption feature, an LVM thin pool or RAID volume, GPT entries of
//!   another size, an encrypted qcow2, a file referenced outside the image's folder).
//! - [`ErrorKind::Io`]: reading the source itself failed (the host's file system, a tool
//!   that did not run); the image may well be fine.
//!
//! Each reader's messages start with its name (`ext4: `, `vfat: `, `lvm2: `,
//! `partition table: `, `rpm database: `, `qcow2: `...).

use std::fmt;
use std::io;

/// What went wrong, naming the structure: see [`ErrorKind`] for what the kinds mean.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// The kind of the I/O error this one comes from, if any.
    io_kind: Option<io::ErrorKind>,
}

/// Why a connector refused its input. More kinds may come: match with a `_` arm.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The bytes are bad: a structure fails its checks, or points past the end of its source.
    Corrupt,
    /// Valid, but a feature or layout imagelake does not read.
    Unsupported,
    /// Reading the source failed.
    Io,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), io_kind: None }
    }

    /// A structure that fails its checks.
    pub fn corrupt(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Corrupt, message)
    }

    /// Something valid that imagelake does not read.
    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// A failed read or open, `message` naming what was being read (and usually quoting
    /// `error`). The kind follows the I/O error's: past the end (`UnexpectedEof`) or bad data
    /// (`InvalidData`, `InvalidInput`) is [`ErrorKind::Corrupt`], `Unsupported` is
    /// [`ErrorKind::Unsupported`], anything else [`ErrorKind::Io`].
    pub fn from_io(error: &io::Error, message: impl Into<String>) -> Error {
        let kind = match error.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                ErrorKind::Corrupt
            }
            io::ErrorKind::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Io,
        };
        Error { kind, message: message.into(), io_kind: Some(error.kind()) }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The whole message, as `Display` prints it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with its message rewritten (context added), its kind kept.
    pub(crate) fn map_message(self, f: impl FnOnce(String) -> String) -> Error {
        Error { message: f(self.message), ..self }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The I/O error's text is part of the message, so it is not also a `source` (which
/// `anyhow` would print a second time).
impl std::error::Error for Error {}

/// For callers that speak `io::Error`: the same message; the kind the error came from, else
/// `InvalidData` (corrupt), `Unsupported`, or `Other`.
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = e.io_kind.unwrap_or(match e.kind {
            ErrorKind::Corrupt => io::ErrorKind::InvalidData,
            ErrorKind::Unsupported => io::ErrorKind::Unsupported,
            ErrorKind::Io => io::ErrorKind::Other,
        });
        io::Error::new(kind, e.message)
    }
}

/// Helpers for a reader whose messages start with `prefix` (`"ext4"` gives `"ext4: ..."`).
macro_rules! prefixed {
    ($prefix:literal) => {
        /// A structure that fails its checks.
        #[allow(dead_code)]
        pub(crate) fn corrupt(what: String) -> $crate::Error {
            $crate::Error::corrupt(format!(concat!($prefix, ": {}"), what))
        }
        /// Something valid that this reader does not read.
        #[allow(dead_code)]
        pub(crate) fn unsupported(what: String) -> $crate::Error {
            $crate::Error::unsupported(format!(concat!($prefix, ": {}"), what))
        }
        /// A read that failed, `what` naming what was read and quoting the I/O error.
        #[allow(dead_code)]
        pub(crate) fn read_failed(error: &std::io::Error, what: String) -> $crate::Error {
            $crate::Error::from_io(error, format!(concat!($prefix, ": {}"), what))
        }
    };
}
pub(crate) use prefixed;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_map_to_kinds_and_back() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "past the end");
        let e = Error::from_io(&eof, format!("ext4: superblock: {eof}"));
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(e.to_string(), "ext4: superblock: past the end");
        let back = io::Error::from(e);
        assert_eq!(back.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(back.to_string(), "ext4: superblock: past the end");

        let eio = io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(Error::from_io(&eio, "x").kind(), ErrorKind::Io);
        let gone = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(Error::from_io(&gone, "x").kind(), ErrorKind::Io);
        assert_eq!(io::Error::from(Error::unsupported("u")).kind(), io::ErrorKind::Unsupported);
        assert_eq!(io::Error::from(Error::corrupt("c")).kind(), io::ErrorKind::InvalidData);
    }
}
