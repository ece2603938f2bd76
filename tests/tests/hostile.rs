//! Images are untrusted input: corrupt, truncated, hostile or not disks at all. Each is
//! either indexed (and then checks out byte for byte) or refused with an error naming the
//! image and the structure that is wrong, within time and memory bounds, and a refused checkin
//! leaves the library exactly as it was.

use imagelake_tests::{Library, assert_qcow2_checkout, assert_same_bytes, gpt_disk, measure, mkfs_ext, mkfs_vfat, run};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const GIB: u64 = 1 << 30;

/// Every file of the library with its size and modification time: any write shows.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, i128)> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u64, i128)>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let m = std::fs::symlink_metadata(&path).expect("lstat");
            if m.is_dir() {
                walk(&path, out);
            }
            let mtime =
                m.modified().expect("mtime").duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
            out.insert(path, (m.len(), mtime));
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// Checks `image` in under a time bound (120 s) and a memory bound (1 GiB), returning the
/// summary or the error text, and asserting along the way what must hold either way.
fn checkin_bounded(lib: &Library, image: &Path, name: &str) -> Result<serde_json::Value, String> {
    let before = snapshot(&lib.path());
    let mut cmd = lib.command();
    cmd.arg("checkin").arg(image).args(["--name", name, "--json"]);
    let out = measure(&mut cmd, Some(std::time::Duration::from_secs(120)));
    let stderr = out.stderr.clone();
    assert!(!stderr.contains("panicked"), "{}: checkin panicked:\n{stderr}", image.display());
    assert!(
        out.status.code().is_some(),
        "{}: checkin was killed after {:.0} s (hang?)",
        image.display(),
        out.usage.wall_seconds
    );
    assert!(out.usage.max_rss_bytes < GIB, "{}: checkin took {} MiB", image.display(), out.usage.max_rss_bytes >> 20);
    if out.status.success() {
        return Ok(serde_json::from_str(&out.stdout).expect("summary"));
    }
    assert!(stderr.contains(&image.display().to_string()), "the error must name the image: {stderr}");
    assert_eq!(snapshot(&lib.path()), before, "{}: a refused checkin changed the library", image.display());
    Err(stderr)
}

