//! STATIC_SERVICES: parsing never panics; every accepted entry is valid and the specification
//! written back from the result parses to the same services.
#![no_main]

use agent_core::policy;
use agent_core::services::parse_static_services;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(services) = parse_static_services(spec) else {
        return;
    };
    let mut written = Vec::new();
    for (name, info) in &services {
        assert!(policy::validate_connect_name(name).is_ok());
        assert!(policy::validate_target_syntax(&info.target).is_ok());
        assert_eq!(&info.label, name);
        let mut entry = format!("{name}={}", info.target);
        if !info.host.is_empty() {
            entry.push_str(":host=");
            entry.push_str(&info.host);
        }
        if info.tls {
            entry.push_str(":tls");
        }
        written.push(entry);
    }
    assert_eq!(parse_static_services(&written.join(",")), Ok(services));
});
