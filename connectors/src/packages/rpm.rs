//! The rpm database: the sqlite `rpmdb.sqlite` of rpm 4.16 and later (Fedora 33+, RHEL 9,
//! openSUSE), whose `Packages` table holds one rpm header blob per installed package.
//!
//! Headers are parsed here (a small, bounded format: an index of tagged entries and a data
//! store); sqlite does the rest. The older Berkeley DB `Packages` file (RHEL 7 and 8, Fedora
//! before 33) holds the same headers in a hash database, read by [`super::bdb`], and SUSE's
//! NDB `Packages.db` (SLES 15, openSUSE Leap) in rpm's own format, read by [`super::ndb`].

use super::Package;
use std::path::Path;

/// Where the sqlite database lives, relative to the root filesystem (the second is
/// openSUSE's; the first is often a symlink to it there).
pub const SQLITE_PATHS: [&str; 2] = ["/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite"];
/// The Berkeley DB database of older releases (RHEL 7 and 8, Fedora before 33).
pub const BDB_PATHS: [&str; 2] = ["/var/lib/rpm/Packages", "/usr/lib/sysimage/rpm/Packages"];
/// SUSE's NDB database (SLES 15, openSUSE Leap 15).
pub const NDB_PATHS: [&str; 2] = ["/usr/lib/sysimage/rpm/Packages.db", "/var/lib/rpm/Packages.db"];

/// What went wrong: messages start with `rpm database: `. sqlite failing to open or read
/// the file is [`Io`](crate::ErrorKind::Io); anything else (not a database, no `Packages`
/// table, a bad header) is [`Corrupt`](crate::ErrorKind::Corrupt).
pub type Error = crate::Error;

fn sqlite_error(e: &rusqlite::Error, what: String) -> Error {
    use rusqlite::ErrorCode::{CannotOpen, PermissionDenied, SystemIoFailure};
    let what = format!("rpm database: {what}");
    match e.sqlite_error_code() {
        Some(CannotOpen | PermissionDenied | SystemIoFailure) => Error::new(crate::ErrorKind::Io, what),
        _ => Error::corrupt(what),
    }
}

/// Reads every package of the sqlite database at `db` (with its `-wal` file beside it, if
/// any: sqlite replays it). The file is opened read-only and never changed.
pub fn read_sqlite(db: &Path) -> Result<Vec<Package>, Error> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(db, flags)
        .map_err(|e| sqlite_error(&e, format!("opening {}: {e}", db.display())))?;
    let mut stmt = conn
        .prepare("SELECT hnum, blob FROM Packages")
        .map_err(|e| sqlite_error(&e, format!("no Packages table: {e}")))?;
    let rows = stmt
        .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)))
        .map_err(|e| sqlite_error(&e, e.to_string()))?;
    let mut packages = Vec::new();
    for row in rows {
        let (hnum, blob) = row.map_err(|e| sqlite_error(&e, e.to_string()))?;
        packages.push(parse_package(hnum, &blob)?);
    }
    Ok(packages)
}

/// Reads every package of a Berkeley DB `Packages` file: a hash database whose keys are
/// package numbers and whose values are header blobs. Key 0 holds rpm's next number, not a
/// package.
pub fn read_bdb(file: &[u8]) -> Result<Vec<Package>, Error> {
    let records =
        super::bdb::read(file, MAX_BLOB).map_err(|e| Error::corrupt(format!("rpm database: Berkeley DB: {e}")))?;
    let numbered = records.into_iter().filter_map(|(key, blob)| {
        let number = u32::from_ne_bytes(key.get(..4)?.try_into().ok()?);
        (number != 0).then_some((number, blob))
    });
    numbered.map(|(hnum, blob)| parse_package(hnum, &blob)).collect()
}

/// Reads every package of an NDB `Packages.db` file.
pub fn read_ndb(file: &[u8]) -> Result<Vec<Package>, Error> {
    let records = super::ndb::read(file, MAX_BLOB).map_err(|e| Error::corrupt(format!("rpm database: NDB: {e}")))?;
    records.into_iter().map(|(hnum, blob)| parse_package(hnum, &blob)).collect()
}

/// The package of header blob number `hnum`; an error names the package.
fn parse_package(hnum: impl std::fmt::Display, blob: &[u8]) -> Result<Package, Error> {
    parse_header(blob).map_err(|e| Error::corrupt(format!("rpm database: package {hnum}: {e}")))
}

const NAME: u32 = 1000;
const VERSION: u32 = 1001;
const RELEASE: u32 = 1002;
const EPOCH: u32 = 1003;
const SIZE: u32 = 1009;
const LICENSE: u32 = 1014;
const ARCH: u32 = 1022;
const SOURCERPM: u32 = 1044;
const LONGSIZE: u32 = 5009;

const TYPE_INT32: u32 = 4;
const TYPE_INT64: u32 = 5;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

/// rpm's own limits on a header: at most this many entries and this much data.
const MAX_ENTRIES: usize = 0xffff;
const MAX_DATA: usize = 256 << 20;
/// The largest blob such a header makes.
const MAX_BLOB: usize = 8 + MAX_ENTRIES * 16 + MAX_DATA;

