//! UCI files: parsing never panics; sections keep their line numbers and names libuci would
//! accept, and the LuCI choice never panics either.
#![no_main]

use agent_core::discovery::uci;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sections) = uci::parse(text) else {
        return;
    };
    let lines = text.split('\n').count();
    for section in &sections {
        assert!(!section.kind.is_empty());
        assert!(section.line >= 1 && section.line <= lines);
        if let Some(name) = &section.name {
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        }
        for key in section.options.keys() {
            assert!(!section.lists.contains_key(key));
        }
    }
    let _ = uci::luci_target(&sections);
});
