//! OS facts read from the root filesystem: `/etc/os-release` and `/etc/hostname`.

pub const OS_RELEASE_PATHS: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];
pub const HOSTNAME_PATH: &str = "/etc/hostname";

/// What os-release says: `ID` ("debian") and `VERSION_ID` ("12"), and the pretty name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
}

/// Parses os-release(5): `KEY=value` lines, values optionally quoted.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else { continue };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
        match key {
            "ID" => os.id = Some(value),
            "VERSION_ID" => os.version_id = Some(value),
            "PRETTY_NAME" => os.pretty_name = Some(value),
            _ => {}
        }
    }
    os
}

/// The first non-empty line of /etc/hostname.
pub fn parse_hostname(text: &str) -> Option<String> {
    text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_os_release() {
        let os = parse_os_release("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n");
        assert_eq!(os.id.as_deref(), Some("debian"));
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert_eq!(parse_hostname("\n web01 \n"), Some("web01".into()));
    }
}
