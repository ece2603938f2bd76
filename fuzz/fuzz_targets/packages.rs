//! The package database parsers over arbitrary bytes: dpkg status, apk installed, rpm headers
//! and rpm's Berkeley DB and NDB databases.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use imagelake_connectors::packages::{apk, dpkg, rpm};
    let text = String::from_utf8_lossy(data);
    let _ = dpkg::parse_status(&text);
    let _ = apk::parse_installed(&text);
    let _ = rpm::parse_header(data);
    let _ = rpm::read_bdb(data);
    let _ = rpm::read_ndb(data);
});
