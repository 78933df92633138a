//! The target policy: never panics, and what it allows is consistent (a literal that passes
//! check_target passes check_ip; mapped IPv6 forms are judged as their IPv4 address).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_core::policy::{self, TargetHost};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(octets) = <[u8; 4]>::try_from(data) {
        let v4 = Ipv4Addr::from(octets);
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(
            policy::check_ip(IpAddr::V4(v4)).is_ok(),
            policy::check_ip(mapped).is_ok()
        );
    }
    if let Ok(octets) = <[u8; 16]>::try_from(data) {
        let _ = policy::check_ip(IpAddr::V6(Ipv6Addr::from(octets)));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = policy::validate_connect_name(text);
    let _ = policy::validate_injected_name(text);
    let _ = policy::validate_node_id(text);
    let _ = policy::validate_upstream_host(text);
    let syntax_ok = policy::validate_target_syntax(text).is_ok();
    if let Ok((host, port)) = policy::split_target(text) {
        assert!(port != 0);
        assert!(text.contains(host));
    }
    match policy::check_target(text) {
        Ok((TargetHost::Ip(ip), _)) => {
            assert!(policy::check_ip(ip).is_ok());
            assert!(syntax_ok);
        }
        Ok((TargetHost::Name(name), _)) => {
            assert!(name.is_ascii() && !name.is_empty());
            assert!(syntax_ok);
        }
        Err(_) => {}
    }
});
