//! The notebooks of `notebooks/`, run as a user runs them: a library of real images (ext4 made
//! by `mke2fs -d`), users made with the command line, `imagelake serve` started on it, and each
//! notebook executed by nbclient in the project's venv (tests/python/run_notebook.py), reaching
//! the server through ADBC's Flight SQL driver. Each notebook saves its plots as PNG files and
//! the numbers behind them as JSON; the test checks that every PNG is one, and that the numbers
//! equal the same questions answered here from the catalog (`imagelake sql` on the library,
//! as its owner) or from how the images were made. The maintenance notebook patches images:
//! the new versions, their parents, provenance and packages are checked afterwards.
//!
//! The library: `base@1` and `base@2` (the OS team's update: openssl 3.0.11 -> 3.0.13), and
//! images built on them: `web@1`, `web@2` (nginx upgraded, curl added, pages added, changed
//! and removed), `app@1`, `db@1` (all on base 1), `edge@1` (on base 2).
//!
//! `IMAGELAKE_NOTEBOOKS_KEEP=1` keeps the work folder (library, plots, executed notebooks) and
//! prints where it is.

use imagelake_tests::server::{Server, User, add_users, dpkg_status, os_release, tree};
use imagelake_tests::{Library, mkfs_ext, output, repo_root, run, venv_python};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const USERS: &[User] = &[
    ("analyst", "analyst-pw-7f3a", false, &[("read", "*")]),
    ("maintainer", "maintainer-pw-c81d", false, &[("write", "*")]),
];

/// The package the maintenance notebook looks for, the version below which an image is
/// outdated, and the update it carries onto those images.
const PACKAGE: &str = "openssl";
const BELOW: &str = "3.0.13-1~deb12u1";
const PATCH_FROM: &str = "base@1";
const PATCH_TO: &str = "base@2";
const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

/// `n` bytes that do not compress or repeat, named by `seed` (the same seed, the same bytes).
fn noise(seed: &str, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    blake3::Hasher::new().update(seed.as_bytes()).finalize_xof().fill(&mut out);
    out
}

