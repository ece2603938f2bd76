//! os-release and hostname parsers over arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = imagelake_connectors::os::parse_os_release(&text);
    let _ = imagelake_connectors::os::parse_hostname(&text);
});
