//! The slow boot test: Mirage's deployer scenario with a kernel and a boot loader
//! (tests/images/boot-trees.sh: A.0 = minbase + linux-image-amd64, systemd and extlinux;
//! A.1 = A.0 + less, bc and a new motd; B.1 = A.0 + nginx-light and a system user), B.2 =
//! `patch(B.1, A.0, A.1)` made offline, then booted under `qemu-system-x86_64` (software
//! emulation, serial console) to a login prompt; then root logs in on the console, and the
//! running system must show A.1's motd, less, bc and nginx-light installed, and the nginx
//! user.
//!
//! Not in scripts/test.sh: the first run debootstraps and installs qemu-system-x86, and the
//! boot takes minutes. Run it with `cargo test --test boot -- --ignored`.

use imagelake_tests::*;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Under software emulation a Debian kernel and systemd reach a login prompt in one to a few
/// minutes on these machines; past this, the boot has failed.
const BOOT_LIMIT: Duration = Duration::from_secs(900);

#[test]
#[ignore = "slow: boots a patched image under qemu for minutes; cargo test --test boot -- --ignored"]
fn a_patched_image_boots_to_a_login_prompt() {
    let scenario = PathBuf::from(
        run(Command::new("bash").arg(repo_root().join("tests/images/boot-trees.sh")).arg(cache_dir())).trim(),
    );
    let lib = Library::new();
    lib.checkin(&scenario.join("k0.raw"), "a");
    lib.checkin(&scenario.join("k1.raw"), "a");
    lib.checkin(&scenario.join("kb1.raw"), "b");
    let out = run(lib.command().args(["patch", "b@1", "a@1", "a@2", "--json"]));
    let summary: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(summary["conflicts"].as_u64(), Some(0), "{out}");
    assert_eq!(summary["made"]["version"].as_i64(), Some(2), "{out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("b2.raw");
    lib.checkout("b@2", &disk);
    // The serial console on qemu's standard input and output: read in a thread, answered here.
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-m", "1024", "-smp", "2", "-display", "none", "-no-reboot", "-monitor", "none", "-serial", "stdio"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 (tests/images/boot-trees.sh installs it)");
    let console = Arc::new(Mutex::new(String::new()));
    let mut stdout = qemu.stdout.take().expect("stdout");
    let reader = {
        let console = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut c) = console.lock() {
                    c.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        })
    };
    let mut stdin = qemu.stdin.take().expect("stdin");
    let started = Instant::now();
    // Waits until the console shows `text` after byte `from`; returns where it ends.
    let wait_for = |text: &str, from: usize| -> Option<usize> {
        while started.elapsed() < BOOT_LIMIT {
            if let Some(at) = console
                .lock()
                .ok()
                .and_then(|c| c.get(from..).and_then(|s| s.find(text)).map(|i| from + i + text.len()))
            {
                return Some(at);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        None
    };
    let tail = || {
        let c = console.lock().map(|c| c.clone()).unwrap_or_default();
        c.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    let login = wait_for("boot-scenario login:", 0);
    let seconds = started.elapsed().as_secs();
    let Some(login) = login else {
        let _ = qemu.kill();
        panic!("B.2 did not reach a login prompt in {seconds} s; serial console:\n{}", tail());
    };
    eprintln!("B.2 reached its login prompt in {seconds} s under emulation");
    // Log in and ask the running system what it is.
    stdin.write_all(b"root\n").expect("console");
    let prompt =
        wait_for("root@boot-scenario:~#", login).unwrap_or_else(|| panic!("no shell after login:\n{}", tail()));
    stdin
        .write_all(b"cat /etc/motd; dpkg-query -W -f '${Package} ${Status}\\n' less bc nginx-light; id nginx; echo END-OF-$((6*7))\n")
        .expect("console");
    // The console echoes the command line: the marker is computed, so only its output matches.
    let end = wait_for("END-OF-42", prompt);
    stdin.write_all(b"poweroff\n").expect("console");
    let answer = console.lock().map(|c| c[prompt..end.unwrap_or(c.len()).min(c.len())].to_string()).unwrap_or_default();
    let stopped = (0..120).any(|_| {
        std::thread::sleep(Duration::from_secs(1));
        qemu.try_wait().ok().flatten().is_some()
    });
    if !stopped {
        let _ = qemu.kill();
    }
    let _ = qemu.wait();
    let _ = reader.join();
    assert!(end.is_some(), "the checks did not finish:\n{}", tail());
    assert!(answer.contains("A.1: updated by the OS team"), "the running B.2 lacks A.1's motd:\n{answer}");
    for package in ["less", "bc", "nginx-light"] {
        assert!(
            answer.contains(&format!("{package} install ok installed")),
            "the running B.2 lacks {package}:\n{answer}"
        );
    }
    assert!(answer.contains("uid=") && answer.contains("(nginx)"), "the running B.2 lacks the nginx user:\n{answer}");
    assert!(stopped, "B.2 did not power off");
}
