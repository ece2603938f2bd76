//! The library as users meet it: its directory and format version, backing files, output
//! formats, and errors that say what is wrong.

use imagelake_tests::{
    Library, LoopDevice, assert_same_bytes, gpt_disk, mkfs_ext, mkfs_vfat, qemu_img_to_raw, run, tree, unique_bytes,
};
use std::process::Command;

fn small_image(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("tree");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/motd"), "hi\n").unwrap();
    let img = dir.join("small.img");
    mkfs_ext(&src, &img, "ext4", "8M", &[]);
    img
}

#[test]
fn a_library_is_a_versioned_directory() {
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path());
    // -L wins over $IMAGELAKE_LIBRARY, which wins over ./imagelake-library.
    let env_lib = dir.path().join("from-env");
    run(Command::new(imagelake_tests::imagelake_bin())
        .current_dir(dir.path())
        .env("IMAGELAKE_LIBRARY", &env_lib)
        .args(["checkin"])
        .arg(&img)
        .args(["--name", "a"]));
    assert!(env_lib.join("imagelake.json").exists());
    run(Command::new(imagelake_tests::imagelake_bin())
        .current_dir(dir.path())
        .env_remove("IMAGELAKE_LIBRARY")
        .args(["checkin"])
        .arg(&img)
        .args(["--name", "b"]));
    assert!(dir.path().join("imagelake-library/imagelake.json").exists());

    let lib = Library::new();
    lib.checkin(&img, "a");
    let marker = lib.path().join("imagelake.json");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&marker).unwrap()).unwrap();
    assert_eq!(meta["format_version"], 5);
    // A library of another format version is refused, not misread.
    std::fs::write(&marker, r#"{"format": "imagelake-library", "format_version": 99}"#).unwrap();
    let out = lib.command().args(["sql", "-c", "SELECT 1"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("format version 99") && err.contains("reads version 5"), "{err}");
    // A directory that holds something else is not taken over.
    let other = dir.path().join("tree");
    let out = Command::new(imagelake_tests::imagelake_bin())
        .arg("-L")
        .arg(&other)
        .args(["sql", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an imagelake library"), "{out:?}");
}

#[test]
fn qcow2_backing_files_only_from_the_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let raw = small_image(dir.path());
    let base = dir.path().join("base.qcow2");
    run(Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(&raw).arg(&base));
    let overlay = dir.path().join("overlay.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2"])
        .arg(&overlay));
    run(Command::new("qemu-io").args(["-c", "write -P 0xab 1M 64k"]).arg(&overlay));
    let lib = Library::new();
    lib.checkin(&overlay, "layered");
    let expected = dir.path().join("overlay.raw");
    qemu_img_to_raw(&overlay, &expected);
    let out = dir.path().join("layered.out");
    lib.checkout("layered", &out);
    assert_same_bytes(&expected, &out);

    // An overlay whose backing file lies elsewhere is refused, and nothing is committed.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let outside = elsewhere.join("outside.qcow2");
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]).arg(&base).arg(&outside));
    let result = lib.command().arg("checkin").arg(&outside).args(["--name", "outside"]).output().unwrap();
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(err.contains("outside.qcow2") && err.contains("not in the image's folder"), "{err}");
    assert!(lib.sql("SELECT name FROM images WHERE name = 'outside'").is_empty());
}

