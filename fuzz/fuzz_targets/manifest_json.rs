//! Manifest JSON: parsing never panics; an accepted manifest survives JSON and postcard.
#![no_main]

use agent_core::document::{
    MAX_CONTROL_STREAM_BYTES, MAX_MANIFEST_SERVICES, Manifest, from_postcard, to_json_line,
    to_postcard,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(manifest)) = Manifest::parse_json(data) {
        assert!(manifest.services.len() <= MAX_MANIFEST_SERVICES);
        // Go-style escaping of '<', '>' and '&' can grow the text past the size limit.
        let json = to_json_line(&manifest);
        if json.len() <= MAX_CONTROL_STREAM_BYTES {
            assert_eq!(Manifest::parse_json(&json).unwrap(), Some(manifest.clone()));
        }
        let bytes = to_postcard(&manifest).unwrap();
        assert_eq!(from_postcard::<Manifest>(&bytes).unwrap(), manifest);
    }
    let _ = from_postcard::<Manifest>(data);
});
