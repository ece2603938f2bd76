//! The apk database (`/lib/apk/db/installed`): one record per package, blank-line separated,
//! each line `X:value` with a one-letter key (apk-tools' "installed database" format).

use super::Package;

pub const INSTALLED_PATH: &str = "/lib/apk/db/installed";

/// Parses the installed database. Records without a `P:` line are skipped; file and checksum
/// lines (`F:`, `R:`, `Z:`, ...) are ignored. Nothing here can fail.
pub fn parse_installed(text: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    for record in text.split("\n\n") {
        let (mut name, mut version, mut arch, mut origin, mut size) = (None, String::new(), String::new(), None, None);
        let mut license = None;
        for line in record.lines() {
            let Some((key, value)) = line.split_once(':') else { continue };
            match key {
                "P" => name = Some(value.to_string()),
                "V" => version = value.to_string(),
                "A" => arch = value.to_string(),
                "o" => origin = Some(value.to_string()),
                "I" => size = value.parse::<u64>().ok(),
                "L" => license = Some(value.to_string()).filter(|l| !l.is_empty()),
                _ => {}
            }
        }
        if let Some(name) = name {
            let source = origin.unwrap_or_else(|| name.clone());
            // A package and its origin are built from one APKBUILD: one version.
            packages.push(Package {
                name,
                source_version: version.clone(),
                version,
                arch,
                source,
                epoch: None,
                release: None,
                source_rpm: None,
                licenses: license.into_iter().collect(),
                installed_size: size,
                status: "installed".into(),
            });
        }
    }
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records() {
        let text = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nS:383152\nI:622592\nT:the musl c library\n\
                    L:MIT\no:musl\nF:lib\nR:ld-musl-x86_64.so.1\n\nP:busybox-binsh\nV:1.36.1-r5\nA:x86_64\no:busybox\nI:1\n";
        let p = parse_installed(text);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].name.as_str(), p[0].version.as_str(), p[0].arch.as_str()), ("musl", "1.2.4-r2", "x86_64"));
        assert_eq!((p[0].installed_size, p[1].source.as_str()), (Some(622592), "busybox"));
        assert_eq!((p[0].licenses.clone(), p[1].source_version.as_str()), (vec!["MIT".to_string()], "1.36.1-r5"));
    }
}
