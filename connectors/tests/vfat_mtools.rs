//! The vfat reader against real images: FAT12, FAT16 and FAT32 volumes made with mkfs.fat and
//! filled with mtools, checked file by file against the source tree, against mtools (`mdir`
//! for on-disk order, `mshowfat` for cluster chains, `minfo` for the geometry), against blkid
//! (label and serial) and against the raw image bytes at every extent. Then robustness:
//! randomly corrupted images and crafted loops and cycles must give Ok or Err, never a panic
//! or a hang.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imagelake_connectors::ReadAt;
use imagelake_connectors::vfat::{self, Extent, FileKind, Filesystem};
use imagelake_tests::corrupt::{Xorshift, bounded, corrupt_rounds};
use imagelake_tests::output as run;

// ---------------------------------------------------------------------------------------------
// Helpers

/// An mtools command on `img`: UTC (FAT stores local time), UTF-8 names, no config checks.
fn mtools(tool: &str, img: &Path) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("MTOOLS_SKIP_CHECK", "1").env("TZ", "UTC").env("LC_ALL", "C.UTF-8").arg("-i").arg(img);
    cmd
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// Images

struct Variant {
    name: &'static str,
    mkfs: &'static [&'static str],
    mib: u64,
    /// `mkfs.fat -n`.
    label: Option<&'static str>,
    /// `mlabel` afterwards.
    relabel: Option<&'static str>,
    big: usize,
}

const FAT12: Variant = Variant {
    name: "FAT12",
    mkfs: &["-F", "12", "-s", "8"],
    mib: 8,
    label: Some("ESP12"),
    relabel: None,
    big: 5 << 19,
};
const FAT16: Variant =
    Variant { name: "FAT16", mkfs: &["-F", "16", "-s", "4"], mib: 32, label: None, relabel: None, big: 3 << 20 };
/// mtools takes the FAT type from the cluster count, so FAT32 needs at least 65525 clusters:
/// 1 KiB clusters need 128 MiB.
const FAT32: Variant = Variant {
    name: "FAT32",
    mkfs: &["-F", "32", "-s", "2"],
    mib: 128,
    label: Some("EFI"),
    relabel: Some("NewLabel"),
    big: 3 << 20,
};
const FAT32_SMALL_CLUSTERS: Variant = Variant {
    name: "FAT32, 512-byte clusters",
    mkfs: &["-F", "32", "-s", "1"],
    mib: 64,
    label: Some("SMALL"),
    relabel: None,
    big: 3 << 20,
};
/// 4096-byte sectors: mtools needs FAT32's minimum cluster count for them, hence the size
/// (a sparse file).
const FAT32_4K_SECTORS: Variant = Variant {
    name: "FAT32, 4096-byte sectors",
    mkfs: &["-F", "32", "-S", "4096", "-s", "1"],
    mib: 260,
    label: Some("FOURK"),
    relabel: None,
    big: 3 << 20,
};

const DEPTH: usize = 10;
const BIG_DIR_ENTRIES: usize = 120;
const FIRST_MTIME: i64 = 1_600_000_000;

/// An image built from a source tree, in a scratch directory.
struct Built {
    _dir: tempfile::TempDir,
    src: PathBuf,
    img: PathBuf,
    geo: Geometry,
    /// Around the time the image was filled: directories made by `mmd` carry it.
    made: (i64, i64),
}