#[test]
fn sql_formats_and_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    tree::build(&dir.path().join("t"));
    let img = dir.path().join("t.img");
    mkfs_ext(&dir.path().join("t"), &img, "ext4", "32M", &[]);
    let lib = Library::new();
    lib.checkin(&img, "t");
    let csv = run(lib.command().args([
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT path, xattrs FROM files WHERE path = '/etc/motd'",
    ]));
    assert_eq!(csv.lines().next(), Some("path,xattrs"));
    assert!(csv.contains("/etc/motd") && csv.contains("user.checksum"), "{csv}");
    let table = run(lib.command().args(["sql", "-c", "SELECT count(*) AS n FROM files WHERE kind = 'symlink'"]));
    assert!(table.contains("| 2 ") && table.contains("1 row"), "{table}");

    let missing = lib.command().arg("checkin").arg(dir.path().join("nope.img")).args(["--name", "x"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.img"), "{missing:?}");
    let bad_sql = lib.command().args(["sql", "-c", "SELECT nope FROM files"]).output().unwrap();
    assert!(!bad_sql.status.success());
    assert!(String::from_utf8_lossy(&bad_sql.stderr).contains("nope"), "{bad_sql:?}");
}

#[test]
fn sql_errors_are_one_line_and_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path());
    let lib = Library::new();
    lib.checkin(&img, "small");
    let cases = [
        ("SELECT * FROM ls('nope', '/etc')", "no image nope in the library"),
        ("SELECT * FROM ls('small@9', '/etc')", "no image small@9"),
        ("SELECT * FROM ls('bad name', '/')", "is not a valid image name"),
        ("SELECT * FROM file_lines('small', '/etc/missing')", "small: no file \"/etc/missing\""),
        ("SELECT * FROM file_lines('small', '/etc')", "is a directory; ls('small', '/etc') lists it"),
        ("SELECT * FROM ls('small', 'etc')", "give an absolute path such as '/etc/hostname'"),
        ("SELECT * FROM ls(name, '/etc')", "must be a literal such as 'web@2', not the column name"),
        ("SELECT * FROM checkout(name, '/tmp/x.raw')", "call checkout_to(name, path) in its SELECT list"),
        ("SELECT * FROM compare('small')", "compare() takes 2 arguments"),
        (
            "SELECT name + 1 FROM images",
            "line 1, column 8: Error during planning: Cannot coerce arithmetic expression Utf8 + Int64",
        ),
        ("SELECT * FROM checkin('/nonexistent/disk.img', 'x')", "/nonexistent/disk.img"),
    ];
    for (query, hint) in cases {
        let out = lib.command().args(["sql", "-c", query]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{query}: {err}");
        assert_eq!(err.lines().count(), 1, "{query}: one line, got {err}");
        assert!(err.starts_with("error: ") && err.contains(hint), "{query}: {err}");
        assert!(!err.contains("panicked"), "{query}: {err}");
    }
    // A file the image lacks reads as NULL, so one query can ask every image.
    let rows = lib
        .sql("SELECT read_text('small', '/etc/missing') IS NULL AS missing, read_text('small', '/etc/motd') AS motd");
    assert_eq!(rows[0]["missing"], true);
    assert_eq!(rows[0]["motd"], "hi\n");
}

/// Each checkin appends a fragment to every table; once eight are small the checkin compacts
/// them. Afterwards the rows, the indexes, reads and checkouts are all still right.
#[test]
fn many_checkins_are_compacted_and_still_answered_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let lib = Library::new();
    let src = dir.path().join("tree");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/motd"), "shared by all\n").unwrap();
    let images = 10;
    for i in 0..images {
        std::fs::write(src.join("etc/host"), format!("host {i}\n")).unwrap();
        let img = dir.path().join(format!("{i}.img"));
        mkfs_ext(&src, &img, "ext4", "8M", &[]);
        lib.checkin(&img, &format!("host-{i}"));
    }
    // Read through Lance, as a library too large to be kept in memory is.
    let through_lance = |sql: &str| {
        let out = run(lib.command().env("IMAGELAKE_KEEP_ROWS", "0").args(["sql", "--format", "json", "-c", sql]));
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
    };
    let explain = through_lance("EXPLAIN SELECT image_id FROM files WHERE path = '/etc/host'");
    let plan = explain.iter().map(|r| r["plan"].as_str().unwrap().to_string()).collect::<Vec<_>>().join("\n");
    let fragments: usize = plan
        .split("num_fragments=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fragment count in\n{plan}"));
    assert!(fragments < images, "{fragments} fragments after {images} checkins:\n{plan}");
    let analyzed = through_lance("EXPLAIN ANALYZE SELECT image_id FROM files WHERE path = '/etc/host'");
    assert!(analyzed[0]["plan"].as_str().unwrap().contains("ScalarIndexQuery"), "{analyzed:?}");

    let rows = lib.sql(
        "SELECT i.name, read_text(i.name, '/etc/host') AS host FROM files f JOIN images i USING (image_id) \
         WHERE f.path = '/etc/host' ORDER BY i.name",
    );
    let got: Vec<(String, String)> =
        rows.iter().map(|r| (r["name"].as_str().unwrap().into(), r["host"].as_str().unwrap().into())).collect();
    let mut expected: Vec<(String, String)> =
        (0..images).map(|i| (format!("host-{i}"), format!("host {i}\n"))).collect();
    expected.sort();
    assert_eq!(got, expected);
    let motd = lib.sql("SELECT count(DISTINCT image_id) AS n FROM files WHERE path = '/etc/motd'");
    assert_eq!(motd[0]["n"], images as u64);

    let check: serde_json::Value = serde_json::from_str(&run(lib.command().args(["check", "--json"]))).unwrap();
    assert_eq!(check["problems"], serde_json::json!([]), "{check}");
    for i in [0, images - 1] {
        let out = dir.path().join("out.img");
        lib.checkout(&format!("host-{i}"), &out);
        assert_same_bytes(&dir.path().join(format!("{i}.img")), &out);
    }
}

