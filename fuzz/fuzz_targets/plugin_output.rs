//! Plugin output: parsing any stdout with any exit code never panics, and the result always
//! holds to the report limits.
#![no_main]

use agent_core::plugin_output::{
    MAX_CHECKS, MAX_ID_LEN, MAX_NAME_LEN, MAX_TEXT_LEN, clamp_plugin, parse, parse_perfdata,
    problems,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (code, stdout) = match data.split_first() {
        Some((&b, rest)) => (if b == 255 { None } else { Some(i32::from(b) - 8) }, rest),
        None => (Some(0), data),
    };
    let mut report = parse("fuzz", stdout, code);
    assert!(report.id.len() <= MAX_ID_LEN && report.name.len() <= MAX_NAME_LEN);
    assert!(report.summary.as_ref().is_none_or(|s| s.len() <= MAX_TEXT_LEN));
    assert!(report.checks.len() <= MAX_CHECKS);
    // Clamping is idempotent: a parsed report needs no more changes.
    assert!(clamp_plugin(&mut report).is_empty());
    let _ = problems(stdout, code);
    if let Ok(text) = core::str::from_utf8(stdout) {
        for datum in parse_perfdata(text) {
            let _ = datum.status();
        }
    }
});
