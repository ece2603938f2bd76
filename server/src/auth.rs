//! Authentication: the Basic -> Bearer handshake, and the bearer check every other call makes.
//!
//! A client sends `authorization: Basic base64(user:password)` on Handshake (padded or not:
//! ADBC's Go client has sent both) and gets the token back in the `authorization: Bearer`
//! response header, where ADBC looks for it, and as the HandshakeResponse payload, where
//! arrow-rs's client returns it. Every failure is the same UNAUTHENTICATED, whatever went
//! wrong (no user, wrong password, unknown, expired or revoked token), so that an answer tells
//! nothing about which names exist.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use imagelake_engine::Library;
use imagelake_engine::access::Principal;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Standard base64 that accepts input with or without its padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The one answer to a failed login or a bad token.
pub fn unauthenticated() -> Status {
    Status::unauthenticated("authentication failed: log in again (handshake with a user name and password)")
}

pub struct Auth {
    library: Arc<Library>,
    ttl: Duration,
}

/// Who a request runs as: their principal and the name tickets are tied to.
pub struct Caller {
    pub principal: Principal,
    pub name: String,
}

impl Auth {
    pub fn new(library: Arc<Library>, ttl: Duration) -> Auth {
        Auth { library, ttl }
    }

    /// Checks the Basic credentials of a Handshake; returns the token's secret.
    pub async fn login(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let (name, password) = basic_credentials(metadata)?;
        let (library, ttl) = (self.library.clone(), self.ttl);
        // Password hashing is deliberately slow: off the async workers.
        let token = tokio::task::spawn_blocking(move || library.login(&name, &password, ttl))
            .await
            .map_err(|_| Status::internal("the login task failed"))?
            .map_err(|e| crate::results::engine_status(&e))?;
        token.map(|t| t.secret).ok_or_else(unauthenticated)
    }

    /// The caller a request's `authorization: Bearer` header names.
    pub fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let header = metadata.get("authorization").ok_or_else(unauthenticated)?;
        let header = header.to_str().map_err(|_| unauthenticated())?;
        let secret = strip_scheme(header, "Bearer").ok_or_else(unauthenticated)?;
        let principal = self
            .library
            .principal(secret)
            .map_err(|e| crate::results::engine_status(&e))?
            .ok_or_else(unauthenticated)?;
        // The server never runs as the owner: a token names a user.
        let name = principal.user_name().ok_or_else(unauthenticated)?.to_string();
        Ok(Caller { principal, name })
    }
}

/// `Scheme credentials`, the scheme matched without regard to case (RFC 9110).
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.trim().split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim()).filter(|s| !s.is_empty())
}

/// The user name and password of an `authorization: Basic` header.
fn basic_credentials(metadata: &MetadataMap) -> Result<(String, String), Status> {
    let header = metadata
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("handshake: send `authorization: Basic base64(user:password)`"))?;
    let header = header.to_str().map_err(|_| unauthenticated())?;
    let encoded = strip_scheme(header, "Basic").ok_or_else(unauthenticated)?;
    let decoded = BASE64.decode(encoded).map_err(|_| unauthenticated())?;
    let text = String::from_utf8(decoded).map_err(|_| unauthenticated())?;
    let (name, password) = text.split_once(':').ok_or_else(unauthenticated)?;
    Ok((name.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn basic_credentials_with_and_without_padding() {
        // "ana:pw" encodes to "YW5hOnB3" (no padding); "ana:pwd" to "YW5hOnB3ZA==".
        let cases = [
            ("Basic YW5hOnB3", Some(("ana", "pw"))),
            ("Basic YW5hOnB3ZA==", Some(("ana", "pwd"))),
            ("Basic YW5hOnB3ZA", Some(("ana", "pwd"))),
            ("basic YW5hOnB3ZA", Some(("ana", "pwd"))),
            // A password may hold colons; the name may not.
            ("Basic YW5hOmE6Yg==", Some(("ana", "a:b"))),
            ("Basic !!!", None),
            ("Bearer YW5hOnB3", None),
            ("Basic", None),
            ("Basic bm9jb2xvbg==", None),
        ];
        for (header, expected) in cases {
            let got = basic_credentials(&metadata(header)).ok();
            let expected = expected.map(|(n, p)| (n.to_string(), p.to_string()));
            assert_eq!(got, expected, "{header}");
        }
    }

    #[test]
    fn bearer_scheme() {
        assert_eq!(strip_scheme("Bearer abc", "Bearer"), Some("abc"));
        assert_eq!(strip_scheme("bearer  abc ", "Bearer"), Some("abc"));
        assert_eq!(strip_scheme("Bearer ", "Bearer"), None);
        assert_eq!(strip_scheme("Basic abc", "Bearer"), None);
    }
}