/// A checkout replaces only its own earlier output, unless told to; other formats come
/// through qemu-img; a bad format is a one-line error.
#[test]
fn checkout_replaces_only_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let img = small_image(dir.path());
    let lib = Library::new();
    lib.checkin(&img, "small");
    let p = |name: &str| dir.path().join(name);

    std::fs::write(p("precious"), "not a checkout\n").unwrap();
    let refused = lib.command().args(["checkout", "small"]).arg(p("precious")).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("--force") && err.lines().count() == 1, "{err}");
    assert_eq!(std::fs::read_to_string(p("precious")).unwrap(), "not a checkout\n");
    run(lib.command().args(["checkout", "small"]).arg(p("precious")).arg("--force"));
    assert_same_bytes(&img, &p("precious"));

    // Its own earlier output: replaced without asking, in another format too.
    lib.checkout("small", &p("out"));
    run(lib.command().args(["checkout", "small@1"]).arg(p("out")).args(["--format", "vmdk"]));
    let info: serde_json::Value =
        serde_json::from_str(&run(Command::new("qemu-img").args(["info", "--output=json"]).arg(p("out")))).unwrap();
    assert_eq!(info["format"], "vmdk");
    run(Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "vmdk"]).arg(&img).arg(p("out")));
    // Another library's output is not this one's.
    let other = Library::new();
    other.checkin(&img, "small");
    assert!(!other.command().args(["checkout", "small"]).arg(p("out")).output().unwrap().status.success());

    // --update rewrites only a raw disk.
    std::fs::write(p("short"), "too short\n").unwrap();
    let mut update = lib.command();
    let update = update.args(["checkout", "small", "--update", "--force", "--format", "qcow2"]).arg(p("short"));
    let update = update.output().unwrap();
    let err = String::from_utf8_lossy(&update.stderr);
    assert!(!update.status.success() && err.contains("raw disks only") && err.lines().count() == 1, "{err}");
    assert_eq!(std::fs::read_to_string(p("short")).unwrap(), "too short\n");

    let bad = lib.command().args(["checkout", "small"]).arg(p("new")).args(["--format", "vmdk;rm"]).output().unwrap();
    assert!(!bad.status.success() && !p("new").exists(), "{bad:?}");
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1, "{bad:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Delta deployment between versions whose disks differ in size, as a cloud disk grows: a GPT
/// disk grown by 32 MiB (its backup table moved to the new end with `sgdisk -e`, its root
/// partition made anew to reach it, as growpart does), deployed over a checkout of the smaller
/// one and back again, and onto block devices (loop devices), where a disk must fit.
#[test]
fn delta_deployment_across_disk_sizes_and_onto_devices() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::create_dir_all(p("tree/etc")).unwrap();
    std::fs::write(p("tree/etc/motd"), "hi\n").unwrap();
    std::fs::write(p("tree/data"), unique_bytes("deploy", 6 << 20)).unwrap();
    mkfs_ext(&p("tree"), &p("root.img"), "ext4", "24M", &[]);
    mkfs_vfat(&p("esp.img"), 8192);
    gpt_disk(&p("small.img"), &p("root.img"), &p("esp.img"));
    std::fs::copy(p("small.img"), p("big.img")).unwrap();
    run(Command::new("truncate").arg("-s+32M").arg(p("big.img")));
    run(Command::new("sgdisk").arg("-e").arg(p("big.img")));
    let root_start = (2048 + 2048 + 8 * 2048).to_string();
    run(Command::new("sgdisk").args(["-d3", &format!("-n3:{root_start}:0"), "-t3:8300", "-c3:root"]).arg(p("big.img")));
    let size = |name: &str| std::fs::metadata(p(name)).unwrap().len();
    let (small, big) = (size("small.img"), size("big.img"));

    let lib = Library::new();
    lib.checkin(&p("small.img"), "vm");
    lib.checkin(&p("big.img"), "vm");
    let full = lib.checkout("vm@2", &p("full"))["bytes_written"].as_u64().unwrap();
    lib.checkout("vm@1", &p("out"));
    let deploy = |spec: &str, out: &std::path::Path| -> serde_json::Value {
        let done = run(lib.command().args(["checkout", spec, "--update", "--force", "--json"]).arg(out));
        serde_json::from_str(&done).unwrap()
    };
    // Grown: the disk comes out as vm@2's, and only the partition tables and the old backup
    // table's blocks are written.
    let grown = deploy("vm@2", &p("out"));
    assert_same_bytes(&p("big.img"), &p("out"));
    let written = grown["bytes_written"].as_u64().unwrap();
    eprintln!("grown from {small} to {big} bytes: {written} written, a full checkout {full}");
    assert_eq!((grown["resized_from"].as_u64(), grown["previous"].as_str()), (Some(small), Some("vm@1")), "{grown}");
    assert_eq!(grown["unexpected_blocks"].as_u64(), Some(0), "{grown}");
    assert!(written > 0 && written <= 64 << 10 && written * 50 < full, "{grown}");
    // And cut back.
    let cut = deploy("vm@1", &p("out"));
    assert_same_bytes(&p("small.img"), &p("out"));
    assert_eq!(cut["resized_from"].as_u64(), Some(big), "{cut}");
    assert!(cut["bytes_written"].as_u64().unwrap() <= 64 << 10, "{cut}");

    // A block device too small for the disk is refused with both sizes, and left as it was.
    run(Command::new("truncate").arg(format!("-s{small}")).arg(p("small-device")));
    let device = LoopDevice::over(&p("small-device"), 0, None);
    let refused = lib.command().args(["checkout", "vm@2", "--update", "--force"]).arg(&device.path).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.lines().count() == 1, "{err}");
    assert!(err.contains(&format!("holds {small} bytes, too few for the {big} bytes of vm@2")), "{err}");
    assert!(std::fs::read(p("small-device")).unwrap().iter().all(|&b| b == 0));
    // One big enough takes the disk at its start and keeps what lies past the disk's end.
    let mut before = unique_bytes("device", big as usize);
    before[..small as usize].fill(0);
    std::fs::write(p("big-device"), &before).unwrap();
    let device = LoopDevice::over(&p("big-device"), 0, None);
    let onto = deploy("vm@1", &device.path);
    drop(device);
    assert_eq!(onto["resized_from"], serde_json::Value::Null, "{onto}");
    let after = std::fs::read(p("big-device")).unwrap();
    assert_eq!(after.len() as u64, big);
    assert!(after[..small as usize] == std::fs::read(p("small.img")).unwrap()[..], "the disk at the device's start");
    assert!(after[small as usize..] == before[small as usize..], "the rest of the device as it was");
}