/// The source tree, with `cs` the cluster size. Returns the content of the file that is
/// written and deleted to leave a hole in the fragmentation test.
fn build_source(root: &Path, cs: usize, big: usize) -> Vec<u8> {
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let write = |rel: &str, data: &[u8]| {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    };
    write("EFI/BOOT/BOOTX64.EFI", &rng.bytes(big));
    let deep: String = (1..DEPTH).map(|i| format!("level{i}/")).collect();
    write(&format!("deep/{deep}bottom.txt"), b"at the bottom\n");
    write("Überprüfung.txt", "Prüfung bestanden\n".as_bytes());
    write("A Long File Name With Spaces.data", &rng.bytes(3000));
    write("MixedCase.Txt", b"mixed\n");
    // Short names in lower case take the NT case bits rather than a long name.
    write("lower.txt", b"lower\n");
    write("lowbase.TXT", b"lower base\n");
    write("BASE.low", b"lower extension\n");
    write("UPPER.TXT", b"upper\n");
    write("sizes/empty", b"");
    write("sizes/one", b"1");
    write("sizes/cluster", &rng.bytes(cs));
    write("sizes/cluster_plus_one", &rng.bytes(cs + 1));
    write("sizes/two_clusters_less_one", &rng.bytes(2 * cs - 1));
    for i in 0..BIG_DIR_ENTRIES {
        let len = (i * 997) % (2 * cs + 1);
        write(&format!("big_dir/entry number {i:03} with a long name.txt"), &rng.bytes(len));
    }
    write("readonly.txt", b"do not write\n");
    write("rodir/inside.txt", b"in a read-only directory\n");
    write("frag/b.bin", &rng.bytes(2 * cs + 100));
    write("frag/c.bin", &rng.bytes(8 * cs + 5));
    // Distinct even mtimes (FAT keeps 2-second steps), in path order.
    let mut files: Vec<PathBuf> = walk_source(root).into_values().filter(|p| p.is_file()).collect();
    files.sort();
    for (i, path) in files.iter().enumerate() {
        let mtime = UNIX_EPOCH + Duration::from_secs((FIRST_MTIME + 2 * i as i64) as u64);
        fs::File::options().write(true).open(path).unwrap().set_modified(mtime).unwrap();
    }
    rng.bytes(3 * cs + 7)
}

/// Listing path ("/a/b") to the real path, for everything under `root`.
fn walk_source(root: &Path) -> HashMap<String, PathBuf> {
    let mut out = HashMap::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((path, dir)) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let child = format!("{path}/{}", entry.file_name().to_str().unwrap());
            if entry.file_type().unwrap().is_dir() {
                stack.push((child.clone(), entry.path()));
            }
            out.insert(child, entry.path());
        }
    }
    out
}

/// Copies the tree under `dir` (listing path `at`) into the image: files in name order with
/// one `mcopy`, then each subdirectory.
fn populate(img: &Path, src: &Path, at: &str) {
    let dir = src.join(at.trim_start_matches('/'));
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    let files: Vec<&PathBuf> = entries.iter().filter(|p| p.is_file()).collect();
    if !files.is_empty() {
        run(mtools("mcopy", img).arg("-m").args(&files).arg(format!("::{at}/")));
    }
    for sub in entries.iter().filter(|p| p.is_dir()) {
        let name = sub.file_name().unwrap().to_str().unwrap();
        let path = format!("{at}/{name}");
        // Made out of line: see `build`.
        if path == "/frag" {
            continue;
        }
        run(mtools("mmd", img).arg(format!("::{path}")));
        populate(img, src, &path);
    }
}

fn build(variant: &Variant) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let img = dir.path().join("fs.img");
    fs::File::create(&img).unwrap().set_len(variant.mib << 20).unwrap();
    let mut mkfs = Command::new("mkfs.fat");
    mkfs.args(variant.mkfs).args(["-i", "1234ABCD"]);
    if let Some(label) = variant.label {
        mkfs.args(["-n", label]);
    }
    run(mkfs.arg(&img));
    let geo = Geometry::read(&img);
    let cs = geo.cluster_size() as usize;
    let hole = build_source(&src, cs, variant.big);
    let started = now();

    // Fragmentation: a, then b, then a deleted; c, larger than a, fills a's hole and goes on
    // after b. FAT32 keeps a next-free hint in the FSInfo sector that would send c past b:
    // mark it unknown (0xFFFFFFFF) so that the search starts over.
    run(mtools("mmd", &img).arg("::/frag"));
    fs::write(dir.path().join("a.bin"), hole).unwrap();
    run(mtools("mcopy", &img).arg(dir.path().join("a.bin")).arg("::/frag/"));
    run(mtools("mcopy", &img).arg("-m").arg(src.join("frag/b.bin")).arg("::/frag/"));
    run(mtools("mdel", &img).arg("::/frag/a.bin"));
    if let Some(info_sector) = geo.info_sector {
        let image = fs::File::options().write(true).open(&img).unwrap();
        image.write_all_at(&[0xFF; 4], info_sector * geo.sector + 492).unwrap();
    }
    run(mtools("mcopy", &img).arg("-m").arg(src.join("frag/c.bin")).arg("::/frag/"));

    populate(&img, &src, "");
    run(mtools("mattrib", &img).args(["+r", "::/readonly.txt", "::/rodir"]));
    if let Some(label) = variant.relabel {
        run(mtools("mlabel", &img).arg(format!("::{label}")));
    }
    let made = (started, now());
    let fsck = Command::new("fsck.fat").arg("-n").arg(&img).output().unwrap();
    let report = String::from_utf8_lossy(&fsck.stdout);
    // mlabel writes the boot sector's label as typed and the root entry's in upper case,
    // which fsck.fat notes (exit status 1); anything else is a broken fixture.
    let noted = report
        .lines()
        .filter(|l| !l.starts_with("fsck.fat") && !l.contains("fs.img:"))
        .filter(|l| !l.contains("label") && !l.contains("Leaving filesystem unchanged"))
        .filter(|l| !l.trim().is_empty())
        .count();
    assert!(
        noted == 0 && (fsck.status.success() || variant.relabel.is_some() && fsck.status.code() == Some(1)),
        "{}: fsck.fat -n: {report}",
        variant.name
    );
    Built { _dir: dir, src, img, geo, made }
}

