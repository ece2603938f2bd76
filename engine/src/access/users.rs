//! What the command line and the server ask of the access file: users and their passwords,
//! grants, logins that hand out tokens, and the principal a token stands for.
//!
//! Changes are synchronous and take the `access.lock` flock for a moment; the password hash
//! (Argon2id, tens of milliseconds) is computed before it is taken. `login` is as slow as one
//! hash whether the user exists or not; `principal` costs one stat() and one SHA-256 while
//! the file is unchanged.

use super::store::{self, Access, StoredToken, StoredUser};
use super::{Grant, Pattern, Principal, Right, Token, User, UserInfo, check_password, check_user_name};
use crate::{Error, Library, Result};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use sha2::Digest;
use std::sync::OnceLock;
use subtle::ConstantTimeEq;

impl Library {
    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<UserInfo>> {
        let access = store::read(self.home())?;
        let mut users: Vec<UserInfo> = access
            .users
            .iter()
            .map(|u| UserInfo { name: u.name.clone(), admin: u.admin, created_at: u.created_at })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    /// Every grant, in the order they were given.
    pub fn grants(&self) -> Result<Vec<Grant>> {
        Ok(store::read(self.home())?.grants.clone())
    }

    /// Adds a user (an error if the name is taken).
    pub fn add_user(&self, name: &str, password: &str, admin: bool) -> Result<()> {
        check_user_name(name)?;
        let password = hash_password(password)?;
        let now = now_s();
        store::modify(self.home(), now, |access| {
            if access.user(name).is_some() {
                return Err(Error::User(format!("user {name} already exists")));
            }
            access.users.push(StoredUser {
                name: name.to_string(),
                admin,
                password: password.clone(),
                created_at: now,
            });
            Ok(())
        })
    }

    /// Removes a user with their grants and tokens.
    pub fn remove_user(&self, name: &str) -> Result<()> {
        store::modify(self.home(), now_s(), |access| {
            known(access, name)?;
            access.users.retain(|u| u.name != name);
            access.grants.retain(|g| g.user != name);
            access.tokens.retain(|t| t.user != name);
            Ok(())
        })
    }

    /// Sets a user's password, and revokes every token of theirs.
    pub fn set_password(&self, name: &str, password: &str) -> Result<()> {
        check_user_name(name)?;
        let password = hash_password(password)?;
        store::modify(self.home(), now_s(), |access| {
            known(access, name)?;
            if let Some(user) = access.user_mut(name) {
                user.password.clone_from(&password);
            }
            access.tokens.retain(|t| t.user != name);
            Ok(())
        })
    }

    /// Gives `user` `right` on the images `pattern` matches (nothing changes if they have
    /// that very grant already).
    pub fn grant(&self, user: &str, right: Right, pattern: &Pattern) -> Result<()> {
        store::modify(self.home(), now_s(), |access| {
            known(access, user)?;
            let grant = Grant { user: user.to_string(), right, pattern: pattern.clone() };
            if !access.grants.contains(&grant) {
                access.grants.push(grant);
            }
            Ok(())
        })
    }

    /// Takes back the grant of `right` on `pattern` from `user`, exactly as given: false when
    /// they had no such grant. An unknown user is an error.
    pub fn revoke(&self, user: &str, right: Right, pattern: &Pattern) -> Result<bool> {
        store::modify(self.home(), now_s(), |access| {
            known(access, user)?;
            let before = access.grants.len();
            access.grants.retain(|g| !(g.user == user && g.right == right && &g.pattern == pattern));
            Ok(access.grants.len() < before)
        })
    }

    /// Revokes every token of `user`; returns how many had not yet expired.
    pub fn revoke_tokens(&self, user: &str) -> Result<usize> {
        let now = now_s();
        store::modify(self.home(), now, |access| {
            known(access, user)?;
            let live = access.tokens.iter().filter(|t| t.user == user && t.expires_at > now).count();
            access.tokens.retain(|t| t.user != user);
            Ok(live)
        })
    }

    /// Checks a password (Argon2id, slow: the server calls it in spawn_blocking). None for an
    /// unknown user and for a wrong password alike, after the same work (an unknown user's
    /// password is checked against a dummy hash). Otherwise a new token, valid for `ttl`,
    /// whose hash is written to the access file.
    pub fn login(&self, name: &str, password: &str, ttl: std::time::Duration) -> Result<Option<Token>> {
        self.login_at(name, password, ttl, now_s())
    }

    pub(super) fn login_at(
        &self,
        name: &str,
        password: &str,
        ttl: std::time::Duration,
        now: i64,
    ) -> Result<Option<Token>> {
        let dummy = dummy_hash()?;
        let access = store::read(self.home())?;
        let stored = access.user(name).map(|u| u.password.clone());
        let usable = check_password(password).is_ok();
        let hash = match (&stored, usable) {
            (Some(hash), true) => hash.as_str(),
            _ => dummy,
        };
        let candidate = if usable { password } else { "-" };
        let matches = argon2::Argon2::default().verify_password(candidate.as_bytes(), hash).is_ok();
        let Some(stored) = stored.filter(|_| usable && matches) else {
            return Ok(None);
        };
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>()?);
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let token = StoredToken {
            sha256: sha256(&secret),
            user: name.to_string(),
            issued_at: now,
            expires_at: now.saturating_add(ttl),
        };
        let expires_at = token.expires_at;
        let issued = store::modify(self.home(), now, |access| {
            // The password checked must still be the user's: not removed, not changed since.
            if access.user(name).is_none_or(|u| u.password != stored) {
                return Ok(false);
            }
            access.tokens.push(token.clone());
            Ok(true)
        })?;
        Ok(issued.then(|| Token { secret, user: name.to_string(), expires_at }))
    }

