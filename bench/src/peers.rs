//! The peers benchmark: the five-image Debian corpus (`bench/corpus.sh`: minbase; +nginx-light;
//! +nginx-light, curl, ca-certificates; +mariadb-server; +postgresql, each a GPT disk) stored
//! and written back by imagelake and by its peers on the same inputs, in one run, alternating
//! tool by tool and image by image, several rounds (each with fresh stores); medians reported
//! with the ratio imagelake / peer.
//!
//! - imagelake: `checkin` of each raw disk, `checkout` of each back to a raw disk;
//! - borg: `create --compression zstd,3` of each raw disk, `extract --sparse`;
//! - casync: `make` of each raw disk (a blob index), `extract`;
//! - OSTree: `commit` of each root tree (without its device nodes, which OSTree does not
//!   keep) into an `archive` repository: it keeps trees only, where the others keep whole
//!   byte-exact disks.
//!
//! Every output of the first round is compared with its original by `cmp`.
//!
//! Run: `cargo build --release --bin imagelake && cargo run --release -p imagelake-bench --bin bench-peers [ROUNDS]`

use imagelake_tests::{Library, assert_same_bytes, cache_dir, repo_root, run, run_measured};
use std::path::{Path, PathBuf};
use std::process::Command;

const IMAGES: [&str; 5] = ["base", "nginx", "curl", "mariadb", "postgresql"];
const TOOLS: [&str; 4] = ["imagelake", "borg", "casync", "ostree"];

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mib(n: u64) -> String {
    format!("{:.0} MiB", n as f64 / (1u64 << 20) as f64)
}

/// A peer's command, with the environment borg needs to run unattended on a plain repository.
fn peer(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes").env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes");
    cmd
}

fn du(p: &Path) -> u64 {
    run(Command::new("du").arg("-sb").arg(p)).split_whitespace().next().and_then(|n| n.parse().ok()).expect("du")
}

/// What one tool did in one round: wall seconds of storing and of writing back the five, the
/// peak memory of any one of its processes, and its store's size.
#[derive(Default, Clone)]
struct Round {
    store: f64,
    restore: f64,
    peak: u64,
    bytes: u64,
}

/// The stores of one round, in a fresh folder.
struct Stores {
    dir: tempfile::TempDir,
    lib: Library,
}

