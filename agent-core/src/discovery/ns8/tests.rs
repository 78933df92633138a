use alloc::string::ToString;
use alloc::vec;

use super::*;

fn s(v: &str) -> String {
    String::from(v)
}

fn route(instance: &str, host: &str, path: &str, url: &str, strip_prefix: bool) -> Route {
    Route {
        instance: s(instance),
        host: s(host),
        path: s(path),
        url: s(url),
        strip_prefix,
        skip_cert_verify: false,
    }
}

#[test]
fn module_id_matches_the_reference_regex() {
    let cases = [
        ("nethvoice103-ui", Some("nethvoice103")),
        ("metrics1_grafana", Some("metrics1")),
        ("traefik1", Some("traefik1")),
        ("loki1", Some("loki1")),
        ("loki", None),
        ("cluster-admin", None),
        ("", None),
        ("1", None),
        ("12", Some("12")),
        ("a1", Some("a1")),
        ("1-ui", None),
        ("webtop2-", Some("webtop2")),
        // Greedy: the longest prefix that ends in a digit before a separator or the end.
        ("mail1-webmail-2", Some("mail1-webmail-2")),
        ("mail1-webmail", Some("mail1")),
        ("nethvoice103-ui_2x", Some("nethvoice103")),
        ("samba1.x", None),
        ("a1b", None),
        ("ä1-x", Some("ä1")),
        // `.` does not cross a newline, and `$` is only the end of the text.
        ("x\n1", None),
        ("ab1\ncd2", None),
        ("ab1-\ncd2", Some("ab1")),
    ];
    for (instance, expected) in cases {
        assert_eq!(module_id(instance), expected, "{instance:?}");
    }
}

#[test]
fn parses_expanded_routes_ignoring_unknown_fields() {
    let json = br#"[
        {"instance": "nethvoice103-ui", "host": "voice.example.org", "url": "http://127.0.0.1:20107",
         "lets_encrypt": true, "http2https": true, "user_created": false,
         "headers": {"request": {"X-A": "b"}}},
        {"instance": "metrics1_grafana", "path": "/grafana", "url": "http://127.0.0.1:3000",
         "strip_prefix": true, "skip_cert_verify": true, "http2https": true, "user_created": false},
        {},
        {"instance": "x", "host": null, "path": null, "strip_prefix": null, "url": "http://h"}
    ]"#;
    let routes = parse_routes(json).unwrap();
    assert_eq!(
        routes,
        vec![
            route(
                "nethvoice103-ui",
                "voice.example.org",
                "",
                "http://127.0.0.1:20107",
                false
            ),
            Route {
                skip_cert_verify: true,
                ..route(
                    "metrics1_grafana",
                    "",
                    "/grafana",
                    "http://127.0.0.1:3000",
                    true
                )
            },
            Route::default(),
            route("x", "", "", "http://h", false),
        ]
    );
    assert_eq!(parse_routes(b"[]").unwrap(), vec![]);
}

#[test]
fn rejects_route_lists_of_the_wrong_shape() {
    for bad in [
        &b""[..],
        b"{}",
        b"null",
        br#"["cluster-admin"]"#,
        br#"[{"instance": 7}]"#,
        br#"[{"strip_prefix": "yes"}]"#,
        b"[{}",
        b"\xff",
    ] {
        let err = parse_routes(bad).unwrap_err();
        assert!(matches!(err, RoutesError::Json(_)), "{bad:?}: {err}");
        assert!(
            err.to_string()
                .starts_with("route list is not a json array")
        );
    }
}

#[test]
fn rejects_route_lists_over_the_limits() {
    let big = vec![b' '; MAX_ROUTES_BYTES + 1];
    assert!(matches!(
        parse_routes(&big),
        Err(RoutesError::TooLarge { len, max }) if len == MAX_ROUTES_BYTES + 1 && max == MAX_ROUTES_BYTES
    ));
    let mut many = String::from("[");
    for i in 0..=MAX_ROUTES {
        if i > 0 {
            many.push(',');
        }
        many.push_str("{}");
    }
    many.push(']');
    let err = parse_routes(many.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "route list has 10001 routes, at most 10000 are allowed"
    );
}

