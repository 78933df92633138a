use super::*;

const TTL: Duration = Duration::from_secs(60);

fn origins() -> Origins {
    Origins::new([7; 32], TTL)
}

fn grant() -> Grant {
    Grant {
        operator_id: "op-1".into(),
        session_id: "s1".into(),
        service: "web".into(),
        path: "/".into(),
    }
}

#[test]
fn short_ids_are_dns_labels_for_any_service_name_and_stable_per_key() {
    let o = origins();
    let long = "a".repeat(200);
    for name in ["web", "cockpit_ui", "nas.local", long.as_str(), "Ünïcode"] {
        let id = o.short_id("8f9e-session", name);
        assert_eq!(id.len(), SHORT_ID_LEN, "{name}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)),
            "{id}"
        );
        assert_eq!(
            origin_label(&format!("{id}.localhost:8080"), "localhost"),
            Some(id.clone())
        );
    }
    assert_eq!(o.short_id("s1", "web"), origins().short_id("s1", "web"));
    assert_ne!(o.short_id("s1", "web"), o.short_id("s2", "web"));
    assert_ne!(o.short_id("s1", "web"), o.short_id("s1", "web2"));
    assert_ne!(
        o.short_id("s1", "web"),
        Origins::new([8; 32], TTL).short_id("s1", "web")
    );
    // the separator keeps ("s1", "0web") and ("s10", "web") apart
    assert_ne!(o.short_id("s1", "0web"), o.short_id("s10", "web"));
}

#[test]
fn only_short_id_labels_under_the_domain_are_service_origins() {
    let id = "0123456789abcdefghijklmnop";
    assert_eq!(
        origin_label(&format!("{id}.proxy.example.com"), "proxy.example.com"),
        Some(id.into())
    );
    assert_eq!(
        origin_label(
            &format!("{}.Proxy.Example.com.:443", id.to_uppercase()),
            "proxy.example.com"
        ),
        Some(id.into())
    );
    for host in [
        "proxy.example.com",
        "relay.proxy.example.com",
        "localhost:8080",
        "0123456789abcdefghijklmnop.other.com",
        "x.0123456789abcdefghijklmnop.proxy.example.com",
        "0123456789abcdefghijklmnopproxy.example.com",
        "wxyz456789abcdefghijklmnop.proxy.example.com",
    ] {
        assert_eq!(origin_label(host, "proxy.example.com"), None, "{host}");
    }
}

#[test]
fn a_token_is_used_once_on_its_own_origin() {
    let o = origins();
    let t0 = Instant::now();
    let id = o.short_id("s1", "web");
    let token = o.issue(grant(), t0).unwrap();
    assert_eq!(token.len(), 64);
    assert_eq!(o.redeem(&token, &id, t0).unwrap(), grant());
    assert_eq!(o.redeem(&token, &id, t0), Err(OriginError::UnknownToken));

    let token = o.issue(grant(), t0).unwrap();
    let other = o.short_id("s1", "other");
    assert_eq!(o.redeem(&token, &other, t0), Err(OriginError::WrongOrigin));
    assert_eq!(
        o.redeem(&token, &id, t0),
        Err(OriginError::UnknownToken),
        "gone after a wrong try"
    );

    let token = o.issue(grant(), t0).unwrap();
    assert_eq!(
        o.redeem(&token, &id, t0 + TTL),
        Err(OriginError::ExpiredToken)
    );
    assert_eq!(o.redeem("zz", &id, t0), Err(OriginError::UnknownToken));
    assert_eq!(
        o.redeem(&"0".repeat(64), &id, t0),
        Err(OriginError::UnknownToken)
    );
}

#[test]
fn an_origin_cookie_vouches_for_its_operator_on_its_origin_until_it_expires() {
    let o = origins();
    let id = o.short_id("s1", "web");
    let value = o.cookie_value("op-1", &id, 5_000);
    assert_eq!(o.check_cookie(&value, &id, 4_999).unwrap(), "op-1");
    assert_eq!(
        o.check_cookie(&value, &id, 5_000),
        Err(OriginError::ExpiredCookie)
    );
    let other = o.short_id("s1", "other");
    assert_eq!(
        o.check_cookie(&value, &other, 0),
        Err(OriginError::BadCookie)
    );
    let forged = value.replacen("op-1", "op-2", 1);
    assert_eq!(o.check_cookie(&forged, &id, 0), Err(OriginError::BadCookie));
    let later = value.replacen("5000", "9000", 1);
    assert_eq!(o.check_cookie(&later, &id, 0), Err(OriginError::BadCookie));
    assert_eq!(
        Origins::new([8; 32], TTL).check_cookie(&value, &id, 0),
        Err(OriginError::BadCookie),
        "another relay's key"
    );
    for junk in ["", "a.b", "a.b.c", "...", &"x".repeat(300)] {
        assert_eq!(
            o.check_cookie(junk, &id, 0),
            Err(OriginError::BadCookie),
            "{junk}"
        );
    }
}

#[test]
fn only_absolute_paths_on_the_origin_are_followed_after_login() {
    assert_eq!(safe_path(None), "/");
    assert_eq!(safe_path(Some("/app?x=1")), "/app?x=1");
    for bad in [
        "//evil.com/",
        "/\\evil.com",
        "https://evil.com",
        "app",
        "/a\nb",
    ] {
        assert_eq!(safe_path(Some(bad)), "/", "{bad}");
    }
}

#[test]
fn the_port_comes_from_the_host_the_operator_used() {
    assert_eq!(port_of("localhost:8080"), Some("8080"));
    assert_eq!(port_of("relay.example.com"), None);
    assert_eq!(port_of("[::1]:443"), Some("443"));
    assert_eq!(port_of("[::1]"), None);
}

#[test]
fn token_errors_say_what_to_do() {
    let e = AppError::from(OriginError::ExpiredToken);
    assert_eq!(e.status(), StatusCode::FORBIDDEN);
    assert_eq!(e.code(), "token_expired");
    assert!(
        e.message().contains("open the service again"),
        "{}",
        e.message()
    );
    let e = AppError::from(OriginError::NoCookie);
    assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
}