type Files = Vec<(&'static str, Vec<u8>)>;

/// An image's tree: its files and its packages.
struct Image {
    name: &'static str,
    files: Files,
    packages: Vec<(&'static str, &'static str)>,
}

fn text(s: impl Into<String>) -> Vec<u8> {
    s.into().into_bytes()
}

/// Debian's base system at openssl `ssl` (3.0.11 or 3.0.13).
fn base(ssl: &'static str, ssl_version: &'static str) -> Image {
    let changelog: String = ["3.0.11", "3.0.13"]
        .iter()
        .take(if ssl == "3.0.13" { 2 } else { 1 })
        .map(|v| format!("openssl ({v}-1~deb12u1) bookworm-security; urgency=medium\n\n  * New upstream release.\n\n"))
        .collect();
    Image {
        name: "base",
        files: vec![
            ("etc/os-release", text(os_release())),
            ("etc/hostname", text("base\n")),
            ("etc/ssl/openssl.cnf", text("[openssl_init]\nproviders = provider_sect\n")),
            ("usr/lib/x86_64-linux-gnu/libc.so.6", noise("libc 2.36", 1 << 20)),
            ("usr/lib/x86_64-linux-gnu/libssl.so.3", noise(&format!("libssl {ssl}"), 384 << 10)),
            ("usr/bin/openssl", noise(&format!("openssl {ssl}"), 96 << 10)),
            ("usr/share/doc/openssl/changelog.Debian", text(changelog)),
            ("bin/sh", noise("dash 0.5.12", 128 << 10)),
        ],
        packages: vec![
            ("base-files", "12.4+deb12u5"),
            ("dash", "0.5.12-2"),
            ("libc6", "2.36-9+deb12u4"),
            ("libssl3", ssl_version),
            ("openssl", ssl_version),
        ],
    }
}

/// `base` with `files` added (or replaced) and `packages` added, named `name`.
fn on(base: &Image, name: &'static str, files: Files, packages: &[(&'static str, &'static str)]) -> Image {
    let mut all: BTreeMap<&str, Vec<u8>> = base.files.iter().cloned().collect();
    all.extend(files);
    let mut pkgs: BTreeMap<&str, &str> = base.packages.iter().cloned().collect();
    pkgs.extend(packages.iter().cloned());
    all.insert("etc/hostname", text(format!("{name}\n")));
    Image { name, files: all.into_iter().collect(), packages: pkgs.into_iter().collect() }
}

/// The images in the order they are checked in (`name@1`, then `name@2`, ...).
fn images() -> Vec<Image> {
    let base1 = base("3.0.11", "3.0.11-1~deb12u2");
    let base2 = base("3.0.13", "3.0.13-1~deb12u1");
    let page = |v: u32| text(format!("<h1>web {v}</h1>\n").repeat(400));
    let web1 = on(
        &base1,
        "web",
        vec![
            ("usr/sbin/nginx", noise("nginx 1.22.1-9", 256 << 10)),
            ("etc/nginx/nginx.conf", text("worker_processes auto;\n")),
            ("srv/www/index.html", page(1)),
            ("srv/www/old.html", text("old page\n".repeat(100))),
            ("etc/motd", text("welcome to web, version 1\n")),
        ],
        &[("nginx", "1.22.1-9")],
    );
    let mut web2 = on(
        &web1,
        "web",
        vec![
            ("usr/sbin/nginx", noise("nginx 1.22.1-9+deb12u1", 256 << 10)),
            ("usr/bin/curl", noise("curl 7.88.1-10", 64 << 10)),
            ("etc/nginx/nginx.conf", text("worker_processes 4;\n")),
            ("srv/www/index.html", page(2)),
            ("srv/www/about.html", text("about us\n".repeat(200))),
            ("srv/www/logo.png", noise("logo", 40 << 10)),
            ("etc/motd", text("welcome to web, version 2\n")),
        ],
        &[("nginx", "1.22.1-9+deb12u1"), ("curl", "7.88.1-10")],
    );
    web2.files.retain(|(path, _)| *path != "srv/www/old.html");
    let app = on(
        &base1,
        "app",
        vec![
            ("usr/bin/python3.11", noise("python 3.11.2", 512 << 10)),
            ("opt/app/app.py", text("print('hello')\n".repeat(300))),
            ("etc/app/app.conf", text("listen = 8080\n")),
        ],
        &[("python3", "3.11.2-1+b1")],
    );
    let db = on(
        &base1,
        "db",
        vec![
            ("usr/sbin/mariadbd", noise("mariadb 10.11.6", 768 << 10)),
            ("etc/mysql/my.cnf", text("[mysqld]\nbind-address = 127.0.0.1\n")),
        ],
        &[("mariadb-server", "1:10.11.6-0+deb12u1")],
    );
    let edge = on(
        &base2,
        "edge",
        vec![("usr/sbin/nginx", noise("nginx 1.22.1-9+deb12u1", 256 << 10))],
        &[("nginx", "1.22.1-9+deb12u1")],
    );
    vec![base1, base2, web1, web2, app, db, edge]
}

/// Builds each image with `mke2fs -d` and checks it in; returns the library and, per
/// `name@version`, the image it was made from.
fn build_library(work: &Path) -> (Library, BTreeMap<String, Image>) {
    let lib = Library::new();
    let mut made = BTreeMap::new();
    let mut versions: BTreeMap<&str, u32> = BTreeMap::new();
    for (i, image) in images().into_iter().enumerate() {
        let root = work.join(format!("tree{i}"));
        tree(&root, &image.files);
        tree(&root, &[("var/lib/dpkg/status", dpkg_status(&image.packages))]);
        let disk = work.join(format!("image{i}.img"));
        mkfs_ext(&root, &disk, "ext4", "16M", &[]);
        lib.checkin(&disk, image.name);
        std::fs::remove_file(&disk).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let v = versions.entry(image.name).or_default();
        *v += 1;
        made.insert(format!("{}@{v}", image.name), image);
    }
    (lib, made)
}

type Row = Map<String, Value>;

/// `name@version`.
fn label(row: &Row) -> String {
    format!("{}@{}", row["name"].as_str().unwrap(), row["version"].as_i64().unwrap())
}

/// What a notebook wrote as `NAME.json` in its plots folder: its rows.
fn numbers(dir: &Path, name: &str) -> Vec<Row> {
    let path = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    rows.into_iter().map(|r| r.as_object().cloned().expect("a JSON object per row")).collect()
}

/// `NAME.png` is a PNG of a plot's size (the signature, an IHDR chunk, at least 200x100).
fn assert_png(dir: &Path, name: &str) {
    let path = dir.join(format!("{name}.png"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() > 1000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR", "{}", path.display());
    let (w, h) =
        (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
    assert!(w >= 200 && h >= 100, "{}: {w}x{h}", path.display());
}

/// A JSON number as i64 (pandas writes nullable integers as floats: 26.0).
fn int(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

/// A timestamp `YYYY-MM-DDTHH:MM:SS[.fraction]Z` to the microsecond (pandas keeps no more).
fn micros(v: &Value) -> String {
    let t = v.as_str().expect("a timestamp");
    let (secs, frac) = t.trim_end_matches('Z').split_once('.').unwrap_or((t.trim_end_matches('Z'), ""));
    format!("{secs}.{:0<6.6}", frac)
}

struct Notebooks {
    python: PathBuf,
    server: Server,
    out: PathBuf,
}

impl Notebooks {
    /// Runs `notebooks/NAME.ipynb` as `user` with `env`; returns its plots folder.
    fn run(&self, name: &str, user: &str, env: &[(&str, &str)]) -> PathBuf {
        let plots = self.out.join(name);
        let password = USERS.iter().find(|u| u.0 == user).unwrap().1;
        let started = Instant::now();
        let mut cmd = Command::new(&self.python);
        cmd.arg(repo_root().join("tests/python/run_notebook.py"))
            .arg(repo_root().join(format!("notebooks/{name}.ipynb")))
            .arg(self.out.join(format!("{name}.ipynb")))
            .env("IMAGELAKE_FLIGHT_URI", &self.server.uri)
            .env("IMAGELAKE_USER", user)
            .env("IMAGELAKE_PASSWORD", password)
            .env("IMAGELAKE_PLOTS", &plots)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        let out = cmd.output().expect("run_notebook.py from the venv");
        println!("{name}: {:.1?}", started.elapsed());
        if !out.status.success() {
            panic!(
                "{name}.ipynb failed ({}):\n{}{}\n--- serve's stderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.server.stderr_text()
            );
        }
        plots
    }
}

#[test]
fn notebooks_against_a_live_server() {
    let python = venv_python();
    let work = tempfile::tempdir().unwrap();
    let (lib, made) = build_library(work.path());
    add_users(&lib, USERS);
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server = Server::start(&lib, &data, None, work.path().join("serve.log"));
    let nb = Notebooks { python, server, out: work.path().join("out") };

    let glance = nb.run("library-at-a-glance", "analyst", &[]);
    check_glance(&lib, &made, &glance);
    let changed = nb.run("what-changed", "analyst", &[("IMAGELAKE_OLD", "web@1"), ("IMAGELAKE_NEW", "web@2")]);
    check_what_changed(&made["web@1"], &made["web@2"], &changed);
    let outdated = outdated(&lib);
    let maintenance = nb.run(
        "maintenance",
        "maintainer",
        &[
            ("IMAGELAKE_PACKAGE", PACKAGE),
            ("IMAGELAKE_BELOW", BELOW),
            ("IMAGELAKE_PATCH_FROM", PATCH_FROM),
            ("IMAGELAKE_PATCH_TO", PATCH_TO),
        ],
    );
    check_maintenance(&lib, &made, &outdated, &maintenance);

    nb.server.stop();
    run(lib.command().arg("check"));
    if std::env::var_os("IMAGELAKE_NOTEBOOKS_KEEP").is_some() {
        println!(
            "kept {} (plots and executed notebooks in out/) and {}",
            work.keep().display(),
            lib.dir.keep().display()
        );
    }
}

/// The library at a glance: sizes, shared bytes, packages and versions per image.
fn check_glance(lib: &Library, made: &BTreeMap<String, Image>, plots: &Path) {
    for plot in ["bytes-per-image", "shared-bytes", "packages-per-image", "versions-over-time"] {
        assert_png(plots, plot);
    }
    let images = lib.sql("SELECT image_id, name, version, virtual_size, stored_bytes_new, created_at FROM images");
    let labels: BTreeSet<String> = images.iter().map(label).collect();
    assert_eq!(labels, made.keys().cloned().collect::<BTreeSet<_>>());
    let by_id: BTreeMap<i64, String> = images.iter().map(|r| (r["image_id"].as_i64().unwrap(), label(r))).collect();
    let extents = lib.sql("SELECT image_id, kind, length, chunk_hash FROM extents");
    let chunks: BTreeMap<String, i64> = lib
        .sql("SELECT chunk_hash, size FROM chunks")
        .iter()
        .map(|r| (r["chunk_hash"].as_str().unwrap().to_string(), r["size"].as_i64().unwrap()))
        .collect();

    // Logical, data and stored bytes per image.
    let mut data: BTreeMap<&str, i64> = BTreeMap::new();
    for e in &extents {
        if e["kind"] != "zero" {
            *data.entry(&by_id[&e["image_id"].as_i64().unwrap()]).or_default() += e["length"].as_i64().unwrap();
        }
    }
    let got: BTreeMap<String, (i64, i64, i64)> = numbers(plots, "bytes-per-image")
        .iter()
        .map(|r| {
            let n = |k: &str| int(&r[k]).unwrap_or_else(|| panic!("{k} in {r:?}"));
            (r["image"].as_str().unwrap().to_string(), (n("logical_bytes"), n("data_bytes"), n("stored_bytes_new")))
        })
        .collect();
    let want: BTreeMap<String, (i64, i64, i64)> = images
        .iter()
        .map(|r| {
            let l = label(r);
            let sizes =
                (r["virtual_size"].as_i64().unwrap(), data[l.as_str()], r["stored_bytes_new"].as_i64().unwrap());
            (l, sizes)
        })
        .collect();
    assert_eq!(got, want, "bytes per image");
    assert!(want.values().all(|(logical, data, _)| *logical == 16 << 20 && *data > 1 << 20 && *data < *logical));

    // Shared bytes of every pair: the chunks both use, each counted once.
    let mut used: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in &extents {
        if let Some(hash) = e.get("chunk_hash").and_then(Value::as_str) {
            used.entry(&by_id[&e["image_id"].as_i64().unwrap()]).or_default().insert(hash);
        }
    }
    let got: BTreeMap<(String, String), i64> = numbers(plots, "shared-bytes")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            ((s("a"), s("b")), int(&r["shared_bytes"]).unwrap())
        })
        .collect();
    let mut want = BTreeMap::new();
    for (a, ca) in &used {
        for (b, cb) in &used {
            let shared: i64 = ca.intersection(cb).map(|h| chunks[*h]).sum();
            if shared > 0 {
                want.insert((a.to_string(), b.to_string()), shared);
            }
        }
    }
    assert_eq!(got, want, "shared bytes per pair");
    // Independently of the catalog: the files two images have alike are shared (libc, sh and,
    // on the same base, libssl and openssl).
    let common = |a: &str, b: &str| -> i64 {
        let files = |i: &str| made[i].files.iter().cloned().collect::<BTreeMap<_, _>>();
        let (fa, fb) = (files(a), files(b));
        fa.iter().filter(|(p, c)| c.len() >= 64 << 10 && fb.get(*p) == Some(c)).map(|(_, c)| c.len() as i64).sum()
    };
    for (a, b) in [("base@1", "web@1"), ("base@1", "base@2"), ("app@1", "db@1"), ("edge@1", "web@2")] {
        assert!(got[&(a.to_string(), b.to_string())] >= common(a, b), "{a} and {b} share less than their files");
    }

    // Packages per image: as many as each image's status file lists.
    let got: BTreeMap<String, i64> = numbers(plots, "packages-per-image")
        .iter()
        .map(|r| (r["image"].as_str().unwrap().to_string(), int(&r["packages"]).unwrap()))
        .collect();
    let want: BTreeMap<String, i64> = made.iter().map(|(l, i)| (l.clone(), i.packages.len() as i64)).collect();
    assert_eq!(got, want, "packages per image");
    let counted = lib.sql("SELECT count(*) AS n FROM packages");
    assert_eq!(counted[0]["n"].as_i64().unwrap(), want.values().sum::<i64>());

    // Versions over time: every version at its creation time.
    let got: BTreeMap<String, String> =
        numbers(plots, "versions-over-time").iter().map(|r| (label(r), micros(&r["created_at"]))).collect();
    let want: BTreeMap<String, String> = images.iter().map(|r| (label(r), micros(&r["created_at"]))).collect();
    assert_eq!(got, want, "versions over time");
}

/// Regular files of an image as built: path -> content (the status file included).
fn contents(image: &Image) -> BTreeMap<String, Vec<u8>> {
    let mut all: BTreeMap<String, Vec<u8>> = image.files.iter().map(|(p, c)| (format!("/{p}"), c.clone())).collect();
    all.insert("/var/lib/dpkg/status".into(), dpkg_status(&image.packages).into_bytes());
    all
}

/// What changed between web@1 and web@2, against how the two trees were made.
fn check_what_changed(old: &Image, new: &Image, plots: &Path) {
    assert_png(plots, "bytes-changed-per-folder");
    let (a, b) = (contents(old), contents(new));
    let mut want_files = BTreeSet::new();
    let mut want_folders: BTreeMap<String, [i64; 3]> = BTreeMap::new();
    for path in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        let (change, bytes, slot) = match (a.get(path), b.get(path)) {
            (None, Some(c)) => ("added", c.len(), 0),
            (Some(c), None) => ("removed", c.len(), 2),
            (Some(x), Some(y)) if x != y => ("modified", y.len(), 1),
            _ => continue,
        };
        let size = |c: Option<&Vec<u8>>| c.map(|c| c.len() as i64);
        want_files.insert((change.to_string(), path.clone(), size(a.get(path)), size(b.get(path))));
        let folder = path.split('/').nth(1).filter(|_| path.matches('/').count() > 1).unwrap_or("");
        want_folders.entry(format!("/{folder}")).or_default()[slot] += bytes as i64;
    }
    let got_files: BTreeSet<_> = numbers(plots, "changed-files")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("change"), s("path"), int(&r["old_size"]), int(&r["new_size"]))
        })
        .collect();
    assert_eq!(got_files, want_files, "changed files");

    let versions =
        |i: &Image| i.packages.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
    let (pa, pb) = (versions(old), versions(new));
    let mut want_packages = BTreeSet::new();
    for name in pa.keys().chain(pb.keys()).collect::<BTreeSet<_>>() {
        let change = match (pa.get(name), pb.get(name)) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            // The versions here grow by appending ("+deb12u1"): longer is newer.
            (Some(x), Some(y)) if x != y => {
                if y.starts_with(x.as_str()) {
                    "upgraded"
                } else {
                    panic!("{name}: {x} -> {y}")
                }
            }
            _ => continue,
        };
        want_packages.insert((change.to_string(), name.clone(), pa.get(name).cloned(), pb.get(name).cloned()));
    }
    let got_packages: BTreeSet<_> = numbers(plots, "changed-packages")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().map(str::to_string);
            (s("change").unwrap(), s("package").unwrap(), s("old_version"), s("new_version"))
        })
        .collect();
    assert_eq!(got_packages, want_packages, "changed packages");
    assert_eq!(want_packages.len(), 2);

    let got_folders: BTreeMap<String, [i64; 3]> = numbers(plots, "bytes-changed-per-folder")
        .iter()
        .map(|r| {
            let n = |k: &str| int(&r[k]).unwrap();
            (r["folder"].as_str().unwrap().to_string(), [n("added"), n("modified"), n("removed")])
        })
        .collect();
    assert_eq!(got_folders, want_folders, "bytes changed per folder ([added, modified, removed])");
    assert_eq!(want_folders.keys().map(String::as_str).collect::<Vec<_>>(), ["/etc", "/srv", "/usr", "/var"]);
}

