//! Diagnostics reports: parsing never panics; an accepted report survives JSON and postcard.
#![no_main]

use agent_core::document::{
    DiagnosticsReport, MAX_DIAGNOSTICS_BYTES, from_postcard, to_json_line, to_postcard,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = DiagnosticsReport::parse_json(data) {
        // Go-style escaping of '<', '>' and '&' can grow the text past the size limit.
        let json = to_json_line(&report);
        if json.len() <= MAX_DIAGNOSTICS_BYTES {
            assert_eq!(DiagnosticsReport::parse_json(&json).unwrap(), report);
        }
        let bytes = to_postcard(&report).unwrap();
        assert_eq!(from_postcard::<DiagnosticsReport>(&bytes).unwrap(), report);
        for plugin in &report.plugins {
            let _ = plugin.status.as_str();
        }
        let _ = report.collected_at.to_unix_millis();
    }
    let _ = from_postcard::<DiagnosticsReport>(data);
});
