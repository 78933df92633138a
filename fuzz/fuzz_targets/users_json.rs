//! Users reports: parsing never panics; an accepted report survives JSON and postcard, and its
//! Debug output never shows a password.
#![no_main]

use agent_core::document::{
    MAX_USERS_BYTES, UsersReport, from_postcard, to_json_line, to_postcard,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = UsersReport::parse_json(data) {
        // Go-style escaping of '<', '>' and '&' can grow the text past the size limit.
        let json = to_json_line(&report);
        if json.len() <= MAX_USERS_BYTES {
            assert_eq!(UsersReport::parse_json(&json).unwrap(), report);
        }
        let bytes = to_postcard(&report).unwrap();
        assert_eq!(from_postcard::<UsersReport>(&bytes).unwrap(), report);
        let _ = report.created_at.to_unix_millis();
        let _ = format!("{report:?}");
    }
    let _ = from_postcard::<UsersReport>(data);
});
