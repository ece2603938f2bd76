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
//! `<check>` is the first 16 hex digits of the blake3 of the line before it, so that a damaged
//! line is reported as one rather than taken for a damaged file. Lance never writes a file
//! twice under one name (data, deletion and index files have fresh names, a manifest's name is
//! its table version), so a path's sum never changes; `latest_version_hint.json`, which Lance
//! rewrites at every commit, is not recorded but checked for what it says.

use crate::store::{hex, parse_hex};
use crate::{Error, IoContext, Result, locks};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

/// The log's name in the catalog folder.
pub(crate) const LOG: &str = "checksums";

/// A file's size and blake3, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sum {
    pub size: u64,
    pub hash: [u8; 32],
}

impl Sum {
    /// Hashes the file at `path`.
    pub fn of(path: &Path) -> io::Result<Sum> {
        let mut file = File::open(path)?;
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            size += n as u64;
        }
        Ok(Sum { size, hash: *hasher.finalize().as_bytes() })
    }
}

/// The log as read: every path's sums, and the lines that are not what was written.
#[derive(Default)]
pub(crate) struct Recorded {
    pub sums: HashMap<String, Sum>,
    /// (line number, from 1; what is wrong with it).
    pub damaged_lines: Vec<(usize, String)>,
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

/// Reads the log of the catalog in `dir` (an absent log records nothing).
pub(crate) fn load(dir: &Path) -> Result<Recorded> {
    let path = dir.join(LOG);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recorded::default()),
        Err(e) => return Err(Error::Io { context: format!("reading {}", path.display()), error: e }),
    };
    let mut recorded = Recorded::default();
    for (n, text) in bytes.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
        let parsed = std::str::from_utf8(text).map_err(|_| "it is not UTF-8").and_then(parse);
        match parsed {
            Ok((path, sum)) => {
                recorded.sums.insert(path, sum);
            }
            Err(why) => recorded.damaged_lines.push((n + 1, why.to_string())),
        }
    }
    Ok(recorded)
}

/// Hashes the files at `paths` (under the catalog folder `dir`) and appends their lines, in one
/// write, to the log.
pub(crate) fn record(dir: &Path, paths: &[String]) -> Result<()> {
    let mut text = String::new();
    for relative in paths {
        let path = dir.join(relative);
        let sum = Sum::of(&path).io_context(|| format!("hashing {}", path.display()))?;
        text += &line(relative, &sum);
    }
    if text.is_empty() {
        return Ok(());
    }
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
pub(crate) fn prune(dir: &Path) -> Result<()> {
    let _rewriting = locks::checksums(dir, true)?;
    let recorded = load(dir)?;
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
        fs::write(dir.path().join("a"), b"alpha").unwrap();
        fs::write(dir.path().join("b"), b"beta").unwrap();
        record(dir.path(), &["a".into(), "b".into()]).unwrap();
        let recorded = load(dir.path()).unwrap();
        assert_eq!(recorded.sums["a"], Sum { size: 5, hash: *blake3::hash(b"alpha").as_bytes() });
        assert_eq!(recorded.sums.len(), 2);
        fs::remove_file(dir.path().join("b")).unwrap();
        prune(dir.path()).unwrap();
        let recorded = load(dir.path()).unwrap();
        assert_eq!(recorded.sums.keys().collect::<Vec<_>>(), ["a"]);
        assert!(recorded.damaged_lines.is_empty());
    }
}