#[test]
fn backend_urls_become_targets_with_default_ports() {
    let ok = |url: &str, target: &str, tls: bool| {
        assert_eq!(
            parse_backend_url(url),
            Ok(Backend {
                target: s(target),
                tls
            }),
            "{url}"
        );
    };
    ok("http://127.0.0.1:9311", "127.0.0.1:9311", false);
    ok("http://127.0.0.1", "127.0.0.1:80", false);
    ok("https://127.0.0.1", "127.0.0.1:443", true);
    ok(
        "HTTPS://backend.lan:8443/app?x=1#f",
        "backend.lan:8443",
        true,
    );
    ok("http://user:pa:ss@10.0.0.1:81/", "10.0.0.1:81", false);
    ok("http://[::1]:9090/x", "[::1]:9090", false);
    ok("https://[fe80::1%25eth0]", "[fe80::1%25eth0]:443", true);
    ok("http://h:/p", "h:80", false);
    ok("http://h?q", "h:80", false);
    ok("http://h:080", "h:80", false);
}

#[test]
fn rejects_backend_urls_the_agent_cannot_dial() {
    let cases = [
        (
            "127.0.0.1:9311",
            "has no scheme, expected http:// or https://",
        ),
        ("ftp://h", "has a scheme other than http or https"),
        ("h2c://h:1", "has a scheme other than http or https"),
        ("http://", "has no host"),
        ("http:///path", "has no host"),
        ("http://user@", "has no host"),
        ("http://[]:80", "has no host"),
        (
            "http://[::1",
            "has an IPv6 host without its closing bracket",
        ),
        ("http://[::1]x", "has text after its IPv6 host"),
        ("http://::1:80", "has an IPv6 host without brackets"),
        ("http://h:0", "has a port outside 1 to 65535"),
        ("http://h:65536", "has a port outside 1 to 65535"),
        (
            "http://h:99999999999999999999",
            "has a port outside 1 to 65535",
        ),
        ("http://h:+80", "has a port that is not a number"),
        ("http://h:8o", "has a port that is not a number"),
    ];
    for (url, problem) in cases {
        assert_eq!(parse_backend_url(url), Err(problem), "{url}");
    }
    let long = format!("http://h/{}", "a".repeat(MAX_URL));
    assert_eq!(parse_backend_url(&long), Err("is too long"));
}

#[test]
fn local_route_maps_like_the_reference() {
    let r = route(
        "metrics1_grafana",
        "",
        "/grafana",
        "http://127.0.0.1:3000",
        true,
    );
    let (name, info) = route_service(&r, "1", Placement::Local, "Metrics").unwrap();
    assert_eq!(name, "metrics1_grafana");
    assert_eq!(
        info,
        ServiceInfo {
            target: s("127.0.0.1:3000"),
            host: s(""),
            tls: false,
            label: s("Metrics"),
            path: s("/grafana"),
            path_prefix: s("/grafana"),
            module_id: s("metrics1"),
            node_id: s("1"),
        }
    );
    // Without strip_prefix the path is only a hint; an https backend is dialed with TLS.
    let r = route(
        "webtop1",
        "webtop.example.org",
        "",
        "https://127.0.0.1:20013",
        false,
    );
    let (_, info) = route_service(&r, "1", Placement::Local, "").unwrap();
    assert_eq!(
        info,
        ServiceInfo {
            target: s("127.0.0.1:20013"),
            host: s("webtop.example.org"),
            tls: true,
            label: s(""),
            path: s(""),
            path_prefix: s(""),
            module_id: s("webtop1"),
            node_id: s("1"),
        }
    );
    let r = route(
        "cluster-admin",
        "",
        "/cluster-admin",
        "http://127.0.0.1:9311",
        false,
    );
    let (_, info) = route_service(&r, "1", Placement::Local, "").unwrap();
    assert_eq!(info.module_id, "");
    assert_eq!(info.path_prefix, "");
}

#[test]
fn remote_route_goes_through_the_nodes_traefik() {
    let r = route(
        "metrics1_grafana",
        "",
        "/grafana",
        "http://127.0.0.1:3000",
        true,
    );
    let ip: IpAddr = "10.5.4.2".parse().unwrap();
    let (name, info) = route_service(&r, "2", Placement::Remote(ip), "Metrics").unwrap();
    assert_eq!(name, "metrics1_grafana");
    assert_eq!(
        info,
        ServiceInfo {
            target: s("10.5.4.2:443"),
            host: s(""),
            tls: true,
            label: s("Metrics"),
            path: s("/grafana"),
            path_prefix: s(""),
            module_id: s("metrics1"),
            node_id: s("2"),
        }
    );
    // The remote backend URL is not dialed, so it need not parse; IPv6 is bracketed.
    let r = route("nextcloud2", "cloud.example.org", "", "", false);
    let ip: IpAddr = "fd00::2".parse().unwrap();
    let (_, info) = route_service(&r, "2", Placement::Remote(ip), "").unwrap();
    assert_eq!(info.target, "[fd00::2]:443");
    assert!(info.tls);
}