/// Parses one header blob (as stored in the database: no lead, no magic).
pub fn parse_header(blob: &[u8]) -> Result<Package, String> {
    let be32 = |at: usize| blob.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let (entries, data_len) = (be32(0).ok_or("header shorter than 8 bytes")? as usize, be32(4).unwrap_or(0) as usize);
    if entries > MAX_ENTRIES || data_len > MAX_DATA {
        return Err(format!("header claims {entries} entries and {data_len} data bytes, past rpm's limits"));
    }
    let store = 8 + entries * 16;
    let data = blob.get(store..store + data_len).ok_or("header data lies past the end of the blob")?;
    let find = |tag: u32| -> Option<(u32, usize)> {
        (0..entries).find_map(|i| {
            let at = 8 + i * 16;
            (be32(at)? == tag).then(|| Some((be32(at + 4)?, be32(at + 8)? as usize)))?
        })
    };
    let string = |entry: Option<(u32, usize)>| -> Result<Option<String>, String> {
        let Some((kind, offset)) = entry else { return Ok(None) };
        if kind != TYPE_STRING && kind != TYPE_I18NSTRING {
            return Err(format!("a string tag has type {kind}"));
        }
        let bytes = data.get(offset..).ok_or("a string lies past the data store")?;
        let end = bytes.iter().position(|&b| b == 0).ok_or("a string has no terminating NUL")?;
        Ok(Some(String::from_utf8_lossy(&bytes[..end]).into_owned()))
    };
    let int = |entry: Option<(u32, usize)>| -> Option<u64> {
        let (kind, offset) = entry?;
        match kind {
            TYPE_INT32 => data.get(offset..offset + 4).map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
            TYPE_INT64 => data.get(offset..offset + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes),
            _ => None,
        }
    };
    let name = string(find(NAME))?.ok_or("no NAME tag")?;
    let version = string(find(VERSION))?.unwrap_or_default();
    let release = string(find(RELEASE))?;
    let epoch = int(find(EPOCH));
    let arch = string(find(ARCH))?.unwrap_or_default();
    let source_rpm = string(find(SOURCERPM))?;
    let size = int(find(LONGSIZE)).or_else(|| int(find(SIZE)));
    let license = string(find(LICENSE))?.filter(|l| !l.is_empty());
    // rpm's %{EVR}: "epoch:version-release", the epoch only when the package has one.
    let with_epoch = |version_release: String| match epoch {
        Some(e) => format!("{e}:{version_release}"),
        None => version_release,
    };
    let evr = with_epoch(match &release {
        Some(r) => format!("{version}-{r}"),
        None => version,
    });
    // "hello-1.0-1.src.rpm" -> "hello" and "1.0-1": the source rpm's name is all but its
    // version and release, and it shares the package's epoch.
    let source_parts =
        source_rpm.as_deref().and_then(|s| s.strip_suffix(".src.rpm").or(s.strip_suffix(".nosrc.rpm"))).and_then(|s| {
            let mut parts = s.rsplitn(3, '-');
            let (release, version, name) = (parts.next()?, parts.next()?, parts.next()?);
            Some((name.to_string(), format!("{version}-{release}")))
        });
    let (source, source_version) = match source_parts {
        Some((source, version_release)) => (source, with_epoch(version_release)),
        None => (name.clone(), evr.clone()),
    };
    Ok(Package {
        name,
        version: evr,
        arch,
        source,
        source_version,
        epoch,
        release,
        source_rpm,
        licenses: license.into_iter().collect(),
        installed_size: size,
        status: "installed".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(entries: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, kind, value) in entries {
            while *kind == TYPE_INT64 && data.len() % 8 != 0 {
                data.push(0);
            }
            for v in [*tag, *kind, data.len() as u32, 1] {
                index.extend_from_slice(&v.to_be_bytes());
            }
            data.extend_from_slice(value);
        }
        let mut blob = (entries.len() as u32).to_be_bytes().to_vec();
        blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
        blob.extend(index);
        blob.extend(data);
        blob
    }

    #[test]
    fn parses_names_versions_and_sources() {
        let blob = header(&[
            (NAME, TYPE_STRING, b"bash\0"),
            (VERSION, TYPE_STRING, b"5.2.26\0"),
            (RELEASE, TYPE_STRING, b"3.fc40\0"),
            (EPOCH, TYPE_INT32, &2u32.to_be_bytes()),
            (ARCH, TYPE_STRING, b"x86_64\0"),
            (SOURCERPM, TYPE_STRING, b"bash-5.2.26-2.fc40.src.rpm\0"),
            (LICENSE, TYPE_STRING, b"GPL-3.0-or-later\0"),
            (LONGSIZE, TYPE_INT64, &8_123_456u64.to_be_bytes()),
        ]);
        let p = parse_header(&blob).unwrap();
        assert_eq!(
            (p.source_version.as_str(), p.epoch, p.release.as_deref()),
            ("2:5.2.26-2.fc40", Some(2), Some("3.fc40"))
        );
        assert_eq!(
            (p.source_rpm.as_deref(), p.licenses.as_slice()),
            (Some("bash-5.2.26-2.fc40.src.rpm"), &["GPL-3.0-or-later".to_string()][..])
        );
        assert_eq!((p.name.as_str(), p.version.as_str(), p.arch.as_str()), ("bash", "2:5.2.26-3.fc40", "x86_64"));
        assert_eq!((p.source.as_str(), p.installed_size), ("bash", Some(8_123_456)));
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert!(parse_header(&[0, 0]).is_err());
        assert!(parse_header(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
        let mut blob = header(&[(NAME, TYPE_STRING, b"x\0")]);
        let n = blob.len();
        blob[n - 1] = b'y'; // no terminating NUL
        assert!(parse_header(&blob).unwrap_err().contains("NUL"));
    }
}
