//! Which systems an OSV ecosystem's records are about, and how they name packages: Debian,
//! Ubuntu and Alpine records name source packages (dpkg's `Source:`, apk's origin) and their
//! versions; Rocky Linux, AlmaLinux and Red Hat records name binary rpm packages. A record
//! matches an image when its system (os-release `ID`) and release are the image's: releases
//! are compared as each distribution numbers its advisories (Debian `12`, Ubuntu `22.04`,
//! Alpine `3.19`, the rpm distributions by their major version).

/// A system's release, as advisories of an ecosystem name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The os-release `ID` of the systems: `debian`, `ubuntu`, `alpine`, `rocky`, `almalinux`, `rhel`.
    pub os: &'static str,
    pub release: String,
    /// The package manager whose version order ranges are in.
    pub manager: &'static str,
    /// Whether packages are named by their source package (and its version).
    pub by_source: bool,
}

/// The release an OSV ecosystem (`Debian:12`, `Ubuntu:22.04:LTS`, `Alpine:v3.19`,
/// `Rocky Linux:9`, `AlmaLinux:9`, `Red Hat:enterprise_linux:9::appstream`) is about; `None` for
/// an ecosystem of another kind (PyPI, npm, ...) or without a release.
pub fn of_ecosystem(ecosystem: &str) -> Option<Release> {
    let mut parts = ecosystem.split(':');
    let family = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    let release = |os: &'static str, manager: &'static str, by_source: bool, release: Option<String>| {
        Some(Release { os, release: release.filter(|r| !r.is_empty())?, manager, by_source })
    };
    match family {
        "Debian" => release("debian", "dpkg", true, rest.first().map(|r| r.to_string())),
        // "Ubuntu:22.04:LTS", "Ubuntu:Pro:18.04:LTS": the first part that is a release number.
        "Ubuntu" => {
            let number = rest.iter().find(|p| p.contains('.') && p.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
            release("ubuntu", "dpkg", true, number.map(|n| n.to_string()))
        }
        "Alpine" => release("alpine", "apk", true, rest.first().map(|r| r.trim_start_matches('v').to_string())),
        "Rocky Linux" => release("rocky", "rpm", false, rest.first().map(|r| major(r).to_string())),
        "AlmaLinux" => release("almalinux", "rpm", false, rest.first().map(|r| major(r).to_string())),
        // "Red Hat:enterprise_linux:9::appstream", "Red Hat:rhel_eus:8.6::baseos".
        "Red Hat" => release("rhel", "rpm", false, rest.get(1).map(|r| major(r).to_string())),
        _ => None,
    }
}

/// The release an image's advisories are about, from its os-release `ID` and `VERSION_ID`.
pub fn of_image(os: &str, version_id: &str) -> Option<String> {
    let release = match os {
        "debian" | "ubuntu" => version_id.to_string(),
        "alpine" => version_id.split('.').take(2).collect::<Vec<_>>().join("."),
        "rocky" | "almalinux" | "rhel" => major(version_id).to_string(),
        _ => return None,
    };
    (!release.is_empty()).then_some(release)
}

fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecosystems_and_images_name_the_same_releases() {
        let key = |e: &str| of_ecosystem(e).map(|r| (r.os, r.release, r.manager, r.by_source));
        assert_eq!(key("Debian:12"), Some(("debian", "12".into(), "dpkg", true)));
        assert_eq!(key("Ubuntu:Pro:18.04:LTS"), Some(("ubuntu", "18.04".into(), "dpkg", true)));
        assert_eq!(key("Alpine:v3.19"), Some(("alpine", "3.19".into(), "apk", true)));
        assert_eq!(key("Rocky Linux:9"), Some(("rocky", "9".into(), "rpm", false)));
        assert_eq!(key("Red Hat:enterprise_linux:9::appstream"), Some(("rhel", "9".into(), "rpm", false)));
        assert_eq!((key("Debian"), key("PyPI"), key("")), (None, None, None));
        assert_eq!(of_image("alpine", "3.19.1").as_deref(), Some("3.19"));
        assert_eq!(of_image("rocky", "9.4").as_deref(), Some("9"));
        assert_eq!(of_image("debian", "12").as_deref(), Some("12"));
        assert_eq!((of_image("fedora", "40"), of_image("debian", "")), (None, None));
    }
}
