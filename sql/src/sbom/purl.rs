//! Package URLs (purl-spec) of installed OS packages, in the form syft writes them and in the
//! spec's canonical encoding (what packageurl-python prints back): `pkg:TYPE/NAMESPACE/NAME@VERSION`
//! with the qualifiers sorted by key; every byte but letters, digits, `.-_~:` percent-encoded,
//! so `+` is `%2B` and `@` in a qualifier `%40` (and `/`, which packageurl-python leaves,
//! `%2F`: no package name holds one, and a name that did would read as a namespace).
//!
//! - deb: `pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc`;
//!   `upstream` is the source package, with `@version` when its version differs from the
//!   package's; the epoch stays in the version.
//! - rpm: `pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64&distro=fedora-40&epoch=2&upstream=bash-5.2.26-3.fc40.src.rpm`;
//!   the version is version-release, the epoch a qualifier, `upstream` the source rpm.
//! - apk: `pkg:apk/alpine/busybox-binsh@1.36.1-r5?arch=x86_64&distro=alpine-3.19.1&upstream=busybox`;
//!   `upstream` the origin, when it differs from the name.

use super::{Os, Package};

/// The purl of `package` on the system `os` describes; `None` for a manager without a purl
/// type.
pub fn purl(os: &Os, package: &Package) -> Option<String> {
    let kind = match package.manager.as_str() {
        "dpkg" => "deb",
        "rpm" => "rpm",
        "apk" => "apk",
        _ => return None,
    };
    let mut qualifiers: Vec<(&str, String)> = Vec::new();
    if !package.arch.is_empty() {
        qualifiers.push(("arch", package.arch.clone()));
    }
    if let Some(distro) = os.distro() {
        qualifiers.push(("distro", distro));
    }
    let version = match kind {
        "rpm" => {
            if let Some(epoch) = package.epoch {
                qualifiers.push(("epoch", epoch.to_string()));
            }
            if let Some(source_rpm) = &package.source_rpm {
                qualifiers.push(("upstream", source_rpm.clone()));
            }
            // The version without its epoch: "2:5.2-3" is "5.2-3" with epoch=2.
            match package.epoch {
                Some(e) => package.version.strip_prefix(&format!("{e}:")).unwrap_or(&package.version).to_string(),
                None => package.version.clone(),
            }
        }
        "deb" => {
            let source_version = package.source_version.as_deref().unwrap_or(&package.version);
            if source_version != package.version {
                qualifiers.push(("upstream", format!("{}@{source_version}", package.source)));
            } else if package.source != package.name {
                qualifiers.push(("upstream", package.source.clone()));
            }
            package.version.clone()
        }
        _ => {
            if package.source != package.name {
                qualifiers.push(("upstream", package.source.clone()));
            }
            package.version.clone()
        }
    };
    qualifiers.sort();
    let mut purl = format!("pkg:{kind}/{}/{}", encode(&os.purl_namespace(kind)), encode(&package.name));
    if !version.is_empty() {
        purl.push('@');
        purl.push_str(&encode(&version));
    }
    for (i, (key, value)) in qualifiers.iter().filter(|(_, v)| !v.is_empty()).enumerate() {
        purl.push(if i == 0 { '?' } else { '&' });
        purl.push_str(key);
        purl.push('=');
        purl.push_str(&encode(value));
    }
    Some(purl)
}

/// Percent-encodes all but the unreserved characters and `:`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(manager: &str, name: &str, version: &str, source: &str, source_version: &str) -> Package {
        Package {
            manager: manager.into(),
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            source: source.into(),
            source_version: Some(source_version.into()),
            ..Package::default()
        }
    }

    #[test]
    fn purls_as_syft_writes_them() {
        let debian = Os { id: Some("debian".into()), version_id: Some("12".into()) };
        let p = package("dpkg", "libssl3", "3.0.11-1~deb12u2", "openssl", "3.0.11-1~deb12u2");
        assert_eq!(
            purl(&debian, &p).unwrap(),
            "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12&upstream=openssl"
        );
        let p = package("dpkg", "libc6", "1:2.36-9+b1", "glibc", "1:2.36-9");
        assert_eq!(
            purl(&debian, &p).unwrap(),
            "pkg:deb/debian/libc6@1:2.36-9%2Bb1?arch=amd64&distro=debian-12&upstream=glibc%401:2.36-9"
        );
        let fedora = Os { id: Some("rhel".into()), version_id: Some("9.4".into()) };
        let mut p = package("rpm", "bash", "2:5.2.26-3.el9", "bash", "2:5.2.26-3.el9");
        (p.arch, p.epoch, p.source_rpm) = ("x86_64".into(), Some(2), Some("bash-5.2.26-3.el9.src.rpm".into()));
        assert_eq!(
            purl(&fedora, &p).unwrap(),
            "pkg:rpm/redhat/bash@5.2.26-3.el9?arch=x86_64&distro=rhel-9.4&epoch=2&upstream=bash-5.2.26-3.el9.src.rpm"
        );
        let nameless = Os::default();
        let p = package("apk", "g++", "13.2.1_git20231014-r0", "gcc", "13.2.1_git20231014-r0");
        assert_eq!(
            purl(&nameless, &p).unwrap(),
            "pkg:apk/alpine/g%2B%2B@13.2.1_git20231014-r0?arch=amd64&upstream=gcc"
        );
    }
}
