//! The file system side of [`super::Storage`].

use super::ObjectInfo;
use std::fs::{self, File};
use std::io;
use std::path::Path;

/// `Ok(None)` for what is not there, as a bucket answers.
pub(super) fn absent_is_none<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every file under `root/under`, with keys relative to `root`, in key order.
pub(super) fn walk(root: &Path, under: &str) -> io::Result<Vec<ObjectInfo>> {
    let mut found = Vec::new();
    let mut folders = vec![under.trim_end_matches('/').to_string()];
    while let Some(folder) = folders.pop() {
        let Some(entries) = absent_is_none(fs::read_dir(root.join(&folder)))? else { continue };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let key = if folder.is_empty() { name } else { format!("{folder}/{name}") };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                folders.push(key);
            } else if kind.is_file() {
                found.push(ObjectInfo { key, size: entry.metadata()?.len() });
            }
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

/// Writes `bytes` beside `dest`, makes them durable and renames them over `dest`.
pub(super) fn replace(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = dest.parent().ok_or_else(|| io::Error::other(format!("{} has no folder", dest.display())))?;
    fs::create_dir_all(dir)?;
    let tmp = dest.with_extension(format!("tmp-{}-{}", std::process::id(), crate::now_ns()));
    let written = File::create_new(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, dest)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// Links `tmp` in as `dest` unless `dest` exists (`false` then), making its folder first,
/// and makes the new name durable.
pub(super) fn link_new(tmp: &Path, dest: &Path) -> io::Result<bool> {
    let dir = dest.parent().ok_or_else(|| io::Error::other(format!("{} has no folder", dest.display())))?;
    fs::create_dir_all(dir)?;
    match fs::hard_link(tmp, dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    File::open(dir)?.sync_all()?;
    Ok(true)
}