/// The newest version of each image whose PACKAGE is below BELOW, asked of the library
/// directly (before the maintenance notebook runs): image -> package version.
fn outdated(lib: &Library) -> BTreeMap<String, String> {
    lib.sql(&format!(
        "SELECT i.name, i.version, p.version AS package_version FROM images i JOIN packages p USING (image_id)
         WHERE p.name = '{PACKAGE}' AND version_cmp(p.version, '{BELOW}') < 0
           AND i.version = (SELECT max(version) FROM images j WHERE j.name = i.name)"
    ))
    .iter()
    .map(|r| (label(r), r["package_version"].as_str().unwrap().to_string()))
    .collect()
}

/// The maintenance notebook found the outdated images and patched each into a new version.
fn check_maintenance(lib: &Library, made: &BTreeMap<String, Image>, outdated: &BTreeMap<String, String>, plots: &Path) {
    assert_png(plots, "package-versions");
    let old_ssl = made["base@1"].packages.iter().find(|p| p.0 == PACKAGE).unwrap().1;
    let new_ssl = made["base@2"].packages.iter().find(|p| p.0 == PACKAGE).unwrap().1;
    let want: BTreeMap<String, String> =
        ["app@1", "db@1", "web@2"].iter().map(|i| (i.to_string(), old_ssl.to_string())).collect();
    assert_eq!(outdated, &want, "the library's own answer");
    let got: BTreeMap<String, String> = numbers(plots, "outdated")
        .iter()
        .map(|r| (r["image"].as_str().unwrap().to_string(), r["package_version"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(&got, outdated, "outdated images");

    let patched: BTreeMap<String, String> = numbers(plots, "patched")
        .iter()
        .map(|r| (r["image"].as_str().unwrap().to_string(), r["made"].as_str().unwrap_or("NULL").to_string()))
        .collect();
    let want: BTreeMap<String, String> = [("app@1", "app@2"), ("db@1", "db@2"), ("web@2", "web@3")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(patched, want, "one new version per outdated image");

    // The new versions, as the library has them.
    let images = lib.sql("SELECT image_id, name, version, parent_id FROM images");
    assert_eq!(images.len(), made.len() + patched.len(), "{images:?}");
    let id = |l: &str| {
        images.iter().find(|r| label(r) == l).unwrap_or_else(|| panic!("no {l}"))["image_id"].as_i64().unwrap()
    };
    let libssl = blake3::hash(&contents(&made["base@2"])[LIBSSL]).to_hex().to_string();
    let shown: BTreeMap<String, Row> =
        numbers(plots, "new-versions").into_iter().map(|r| (r["image"].as_str().unwrap().to_string(), r)).collect();
    assert_eq!(shown.keys().collect::<Vec<_>>(), patched.values().collect::<Vec<_>>());
    for (target, new) in &patched {
        let (new_id, target_id) = (id(new), id(target));
        let row = images.iter().find(|r| label(r) == *new).unwrap();
        assert_eq!(row["parent_id"].as_i64(), Some(target_id), "{new}'s parent");
        let prov = lib
            .sql(&format!("SELECT parent_id, operation, arguments, actor FROM provenance WHERE image_id = {new_id}"));
        assert_eq!(prov.len(), 1, "{new}: {prov:?}");
        let p = &prov[0];
        assert_eq!(
            (p["operation"].as_str(), p["actor"].as_str(), p["parent_id"].as_i64()),
            (Some("patch"), Some("maintainer"), Some(target_id))
        );
        let args: Value = serde_json::from_str(p["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(
            (args["target"].as_str(), args["from"].as_str(), args["to"].as_str()),
            (Some(target.as_str()), Some(PATCH_FROM), Some(PATCH_TO)),
            "{args}"
        );
        // Its packages: the target's, with the update's versions of openssl and libssl3.
        let got: BTreeMap<String, String> = lib
            .sql(&format!("SELECT name, version FROM packages WHERE image_id = {new_id}"))
            .iter()
            .map(|r| (r["name"].as_str().unwrap().to_string(), r["version"].as_str().unwrap().to_string()))
            .collect();
        let mut want: BTreeMap<String, String> =
            made[target].packages.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        for (n, v) in &made["base@2"].packages {
            if *n == "openssl" || *n == "libssl3" {
                want.insert(n.to_string(), v.to_string());
            }
        }
        assert_eq!(got, want, "{new}'s packages");
        // Its libssl is the update's, byte for byte.
        let out = output(lib.command().args(["cat", new, LIBSSL]));
        assert_eq!(blake3::hash(&out.stdout).to_hex().to_string(), libssl, "{new}:{LIBSSL}");
        // What the notebook showed of it.
        let s = &shown[new];
        assert_eq!(
            (s["parent"].as_str(), s["actor"].as_str(), s["operation"].as_str(), s["package_version"].as_str()),
            (Some(target.as_str()), Some("maintainer"), Some("patch"), Some(new_ssl)),
            "{s:?}"
        );
    }

    // Before and after: images (newest versions) per package version.
    let got: BTreeMap<String, (i64, i64)> = numbers(plots, "package-versions")
        .iter()
        .map(|r| {
            (
                r["package_version"].as_str().unwrap().to_string(),
                (int(&r["before"]).unwrap(), int(&r["after"]).unwrap()),
            )
        })
        .collect();
    let after = lib.sql(&format!(
        "SELECT p.version, count(*) AS n FROM images i JOIN packages p USING (image_id)
         WHERE p.name = '{PACKAGE}' AND i.version = (SELECT max(version) FROM images j WHERE j.name = i.name)
         GROUP BY p.version"
    ));
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!((after[0]["version"].as_str(), after[0]["n"].as_i64()), (Some(new_ssl), Some(5)));
    let want: BTreeMap<String, (i64, i64)> = [(old_ssl.to_string(), (3, 0)), (new_ssl.to_string(), (2, 5))].into();
    assert_eq!(got, want, "{PACKAGE} versions before and after");
}