impl Stores {
    fn new() -> Stores {
        let dir = tempfile::tempdir().expect("tempdir");
        run(peer("borg").args(["init", "--encryption=none"]).arg(dir.path().join("borg")));
        std::fs::create_dir(dir.path().join("casync")).expect("mkdir");
        run(Command::new("ostree")
            .arg(format!("--repo={}", dir.path().join("ostree").display()))
            .args(["init", "--mode=archive"]));
        Stores { dir, lib: Library::new() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The command that stores image `name` with `tool`.
    fn store(&self, tool: &str, corpus: &Path, name: &str) -> Command {
        let disk = corpus.join(format!("{name}.raw"));
        match tool {
            "imagelake" => {
                let mut c = self.lib.command();
                c.arg("checkin").arg(disk).args(["--name", name, "--json"]);
                c
            }
            "borg" => {
                let mut c = peer("borg");
                c.current_dir(corpus)
                    .args(["create", "--compression", "zstd,3"])
                    .arg(format!("{}::{name}", self.path("borg").display()))
                    .arg(format!("{name}.raw"));
                c
            }
            "casync" => {
                let mut c = peer("casync");
                c.arg("make")
                    .arg(format!("--store={}", self.path("casync").display()))
                    .arg(self.path(&format!("{name}.caibx")))
                    .arg(disk);
                c
            }
            _ => {
                let mut c = Command::new("ostree");
                c.arg(format!("--repo={}", self.path("ostree").display()))
                    .args(["commit", "--branch", name])
                    .arg(format!("--tree=dir={}", corpus.join(format!("{name}.ostree-tree")).display()));
                c
            }
        }
    }

    /// The command that writes image `name` back as the raw disk `out` (OSTree has no disk).
    fn restore(&self, tool: &str, name: &str, out: &Path) -> Option<Command> {
        match tool {
            "imagelake" => {
                let mut c = self.lib.command();
                c.args(["checkout", name]).arg(out).arg("--json");
                Some(c)
            }
            "borg" => {
                let mut c = peer("borg");
                c.current_dir(out.parent().expect("folder"))
                    .args(["extract", "--sparse"])
                    .arg(format!("{}::{name}", self.path("borg").display()));
                Some(c)
            }
            "casync" => {
                let mut c = peer("casync");
                c.arg("extract")
                    .arg(format!("--store={}", self.path("casync").display()))
                    .arg(self.path(&format!("{name}.caibx")))
                    .arg(out);
                Some(c)
            }
            _ => None,
        }
    }

    fn size(&self, tool: &str) -> u64 {
        match tool {
            "imagelake" => du(&self.lib.path()),
            "casync" => {
                du(&self.path("casync")) + IMAGES.iter().map(|n| du(&self.path(&format!("{n}.caibx")))).sum::<u64>()
            }
            other => du(&self.path(other)),
        }
    }
}

fn main() {
    let rounds = std::env::args().nth(1).map_or(3, |r| r.parse::<usize>().expect("ROUNDS is a number")).max(1);
    let corpus =
        PathBuf::from(run(Command::new("bash").arg(repo_root().join("bench/corpus.sh")).arg(cache_dir())).trim());
    let disk = |name: &str| corpus.join(format!("{name}.raw"));
    let raw_total: u64 = IMAGES.iter().map(|n| std::fs::metadata(disk(n)).expect("disk").len()).sum();
    let tree_total: u64 = IMAGES.iter().map(|n| du(&corpus.join(format!("{n}.tree")))).sum();
    let out_dir = tempfile::tempdir().expect("tempdir");

    let mut results: Vec<Vec<Round>> = vec![Vec::new(); TOOLS.len()];
    // imagelake after `imagelake repack`: `store` is the repack's time, `restore` the five
    // checkouts from the repacked store.
    let mut repacked: Vec<Round> = Vec::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let stores = Stores::new();
        let mut this = vec![Round::default(); TOOLS.len()];
        for name in IMAGES {
            for (t, tool) in TOOLS.iter().enumerate() {
                let (_, usage) = run_measured(&mut stores.store(tool, &corpus, name));
                this[t].store += usage.wall_seconds;
                this[t].peak = this[t].peak.max(usage.max_rss_bytes);
            }
        }
        for name in IMAGES {
            let out = out_dir.path().join(format!("{name}.raw"));
            for (t, tool) in TOOLS.iter().enumerate() {
                let Some(mut cmd) = stores.restore(tool, name, &out) else { continue };
                let _ = std::fs::remove_file(&out);
                let (_, usage) = run_measured(&mut cmd);
                this[t].restore += usage.wall_seconds;
                this[t].peak = this[t].peak.max(usage.max_rss_bytes);
                if round == 0 {
                    assert_same_bytes(&disk(name), &out);
                }
            }
            let _ = std::fs::remove_file(&out);
        }
        for (t, tool) in TOOLS.iter().enumerate() {
            this[t].bytes = stores.size(tool);
            results[t].push(this[t].clone());
        }
        let (_, usage) = run_measured(stores.lib.command().args(["repack", "--json"]));
        let mut after = Round { store: usage.wall_seconds, peak: usage.max_rss_bytes, ..Round::default() };
        after.bytes = stores.size("imagelake");
        for name in IMAGES {
            let out = out_dir.path().join(format!("{name}.raw"));
            let _ = std::fs::remove_file(&out);
            let (_, usage) = run_measured(&mut stores.restore("imagelake", name, &out).expect("imagelake restores"));
            after.restore += usage.wall_seconds;
            after.peak = after.peak.max(usage.max_rss_bytes);
            if round == 0 {
                assert_same_bytes(&disk(name), &out);
            }
            let _ = std::fs::remove_file(&out);
        }
        repacked.push(after);
    }

    println!(
        "Corpus: {} ({} of raw disks; {} of root trees, which OSTree stores).\n",
        IMAGES.join(", "),
        mib(raw_total),
        mib(tree_total)
    );
    println!("{rounds} rounds, each with fresh stores; medians; ratios are imagelake / tool.\n");
    println!(
        "| tool | stored bytes | ratio | storing the five | ratio | writing the five back | ratio | peak memory | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    type Measure = fn(&Round) -> f64;
    let stat = |t: usize, f: Measure| median(&results[t].iter().map(f).collect::<Vec<_>>());
    let bytes: Measure = |r| r.bytes as f64;
    let store: Measure = |r| r.store;
    let restore: Measure = |r| r.restore;
    let peak: Measure = |r| r.peak as f64;
    for (t, tool) in TOOLS.iter().enumerate() {
        let ratio = |f: Measure| {
            let theirs = stat(t, f);
            if t == 0 || theirs == 0.0 { "".to_string() } else { format!("**{:.2}x**", stat(0, f) / theirs) }
        };
        let restored =
            if *tool == "ostree" { "(trees only)".to_string() } else { format!("{:.2} s", stat(t, restore)) };
        println!(
            "| {tool} | {} | {} | {:.2} s | {} | {restored} | {} | {} | {} |",
            mib(stat(t, bytes) as u64),
            ratio(bytes),
            stat(t, store),
            ratio(store),
            if *tool == "ostree" { String::new() } else { ratio(restore) },
            mib(stat(t, peak) as u64),
            ratio(peak),
        );
    }

    let after = |f: Measure| median(&repacked.iter().map(f).collect::<Vec<_>>());
    let versus = |t: usize, f: Measure| format!("**{:.2}x**", after(f) / stat(t, f));
    let (borg, casync, ostree) = (1, 2, 3);
    println!(
        "\nAfter `imagelake repack` ({:.1} s, peak memory {}), same rounds:\n",
        after(store),
        mib(after(peak) as u64)
    );
    println!("| | stored bytes | vs OSTree | vs borg | vs casync | writing the five back | vs borg extract |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| imagelake, repacked | {} | {} | {} | {} | {:.2} s | {} |",
        mib(after(bytes) as u64),
        versus(ostree, bytes),
        versus(borg, bytes),
        versus(casync, bytes),
        after(restore),
        versus(borg, restore),
    );
}
