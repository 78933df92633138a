use super::*;

const BASE: &str = "/api/v1/sessions/s1/proxy/web";

fn service(target: &str, host: &str, tls: bool, path: &str, prefix: &str) -> ServiceInfo {
    ServiceInfo {
        target: target.into(),
        host: host.into(),
        tls,
        path: path.into(),
        path_prefix: prefix.into(),
        ..ServiceInfo::default()
    }
}

fn route(info: &ServiceInfo) -> Route {
    Route::new(BASE, info)
}

fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in list {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn splits_the_raw_path_at_the_service_segment() {
    assert_eq!(
        split_proxy_path("/api/v1/sessions/s1/proxy/web/a%2Fb/c"),
        Some((BASE, "/a%2Fb/c"))
    );
    assert_eq!(split_proxy_path(BASE), Some((BASE, "")));
    assert_eq!(
        split_proxy_path("/api/v1/sessions/s1/proxy/web/"),
        Some((BASE, "/"))
    );
    assert_eq!(split_proxy_path("/api/v1/sessions/s1/services"), None);
}

#[test]
fn raw_path_and_encoding_are_kept() {
    let r = route(&service("127.0.0.1:80", "", false, "", ""));
    assert_eq!(r.upstream_path(""), "/");
    assert_eq!(r.upstream_path("/a%2Fb/%20c"), "/a%2Fb/%20c");
}

#[test]
fn prefix_is_stripped_by_whole_segments() {
    let r = route(&service("127.0.0.1:80", "", false, "", "/foo/"));
    assert_eq!(r.upstream_path("/foo"), "/");
    assert_eq!(r.upstream_path("/foo/"), "/");
    assert_eq!(r.upstream_path("/foo/bar?x"), "/bar?x");
    assert_eq!(r.upstream_path("/foobar"), "/foobar");
    assert_eq!(r.upstream_path("/foo%2Fbar"), "/foo%2Fbar");
    assert_eq!(r.upstream_path("/other"), "/other");
    // "/" as a prefix strips nothing
    let r = route(&service("127.0.0.1:80", "", false, "", "/"));
    assert_eq!(r.upstream_path("/x"), "/x");
}

#[test]
fn route_path_is_added_when_missing() {
    let r = route(&service("10.0.0.2:443", "app.lan", true, "/nethvoice/", ""));
    assert_eq!(r.upstream_path(""), "/nethvoice/");
    assert_eq!(r.upstream_path("/index.html"), "/nethvoice/index.html");
    assert_eq!(r.upstream_path("/nethvoice"), "/nethvoice");
    assert_eq!(r.upstream_path("/nethvoice/x"), "/nethvoice/x");
    assert_eq!(r.upstream_path("/nethvoicex"), "/nethvoice/nethvoicex");
    // a prefix wins over the route path, like the reference
    let r = route(&service("10.0.0.2:443", "", false, "/route", "/pre"));
    assert_eq!(r.upstream_path("/pre/x"), "/x");
}

#[test]
fn hop_by_hop_and_operator_credentials_are_not_forwarded() {
    let r = route(&service("127.0.0.1:8080", "", false, "", ""));
    let incoming = headers(&[
        ("connection", "keep-alive, x-secret-hop"),
        ("keep-alive", "timeout=5"),
        ("x-secret-hop", "1"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("proxy-authorization", "Basic eA=="),
        ("authorization", "Bearer operator-token"),
        ("x-forwarded-for", "6.6.6.6"),
        ("host", "relay.example"),
        ("accept", "text/html"),
        ("cookie", "app=1"),
    ]);
    let out = r.request_headers(&incoming, false);
    for gone in [
        "connection",
        "keep-alive",
        "x-secret-hop",
        "te",
        "transfer-encoding",
        "proxy-authorization",
        "authorization",
        "x-forwarded-for",
        "upgrade",
    ] {
        assert!(!out.contains_key(gone), "{gone} was forwarded");
    }
    assert_eq!(out["accept"], "text/html");
    assert_eq!(out["cookie"], "app=1");
    assert_eq!(out["host"], "127.0.0.1:8080");
}

#[test]
fn host_origin_and_referer_point_at_the_upstream() {
    let r = route(&service("10.0.0.2:443", "app.lan", true, "", "/pre"));
    let incoming = headers(&[
        ("origin", "https://relay.example"),
        (
            "referer",
            "https://relay.example/api/v1/sessions/s1/proxy/web/pre/page?q=1",
        ),
    ]);
    let out = r.request_headers(&incoming, false);
    assert_eq!(out["host"], "app.lan");
    assert_eq!(out["origin"], "https://app.lan");
    assert_eq!(out["referer"], "https://app.lan/page?q=1");

    let r = route(&service("192.168.1.5:8080", "", false, "", ""));
    let incoming = headers(&[
        ("origin", "https://relay.example"),
        ("referer", "https://relay.example/ui/sessions"),
    ]);
    let out = r.request_headers(&incoming, false);
    assert_eq!(out["host"], "192.168.1.5:8080");
    assert_eq!(out["origin"], "http://192.168.1.5:8080");
    assert_eq!(out["referer"], "http://192.168.1.5:8080/");
    // no Origin is invented
    let out = r.request_headers(&HeaderMap::new(), false);
    assert!(!out.contains_key("origin"));
}

#[test]
fn upgrade_requests_keep_their_upgrade_headers() {
    let r = route(&service("127.0.0.1:80", "", false, "", ""));
    let incoming = headers(&[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]);
    let out = r.request_headers(&incoming, true);
    assert_eq!(out["connection"], "upgrade");
    assert_eq!(out["upgrade"], "websocket");
    assert_eq!(out["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
    let out = r.request_headers(&incoming, false);
    assert!(!out.contains_key("upgrade"));
}

#[test]
fn csp_gets_frame_ancestors_merged_not_replaced() {
    assert_eq!(
        merge_frame_ancestors("default-src 'self'; img-src *"),
        "default-src 'self'; img-src *; frame-ancestors 'self'"
    );
    assert_eq!(
        merge_frame_ancestors("frame-ancestors 'none'; script-src 'self';"),
        "frame-ancestors 'self'; script-src 'self'"
    );
    assert_eq!(
        merge_frame_ancestors("Frame-Ancestors a; frame-ancestors b"),
        "frame-ancestors 'self'"
    );
}

#[test]
fn response_headers_allow_framing_by_the_relay() {
    let r = route(&service("127.0.0.1:80", "", false, "", ""));
    let upstream = headers(&[
        ("x-frame-options", "DENY"),
        ("content-security-policy", "default-src 'self'"),
        ("connection", "close"),
        ("content-type", "text/html"),
    ]);
    let out = r.response_headers(&upstream, false);
    assert!(!out.contains_key("x-frame-options"));
    assert!(!out.contains_key("connection"));
    assert_eq!(
        out["content-security-policy"],
        "default-src 'self'; frame-ancestors 'self'"
    );
    assert_eq!(out["content-type"], "text/html");
    let out = r.response_headers(&HeaderMap::new(), false);
    assert_eq!(out["content-security-policy"], "frame-ancestors 'self'");
    // a 101 keeps Connection/Upgrade
    let upstream = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
    let out = r.response_headers(&upstream, true);
    assert_eq!(out["upgrade"], "websocket");
}

#[test]
fn redirects_to_the_upstream_stay_inside_the_proxy() {
    let r = route(&service("10.0.0.2:443", "app.lan", true, "", "/pre"));
    let loc = |v: &str| {
        let out = r.response_headers(&headers(&[("location", v)]), false);
        out["location"].to_str().unwrap().to_owned()
    };
    assert_eq!(
        loc("https://app.lan/login?next=%2F"),
        format!("{BASE}/pre/login?next=%2F")
    );
    assert_eq!(loc("https://APP.lan:443/x"), format!("{BASE}/pre/x"));
    assert_eq!(loc("http://10.0.0.2:443"), format!("{BASE}/pre/"));
    assert_eq!(loc("/abs/path"), format!("{BASE}/pre/abs/path"));
    assert_eq!(loc("relative/path"), "relative/path");
    assert_eq!(
        loc("https://elsewhere.example/x"),
        "https://elsewhere.example/x"
    );
    assert_eq!(loc("//app.lan/y"), format!("{BASE}/pre/y"));

    let r = route(&service("127.0.0.1:8080", "", false, "", ""));
    let out = r.response_headers(&headers(&[("location", "http://127.0.0.1:8080/a")]), false);
    assert_eq!(out["location"], format!("{BASE}/a").as_str());
}

#[test]
fn the_relays_own_cookies_never_go_upstream() {
    let r = route(&service("10.0.0.5:80", "", false, "", ""));
    let out = r.request_headers(
        &headers(&[(
            "cookie",
            "tether_session=abc; app=1; tether_origin=x.y.z; tether_login_csrf=q",
        )]),
        false,
    );
    assert_eq!(out["cookie"], "app=1");
    let out = r.request_headers(&headers(&[("cookie", "tether_origin=x.y.z")]), false);
    assert!(!out.contains_key("cookie"));
}

#[test]
fn a_service_origin_gets_host_only_cookies_and_encodings_it_can_undo() {
    let r = Route::new("", &service("10.0.0.5:80", "nas.local", false, "", ""));
    let upstream = headers(&[
        ("set-cookie", "sid=1; Domain=nas.local; Path=/; HttpOnly"),
        ("set-cookie", "lang=en; domain=.localhost"),
        ("set-cookie", "tether_origin=forged; Path=/"),
        ("location", "http://nas.local/after"),
    ]);
    let out = r.origin_response_headers(&upstream, false);
    let cookies: Vec<&str> = out
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["sid=1; Path=/; HttpOnly", "lang=en"]);
    assert_eq!(out["location"], "/after");
    assert_eq!(out["content-security-policy"], "frame-ancestors 'self'");

    let req = r.origin_request_headers(
        &headers(&[("accept-encoding", "gzip, deflate, br, zstd;q=0.9")]),
        false,
    );
    assert_eq!(req["accept-encoding"], "gzip, deflate, br");
    assert_eq!(req["host"], "nas.local");
    let req = r.origin_request_headers(&headers(&[("accept-encoding", "zstd")]), false);
    assert!(!req.contains_key("accept-encoding"));
}
