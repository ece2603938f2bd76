//! A library on object storage: the S3-compatible server the tests run (SeaweedFS, started
//! and stopped by each test) and the property commits on it rest on.

use imagelake_tests::s3::{self, S3Server};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

/// Conditional puts decide every race of a library on object storage (Lance's commits,
/// version numbers, leases): on the server the tests use, each of five more rounds of 32
/// racers to a fresh key has exactly one winner, whose content the key holds, and a key once
/// written cannot be taken again.
#[test]
fn one_of_many_conditional_puts_wins() {
    let server = S3Server::start();
    for round in 0..5 {
        assert_eq!(server.conditional_put_winners(&format!("probe/round-{round}")), 1, "round {round}");
    }
    assert_eq!(server.conditional_put_winners("probe/round-0"), 0, "a key already written was taken again");
}

/// The probe fails loudly against a server that ignores `If-None-Match` (as SeaweedFS 4.16
/// did): every racer wins there, and the probe counts them all.
#[test]
fn the_probe_catches_a_server_that_ignores_the_condition() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for stream in listener.incoming() {
            let held = held.clone();
            std::thread::spawn(move || careless_s3(stream.unwrap(), &held));
        }
    });
    assert_eq!(s3::conditional_put_winners(&endpoint, s3::BUCKET, "k"), s3::RACERS);
}

/// Answers every PUT with 200 OK, whatever its conditions, and every GET with the last body
/// put: an object store that does not decide races.
fn careless_s3(stream: std::net::TcpStream, held: &std::sync::Mutex<Vec<u8>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let answer = if request.starts_with("PUT") {
            *held.lock().unwrap() = body;
            Vec::new()
        } else {
            held.lock().unwrap().clone()
        };
        let head = format!("HTTP/1.1 200 OK\r\nETag: \"1\"\r\nContent-Length: {}\r\n\r\n", answer.len());
        if writer.write_all(head.as_bytes()).and_then(|_| writer.write_all(&answer)).is_err() {
            return;
        }
    }
}
