//! Reading one file of an image version without checking the disk out: its `files` row, then
//! its bytes, gathered from the extents that carry its content and checked against its hash.

use crate::catalog::{FileKind, FileRow};
use crate::store::{ChunkHash, ChunkReader, parse_hex};
use crate::tree::normalize;
use crate::{Error, IoContext, Library, Result};
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
    pub kind: FileKind,
    pub size: i64,
    pub content_hash: Option<String>,
    /// Its inode number in its filesystem.
    pub inode: i64,
}

/// Where a link found at `link_path` points: its target, relative to the link's directory.
fn link_destination(link_path: &str, target: &str) -> String {
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
            let columns = ["partition", "path", "kind", "size", "content_hash", "link_target", "inode"];
            let rows = self.catalog().files_at(image_id, partition, &candidates, &columns).await?;
            let Some(best) = rows.iter().map(|r| r.path.len()).max() else { return Err(not_found(&path)) };
            let hits: Vec<&FileRow> = rows.iter().filter(|r| r.path.len() == best).collect();
            if hits.len() > 1 {
                let parts: Vec<String> = hits.iter().map(|r| r.partition.to_string()).collect();
                return Err(Error::User(format!(
                    "{image}: {path:?} is on partitions {}; name one, as '{}:{path}'",
                    parts.join(" and "),
                    parts.first().map_or("1", |p| p.as_str())
                )));
            }
            let Some(FileRow { partition: p, path: found, kind, size, content_hash: hash, link_target, inode, .. }) =
                hits.first().map(|h| (*h).clone())
            else {
                return Err(not_found(&path));
            };
            partition = Some(p);
            match (found == path, kind, link_target) {
                (_, FileKind::Symlink, Some(target)) => {
                    let rest = path.get(found.len()..).unwrap_or("");
                    path = normalize(&format!("{}{rest}", link_destination(&found, &target)));
                }
                (true, _, _) => {
                    return Ok(FoundFile { image_id, partition: p, path, kind, size, content_hash: hash, inode });
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
        match file.kind {
            FileKind::File => {}
            FileKind::Dir => {
                return Err(Error::User(format!("{what} is a directory; ls('{spec}', '{}') lists it", file.path)));
            }
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
        if blake3::hash(&data).to_hex().as_str() == hash {
            return Ok(data);
        }
        // No extents rebuild it: it is kept inside its inode, or compressed.
        let inode = u64::try_from(file.inode).unwrap_or(0);
        let unmapped = self.unmapped_contents(image.image_id, file.partition, vec![(inode, hash.clone())]).await?;
        let cannot = |why: String| {
            Error::Catalog(format!("{what}: its content could not be rebuilt from the disk map, nor read {why}"))
        };
        if !unmapped.holds(&hash) {
            return Err(cannot("from inside its inode or its compressed extents".into()));
        }
        let read = tokio::task::spawn_blocking(move || {
            let mut data = vec![0; size as usize];
            unmapped.read(&hash, 0, &mut data).map(|()| (blake3::hash(&data).to_hex().as_str() == hash, data))
        });
        match read.await.map_err(crate::task_failed("reading a file"))? {
            Ok((true, data)) => Ok(data),
            Ok((false, _)) => Err(cannot("through its filesystem: what it holds differs from its hash".into())),
            Err(e) => Err(cannot(format!("through its filesystem: {e}"))),
        }
    }

    /// Bytes `0..size` of the content `hash` as image `image_id` lays it out; holes read as zeros.
    async fn content(&self, image_id: i64, hash: &str, size: u64) -> Result<Vec<u8>> {
        let mut data = vec![0u8; size as usize];
        if size == 0 {
            return Ok(data);
        }
        let extents = self.catalog().content_extents(image_id, Some(&[hash.to_string()])).await?;
        // A zero piece has no chunk: its bytes are already zeros.
        let pieces: Vec<(i64, i64, ChunkHash, i64)> = (extents.iter())
            .filter_map(|e| Some((e.content_offset?, e.length, parse_hex(e.chunk_hash.as_deref()?)?, e.chunk_offset)))
            .collect();
        let hashes: Vec<ChunkHash> = pieces.iter().map(|p| p.2).collect();
        let locations = self.catalog().chunk_locations(&hashes).await?;
        let store = ChunkReader::new(self.packs());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_like_the_kernel() {
        assert_eq!(normalize("/a/./b//../c/"), "/a/c");
        assert_eq!(normalize("/../.."), "/");
        assert_eq!(link_destination("/etc/os-release", "../usr/lib/os-release"), "/usr/lib/os-release");
        assert_eq!(link_destination("/lib", "usr/lib"), "/usr/lib");
        assert_eq!(link_destination("/etc/alternatives/x", "/usr/bin/y"), "/usr/bin/y");
    }
}
