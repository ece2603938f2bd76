//! The mount benchmark: the root filesystem of a corpus image (bench/corpus.sh) browsed through
//! `imagelake mount`, side by side in one run with the limit and the peers:
//!
//! - the kernel's read-only loop mount of the same disk (the limit);
//! - `borg mount` and `restic mount` of archives of the same root tree (made untimed first);
//! - `guestmount` is not run: libguestfs-tools cannot be installed beside this machine's
//!   qemu-utils (Debian 12's libguestfs needs qemu-system-common < 8, which qemu-utils breaks).
//!
//! For each, and each measure, the mount is made afresh after the page cache is dropped
//! (cold): the time until it is ready, `find` printing every entry's metadata, `tar c` of the
//! whole tree, and a sequential read of the largest file; then the peak memory of the process
//! serving it. Peers take turns going first. Runs as root (loop mounts, drop_caches).
//! Run: `cargo build --release --bin imagelake && cargo run --release -p imagelake-bench
//! --bin bench-mount [IMAGE] [ROUNDS]` (IMAGE of the corpus: base, nginx, curl, mariadb,
//! postgresql; mariadb by default).

use imagelake_tests::{Library, cache_dir, repo_root, run, sh};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RESTIC_PASSWORD: &str = "bench";

/// What is measured of one way to mount.
const MEASURES: [&str; 3] = ["find", "tar", "largest"];

/// Mounts the tree on a folder, returning once it is ready with the process serving it when
/// that process stays attached.
type Mount = Box<dyn Fn(&Path) -> Option<Child>>;

