//! Checksums of the catalog's files. Lance checks none of the bytes it reads back: a byte
//! flipped in a data file, an index or a manifest is read as if it were true. So every file of
//! a committed table version is hashed (blake3) as soon as its commit returns and recorded in
//! one log, and `verify` hashes the files again.
//!
//! ```text
//! catalog/checksums        one line per file: <blake3, 64 hex> <size> <path under catalog/> <check>
//! catalog/checksums.lock   flock()ed (locks.rs): shared to append a line, exclusive to rewrite
//! ```
//!
//! On a bucket, where nothing is appended to, each table version's lines are an object of
//! their own, `catalog/checksums/<table>/<table version, 20 digits>`, put once.
//!
//! `<check>` is the first 16 hex digits of the blake3 of the line before it, so that a damaged
//! line is reported as one rather than taken for a damaged file. Lance never writes a file
//! twice under one name (data, deletion and index files have fresh names, a manifest's name is
//! its table version), so a path's sum never changes; `latest_version_hint.json`, which Lance
//! rewrites at every commit, is not recorded but checked for what it says.

use crate::storage::Storage;
use crate::store::{hex, parse_hex};
use crate::{IoContext, Result, locks};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};

/// The log's name in the catalog folder.
pub(crate) const LOG: &str = "checksums";

/// A file's size and blake3, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sum {
    pub size: u64,
    pub hash: [u8; 32],
}

impl Sum {
    /// Hashes `key` of the catalog's storage, a piece at a time (on a bucket, a ranged read
    /// each).
    pub fn of(files: &Storage, key: &str) -> io::Result<Sum> {
        let opened = files.open(key)?;
        let size = opened.len()?;
        let piece: u64 = if files.folder().is_some() { 1 << 20 } else { 8 << 20 };
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0u8; piece.min(size) as usize];
        let mut at = 0;
        while at < size {
            let n = piece.min(size - at) as usize;
            opened.read_exact_at(&mut buffer[..n], at)?;
            hasher.update(&buffer[..n]);
            at += n as u64;
        }
        Ok(Sum { size, hash: *hasher.finalize().as_bytes() })
    }
}

/// The log as read: every path's sums, and the lines that are not what was written.
#[derive(Default)]
pub(crate) struct Recorded {
    pub sums: HashMap<String, Sum>,
    /// (the file holding it, under the catalog; its line number, from 1; what is wrong).
    pub damaged_lines: Vec<(String, usize, String)>,
}

impl Recorded {
    fn add(&mut self, file: &str, bytes: &[u8]) {
        for (n, text) in bytes.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
            let parsed = std::str::from_utf8(text).map_err(|_| "it is not UTF-8").and_then(parse);
            match parsed {
                Ok((path, sum)) => {
                    self.sums.insert(path, sum);
                }
                Err(why) => self.damaged_lines.push((file.to_string(), n + 1, why.to_string())),
            }
        }
    }
}

/// Whether `file` (under the catalog) holds checksums rather than a table's data.
pub(crate) fn is_log(file: &str) -> bool {
    file == LOG || file.starts_with("checksums/") || file == "checksums.lock" || file == "checksums.tmp"
}

/// One line of the log.
fn line(path: &str, sum: &Sum) -> String {
    let body = format!("{} {} {path}", hex(&sum.hash), sum.size);
    format!("{body} {}\n", &blake3::hash(body.as_bytes()).to_hex()[..16])
}

fn parse(line: &str) -> std::result::Result<(String, Sum), &'static str> {
    let (body, check) = line.rsplit_once(' ').ok_or("it has no check")?;
    if blake3::hash(body.as_bytes()).to_hex()[..16] != *check {
        return Err("its check does not match it");
    }
    let mut fields = body.splitn(3, ' ');
    let hash = fields.next().and_then(parse_hex).ok_or("its hash is not 64 hex digits")?;
    let size = fields.next().and_then(|s| s.parse().ok()).ok_or("its size is not a number")?;
    let path = fields.next().filter(|p| !p.is_empty()).ok_or("it names no file")?;
    Ok((path.to_string(), Sum { size, hash }))
}

/// Reads the log of the catalog (an absent log records nothing).
pub(crate) fn load(files: &Storage) -> Result<Recorded> {
    let mut recorded = Recorded::default();
    let logs = match files {
        Storage::Folder(_) => vec![LOG.to_string()],
        Storage::Bucket(_) => {
            files.list(LOG).io_context(|| format!("listing {}", files.name(LOG)))?.into_iter().map(|o| o.key).collect()
        }
    };
    for log in logs {
        let bytes = files.read(&log).io_context(|| format!("reading {}", files.name(&log)))?;
        recorded.add(&log, &bytes.unwrap_or_default());
    }
    Ok(recorded)
}

