use alloc::string::{String, ToString};

use super::*;

#[test]
fn connect_names_follow_the_relay_grammar() {
    let long = "a".repeat(MAX_CONNECT_NAME);
    let too_long = "a".repeat(MAX_CONNECT_NAME + 1);
    let ok = [
        "web",
        "Web-UI",
        "nethvoice103-ui",
        "metrics1_grafana",
        "a.b",
        "9",
        &long,
    ];
    for name in ok {
        assert_eq!(validate_connect_name(name), Ok(()), "{name}");
    }
    let bad = [
        "", "-web", ".hidden", "_x", "a b", "a/b", "a:b", "é", "web\n", &too_long,
    ];
    for name in bad {
        assert!(validate_connect_name(name).is_err(), "{name:?}");
    }
}

#[test]
fn injected_names_follow_the_agent_grammar() {
    let max = "a".repeat(64);
    let over = "a".repeat(65);
    for name in ["web", "0", "a_b-c", &max] {
        assert_eq!(validate_injected_name(name), Ok(()), "{name}");
    }
    for name in ["", "Web", "a.b", "-a", "_a", "a b", &over] {
        assert!(validate_injected_name(name).is_err(), "{name:?}");
    }
}

#[test]
fn name_errors_say_what_is_wrong() {
    assert_eq!(
        validate_injected_name("Web").unwrap_err().to_string(),
        "name must start with a lowercase letter or digit, not 'W'"
    );
    assert_eq!(
        validate_injected_name("we.b").unwrap_err().to_string(),
        "name contains '.', only lowercase letters, digits, '_' and '-' are allowed"
    );
    assert_eq!(
        validate_injected_name(&"a".repeat(65))
            .unwrap_err()
            .to_string(),
        "name is 65 bytes long, at most 64 are allowed"
    );
}

