//! Who may do what: users, their grants on image names, and the principal a request runs as.
//!
//! The library's owner (whoever runs the local command line, who already owns its files) has
//! every right. A user of the server has exactly the rights their grants give, on the image
//! names their patterns match; a user made `--admin` also administers the library (users,
//! grants, gc, repack), yet still sees only the images their grants name.
//!
//! Users, grants and tokens are kept in one file at the library's root, `access.json`
//! (`store.rs`; its format is in `store/FORMAT.md`); `users.rs` is what the command line and
//! the server ask of it: `Library::add_user`, `grant`, `login`, `principal` and the rest.
//! A password is kept only as an Argon2id PHC string, a token only as the SHA-256 of its
//! secret, which is shown once, when `login` hands it out.

mod store;
mod users;

use crate::{Error, Result};

/// A right on images, each including the ones before it: `read` sees a version, `write` makes
/// new versions of the name, `admin` deletes and undeletes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Right {
    Read,
    Write,
    Admin,
}

impl Right {
    pub fn parse(word: &str) -> Result<Right> {
        match word.to_ascii_lowercase().as_str() {
            "read" => Ok(Right::Read),
            "write" => Ok(Right::Write),
            "admin" => Ok(Right::Admin),
            _ => Err(Error::User(format!("no right {word:?}: a right is read, write or admin"))),
        }
    }
}

impl std::fmt::Display for Right {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        })
    }
}

/// The image names a grant covers: one name, a glob (`*` any run of characters, `?` one
/// character), or `*` for every image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern(String);

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern> {
        let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*' | '?');
        if text.is_empty() || text.len() > 128 || !text.chars().all(fine) {
            return Err(Error::User(format!(
                "{text:?} is not an image pattern: use a name, a glob such as 'web*', or '*' \
                 (letters, digits, '-', '_', '.', '*' and '?')"
            )));
        }
        Ok(Pattern(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the glob matches the whole of `name`.
    pub fn matches(&self, name: &str) -> bool {
        glob_matches(&self.0, name)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when the glob `pattern` (`*` any run of characters, `?` one) matches the whole of
/// `name`, as a grant's pattern does (and a VEX statement's, and SQL's `image_matches`).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    glob(pattern.as_bytes(), name.as_bytes())
}

/// Glob matching with one backtrack point for the last `*` seen: linear in practice, and
/// never exponential (a pattern of many stars against a long name stays quadratic at worst).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// One grant: `user` has `right` on the images `pattern` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub user: String,
    pub right: Right,
    pub pattern: Pattern,
}

/// A user of the server, as a request runs: their name, whether they administer the library,
/// and their grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub admin: bool,
    pub grants: Vec<(Right, Pattern)>,
}

/// Who a statement or command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The local command line: the owner of the library's files, with every right.
    Owner,
    User(User),
}

impl Principal {
    /// True when the principal has `right` (or a greater one) on the image called `name`.
    pub fn may(&self, right: Right, name: &str) -> bool {
        match self {
            Principal::Owner => true,
            Principal::User(user) => user.grants.iter().any(|(r, p)| *r >= right && p.matches(name)),
        }
    }

    /// True when the principal administers the library: users, grants, gc, repack, and
    /// statements that reach outside the catalog (`COPY`, `SET`, DDL).
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Owner => true,
            Principal::User(user) => user.admin,
        }
    }

    /// True when the principal reads every image there is or will be (a read grant on `*`),
    /// so that library-wide tables such as `chunks` tell them nothing they may not see.
    pub fn reads_everything(&self) -> bool {
        match self {
            Principal::Owner => true,
            Principal::User(user) => user.grants.iter().any(|(_, p)| p.as_str().bytes().all(|c| c == b'*')),
        }
    }

    /// The name provenance records as the actor of what this principal does; None for the
    /// owner, whose actor is the local user.
    pub fn user_name(&self) -> Option<&str> {
        match self {
            Principal::Owner => None,
            Principal::User(user) => Some(&user.name),
        }
    }
}

/// A user as `Library::users` lists them (never their password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub admin: bool,
    /// When the user was added, in seconds since the Unix epoch.
    pub created_at: i64,
}

/// A bearer token, as `Library::login` hands it out. The library keeps only the SHA-256 of
/// `secret`, so this is the one time it is seen.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// 256 random bits, URL-safe base64 without padding (43 characters).
    pub secret: String,
    pub user: String,
    /// Seconds since the Unix epoch; the token stands for nobody from then on.
    pub expires_at: i64,
}

/// Leaves the secret out, so that a token logged by mistake gives nothing away.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("secret", &"<hidden>")
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The longest password taken, in bytes (Argon2 reads all of it; a bound keeps a request cheap).
pub const PASSWORD_MAX: usize = 1024;

/// User names: 1 to 64 of letters, digits, '_', '.' and '-'.
pub fn check_user_name(name: &str) -> Result<()> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(fine) {
        return Err(Error::User(format!(
            "{name:?} is not a valid user name: 1 to 64 letters, digits, '_', '.' or '-'"
        )));
    }
    Ok(())
}

/// Passwords: not empty, at most [`PASSWORD_MAX`] bytes.
pub fn check_password(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(Error::User("the password is empty".into()));
    }
    if password.len() > PASSWORD_MAX {
        return Err(Error::User(format!("the password is longer than {PASSWORD_MAX} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(grants: &[(Right, &str)]) -> Principal {
        Principal::User(User {
            name: "ana".into(),
            admin: false,
            grants: grants.iter().map(|(r, p)| (*r, Pattern::parse(p).unwrap())).collect(),
        })
    }

    #[test]
    fn globs_match_whole_names() {
        let cases = [
            ("web*", "web", true),
            ("web*", "webapp", true),
            ("web*", "myweb", false),
            ("*", "anything", true),
            ("w?b", "web", true),
            ("w?b", "webb", false),
            ("*db*", "mariadb-11", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("web", "web", true),
            ("web", "web2", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(Pattern::parse(pattern).unwrap().matches(name), expected, "{pattern} on {name}");
        }
        // Many stars against a long name that does not match still ends at once.
        let stars = Pattern::parse(&"*a".repeat(60)).unwrap();
        assert!(!stars.matches(&"a".repeat(59)));
    }

    #[test]
    fn patterns_refuse_what_no_image_name_holds() {
        for bad in ["", "web/..", "a b", "x;y", &"a".repeat(129)] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rights_include_the_lesser_ones() {
        let p = user(&[(Right::Write, "web*"), (Right::Read, "db")]);
        assert!(p.may(Right::Read, "web2") && p.may(Right::Write, "web2") && !p.may(Right::Admin, "web2"));
        assert!(p.may(Right::Read, "db") && !p.may(Right::Write, "db"));
        assert!(!p.may(Right::Read, "mail"));
        assert!(!p.is_admin() && !p.reads_everything());
        assert!(user(&[(Right::Read, "*")]).reads_everything());
        assert!(Principal::Owner.may(Right::Admin, "x") && Principal::Owner.is_admin());
    }
}
