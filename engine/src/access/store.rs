//! `access.json`, the file at a library's root that holds its users, grants and tokens.
//!
//! Read whole into an [`Access`] and checked (every name, hash, right and pattern), or refused
//! with an error naming the file. Written whole: a new file in `tmp/` (mode 0600, flock()ed
//! while written), fsync, renamed over `access.json`, then the root folder fsynced; writers
//! take the `access.lock` flock (`locks::access`) around read, change and write, so none
//! loses another's change. Readers take no lock: the rename replaces the file at once.
//!
//! Every request of the server asks who its token stands for, so the parsed file is cached
//! per path and reused while a stat() of the path still finds the same file (device, inode,
//! size, mtime, ctime). A write always renames a new file in, and the cache keeps the file it
//! parsed open, so that file's inode number cannot be handed to the next one: a new file is
//! always a new identity, however fast the writes come.
//!
//! On a bucket the object `access.json` is read whole at every ask, and changed by a put with
//! `If-Match` of the ETag read (`If-None-Match: *` when there was none), read, change and put
//! again when another writer got there first: no lock, and no change lost.

use super::{Grant, Pattern, Right, check_user_name};
use crate::storage::{Bucket, Storage};
use crate::{Error, IoContext, Result, locks};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

pub(super) const FILE: &str = "access.json";
const FORMAT: &str = "imagelake-access";
/// The version of `access.json` this build reads and writes.
const FORMAT_VERSION: u64 = 1;

