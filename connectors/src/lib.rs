//! Bytes to structure, and back: disk formats, partition tables, filesystems and package
//! databases. Everything here reads untrusted input and answers with structure or an error
//! that names the structure that is wrong; nothing here knows about the store, the catalog or
//! SQL (**Architecture Invariant**).
//!
//! The seam is [`ReadAt`]: a positioned, thread-safe byte source. A disk image is one
//! ([`disk`]), a partition is a window onto it ([`Window`]), and every filesystem and package
//! reader takes one.

pub mod disk;

pub mod ext4;
pub mod fs;
pub mod lvm;
pub mod os;
pub mod packages;
pub mod partition;
pub mod vfat;

mod bytes;
mod read_at;
pub use read_at::{Mapped, ReadAt, Span, Window, is_zero, to_disk};