#[test]
fn node_ids_are_one_to_ten_digits() {
    for ok in ["1", "0", "1234567890"] {
        assert_eq!(validate_node_id(ok), Ok(()));
    }
    for bad in ["", "12345678901", "1a", "-1", " 1", "１"] {
        assert!(validate_node_id(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn upstream_hosts_follow_the_relay_grammar() {
    for ok in [
        "",
        "a",
        "phone.lan",
        "127.0.0.1",
        "host:8080",
        "a-b.c",
        "fe80::1",
    ] {
        assert_eq!(validate_upstream_host(ok), Ok(()), "{ok}");
    }
    for bad in ["-a", "a-", "a.", ".a", "a b", "a_b", "[::1]", "a/b", "é"] {
        assert!(validate_upstream_host(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn splits_targets() {
    type Row = (&'static str, Result<(&'static str, u16), ()>);
    let table: &[Row] = &[
        ("localhost:9090", Ok(("localhost", 9090))),
        ("192.168.1.10:443", Ok(("192.168.1.10", 443))),
        ("[::1]:80", Ok(("::1", 80))),
        ("[fe80::1%eth0]:22", Ok(("fe80::1%eth0", 22))),
        ("host:1", Ok(("host", 1))),
        ("host:65535", Ok(("host", 65535))),
        ("host:080", Ok(("host", 80))),
        ("host:0", Err(())),
        ("host:65536", Err(())),
        ("host:99999999999999999999", Err(())),
        ("host:-1", Err(())),
        ("host:+80", Err(())),
        ("host: 80", Err(())),
        ("host:", Err(())),
        ("host", Err(())),
        (":80", Err(())),
        ("", Err(())),
        ("::1:80", Err(())),
        ("[::1]80", Err(())),
        ("[::1:80", Err(())),
        ("[]:80", Err(())),
        ("[[::1]]:80", Err(())),
        ("a]:80", Err(())),
    ];
    for (target, want) in table {
        let got = split_target(target).map_err(|_| ());
        assert_eq!(&got, want, "{target:?}");
    }
}

#[test]
fn port_errors_name_the_port() {
    assert_eq!(
        split_target("web:0").unwrap_err().to_string(),
        "port \"0\" is not a number from 1 to 65535"
    );
    assert_eq!(
        split_target("web:65536").unwrap_err(),
        PolicyError::BadPort("65536".into())
    );
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ip_policy_table() {
    let table: &[(&str, bool)] = &[
        // allowed: loopback, private, CGNAT, public, ULA, global IPv6
        ("127.0.0.1", true),
        ("127.1.2.3", true),
        ("10.0.0.1", true),
        ("172.16.5.4", true),
        ("192.168.1.100", true),
        ("100.64.0.1", true),
        ("8.8.8.8", true),
        ("::1", true),
        ("fd00::1", true),
        ("fd00:ec2::253", true),
        ("2001:db8::1", true),
        ("fe00::1", true),
        ("::ffff:192.168.1.1", true),
        ("::ffff:127.0.0.1", true),
        // refused IPv4
        ("0.0.0.0", false),
        ("0.1.2.3", false),
        ("169.254.0.1", false),
        ("169.254.169.254", false),
        ("100.100.100.200", false),
        ("224.0.0.1", false),
        ("239.255.255.250", false),
        ("255.255.255.255", false),
        // refused IPv6
        ("::", false),
        ("fe80::1", false),
        ("febf::1", false),
        ("ff02::1", false),
        ("ff05::1:3", false),
        ("fd00:ec2::254", false),
        // v4-mapped, v4-compatible and NAT64 forms judged as the IPv4 address
        ("::ffff:169.254.169.254", false),
        ("::ffff:0.0.0.0", false),
        ("::ffff:224.0.0.1", false),
        ("::ffff:255.255.255.255", false),
        ("::169.254.169.254", false),
        ("::ffff:a9fe:a9fe", false),
        ("64:ff9b::169.254.169.254", false),
        ("64:ff9b::10.0.0.1", true),
    ];
    for (addr, allowed) in table {
        assert_eq!(check_ip(ip(addr)).is_ok(), *allowed, "{addr}");
    }
}

#[test]
fn refused_addresses_say_why() {
    assert_eq!(
        check_ip(ip("169.254.169.254")).unwrap_err().to_string(),
        "169.254.169.254 is a cloud metadata address"
    );
    assert_eq!(
        check_ip(ip("fe80::1")).unwrap_err().to_string(),
        "fe80::1 is a link-local address"
    );
}

#[test]
fn check_target_table() {
    type Row = (&'static str, Result<(TargetHost<'static>, u16), ()>);
    let table: &[Row] = &[
        (
            "192.168.1.10:443",
            Ok((TargetHost::Ip(ip("192.168.1.10")), 443)),
        ),
        ("[::1]:8080", Ok((TargetHost::Ip(ip("::1")), 8080))),
        (
            "[::ffff:10.0.0.1]:80",
            Ok((TargetHost::Ip(ip("::ffff:10.0.0.1")), 80)),
        ),
        (
            "printer.lan:631",
            Ok((TargetHost::Name("printer.lan"), 631)),
        ),
        ("localhost:9090", Ok((TargetHost::Name("localhost"), 9090))),
        (
            "my_host.local.:80",
            Ok((TargetHost::Name("my_host.local."), 80)),
        ),
        (
            "a1.example.com:443",
            Ok((TargetHost::Name("a1.example.com"), 443)),
        ),
        // refused literal addresses
        ("169.254.169.254:80", Err(())),
        ("[fe80::1]:80", Err(())),
        ("[::ffff:169.254.169.254]:80", Err(())),
        ("0.0.0.0:80", Err(())),
        ("[::]:80", Err(())),
        ("224.0.0.1:5353", Err(())),
        // metadata names, case-insensitive, trailing dot ignored
        ("metadata:80", Err(())),
        ("METADATA.google.internal:80", Err(())),
        ("metadata.google.internal.:80", Err(())),
        ("metadata.azure.internal:80", Err(())),
        ("instance-data:80", Err(())),
        ("metadata.platformequinix.com:443", Err(())),
        // numeric forms resolvers read as IPv4
        ("2852039166:80", Err(())),
        ("0xa9fea9fe:80", Err(())),
        ("169.254.43518:80", Err(())),
        ("169.254.169.254.:80", Err(())),
        // brackets and syntax
        ("[printer.lan]:80", Err(())),
        ("[10.0.0.1]:80", Err(())),
        ("fe80::1:80", Err(())),
        ("bad host:80", Err(())),
        ("a/b:80", Err(())),
        (".:80", Err(())),
        ("web:0", Err(())),
        ("web:65536", Err(())),
    ];
    for (target, want) in table {
        let got = check_target(target).map_err(|_| ());
        assert_eq!(&got, want, "{target:?}");
    }
}

#[test]
fn metadata_names_are_refused_by_name() {
    assert_eq!(
        check_target("Metadata:80").unwrap_err(),
        PolicyError::MetadataName(String::from("Metadata"))
    );
}

#[test]
fn long_untrusted_text_is_clipped_in_errors() {
    let host = "é".repeat(100);
    let err = validate_upstream_host(&host).unwrap_err();
    let PolicyError::BadUpstreamHost(shown) = err else {
        panic!("unexpected error")
    };
    assert!(shown.len() <= 64);
}

#[test]
fn target_syntax_allows_any_address_but_not_garbage() {
    for ok in [
        "169.254.169.254:80",
        "[fe80::1%eth0]:22",
        "[::1]:80",
        "printer.lan:631",
        "metadata:80",
        "localhost.:1",
    ] {
        assert_eq!(validate_target_syntax(ok), Ok(()), "{ok}");
    }
    for bad in [
        "a b:80",
        "[printer]:80",
        "[10.0.0.1]:80",
        "h:0",
        "h",
        "é:80",
        ".:80",
    ] {
        assert!(validate_target_syntax(bad).is_err(), "{bad:?}");
    }
}
