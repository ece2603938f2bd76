//! A whole library on a bucket (`-L s3://BUCKET/PREFIX`), driven through the CLI against the
//! S3-compatible server the tests run: writer processes racing on one name, a writer stopped
//! past its lease while gc runs, checkins killed at each phase, a checkout through a repack,
//! gc racing checkins, every command once, and `serve` to the ADBC Flight SQL driver.

use imagelake_engine::storage::{Bucket, S3Settings};
use imagelake_tests::s3::{self, S3Server};
use imagelake_tests::{assert_same_bytes, imagelake_bin, mkfs_ext, run, unique_bytes, venv_python};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A test's S3-compatible server, its work folder, and the library under `PREFIX` there.
struct Setup {
    server: S3Server,
    work: tempfile::TempDir,
    prefix: &'static str,
    /// `IMAGELAKE_LEASE_SECONDS` for every command, if not the default.
    lease_seconds: Option<&'static str>,
}

impl Setup {
    fn new(prefix: &'static str) -> Setup {
        Setup { server: S3Server::start(), work: tempfile::tempdir().unwrap(), prefix, lease_seconds: None }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// The CLI on the library, its scratch folder in the work folder.
    fn cli(&self) -> Command {
        let mut cmd = Command::new(imagelake_bin());
        cmd.arg("-L").arg(self.server.url(self.prefix)).envs(self.server.env());
        cmd.env("IMAGELAKE_SCRATCH", self.path("scratch"));
        if let Some(seconds) = self.lease_seconds {
            cmd.env("IMAGELAKE_LEASE_SECONDS", seconds);
        }
        cmd
    }

    /// The command's JSON output (`--json` is added).
    fn json(&self, args: &[&str]) -> serde_json::Value {
        json(run(self.cli().args(args).arg("--json")).as_bytes())
    }

    /// The library's objects, read directly.
    fn bucket(&self) -> Bucket {
        let settings = (self.server.env().into_iter())
            .fold(S3Settings::default(), |settings, (key, value)| settings.with(&key.to_ascii_lowercase(), &value));
        Bucket::open(&settings, s3::BUCKET, self.prefix).unwrap()
    }

    fn sql(&self, query: &str) -> Vec<serde_json::Value> {
        serde_json::from_str(&run(self.cli().args(["sql", "--format", "json", "-c", query]))).unwrap()
    }

    /// Checks `spec` out and compares it with `expected`, byte for byte.
    fn assert_checkout(&self, spec: &str, expected: &Path) {
        let out = self.path("checkout.img");
        run(self.cli().arg("checkout").arg(spec).arg(&out).arg("--force"));
        assert_same_bytes(expected, &out);
    }
}

/// An ext4 disk holding the `shared` bytes every disk has and `own` bytes of its own.
fn disk(work: &Path, name: &str, shared: &[u8], own: &[u8]) -> PathBuf {
    let tree = work.join(format!("{name}-tree"));
    std::fs::create_dir_all(tree.join("srv")).unwrap();
    std::fs::write(tree.join("srv/shared.bin"), shared).unwrap();
    std::fs::write(tree.join("srv/own.bin"), own).unwrap();
    let image = work.join(format!("{name}.img"));
    mkfs_ext(&tree, &image, "ext4", "24M", &[]);
    image
}

fn json(out: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Four processes check images in under one name at once: they get versions 1 to 4, one
/// each; each version checks out byte-exact; an image checked in again adds next to nothing
/// (writers at once do not see each other's new chunks; one after them sees them all);
/// verify finds the library whole; no lease is left behind; each version was claimed once.
#[test]
fn four_processes_check_in_under_one_name_at_once() {
    let setup = Setup::new("fleet");
    let shared = unique_bytes("shared", 6 << 20);
    let disks: Vec<PathBuf> = (0..4)
        .map(|i| disk(setup.work.path(), &format!("web{i}"), &shared, &unique_bytes(&format!("own{i}"), 1 << 20)))
        .collect();

    let writers: Vec<std::process::Child> = disks
        .iter()
        .map(|disk| {
            let mut cmd = setup.cli();
            cmd.arg("checkin").arg(disk).args(["--name", "web", "--json"]);
            cmd.stdout(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let summaries: Vec<serde_json::Value> = writers
        .into_iter()
        .map(|writer| {
            let done = writer.wait_with_output().unwrap();
            assert!(done.status.success(), "a checkin failed (its error is above)");
            json(&done.stdout)
        })
        .collect();
    let mut versions: Vec<i64> = summaries.iter().map(|s| s["version"].as_i64().unwrap()).collect();
    versions.sort();
    assert_eq!(versions, [1, 2, 3, 4], "one version each, no gap");

    // The catalog agrees, and every version is its own disk, byte for byte.
    let rows = setup.sql("SELECT version FROM images WHERE name = 'web' ORDER BY version");
    assert_eq!(rows.iter().map(|r| r["version"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for (summary, disk) in summaries.iter().zip(&disks) {
        setup.assert_checkout(&format!("web@{}", summary["version"]), disk);
    }

    let again = setup.json(&["checkin", disks[0].to_str().unwrap(), "--name", "again"]);
    assert!(again["bytes_new"].as_u64().unwrap() < 256 << 10, "a disk checked in twice adds nearly nothing: {again}");
    assert_intact(&setup.json(&["verify"]));

    let leases: Vec<String> = setup.bucket().list("leases").unwrap().into_iter().map(|o| o.key).collect();
    assert!(leases.is_empty(), "every lease was released: {leases:?}");
    let claims = setup.bucket().list("claims/versions/web").unwrap();
    assert_eq!(claims.len(), 4, "each version claimed once: {claims:?}");
    let left: Vec<_> = std::fs::read_dir(setup.path("scratch")).unwrap().collect();
    assert!(left.is_empty(), "nothing left in the scratch folder: {left:?}");
}

/// A writer stopped (SIGSTOP) past its lease: gc does not wait for it, takes its lease over
/// and frees what only it used; the writer, let go on, refuses to commit; the library stays
/// whole, and the image checks in again afterwards.
#[test]
fn a_writer_stopped_past_its_lease_lets_gc_proceed_and_then_fails_to_commit() {
    let setup = Setup { lease_seconds: Some("2"), ..Setup::new("stopped") };
    let first = disk(setup.work.path(), "first", &unique_bytes("a", 2 << 20), &unique_bytes("b", 1 << 20));
    let second = disk(setup.work.path(), "second", &unique_bytes("c", 2 << 20), &unique_bytes("d", 1 << 20));
    run(setup.cli().arg("checkin").arg(&first).args(["--name", "kept"]));

    let (mut writer, mut trace) =
        start_until(setup.cli().arg("checkin").arg(&second).args(["--name", "stopped"]), "checkin: rows appended");
    signal(&writer, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(4));
    let gc = wait_at_most(setup.cli().arg("gc").stdout(Stdio::null()).spawn().unwrap(), Duration::from_secs(120));
    assert!(gc.status.success(), "gc ran past the stopped writer");

    signal(&writer, libc::SIGCONT);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut trace, &mut rest).unwrap();
    assert!(!writer.wait().unwrap().success(), "the writer whose lease was taken over must not commit: {rest}");
    assert!(rest.contains("lease was taken over"), "the writer says why: {rest}");

    let names = setup.sql("SELECT name FROM images ORDER BY name");
    assert_eq!(names.iter().map(|r| r["name"].as_str().unwrap()).collect::<Vec<_>>(), ["kept"]);
    assert_intact(&setup.json(&["verify"]));
    run(setup.cli().arg("checkin").arg(&second).args(["--name", "stopped"]));
    setup.assert_checkout("stopped", &second);
}

/// A checkin killed (SIGKILL) at each phase leaves leftovers that `check` lists once their
/// leases are dead, and that `check --reclaim` removes: the dead leases, and the rows of the
/// uncommitted image id once it has any (its packs, which no row points into, are gc's).
/// verify then finds the library whole, and a checkin killed after its commit has its
/// version, byte-exact.
#[test]
fn a_checkin_killed_at_each_phase_leaves_leftovers_that_check_reclaims() {
    let setup = Setup { lease_seconds: Some("2"), ..Setup::new("killed") };
    let kept = disk(setup.work.path(), "kept", &unique_bytes("kept", 1 << 20), &unique_bytes("k", 1 << 20));
    run(setup.cli().arg("checkin").arg(&kept).args(["--name", "kept"]));
    // Each phase, whether the checkin has rows by then (packs only, before its rows), and
    // whether it has committed.
    let phases = [
        ("checkin: disk read, new chunks stored", false, false),
        ("checkin: rows appended", true, false),
        ("commit: provenance appended", true, false),
        ("checkin: committed", true, true),
    ];
    for (round, (phase, rows, committed)) in phases.into_iter().enumerate() {
        let orphaned = rows && !committed;
        let disk = disk(setup.work.path(), &format!("round{round}"), &unique_bytes(phase, 2 << 20), &[]);
        let (mut child, _) = start_until(setup.cli().arg("checkin").arg(&disk).args(["--name", "killed"]), phase);
        signal(&child, libc::SIGKILL);
        child.wait().unwrap();

        // Past the dead checkin's term (2 s, and the second the server's stamps may lag).
        std::thread::sleep(Duration::from_millis(3500));
        let found = setup.json(&["check"]);
        assert_eq!(found["problems"], serde_json::json!([]), "{phase}: {found}");
        assert!(!found["dead_leases"].as_array().unwrap().is_empty(), "{phase}: its leases are listed dead: {found}");
        let orphans = found["orphan_image_ids"].as_array().unwrap();
        assert_eq!(!orphans.is_empty(), orphaned, "{phase}: an uncommitted checkin's rows are leftovers: {found}");
        run(setup.cli().args(["check", "--reclaim"]));
        let after = setup.json(&["check"]);
        for leftover in ["problems", "orphan_image_ids", "stale_files", "dead_leases"] {
            assert_eq!(after[leftover], serde_json::json!([]), "{phase}: {leftover} after reclaim: {after}");
        }
        assert_intact(&setup.json(&["verify"]));

        let versions = setup.sql("SELECT count(*) AS n FROM images WHERE name = 'killed'");
        let expected = phases[..=round].iter().filter(|(.., committed)| *committed).count();
        assert_eq!(versions[0]["n"].as_u64().unwrap() as usize, expected, "{phase}: {versions:?}");
        if committed {
            setup.assert_checkout("killed", &disk);
        }
    }
    assert!(setup.bucket().list("leases").unwrap().is_empty(), "no lease is left");
}

/// A checkout that read its extents before a repack (stopped there meanwhile) reads on
/// through the repack and its prune, which keeps the packs it needs while its reader lease
/// lives: it comes out byte-exact; `check --reclaim` then deletes them, and a checkout from
/// the new packs is byte-exact too.
#[test]
fn a_checkout_running_through_a_repack_and_its_prune_is_byte_exact() {
    let setup = Setup::new("repacked");
    let image = disk(setup.work.path(), "big", &unique_bytes("big", 8 << 20), &unique_bytes("more", 4 << 20));
    run(setup.cli().arg("checkin").arg(&image).args(["--name", "big"]));
    let packs =
        |setup: &Setup| -> Vec<String> { setup.bucket().list("packs").unwrap().into_iter().map(|o| o.key).collect() };
    let before = packs(&setup);

    let out = setup.path("through.img");
    let (mut checkout, _trace) = start_until(setup.cli().args(["checkout", "big"]).arg(&out), "checkout: extents read");
    signal(&checkout, libc::SIGSTOP);
    let repacked = setup.json(&["repack"]);
    assert_eq!(
        repacked["prune"]["readers_in_flight"], true,
        "the stopped checkout's lease holds the prune: {repacked}"
    );
    assert!(before.iter().all(|p| packs(&setup).contains(p)), "the old packs stay meanwhile");
    signal(&checkout, libc::SIGCONT);
    assert!(checkout.wait().unwrap().success(), "the checkout finished");
    assert_same_bytes(&image, &out);

    let reclaimed = setup.json(&["check", "--reclaim"]);
    assert!(reclaimed["reclaimed"]["pruned"]["packs_deleted"].as_u64().unwrap() > 0, "{reclaimed}");
    let after = packs(&setup);
    assert!(before.iter().all(|p| !after.contains(p)), "the old packs went: {before:?} {after:?}");
    setup.assert_checkout("big", &image);
}

/// gc racing checkins, 50 times at random offsets: each round deletes the newest version and
/// checks in a disk that shares its chunks while gc purges it, so gc would free chunks the
/// checkin has just found stored. Whatever the interleaving, no version points at a missing
/// chunk (check finds no problem) and the new version checks out byte-exact.
#[test]
fn gc_racing_checkins_never_frees_a_chunk_a_version_needs() {
    let setup = Setup::new("raced");
    let shared = unique_bytes("shared", 3 << 20);
    let disks = [
        disk(setup.work.path(), "even", &shared, &unique_bytes("even", 256 << 10)),
        disk(setup.work.path(), "odd", &shared, &unique_bytes("odd", 256 << 10)),
    ];
    run(setup.cli().arg("checkin").arg(&disks[1]).args(["--name", "raced"]));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..50 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        run(setup.cli().args(["delete", "raced"]));
        let disk = &disks[round % 2];
        let checkin = setup.cli().arg("checkin").arg(disk).args(["--name", "raced"]).stdout(Stdio::null()).spawn();
        std::thread::sleep(Duration::from_millis(seed % 2500));
        let gc = setup.cli().arg("gc").stdout(Stdio::null()).spawn().unwrap();
        let limit = Duration::from_secs(300);
        let (checkin, gc) = (wait_at_most(checkin.unwrap(), limit), wait_at_most(gc, limit));
        assert!(checkin.status.success() && gc.status.success(), "round {round}: both finish");

        let found = setup.json(&["check"]);
        assert_eq!(found["problems"], serde_json::json!([]), "round {round}: {found}");
        setup.assert_checkout("raced", disk);
    }
    assert_intact(&setup.json(&["verify"]));
}

/// Every command on a bucket library, each checked against what it must have done: edits make
/// versions whose files read back changed, export writes the tree, clone stores nothing,
/// delete, undelete and gc purge, repack keeps checkouts byte-exact, users and grants live in
/// the bucket's access.json, a FUSE mount serves the files to the kernel, and check, verify
/// and `check --reclaim` find the library whole.
#[test]
fn every_command_works_on_a_bucket_library() {
    let setup = Setup::new("every/command");
    let cli = || setup.cli();
    let tree = setup.path("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("srv")).unwrap();
    std::fs::write(tree.join("etc/motd"), "hello from the bucket\n").unwrap();
    std::fs::write(tree.join("srv/data.bin"), unique_bytes("data", 3 << 20)).unwrap();
    let image = setup.path("base.img");
    mkfs_ext(&tree, &image, "ext4", "16M", &[]);
    run(cli().arg("checkin").arg(&image).args(["--name", "base"]));
    assert_eq!(run(cli().args(["cat", "base", "/etc/motd"])), "hello from the bucket\n");

    // Edits: each makes the next version, read back through the catalog and the packs.
    let motd = setup.path("motd");
    std::fs::write(&motd, "edited on a bucket\n").unwrap();
    run(cli().args(["replace-content", "base", "/etc/motd"]).arg(&motd));
    assert_eq!(run(cli().args(["cat", "base@2", "/etc/motd"])), "edited on a bucket\n");
    run(cli().args(["remove", "base", "/srv/data.bin"]));
    let gone = imagelake_tests::attempt(cli().args(["cat", "base@3", "/srv/data.bin"]));
    assert!(!gone.status.success(), "base@3 has no /srv/data.bin");
    let cloned = setup.json(&["clone", "base@1", "copy"]);
    assert_eq!(cloned["version"], 1, "{cloned}");
    // Patch: diff(base@1, base@2) carried onto the clone.
    run(cli().args(["patch", "copy", "base@1", "base@2"]));
    assert_eq!(run(cli().args(["cat", "copy@2", "/etc/motd"])), "edited on a bucket\n");
    let log = run(cli().args(["log", "base"]));
    assert!(log.contains("replace_content") && log.contains("remove"), "{log}");

    let exported = setup.path("exported");
    run(cli().args(["export", "base@2"]).arg(&exported));
    assert_eq!(std::fs::read_to_string(exported.join("etc/motd")).unwrap(), "edited on a bucket\n");
    assert_eq!(
        std::fs::read(exported.join("srv/data.bin")).unwrap(),
        std::fs::read(tree.join("srv/data.bin")).unwrap()
    );

    // delete, undelete, delete; gc purges; repack rewrites; checkouts stay byte-exact.
    let before = setup.path("before.img");
    run(cli().args(["checkout", "base@2"]).arg(&before));
    run(cli().args(["delete", "base@3"]));
    run(cli().args(["undelete", "base@3"]));
    run(cli().args(["delete", "base@3"]));
    let gc = setup.json(&["gc"]);
    assert_eq!(gc["purged"], serde_json::json!(["base@3"]), "{gc}");
    run(cli().args(["repack"]));
    setup.assert_checkout("base@2", &before);
    setup.assert_checkout("copy@1", &image);

    // Users and grants: in the bucket's access.json.
    let mut add = cli().args(["user", "add", "ana"]).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(add.stdin.as_mut().unwrap(), b"a long enough password\n").unwrap();
    assert!(add.wait().unwrap().success());
    run(cli().args(["grant", "ana", "read", "on", "base*"]));
    let users = run(cli().args(["user", "list"]));
    assert!(users.contains("ana") && users.contains("base*"), "{users}");
    assert!(setup.bucket().get("access.json").unwrap().is_some(), "access.json is on the bucket");

    // A read-only FUSE mount, read by the kernel's own tools.
    let mnt = setup.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run(cli().args(["mount", "base@2"]).arg(&mnt));
    let read = std::fs::read_to_string(mnt.join("etc/motd"));
    run(cli().arg("unmount").arg(&mnt));
    assert_eq!(read.unwrap(), "edited on a bucket\n");

    let checked = setup.json(&["check"]);
    assert_eq!(checked["problems"], serde_json::json!([]), "{checked}");
    run(cli().args(["check", "--reclaim"]));
    assert_intact(&setup.json(&["verify"]));
}

/// `serve` on a bucket library: the ADBC Flight SQL driver logs in as a user whose grant (in
/// the bucket's access.json) covers one of two images, and sees that image alone: its row,
/// its file's content, and the other image answering as a missing one.
#[test]
fn serve_on_a_bucket_answers_adbc_within_the_grants() {
    let setup = Setup::new("served");
    let cli = || setup.cli();
    for name in ["web", "db"] {
        let tree = setup.path(&format!("{name}-tree"));
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hostname"), format!("{name}\n")).unwrap();
        let image = setup.path(&format!("{name}.img"));
        mkfs_ext(&tree, &image, "ext4", "8M", &[]);
        run(cli().arg("checkin").arg(&image).args(["--name", name]));
    }
    let mut add = cli().args(["user", "add", "ana"]).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(add.stdin.as_mut().unwrap(), b"a long enough password\n").unwrap();
    assert!(add.wait().unwrap().success());
    run(cli().args(["grant", "ana", "read", "on", "web"]));

    let mut serve = cli().args(["serve", "--listen", "127.0.0.1:0"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let uri = line.trim().strip_prefix("listening on ").map(str::to_string);
    let script = r#"
import sys
import adbc_driver_flightsql.dbapi as flightsql
login = {"username": "ana", "password": "a long enough password"}
with flightsql.connect(sys.argv[1], db_kwargs=login, autocommit=True) as conn:
    cur = conn.cursor()
    cur.execute("SELECT name, version FROM images ORDER BY name")
    print(cur.fetchall())
    cur.execute("SELECT read_text('web', '/etc/hostname')")
    print(cur.fetchall())
    try:
        cur.execute("SELECT * FROM ls('db', '/')")
        print("db is visible", cur.fetchall())
    except Exception as e:
        print("db:", "no image" in str(e) or "not found" in str(e).lower())
"#;
    let out = uri.as_ref().map(|uri| Command::new(venv_python()).arg("-c").arg(script).arg(uri).output().unwrap());
    let _ = serve.kill();
    let _ = serve.wait();
    let out = out.unwrap_or_else(|| panic!("serve printed {line:?}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.lines().collect::<Vec<_>>(), ["[('web', 1)]", "[('web\\n',)]", "db: True"], "{text}");
}

/// A verify report (the command succeeds only then) that found nothing damaged.
fn assert_intact(verified: &serde_json::Value) {
    assert!(verified["chunks"].as_u64().unwrap() > 0, "{verified}");
    assert_eq!(verified["damaged"], serde_json::json!([]), "{verified}");
    assert_eq!(verified["damaged_packs"], serde_json::json!([]), "{verified}");
}

/// Runs `cmd` with `IMAGELAKE_TRACE=1`, reads its trace until a line holds `phase`, and
/// returns the running child with the rest of its trace (it ending first fails the test).
// The child is handed to the caller, who waits for it; clippy sees only this function.
#[allow(clippy::zombie_processes)]
fn start_until(cmd: &mut Command, phase: &str) -> (std::process::Child, BufReader<std::process::ChildStderr>) {
    let mut child = cmd.env("IMAGELAKE_TRACE", "1").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut trace = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        if trace.read_line(&mut line).unwrap() == 0 {
            panic!("it ended ({:?}) before {phase:?}: {said}", child.wait());
        }
        said.push_str(&line);
        if line.contains(phase) {
            return (child, trace);
        }
    }
}

fn signal(child: &std::process::Child, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
}

/// Waits for `child`, killing it (and failing) if it runs longer than `limit`.
fn wait_at_most(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}
