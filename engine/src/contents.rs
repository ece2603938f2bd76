//! File contents out of the store into host files: each wanted content (by its hash) written
//! from its pieces, frames decompressed once and in parallel, and read back against its hash.
//! Export fills a tree with them; a patch fetches the contents it carries over.

use crate::catalog::ExtentRow;
use crate::store::{ChunkHash, ChunkLocation, ChunkReader, Packs, parse_hex};
use crate::{Error, IoContext, Library, Progress, Result, UnmappedContents};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A path that could not be written as it should, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub why: String,
}

/// A run of a file's content stored in a chunk: content offset, length, chunk, chunk offset.
pub(crate) type Piece = (u64, u64, ChunkHash, u64);

/// A piece of a content, and the files it fills: (content hash, piece, files).
type Filling<'a> = (&'a str, &'a Piece, &'a [PathBuf]);

impl Library {
    /// Writes the contents of version `image_id` named in `wanted` (content hash, size) into
    /// new files of `dir`, one per content, named by its hash; each is read back against its
    /// hash. For edits that carry files of one version into another. `extents` is the
    /// version's disk map with contents, when the caller has read it already.
    pub(crate) async fn materialize(
        &self,
        image_id: i64,
        extents: Option<&[ExtentRow]>,
        wanted: &[(String, u64)],
        dir: impl AsRef<Path>,
    ) -> Result<()> {
        let dir = dir.as_ref();
        if wanted.is_empty() {
            return Ok(());
        }
        let hashes: HashSet<String> = wanted.iter().map(|(h, _)| h.clone()).collect();
        let pieces = match extents {
            Some(extents) => pieces_in(extents, &hashes)?,
            None => self.content_pieces(image_id, &hashes).await?,
        };
        let chunks: Vec<ChunkHash> = pieces.values().flatten().map(|p| p.2).collect();
        let locations = self.catalog().chunk_locations(&chunks).await?;
        let frames: HashSet<(&str, u64)> = locations.values().map(|l| (l.pack.as_str(), l.offset)).collect();
        crate::trace::phase(&format!(
            "contents of image {image_id} located: {} contents, {} chunks in {} frames",
            wanted.len(),
            locations.len(),
            frames.len()
        ));
        let (packs, dir, wanted) = (self.packs().clone(), dir.to_path_buf(), wanted.to_vec());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut targets: HashMap<&str, Vec<PathBuf>> = HashMap::new();
            for (hash, size) in &wanted {
                let path = dir.join(hash);
                let file = File::create(&path).io_context(|| format!("creating {}", path.display()))?;
                file.set_len(*size).io_context(|| format!("sizing {}", path.display()))?;
                targets.insert(hash, vec![path]);
            }
            let (_, mut failed) = write_contents(&packs, &dir, &targets, &pieces, &locations, None)?;
            failed.extend(check_contents(&dir, &targets));
            match failed.first() {
                None => Ok(()),
                Some(p) => Err(Error::Catalog(format!("content {}: {}", p.path.trim_start_matches('/'), p.why))),
            }
        })
        .await
        .map_err(crate::task_failed("reading contents"))?
    }

    /// The stored pieces of each wanted content, from the image's file extents.
    pub(crate) async fn content_pieces(
        &self,
        image_id: i64,
        wanted: &HashSet<String>,
    ) -> Result<HashMap<String, Vec<Piece>>> {
        // A few contents (an edit's) through the content_hash index; many by one scan.
        let list: Vec<String> = wanted.iter().cloned().collect();
        let contents = (list.len() <= 1024).then_some(list.as_slice());
        pieces_in(&self.catalog().content_extents(image_id, contents).await?, wanted)
    }
}

/// The stored pieces of each wanted content, from a disk map with contents.
fn pieces_in(extents: &[ExtentRow], wanted: &HashSet<String>) -> Result<HashMap<String, Vec<Piece>>> {
    let mut pieces = HashMap::new();
    for e in extents {
        let (Some(content), Some(at)) = (&e.content_hash, e.content_offset) else { continue };
        let extent = (content.as_str(), at, e.length, e.chunk_hash.as_deref(), e.chunk_offset);
        add_piece(&mut pieces, wanted, extent)?;
    }
    Ok(pieces)
}

/// Adds an extent of a file (content hash, content offset, length, chunk, chunk offset) to
/// `pieces` when its content is wanted.
fn add_piece(
    pieces: &mut HashMap<String, Vec<Piece>>,
    wanted: &HashSet<String>,
    (hash, at, len, chunk, chunk_at): (&str, i64, i64, Option<&str>, i64),
) -> Result<()> {
    if !wanted.contains(hash) {
        return Ok(());
    }
    // A zero piece has no chunk: a new file already reads zeros there.
    let Some(chunk) = chunk.and_then(parse_hex) else { return Ok(()) };
    let number = |v: i64| u64::try_from(v).map_err(|_| Error::Catalog(format!("content {hash}: negative offset")));
    pieces.entry(hash.to_string()).or_default().push((number(at)?, number(len)?, chunk, number(chunk_at)?));
    Ok(())
}