#[test]
fn every_corrupt_fixture_is_indexed_exactly_or_refused_cleanly() {
    let fixtures = imagelake_tests::repo_root().join("../shared/fixtures/ext4-corrupt");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("fixtures folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".img.gz"))
        .collect();
    names.sort();
    assert!(names.len() > 100, "expected the e2fsprogs fixtures, found {}", names.len());
    // Two workers, each with its own library, keep both cores busy.
    let half = names.len().div_ceil(2);
    let (indexed, refused) = std::thread::scope(|scope| {
        let workers: Vec<_> = names.chunks(half).map(|part| scope.spawn(move || walk_fixtures(part))).collect();
        workers.into_iter().map(|w| w.join().expect("worker")).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    eprintln!(
        "{} fixtures, bare and in a GPT disk: {indexed} indexed (all byte-exact), {refused} refused",
        names.len()
    );
    assert_eq!(indexed + refused, 2 * names.len());
    assert!(indexed > names.len(), "most fixtures are readable filesystems");
}

/// Checks each fixture in bare and inside a GPT disk; returns (indexed, refused).
fn walk_fixtures(names: &[PathBuf]) -> (usize, usize) {
    let work = tempfile::tempdir().expect("tempdir");
    let lib = Library::new();
    // A library that already holds an image: a refusal must leave all of it untouched.
    let seed = work.path().join("seed.img");
    std::fs::create_dir_all(work.path().join("seed")).unwrap();
    mkfs_ext(&work.path().join("seed"), &seed, "ext4", "4M", &[]);
    lib.checkin(&seed, "seed");
    let esp = work.path().join("esp.img");
    mkfs_vfat(&esp, 1024);

    let (mut indexed, mut refused) = (0, 0);
    for (i, gz) in names.iter().enumerate() {
        let stem = gz.file_name().unwrap().to_string_lossy().trim_end_matches(".img.gz").to_string();
        let bare = work.path().join(format!("{stem}.img"));
        run(Command::new("sh").arg("-c").arg(format!("gzip -dc '{}' > '{}'", gz.display(), bare.display())));
        let disk = work.path().join(format!("{stem}.gpt.img"));
        gpt_disk(&disk, &bare, &esp);
        for (image, kind) in [(&bare, "bare"), (&disk, "gpt")] {
            match checkin_bounded(&lib, image, &format!("f{i}-{kind}")) {
                Ok(summary) => {
                    indexed += 1;
                    let out = work.path().join("out.raw");
                    lib.checkout(&format!("f{i}-{kind}@{}", summary["version"]), &out);
                    assert_same_bytes(image, &out);
                    std::fs::remove_file(&out).unwrap();
                    assert_qcow2_checkout(&lib, &format!("f{i}-{kind}@{}", summary["version"]), image);
                }
                Err(message) => {
                    refused += 1;
                    assert!(message.contains("ext4") || message.contains("partition"), "{stem} ({kind}): {message}");
                }
            }
        }
        std::fs::remove_file(&bare).unwrap();
        std::fs::remove_file(&disk).unwrap();
    }
    (indexed, refused)
}

/// A folder holding `disk.img`: a GPT disk with an ESP and an ext4 root made from the test
/// tree (`root.img`, `esp.img` beside it).
fn small_gpt_disk() -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    imagelake_tests::tree::build(&p("tree"));
    mkfs_ext(&p("tree"), &p("root.img"), "ext4", "40M", &[]);
    mkfs_vfat(&p("esp.img"), 4096);
    gpt_disk(&p("disk.img"), &p("root.img"), &p("esp.img"));
    work
}

#[test]
fn truncated_images_and_non_disks_are_refused_clearly() {
    let work = small_gpt_disk();
    let p = |n: &str| work.path().join(n);
    let lib = Library::new();
    lib.checkin(&p("root.img"), "seed");

    // A qcow2 cut in half.
    run(Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(p("disk.img")).arg(p("disk.qcow2")));
    let len = std::fs::metadata(p("disk.qcow2")).unwrap().len();
    run(Command::new("truncate").arg(format!("-s{}", len / 2)).arg(p("disk.qcow2")));
    let err = checkin_bounded(&lib, &p("disk.qcow2"), "cut").expect_err("a qcow2 cut in half is refused");
    assert!(err.contains("qcow2") && err.contains("truncated"), "{err}");

    // A raw disk whose GPT points past its end.
    let len = std::fs::metadata(p("disk.img")).unwrap().len();
    run(Command::new("truncate").arg(format!("-s{}", len - 8 * (1 << 20))).arg(p("disk.img")));
    let err = checkin_bounded(&lib, &p("disk.img"), "short").expect_err("a partition past the end is refused");
    assert!(err.contains("partition 3") && err.contains("past the end"), "{err}");
    // With --raw-on-error it is kept, byte for byte, with a warning.
    let out = run(lib.command().args(["checkin", "--raw-on-error", "--json", "--name", "short"]).arg(p("disk.img")));
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(summary["warnings"][0].as_str().unwrap().contains("past the end"), "{summary}");
    lib.checkout("short", &p("short.out"));
    assert_same_bytes(&p("disk.img"), &p("short.out"));

    // Not disks at all: text, and random bytes.
    std::fs::write(p("notes.txt"), "these are not the bytes you are looking for\n").unwrap();
    let err = checkin_bounded(&lib, &p("notes.txt"), "text").expect_err("text is refused");
    assert!(err.contains("not a disk image"), "{err}");
    run(Command::new("sh").arg("-c").arg(format!("head -c 1048576 /dev/urandom > '{}'", p("noise.bin").display())));
    let err = checkin_bounded(&lib, &p("noise.bin"), "noise").expect_err("noise is refused");
    assert!(err.contains("not a disk image"), "{err}");
}

#[test]
fn qemu_img_formats_round_trip_and_keep_to_their_folder() {
    let work = small_gpt_disk();
    let p = |n: &str| work.path().join(n);
    let lib = Library::new();
    let conversions: [(&str, &[&str]); 6] = [
        ("vmdk", &["-O", "vmdk"]),
        ("vmdk", &["-O", "vmdk", "-o", "subformat=streamOptimized"]),
        ("vhdx", &["-O", "vhdx"]),
        ("vdi", &["-O", "vdi"]),
        ("vpc", &["-O", "vpc"]),
        ("qcow2", &["-O", "qcow2", "-o", "compression_type=zstd", "-c"]),
    ];
    for (i, (format, args)) in conversions.iter().enumerate() {
        let image = p(&format!("disk{i}.{format}"));
        run(Command::new("qemu-img").arg("convert").args(*args).arg(p("disk.img")).arg(&image));
        let summary = lib.checkin(&image, &format!("conv{i}"));
        assert_eq!(summary["source_format"], *format, "{summary}");
        assert_eq!(summary["partitions"], 3);
        let expected = p("expected.raw");
        imagelake_tests::qemu_img_to_raw(&image, &expected);
        lib.checkout(&format!("conv{i}"), &p("out.raw"));
        assert_same_bytes(&expected, &p("out.raw"));
        // The same disk in another container deduplicates against the first.
        if i > 0 {
            assert!(summary["bytes_new"].as_u64().unwrap() < 1 << 20, "{format}: {summary}");
        }
    }
    // No scratch file is left behind.
    assert_eq!(std::fs::read_dir(lib.path().join("tmp")).unwrap().count(), 0);

    // A vmdk whose extent lies in another folder is refused.
    std::fs::create_dir(p("a")).unwrap();
    std::fs::create_dir(p("b")).unwrap();
    run(Command::new("qemu-img")
        .args(["convert", "-O", "vmdk", "-o", "subformat=monolithicFlat"])
        .arg(p("disk.img"))
        .arg(p("a/flat.vmdk")));
    let descriptor = std::fs::read_to_string(p("a/flat.vmdk"))
        .unwrap()
        .replace("\"flat-flat.vmdk\"", &format!("\"{}\"", p("a/flat-flat.vmdk").display()));
    std::fs::write(p("b/flat.vmdk"), descriptor).unwrap();
    let err = checkin_bounded(&lib, &p("b/flat.vmdk"), "outside").expect_err("outside extent is refused");
    assert!(err.contains("not in the image's folder"), "{err}");
}

#[test]
fn two_checkins_at_once_both_commit() {
    let work = tempfile::tempdir().unwrap();
    let p = |n: &str| work.path().join(n);
    imagelake_tests::tree::build(&p("tree"));
    mkfs_ext(&p("tree"), &p("a.img"), "ext4", "48M", &[]);
    std::fs::write(p("tree/etc/motd"), "another image\n").unwrap();
    mkfs_ext(&p("tree"), &p("b.img"), "ext2", "48M", &[]);
    let lib = Library::new();
    let children: Vec<_> = [p("a.img"), p("b.img")]
        .iter()
        .map(|img| {
            lib.command()
                .arg("checkin")
                .arg(img)
                .args(["--name", "web", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut versions = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        versions.push(summary["version"].as_i64().unwrap());
    }
    versions.sort();
    assert_eq!(versions, vec![1, 2], "two concurrent checkins of one name take two versions");
    let rows = lib.sql("SELECT version, virtual_size FROM images ORDER BY version");
    assert_eq!(rows.len(), 2);
    for v in [1, 2] {
        // Which process committed first is not known: match each image by its bytes.
        let out = p(&format!("web{v}.raw"));
        lib.checkout(&format!("web@{v}"), &out);
        let same_a = Command::new("cmp").arg("-s").arg(&out).arg(p("a.img")).status().unwrap().success();
        let same_b = Command::new("cmp").arg("-s").arg(&out).arg(p("b.img")).status().unwrap().success();
        assert!(same_a || same_b, "web@{v} matches neither input");
    }
    let a = p("web1.raw");
    let b = p("web2.raw");
    assert!(
        !Command::new("cmp").arg(&a).arg(&b).arg("-s").status().unwrap().success(),
        "the two versions are the two images"
    );
}
