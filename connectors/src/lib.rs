//! Bytes to structure, and back: disk formats, partition tables, filesystems, package
//! databases, and the security advisories matched against them. Everything here reads
//! untrusted input and answers with structure or an error that names the structure that is
//! wrong; nothing here knows about the store, the catalog or SQL (**Architecture Invariant**).
//!
//! The seam is [`ReadAt`]: a positioned, thread-safe byte source that fails reads past its
//! end. A disk image is one ([`disk`]); a volume (a partition, a logical volume) is a list of
//! [`Span`]s of the disk, read as one source by [`Mapped`] and mapped back onto the disk by
//! [`to_disk`]; every filesystem reader takes a source. ([`Window`], a single span with no
//! mapping back, serves the fuzz targets.)
//!
//! Every reader fails with one [`Error`]: its [`ErrorKind`] says whether the bytes are bad
//! (`Corrupt`), valid but not read here (`Unsupported`), or the source could not be read
//! (`Io`); its message names the structure.

pub mod advisories;
pub mod btrfs;
mod compressed;
pub mod disk;
mod error;

pub mod ext4;
pub mod fs;
pub mod lvm;
pub mod os;
pub mod packages;
pub mod partition;
pub mod vfat;
pub mod xfs;

mod bytes;
mod read_at;
pub(crate) use error::prefixed;
pub use error::{Error, ErrorKind};
pub use read_at::{Mapped, ReadAt, Span, Window, is_zero, to_disk};
