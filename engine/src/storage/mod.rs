//! Where a library lives: a folder on this machine, or a prefix of a bucket on S3-compatible
//! object storage (`s3://BUCKET/PREFIX`), named wherever `-L`/`IMAGELAKE_LIBRARY` takes one.
//!
//! A folder is read and written with the file system's own calls (see `library.rs` for its
//! layout). A bucket is reached through [`Bucket`], a blocking client of object_store's S3
//! store (the one Lance itself commits through), configured by the usual `AWS_*` variables;
//! the catalog's Lance datasets reach the same bucket through `catalog/stores.rs`.

mod bucket;
pub mod claims;
mod folder;
mod lease;

pub use bucket::{Bucket, ObjectInfo, Requests, S3Settings, Tagged, requests};
pub use lease::{Kept, Lease, LeaseBody, LeaseState};

use crate::{Error, Result};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// 32 random hex digits: a name no other writer picks (a lease holder, a scratch object).
pub(crate) fn random_name() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no randomness for a name: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A library's location, as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Folder(PathBuf),
    /// `s3://bucket/prefix`: every object of the library is under `prefix/` (which may be
    /// empty: the whole bucket).
    Bucket {
        bucket: String,
        prefix: String,
    },
}

impl Location {
    /// Parses a folder path or an `s3://` URL. Any other `scheme://` is refused rather than
    /// taken for a folder of that odd name.
    pub fn parse(text: &str) -> Result<Location> {
        let Some((scheme, rest)) = text.split_once("://") else { return Ok(Location::Folder(PathBuf::from(text))) };
        let refuse = |why: &str| Err(Error::User(format!("library {text:?}: {why}")));
        if scheme != "s3" {
            return refuse("a library is a folder or an s3://BUCKET/PREFIX URL; no other scheme is known");
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's rules for bucket names (3 to 63 characters, lower-case letters, digits, '.', '-').
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !bucket_ok {
            return refuse("the bucket name must be 3 to 63 lower-case letters, digits, '.' or '-'");
        }
        let prefix = prefix.trim_end_matches('/');
        // Keys are made by joining parts with '/': empty, '.' or '..' parts would name
        // objects no listing finds under the prefix.
        if prefix.split('/').any(|part| part.is_empty() || part == "." || part == "..") && !prefix.is_empty() {
            return refuse("the prefix must not have empty, '.' or '..' parts");
        }
        if prefix.chars().any(|c| c.is_control() || c == '\\') {
            return refuse("the prefix must not hold control characters or '\\'");
        }
        Ok(Location::Bucket { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Folder(path) => write!(f, "{}", path.display()),
            Location::Bucket { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::Bucket { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// A library's storage, with keys relative to the library, parts separated by '/'.
#[derive(Clone)]
pub enum Storage {
    Folder(PathBuf),
    Bucket(Bucket),
}

/// One file or object, opened for reads at any offset.
pub enum Opened {
    File(File),
    Object { bucket: Bucket, key: String, len: u64 },
}

impl Opened {
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Opened::File(file) => file.read_exact_at(buf, offset),
            Opened::Object { bucket, key, .. } => {
                let bytes = bucket.get_range(key, offset..offset + buf.len() as u64)?;
                buf.copy_from_slice(&bytes);
                Ok(())
            }
        }
    }

    pub fn len(&self) -> io::Result<u64> {
        match self {
            Opened::File(file) => Ok(file.metadata()?.len()),
            Opened::Object { len, .. } => Ok(*len),
        }
    }
}

impl Storage {
    /// The storage of `part`, a folder or prefix inside this one.
    pub fn sub(&self, part: &str) -> Storage {
        match self {
            Storage::Folder(root) => Storage::Folder(root.join(part)),
            Storage::Bucket(bucket) => Storage::Bucket(bucket.sub(part)),
        }
    }

    /// The folder, if the storage is one.
    pub fn folder(&self) -> Option<&Path> {
        match self {
            Storage::Folder(root) => Some(root),
            Storage::Bucket(_) => None,
        }
    }

    /// The file or object as messages name it, and as Lance opens it: its path or its URL.
    pub fn name(&self, key: &str) -> String {
        match self {
            Storage::Folder(root) => root.join(key).display().to_string(),
            Storage::Bucket(bucket) => bucket.url(key),
        }
    }

    /// The whole of `key`, or `None` if there is none.
    pub fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match self {
            Storage::Folder(root) => folder::absent_is_none(std::fs::read(root.join(key))),
            Storage::Bucket(bucket) => bucket.get(key),
        }
    }

    /// The size of `key`, or `None` if there is none.
    pub fn size(&self, key: &str) -> io::Result<Option<u64>> {
        Ok(self.stat(key)?.map(|(size, _)| size))
    }

    /// The size of `key` and when it was last written, or `None` if there is none.
    pub fn stat(&self, key: &str) -> io::Result<Option<(u64, std::time::SystemTime)>> {
        match self {
            Storage::Folder(root) => folder::absent_is_none(std::fs::metadata(root.join(key)))?
                .map(|m| Ok((m.len(), m.modified()?)))
                .transpose(),
            Storage::Bucket(bucket) => bucket.stat(key),
        }
    }

    /// Opens `key` for reads (on a bucket: one request, for its size); `NotFound` if absent.
    pub fn open(&self, key: &str) -> io::Result<Opened> {
        match self {
            Storage::Folder(root) => File::open(root.join(key)).map(Opened::File),
            Storage::Bucket(bucket) => match bucket.size(key)? {
                Some(len) => Ok(Opened::Object { bucket: bucket.clone(), key: key.to_string(), len }),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "no such object")),
            },
        }
    }

    /// Every file or object under `under` (all of them for ""), by key, in key order.
    pub fn list(&self, under: &str) -> io::Result<Vec<ObjectInfo>> {
        match self {
            Storage::Folder(root) => folder::walk(root, under),
            Storage::Bucket(bucket) => bucket.list(under),
        }
    }

    /// Makes the complete, durable file `tmp` the content of `key`, at once and only if `key`
    /// does not exist: `false` if it does (`tmp` is then left alone). A folder links the file
    /// into place; a bucket takes it in one PUT with `If-None-Match: *`, so that no crash
    /// leaves a multipart upload behind and no listing shows part of it.
    pub fn publish(&self, tmp: &Path, key: &str) -> io::Result<bool> {
        let published = match self {
            Storage::Folder(root) => folder::link_new(tmp, &root.join(key))?,
            Storage::Bucket(bucket) => bucket.put_new(key, std::fs::read(tmp)?)?,
        };
        if published {
            std::fs::remove_file(tmp)?;
        }
        Ok(published)
    }

    /// Makes `bytes` the content of `key`, replacing what it held, at once (a folder writes
    /// a sibling file and renames it over `key`).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        match self {
            Storage::Folder(root) => folder::replace(&root.join(key), &bytes),
            Storage::Bucket(bucket) => bucket.put(key, bytes),
        }
    }

