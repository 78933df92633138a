use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::*;

fn svc(target: &str) -> ServiceInfo {
    ServiceInfo {
        target: target.into(),
        label: "x".into(),
        ..ServiceInfo::default()
    }
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, ServiceInfo> {
    entries
        .iter()
        .map(|(name, target)| (String::from(*name), svc(target)))
        .collect()
}

fn add(entries: &[(&str, &str)]) -> Command {
    Command::AddServices {
        services: map(entries),
    }
}

fn remove(names: &[&str]) -> Command {
    Command::RemoveServices {
        service_names: names.iter().map(|n| String::from(*n)).collect(),
    }
}

fn names(catalogue: &ServiceCatalogue) -> Vec<&str> {
    catalogue.services().keys().map(String::as_str).collect()
}

#[test]
fn parses_the_reference_examples() {
    let services = parse_static_services(
        "cluster-admin=localhost:9090, phone=192.168.1.100:443:host=phone.lan:tls",
    )
    .unwrap();
    assert_eq!(
        services["cluster-admin"],
        ServiceInfo {
            target: "localhost:9090".into(),
            label: "cluster-admin".into(),
            ..ServiceInfo::default()
        }
    );
    assert_eq!(
        services["phone"],
        ServiceInfo {
            target: "192.168.1.100:443".into(),
            host: "phone.lan".into(),
            tls: true,
            label: "phone".into(),
            ..ServiceInfo::default()
        }
    );
}

#[test]
fn static_spec_accepts_tls_without_host_ipv6_and_blank_entries() {
    let services = parse_static_services(" , a=[::1]:8443:tls,,b=h:1 ,").unwrap();
    assert_eq!(services.len(), 2);
    assert!(services["a"].tls);
    assert_eq!(services["a"].target, "[::1]:8443");
    assert!(!services["b"].tls);
    assert!(parse_static_services("").unwrap().is_empty());
}

#[test]
fn malformed_static_entries_are_errors_naming_the_entry() {
    assert_eq!(
        parse_static_services("ok=h:1,broken").unwrap_err(),
        StaticServiceError::MissingEquals {
            entry: "broken".into()
        }
    );
    let err = parse_static_services("web=host").unwrap_err();
    assert!(matches!(err, StaticServiceError::BadTarget { ref entry, .. } if entry == "web=host"));
    assert_eq!(
        err.to_string(),
        "static service \"web=host\" has an invalid target: target \"host\" has no port, expected host:port"
    );
    assert!(matches!(
        parse_static_services("bad name=h:1"),
        Err(StaticServiceError::BadName { .. })
    ));
    assert!(matches!(
        parse_static_services("=h:1"),
        Err(StaticServiceError::BadName { .. })
    ));
    assert!(matches!(
        parse_static_services("w=h:1:host=bad host"),
        Err(StaticServiceError::BadHost { .. })
    ));
    assert!(matches!(
        parse_static_services("w=a b:80"),
        Err(StaticServiceError::BadTarget { .. })
    ));
    assert!(matches!(
        parse_static_services("w=h:0"),
        Err(StaticServiceError::BadTarget { .. })
    ));
    // `:tls` must come last, as in the reference.
    assert!(matches!(
        parse_static_services("w=h:1:tls:host=v"),
        Err(StaticServiceError::BadTarget { .. })
    ));
}

#[test]
fn duplicate_static_names_are_refused() {
    assert_eq!(
        parse_static_services("a=h:1,a=h:2").unwrap_err(),
        StaticServiceError::Duplicate { name: "a".into() }
    );
}

#[test]
fn manifest_merges_discovered_and_injected() {
    let mut catalogue = ServiceCatalogue::new(map(&[("ui", "127.0.0.1:443")]));
    assert_eq!(
        catalogue.apply(&add(&[("printer", "10.0.0.9:631")])),
        Ok(true)
    );
    let manifest = catalogue.manifest();
    assert_eq!(manifest.version, 1);
    assert_eq!(
        manifest.services.keys().collect::<Vec<_>>(),
        ["printer", "ui"]
    );
    assert!(catalogue.is_injected("printer"));
    assert!(!catalogue.is_injected("ui"));
    assert_eq!(catalogue.get("printer").unwrap().target, "10.0.0.9:631");
}

#[test]
fn rediscovery_keeps_injected_services() {
    let mut catalogue = ServiceCatalogue::new(map(&[("ui", "127.0.0.1:443")]));
    catalogue
        .apply(&add(&[("printer", "10.0.0.9:631")]))
        .unwrap();
    assert!(catalogue.set_discovered(map(&[("ui2", "127.0.0.1:8443")])));
    assert_eq!(names(&catalogue), ["printer", "ui2"]);
    assert!(!catalogue.set_discovered(map(&[("ui2", "127.0.0.1:8443")])));
}

#[test]
fn empty_discovery_clears_discovered_services() {
    let mut catalogue = ServiceCatalogue::new(map(&[("ui", "127.0.0.1:443")]));
    assert!(catalogue.set_discovered(BTreeMap::new()));
    assert!(catalogue.manifest().services.is_empty());
    assert!(!catalogue.set_discovered(BTreeMap::new()));
}

#[test]
fn discovered_service_wins_over_an_injected_one_of_the_same_name() {
    let mut catalogue = ServiceCatalogue::default();
    catalogue.apply(&add(&[("web", "10.0.0.1:80")])).unwrap();
    catalogue.set_discovered(map(&[("web", "127.0.0.1:80")]));
    assert_eq!(catalogue.get("web").unwrap().target, "127.0.0.1:80");
    // Removing the hidden injected entry does not change what is published.
    assert_eq!(catalogue.apply(&remove(&["web"])), Ok(false));
    assert_eq!(catalogue.get("web").unwrap().target, "127.0.0.1:80");
}

#[test]
fn add_refuses_a_discovered_name() {
    let mut catalogue = ServiceCatalogue::new(map(&[("web", "127.0.0.1:80")]));
    let err = catalogue
        .apply(&add(&[("web", "10.0.0.1:80")]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid service name \"web\": a discovered service already has this name"
    );
}

#[test]
fn add_is_all_or_nothing() {
    let mut catalogue = ServiceCatalogue::default();
    let err = catalogue
        .apply(&add(&[
            ("good", "10.0.0.1:80"),
            ("meta", "169.254.169.254:80"),
        ]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "target of \"meta\" refused: 169.254.169.254 is a cloud metadata address"
    );
    assert!(catalogue.services().is_empty());
    assert!(!catalogue.is_injected("good"));
}

#[test]
fn command_errors_use_the_reference_texts() {
    let mut catalogue = ServiceCatalogue::default();
    let eleven: Vec<(String, String)> = (0..11)
        .map(|i| (alloc::format!("s{i}"), String::from("10.0.0.1:80")))
        .collect();
    let eleven: Vec<(&str, &str)> = eleven
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let cases: Vec<(Command, &str)> = vec![
        (add(&[]), "no services provided"),
        (
            add(&eleven),
            "too many services: 11, at most 10 per command",
        ),
        (
            add(&[("Bad", "10.0.0.1:80")]),
            "invalid service name \"Bad\": name must start with a lowercase letter or digit, not 'B'",
        ),
        (
            add(&[("web", "metadata.google.internal:80")]),
            "target of \"web\" refused: \"metadata.google.internal\" is a cloud metadata host name",
        ),
        (
            add(&[("web", "")]),
            "target of \"web\" refused: target is empty",
        ),
        (remove(&[]), "no service names provided"),
    ];
    for (command, text) in cases {
        assert_eq!(catalogue.apply(&command).unwrap_err().to_string(), text);
    }
    assert_eq!(
        CommandError::UnsupportedVersion("2".into()).to_string(),
        "unsupported command version \"2\""
    );
    assert_eq!(
        CommandError::UnknownAction("reboot".into()).to_string(),
        "unknown action \"reboot\""
    );
    assert_eq!(
        CommandError::InvalidJson("eof".into()).to_string(),
        "invalid json: eof"
    );
}

#[test]
fn add_refuses_a_bad_upstream_host() {
    let mut services = map(&[("web", "10.0.0.1:80")]);
    services.get_mut("web").unwrap().host = "-bad".into();
    let err = ServiceCatalogue::default()
        .apply(&Command::AddServices { services })
        .unwrap_err();
    assert!(matches!(err, CommandError::HostRefused { .. }));
}

#[test]
fn total_is_capped_at_500() {
    let discovered: BTreeMap<String, ServiceInfo> = (0..495)
        .map(|i| (alloc::format!("d{i:03}"), svc("127.0.0.1:80")))
        .collect();
    let mut catalogue = ServiceCatalogue::new(discovered);
    let five: Vec<String> = (0..5).map(|i| alloc::format!("i{i}")).collect();
    let five: Vec<(&str, &str)> = five.iter().map(|n| (n.as_str(), "10.0.0.1:80")).collect();
    assert_eq!(catalogue.apply(&add(&five)), Ok(true));
    assert_eq!(catalogue.services().len(), 500);
    // Re-adding existing injected names replaces them and stays within the limit.
    assert_eq!(catalogue.apply(&add(&five[..1])), Ok(false));
    assert_eq!(
        catalogue.apply(&add(&[("one-more", "10.0.0.1:80")])),
        Err(CommandError::TooManyInTotal)
    );
    assert_eq!(
        CommandError::TooManyInTotal.to_string(),
        "too many services in total: at most 500"
    );
}

#[test]
fn published_view_is_cut_deterministically_at_500() {
    let discovered: BTreeMap<String, ServiceInfo> = (0..600)
        .map(|i| (alloc::format!("d{i:03}"), svc("127.0.0.1:80")))
        .collect();
    let catalogue = ServiceCatalogue::new(discovered);
    let services = catalogue.manifest().services;
    assert_eq!(services.len(), MAX_SERVICES_TOTAL);
    assert_eq!(services.keys().next_back().unwrap(), "d499");
}

#[test]
fn remove_only_removes_injected_services() {
    let mut catalogue = ServiceCatalogue::new(map(&[("ui", "127.0.0.1:443")]));
    catalogue
        .apply(&add(&[("printer", "10.0.0.9:631")]))
        .unwrap();
    assert_eq!(catalogue.apply(&remove(&["ui", "nope"])), Ok(false));
    assert_eq!(names(&catalogue), ["printer", "ui"]);
    assert_eq!(catalogue.apply(&remove(&["printer"])), Ok(true));
    assert_eq!(names(&catalogue), ["ui"]);
    assert!(!catalogue.is_injected("printer"));
}

#[test]
fn add_with_names_resolved_later_is_accepted() {
    let mut catalogue = ServiceCatalogue::default();
    assert_eq!(
        catalogue.apply(&add(&[("nas", "nas.lan:5001"), ("v6", "[fd00::5]:443")])),
        Ok(true)
    );
}
