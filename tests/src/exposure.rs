//! A fleet's exposure, for tests/advisories.rs (which checks `vulnerabilities` against a
//! brute-force match of its own) and bench-advisories: N image versions' package inventories,
//! made from the real Debian bookworm tree's (`debian_tree`, read by `dpkg-query`) and written
//! straight into the catalog (`state = 'synthetic'`, no disk), and OSV advisories about them.
//!
//! Every source package of a host stands on one *rung* of its version ladder: 0 is the
//! bookworm version with `~pre1` (older), 1 the bookworm version, 2 and 3 that version with
//! `+deb12u1` and `+deb12u2` (newer), in dpkg's order. A binary's version is its source's rung
//! (with its own binNMU suffix, as bookworm has it: `+b1` stays on the binary). Advisories name
//! source packages and bound their ranges by rungs, so that a check can decide what affects a
//! host by comparing rung numbers, without any version order.
//!
//! Hosts: one in ten runs Debian 11 (the same packages; advisories of `Debian:11` are about
//! it), the rest Debian 12; each takes an update level (rung 1, 2 or 3 for most sources), one
//! source in ten stands on a rung of its own, and one host in ten lacks a package or two.
//! Advisories: `about_fleet` of them name the fleet's sources (the rest sources no host has, as
//! most of a distribution's records do), one in seven of those Debian 11; ranges `introduced
//! 0`/rung to `fixed`, `last_affected` or `limit` rungs, open ones, version lists alone, one in
//! twenty withdrawn; CVSS v3 vectors of each severity, or none.

use crate::dice::Dice;
use crate::{debian_tree, run};
use imagelake_engine::Library;
use imagelake_engine::catalog::{ImageRow, ImageState, PackageRow};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

/// Hosts written per Lance commit.
const GROUP: usize = 1000;

/// How many rungs a source's version ladder has.
pub const RUNGS: u8 = 4;

/// A source version on rung `rung` of its ladder.
pub fn rung(version: &str, rung: u8) -> String {
    match rung {
        0 => format!("{version}~pre1"),
        1 => version.to_string(),
        n => format!("{version}+deb12u{}", n - 1),
    }
}

/// One installed package of the base inventory.
#[derive(Debug, Clone)]
pub struct BasePackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Index into [`Fleet::sources`].
    pub source: usize,
    /// What the binary's version adds to its source's (`+b1`), or "".
    pub suffix: String,
}

/// One host: its name, release, and where each of its sources stands.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// os-release `VERSION_ID`: "12" or "11".
    pub release: &'static str,
    /// The rung of each source, by index into [`Fleet::sources`].
    pub rungs: Vec<u8>,
    /// Packages (indexes into [`Fleet::base`]) this host lacks.
    pub removed: Vec<usize>,
}

pub struct Fleet {
    /// Source packages: name and bookworm version.
    pub sources: Vec<(String, String)>,
    pub base: Vec<BasePackage>,
    pub hosts: Vec<Host>,
}

/// One installed package of a host.
pub struct Installed<'a> {
    pub package: &'a BasePackage,
    pub version: String,
    pub source_version: String,
    pub rung: u8,
}