// ---------------------------------------------------------------------------------------------
// mtools and blkid as oracles

/// The BPB as `minfo` prints it.
struct Geometry {
    sector: u64,
    cluster_sectors: u64,
    reserved: u64,
    fats: u64,
    fat_sectors: u64,
    root_slots: u64,
    /// FAT32 only.
    root_cluster: Option<u32>,
    info_sector: Option<u64>,
}

impl Geometry {
    fn read(img: &Path) -> Geometry {
        let out = run(mtools("minfo", img).arg("::"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |key: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.trim_start().starts_with(key))?;
            let rest = line.trim_start().strip_prefix(key)?;
            rest.split_whitespace().next()?.parse().ok()
        };
        let small_fat = value("sectors per fat:").unwrap();
        Geometry {
            sector: value("sector size:").unwrap(),
            cluster_sectors: value("cluster size:").unwrap(),
            reserved: value("reserved (boot) sectors:").unwrap(),
            fats: value("fats:").unwrap(),
            fat_sectors: if small_fat == 0 { value("Big fatlen=").unwrap() } else { small_fat },
            root_slots: value("max available root directory slots:").unwrap(),
            root_cluster: value("rootCluster=").map(|c| c as u32),
            info_sector: value("infoSector location=").filter(|&s| s != 0xFFFF),
        }
    }

    fn cluster_size(&self) -> u64 {
        self.sector * self.cluster_sectors
    }

    fn fat_offset(&self) -> u64 {
        self.reserved * self.sector
    }

    fn data_offset(&self) -> u64 {
        let root_sectors = (self.root_slots * 32).div_ceil(self.sector);
        (self.reserved + self.fats * self.fat_sectors + root_sectors) * self.sector
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset() + (u64::from(cluster) - 2) * self.cluster_size()
    }
}

/// `mdir -b -/`: every path, each directory's entries in on-disk order. Returns each
/// directory's child names, and which paths are directories.
fn mdir_tree(img: &Path) -> (HashMap<String, Vec<String>>, BTreeSet<String>) {
    let out = run(mtools("mdir", img).args(["-b", "-/", "::/"]));
    let mut children: HashMap<String, Vec<String>> = HashMap::new();
    let mut dirs = BTreeSet::from(["/".to_string()]);
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let path = line.strip_prefix("::").unwrap();
        let (path, is_dir) = match path.strip_suffix('/') {
            Some(dir) => (dir, true),
            None => (path, false),
        };
        if is_dir {
            dirs.insert(path.to_string());
        }
        let (parent, name) = path.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() { "/" } else { parent };
        children.entry(parent.to_string()).or_default().push(name.to_string());
    }
    (children, dirs)
}

/// `mshowfat`: the cluster chain of each path ("<2-4> <7-13>"), expanded.
fn mshowfat(img: &Path, paths: &[&str]) -> HashMap<String, Vec<u32>> {
    let out = run(mtools("mshowfat", img).args(paths.iter().map(|p| format!("::{p}"))));
    let mut chains: HashMap<String, Vec<u32>> = HashMap::new();
    let mut current = None;
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let runs = match line.strip_prefix("::") {
            Some(rest) => {
                // "::/path <runs>" or "::/path Root directory or empty file".
                let (path, runs) = match rest.split_once(" <") {
                    Some((path, runs)) => (path, format!("<{runs}")),
                    None => (rest.strip_suffix(" Root directory or empty file").unwrap(), String::new()),
                };
                chains.insert(path.to_string(), Vec::new());
                current = Some(path.to_string());
                runs
            }
            None => line.to_string(),
        };
        let chain = chains.get_mut(current.as_ref().unwrap()).unwrap();
        for run in runs.split_whitespace() {
            let run = run.strip_prefix('<').unwrap().strip_suffix('>').unwrap();
            let (a, b) = run.split_once('-').unwrap_or((run, run));
            chain.extend(a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap());
        }
    }
    assert_eq!(chains.len(), paths.len(), "mshowfat {paths:?}");
    chains
}

