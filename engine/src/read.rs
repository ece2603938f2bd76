//! Reading one file of an image version without checking the disk out: its `files` row, then
//! its bytes, gathered from the extents that carry its content and checked against its hash.

use crate::catalog::{ChunkRow, ExtentRow, FileRow, Table};
use crate::store::{ChunkHash, ChunkLocation, ChunkReader, parse_hex};
use crate::{Error, IoContext, Library, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// Files larger than this are not read into memory (`checkout` writes whole disks).
pub const MAX_READ: u64 = 256 << 20;
/// Symbolic links followed before giving up, as the kernel's ELOOP limit.
const MAX_LINKS: usize = 40;

/// A file as found in an image: where, what, and (for a regular file) its content hash.
#[derive(Debug, Clone)]
pub struct FoundFile {
    pub image_id: i64,
    pub partition: i64,
    pub path: String,
    pub kind: String,
    pub size: i64,
    pub content_hash: Option<String>,
}

/// Quotes a string for a Lance filter.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `/a/b/../c` -> `/a/c`; the result is absolute and has no `.`, `..` or empty components.
pub(crate) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Where a link found at `link_path` points: its target, relative to the link's directory.
fn follow(link_path: &str, target: &str) -> String {
    if target.starts_with('/') {
        normalize(target)
    } else {
        let dir = link_path.rsplit_once('/').map_or("", |(d, _)| d);
        normalize(&format!("{dir}/{target}"))
    }
}

impl Library {
    /// Finds `path` in image version `image_id`, following symbolic links (in the path and at
    /// its end) within the file's partition. `N:/path` names the partition when several
    /// filesystems of the image have the path.
    pub async fn find_file(&self, image: &str, image_id: i64, path: &str) -> Result<FoundFile> {
        let (mut partition, mut path) = match path.split_once(":/") {
            Some((p, rest)) if p.parse::<i64>().is_ok() => (p.parse::<i64>().ok(), normalize(rest)),
            _ if path.starts_with('/') => (None, normalize(path)),
            _ => return Err(Error::User(format!("{path:?}: give an absolute path such as '/etc/hostname'"))),
        };
        let not_found = |path: &str| Error::NotFound(format!("{image}: no file {path:?}"));
        for _ in 0..MAX_LINKS {
            // The path and every ancestor: the longest one that exists decides.
            let mut candidates = vec![path.clone()];
            let mut at = path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                if parent.is_empty() {
                    break;
                }
                candidates.push(parent.to_string());
                at = parent;
            }
            let list = candidates.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
            let mut filter = format!("image_id = {image_id} AND path IN ({list})");
            if let Some(p) = partition {
                filter += &format!(" AND partition = {p}");
            }
            let columns = ["partition", "path", "kind", "size", "content_hash", "link_target"];
            let batches = self.catalog().scan(FileRow::NAME, &columns, Some(&filter)).await?;
            let rows = file_rows(&batches);
            let Some(best) = rows.iter().map(|r| r.1.len()).max() else { return Err(not_found(&path)) };
            let hits: Vec<_> = rows.iter().filter(|r| r.1.len() == best).collect();
            if hits.len() > 1 {
                let parts: Vec<String> = hits.iter().map(|r| r.0.to_string()).collect();
                return Err(Error::User(format!(
                    "{image}: {path:?} is on partitions {}; name one, as '{}:{path}'",
                    parts.join(" and "),
                    parts.first().map_or("1", |p| p.as_str())
                )));
            }
            let Some((p, found, kind, size, hash, target)) = hits.first().map(|h| (*h).clone()) else {
                return Err(not_found(&path));
            };
            partition = Some(p);
            match (found == path, kind.as_str(), target) {
                (_, "symlink", Some(target)) => {
                    let rest = path.get(found.len()..).unwrap_or("");
                    path = normalize(&format!("{}{rest}", follow(&found, &target)));
                }
                (true, _, _) => {
                    return Ok(FoundFile { image_id, partition: p, path, kind, size, content_hash: hash });
                }
                // An ancestor that exists but is not a link: the rest of the path does not.
                (false, _, _) => return Err(not_found(&path)),
            }
        }
        Err(Error::User(format!("{image}: {path:?}: too many levels of symbolic links")))
    }

    /// The content of a regular file of image version `spec` (`name`, `name@N` or an id).
    pub async fn read_file(&self, spec: &str, path: &str) -> Result<Vec<u8>> {
        let _reading = self.reading()?;
        let image = self.resolve(spec).await?;
        let file = self.find_file(spec, image.image_id, path).await?;
        let what = format!("{spec}: {}", file.path);
        match file.kind.as_str() {
            "file" => {}
            "dir" => return Err(Error::User(format!("{what} is a directory; ls('{spec}', '{}') lists it", file.path))),
            other => return Err(Error::User(format!("{what} is a {other}, not a regular file"))),
        }
        let size = u64::try_from(file.size).unwrap_or(0);
        if size > MAX_READ {
            return Err(Error::User(format!(
                "{what} has {size} bytes, more than the {} MiB read at once; check the image out instead",
                MAX_READ >> 20
            )));
        }
        let hash = file.content_hash.clone().ok_or_else(|| Error::Catalog(format!("{what} has no content hash")))?;
        let data = self.content(image.image_id, &hash, size).await?;
        if blake3::hash(&data).to_hex().as_str() != hash {
            return Err(Error::Catalog(format!(
                "{what}: its content could not be rebuilt from the disk map (content kept inside the \
                 inode, such as ext4 inline data, has no extents)"
            )));
        }
        Ok(data)
    }

    /// Bytes `0..size` of the content `hash` as image `image_id` lays it out; holes read as zeros.
    async fn content(&self, image_id: i64, hash: &str, size: u64) -> Result<Vec<u8>> {
        let mut data = vec![0u8; size as usize];
        if size == 0 {
            return Ok(data);
        }
        let filter = format!("image_id = {image_id} AND content_hash = {}", quote(hash));
        let columns = ["content_offset", "length", "chunk_hash", "chunk_offset"];
        let batches = self.catalog().scan(ExtentRow::NAME, &columns, Some(&filter)).await?;
        let mut pieces = Vec::new();
        for b in &batches {
            let (at, len) = (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_primitive::<Int64Type>());
            let (chunk, chunk_at) = (b.column(2).as_string::<i32>(), b.column(3).as_primitive::<Int64Type>());
            for r in 0..b.num_rows() {
                // A zero piece has no chunk: its bytes are already zeros.
                if let Some(h) = chunk.is_valid(r).then(|| parse_hex(chunk.value(r))).flatten() {
                    pieces.push((at.value(r), len.value(r), h, chunk_at.value(r)));
                }
            }
        }
        let hashes: Vec<ChunkHash> = pieces.iter().map(|p| p.2).collect();
        let locations = self.chunk_locations_of(&hashes).await?;
        let store = ChunkReader::new(self.root());
        let mut chunks: HashMap<ChunkHash, Vec<u8>> = HashMap::new();
        let outside = |at: i64| Error::Catalog(format!("content {hash}: a piece at {at} lies outside its chunk"));
        for (at, len, h, chunk_at) in pieces {
            let chunk = match chunks.entry(h) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let loc = locations
                        .get(&h)
                        .ok_or_else(|| Error::Catalog(format!("chunk {} is in no pack", crate::store::hex(&h))))?;
                    e.insert(store.read(&h, loc).io_context(|| "reading the store".into())?)
                }
            };
            // Offsets come from the catalog: checked, never trusted to fit.
            let range = |start: i64| -> Option<std::ops::Range<usize>> {
                let start = usize::try_from(start).ok()?;
                Some(start..start.checked_add(usize::try_from(len).ok()?)?)
            };
            let bytes = range(chunk_at).and_then(|r| chunk.get(r)).ok_or_else(|| outside(at))?;
            let target = range(at).and_then(|r| data.get_mut(r)).ok_or_else(|| outside(at))?;
            target.copy_from_slice(bytes);
        }
        Ok(data)
    }

    /// Where the given chunks live (looked up through the `chunks` table's index).
    pub async fn chunk_locations_of(&self, hashes: &[ChunkHash]) -> Result<HashMap<ChunkHash, ChunkLocation>> {
        let mut wanted: Vec<String> = hashes.iter().map(crate::store::hex).collect();
        wanted.sort();
        wanted.dedup();
        // Lookups of 512 hashes at a time, all at once.
        let lookups = wanted.chunks(512).map(|group| {
            let list = group.iter().map(|h| quote(h)).collect::<Vec<_>>().join(", ");
            let filter = format!("chunk_hash IN ({list})");
            async move {
                let batches =
                    self.catalog().scan(ChunkRow::NAME, &crate::checkout::LOCATION_COLUMNS, Some(&filter)).await?;
                Ok::<_, Error>(crate::checkout::locations(&batches))
            }
        });
        let found = futures::future::try_join_all(lookups).await?;
        Ok(found.into_iter().flatten().collect())
    }
}