impl Fleet {
    /// The bookworm tree's packages, as dpkg-query lists them, and `hosts` hosts of them.
    pub fn generate(hosts: usize, seed: u64) -> Fleet {
        let admindir = debian_tree().join("var/lib/dpkg");
        let out = run(Command::new("dpkg-query").arg(format!("--admindir={}", admindir.display())).args([
            "-W",
            "-f",
            "${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n",
        ]));
        let mut sources: Vec<(String, String)> = Vec::new();
        let mut base = Vec::new();
        for line in out.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let (name, version, arch, source, source_version) = (f[0], f[1], f[2], f[3], f[4]);
            let suffix = version.strip_prefix(source_version).unwrap_or("").to_string();
            // Advisories name sources: one version of each, so that a rung says where a host is.
            let index = match sources.iter().position(|(s, _)| s == source) {
                Some(i) => {
                    assert_eq!(sources[i].1, source_version, "two versions of the source {source}");
                    i
                }
                None => {
                    sources.push((source.to_string(), source_version.to_string()));
                    sources.len() - 1
                }
            };
            base.push(BasePackage {
                name: name.into(),
                version: version.into(),
                arch: arch.into(),
                source: index,
                suffix,
            });
        }
        let mut dice = Dice(seed);
        let hosts = (0..hosts)
            .map(|h| {
                let release = if dice.below(10) == 0 { "11" } else { "12" };
                let level = 1 + dice.below(3) as u8;
                let rungs = (0..sources.len())
                    .map(|_| if dice.below(10) == 0 { dice.below(RUNGS as u64) as u8 } else { level })
                    .collect();
                let removed = match dice.below(10) {
                    0 => (0..1 + dice.below(2)).map(|_| dice.below(base.len() as u64) as usize).collect(),
                    _ => Vec::new(),
                };
                Host { name: format!("host-{h:05}"), release, rungs, removed }
            })
            .collect();
        Fleet { sources, base, hosts }
    }

    /// The packages `host` has installed.
    pub fn installed<'a>(&'a self, host: &'a Host) -> impl Iterator<Item = Installed<'a>> + 'a {
        self.base.iter().enumerate().filter(|(i, _)| !host.removed.contains(i)).map(|(_, package)| {
            let r = host.rungs[package.source];
            let source_version = rung(&self.sources[package.source].1, r);
            Installed { package, version: format!("{source_version}{}", package.suffix), source_version, rung: r }
        })
    }

    /// Writes every host as version 1 of its name, image ids from `first_id`: its `images`
    /// row (Debian, its release) and its `packages` rows.
    pub async fn write(&self, library: &Library, first_id: i64) {
        let catalog = library.catalog();
        for (g, group) in self.hosts.chunks(GROUP).enumerate() {
            let (mut images, mut packages) = (Vec::new(), Vec::new());
            for (i, host) in group.iter().enumerate() {
                let image_id = first_id + (g * GROUP + i) as i64;
                for p in self.installed(host) {
                    packages.push(PackageRow {
                        image_id,
                        manager: "dpkg".into(),
                        name: p.package.name.clone(),
                        version: p.version,
                        arch: p.package.arch.clone(),
                        source: self.sources[p.package.source].0.clone(),
                        installed_size: None,
                        status: "installed".into(),
                        source_version: Some(p.source_version),
                        epoch: None,
                        release: None,
                        source_rpm: None,
                        licenses: None,
                    });
                }
                images.push(ImageRow {
                    image_id,
                    name: host.name.clone(),
                    version: 1,
                    parent_id: None,
                    created_at: 1_700_000_000_000_000_000 + image_id,
                    created_by: "fleet".into(),
                    state: ImageState::Synthetic,
                    source_format: "synthetic".into(),
                    virtual_size: 0,
                    stored_bytes_new: 0,
                    os_name: Some("debian".into()),
                    os_version: Some(host.release.into()),
                    hostname: Some(host.name.clone()),
                    description: None,
                });
            }
            catalog.append(&packages).await.expect("append packages");
            catalog.append(&images).await.expect("append images");
        }
    }
}

/// The upper end of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upper {
    Fixed(u8),
    LastAffected(u8),
    Limit(u8),
}

/// One advisory about one source package.
#[derive(Debug, Clone)]
pub struct Advisory {
    pub id: String,
    pub alias: String,
    /// Index into [`Fleet::sources`], or `None` for a source no host has.
    pub source: Option<usize>,
    pub release: &'static str,
    /// One range, from `introduced` (a rung, or `None` for "0") up to `upper`; or, when
    /// `versions` is not empty, none: the listed rungs alone.
    pub introduced: Option<u8>,
    pub upper: Option<Upper>,
    pub versions: Vec<u8>,
    pub withdrawn: bool,
    /// CVSS v3.1 vector and the severity it scores as.
    pub cvss: Option<(&'static str, &'static str)>,
}

const VECTORS: [(&str, &str); 4] = [
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "CRITICAL"),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", "HIGH"),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N", "MEDIUM"),
    ("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N", "LOW"),
];

impl Advisory {
    /// Whether a source on rung `r` of a host of `release` is affected, and the fix of the
    /// range it lies in: decided on rung numbers, as the records say, without a version order.
    pub fn affects(&self, release: &str, r: u8) -> Option<Option<u8>> {
        if self.withdrawn || self.release != release {
            return None;
        }
        if !self.versions.is_empty() {
            return self.versions.contains(&r).then_some(None);
        }
        if self.introduced.is_some_and(|i| r < i) {
            return None;
        }
        match self.upper {
            None => Some(None),
            Some(Upper::Fixed(f)) => (r < f).then_some(Some(f)),
            Some(Upper::LastAffected(l)) => (r <= l).then_some(None),
            Some(Upper::Limit(l)) => (r < l).then_some(None),
        }
    }