/// Hashes the files at `paths` (under the catalog) of version `version` of `table`, and
/// records their lines in one write: appended to the log, or as that version's object.
pub(crate) fn record(files: &Storage, table: &str, version: u64, paths: &[String]) -> Result<()> {
    let mut text = String::new();
    for relative in paths {
        let sum = Sum::of(files, relative).io_context(|| format!("hashing {}", files.name(relative)))?;
        text += &line(relative, &sum);
    }
    if text.is_empty() {
        return Ok(());
    }
    let Some(dir) = files.folder() else {
        let key = format!("{LOG}/{table}/{version:020}");
        return files.put(&key, text.into_bytes()).io_context(|| format!("writing {}", files.name(&key)));
    };
    let _appending = locks::checksums(dir, false)?;
    let path = dir.join(LOG);
    File::options()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut log| log.write_all(text.as_bytes()))
        .io_context(|| format!("writing {}", path.display()))
}

/// Rewrites the log with the lines of the files that still exist (after Lance has deleted
/// superseded ones), so that it stays the size of the catalog's live files. Damaged lines are
/// dropped: the file they were for is then reported as one without a checksum.
pub(crate) fn prune(files: &Storage) -> Result<()> {
    let Some(dir) = files.folder() else { return prune_objects(files) };
    let _rewriting = locks::checksums(dir, true)?;
    let recorded = load(files)?;
    let mut kept: Vec<(&String, &Sum)> = recorded.sums.iter().filter(|(p, _)| dir.join(p).exists()).collect();
    if kept.len() == recorded.sums.len() && recorded.damaged_lines.is_empty() {
        return Ok(());
    }
    kept.sort_by(|a, b| a.0.cmp(b.0));
    let text: String = kept.into_iter().map(|(path, sum)| line(path, sum)).collect();
    let path = dir.join(LOG);
    let tmp = dir.join(format!("{LOG}.tmp"));
    fs::write(&tmp, text).and_then(|_| fs::rename(&tmp, &path)).io_context(|| format!("rewriting {}", path.display()))
}

/// [`prune`] on a bucket: per table, the lines of files still there are put into the newest
/// version's object, then the older objects go (a reader between the two finds a line twice,
/// never none).
fn prune_objects(files: &Storage) -> Result<()> {
    let listed = files.list(LOG).io_context(|| format!("listing {}", files.name(LOG)))?;
    let mut by_table: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for object in &listed {
        if let Some((table, _)) = object.key.strip_prefix("checksums/").and_then(|k| k.split_once('/')) {
            by_table.entry(table).or_default().push(&object.key);
        }
    }
    for (_, mut objects) in by_table {
        objects.sort();
        let Some((newest, older)) = objects.split_last() else { continue };
        if older.is_empty() {
            continue;
        }
        let mut recorded = Recorded::default();
        for key in &objects {
            let bytes = files.read(key).io_context(|| format!("reading {}", files.name(key)))?;
            recorded.add(key, &bytes.unwrap_or_default());
        }
        let mut kept: Vec<(&String, &Sum)> = Vec::new();
        for (path, sum) in &recorded.sums {
            if files.size(path).io_context(|| format!("looking up {}", files.name(path)))?.is_some() {
                kept.push((path, sum));
            }
        }
        kept.sort_by(|a, b| a.0.cmp(b.0));
        let text: String = kept.into_iter().map(|(path, sum)| line(path, sum)).collect();
        files.put(newest, text.into_bytes()).io_context(|| format!("rewriting {}", files.name(newest)))?;
        for key in older {
            files.remove(key).io_context(|| format!("removing {}", files.name(key)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every single-bit flip of a line is caught by the line's own check, never read as a
    /// different file's sum.
    #[test]
    fn a_damaged_line_is_found_as_such() {
        let sum = Sum { size: 1750, hash: [7; 32] };
        let text = line("files.lance/_versions/18446744073709551609.manifest", &sum);
        assert_eq!(parse(text.trim_end()), Ok(("files.lance/_versions/18446744073709551609.manifest".into(), sum)));
        let bytes = text.trim_end().as_bytes();
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.to_vec();
                flipped[at] ^= 1 << bit;
                let parsed = std::str::from_utf8(&flipped).map_err(|_| "not UTF-8").and_then(parse);
                assert!(parsed.is_err(), "byte {at} bit {bit}: {parsed:?}");
            }
        }
    }

    #[test]
    fn recorded_files_are_kept_and_gone_ones_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let files = Storage::Folder(dir.path().to_path_buf());
        fs::write(dir.path().join("a"), b"alpha").unwrap();
        fs::write(dir.path().join("b"), b"beta").unwrap();
        record(&files, "t", 1, &["a".into(), "b".into()]).unwrap();
        let recorded = load(&files).unwrap();
        assert_eq!(recorded.sums["a"], Sum { size: 5, hash: *blake3::hash(b"alpha").as_bytes() });
        assert_eq!(recorded.sums.len(), 2);
        fs::remove_file(dir.path().join("b")).unwrap();
        prune(&files).unwrap();
        let recorded = load(&files).unwrap();
        assert_eq!(recorded.sums.keys().collect::<Vec<_>>(), ["a"]);
        assert!(recorded.damaged_lines.is_empty());
    }
}
