//! The dpkg database (`/var/lib/dpkg/status`): one stanza per package, RFC 822 style.

/// Where dpkg keeps its status database, relative to the root filesystem.
pub const STATUS_PATH: &str = "/var/lib/dpkg/status";

use super::Package;

/// Parses a status file into packages (`source`: dpkg's `Source:` without its version, else
/// the name; `installed_size` in bytes, dpkg records KiB; `status`: dpkg's `Status:`). Stanzas without a `Package:` field are skipped; unknown fields are
/// ignored; nothing here can fail (a malformed line is just not a field).
pub fn parse_status(text: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    for stanza in text.split("\n\n") {
        let mut name = None;
        let (mut version, mut arch, mut source, mut status) = (String::new(), String::new(), None, String::new());
        let mut installed_size = None;
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue; // continuation of a multi-line field (Description, Conffiles)
            }
            let Some((key, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            match key {
                "Package" => name = Some(value.to_string()),
                "Version" => version = value.to_string(),
                "Architecture" => arch = value.to_string(),
                "Status" => status = value.to_string(),
                "Source" => source = value.split_whitespace().next().map(str::to_string),
                "Installed-Size" => installed_size = value.parse::<u64>().ok().map(|kib| kib.saturating_mul(1024)),
                _ => {}
            }
        }
        if let Some(name) = name {
            let source = source.unwrap_or_else(|| name.clone());
            packages.push(Package { name, version, arch, source, installed_size, status });
        }
    }
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stanzas_with_continuations_and_source_versions() {
        let text = "Package: libc6\nStatus: install ok installed\nInstalled-Size: 12\nArchitecture: amd64\n\
                    Source: glibc (2.36-9)\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library\n a b\n .\n\n\
                    Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n";
        let p = parse_status(text);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str(), p[0].source.as_str()),
            ("libc6", "2.36-9+deb12u4", "glibc")
        );
        assert_eq!(p[0].installed_size, Some(12 * 1024));
        assert_eq!((p[1].source.as_str(), p[1].installed_size), ("base-files", None));
    }
}
