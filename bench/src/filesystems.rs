//! The filesystems benchmark: one Debian root tree (a corpus image's, `bench/corpus.sh`) on
//! ext4 (`mke2fs -d`), XFS (`mkfs.xfs`, filled through a loop mount) and btrfs (`mkfs.btrfs
//! --rootdir`), each the root of a GPT disk of the same size; each disk stored and written back
//! by imagelake (a fresh library per disk) and by borg (`create --compression zstd,3`,
//! `extract --sparse`), in one run, the tools taking turns, several rounds; medians. Then the
//! three disks checked in one after the other into one library, to show what each adds when
//! the same files are already stored.
//!
//! Every disk written back in the first round is compared with its original by `cmp`.
//!
//! Run: `cargo build --release --bin imagelake && cargo run --release -p imagelake-bench --bin bench-filesystems [IMAGE] [ROUNDS]`

use imagelake_tests::{
    Library, assert_same_bytes, cache_dir, gpt_disk, mkfs_ext, mkfs_vfat, repo_root, run, run_measured, sh,
};
use std::path::Path;
use std::process::Command;

const FILESYSTEMS: [&str; 3] = ["ext4", "xfs", "btrfs"];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

fn du(p: &Path) -> u64 {
    run(Command::new("du").arg("-sb").arg(p)).split_whitespace().next().and_then(|n| n.parse().ok()).expect("du")
}

fn borg() -> Command {
    let mut cmd = Command::new("borg");
    cmd.env("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes").env("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes");
    cmd
}

/// The root filesystem `fs` of `size_mb` MiB holding `tree`, at `out`.
fn root_filesystem(fs: &str, tree: &Path, out: &Path, size_mb: u64) {
    match fs {
        "ext4" => mkfs_ext(tree, out, "ext4", &format!("{size_mb}M"), &[]),
        "xfs" => {
            run(Command::new("truncate").arg(format!("-s{size_mb}M")).arg(out));
            run(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(out));
            let mnt = out.with_extension("mnt");
            std::fs::create_dir_all(&mnt).expect("mkdir");
            run(Command::new("mount").arg("-o").arg("loop").arg(out).arg(&mnt));
            let copied = Command::new("cp").arg("-a").arg(format!("{}/.", tree.display())).arg(&mnt).status();
            run(Command::new("umount").arg(&mnt));
            assert!(copied.expect("cp").success(), "copying the tree into XFS");
        }
        _ => {
            run(Command::new("truncate").arg(format!("-s{size_mb}M")).arg(out));
            run(Command::new("mkfs.btrfs").args(["-q", "-f", "--rootdir"]).arg(tree).arg(out));
        }
    }
}

#[derive(Default)]
struct Figures {
    checkin: Vec<f64>,
    checkout: Vec<f64>,
    stored: u64,
    borg_create: Vec<f64>,
    borg_extract: Vec<f64>,
    borg_stored: u64,
}

