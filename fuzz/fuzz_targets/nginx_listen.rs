//! nginx `listen` discovery: parsing never panics; every listen found has a real port and a
//! line inside the text, and the web UI choice is a usable listener (TLS whenever one is),
//! dialled at a target the manifest accepts.
#![no_main]

use agent_core::discovery::nginx::{self, ListenHost};
use agent_core::policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(listens) = nginx::listens(text) else {
        return;
    };
    let lines = text.split('\n').count();
    for listen in &listens {
        assert_ne!(listen.port, 0);
        assert!(listen.line >= 1 && listen.line <= lines);
    }
    let Some(chosen) = nginx::web_ui_listen(&listens) else {
        assert!(listens.iter().all(|l| !l.dialable()));
        return;
    };
    assert!(chosen.dialable());
    assert_eq!(
        chosen.ssl(),
        listens.iter().any(|l| l.dialable() && l.ssl())
    );
    let target = chosen.dial_target();
    assert_eq!(
        nginx::web_ui_target(&listens),
        Some((target.clone(), chosen.ssl()))
    );
    // Host names are passed through as written; the adapter checks those.
    if !matches!(chosen.host, ListenHost::Name(_)) {
        assert!(policy::validate_target_syntax(&target).is_ok(), "{target}");
    }
});
