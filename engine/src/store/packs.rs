//! Where a library's packs are: `packs/ab/ID.pack` in its storage (a folder, or a bucket
//! prefix). A pack is written whole in a local temporary file first and then published at
//! once (see [`Storage::publish`]), so no reader ever sees part of a pack. On a bucket, reads
//! are ranged GETs of the bytes asked for (whole frames, an index, a header).

use crate::storage::{Opened, Storage};
use std::io;
use std::path::{Path, PathBuf};

/// A library's packs.
#[derive(Clone)]
pub struct Packs(pub Storage);

/// The key of pack `id`, relative to the library: `packs/ab/abcdef….pack`.
pub fn pack_key(id: &str) -> String {
    let fan = id.get(..2).unwrap_or("00");
    format!("packs/{fan}/{id}.pack")
}

/// The path of pack `id` in library folder `root`.
pub fn pack_path(root: &Path, id: &str) -> PathBuf {
    root.join(pack_key(id))
}

impl Packs {
    /// The pack as messages name it: its path or its URL.
    pub fn name(&self, id: &str) -> String {
        self.0.name(&pack_key(id))
    }

    /// The id of every published pack, sorted.
    pub fn ids(&self) -> io::Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .0
            .list("packs")?
            .into_iter()
            .filter_map(|object| {
                let id = object.key.strip_prefix("packs/")?.split_once('/')?.1.strip_suffix(".pack")?;
                (pack_key(id) == object.key).then(|| id.to_string())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The pack's size in bytes; a pack that is not there is a `NotFound` error.
    pub fn size(&self, id: &str) -> io::Result<u64> {
        Ok(self.stat(id)?.0)
    }

    /// The pack's size in bytes and when it was written; `NotFound` if it is not there.
    pub fn stat(&self, id: &str) -> io::Result<(u64, std::time::SystemTime)> {
        self.0
            .stat(&pack_key(id))?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} not found", self.name(id))))
    }

    /// Opens the pack for reading.
    pub(crate) fn open(&self, id: &str) -> io::Result<Opened> {
        self.0.open(&pack_key(id)).map_err(|e| io::Error::new(e.kind(), format!("pack {id}: {e}")))
    }

    /// Publishes the complete, durable pack file `tmp` as pack `id`; the file goes.
    pub(crate) fn publish(&self, tmp: &Path, id: &str) -> io::Result<()> {
        if self.0.publish(tmp, &pack_key(id))? {
            return Ok(());
        }
        let message = format!("{} exists already: pack ids are never reused", self.name(id));
        Err(io::Error::new(io::ErrorKind::AlreadyExists, message))
    }

    /// Deletes the pack; one that is gone already is not an error.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        self.0.remove(&pack_key(id))
    }
}
