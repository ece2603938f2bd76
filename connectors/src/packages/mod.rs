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
    /// The source package's version, in the form of `version`: dpkg's `Source: name (version)`,
    /// rpm's source rpm version and release (with the package's epoch), else the package's own.
    pub source_version: String,
    /// rpm only: the `EPOCH` tag (also in `version`, as `epoch:`).
    pub epoch: Option<u64>,
    /// rpm only: the `RELEASE` tag (also in `version`, after the last `-`).
    pub release: Option<String>,
    /// rpm only: the source rpm's file name, as recorded (`bash-5.2.26-3.fc40.src.rpm`).
    pub source_rpm: Option<String>,
    /// The licenses the package declares, in the manager's words: rpm's `LICENSE` and apk's
    /// `L:` (each one expression), or for dpkg those its copyright file names (filled by the
    /// reader of that file, [`dpkg::copyright_licenses`]).
    pub licenses: Vec<String>,
    /// Bytes.
    pub installed_size: Option<u64>,
    /// The manager's state: dpkg's `Status:` field, "installed" for rpm and apk.
    pub status: String,
}
