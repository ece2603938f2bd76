//! Where a library lives: a folder on this machine, or a prefix of a bucket on S3-compatible
//! object storage (`s3://BUCKET/PREFIX`), named wherever `-L`/`IMAGELAKE_LIBRARY` takes one.
//!
//! A folder is read and written with the file system's own calls (see `library.rs` for its
//! layout). A bucket is reached through [`Bucket`], a blocking client of object_store's S3
//! store (the one Lance itself commits through), configured by the usual `AWS_*` variables;
//! the catalog's Lance datasets reach the same bucket through `catalog/stores.rs`.

mod bucket;

pub use bucket::{Bucket, ObjectInfo, S3Settings};

use crate::{Error, Result};
use std::fmt;
use std::path::PathBuf;

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