/// Where the deployed version has zeros and the disk file held data, the blocks are made
/// holes rather than written with zeros: nothing is written for them and they take no room;
/// a block device gets zeros written, since a discard need not read back as zeros.
#[test]
fn delta_deployment_makes_holes_where_the_version_has_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    // Two bare disks (stored raw): b is a with its second MiB zeroed and one byte changed in
    // its fourth (a 100-byte zero run there stays inside one block, so it is written).
    let a = unique_bytes("holes", 4 << 20);
    let mut b = a.clone();
    b[1 << 20..2 << 20].fill(0);
    b[(3 << 20) + 10..(3 << 20) + 110].fill(0);
    std::fs::write(p("a.img"), &a).unwrap();
    std::fs::write(p("b.img"), &b).unwrap();
    let lib = Library::new();
    for (image, name) in [("a.img", "a"), ("b.img", "b")] {
        run(lib.command().args(["checkin", "--raw-on-error", "--name", name]).arg(p(image)));
    }
    lib.checkout("a", &p("out"));
    let allocated =
        |path: &std::path::Path| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512;
    let before = allocated(&p("out"));
    let done = run(lib.command().args(["checkout", "b", "--update", "--force", "--json"]).arg(p("out")));
    let done: serde_json::Value = serde_json::from_str(&done).unwrap();
    assert_same_bytes(&p("b.img"), &p("out"));
    assert_eq!(done["bytes_punched"].as_u64(), Some(1 << 20), "{done}");
    assert_eq!(done["bytes_written"].as_u64(), Some(4096), "the block with the short zero run: {done}");
    assert!(allocated(&p("out")) <= before - (1 << 20), "a MiB freed: {} then {}", before, allocated(&p("out")));

    // Onto a device, the same blocks are written with zeros.
    std::fs::write(p("device"), &a).unwrap();
    let device = LoopDevice::over(&p("device"), 0, None);
    let onto = run(lib.command().args(["checkout", "b", "--update", "--force", "--json"]).arg(&device.path));
    drop(device);
    let onto: serde_json::Value = serde_json::from_str(&onto).unwrap();
    assert_same_bytes(&p("b.img"), &p("device"));
    assert_eq!(
        (onto["bytes_punched"].as_u64(), onto["bytes_written"].as_u64()),
        (Some(0), Some((1 << 20) + 4096)),
        "{onto}"
    );
}
