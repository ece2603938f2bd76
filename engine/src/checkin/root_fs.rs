//! What a root filesystem says about its system: package databases (dpkg, apk, rpm) and
//! small configuration files, read by path with symlinks followed inside the image.

use super::*;

/// The files a checkin reads by path (links at these paths are followed too).
pub(crate) const FILES_READ: [&str; 13] = [
    dpkg::STATUS_PATH,
    apk::INSTALLED_PATH,
    rpm::SQLITE_PATHS[0],
    rpm::SQLITE_PATHS[1],
    rpm::BDB_PATHS[0],
    rpm::BDB_PATHS[1],
    rpm::NDB_PATHS[0],
    rpm::NDB_PATHS[1],
    "/var/lib/rpm/rpmdb.sqlite-wal",
    "/usr/lib/sysimage/rpm/rpmdb.sqlite-wal",
    os::OS_RELEASE_PATHS[0],
    os::OS_RELEASE_PATHS[1],
    os::HOSTNAME_PATH,
];

/// The most of a copyright file read for its licenses (the largest of a Debian system are a
/// few hundred KiB).
const COPYRIGHT_LIMIT: u64 = 4 << 20;

/// The packages of a root filesystem, from whichever database it holds: dpkg (with the
/// licenses of each package's copyright file), apk or rpm.
pub(super) fn find_packages(
    by_path: &HashMap<&str, &fs::File>,
    src: &dyn ReadAt,
    scratch: &Path,
    warnings: &mut Vec<String>,
) -> Option<(&'static str, Vec<Package>)> {
    let text = |path| read_small_file(by_path, src, path).map(|t| String::from_utf8_lossy(&t).into_owned());
    if let Some(status) = text(dpkg::STATUS_PATH) {
        let mut packages = dpkg::parse_status(&status);
        for p in &mut packages {
            let path = dpkg::COPYRIGHT_PATH.replace("{}", &p.name);
            if let Some(f) = resolve(by_path, &path)
                && let Ok(text) = read_whole(f, src, COPYRIGHT_LIMIT)
            {
                p.licenses = dpkg::copyright_licenses(&String::from_utf8_lossy(&text));
            }
        }
        return Some(("dpkg", packages));
    }
    if let Some(installed) = text(apk::INSTALLED_PATH) {
        return Some(("apk", apk::parse_installed(&installed)));
    }
    for path in rpm::SQLITE_PATHS {
        if let Some(db) = resolve(by_path, path) {
            let wal = resolve(by_path, &format!("{path}-wal"));
            match read_rpmdb(db, wal, src, scratch) {
                Ok(found) => return Some(("rpm", found)),
                Err(e) => warnings.push(format!("{path}: {e}; packages not indexed")),
            }
        }
    }
    // SUSE's NDB and the Berkeley DB of RHEL 7 and 8, read whole: such files hold tens of MiB.
    const WHOLE_LIMIT: u64 = 1 << 30;
    type ReadWhole = fn(&[u8]) -> Result<Vec<Package>, rpm::Error>;
    for (paths, read) in [(rpm::NDB_PATHS, rpm::read_ndb as ReadWhole), (rpm::BDB_PATHS, rpm::read_bdb)] {
        for path in paths {
            if let Some(db) = resolve(by_path, path) {
                match read_whole(db, src, WHOLE_LIMIT).and_then(|bytes| read(&bytes).map_err(std::io::Error::from)) {
                    Ok(found) => return Some(("rpm", found)),
                    Err(e) => warnings.push(format!("{path}: {e}; packages not indexed")),
                }
            }
        }
    }
    None
}

/// Copies the rpm sqlite database (and its write-ahead log) out of the image into a private
/// folder of `scratch`, held with a flock while in use, and reads it.
fn read_rpmdb(
    db: &fs::File,
    wal: Option<&fs::File>,
    src: &dyn ReadAt,
    scratch: &Path,
) -> std::io::Result<Vec<Package>> {
    let dir = scratch.join(format!("rpmdb-{}-{}", std::process::id(), now_ns()));
    std::fs::create_dir(&dir)?;
    let result = (|| {
        let held = std::fs::File::open(&dir)?;
        held.try_lock().map_err(std::io::Error::other)?;
        copy_out(db, src, &dir.join("rpmdb.sqlite"))?;
        if let Some(wal) = wal {
            copy_out(wal, src, &dir.join("rpmdb.sqlite-wal"))?;
        }
        rpm::read_sqlite(&dir.join("rpmdb.sqlite")).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Streams a regular file's content out of the image into a host file.
fn copy_out(file: &fs::File, src: &dyn ReadAt, dest: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create_new(dest)?);
    let mut buf = vec![0u8; READ_BUF];
    let mut offset = 0;
    while offset < file.size {
        let n = (file.size - offset).min(READ_BUF as u64) as usize;
        file.read_content(src, offset, &mut buf[..n])?;
        out.write_all(&buf[..n])?;
        offset += n as u64;
    }
    out.flush()
}

/// Reads a small configuration file by path, following symlinks within the filesystem.
pub(super) fn read_small_file(by_path: &HashMap<&str, &fs::File>, src: &dyn ReadAt, path: &str) -> Option<Vec<u8>> {
    read_whole(resolve(by_path, path)?, src, 64 << 20).ok()
}

/// A regular file's whole content, if it is at most `limit` bytes.
fn read_whole(f: &fs::File, src: &dyn ReadAt, limit: u64) -> std::io::Result<Vec<u8>> {
    if f.size > limit {
        return Err(std::io::Error::other(format!("{} bytes, more than the {limit} read", f.size)));
    }
    let mut buf = vec![0u8; f.size as usize];
    f.read_content(src, 0, &mut buf)?;
    Ok(buf)
}

/// The regular file a path names, following symlinks (at most 8, of the file or of any
/// folder on the way: Debian links some packages' `/usr/share/doc/NAME` to another's) within
/// the filesystem.
fn resolve<'a>(by_path: &HashMap<&str, &'a fs::File>, path: &str) -> Option<&'a fs::File> {
    let mut path = normalize(Path::new(path));
    let mut hops = 0;
    'path: loop {
        let mut prefix = PathBuf::from("/");
        for component in path.components().skip(1) {
            prefix.push(component);
            let f = *by_path.get(prefix.to_str()?)?;
            match f.kind {
                fs::FileKind::Symlink => {
                    hops += 1;
                    if hops > 8 {
                        return None;
                    }
                    let target = PathBuf::from(String::from_utf8_lossy(f.link_target.as_ref()?).into_owned());
                    let rest = path.strip_prefix(&prefix).ok()?;
                    let joined = if target.is_absolute() { target } else { prefix.parent()?.join(target) };
                    path = normalize(&joined.join(rest));
                    continue 'path;
                }
                fs::FileKind::File if prefix == path => return Some(f),
                fs::FileKind::Dir => {}
                _ => return None,
            }
        }
        return None;
    }
}

/// Resolves `.` and `..` lexically (a symlink target inside the image, never the host).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}