    /// The principal a bearer token stands for; None when it is unknown, expired or revoked.
    /// Called on every request: one stat() of the access file and one SHA-256 while the file
    /// is unchanged. The hash is compared with every token's in constant time.
    pub fn principal(&self, secret: &str) -> Result<Option<Principal>> {
        self.principal_at(secret, now_s())
    }

    pub(super) fn principal_at(&self, secret: &str, now: i64) -> Result<Option<Principal>> {
        // A secret is 43 characters; anything far longer is not one, and is not hashed.
        if secret.len() > 256 {
            return Ok(None);
        }
        let wanted = sha256(secret);
        let access = store::read(self.home())?;
        let mut found = None;
        for token in &access.tokens {
            if bool::from(token.sha256.ct_eq(&wanted)) {
                found = Some(token);
            }
        }
        Ok(found.filter(|t| t.expires_at > now).and_then(|t| principal_of(&access, &t.user)))
    }

    /// The principal `name` stands for, with their grants; None for an unknown user.
    pub fn principal_for(&self, name: &str) -> Result<Option<Principal>> {
        Ok(principal_of(&*store::read(self.home())?, name))
    }
}

fn principal_of(access: &Access, name: &str) -> Option<Principal> {
    let user = access.user(name)?;
    let grants = access.grants.iter().filter(|g| g.user == name).map(|g| (g.right, g.pattern.clone())).collect();
    Some(Principal::User(User { name: user.name.clone(), admin: user.admin, grants }))
}

fn known(access: &Access, name: &str) -> Result<()> {
    match access.user(name) {
        Some(_) => Ok(()),
        None => Err(Error::User(format!("no user {name:?} in the library"))),
    }
}

fn now_s() -> i64 {
    crate::now_ns() / 1_000_000_000
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Io { context: "drawing random bytes".into(), error: std::io::Error::other(e) })?;
    Ok(bytes)
}