/// The access file, parsed and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Access {
    pub users: Vec<StoredUser>,
    pub grants: Vec<Grant>,
    pub tokens: Vec<StoredToken>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredUser {
    pub name: String,
    pub admin: bool,
    /// An Argon2id PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    pub password: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredToken {
    /// SHA-256 of the secret (the secret itself is never kept).
    pub sha256: [u8; 32],
    pub user: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

impl Access {
    pub fn user(&self, name: &str) -> Option<&StoredUser> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn user_mut(&mut self, name: &str) -> Option<&mut StoredUser> {
        self.users.iter_mut().find(|u| u.name == name)
    }

    /// Drops the tokens expired by `now` and any whose user is gone.
    fn prune(&mut self, now: i64) {
        let users: HashSet<&str> = self.users.iter().map(|u| u.name.as_str()).collect();
        self.tokens.retain(|t| t.expires_at > now && users.contains(t.user.as_str()));
    }
}

// The file's own form: only these derive serde. Unknown fields are refused, not skipped: an
// older imagelake that ignored a field a newer one relies on (a user disabled, a grant
// narrowed) would hand out rights it should not. A newer format bumps `format_version`.

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    format: String,
    format_version: u64,
    users: Vec<UserOnDisk>,
    grants: Vec<GrantOnDisk>,
    tokens: Vec<TokenOnDisk>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserOnDisk {
    name: String,
    admin: bool,
    password: String,
    created_at: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantOnDisk {
    user: String,
    right: String,
    pattern: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenOnDisk {
    sha256: String,
    user: String,
    issued_at: i64,
    expires_at: i64,
}

/// Parses and checks the file's bytes; the error says what is wrong, without the file's name.
fn parse(bytes: &[u8]) -> std::result::Result<Access, String> {
    let disk: OnDisk = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if disk.format != FORMAT {
        return Err(format!("its format is {:?}, not {FORMAT:?}", disk.format));
    }
    if disk.format_version != FORMAT_VERSION {
        return Err(format!("format version {}; this imagelake reads version {FORMAT_VERSION}", disk.format_version));
    }
    let mut access = Access::default();
    let mut names = HashSet::new();
    for u in disk.users {
        check_user_name(&u.name).map_err(|e| e.to_string())?;
        if !names.insert(u.name.clone()) {
            return Err(format!("user {:?} is listed twice", u.name));
        }
        let phc = argon2::password_hash::phc::PasswordHash::new(&u.password)
            .map_err(|e| format!("user {:?}: the password hash is not a PHC string: {e}", u.name))?;
        if phc.algorithm.as_str() != "argon2id" {
            return Err(format!("user {:?}: the password hash is {}, not argon2id", u.name, phc.algorithm));
        }
        access.users.push(StoredUser { name: u.name, admin: u.admin, password: u.password, created_at: u.created_at });
    }
    let known = |user: &str| if names.contains(user) { Ok(()) } else { Err(format!("no user {user:?}")) };
    for g in disk.grants {
        known(&g.user).map_err(|e| format!("a grant names {e}"))?;
        let right = Right::parse(&g.right).map_err(|e| format!("a grant of {:?}: {e}", g.user))?;
        let pattern = Pattern::parse(&g.pattern).map_err(|e| format!("a grant of {:?}: {e}", g.user))?;
        access.grants.push(Grant { user: g.user, right, pattern });
    }
    for t in disk.tokens {
        known(&t.user).map_err(|e| format!("a token names {e}"))?;
        let sha256 = unhex(&t.sha256).ok_or_else(|| format!("a token of {:?}: sha256 is not 64 hex digits", t.user))?;
        access.tokens.push(StoredToken { sha256, user: t.user, issued_at: t.issued_at, expires_at: t.expires_at });
    }
    Ok(access)
}

fn render(access: &Access) -> Result<String> {
    let disk = OnDisk {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        users: access
            .users
            .iter()
            .map(|u| UserOnDisk {
                name: u.name.clone(),
                admin: u.admin,
                password: u.password.clone(),
                created_at: u.created_at,
            })
            .collect(),
        grants: access
            .grants
            .iter()
            .map(|g| GrantOnDisk { user: g.user.clone(), right: g.right.to_string(), pattern: g.pattern.to_string() })
            .collect(),
        tokens: access
            .tokens
            .iter()
            .map(|t| TokenOnDisk {
                sha256: hex(&t.sha256),
                user: t.user.clone(),
                issued_at: t.issued_at,
                expires_at: t.expires_at,
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&disk).map_err(|e| Error::Internal(format!("writing {FILE}: {e}")))?;
    Ok(text + "\n")
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// One state of the file, as stat() sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

struct Cached {
    stamp: Stamp,
    /// The file parsed, held open so that its inode number is not reused while cached.
    _held: File,
    access: Arc<Access>,
}

/// The parsed access file of every library this process has asked, by the file's path.
static CACHE: LazyLock<Mutex<HashMap<PathBuf, Cached>>> = LazyLock::new(Default::default);

fn corrupt(location: &str, why: impl std::fmt::Display) -> Error {
    Error::Library { path: location.to_string(), message: format!("{FILE} is unusable: {why}") }
}

/// Reads the file as it is now; None when there is none.
fn load(root: &Path) -> Result<Option<(Access, Stamp, File)>> {
    let path = root.join(FILE);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io { context: format!("opening {}", path.display()), error: e }),
    };
    // The stamp of the file read, not of whatever the path names by now.
    let meta = file.metadata().io_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).io_context(|| format!("reading {}", path.display()))?;
    let access = parse(&bytes).map_err(|why| corrupt(&root.display().to_string(), why))?;
    Ok(Some((access, Stamp::of(&meta), file)))
}

/// The access file of the library at `home` (empty when there is none): in a folder from the
/// cache while the file is unchanged, which costs one stat().
pub(super) fn read(home: &Storage) -> Result<Arc<Access>> {
    let root = match home {
        Storage::Folder(root) => root,
        Storage::Bucket(bucket) => {
            return Ok(Arc::new(load_object(bucket)?.map(|(access, _)| access).unwrap_or_default()));
        }
    };
    let path = root.join(FILE);
    let stamp = match fs::metadata(&path) {
        Ok(meta) => Stamp::of(&meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Arc::default()),
        Err(e) => return Err(Error::Io { context: format!("reading {}", path.display()), error: e }),
    };
    let mut cache = CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(cached) = cache.get(&path)
        && cached.stamp == stamp
    {
        return Ok(cached.access.clone());
    }
    let Some((access, stamp, file)) = load(root)? else {
        cache.remove(&path);
        return Ok(Arc::default());
    };
    let access = Arc::new(access);
    cache.insert(path, Cached { stamp, _held: file, access: access.clone() });
    Ok(access)
}

/// Changes the access file under the `access.lock` flock: reads it afresh, applies `change`,
/// prunes the tokens expired by `now`, and writes the result if it differs. Nothing is written
/// when `change` fails.
pub(super) fn modify<T>(home: &Storage, now: i64, mut change: impl FnMut(&mut Access) -> Result<T>) -> Result<T> {
    let root = match home {
        Storage::Folder(root) => root,
        Storage::Bucket(bucket) => return modify_object(bucket, now, change),
    };
    let _lock = locks::access(root)?;
    let before = load(root)?.map(|(access, ..)| access).unwrap_or_default();
    let mut access = before.clone();
    let result = change(&mut access)?;
    access.prune(now);
    if access != before {
        write(root, &render(&access)?)?;
    }
    Ok(result)
}

/// The access object of a bucket and its ETag; None when there is none.
fn load_object(bucket: &Bucket) -> Result<Option<(Access, String)>> {
    let Some(found) = bucket.get_tagged(FILE).io_context(|| format!("reading {}", bucket.url(FILE)))? else {
        return Ok(None);
    };
    let access = parse(&found.bytes).map_err(|why| corrupt(&bucket.url(""), why))?;
    Ok(Some((access, found.etag)))
}

/// [`modify`] on a bucket: the change is put only over the object it was made to (`If-Match`),
/// and made again to the newer one when another writer's put came first (so `change` may
/// run more than once).
fn modify_object<T>(bucket: &Bucket, now: i64, mut change: impl FnMut(&mut Access) -> Result<T>) -> Result<T> {
    // Each lost race is another writer's change landing: a few dozen means something is wrong.
    for _ in 0..64 {
        let (before, etag) = load_object(bucket)?.map_or((Access::default(), None), |(a, e)| (a, Some(e)));
        let mut access = before.clone();
        let result = change(&mut access)?;
        access.prune(now);
        if access == before {
            return Ok(result);
        }
        let bytes = render(&access)?.into_bytes();
        let put = match &etag {
            Some(etag) => bucket.put_if_match(FILE, bytes, etag).map(|e| e.is_some()),
            None => bucket.put_new(FILE, bytes),
        };
        if put.io_context(|| format!("writing {}", bucket.url(FILE)))? {
            return Ok(result);
        }
    }
    Err(Error::Library { path: bucket.url(FILE), message: "64 other writers changed the access file meanwhile".into() })
}

/// Replaces the file with `text`, all or nothing.
fn write(root: &Path, text: &str) -> Result<()> {
    let tmp = root.join("tmp").join(format!("access-{}-{}.json", std::process::id(), crate::now_ns()));
    let written = (|| {
        let mut file = File::options().write(true).create_new(true).open(&tmp)?;
        // Held while written, as everything in tmp/ is; 0600 before a byte goes in.
        file.try_lock().map_err(std::io::Error::other)?;
        file.set_permissions(Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })();
    let published = written.and_then(|_| fs::rename(&tmp, root.join(FILE)));
    if let Err(e) = published {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Io { context: format!("writing {}", root.join(FILE).display()), error: e });
    }
    File::open(root).and_then(|dir| dir.sync_all()).io_context(|| format!("syncing {}", root.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_refuses_what_it_does_not_know() {
        let access = Access {
            users: vec![StoredUser {
                name: "ana".into(),
                admin: true,
                password: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
                    .into(),
                created_at: 1,
            }],
            grants: vec![Grant { user: "ana".into(), right: Right::Write, pattern: Pattern::parse("web*").unwrap() }],
            tokens: vec![StoredToken { sha256: [7; 32], user: "ana".into(), issued_at: 2, expires_at: 3 }],
        };
        let text = render(&access).unwrap();
        assert_eq!(parse(text.as_bytes()).unwrap(), access);

        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value["users"][0]["disabled"] = true.into();
        assert!(parse(value.to_string().as_bytes()).unwrap_err().contains("disabled"));

        let cases = [
            (r#""format_version": 1"#, r#""format_version": 2"#, "format version 2"),
            (
                r#""user": "ana",
      "right""#,
                r#""user": "bob",
      "right""#,
                "no user \"bob\"",
            ),
            (r#""right": "write""#, r#""right": "root""#, "no right"),
            (r#""pattern": "web*""#, r#""pattern": "a b""#, "not an image pattern"),
            ("0707", "07zz", "64 hex digits"),
            ("$argon2id$", "$bcrypt$", "not argon2id"),
        ];
        for (from, to, expected) in cases {
            assert!(text.contains(from), "{from} in {text}");
            let error = parse(text.replacen(from, to, 1).as_bytes()).unwrap_err();
            assert!(error.contains(expected), "{to}: {error}");
        }
    }
}
