//! Which blocks an edit wrote. debugfs runs with `-z FILE`: before it overwrites a block
//! it saves the block's old bytes in an undo file (e2fsprogs' E2UNDO02 format, the one
//! `e2undo` replays), whose keys name every block written. Only those blocks are read back
//! and stored; the rest of the new version is its parent's.
//!
//! The undo file is trusted only as far as the scratch file confirms it: every block of
//! metadata the edit started with that no key names must hash as before, and data may have
//! appeared in the scratch file's holes only where keys say. Otherwise the edit is refused.

use crate::ranges::{merged, overlaps, within};
use crate::{Error, IoContext, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"E2UNDO02";
const KEY_BLOCK_MAGIC: u32 = 0xCADE_CADE;
/// Header, key block header and key sizes.
const KEY_SIZE: u64 = 16;

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

/// The byte ranges `[start, end)` of the filesystem that the undo file at `path` says were
/// written (whole filesystem blocks), unsorted. An empty file: nothing was written.
pub(crate) fn undo_ranges(path: &Path) -> Result<Vec<(u64, u64)>> {
    let bytes = std::fs::read(path).io_context(|| format!("reading the undo file {}", path.display()))?;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |why: String| Error::Image { image: path.display().to_string(), message: format!("undo file: {why}") };
    if bytes.get(..8) != Some(MAGIC.as_slice()) {
        return Err(bad("no E2UNDO02 header".into()));
    }
    let (keys, key_offset) = (u64_at(&bytes, 8), u64_at(&bytes, 24));
    let (block_size, fs_block_size) = (u64::from(u32_at(&bytes, 32)), u64::from(u32_at(&bytes, 36)));
    let fs_offset = u64_at(&bytes, 64);
    if !(1024..=1 << 20).contains(&block_size) || !(1024..=1 << 16).contains(&fs_block_size) || fs_offset != 0 {
        return Err(bad(format!(
            "block size {block_size}, filesystem block size {fs_block_size}, offset {fs_offset}: not what debugfs writes here"
        )));
    }
    // Keys come in key blocks, each followed by the old bytes of the blocks its keys name.
    let per_block = block_size / KEY_SIZE - 1;
    let mut ranges = Vec::new();
    let mut key_block = key_offset;
    while (ranges.len() as u64) < keys {
        let at = key_block.checked_mul(block_size).and_then(|a| usize::try_from(a).ok());
        let Some(at) = at.filter(|a| a.checked_add(block_size as usize).is_some_and(|end| end <= bytes.len())) else {
            return Err(bad(format!("key block {key_block} lies past the end ({} keys of {keys} read)", ranges.len())));
        };
        if u32_at(&bytes, at) != KEY_BLOCK_MAGIC {
            return Err(bad(format!("block {key_block} is not a key block")));
        }
        let mut data = key_block + 1;
        for i in 0..per_block.min(keys - ranges.len() as u64) {
            let key = at + (KEY_SIZE * (i + 1)) as usize;
            let (fs_block, size) = (u64_at(&bytes, key), u64::from(u32_at(&bytes, key + 12)));
            let range = fs_block
                .checked_mul(fs_block_size)
                .and_then(|start| Some((start, start.checked_add(size.div_ceil(fs_block_size) * fs_block_size)?)));
            ranges.push(range.ok_or_else(|| bad(format!("key {i} is out of range")))?);
            data += size.div_ceil(block_size);
        }
        key_block = data;
    }
    Ok(ranges)
}

/// The unit in which the scratch file is compared before and after an edit.
const BLOCK: u64 = 4096;

/// Hashes of the 4 KiB blocks of the scratch file's data (the parent's metadata, written into
/// it before the edit).
pub(crate) struct Fingerprint {
    data: Vec<(u64, u64)>,
    blocks: Vec<(u64, blake3::Hash)>,
}

impl Fingerprint {
    /// Hashes the blocks of `data` (sorted, disjoint ranges of `file`).
    pub(crate) fn take(file: &File, data: Vec<(u64, u64)>) -> Result<Fingerprint> {
        let mut blocks = Vec::new();
        let mut buf = vec![0u8; BLOCK as usize];
        for &(start, end) in &data {
            let mut at = start / BLOCK * BLOCK;
            while at < end {
                blocks.push((at, hash_block(file, at, &mut buf)?));
                at += BLOCK;
            }
        }
        blocks.dedup_by_key(|b| b.0);
        Ok(Fingerprint { data, blocks })
    }

    /// Refuses an edit whose undo files missed a write: a block of the old data that no key
    /// names and whose bytes changed, or data in a hole of the scratch file where no key says.
    pub(crate) fn check(&self, where_: &str, file: &File, written: &[(u64, u64)]) -> Result<()> {
        let missed = |what: String| Error::Image {
            image: where_.to_string(),
            message: format!("the edit wrote {what} that debugfs's undo file does not list; nothing was committed"),
        };
        let mut buf = vec![0u8; BLOCK as usize];
        for (at, before) in &self.blocks {
            if !overlaps(written, *at, at + BLOCK) && hash_block(file, *at, &mut buf)? != *before {
                return Err(missed(format!("the block at byte {at}")));
            }
        }
        let stat = file.metadata().io_context(|| "reading the scratch file".into())?;
        // Holes come in the host file system's blocks.
        let unit = std::os::unix::fs::MetadataExt::blksize(&stat).max(BLOCK);
        let allowed =
            merged(self.data.iter().chain(written).map(|(s, e)| (s / unit * unit, e.div_ceil(unit) * unit)).collect());
        let size = stat.len();
        let runs =
            imagelake_connectors::disk::file_map(file, 0, size).io_context(|| "mapping the scratch file".into())?;
        if let [only] = runs.as_slice()
            && only.data
        {
            return Ok(()); // a host file system that reports no holes: nothing to learn here
        }
        for run in runs {
            let (start, end) = (run.offset, run.offset + run.len);
            if run.data && !within(&allowed, start, end) {
                return Err(missed(format!("data at bytes {start}..{end}")));
            }
        }
        Ok(())
    }
}

fn hash_block(file: &File, at: u64, buf: &mut [u8]) -> Result<blake3::Hash> {
    let n = file.read_at(buf, at).io_context(|| "reading the scratch file".into())?;
    Ok(blake3::hash(&buf[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(cmd: &mut Command) {
        let out = cmd.output().expect("e2fsprogs (scripts/install-deps.sh installs it)");
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The undo file's ranges are exactly what it takes to turn the filesystem before an edit
    /// into the one after: copying them over the old bytes gives the new ones, byte for byte;
    /// and the fingerprint accepts them and catches a write they leave out.
    #[test]
    fn undo_ranges_carry_every_byte_debugfs_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, new) = (dir.path().join("old.img"), dir.path().join("new.img"));
        let content = dir.path().join("content");
        std::fs::write(&content, (0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()).expect("write");
        run(Command::new("mke2fs").args(["-q", "-F", "-t", "ext4", "-b", "4096"]).arg(&old).arg("32M"));
        std::fs::copy(&old, &new).expect("copy");
        let script = dir.path().join("script");
        let c = content.display();
        std::fs::write(&script, format!("mkdir /d\nwrite {c} /d/f\nsif /d/f mode 0100600\nsymlink /l /d/f\n"))
            .expect("script");
        let undo = dir.path().join("undo");
        run(Command::new("debugfs").args(["-w", "-z"]).arg(&undo).arg("-f").arg(&script).arg(&new));
        let written = merged(undo_ranges(&undo).expect("undo file"));
        assert!(written.iter().map(|(a, b)| b - a).sum::<u64>() >= 200_000, "the file's blocks are listed");

        let (mut patched, after) = (std::fs::read(&old).expect("old"), std::fs::read(&new).expect("new"));
        for &(a, b) in &written {
            let (a, b) = (a as usize, (b as usize).min(after.len()));
            patched[a..b].copy_from_slice(&after[a..b]);
        }
        assert!(patched == after, "the old filesystem with the listed ranges copied over is the new one");

        // Everything of the old filesystem counts as metadata here: the fingerprint of the
        // old bytes holds with the true ranges, and not when one written range is left out.
        let before = Fingerprint::take(&File::open(&old).expect("old"), vec![(0, 32 << 20)]).expect("fingerprint");
        let file = File::open(&new).expect("new");
        before.check("test", &file, &written).expect("the true ranges pass");
        let first_block = written.iter().position(|(a, _)| *a > 0).expect("a range past the superblock");
        let mut missing = written.clone();
        missing.remove(first_block);
        assert!(before.check("test", &file, &missing).is_err(), "a write left out is caught");
    }
}