fn sha256(secret: &str) -> [u8; 32] {
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// An Argon2id PHC string of `password` (default parameters: 19 MiB, 2 passes), with a random salt.
fn hash_password(password: &str) -> Result<String> {
    check_password(password)?;
    let salt = random::<16>()?;
    argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

/// A hash no password is known to match, with the parameters new hashes get: what an unknown
/// user's login is checked against, so that it costs what a known user's does. Made on the
/// first login of the process, whoever logs in.
fn dummy_hash() -> Result<&'static str> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let password = base64::engine::general_purpose::STANDARD.encode(random::<32>()?);
    let hash = hash_password(&password)?;
    Ok(DUMMY.get_or_init(|| hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A folder the access file can live in (a library's root, with its `tmp/`), and a
    /// `Library` over it. The access methods never touch the catalog.
    async fn library() -> (tempfile::TempDir, Library) {
        let dir = tempfile::tempdir().unwrap();
        let lib = Library::open(&dir.path().join("lib")).await.unwrap();
        (dir, lib)
    }

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    fn grants(lib: &Library, name: &str) -> Vec<(Right, Pattern)> {
        match lib.principal_for(name).unwrap() {
            Some(Principal::User(user)) => user.grants,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn users_grants_and_tokens_round_trip() {
        let (_dir, lib) = library().await;
        assert!(lib.users().unwrap().is_empty() && lib.grants().unwrap().is_empty());
        assert!(!lib.folder().unwrap().join("access.json").exists());

        lib.add_user("bob", "hunter2", false).unwrap();
        lib.add_user("ana", "correct horse", true).unwrap();
        let users = lib.users().unwrap();
        assert_eq!(
            users.iter().map(|u| (u.name.as_str(), u.admin)).collect::<Vec<_>>(),
            [("ana", true), ("bob", false)]
        );
        assert!(users[0].created_at > 1_700_000_000);
        assert!(matches!(lib.add_user("ana", "x", false), Err(Error::User(m)) if m.contains("ana already exists")));

        lib.grant("bob", Right::Read, &pattern("web*")).unwrap();
        lib.grant("bob", Right::Read, &pattern("web*")).unwrap();
        lib.grant("bob", Right::Write, &pattern("db")).unwrap();
        assert_eq!(grants(&lib, "bob"), [(Right::Read, pattern("web*")), (Right::Write, pattern("db"))]);
        assert_eq!(lib.grants().unwrap().len(), 2);
        assert!(matches!(lib.grant("eve", Right::Read, &pattern("*")), Err(Error::User(m)) if m.contains("eve")));

        let token = lib.login("bob", "hunter2", HOUR).unwrap().unwrap();
        assert_eq!(token.secret.len(), 43);
        assert_eq!(token.user, "bob");
        assert!(!format!("{token:?}").contains(&token.secret));
        let principal = lib.principal(&token.secret).unwrap().unwrap();
        assert!(principal.may(Right::Read, "web1") && principal.may(Right::Write, "db"));
        assert!(!principal.may(Right::Read, "mail") && !principal.is_admin());
        assert_eq!(principal.user_name(), Some("bob"));
        // The principal follows the grants as they change, token unchanged.
        assert!(lib.revoke("bob", Right::Read, &pattern("web*")).unwrap());
        assert!(!lib.revoke("bob", Right::Read, &pattern("web*")).unwrap());
        assert!(lib.revoke("eve", Right::Read, &pattern("web*")).is_err());
        assert!(!lib.principal(&token.secret).unwrap().unwrap().may(Right::Read, "web1"));

        // What is on disk: mode 0600, hashes only.
        let path = lib.folder().unwrap().join("access.json");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        for secret in ["hunter2", "correct horse", token.secret.as_str()] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("$argon2id$") && text.contains(&store::hex(&sha256(&token.secret))));
        // Nothing is left in tmp/.
        assert_eq!(std::fs::read_dir(lib.folder().unwrap().join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn wrong_passwords_unknown_users_and_strangers_get_nothing() {
        let (_dir, lib) = library().await;
        lib.add_user("ana", "secret", false).unwrap();
        assert!(lib.login("ana", "Secret", HOUR).unwrap().is_none());
        assert!(lib.login("nobody", "secret", HOUR).unwrap().is_none());
        assert!(lib.login("../etc", "secret", HOUR).unwrap().is_none());
        assert!(lib.login("ana", "", HOUR).unwrap().is_none());
        assert!(lib.login("ana", &"s".repeat(2000), HOUR).unwrap().is_none());
        assert!(lib.principal("").unwrap().is_none());
        assert!(lib.principal("not-a-token").unwrap().is_none());
        assert!(lib.principal(&"x".repeat(10_000)).unwrap().is_none());
        assert!(lib.principal_for("nobody").unwrap().is_none());
        // Failed logins write nothing.
        assert!(store::read(lib.home()).unwrap().tokens.is_empty());
    }

    #[tokio::test]
    async fn tokens_expire_and_expired_ones_are_pruned() {
        let (_dir, lib) = library().await;
        lib.add_user("ana", "secret", false).unwrap();
        let now = now_s();
        let short = lib.login_at("ana", "secret", Duration::from_secs(10), now).unwrap().unwrap();
        assert_eq!(short.expires_at, now + 10);
        assert!(lib.principal_at(&short.secret, now + 9).unwrap().is_some());
        assert!(lib.principal_at(&short.secret, now + 10).unwrap().is_none());
        // A later write drops it from the file.
        let long = lib.login_at("ana", "secret", HOUR, now + 20).unwrap().unwrap();
        let tokens = store::read(lib.home()).unwrap().tokens.clone();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].sha256, sha256(&long.secret));
        assert!(lib.principal_at(&long.secret, now + 20).unwrap().is_some());
    }

    #[tokio::test]
    async fn revoking_tokens_and_new_passwords_end_sessions() {
        let (_dir, lib) = library().await;
        lib.add_user("ana", "one", false).unwrap();
        lib.add_user("bob", "two", false).unwrap();
        let a1 = lib.login("ana", "one", HOUR).unwrap().unwrap();
        let a2 = lib.login("ana", "one", HOUR).unwrap().unwrap();
        let b = lib.login("bob", "two", HOUR).unwrap().unwrap();
        assert_ne!(a1.secret, a2.secret);
        assert_eq!(lib.revoke_tokens("ana").unwrap(), 2);
        assert_eq!(lib.revoke_tokens("ana").unwrap(), 0);
        assert!(lib.revoke_tokens("eve").is_err());
        assert!(lib.principal(&a1.secret).unwrap().is_none() && lib.principal(&a2.secret).unwrap().is_none());
        assert!(lib.principal(&b.secret).unwrap().is_some());

        let b2 = lib.login("bob", "two", HOUR).unwrap().unwrap();
        lib.set_password("bob", "three").unwrap();
        assert!(lib.principal(&b.secret).unwrap().is_none() && lib.principal(&b2.secret).unwrap().is_none());
        assert!(lib.login("bob", "two", HOUR).unwrap().is_none());
        assert!(lib.login("bob", "three", HOUR).unwrap().is_some());
        assert!(lib.set_password("eve", "x").is_err());
        assert!(lib.set_password("bob", "").is_err());
    }

    #[tokio::test]
    async fn removing_a_user_drops_their_grants_and_tokens() {
        let (_dir, lib) = library().await;
        lib.add_user("ana", "one", true).unwrap();
        lib.add_user("bob", "two", false).unwrap();
        lib.grant("ana", Right::Admin, &pattern("*")).unwrap();
        lib.grant("bob", Right::Read, &pattern("*")).unwrap();
        let token = lib.login("ana", "one", HOUR).unwrap().unwrap();
        lib.remove_user("ana").unwrap();
        assert!(lib.principal(&token.secret).unwrap().is_none());
        assert_eq!(lib.users().unwrap().iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["bob"]);
        assert_eq!(lib.grants().unwrap().iter().map(|g| g.user.as_str()).collect::<Vec<_>>(), ["bob"]);
        assert!(store::read(lib.home()).unwrap().tokens.is_empty());
        assert!(matches!(lib.remove_user("ana"), Err(Error::User(m)) if m.contains("ana")));
        // Added again, the name starts with nothing.
        lib.add_user("ana", "new", false).unwrap();
        assert!(grants(&lib, "ana").is_empty());
    }

    #[tokio::test]
    async fn names_and_passwords_are_checked() {
        let (_dir, lib) = library().await;
        for bad in ["", "a b", "ana/..", "ünï", &"a".repeat(65)] {
            assert!(matches!(lib.add_user(bad, "pw", false), Err(Error::User(_))), "{bad:?}");
        }
        lib.add_user(&"a".repeat(64), "pw", false).unwrap();
        lib.add_user("a.b_c-1", "pw", false).unwrap();
        assert!(matches!(lib.add_user("ana", "", false), Err(Error::User(m)) if m.contains("empty")));
        assert!(matches!(lib.add_user("ana", &"p".repeat(1025), false), Err(Error::User(m)) if m.contains("1024")));
        lib.add_user("ana", &"p".repeat(1024), false).unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_naming_it() {
        let (_dir, lib) = library().await;
        lib.add_user("ana", "one", false).unwrap();
        let path = lib.folder().unwrap().join("access.json");
        for text in [
            "{ not json",
            "{}",
            "[]",
            "",
            r#"{"format": "imagelake-access", "format_version": 9, "users": [], "grants": [], "tokens": []}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            for error in [
                lib.users().unwrap_err(),
                lib.add_user("bob", "two", false).unwrap_err(),
                lib.principal("x").unwrap_err(),
            ] {
                assert!(matches!(error, Error::Library { .. }), "{error:?}");
                assert!(error.to_string().contains("access.json"), "{error}");
            }
        }
        // Gone, it is no users.
        std::fs::remove_file(&path).unwrap();
        assert!(lib.users().unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_writers_lose_nothing() {
        let (_dir, lib) = library().await;
        std::thread::scope(|s| {
            for t in 0..2 {
                let lib = &lib;
                s.spawn(move || {
                    for i in 0..6 {
                        lib.add_user(&format!("u{t}-{i}"), "pw", false).unwrap();
                        lib.grant(&format!("u{t}-{i}"), Right::Read, &pattern("*")).unwrap();
                    }
                });
            }
        });
        assert_eq!(lib.users().unwrap().len(), 12);
        assert_eq!(lib.grants().unwrap().len(), 12);
    }

    #[test]
    fn the_cache_sees_every_rewrite() {
        // Rewrites within one clock tick, each of the same size: only the file's identity
        // tells them apart, and the cache must never answer with an older one.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let root = &crate::storage::Storage::Folder(dir.path().to_path_buf());
        for i in 0..50 {
            let name = format!("user{:02}", i);
            store::modify(root, 0, |access| {
                access.users = vec![StoredUser {
                    name: name.clone(),
                    admin: false,
                    password:
                        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
                            .into(),
                    created_at: 0,
                }];
                Ok(())
            })
            .unwrap();
            assert_eq!(store::read(root).unwrap().users[0].name, name);
        }
    }
}
