use std::prelude::rust_2024::*;
use std::{format, vec};

use std::time::Duration;

use tokio::time::Instant;

use super::config::{
    AgentConfig, ConfigError, ParseError, ProxySettings, parse_go_bool, parse_go_duration,
    parse_relay_pin, redact_userinfo,
};
use super::manifest::Schedule;
use super::proxy::{ProxyServer, bypass};
use super::{show, target, tls};

#[test]
fn go_durations_follow_time_parse_duration() {
    let ok = |s: &str, d: Duration| assert_eq!(parse_go_duration(s), Ok(d), "{s}");
    ok("5s", Duration::from_secs(5));
    ok("5m", Duration::from_secs(300));
    ok("1m30s", Duration::from_secs(90));
    ok("300ms", Duration::from_millis(300));
    ok("1.5h", Duration::from_secs(5400));
    ok(".5s", Duration::from_millis(500));
    ok(
        "2h45m10.5s",
        Duration::from_millis((2 * 3600 + 45 * 60 + 10) * 1000 + 500),
    );
    ok("10us", Duration::from_micros(10));
    ok("10\u{b5}s", Duration::from_micros(10));
    ok("7ns", Duration::from_nanos(7));
    ok("0", Duration::ZERO);
    ok("+3s", Duration::from_secs(3));
    for bad in ["", "5", "5 s", "s", "5x", "1.s.", "five", "."] {
        assert!(
            matches!(parse_go_duration(bad), Err(ParseError::BadDuration(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        parse_go_duration("-5s"),
        Err(ParseError::NegativeDuration(_))
    ));
    assert!(parse_go_duration("99999999999999999999h").is_err());
}

#[test]
fn go_booleans() {
    for t in ["1", "t", "T", "true", "TRUE", "True"] {
        assert_eq!(parse_go_bool(t), Ok(true));
    }
    for f in ["0", "f", "F", "false", "FALSE", "False"] {
        assert_eq!(parse_go_bool(f), Ok(false));
    }
    assert!(parse_go_bool("yes").is_err());
}

#[test]
fn relay_pins_in_hex_colon_hex_or_base64() {
    let want = [0xabu8; 32];
    let hex = "ab".repeat(32);
    assert_eq!(parse_relay_pin(&hex), Ok(want));
    assert_eq!(parse_relay_pin(&hex.to_uppercase()), Ok(want));
    let colons = vec!["AB"; 32].join(":");
    assert_eq!(parse_relay_pin(&colons), Ok(want));
    assert_eq!(
        parse_relay_pin("sha256/q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="),
        Ok(want)
    );
    assert_eq!(
        parse_relay_pin("q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s"),
        Ok(want)
    );
    for bad in ["", "abcd", &"ab".repeat(31), &"zz".repeat(32), "q6urq6ur"] {
        assert!(parse_relay_pin(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn no_proxy_matches_names_suffixes_addresses_and_blocks() {
    assert!(bypass("*", "relay.example.com", 443));
    assert!(bypass("example.com", "example.com", 443));
    assert!(bypass("example.com", "relay.EXAMPLE.com", 443));
    assert!(bypass(".example.com", "relay.example.com", 443));
    assert!(bypass("*.example.com", "relay.example.com", 443));
    assert!(!bypass("example.com", "badexample.com", 443));
    assert!(!bypass("relay.example.com", "example.com", 443));
    assert!(bypass("other, 10.0.0.0/8", "10.1.2.3", 443));
    assert!(!bypass("10.0.0.0/8", "11.1.2.3", 443));
    assert!(bypass("127.0.0.1", "127.0.0.1", 80));
    assert!(bypass("::1", "[::1]", 80));
    assert!(bypass("fd00::/8", "fd00::1", 80));
    assert!(bypass("example.com:443", "example.com", 443));
    assert!(!bypass("example.com:8443", "example.com", 443));
    assert!(!bypass("", "example.com", 443));
    assert!(!bypass(" , ", "example.com", 443));
}

#[test]
fn proxy_urls_with_and_without_scheme_and_credentials() {
    let p = ProxyServer::parse("http://user:p%40ss@proxy.lan:3128").unwrap();
    assert_eq!((p.host.as_str(), p.port), ("proxy.lan", 3128));
    assert_eq!(p.shown, "http://proxy.lan:3128");
    assert!(!format!("{p:?}").contains("p@ss"));
    let p = ProxyServer::parse("10.0.0.1:8080").unwrap();
    assert_eq!((p.host.as_str(), p.port), ("10.0.0.1", 8080));
    let p = ProxyServer::parse("http://[fd00::1]").unwrap();
    assert_eq!((p.host.as_str(), p.port), ("fd00::1", 80));
    assert!(ProxyServer::parse("https://proxy.lan:3128").is_err());
    assert!(ProxyServer::parse("socks5://proxy.lan:1080").is_err());
}

#[test]
fn credentials_never_show_in_debug_output() {
    assert_eq!(
        redact_userinfo("http://user:pw@proxy:3128/x"),
        "http://***@proxy:3128/x"
    );
    assert_eq!(redact_userinfo("proxy:3128"), "proxy:3128");
    let mut config = AgentConfig::new("wss://relay.example/t", "KEY", "TOP-SECRET");
    config.proxy = ProxySettings {
        https_proxy: Some("http://bob:hunter2@proxy:3128".into()),
        ..ProxySettings::none()
    };
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("TOP-SECRET") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[test]
fn validation_names_the_setting() {
    let setting = |c: &AgentConfig| c.validate().unwrap_err().setting();
    let base = || {
        let mut c = AgentConfig::new("wss://relay.example/support/api/tunnel", "K", "S");
        c.proxy = ProxySettings::none();
        c
    };
    assert!(base().validate().is_ok());
    let mut c = base();
    c.url = "https://relay.example/".into();
    assert_eq!(setting(&c), "url");
    let mut c = base();
    c.key = "a:b".into();
    assert_eq!(setting(&c), "key");
    let mut c = base();
    c.secret = "".into();
    assert_eq!(setting(&c), "secret");
    let mut c = base();
    c.node_id = Some("12345678901".into());
    assert_eq!(setting(&c), "node_id");
    let mut c = base();
    c.max_reconnect_delay = Duration::from_secs(1);
    assert_eq!(setting(&c), "max_reconnect_delay");
    let mut c = base();
    c.proxy.https_proxy = Some("ftp://proxy".into());
    assert!(matches!(
        c.validate(),
        Err(ConfigError::BadProxy {
            var: "HTTPS_PROXY",
            ..
        })
    ));
}

#[test]
fn early_manifests_share_one_follow_up_at_the_interval_mark() {
    let interval = Duration::from_secs(10);
    let t0 = Instant::now();
    let mut s = Schedule::new(interval);
    s.sent(t0);
    assert_eq!(s.follow_up(), None, "the first manifest is always accepted");
    s.sent(t0 + Duration::from_secs(3));
    let due = s.follow_up().unwrap();
    assert!(due >= t0 + interval && due < t0 + interval + Duration::from_secs(1));
    s.sent(t0 + Duration::from_secs(5));
    assert_eq!(s.follow_up(), Some(due), "coalesced");
    s.sent(due);
    assert_eq!(s.follow_up(), None);
    // a late update is accepted by itself
    s.sent(due + interval);
    assert_eq!(s.follow_up(), None);
}

#[test]
fn sni_prefers_the_service_host_then_a_target_name() {
    let name = |h: &str, t: &str| target::sni(h, t).map(|n| n.to_str().into_owned());
    assert_eq!(name("app.example", "10.0.0.5"), Some("app.example".into()));
    assert_eq!(
        name("app.example:8443", "10.0.0.5"),
        Some("app.example".into())
    );
    assert_eq!(name("", "printer.lan"), Some("printer.lan".into()));
    assert_eq!(name("10.0.0.5", "printer.lan"), Some("printer.lan".into()));
    assert_eq!(name("", "10.0.0.5"), None);
    assert_eq!(name("", "fd00::5"), None);
}

#[test]
fn spki_hash_of_a_certificate_matches_its_key() {
    use rcgen::{CertificateParams, KeyPair, PublicKeyData};
    use sha2::{Digest, Sha256};
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["relay.example".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let want: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
    assert_eq!(tls::spki_sha256(cert.der()), Some(want));
    assert_eq!(tls::spki_sha256(b"not a certificate"), None);
    assert_eq!(tls::spki_sha256(&cert.der()[..40]), None);
}

#[test]
fn delays_read_like_durations() {
    assert_eq!(show(Duration::from_millis(50)), "50ms");
    assert_eq!(show(Duration::from_millis(1500)), "1.5s");
    assert_eq!(show(Duration::from_secs(300)), "5m");
    assert_eq!(show(Duration::from_secs(150)), "2m30s");
}