/// One way to mount the tree, and where the tree is then below the mount point.
struct Peer {
    name: &'static str,
    mount: Mount,
    /// The root tree's folder below the mount point.
    inside: PathBuf,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn drop_caches() {
    sh("sync; echo 3 > /proc/sys/vm/drop_caches");
}

/// Waits until `dir` is a mount point holding `inside`.
fn wait_mounted(dir: &Path, inside: &Path) {
    let started = Instant::now();
    while !dir.join(inside).join("etc").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "{} never came up", dir.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The peak resident memory of process `pid`, in MiB.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

/// The pid of the newest process whose command line matches `pattern`.
fn pid_of(pattern: &str) -> Option<u32> {
    sh(&format!("pgrep -n -f -- '{pattern}' || true")).trim().parse().ok()
}

fn unmount(dir: &Path) {
    for _ in 0..50 {
        if Command::new("umount").arg(dir).status().is_ok_and(|s| s.success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    run(Command::new("umount").arg("-l").arg(dir));
}

fn main() {
    let image = std::env::args().nth(1).unwrap_or_else(|| "mariadb".into());
    let rounds = std::env::args().nth(2).map_or(3, |r| r.parse::<usize>().expect("ROUNDS is a number")).max(1);
    let corpus =
        PathBuf::from(run(Command::new("bash").arg(repo_root().join("bench/corpus.sh")).arg(cache_dir())).trim());
    let (disk, tree) = (corpus.join(format!("{image}.raw")), corpus.join(format!("{image}.tree")));
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();

    // The library and the peers' archives, untimed.
    let lib = Library::new();
    lib.checkin(&disk, &image);
    let start = lib.sql(&format!(
        "SELECT p.start FROM partitions p JOIN images i USING (image_id) WHERE i.name = '{image}' AND p.fs_type = 'ext4'"
    ))[0]["start"]
        .as_i64()
        .expect("root partition");
    let (borg, restic) = (w.join("borg"), w.join("restic"));
    eprintln!("archiving {} with borg and restic", tree.display());
    run(Command::new("borg").args(["init", "-e", "none"]).arg(&borg));
    run(Command::new("borg").arg("create").arg(format!("{}::root", borg.display())).arg(".").current_dir(&tree));
    run(Command::new("restic").arg("init").arg("--repo").arg(&restic).env("RESTIC_PASSWORD", RESTIC_PASSWORD));
    run(Command::new("restic")
        .args(["backup", "--quiet", "--repo"])
        .arg(&restic)
        .arg(".")
        .current_dir(&tree)
        .env("RESTIC_PASSWORD", RESTIC_PASSWORD));
    // A snapshot of "." shows the tree at its top.
    let restic_inside = PathBuf::from("snapshots/latest");

    let lib_path = lib.path();
    let peers: Vec<Peer> = vec![
        Peer {
            name: "imagelake mount",
            mount: Box::new({
                let (lib_path, image) = (lib_path.clone(), image.clone());
                move |dir| {
                    run(Command::new(imagelake_tests::imagelake_bin())
                        .arg("-L")
                        .arg(&lib_path)
                        .arg("mount")
                        .arg(&image)
                        .arg(dir));
                    None
                }
            }),
            inside: PathBuf::new(),
        },
        Peer {
            name: "kernel loop mount (ro)",
            mount: Box::new({
                let disk = disk.clone();
                move |dir| {
                    run(Command::new("mount").arg("-o").arg(format!("loop,ro,offset={start}")).arg(&disk).arg(dir));
                    None
                }
            }),
            inside: PathBuf::new(),
        },
        Peer {
            name: "borg mount",
            mount: Box::new({
                let borg = borg.clone();
                move |dir| {
                    // borg mount returns once the mount is up, serving it from the background.
                    run(Command::new("borg").arg("mount").arg(format!("{}::root", borg.display())).arg(dir));
                    None
                }
            }),
            inside: PathBuf::new(),
        },
        Peer {
            name: "restic mount",
            mount: Box::new({
                let (restic, inside) = (restic.clone(), restic_inside.clone());
                move |dir| {
                    // restic serves from the foreground: ready once the tree shows.
                    let child = Command::new("restic")
                        .args(["mount", "--repo"])
                        .arg(&restic)
                        .arg(dir)
                        .env("RESTIC_PASSWORD", RESTIC_PASSWORD)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("restic mount");
                    wait_mounted(dir, &inside);
                    Some(child)
                }
            }),
            inside: restic_inside,
        },
    ];

    let largest = sh(&format!(
        "cd '{}' && find . -type f -printf '%s %p\\n' | sort -n | tail -1 | cut -d' ' -f2-",
        tree.display()
    ))
    .trim()
    .to_string();
    let mnt = w.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    // (peer, measure) -> seconds per round; peer -> ready seconds, peak MiB.
    let mut times: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let mut ready: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut memory: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut sizes: BTreeMap<&str, String> = BTreeMap::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let mut order: Vec<&Peer> = peers.iter().collect();
        order.rotate_left(round % peers.len());
        for peer in order {
            for measure in MEASURES {
                drop_caches();
                let started = Instant::now();
                let child = (peer.mount)(&mnt);
                wait_mounted(&mnt, &peer.inside);
                ready.entry(peer.name).or_default().push(started.elapsed().as_secs_f64());
                let root = mnt.join(&peer.inside);
                let r = root.display();
                let script = match measure {
                    "find" => format!("cd '{r}' && find . -printf '%p %y %m %U %G %s %T@ %n %l\\n' | wc -l"),
                    // tar writes to a pipe, so that it reads every file (to /dev/null it
                    // would not).
                    "tar" => format!("cd '{r}' && tar cf - . 2>/dev/null | wc -c"),
                    _ => format!("cat '{r}/{largest}' | wc -c"),
                };
                let started = Instant::now();
                let said = sh(&script).trim().to_string();
                let seconds = started.elapsed().as_secs_f64();
                eprintln!("  {}: {measure} {seconds:.2} s ({said})", peer.name);
                times.entry((peer.name, measure)).or_default().push(seconds);
                sizes.entry(peer.name).or_default();
                if measure == "tar" {
                    sizes.insert(peer.name, said);
                }
                let pid = match &child {
                    Some(c) => Some(c.id()),
                    None => match peer.name {
                        "imagelake mount" => pid_of(&format!("[m]ount {image} {} --foreground", mnt.display())),
                        "borg mount" => pid_of(&format!("[b]org mount {}", borg.display())),
                        _ => None,
                    },
                };
                if let Some(pid) = pid {
                    memory.entry(peer.name).or_default().push(peak_mib(pid));
                }
                unmount(&mnt);
                if let Some(mut child) = child {
                    let _ = child.wait();
                }
            }
        }
    }

    let t = |peer: &str, measure: &str| median(times[&(peer, measure)].clone());
    let (ours, kernel, borg_name, restic_name) =
        ("imagelake mount", "kernel loop mount (ro)", "borg mount", "restic mount");
    println!(
        "Root filesystem of the corpus image `{image}` ({} entries; largest file {largest}); \
         {rounds} rounds, medians, each measure on a fresh mount after the page cache was dropped; release build.\n",
        sh(&format!("find '{}' | wc -l", tree.display())).trim()
    );
    println!(
        "| peer | ready | find, every entry's metadata | tar c, whole tree | largest file, sequential | peak memory | tar bytes |"
    );
    println!("|---|---|---|---|---|---|---|");
    for peer in [ours, kernel, borg_name, restic_name] {
        let mem = memory.get(peer).map_or("(kernel)".to_string(), |m| format!("{:.0} MiB", median(m.clone())));
        println!(
            "| {peer} | {:.3} s | {:.2} s | {:.2} s | {:.2} s | {mem} | {} |",
            median(ready[peer].clone()),
            t(peer, "find"),
            t(peer, "tar"),
            t(peer, "largest"),
            sizes[peer]
        );
    }
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let ready_ours = median(ready[ours].clone());
    let memory_ours = median(memory[ours].clone());
    println!();
    println!("| target | result |");
    println!("|---|---|");
    println!("| ready in under 0.3 s | {ready_ours:.3} s: {} |", verdict(ready_ours < 0.3));
    let vs_kernel = t(ours, "tar") / t(kernel, "tar");
    println!("| `tar c` cold at most 1.5x the kernel's | {vs_kernel:.2}x: {} |", verdict(vs_kernel <= 1.5));
    let vs_borg = t(ours, "tar") / t(borg_name, "tar");
    println!("| `tar c` cold at most 0.2x borg mount's | {vs_borg:.2}x: {} |", verdict(vs_borg <= 0.2));
    println!("| memory under 200 MiB | {memory_ours:.0} MiB: {} |", verdict(memory_ours < 200.0));
    println!(
        "\nOther ratios: find {:.2}x the kernel's, {:.2}x borg's, {:.2}x restic's; largest file {:.2}x the kernel's; tar {:.2}x restic's.",
        t(ours, "find") / t(kernel, "find"),
        t(ours, "find") / t(borg_name, "find"),
        t(ours, "find") / t(restic_name, "find"),
        t(ours, "largest") / t(kernel, "largest"),
        t(ours, "tar") / t(restic_name, "tar"),
    );
}