    /// The OSV record.
    pub fn to_osv(&self, fleet: &Fleet) -> Value {
        let (package, version) = match self.source {
            Some(s) => fleet.sources[s].clone(),
            None => (format!("unused-{}", self.id.to_lowercase()), "1.0-1".to_string()),
        };
        let at = |r: u8| rung(&version, r);
        let mut affected = json!({ "package": { "ecosystem": format!("Debian:{}", self.release), "name": package } });
        if self.versions.is_empty() {
            let mut events = vec![json!({ "introduced": self.introduced.map_or("0".to_string(), at) })];
            match self.upper {
                Some(Upper::Fixed(f)) => events.push(json!({ "fixed": at(f) })),
                Some(Upper::LastAffected(l)) => events.push(json!({ "last_affected": at(l) })),
                Some(Upper::Limit(l)) => events.push(json!({ "limit": at(l) })),
                None => {}
            }
            affected["ranges"] = json!([{ "type": "ECOSYSTEM", "events": events }]);
        } else {
            affected["versions"] = json!(self.versions.iter().map(|&r| at(r)).collect::<Vec<_>>());
        }
        let mut record = json!({
            "schema_version": "1.6.0",
            "id": self.id,
            "modified": "2024-06-01T00:00:00Z",
            "aliases": [self.alias],
            "summary": format!("{package}: generated advisory"),
            "affected": [affected],
        });
        if let Some((vector, _)) = self.cvss {
            record["severity"] = json!([{ "type": "CVSS_V3", "score": vector }]);
        }
        if self.withdrawn {
            record["withdrawn"] = json!("2024-06-02T00:00:00Z");
        }
        record
    }
}

/// `total` advisories, `about_fleet` of them about the fleet's sources.
pub fn advisories(fleet: &Fleet, total: usize, about_fleet: usize, seed: u64) -> Vec<Advisory> {
    let mut dice = Dice(seed);
    (0..total)
        .map(|n| {
            let source = (n < about_fleet).then(|| dice.below(fleet.sources.len() as u64) as usize);
            let release = if dice.below(7) == 0 { "11" } else { "12" };
            let rung = |dice: &mut Dice| dice.below(RUNGS as u64) as u8;
            let (mut introduced, mut upper, mut versions) = (None, None, Vec::new());
            match dice.below(20) {
                0..8 => upper = Some(Upper::Fixed(1 + dice.below(3) as u8)),
                8..11 => {
                    let from = rung(&mut dice).min(2);
                    introduced = Some(from);
                    upper = Some(Upper::Fixed(from + 1 + dice.below((RUNGS - from - 1) as u64) as u8));
                }
                11..14 => upper = Some(Upper::LastAffected(rung(&mut dice))),
                14..16 => upper = Some(Upper::Limit(1 + dice.below(3) as u8)),
                16..18 => {}
                _ => {
                    versions = vec![rung(&mut dice), rung(&mut dice)];
                    versions.sort_unstable();
                    versions.dedup();
                }
            }
            let cvss = (dice.below(10) < 7).then(|| VECTORS[dice.below(4) as usize]);
            let id =
                if n % 2 == 0 { format!("DSA-{}-1", 10_000 + n) } else { format!("DEBIAN-CVE-2024-{}", 10_000 + n) };
            Advisory {
                id,
                alias: format!("CVE-2024-{}", 10_000 + n),
                source,
                release,
                introduced,
                upper,
                versions,
                withdrawn: dice.below(20) == 0,
                cvss,
            }
        })
        .collect()
}

/// Writes the records as osv.dev publishes them, one JSON file each, into `dir`.
pub fn write_osv(fleet: &Fleet, advisories: &[Advisory], dir: &Path) {
    std::fs::create_dir_all(dir).expect("advisories folder");
    for advisory in advisories {
        let text = serde_json::to_string(&advisory.to_osv(fleet)).expect("json");
        std::fs::write(dir.join(format!("{}.json", advisory.id)), text).expect("advisory");
    }
}
