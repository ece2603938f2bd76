//! `debugfs -R stat` as an oracle: what e2fsprogs itself says about an inode.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// The fields of `debugfs stat` that imagelake indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub inode: u64,
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u32,
    /// Seconds and nanoseconds.
    pub mtime: (i64, u32),
    pub fast_link: Option<String>,
    pub device: Option<(u32, u32)>,
    pub xattrs: Vec<(String, String)>,
    /// Data runs in blocks: (logical, physical, count, uninit). Tree and indirect blocks omitted.
    pub extents: Vec<(u64, u64, u64, bool)>,
}

/// Runs one `debugfs` over `image` that stats every path; returns the stats by path.
pub fn stat_all(image: &Path, paths: &[String]) -> HashMap<String, Stat> {
    let mut cmds = tempfile::NamedTempFile::new().expect("tempfile");
    for p in paths {
        writeln!(cmds, "stat \"{p}\"").expect("write");
    }
    let out = Command::new("debugfs").arg("-f").arg(cmds.path()).arg(image).output().expect("debugfs");
    let text = String::from_utf8_lossy(&out.stdout);
    // debugfs echoes each command as "debugfs: stat ..." before its output.
    let mut stats = HashMap::new();
    let mut sections = text.split("debugfs: stat \"").skip(1);
    for p in paths {
        let section = sections.next().unwrap_or_else(|| panic!("debugfs printed nothing for {p}"));
        stats.insert(p.clone(), parse(section));
    }
    stats
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let i = text.find(key)? + key.len();
    text[i..].split_whitespace().next()
}

fn parse(text: &str) -> Stat {
    let num = |key: &str| {
        field(text, key).and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    let mut s = Stat {
        inode: num("Inode:"),
        kind: field(text, "Type:").unwrap_or("").to_string(),
        mode: u32::from_str_radix(field(text, "Mode:").expect("Mode"), 8).expect("octal mode"),
        uid: num("User:") as u32,
        gid: num("Group:") as u32,
        size: num("Size:"),
        links: num("Links:") as u32,
        ..Stat::default()
    };
    let mtime = field(text, " mtime:").expect("mtime");
    let (secs, extra) = mtime.trim_start_matches("0x").split_once(':').expect("mtime secs:extra");
    let (secs, extra) = (u32::from_str_radix(secs, 16).expect("hex"), u32::from_str_radix(extra, 16).expect("hex"));
    // The extra word holds two epoch bits and the nanoseconds shifted left by two.
    s.mtime = (i64::from(secs as i32) + (i64::from(extra & 3) << 32), extra >> 2);
    if let Some(i) = text.find("Fast link dest: \"") {
        let rest = &text[i + 17..];
        s.fast_link = rest.find("\"\n").map(|end| rest[..end].to_string());
    }
    if let Some(dev) = field(text, "Device major/minor number:") {
        let (ma, mi) = dev.split_once(':').expect("major:minor");
        s.device = Some((ma.parse().expect("major"), mi.parse().expect("minor")));
    }
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("Extended attributes:") {
            while let Some(x) = lines.next_if(|l| l.starts_with("  ")) {
                // "name (len) = value", or "name (0)" for an empty value.
                let (name, value) = x.trim().split_once(" = ").unwrap_or((x.trim(), ""));
                let name = name.rsplit_once(" (").map_or(name, |(n, _)| n);
                s.xattrs.push((name.to_string(), value.trim_matches('"').to_string()));
            }
        }
        if line == "EXTENTS:" || line == "BLOCKS:" {
            let runs = lines.next().unwrap_or("");
            for run in runs.split(", ").filter(|r| r.contains("):")) {
                let (logical, physical) = run.split_once("):").expect("(logical):physical");
                let logical = logical.trim_start_matches('(');
                if logical.starts_with(|c: char| !c.is_ascii_digit()) {
                    continue; // (ETB0), (IND), (DIND), (TIND): tree and indirect blocks
                }
                let uninit = physical.contains("[uninit]");
                let physical = physical.split_whitespace().next().expect("physical");
                let l: Vec<u64> = logical.split('-').map(|n| n.parse().expect("block")).collect();
                let p: Vec<u64> = physical.split('-').map(|n| n.parse().expect("block")).collect();
                s.extents.push((l[0], p[0], l.last().expect("run") - l[0] + 1, uninit));
            }
        }
    }
    s
}