/// blkid's LABEL (absent: "") and UUID.
fn blkid(img: &Path) -> (String, String) {
    let out = run(Command::new("blkid").args(["-p", "-o", "export"]).arg(img));
    let text = String::from_utf8(out.stdout).unwrap();
    let get = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_default().to_string();
    (get("LABEL="), get("UUID="))
}

/// Clusters to byte extents, merged where consecutive.
fn to_extents(chain: &[u32], geo: &Geometry) -> Vec<Extent> {
    let cs = geo.cluster_size();
    let mut out: Vec<Extent> = Vec::new();
    for (i, &c) in chain.iter().enumerate() {
        let physical = geo.cluster_offset(c);
        match out.last_mut() {
            Some(last) if last.physical + last.len == physical => last.len += cs,
            _ => out.push(Extent { logical: i as u64 * cs, physical, len: cs, unwritten: false, encoded: None }),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The comparison

fn check_variant(variant: &Variant) {
    let v = variant.name;
    let built = build(variant);
    let (img, geo) = (&built.img, &built.geo);
    let image = fs::File::open(img).unwrap();
    assert!(vfat::probe(&image), "{v}: probe");
    let fs: Filesystem = vfat::read(&image).unwrap_or_else(|e| panic!("{v}: {e}"));
    let cs = geo.cluster_size();
    assert_eq!(fs.fs_type, "vfat");
    assert_eq!(u64::from(fs.block_size), cs, "{v}: cluster size");
    let (label, uuid) = blkid(img);
    assert_eq!(fs.label, label, "{v}: label");
    assert_eq!(fs.uuid, uuid, "{v}: serial");
    assert_eq!(fs.uuid, "1234-ABCD");
    let expected_label = variant.relabel.map(str::to_uppercase).or(variant.label.map(String::from)).unwrap_or_default();
    assert_eq!(fs.label, expected_label, "{v}: label");

    // Paths against the source tree.
    let source = walk_source(&built.src);
    let mut listed: Vec<&str> = fs.files.iter().map(|f| f.path.as_str()).collect();
    listed.sort();
    let mut wanted: Vec<&str> = source.keys().map(String::as_str).collect();
    wanted.push("/");
    wanted.sort();
    assert_eq!(listed, wanted, "{v}: paths");

    // Order: "/" first, then depth first, each directory's entries in mdir's (on-disk) order.
    let (children, dirs) = mdir_tree(img);
    let mut expected = Vec::new();
    let mut stack = vec!["/".to_string()];
    while let Some(path) = stack.pop() {
        let prefix = if path == "/" { String::new() } else { path.clone() };
        if let Some(names) = children.get(&path) {
            stack.extend(names.iter().rev().map(|n| format!("{prefix}/{n}")));
        }
        expected.push(path);
    }
    let order: Vec<&str> = fs.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(order, expected, "{v}: order");

    // Cluster chains per mshowfat; "/" is the fixed region on FAT12/16.
    let chained: Vec<&str> = order.iter().copied().filter(|&p| p != "/").collect();
    let chains = mshowfat(img, &chained);
    let mut raw = vec![0u8; 1 << 20];
    let mut want = vec![0u8; 1 << 20];
    let mut used: Vec<(u64, u64)> = Vec::new();
    let mut contents = 0;
    for f in &fs.files {
        let p = f.path.as_str();
        assert_eq!((f.uid, f.gid, f.nlink, f.mtime_nsec), (0, 0, 1, 0), "{v}: {p}");
        assert!(f.link_target.is_none() && f.rdev.is_none() && f.inline_data.is_none());
        assert!(f.xattrs.is_empty(), "{v}: {p}: xattrs");
        let is_dir = dirs.contains(p);
        if p == "/" {
            assert_eq!(f.kind, FileKind::Dir);
            assert_eq!(f.inode, u64::from(geo.root_cluster.unwrap_or(0)), "{v}: / inode");
            assert_eq!(f.mtime, 0, "{v}: / has no time");
            continue;
        }
        let chain = &chains[p];
        if is_dir {
            assert_eq!(f.kind, FileKind::Dir, "{v}: {p}: kind");
            assert_eq!((f.size, f.extents.len()), (0, 0), "{v}: {p}");
            assert_eq!(f.inode, u64::from(chain[0]), "{v}: {p}: inode is the first cluster");
            // mmd stamps directories with the time it ran.
            assert!(
                (built.made.0 - 2..=built.made.1 + 2).contains(&f.mtime),
                "{v}: {p}: directory mtime {} outside the build {:?}",
                f.mtime,
                built.made
            );
            assert_eq!(f.mode, 0o755, "{v}: {p}: mode (read-only is ignored on directories)");
            continue;
        }
        assert_eq!(f.kind, FileKind::File, "{v}: {p}: kind");
        let real = &source[p];
        let meta = fs::metadata(real).unwrap();
        assert_eq!(f.size, meta.len(), "{v}: {p}: size");
        let mtime = meta.modified().unwrap().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(f.mtime, mtime.as_secs() as i64, "{v}: {p}: mtime");
        let mode = if p == "/readonly.txt" { 0o444 } else { 0o644 };
        assert_eq!(f.mode, mode, "{v}: {p}: mode");

        // The extents are the chain, cut at the size.
        let needed = f.size.div_ceil(cs) as usize;
        assert!(chain.len() >= needed, "{v}: {p}: mshowfat chain {chain:?}");
        assert_eq!(f.extents, to_extents(&chain[..needed], geo), "{v}: {p}: extents");
        assert_eq!(f.inode, u64::from(chain.first().copied().unwrap_or(0)), "{v}: {p}: inode");
        let mut logical = 0;
        for e in &f.extents {
            assert_eq!(e.logical, logical, "{v}: {p}: extents tile the file");
            assert!(e.len > 0 && e.len % cs == 0 && !e.unwritten, "{v}: {p}: {e:?}");
            used.push((e.physical, e.len));
            logical += e.len;
        }
        assert!(logical >= f.size && logical < f.size + cs, "{v}: {p}: coverage");

        // The map, proved by the raw image: the bytes at each extent are the file's.
        let source_file = fs::File::open(real).unwrap();
        for e in &f.extents {
            let mut at = 0;
            while at < e.len && e.logical + at < f.size {
                let n = (e.len - at).min(f.size - e.logical - at).min(1 << 20) as usize;
                FileExt::read_exact_at(&image, &mut raw[..n], e.physical + at).unwrap();
                FileExt::read_exact_at(&source_file, &mut want[..n], e.logical + at).unwrap();
                assert!(raw[..n] == want[..n], "{v}: {p}: image bytes at {e:?} + {at}");
                at += n as u64;
            }
        }
        // And read_content through the listing.
        let content = fs::read(real).unwrap();
        let mut ours = vec![0; content.len()];
        f.read_content(&image, 0, &mut ours).unwrap();
        assert!(ours == content, "{v}: {p}: content");
        assert!(f.read_content(&image, f.size, &mut [0]).is_err(), "{v}: {p}");
        contents += 1;
    }
    used.sort();
    for pair in used.windows(2) {
        assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{v}: extents overlap: {pair:?}");
    }
    assert!(contents > BIG_DIR_ENTRIES, "{v}: only {contents} contents compared");

    // What the fixture was built to contain.
    let get = |path: &str| fs.files.iter().find(|f| f.path == path).unwrap();
    assert!(get("/frag/c.bin").extents.len() >= 2, "{v}: c.bin is not fragmented");
    let big_dir = &chains["/big_dir"];
    assert!(big_dir.len() >= 2, "{v}: big_dir fits one cluster");
    assert!(big_dir.windows(2).any(|w| w[1] != w[0] + 1), "{v}: big_dir's clusters are contiguous: {big_dir:?}");
    let deep = format!("/deep{}/bottom.txt", (1..DEPTH).map(|i| format!("/level{i}")).collect::<String>());
    assert!(fs.files.iter().any(|f| f.path == deep), "{v}");
    assert_eq!(get("/sizes/empty").inode, 0);
    assert!(get("/sizes/empty").extents.is_empty());
    // "lower.txt" is a short entry with both case bits (0x18), not a long name.
    let bytes = fs::read(img).unwrap();
    assert!(bytes.windows(13).any(|w| w == b"LOWER   TXT\x20\x18"), "{v}: mtools did not use case bits");
    println!("{v}: {} files, {contents} contents, {} bytes per cluster", fs.files.len(), cs);
}

#[test]
fn fat12_matches_mtools_and_source() {
    check_variant(&FAT12);
}

#[test]
fn fat16_matches_mtools_and_source() {
    check_variant(&FAT16);
}

#[test]
fn fat32_matches_mtools_and_source() {
    check_variant(&FAT32);
}

#[test]
fn fat32_small_clusters_match_mtools_and_source() {
    check_variant(&FAT32_SMALL_CLUSTERS);
}

#[test]
fn fat32_4k_sectors_match_mtools_and_source() {
    check_variant(&FAT32_4K_SECTORS);
}

#[test]
fn probe_refuses_what_is_not_fat() {
    assert!(!vfat::probe(&vec![0u8; 4096]));
    assert!(!vfat::probe(&vec![0u8; 100]));
    let built = build_tiny(&["-F", "16"], 16);
    let mut image = fs::read(&built.img).unwrap();
    assert!(vfat::probe(&image));
    image[510] = 0;
    assert!(!vfat::probe(&image));
    assert!(vfat::read(&vec![0u8; 4096]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Robustness

/// Reads the filesystem and up to `cap` bytes of each regular file; never panics by contract.
fn read_everything(src: &dyn ReadAt, cap: u64) -> Result<usize, vfat::Error> {
    let fs = vfat::read(src)?;
    common::read_contents(&fs, src, cap);
    Ok(fs.files.len())
}

/// Corrupts `pristine` `rounds` times (each round restored before the next) at positions
/// drawn by `pick`, reads everything each time and counts (panics, ok, errors).
fn fuzz(
    pristine: Vec<u8>,
    rounds: usize,
    pick: impl Fn(&mut Xorshift) -> Vec<usize> + Send + 'static,
) -> (usize, usize, usize) {
    corrupt_rounds(pristine, rounds, pick, |image| read_everything(image, 256 << 10).is_ok())
}

#[test]
fn corrupted_images_never_panic() {
    let mut total_panics = 0;
    for variant in [&FAT12, &FAT16, &FAT32, &FAT32_SMALL_CLUSTERS] {
        let name = variant.name;
        let built = build(variant);
        let pristine = fs::read(&built.img).unwrap();
        assert!(read_everything(&pristine, u64::MAX).is_ok(), "{name}: pristine");
        // 1 to 16 random bytes in the first 256 KiB: boot sector, FATs, root, early clusters.
        let limit = pristine.len().min(256 << 10);
        let spread = move |rng: &mut Xorshift| {
            let n = rng.next() % 16 + 1;
            (0..n).map(|_| (rng.next() % limit as u64) as usize).collect::<Vec<_>>()
        };
        let (panics, ok, err) = fuzz(pristine.clone(), 3000, spread);
        println!("{name}, 1-16 bytes in 256 KiB: {ok} ok, {err} errors, {panics} panics");
        total_panics += panics;
        // 1 to 4 of the non-zero bytes outside file contents anywhere: metadata (FAT
        // entries, directory entries), so that rounds reach deep into the structures.
        let mut data = vec![false; pristine.len()];
        for f in vfat::read(&pristine).unwrap().files {
            for e in f.extents {
                data[e.physical as usize..(e.physical + e.len) as usize].fill(true);
            }
        }
        let metadata: Vec<usize> = (0..pristine.len()).filter(|&i| pristine[i] != 0 && !data[i]).collect();
        let dense = move |rng: &mut Xorshift| {
            let n = rng.next() % 4 + 1;
            (0..n).map(|_| metadata[(rng.next() % metadata.len() as u64) as usize]).collect()
        };
        let (panics, ok, err) = fuzz(pristine, 3000, dense);
        println!("{name}, 1-4 metadata bytes: {ok} ok, {err} errors, {panics} panics");
        total_panics += panics;
    }
    assert_eq!(total_panics, 0, "the reader panicked");
}

/// A small image for crafted corruption: a file of six clusters, /parent/child/x.txt and a
/// directory spanning several clusters.
fn build_tiny(mkfs: &[&str], mib: u64) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let img = dir.path().join("fs.img");
    fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
    run(Command::new("mkfs.fat").args(mkfs).arg(&img));
    let geo = Geometry::read(&img);
    let cs = geo.cluster_size() as usize;
    let mut rng = Xorshift(7);
    fs::create_dir_all(src.join("parent/child")).unwrap();
    fs::create_dir_all(src.join("bigdir")).unwrap();
    fs::write(src.join("file.bin"), rng.bytes(6 * cs)).unwrap();
    fs::write(src.join("parent/child/x.txt"), b"x").unwrap();
    fs::write(src.join("Long Name.txt"), b"one LFN fragment").unwrap();
    for i in 0..(cs / 32) {
        fs::write(src.join(format!("bigdir/a rather long name, number {i:04}")), b"").unwrap();
    }
    populate(&img, &src, "");
    Built { _dir: dir, src, img, geo, made: (0, 0) }
}

/// Sets a cluster's entry in every FAT copy.
fn set_fat(image: &mut [u8], geo: &Geometry, bits: u32, cluster: u32, value: u32) {
    for copy in 0..geo.fats {
        let fat = (geo.fat_offset() + copy * geo.fat_sectors * geo.sector) as usize;
        let c = cluster as usize;
        match bits {
            12 => {
                let at = fat + c + c / 2;
                let word = u16::from_le_bytes([image[at], image[at + 1]]);
                let word = if c % 2 == 1 {
                    (word & 0x000F) | ((value as u16) << 4)
                } else {
                    (word & 0xF000) | (value as u16 & 0x0FFF)
                };
                image[at..at + 2].copy_from_slice(&word.to_le_bytes());
            }
            16 => image[fat + 2 * c..fat + 2 * c + 2].copy_from_slice(&(value as u16).to_le_bytes()),
            _ => image[fat + 4 * c..fat + 4 * c + 4].copy_from_slice(&value.to_le_bytes()),
        }
    }
}

/// The offset of the first 32-byte entry starting with `prefix` in the first cluster of the
/// directory at `dir` (None: the root).
fn entry(image: &[u8], geo: &Geometry, dir: Option<u32>, prefix: &[u8]) -> usize {
    let (start, len) = match dir.or(geo.root_cluster) {
        Some(cluster) => (geo.cluster_offset(cluster), geo.cluster_size()),
        None => (geo.data_offset() - geo.root_slots * 32, geo.root_slots * 32),
    };
    (start as usize..(start + len) as usize)
        .step_by(32)
        .find(|&at| image[at..].starts_with(prefix))
        .unwrap_or_else(|| panic!("no entry {:?}", String::from_utf8_lossy(prefix)))
}

/// Points the short entry `name` (11 bytes, padded) in the directory at `dir` to `cluster`.
fn set_entry_cluster(image: &mut [u8], geo: &Geometry, dir: u32, name: &[u8; 11], cluster: u32) {
    let at = entry(image, geo, Some(dir), name);
    image[at + 20..at + 22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    image[at + 26..at + 28].copy_from_slice(&(cluster as u16).to_le_bytes());
}

/// A corruption to apply to a copy of an image.
type Edit<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;

#[test]
fn crafted_loops_and_cycles_are_errors() {
    let variants: [(&str, &[&str], u64, u32); 3] = [
        ("FAT12", &["-F", "12", "-s", "2"], 2, 12),
        ("FAT16", &["-F", "16", "-s", "4"], 16, 16),
        ("FAT32", &["-F", "32", "-s", "1"], 64, 32),
    ];
    for (name, mkfs, mib, bits) in variants {
        let built = build_tiny(mkfs, mib);
        let geo = &built.geo;
        let pristine = fs::read(&built.img).unwrap();
        vfat::read(&pristine).unwrap_or_else(|e| panic!("{name}: pristine: {e}"));
        let chains = mshowfat(&built.img, &["/file.bin", "/parent", "/parent/child", "/bigdir"]);
        let file = &chains["/file.bin"];
        let parent = chains["/parent"][0];
        let child = chains["/parent/child"][0];
        let bigdir = &chains["/bigdir"];
        assert!(file.len() == 6 && bigdir.len() >= 2, "{name}: fixture {chains:?}");
        let max = (1u64 << bits.min(28)) - 1;
        let bad = (max - 8) as u32;
        let clusters = geo.fat_sectors * geo.sector * 8 / u64::from(bits);
        let root = geo.root_cluster;

        let mut cases: Vec<(&str, Edit, String)> = vec![
            (
                "file chain loops back",
                Box::new({
                    let (a, c) = (file[0], file[2]);
                    move |img| set_fat(img, geo, bits, c, a)
                }),
                format!("cluster chain of /file.bin loops at cluster {}", file[0]),
            ),
            (
                "file cluster points to itself",
                Box::new({
                    let a = file[0];
                    move |img| set_fat(img, geo, bits, a, a)
                }),
                format!("cluster chain of /file.bin loops at cluster {}", file[0]),
            ),
            (
                "directory chain loops back",
                Box::new({
                    let (first, last) = (bigdir[0], *bigdir.last().unwrap());
                    move |img| set_fat(img, geo, bits, last, first)
                }),
                format!("cluster chain of /bigdir loops at cluster {}", bigdir[0]),
            ),
            (
                "directory points to its parent",
                Box::new(move |img| set_entry_cluster(img, geo, parent, b"CHILD      ", parent)),
                format!("cluster chain of /parent/child reaches cluster {parent}, which /parent already uses"),
            ),
            (
                "directory chain continues into its parent",
                Box::new(move |img| set_fat(img, geo, bits, child, parent)),
                format!(
                    "cluster chain of /parent/child reaches cluster {parent}, which /parent \
                     already uses"
                ),
            ),
            (
                "file cross-linked with its directory",
                Box::new(move |img| set_entry_cluster(img, geo, child, b"X       TXT", child)),
                format!(
                    "cluster chain of /parent/child/x.txt reaches cluster {child}, which \
                     /parent/child already uses"
                ),
            ),
            (
                "chain runs into a free cluster",
                Box::new({
                    let a = file[1];
                    move |img| set_fat(img, geo, bits, a, 0)
                }),
                "cluster chain of /file.bin runs into a free cluster".into(),
            ),
            (
                "chain runs into a bad cluster",
                Box::new({
                    let a = file[1];
                    move |img| set_fat(img, geo, bits, a, bad)
                }),
                "cluster chain of /file.bin runs into a bad cluster".into(),
            ),
            (
                "chain ends early",
                Box::new({
                    let a = file[3];
                    move |img| set_fat(img, geo, bits, a, max as u32)
                }),
                "cluster chain of /file.bin ends after 4 clusters, short of the 6".into(),
            ),
            (
                "chain leaves the volume",
                Box::new({
                    let a = file[1];
                    move |img| set_fat(img, geo, bits, a, (clusters + 5).min(bad as u64 - 1) as u32)
                }),
                "past the last cluster".into(),
            ),
            (
                "bytes per sector",
                Box::new(|img| img[11..13].copy_from_slice(&300u16.to_le_bytes())),
                "vfat: boot sector: bytes per sector 300 is not a power of two from 512 to 4096".into(),
            ),
            ("truncated", Box::new(|img| img.truncate(img.len() / 2)), "past the end of the source".into()),
        ];
        if let Some(root) = root {
            cases.push((
                "directory points to the root",
                Box::new(move |img| set_entry_cluster(img, geo, parent, b"CHILD      ", root)),
                format!("cluster chain of /parent/child reaches cluster {root}, which / already uses"),
            ));
        }
        for (what, edit, expected) in cases {
            let mut image = pristine.clone();
            edit(&mut image);
            let result = bounded(Duration::from_secs(30), move || {
                std::panic::catch_unwind(|| read_everything(&image, u64::MAX).map_err(|e| e.to_string()))
            });
            match result {
                Ok(Err(e)) => assert!(e.contains(&expected), "{name}: {what}: {e}"),
                Ok(Ok(n)) => panic!("{name}: {what}: read {n} files"),
                Err(_) => panic!("{name}: {what}: panicked"),
            }
        }

        // A chain longer than the size is cut at the size, as the kernel reads it.
        let mut image = pristine.clone();
        let at = entry(&image, geo, None, b"FILE    BIN");
        let cs = geo.cluster_size();
        image[at + 28..at + 32].copy_from_slice(&(2 * cs as u32 + 1).to_le_bytes());
        let listing = vfat::read(&image).unwrap_or_else(|e| panic!("{name}: short size: {e}"));
        let f = listing.files.iter().find(|f| f.path == "/file.bin").unwrap();
        assert_eq!(f.size, 2 * cs + 1);
        assert_eq!(f.extents, to_extents(&file[..3], geo), "{name}: cut chain");

        // A long name whose checksum does not match its short entry gives way to the short
        // name. "Long Name.txt" takes exactly one LFN fragment (13 characters), marked last.
        let mut image = pristine.clone();
        let at = entry(&image, geo, None, b"\x41L\0o\0n\0g\0");
        image[at + 13] ^= 0xFF;
        let listing = vfat::read(&image).unwrap_or_else(|e| panic!("{name}: checksum: {e}"));
        let paths: Vec<&str> = listing.files.iter().map(|f| f.path.as_str()).collect();
        assert!(
            paths.contains(&"/LONGNA~1.TXT") && !paths.contains(&"/Long Name.txt"),
            "{name}: checksum mismatch: {paths:?}"
        );
        let pristine_listing = vfat::read(&pristine).unwrap();
        assert!(pristine_listing.files.iter().any(|f| f.path == "/Long Name.txt"));
    }
}