    /// Deletes `key`; one that is gone already is not an error (another deleter won).
    pub fn remove(&self, key: &str) -> io::Result<()> {
        match self {
            Storage::Folder(root) => folder::absent_is_none(std::fs::remove_file(root.join(key))).map(|_| ()),
            Storage::Bucket(bucket) => bucket.remove(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_buckets() {
        assert_eq!(Location::parse("/srv/lib").unwrap(), Location::Folder("/srv/lib".into()));
        assert_eq!(Location::parse("lib").unwrap(), Location::Folder("lib".into()));
        let at = |bucket: &str, prefix: &str| Location::Bucket { bucket: bucket.into(), prefix: prefix.into() };
        assert_eq!(Location::parse("s3://images/factory/lib").unwrap(), at("images", "factory/lib"));
        assert_eq!(Location::parse("s3://images/lib/").unwrap(), at("images", "lib"));
        assert_eq!(Location::parse("s3://images").unwrap(), at("images", ""));
        assert_eq!(Location::parse("s3://images/factory/lib").unwrap().to_string(), "s3://images/factory/lib");
        for bad in ["gs://images/lib", "s3://Images/lib", "s3://ab/lib", "s3://images//lib", "s3://images/a/../b"] {
            let error = Location::parse(bad).unwrap_err().to_string();
            assert!(error.contains(bad), "{bad}: {error}");
        }
    }
}
