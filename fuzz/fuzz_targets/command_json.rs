//! COMMAND 1 payloads: parsing and applying never panic; the catalogue stays within its limits
//! and changes only on success.
#![no_main]

use std::collections::BTreeMap;

use agent_core::document::{Command, MAX_COMMAND_BYTES, ServiceInfo};
use agent_core::services::{MAX_SERVICES_TOTAL, ServiceCatalogue};
use agent_core::wire::{MAX_LINE, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut discovered = BTreeMap::new();
    discovered.insert(
        String::from("ui"),
        ServiceInfo {
            target: String::from("127.0.0.1:443"),
            ..ServiceInfo::default()
        },
    );
    let mut catalogue = ServiceCatalogue::new(discovered);
    let command = match Command::parse_json(data) {
        Ok(command) => command,
        Err(err) => {
            let line = Reply::Error(err.to_string()).encode();
            assert!(line.len() <= MAX_LINE);
            return;
        }
    };
    // Go-style escaping of '<', '>' and '&' can grow the text past the size limit.
    let json = command.to_json_line();
    if json.len() <= MAX_COMMAND_BYTES {
        assert_eq!(Command::parse_json(&json), Ok(command.clone()));
    }
    let before = catalogue.manifest();
    match catalogue.apply(&command) {
        Ok(changed) => assert_eq!(changed, catalogue.manifest() != before),
        Err(err) => {
            assert_eq!(catalogue.manifest(), before);
            assert!(!err.to_string().is_empty());
        }
    }
    assert!(catalogue.manifest().services.len() <= MAX_SERVICES_TOTAL);
    assert!(catalogue.get("ui").is_some());
});
