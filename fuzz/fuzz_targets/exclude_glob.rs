//! Exclude globs: matching never panics and the set agrees with single-pattern matching.
//! Input: pattern, a NUL byte, then the name.
#![no_main]

use agent_core::exclude::{ExcludeSet, glob_match};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, name) = text.split_once('\0').unwrap_or((text, ""));
    let single = glob_match(pattern, name);
    let trimmed = pattern.trim();
    if !pattern.contains(',') && !trimmed.is_empty() && trimmed == pattern {
        match ExcludeSet::parse(pattern) {
            Ok(set) => assert_eq!(Ok(set.is_excluded(name)), single),
            Err(err) => assert_eq!(single, Err(err)),
        }
    } else {
        let _ = ExcludeSet::parse(pattern).map(|set| set.is_excluded(name));
    }
});