type FileHit = (i64, String, String, i64, Option<String>, Option<String>);

fn file_rows(batches: &[RecordBatch]) -> Vec<FileHit> {
    let mut rows = Vec::new();
    for b in batches {
        let (part, path, kind) =
            (b.column(0).as_primitive::<Int64Type>(), b.column(1).as_string::<i32>(), b.column(2).as_string::<i32>());
        let (size, hash, target) =
            (b.column(3).as_primitive::<Int64Type>(), b.column(4).as_string::<i32>(), b.column(5).as_string::<i32>());
        for r in 0..b.num_rows() {
            rows.push((
                part.value(r),
                path.value(r).to_string(),
                kind.value(r).to_string(),
                size.value(r),
                hash.is_valid(r).then(|| hash.value(r).to_string()),
                target.is_valid(r).then(|| target.value(r).to_string()),
            ));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_like_the_kernel() {
        assert_eq!(normalize("/a/./b//../c/"), "/a/c");
        assert_eq!(normalize("/../.."), "/");
        assert_eq!(follow("/etc/os-release", "../usr/lib/os-release"), "/usr/lib/os-release");
        assert_eq!(follow("/lib", "usr/lib"), "/usr/lib");
        assert_eq!(follow("/etc/alternatives/x", "/usr/bin/y"), "/usr/bin/y");
    }
}
