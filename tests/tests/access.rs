//! Users and grants through the `imagelake` binary (issue 20): `user add|remove|list|passwd|
//! revoke-tokens`, `grant` and `revoke`, passwords from standard input, what the access file
//! holds on disk, and bad names, rights and patterns refused with exit status 2.

use imagelake_tests::{Library, attempt};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `cmd` with `input` on standard input (a pipe, not a terminal).
fn with_input(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{out:?}\n{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts exit status 2 and a message holding every one of `words`.
fn refused(out: Output, words: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let message = stderr(&out);
    assert!(message.starts_with("error: "), "{message}");
    for word in words {
        assert!(message.contains(word), "{word:?} not in {message:?}");
    }
}

fn list(lib: &Library) -> serde_json::Value {
    let text = ok(attempt(lib.command().args(["user", "list", "--json"])));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("user list is not JSON ({e}): {text}"))
}

fn add(lib: &Library, name: &str, password: &str, admin: bool) {
    let mut cmd = lib.command();
    cmd.args(["user", "add", name]);
    if admin {
        cmd.arg("--admin");
    }
    ok(with_input(&mut cmd, &format!("{password}\n")));
}

#[test]
fn users_and_grants_from_the_command_line() {
    let lib = Library::new();
    assert_eq!(list(&lib), serde_json::json!([]));
    assert!(ok(attempt(lib.command().args(["user", "list"]))).contains("no users"));

    add(&lib, "ana", "correct horse battery", true);
    // A line ended CRLF (a Windows editor's file) loses both.
    ok(with_input(lib.command().args(["user", "add", "bob"]), "hunter2\r\nignored\n"));
    ok(attempt(lib.command().args(["grant", "bob", "read", "on", "web*"])));
    ok(attempt(lib.command().args(["grant", "bob", "WRITE", "ON", "db"])));
    // Granting again changes nothing.
    ok(attempt(lib.command().args(["grant", "bob", "read", "on", "web*"])));
    ok(attempt(lib.command().args(["grant", "ana", "admin", "on", "*"])));

    let users = list(&lib);
    assert_eq!(
        users,
        serde_json::json!([
            { "name": "ana", "admin": true, "created_at": users[0]["created_at"],
              "grants": [{ "right": "admin", "pattern": "*" }] },
            { "name": "bob", "admin": false, "created_at": users[1]["created_at"],
              "grants": [{ "right": "read", "pattern": "web*" }, { "right": "write", "pattern": "db" }] },
        ])
    );
    assert!(users[0]["created_at"].as_i64().unwrap() > 1_700_000_000);
    let table = ok(attempt(lib.command().args(["user", "list"])));
    assert!(table.contains("read on 'web*', write on 'db'"), "{table}");

    // Revoke takes back exactly what was given; a revoke that matches nothing says what the
    // user does have, with status 1.
    ok(attempt(lib.command().args(["revoke", "bob", "read", "on", "web*"])));
    let out = attempt(lib.command().args(["revoke", "bob", "read", "on", "web*"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("bob has no grant of read on 'web*'") && stderr(&out).contains("write on 'db'"));
    assert_eq!(list(&lib)[1]["grants"], serde_json::json!([{ "right": "write", "pattern": "db" }]));

    // The file: 0600, hashes and no password.
    let path = lib.path().join("access.json");
    let before = std::fs::read_to_string(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!before.contains("correct horse") && !before.contains("hunter2"), "{before}");
    assert_eq!(before.matches("$argon2id$").count(), 2, "{before}");

    // A new password replaces bob's hash.
    ok(with_input(lib.command().args(["user", "passwd", "bob"]), "swordfish\n"));
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(!after.contains("swordfish"));
    let hash = |text: &str| {
        let file: serde_json::Value = serde_json::from_str(text).unwrap();
        file["users"].as_array().unwrap().iter().find(|u| u["name"] == "bob").unwrap()["password"].clone()
    };
    assert_ne!(hash(&before), hash(&after));
    assert!(ok(attempt(lib.command().args(["user", "revoke-tokens", "bob"]))).contains("revoked 0 tokens of bob"));

    // Removing bob takes his grants with him; ana's stay.
    ok(attempt(lib.command().args(["user", "remove", "bob"])));
    let users = list(&lib);
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert_eq!(users[0]["name"], "ana");
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(!file.contains("bob"), "{file}");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn bad_requests_exit_2_naming_what_is_wrong() {
    let lib = Library::new();
    add(&lib, "ana", "pw", false);

    refused(with_input(lib.command().args(["user", "add", "a/b"]), "pw\n"), &["\"a/b\"", "user name"]);
    refused(with_input(lib.command().args(["user", "add", &"x".repeat(65)]), "pw\n"), &["user name"]);
    refused(with_input(lib.command().args(["user", "add", "ana"]), "pw\n"), &["ana", "already exists"]);
    refused(with_input(lib.command().args(["user", "add", "carl"]), ""), &["no password for carl"]);
    refused(with_input(lib.command().args(["user", "add", "carl"]), "\n"), &["no password for carl"]);
    refused(with_input(lib.command().args(["user", "add", "carl"]), &format!("{}\n", "p".repeat(1025))), &["1024"]);
    refused(with_input(lib.command().args(["user", "passwd", "eve"]), "pw\n"), &["no user \"eve\""]);
    refused(attempt(lib.command().args(["user", "remove", "eve"])), &["no user \"eve\""]);
    refused(attempt(lib.command().args(["user", "revoke-tokens", "eve"])), &["no user \"eve\""]);

    refused(attempt(lib.command().args(["grant", "eve", "read", "on", "*"])), &["no user \"eve\""]);
    refused(
        attempt(lib.command().args(["grant", "ana", "root", "on", "*"])),
        &["no right \"root\"", "read, write or admin"],
    );
    refused(attempt(lib.command().args(["grant", "ana", "read", "to", "*"])), &["'on'", "\"to\""]);
    refused(attempt(lib.command().args(["grant", "ana", "read", "on", "a/b"])), &["\"a/b\"", "not an image pattern"]);
    refused(attempt(lib.command().args(["grant", "ana", "read", "on", ""])), &["not an image pattern"]);
    refused(attempt(lib.command().args(["revoke", "eve", "read", "on", "*"])), &["no user \"eve\""]);
    refused(attempt(lib.command().args(["revoke", "ana", "all", "on", "*"])), &["no right \"all\""]);
    // clap's own: a missing argument.
    refused(attempt(lib.command().args(["grant", "ana", "read", "on"])), &[]);

    // Nothing of the above changed the file.
    let users = list(&lib);
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert_eq!(users[0]["grants"], serde_json::json!([]));
}

#[test]
fn a_corrupt_access_file_is_named() {
    let lib = Library::new();
    add(&lib, "ana", "pw", false);
    let path = lib.path().join("access.json");
    std::fs::write(&path, "{ \"users\": [").unwrap();
    let out = attempt(lib.command().args(["user", "list"]));
    // The library's file is unusable: the environment's status, 4.
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(stderr(&out).contains("access.json"), "{}", stderr(&out));
}