#[test]
fn refuses_routes_that_cannot_be_services() {
    let local = |r: &Route| route_service(r, "1", Placement::Local, "").unwrap_err();
    assert_eq!(local(&Route::default()), RouteError::NoInstance);
    assert!(matches!(
        local(&route("-x", "", "", "http://h", false)),
        RouteError::BadName { .. }
    ));
    assert!(matches!(
        local(&route("a b", "", "", "http://h", false)),
        RouteError::BadName { .. }
    ));
    let err = local(&route("app1", "", "", "", false));
    assert_eq!(err.to_string(), r#"route "app1": backend url "" is empty"#);
    let err = local(&route("app1", "", "", "ftp://h", false));
    assert_eq!(
        err.to_string(),
        r#"route "app1": backend url "ftp://h" has a scheme other than http or https"#
    );
    assert!(matches!(
        local(&route("app1", "", "", "http://bad host/", false)),
        RouteError::BadTarget { .. }
    ));
    assert!(matches!(
        local(&route("app1", "bad host", "", "http://h", false)),
        RouteError::BadHost { .. }
    ));
}

#[test]
fn nodes_are_ordered_leader_local_then_numeric() {
    let nodes = |v: &[&str]| v.iter().map(|n| s(n)).collect::<Vec<_>>();
    let all = nodes(&["1", "10", "2", "3", "2"]);
    assert_eq!(
        order_nodes(&all, Some("3"), Some("10")),
        nodes(&["3", "10", "1", "2"])
    );
    assert_eq!(
        order_nodes(&all, Some("1"), Some("1")),
        nodes(&["1", "2", "3", "10"])
    );
    assert_eq!(order_nodes(&all, None, None), nodes(&["1", "2", "3", "10"]));
    // A leader or local node without Traefik has nothing to visit.
    assert_eq!(
        order_nodes(&all, Some("7"), Some("3")),
        nodes(&["3", "1", "2", "10"])
    );
    assert_eq!(order_nodes(&[], Some("1"), Some("1")), nodes(&[]));
}

#[test]
fn first_node_to_publish_a_name_wins() {
    let info = |node: &str| ServiceInfo {
        target: s("127.0.0.1:1"),
        node_id: s(node),
        ..ServiceInfo::default()
    };
    let mut merged = BTreeMap::new();
    let shadowed = merge_first_wins(&mut merged, [(s("a"), info("1")), (s("b"), info("1"))]);
    assert!(shadowed.is_empty());
    let shadowed = merge_first_wins(&mut merged, [(s("b"), info("2")), (s("c"), info("2"))]);
    assert_eq!(shadowed, vec![s("b")]);
    assert_eq!(merged.len(), 3);
    assert_eq!(merged["b"].node_id, "1");
    assert_eq!(merged["c"].node_id, "2");
}

#[test]
fn node_ids_come_from_traefik_keys() {
    assert_eq!(
        node_id_from_traefik_key("node/1/default_instance/traefik"),
        Some("1")
    );
    assert_eq!(
        node_id_from_traefik_key("node/12/default_instance/traefik"),
        Some("12")
    );
    for bad in [
        "node//default_instance/traefik",
        "node/a/default_instance/traefik",
        "node/1/x/default_instance/traefik",
        "node/1/default_instance/traefik2",
        "module/1/default_instance/traefik",
        "node/12345678901/default_instance/traefik",
    ] {
        assert_eq!(node_id_from_traefik_key(bad), None, "{bad}");
    }
}

#[test]
fn module_names_are_checked_before_use() {
    assert!(is_module_name("traefik1"));
    assert!(is_module_name("my_mod-2"));
    for bad in ["", "traefik1/../x", "a b", "tr\u{e4}efik", "x;y"] {
        assert!(!is_module_name(bad), "{bad:?}");
    }
    assert!(!is_module_name(&"a".repeat(MAX_MODULE_NAME + 1)));
}

#[test]
fn node_id_is_read_from_the_environment_file() {
    let cases = [
        ("NODE_ID=1\n", Some("1")),
        ("FOO=bar\nNODE_ID=12\nNODE_ID=13\n", Some("12")),
        ("export NODE_ID=\"7\"\n", Some("7")),
        ("  export\tNODE_ID = '8'  \r\n", Some("8")),
        ("NODE_ID=\"\"\n", None),
        ("NODE_ID=\n", None),
        ("NODE_IDX=3\n", None),
        ("exportNODE_ID=3\n", None),
        ("# NODE_ID=3\n", None),
        ("", None),
        ("NODE_ID=\"5\n", Some("\"5")),
    ];
    for (text, expected) in cases {
        assert_eq!(node_id_from_environment(text), expected, "{text:?}");
    }
}