fn main() {
    let image = std::env::args().nth(1).unwrap_or_else(|| "mariadb".into());
    let rounds = std::env::args().nth(2).map_or(3, |r| r.parse::<usize>().expect("ROUNDS is a number")).max(1);
    let corpus = std::path::PathBuf::from(
        run(Command::new("bash").arg(repo_root().join("bench/corpus.sh")).arg(cache_dir())).trim(),
    );
    let tree = corpus.join(format!("{image}.tree"));
    let work = tempfile::tempdir().expect("tempdir");
    let w = |n: &str| work.path().join(n);

    // The three disks, untimed: the same tree, the same sizes.
    let used: u64 = sh(&format!("du -sm '{}' | cut -f1", tree.display())).trim().parse().expect("size");
    let size_mb = (used + used / 2 + 128).max(320);
    mkfs_vfat(&w("esp.img"), 8192);
    for fs in FILESYSTEMS {
        eprintln!("making the {fs} disk");
        root_filesystem(fs, &tree, &w(&format!("{fs}.root")), size_mb);
        gpt_disk(&w(&format!("{fs}.raw")), &w(&format!("{fs}.root")), &w("esp.img"));
        std::fs::remove_file(w(&format!("{fs}.root"))).expect("rm");
    }

    let mut figures: Vec<Figures> = FILESYSTEMS.iter().map(|_| Figures::default()).collect();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (i, fs) in FILESYSTEMS.iter().enumerate() {
            let disk = w(&format!("{fs}.raw"));
            let out = w("out.raw");
            let f = &mut figures[i];
            // imagelake, in a library of its own.
            let lib = Library::new();
            let (_, usage) = run_measured(lib.command().arg("checkin").arg(&disk).args(["--name", fs, "--json"]));
            f.checkin.push(usage.wall_seconds);
            let _ = std::fs::remove_file(&out);
            let (_, usage) = run_measured(lib.command().args(["checkout", fs]).arg(&out).arg("--json"));
            f.checkout.push(usage.wall_seconds);
            if round == 0 {
                assert_same_bytes(&disk, &out);
            }
            f.stored = du(&lib.path());
            // borg, in a repository of its own.
            let repo = w("borg");
            let _ = std::fs::remove_dir_all(&repo);
            run(borg().args(["init", "--encryption=none"]).arg(&repo));
            let (_, usage) = run_measured(
                borg()
                    .current_dir(work.path())
                    .args(["create", "--compression", "zstd,3"])
                    .arg(format!("{}::{fs}", repo.display()))
                    .arg(format!("{fs}.raw")),
            );
            f.borg_create.push(usage.wall_seconds);
            let extracted = w("extract");
            let _ = std::fs::remove_dir_all(&extracted);
            std::fs::create_dir(&extracted).expect("mkdir");
            let (_, usage) = run_measured(
                borg().current_dir(&extracted).args(["extract", "--sparse"]).arg(format!("{}::{fs}", repo.display())),
            );
            f.borg_extract.push(usage.wall_seconds);
            if round == 0 {
                assert_same_bytes(&disk, &extracted.join(format!("{fs}.raw")));
            }
            f.borg_stored = du(&repo);
            std::fs::remove_dir_all(&extracted).expect("rm");
        }
    }

    // One library, the three one after the other.
    let lib = Library::new();
    let mut shared = Vec::new();
    for fs in FILESYSTEMS {
        let summary = lib.checkin(&w(&format!("{fs}.raw")), fs);
        let n = |k: &str| summary[k].as_u64().expect(k);
        shared.push((fs, n("bytes_new"), n("bytes_new_content"), n("files")));
    }

    let disk_size = std::fs::metadata(w("ext4.raw")).expect("disk").len();
    println!(
        "\nThe `{image}` root tree ({} MiB by du) on each filesystem, in a GPT disk of {}; {rounds} rounds, medians:\n",
        used,
        mib(disk_size)
    );
    println!(
        "| root filesystem | imagelake checkin | borg create | ratio | imagelake checkout | borg extract | ratio | imagelake stored | borg stored |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (fs, f) in FILESYSTEMS.iter().zip(&figures) {
        let (ci, bc) = (median(f.checkin.clone()), median(f.borg_create.clone()));
        let (co, be) = (median(f.checkout.clone()), median(f.borg_extract.clone()));
        println!(
            "| {fs} | {ci:.2} s | {bc:.2} s | {:.2}x | {co:.2} s | {be:.2} s | {:.2}x | {} | {} |",
            ci / bc,
            co / be,
            mib(f.stored),
            mib(f.borg_stored)
        );
    }
    println!("\nThe three checked in one after the other into one library:\n");
    println!("| checkin | files indexed | new bytes | of them file contents | of them metadata and free space |");
    println!("|---|---|---|---|---|");
    for (fs, new, content, files) in shared {
        println!("| {fs} | {files} | {} | {} | {} |", mib(new), mib(content), mib(new - content));
    }
}
