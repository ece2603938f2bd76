//! Package databases: dpkg (Debian, Ubuntu), rpm (Fedora, RHEL, openSUSE) and apk (Alpine).
//! Each reader turns a database's bytes into [`Package`]s; where the database lives in a root
//! filesystem is each module's `*_PATH`; `versions` holds each manager's version order.

pub mod apk;
mod bdb;
pub mod dpkg;
mod ndb;
pub mod rpm;
pub mod versions;

/// An installed package, whichever manager installed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    /// As the manager prints it: dpkg `[epoch:]upstream-revision`, rpm `[epoch:]version-release`,
    /// apk `version-rN`.
    pub version: String,
    pub arch: String,
    /// The source package (dpkg `Source:`, rpm's source rpm name, apk `origin`), else the name.
    pub source: String,
    /// Bytes.
    pub installed_size: Option<u64>,
    /// The manager's state: dpkg's `Status:` field, "installed" for rpm and apk.
    pub status: String,
}
