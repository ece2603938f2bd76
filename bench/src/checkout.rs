//! The checkout benchmark: full raw checkout of the five-image Debian corpus
//! (`bench/corpus.sh`: minbase; +nginx-light; +curl; +mariadb; +postgresql, each a GPT disk)
//! by imagelake, next to `borg extract` and `casync extract` of the same disks, in one run,
//! alternating tool by tool and image by image, several rounds; medians reported. Every
//! output of the first round is compared with its original by `cmp`.
//!
//! Run: `cargo build --release --bin imagelake && cargo run --release -p imagelake-bench --bin bench-checkout [ROUNDS]`

use imagelake_tests::{Library, assert_same_bytes, cache_dir, repo_root, run, run_measured};
use std::path::{Path, PathBuf};
use std::process::Command;

const IMAGES: [&str; 5] = ["base", "nginx", "curl", "mariadb", "postgresql"];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn gib(n: u64) -> String {
    format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
}

/// A peer's command with the environment borg needs to run unattended on a plain repository.
fn peer(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes").env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes");
    cmd
}

/// Runs `cmd`, returning (wall seconds, peak RSS bytes).
fn measured(cmd: &mut Command) -> (f64, u64) {
    let (_, usage) = run_measured(cmd);
    (usage.wall_seconds, usage.max_rss_bytes)
}

fn main() {
    let rounds = std::env::args().nth(1).map_or(3, |r| r.parse::<usize>().expect("ROUNDS is a number")).max(1);
    let corpus =
        PathBuf::from(run(Command::new("bash").arg(repo_root().join("bench/corpus.sh")).arg(cache_dir())).trim());
    let disk = |name: &str| corpus.join(format!("{name}.raw"));
    let work = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| work.path().join(n);
    let total: u64 = IMAGES.iter().map(|n| std::fs::metadata(disk(n)).expect("disk").len()).sum();

    // Stores: each tool takes in the five disks once.
    let lib = Library::new();
    let (borg, casync) = (path("borg"), path("casync"));
    run(peer("borg").args(["init", "--encryption=none"]).arg(&borg));
    std::fs::create_dir(&casync).expect("mkdir");
    let mut checkin = [0.0f64; 3];
    for name in IMAGES {
        eprintln!("storing {name}");
        checkin[0] += measured(lib.command().arg("checkin").arg(disk(name)).args(["--name", name, "--json"])).0;
        let archive = format!("{}::{name}", borg.display());
        checkin[1] += measured(
            peer("borg")
                .current_dir(&corpus)
                .args(["create", "--compression", "zstd,3"])
                .arg(&archive)
                .arg(format!("{name}.raw")),
        )
        .0;
        checkin[2] += measured(
            peer("casync")
                .arg("make")
                .arg(format!("--store={}", casync.display()))
                .arg(path(&format!("{name}.caibx")))
                .arg(disk(name)),
        )
        .0;
    }

    // Checkouts, alternating: per round, the five images' total wall time per tool.
    let out = path("out");
    std::fs::create_dir(&out).expect("mkdir");
    let target = |name: &str| out.join(format!("{name}.raw"));
    let mut walls = [Vec::new(), Vec::new(), Vec::new()];
    let mut peaks = [0u64; 3];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let mut sums = [0.0f64; 3];
        for name in IMAGES {
            let runs: [Box<dyn Fn() -> Command>; 3] = [
                Box::new(|| {
                    let mut c = lib.command();
                    c.args(["checkout", name]).arg(target(name)).arg("--json");
                    c
                }),
                Box::new(|| {
                    let mut c = peer("borg");
                    c.current_dir(&out).args(["extract", "--sparse"]).arg(format!("{}::{name}", borg.display()));
                    c
                }),
                Box::new(|| {
                    let mut c = peer("casync");
                    c.arg("extract")
                        .arg(format!("--store={}", casync.display()))
                        .arg(path(&format!("{name}.caibx")))
                        .arg(target(name));
                    c
                }),
            ];
            for (tool, make) in runs.iter().enumerate() {
                let _ = std::fs::remove_file(target(name));
                let (wall, peak) = measured(&mut make());
                sums[tool] += wall;
                peaks[tool] = peaks[tool].max(peak);
                if round == 0 {
                    assert_same_bytes(&disk(name), &target(name));
                }
            }
            let _ = std::fs::remove_file(target(name));
        }
        for (tool, sum) in sums.iter().enumerate() {
            walls[tool].push(*sum);
        }
    }

    let stored =
        |p: &Path| run(Command::new("du").arg("-sb").arg(p)).split_whitespace().next().unwrap().parse::<u64>().unwrap();
    println!("Corpus: {} images, {} of raw disks ({}).\n", IMAGES.len(), gib(total), IMAGES.join(", "));
    println!("{rounds} rounds; per round each tool checks out all five disks, alternating image by image.\n");
    println!(
        "| tool | checkout of the five (median) | ratio imagelake/tool | peak memory | store on disk | store-in of the five |"
    );
    println!("|---|---|---|---|---|---|");
    let ours = median(&mut walls[0].clone());
    for (tool, label) in ["imagelake checkout", "borg extract --sparse", "casync extract"].iter().enumerate() {
        let m = median(&mut walls[tool]);
        let store = match tool {
            0 => stored(&lib.path()),
            1 => stored(&borg),
            _ => stored(&casync),
        };
        println!(
            "| {label} | {m:.2} s | {:.2}x | {} MiB | {} | {:.1} s |",
            ours / m,
            peaks[tool] >> 20,
            gib(store),
            checkin[tool]
        );
    }
}
