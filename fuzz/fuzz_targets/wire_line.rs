//! Header and reply lines: find_line, line_text, Reply and RelayStream never panic, and what
//! they produce parses back to itself.
#![no_main]

use agent_core::wire::{MAX_LINE, RelayStream, Reply, find_line, line_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(n)) = find_line(data) {
        assert!(n <= MAX_LINE && n <= data.len());
        let line = &data[..n];
        assert_eq!(line.last(), Some(&b'\n'));
        if let Ok(text) = line_text(line) {
            if let Ok(reply) = Reply::parse(text) {
                let encoded = reply.encode();
                assert!(encoded.len() <= MAX_LINE);
                assert_eq!(find_line(&encoded), Ok(Some(encoded.len())));
            }
            if let Ok(stream) = RelayStream::parse(text) {
                let header = stream.header();
                assert_eq!(find_line(header.as_bytes()), Ok(Some(header.len())));
                let again = RelayStream::parse(line_text(header.as_bytes()).unwrap());
                assert_eq!(again, Ok(stream));
            }
        }
    }
    // Any text becomes one well-formed reply line, and encoding is idempotent.
    let text = String::from_utf8_lossy(data).into_owned();
    let encoded = Reply::Error(text).encode();
    assert!(encoded.len() <= MAX_LINE);
    assert_eq!(find_line(&encoded), Ok(Some(encoded.len())));
    let parsed = Reply::parse(line_text(&encoded).unwrap()).unwrap();
    assert_eq!(parsed.encode(), encoded);
});
