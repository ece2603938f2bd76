//! Where a library's packs are: `packs/ab/ID.pack` in its folder, or the object of that key
//! under its bucket prefix. A pack is written whole in a local temporary file first and then
//! published at once (a rename into `packs/`, or one PUT that only succeeds if no object has
//! its key), so no reader ever sees part of a pack. On a bucket, reads are ranged GETs of the
//! bytes asked for (whole frames, an index, a header).

use crate::storage::Bucket;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A library's packs.
#[derive(Clone)]
pub enum Packs {
    /// The library's folder (packs are in its `packs/`).
    Folder(PathBuf),
    Bucket(Bucket),
}

/// The key of pack `id`, relative to the library: `packs/ab/abcdef….pack`.
pub fn pack_key(id: &str) -> String {
    let fan = id.get(..2).unwrap_or("00");
    format!("packs/{fan}/{id}.pack")
}

/// The path of pack `id` in library folder `root`.
pub fn pack_path(root: &Path, id: &str) -> PathBuf {
    root.join(pack_key(id))
}

/// The bytes of one published pack, opened for reading at any offset.
pub(crate) enum PackBytes {
    File(File),
    Object { bucket: Bucket, key: String, len: u64 },
}

impl PackBytes {
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            PackBytes::File(file) => file.read_exact_at(buf, offset),
            PackBytes::Object { bucket, key, .. } => {
                let bytes = bucket.get_range(key, offset..offset + buf.len() as u64)?;
                buf.copy_from_slice(&bytes);
                Ok(())
            }
        }
    }

    pub(crate) fn len(&self) -> io::Result<u64> {
        match self {
            PackBytes::File(file) => Ok(file.metadata()?.len()),
            PackBytes::Object { len, .. } => Ok(*len),
        }
    }
}

impl Packs {
    /// The pack as errors and `check` name it: its path or its URL.
    pub fn name(&self, id: &str) -> String {
        match self {
            Packs::Folder(root) => pack_path(root, id).display().to_string(),
            Packs::Bucket(bucket) => bucket.url(&pack_key(id)),
        }
    }

    /// The id of every published pack, sorted.
    pub fn ids(&self) -> io::Result<Vec<String>> {
        let mut ids = match self {
            Packs::Folder(root) => {
                let mut ids = Vec::new();
                for fan in fs::read_dir(root.join("packs"))? {
                    let fan = fan?;
                    if !fan.file_type()?.is_dir() {
                        continue;
                    }
                    for pack in fs::read_dir(fan.path())? {
                        if let Some(id) = pack?.file_name().to_str().and_then(|n| n.strip_suffix(".pack")) {
                            ids.push(id.to_string());
                        }
                    }
                }
                ids
            }
            Packs::Bucket(bucket) => bucket
                .list("packs")?
                .into_iter()
                .filter_map(|object| Some(object.key.rsplit('/').next()?.strip_suffix(".pack")?.to_string()))
                .collect(),
        };
        ids.sort();
        Ok(ids)
    }

    /// The pack's size in bytes; a pack that is not there is a `NotFound` error.
    pub fn size(&self, id: &str) -> io::Result<u64> {
        match self {
            Packs::Folder(root) => Ok(fs::metadata(pack_path(root, id))?.len()),
            Packs::Bucket(bucket) => bucket
                .size(&pack_key(id))?
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} not found", self.name(id)))),
        }
    }

    /// Opens the pack for reading (on a bucket: one request, for its size).
    pub(crate) fn open(&self, id: &str) -> io::Result<PackBytes> {
        let opened = match self {
            Packs::Folder(root) => File::open(pack_path(root, id)).map(PackBytes::File),
            Packs::Bucket(bucket) => {
                let key = pack_key(id);
                match bucket.size(&key)? {
                    Some(len) => Ok(PackBytes::Object { bucket: bucket.clone(), key, len }),
                    None => Err(io::Error::new(io::ErrorKind::NotFound, "no such object")),
                }
            }
        };
        opened.map_err(|e| io::Error::new(e.kind(), format!("pack {id}: {e}")))
    }

    /// Publishes the complete, durable pack file `tmp` as pack `id`. The file is removed.
    pub(crate) fn publish(&self, tmp: &Path, id: &str) -> io::Result<()> {
        match self {
            Packs::Folder(root) => {
                let dest = pack_path(root, id);
                let dir = dest.parent().ok_or_else(|| io::Error::other("pack path has no folder"))?;
                fs::create_dir_all(dir)?;
                fs::rename(tmp, &dest)?;
                File::open(dir)?.sync_all()
            }
            Packs::Bucket(bucket) => {
                // One PUT of the whole pack (at most PACK_TARGET and a frame): no multipart
                // upload is left behind by a crash, and no listing shows a partial pack.
                let bytes = fs::read(tmp)?;
                if !bucket.put_new(&pack_key(id), bytes)? {
                    let message = format!("{} exists already: pack ids are never reused", self.name(id));
                    return Err(io::Error::new(io::ErrorKind::AlreadyExists, message));
                }
                fs::remove_file(tmp)
            }
        }
    }

    /// Deletes the pack; one that is gone already is not an error.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match self {
            Packs::Folder(root) => match fs::remove_file(pack_path(root, id)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Packs::Bucket(bucket) => bucket.delete(&pack_key(id)),
        }
    }
}
