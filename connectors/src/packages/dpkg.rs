//! The dpkg database (`/var/lib/dpkg/status`): one stanza per package, RFC 822 style.

/// Where dpkg keeps its status database, relative to the root filesystem.
pub const STATUS_PATH: &str = "/var/lib/dpkg/status";

use super::Package;

/// Where a package's copyright file is (`{}` is the package's name, without an architecture).
pub const COPYRIGHT_PATH: &str = "/usr/share/doc/{}/copyright";

/// Parses a status file into packages (`source`: dpkg's `Source:` without its version, else
/// the name; `source_version`: the version in `Source:`'s parentheses, else the package's;
/// `installed_size` in bytes, dpkg records KiB; `status`: dpkg's `Status:`). Stanzas without
/// a `Package:` field are skipped; unknown fields are ignored; nothing here can fail (a
/// malformed line is just not a field). Licenses are not in the database: see
/// [`copyright_licenses`].
pub fn parse_status(text: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    for stanza in text.split("\n\n") {
        let mut name = None;
        let (mut version, mut arch, mut status) = (String::new(), String::new(), String::new());
        let (mut source, mut source_version) = (None, None);
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
                "Source" => {
                    let mut words = value.split_whitespace();
                    source = words.next().map(str::to_string);
                    source_version = words
                        .next()
                        .and_then(|v| v.strip_prefix('(')?.strip_suffix(')'))
                        .filter(|v| !v.is_empty())
                        .map(str::to_string);
                }
                "Installed-Size" => installed_size = value.parse::<u64>().ok().map(|kib| kib.saturating_mul(1024)),
                _ => {}
            }
        }
        if let Some(name) = name {
            let source = source.unwrap_or_else(|| name.clone());
            let source_version = source_version.unwrap_or_else(|| version.clone());
            packages.push(Package {
                name,
                version,
                arch,
                source,
                source_version,
                epoch: None,
                release: None,
                source_rpm: None,
                licenses: Vec::new(),
                installed_size,
                status,
            });
        }
    }
    packages
}

/// The licenses a copyright file names, in order, each once: the `License:` fields of a
/// machine-readable file (DEP-5: the short name on the field's first line), and the files of
/// `/usr/share/common-licenses/` it points to (older, free-form files say "see
/// /usr/share/common-licenses/GPL-2"). Names are dpkg's (`GPL-2+`, `BSD-3-clause`), not
/// necessarily SPDX identifiers. Nothing here can fail.
pub fn copyright_licenses(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        let name = name.trim().trim_end_matches(['.', ',', ';', ')']);
        if !name.is_empty() && name.len() <= 100 && !found.iter().any(|f| f == name) {
            found.push(name.to_string());
        }
    };
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("License:") {
            // "GPL-2+ or Artistic" names two; "with OpenSSL exception" qualifies one.
            for name in value.split(" or ").flat_map(|v| v.split(" and ")) {
                add(name.split(" with ").next().unwrap_or(name));
            }
        }
        let mut rest = line;
        while let Some(at) = rest.find("/usr/share/common-licenses/") {
            rest = &rest[at + "/usr/share/common-licenses/".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+')))
                .unwrap_or(rest.len());
            add(&rest[..end]);
        }
    }
    found
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
        assert_eq!((p[0].source_version.as_str(), p[1].source_version.as_str()), ("2.36-9", "12.4"));
    }

    #[test]
    fn copyright_files_name_their_licenses() {
        let dep5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
                    Files: *\nCopyright: 1999 A\nLicense: GPL-2+\n This program is free software\n .\n \
                    On Debian systems, see /usr/share/common-licenses/GPL-2.\n\n\
                    Files: lib/*\nLicense: BSD-3-clause or Artistic\n\nLicense: GPL-2+\n text\n";
        assert_eq!(copyright_licenses(dep5), ["GPL-2+", "GPL-2", "BSD-3-clause", "Artistic"]);
        let free_form = "This is Debian's prepackaged version.\nIt is licensed under the GNU GPL; see\n\
                         /usr/share/common-licenses/GPL-3 and /usr/share/common-licenses/LGPL-2.1 for it.\n";
        assert_eq!(copyright_licenses(free_form), ["GPL-3", "LGPL-2.1"]);
        assert!(copyright_licenses("").is_empty());
    }
}