/// Fills every file from its pieces, reading each chunk once, frames in parallel: the thread
/// that decompresses a frame writes every piece its chunks hold.
pub(crate) fn write_contents(
    packs: &Packs,
    dir: &Path,
    targets: &HashMap<&str, Vec<PathBuf>>,
    pieces: &HashMap<String, Vec<Piece>>,
    locations: &HashMap<ChunkHash, ChunkLocation>,
    progress: Option<&dyn Progress>,
) -> Result<(u64, Vec<Problem>)> {
    // Under each chunk: (the content, the piece, the files to fill with it).
    let mut by_chunk: HashMap<ChunkHash, (&ChunkLocation, Vec<Filling>)> = HashMap::new();
    for (hash, files) in targets.iter() {
        for piece in pieces.get(*hash).into_iter().flatten() {
            let at = locations
                .get(&piece.2)
                .ok_or_else(|| Error::Catalog(format!("chunk {} is in no pack", crate::store::hex(&piece.2))))?;
            by_chunk.entry(piece.2).or_insert((at, Vec::new())).1.push((hash, piece, files));
        }
    }
    let chunks: Vec<(ChunkHash, &ChunkLocation)> = by_chunk.iter().map(|(h, (at, _))| (*h, *at)).collect();
    let (bytes, failed) = (AtomicU64::new(0), Mutex::new(Vec::new()));
    ChunkReader::new(packs).for_each_chunk(
        &chunks,
        |h, chunk| {
            let mut done = 0;
            for &(hash, &(at, len, _, chunk_at), files) in by_chunk.get(h).map(|c| c.1.as_slice()).unwrap_or_default() {
                let piece = usize::try_from(chunk_at)
                    .ok()
                    .and_then(|s| chunk.get(s..s.checked_add(usize::try_from(len).ok()?)?))
                    .ok_or_else(|| Error::Catalog(format!("content {hash}: a piece at {at} lies outside its chunk")))?;
                for to in files {
                    if let Err(err) = write_piece(to, piece, at) {
                        let problem = problem(dir, to, format!("writing its content: {err}"));
                        failed.lock().map_err(|_| Error::Catalog("a writer thread failed".into()))?.push(problem);
                    }
                }
                bytes.fetch_add(len * files.len() as u64, Ordering::Relaxed);
                done += len;
            }
            if let Some(p) = progress {
                p.advance(done);
            }
            Ok(())
        },
        |e| Error::Io { context: "reading the store".into(), error: e },
    )?;
    Ok((bytes.into_inner(), failed.into_inner().unwrap_or_default()))
}

/// Fills the files whose contents no disk range holds as they are (kept inside their inode, or
/// compressed), of the `sizes` given, through their filesystem's reader: a megabyte at a time,
/// contents in parallel.
pub(crate) fn write_unmapped(
    dir: &Path,
    targets: &HashMap<&str, Vec<PathBuf>>,
    unmapped: &UnmappedContents,
    sizes: &HashMap<String, u64>,
) -> (u64, Vec<Problem>) {
    let held: Vec<(&str, &Vec<PathBuf>, u64)> = (targets.iter())
        .filter(|(hash, _)| unmapped.holds(hash))
        .filter_map(|(hash, files)| Some((*hash, files, *sizes.get(*hash)?)))
        .collect();
    let outcomes: Vec<(u64, Vec<Problem>)> = held
        .par_iter()
        .map(|&(hash, files, size)| {
            let mut problems = Vec::new();
            let mut buf = vec![0u8; size.min(1 << 20) as usize];
            let mut at = 0;
            while at < size && problems.is_empty() {
                let n = (size - at).min(buf.len() as u64) as usize;
                let piece = &mut buf[..n];
                if let Err(e) = unmapped.read(hash, at, piece) {
                    problems.extend(files.iter().map(|to| problem(dir, to, format!("reading its content: {e}"))));
                    break;
                }
                for to in files {
                    if let Err(e) = write_piece(to, piece, at) {
                        problems.push(problem(dir, to, format!("writing its content: {e}")));
                    }
                }
                at += n as u64;
            }
            (at * files.len() as u64, problems)
        })
        .collect();
    let bytes = outcomes.iter().map(|o| o.0).sum();
    (bytes, outcomes.into_iter().flat_map(|o| o.1).collect())
}

/// Writes `bytes` at `at` into the file `to`, which the export made (never through a link).
fn write_piece(to: &Path, bytes: &[u8], at: u64) -> std::io::Result<()> {
    File::options().write(true).custom_flags(libc::O_NOFOLLOW).open(to).and_then(|f| f.write_all_at(bytes, at))
}

/// A problem with the file `to` written under `dir`, named by its path in the image.
fn problem(dir: &Path, to: &Path, why: String) -> Problem {
    let path = to.strip_prefix(dir).map_or_else(|_| to.display().to_string(), |p| format!("/{}", p.display()));
    Problem { path, why }
}

/// Reads every filled file back and checks it against its content hash: a file whose content
/// could not be rebuilt is reported, not left looking whole.
pub(crate) fn check_contents(dir: &Path, targets: &HashMap<&str, Vec<PathBuf>>) -> Vec<Problem> {
    targets
        .par_iter()
        .flat_map_iter(|(hash, paths)| paths.iter().map(move |p| (*hash, p)))
        .filter_map(|(hash, to)| {
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 1 << 16];
            let read = File::open(to).and_then(|mut f| {
                loop {
                    match f.read(&mut buf)? {
                        0 => return Ok(()),
                        n => {
                            hasher.update(&buf[..n]);
                        }
                    }
                }
            });
            match read {
                Err(err) => Some(problem(dir, to, format!("reading it back: {err}"))),
                Ok(()) if hasher.finalize().to_hex().as_str() != hash => {
                    Some(problem(dir, to, "its content could not be rebuilt from the store".into()))
                }
                Ok(()) => None,
            }
        })
        .collect()
}
