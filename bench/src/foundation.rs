//! The foundation benchmark: the end-to-end Debian image (minbase + mariadb-server in a GPT
//! disk) checked in and out by imagelake, next to `qemu-img convert` of the same image, in
//! one run, alternating, several rounds; medians reported.
//!
//! Run: `cargo build --bin imagelake && cargo run -p imagelake-bench --bin bench-foundation [ROUNDS]`

use imagelake_tests::{Library, cache_dir, gpt_disk, mkfs_ext, mkfs_vfat, repo_root, run, run_measured};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed(cmd: &mut Command) -> f64 {
    let started = Instant::now();
    run(cmd);
    started.elapsed().as_secs_f64()
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat").len()
}

/// Bytes in 4 KiB blocks that are not all zero.
fn non_zero_bytes(p: &Path) -> u64 {
    use std::io::Read;
    let mut f = std::fs::File::open(p).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            return total;
        }
        total += buf[..n].chunks(4096).filter(|b| b.iter().any(|&x| x != 0)).map(|b| b.len() as u64).sum::<u64>();
    }
}

fn du(p: &Path) -> u64 {
    let out = run(Command::new("du").arg("-sb").arg(p));
    out.split_whitespace().next().and_then(|n| n.parse().ok()).expect("du")
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let tree = run(Command::new("bash").arg(repo_root().join("tests/images/debian-tree.sh")).arg(cache_dir()));
    let tree = Path::new(tree.trim());
    let work = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| work.path().join(n);
    mkfs_ext(tree, &path("root.img"), "ext4", "1200M", &[]);
    mkfs_vfat(&path("esp.img"), 32 * 1024);
    let disk = path("disk.img");
    gpt_disk(&disk, &path("root.img"), &path("esp.img"));
    let qcow2 = path("disk.qcow2");
    run(Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(&disk).arg(&qcow2));

    let (mut checkin, mut checkout, mut to_raw, mut to_qcow2c) = (vec![], vec![], vec![], vec![]);
    let (mut stored, mut catalog, mut rss_in, mut rss_out) = (0, 0, 0, 0);
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let lib = Library::new();
        let (out, usage) = run_measured(lib.command().arg("checkin").arg(&qcow2).args(["--name", "web", "--json"]));
        checkin.push(usage.wall_seconds);
        rss_in = rss_in.max(usage.max_rss_bytes);
        let summary: serde_json::Value = serde_json::from_str(&out).expect("summary");
        stored = summary["bytes_stored"].as_u64().expect("stored");
        catalog = du(&lib.path().join("catalog"));
        let (_, usage) = run_measured(lib.command().args(["checkout", "web"]).arg(path("out.raw")));
        checkout.push(usage.wall_seconds);
        rss_out = rss_out.max(usage.max_rss_bytes);
        std::fs::remove_file(path("out.raw")).expect("rm");
        to_raw.push(timed(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&qcow2).arg(path("q.raw"))));
        std::fs::remove_file(path("q.raw")).expect("rm");
        to_qcow2c.push(timed(
            Command::new("qemu-img").args(["convert", "-c", "-O", "qcow2"]).arg(&disk).arg(path("c.qcow2")),
        ));
    }
    let (ci, co, raw, qc) = (median(checkin), median(checkout), median(to_raw), median(to_qcow2c));
    println!("| what | figure |\n|---|---|");
    println!("| raw disk size | {} |", mib(size(&disk)));
    println!("| non-zero bytes (4 KiB blocks) | {} |", mib(non_zero_bytes(&disk)));
    println!("| imagelake stored bytes (packs) | {} |", mib(stored));
    println!("| imagelake catalog (Lance tables) | {} |", mib(catalog));
    println!("| `qemu-img convert -c -O qcow2` size | {} |", mib(size(&path("c.qcow2"))));
    println!("| `qemu-img convert -O qcow2` size (the checkin input) | {} |", mib(size(&qcow2)));
    println!("| imagelake checkin of the qcow2, median of {rounds} | {ci:.2} s (peak RSS {}) |", mib(rss_in));
    println!("| imagelake checkout to raw, median | {co:.2} s (peak RSS {}) |", mib(rss_out));
    println!("| `qemu-img convert -O raw` of the qcow2, median | {raw:.2} s |");
    println!("| `qemu-img convert -c -O qcow2` of the raw disk, median | {qc:.2} s |");
    println!("| ratio checkin / `convert -c` | {:.2} |", ci / qc);
    println!("| ratio checkout / `convert -O raw` | {:.2} |", co / raw);
}
