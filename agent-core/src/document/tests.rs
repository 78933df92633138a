use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use serde_json::json;

use super::*;

const GOLDEN_MANIFEST: &[u8] = include_bytes!("../../tests/golden/manifest.json");
const GOLDEN_MANIFEST_MINIMAL: &[u8] = include_bytes!("../../tests/golden/manifest_minimal.json");
const GOLDEN_DIAGNOSTICS: &[u8] = include_bytes!("../../tests/golden/diagnostics.json");
const GOLDEN_USERS: &[u8] = include_bytes!("../../tests/golden/users.json");
const GOLDEN_COMMAND_ADD: &[u8] = include_bytes!("../../tests/golden/command_add.json");
const GOLDEN_COMMAND_REMOVE: &[u8] = include_bytes!("../../tests/golden/command_remove.json");

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn sample_manifest() -> Manifest {
    let mut services = BTreeMap::new();
    services.insert(
        "cluster-admin".into(),
        ServiceInfo {
            target: "localhost:9090".into(),
            label: "cluster-admin".into(),
            ..ServiceInfo::default()
        },
    );
    services.insert(
        "nethvoice103-ui".into(),
        ServiceInfo {
            target: "10.5.4.1:443".into(),
            host: "voice.example.org".into(),
            tls: true,
            label: "NethVoice".into(),
            path: "/".into(),
            path_prefix: "/ui".into(),
            module_id: "nethvoice103".into(),
            node_id: "1".into(),
        },
    );
    services.insert(
        "phone".into(),
        ServiceInfo {
            target: "192.168.1.100:443".into(),
            host: "phone.lan".into(),
            tls: true,
            label: "Phone & fax <lobby>".into(),
            ..ServiceInfo::default()
        },
    );
    Manifest {
        version: 1,
        services,
    }
}

fn sample_diagnostics() -> DiagnosticsReport {
    DiagnosticsReport {
        collected_at: ts("2026-03-24T19:13:28.123456789+01:00"),
        duration_ms: 1532,
        overall_status: Status::Critical,
        plugins: vec![
            PluginReport {
                id: "system".into(),
                name: "System".into(),
                status: Status::Warning,
                summary: Some("load high".into()),
                checks: vec![
                    Check {
                        name: "load".into(),
                        status: Status::Warning,
                        value: Some("3.5".into()),
                        details: Some(Details(json!({
                            "cpus": 2,
                            "load": [3.5, 2.1, 1.0],
                            "nested": {"ok": true, "tags": ["a", "b"]}
                        }))),
                    },
                    Check {
                        name: "disk".into(),
                        status: Status::Ok,
                        value: None,
                        details: None,
                    },
                ],
            },
            PluginReport {
                id: "backup".into(),
                name: "Backup".into(),
                status: Status::Critical,
                summary: None,
                checks: vec![Check {
                    name: "last".into(),
                    status: Status::Critical,
                    value: None,
                    details: Some(Details(json!("never"))),
                }],
            },
            PluginReport {
                id: "slow".into(),
                name: "Slow plugin".into(),
                status: Status::Timeout,
                summary: None,
                checks: Vec::new(),
            },
        ],
    }
}

fn sample_users() -> UsersReport {
    let mut module_domains = BTreeMap::new();
    module_domains.insert("nethvoice103".into(), "example.org".into());
    module_domains.insert("webtop1".into(), "example.org".into());
    UsersReport {
        created_at: ts("2026-03-24T19:14:00Z"),
        duration_ms: 250,
        users: SessionUsers {
            session_id: "NETH-1234".into(),
            platform: "ns8".into(),
            cluster_admin: Some(Credential {
                username: "support-a1b2".into(),
                password: "s3cr3t-Pa55".into(),
            }),
            domain_users: vec![DomainUser {
                domain: "example.org".into(),
                module: "samba1".into(),
                username: "support-a1b2".into(),
                password: "pw1".into(),
            }],
            local_users: vec![Credential {
                username: "root-support".into(),
                password: "pw2".into(),
            }],
            apps: vec![
                AppInfo {
                    id: "nethvoice103".into(),
                    name: "NethVoice".into(),
                    url: Some("https://voice.example.org".into()),
                    notes: None,
                },
                AppInfo {
                    id: "webtop1".into(),
                    name: "Webtop".into(),
                    url: None,
                    notes: Some("log in with the domain user".into()),
                },
            ],
            errors: vec![UserError {
                id: "mail1".into(),
                message: "module not ready".into(),
            }],
            module_domains,
            created_at: ts("2026-03-24T19:13:59.5+01:00"),
        },
    }
}

fn sample_add() -> Command {
    let mut services = BTreeMap::new();
    services.insert(
        "nas".into(),
        ServiceInfo {
            target: "nas.lan:5001".into(),
            tls: true,
            label: "NAS".into(),
            ..ServiceInfo::default()
        },
    );
    services.insert(
        "printer".into(),
        ServiceInfo {
            target: "192.168.1.20:631".into(),
            label: "Printer".into(),
            ..ServiceInfo::default()
        },
    );
    Command::AddServices { services }
}

fn sample_remove() -> Command {
    Command::RemoveServices {
        service_names: vec!["printer".into(), "nas".into()],
    }
}

/// Byte-exact comparison with a readable failure.
fn assert_golden(produced: &[u8], golden: &[u8]) {
    assert_eq!(
        core::str::from_utf8(produced).unwrap(),
        core::str::from_utf8(golden).unwrap()
    );
}

#[test]
fn manifest_matches_golden_file() {
    assert_golden(&to_json_line(&sample_manifest()), GOLDEN_MANIFEST);
    assert_eq!(
        Manifest::parse_json(GOLDEN_MANIFEST).unwrap(),
        Some(sample_manifest())
    );
}

#[test]
fn minimal_manifest_matches_golden_file() {
    let empty = Manifest {
        version: 1,
        services: BTreeMap::new(),
    };
    assert_golden(&to_json_line(&empty), GOLDEN_MANIFEST_MINIMAL);
    assert_eq!(
        Manifest::parse_json(GOLDEN_MANIFEST_MINIMAL).unwrap(),
        Some(empty)
    );
}

#[test]
fn diagnostics_matches_golden_file() {
    assert_golden(&to_json_line(&sample_diagnostics()), GOLDEN_DIAGNOSTICS);
    assert_eq!(
        DiagnosticsReport::parse_json(GOLDEN_DIAGNOSTICS).unwrap(),
        sample_diagnostics()
    );
}

#[test]
fn users_matches_golden_file() {
    assert_golden(&to_json_line(&sample_users()), GOLDEN_USERS);
    assert_eq!(
        UsersReport::parse_json(GOLDEN_USERS).unwrap(),
        sample_users()
    );
}

#[test]
fn commands_match_golden_files() {
    assert_golden(&sample_add().to_json_line(), GOLDEN_COMMAND_ADD);
    assert_golden(&sample_remove().to_json_line(), GOLDEN_COMMAND_REMOVE);
    assert_eq!(Command::parse_json(GOLDEN_COMMAND_ADD), Ok(sample_add()));
    assert_eq!(
        Command::parse_json(GOLDEN_COMMAND_REMOVE),
        Ok(sample_remove())
    );
}

#[test]
fn every_document_round_trips_through_postcard() {
    fn round_trip<T>(value: &T)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + core::fmt::Debug,
    {
        let bytes = to_postcard(value).unwrap();
        let back: T = from_postcard(&bytes).unwrap();
        assert_eq!(&back, value);
    }
    round_trip(&sample_manifest());
    round_trip(&Manifest::default());
    round_trip(&sample_diagnostics());
    round_trip(&DiagnosticsReport::default());
    round_trip(&sample_users());
    round_trip(&UsersReport::default());
    round_trip(&sample_add());
    round_trip(&sample_remove());
    round_trip(&Status::Timeout);
    round_trip(&ts("1999-12-31T23:59:59.5-05:30"));
    round_trip(&Details(
        json!({"deep": [[{"x": null}], -1.25e-7, "\u{2028}"]}),
    ));
}

#[test]
fn postcard_refuses_trailing_and_truncated_bytes() {
    let mut bytes = to_postcard(&sample_manifest()).unwrap();
    bytes.push(0);
    assert!(matches!(
        from_postcard::<Manifest>(&bytes),
        Err(DocumentError::TrailingBytes(1))
    ));
    bytes.truncate(bytes.len() / 2);
    assert!(matches!(
        from_postcard::<Manifest>(&bytes),
        Err(DocumentError::Postcard(_))
    ));
}

#[test]
fn json_round_trips_through_serde_json_for_commands() {
    let value: Command = serde_json::from_slice(GOLDEN_COMMAND_ADD).unwrap();
    assert_eq!(value, sample_add());
}

#[test]
fn unknown_fields_are_ignored() {
    let manifest = br#"{"version":1,"extra":[1,2],"services":{"a":{"target":"h:1","future":{"x":1},"tls":true}}}"#;
    let parsed = Manifest::parse_json(manifest).unwrap().unwrap();
    assert_eq!(
        parsed.services["a"],
        ServiceInfo {
            target: "h:1".into(),
            tls: true,
            ..ServiceInfo::default()
        }
    );
    let diagnostics = br#"{"collected_at":"2026-01-01T00:00:00Z","overall_status":"ok","plugins":[{"id":"x","status":"ok","new":1,"checks":[{"name":"c","status":"ok","weight":3}]}],"host":"h"}"#;
    let report = DiagnosticsReport::parse_json(diagnostics).unwrap();
    assert_eq!(report.plugins[0].checks[0].name, "c");
    let users = br#"{"users":{"platform":"ns8","cluster_admin":{"username":"u","password":"p","mfa":true}},"v":2}"#;
    let report = UsersReport::parse_json(users).unwrap();
    assert_eq!(report.users.cluster_admin.unwrap().username, "u");
    let command =
        br#"{"action":"remove_services","service_names":["a"],"services":null,"by":"op"}"#;
    assert_eq!(
        Command::parse_json(command),
        Ok(Command::RemoveServices {
            service_names: vec!["a".into()]
        })
    );
}

#[test]
fn manifest_with_null_or_missing_services_is_ignored() {
    assert_eq!(
        Manifest::parse_json(br#"{"version":1,"services":null}"#).unwrap(),
        None
    );
    assert_eq!(Manifest::parse_json(b"{}").unwrap(), None);
    assert_eq!(
        Manifest::parse_json(b"{\"services\":{}}\n").unwrap(),
        Some(Manifest::default())
    );
}

#[test]
fn manifest_over_500_services_is_refused() {
    let services: BTreeMap<String, ServiceInfo> = (0..501)
        .map(|i| (format!("s{i}"), ServiceInfo::default()))
        .collect();
    let json = to_json_line(&Manifest {
        version: 1,
        services,
    });
    let err = Manifest::parse_json(&json).unwrap_err();
    assert_eq!(
        err.to_string(),
        "manifest has 501 services, at most 500 are allowed"
    );
}

#[test]
fn oversized_documents_are_refused_before_parsing() {
    let big = vec![b' '; MAX_DIAGNOSTICS_BYTES + 1];
    assert!(matches!(
        DiagnosticsReport::parse_json(&big),
        Err(DocumentError::TooLarge { .. })
    ));
    let big = vec![b' '; MAX_USERS_BYTES + 1];
    assert_eq!(
        UsersReport::parse_json(&big).unwrap_err().to_string(),
        "users report of 262145 bytes exceeds the limit of 262144 bytes"
    );
    let big = vec![b' '; MAX_COMMAND_BYTES + 1];
    assert!(matches!(
        Command::parse_json(&big),
        Err(CommandError::TooLarge { .. })
    ));
}

#[test]
fn invalid_json_is_reported_as_such() {
    let err = Manifest::parse_json(b"{\"services\":").unwrap_err();
    assert!(err.to_string().starts_with("invalid json: "), "{err}");
    let err = Command::parse_json(b"not json").unwrap_err();
    assert!(err.to_string().starts_with("invalid json: "), "{err}");
    let err = Command::parse_json(b"[1]").unwrap_err();
    assert!(err.to_string().starts_with("invalid json: "), "{err}");
}

#[test]
fn unknown_or_missing_action_is_named() {
    assert_eq!(
        Command::parse_json(br#"{"action":"reboot"}"#)
            .unwrap_err()
            .to_string(),
        "unknown action \"reboot\""
    );
    assert_eq!(
        Command::parse_json(b"{}").unwrap_err().to_string(),
        "unknown action \"\""
    );
}

#[test]
fn add_without_services_parses_and_fails_validation() {
    let command = Command::parse_json(br#"{"action":"add_services","services":null}"#).unwrap();
    assert_eq!(command.validate(), Err(CommandError::NoServices));
}

#[test]
fn status_orders_by_severity() {
    use Status::*;
    assert!(Critical > Error && Error > Timeout && Timeout > Unknown);
    assert!(Unknown > Warning && Warning > Ok);
    assert_eq!(Status::worst([Ok, Warning, Timeout, Ok]), Timeout);
    assert_eq!(Status::worst([Error, Critical]), Critical);
    assert_eq!(Status::worst([]), Ok);
}

#[test]
fn status_text_round_trips_and_unknown_text_is_unknown() {
    for status in Status::ALL {
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(json, format!("\"{}\"", status.as_str()));
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);
    }
    assert_eq!(
        serde_json::from_str::<Status>("\"degraded\"").unwrap(),
        Status::Unknown
    );
    assert_eq!(
        serde_json::from_str::<Status>("\"WARNING\"").unwrap(),
        Status::Warning
    );
    assert!(serde_json::from_str::<Status>("3").is_err());
}

#[test]
fn accepts_rfc3339_variants() {
    for text in [
        "2026-03-24T19:13:28Z",
        "2026-03-24T19:13:28+01:00",
        "2026-03-24T19:13:28-09:30",
        "2026-03-24T19:13:28.123456789+01:00",
        "2026-03-24T19:13:28.5Z",
        "2026-03-24t19:13:28z",
        "2024-02-29T00:00:00Z",
        "2000-02-29T23:59:59.999999999+23:59",
        "0001-01-01T00:00:00Z",
    ] {
        let parsed = Timestamp::parse(text).unwrap();
        assert_eq!(parsed.as_str(), text);
    }
}

#[test]
fn refuses_timestamp_garbage() {
    for text in [
        "",
        "yesterday",
        "2026-03-24",
        "2026-03-24T19:13:28",
        "2026-03-24 19:13:28Z",
        "2026-03-24T19:13:28.Z",
        "2026-03-24T19:13:28.1234567890Z",
        "2026-03-24T19:13:28+0100",
        "2026-03-24T19:13:28+01",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2026-03-24T24:00:00Z",
        "2026-03-24T23:60:00Z",
        "2026-03-24T23:59:60Z",
        "2026-03-24T19:13:28+24:00",
        "2026-03-24T19:13:28Zjunk",
        "+2026-03-24T19:13:28Z",
        "２026-03-24T19:13:28Z",
    ] {
        assert!(Timestamp::parse(text).is_err(), "{text:?}");
    }
    assert_eq!(
        Timestamp::parse("x").unwrap_err().to_string(),
        "timestamp \"x\" is not RFC 3339"
    );
    assert!(serde_json::from_str::<Timestamp>("\"soon\"").is_err());
}

#[test]
fn timestamp_millis_round_trip() {
    for (ms, text) in [
        (0, "1970-01-01T00:00:00Z"),
        (1_774_379_608_123, "2026-03-24T19:13:28.123Z"),
        (1_774_379_608_120, "2026-03-24T19:13:28.12Z"),
        (1_774_379_608_100, "2026-03-24T19:13:28.1Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (-86_400_000, "1969-12-31T00:00:00Z"),
        (951_782_400_000, "2000-02-29T00:00:00Z"),
        (1_709_164_800_000, "2024-02-29T00:00:00Z"),
        (-2_203_891_200_000, "1900-03-01T00:00:00Z"),
        (-62_135_596_800_000, "0001-01-01T00:00:00Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ] {
        let stamp = Timestamp::from_unix_millis(ms);
        assert_eq!(stamp.as_str(), text, "{ms}");
        assert_eq!(stamp.to_unix_millis(), ms, "{text}");
        assert_eq!(Timestamp::parse(text).unwrap(), stamp);
    }
}

#[test]
fn to_unix_millis_honours_the_offset() {
    let utc = ts("2026-03-24T18:13:28.123Z").to_unix_millis();
    assert_eq!(ts("2026-03-24T19:13:28.123+01:00").to_unix_millis(), utc);
    assert_eq!(
        ts("2026-03-24T08:43:28.123456789-09:30").to_unix_millis(),
        utc
    );
    assert_eq!(ts("1970-01-01T01:00:00+01:00").to_unix_millis(), 0);
}

#[test]
fn from_unix_millis_clamps_to_four_digit_years() {
    assert_eq!(
        Timestamp::from_unix_millis(i64::MAX).as_str(),
        "9999-12-31T23:59:59.999Z"
    );
    assert_eq!(
        Timestamp::from_unix_millis(i64::MIN).as_str(),
        "0000-01-01T00:00:00Z"
    );
}

#[test]
fn default_timestamp_is_go_zero_time() {
    assert_eq!(Timestamp::default().as_str(), "0001-01-01T00:00:00Z");
    assert_eq!(
        UsersReport::parse_json(b"{}\n").unwrap(),
        UsersReport::default()
    );
}

#[test]
fn debug_never_shows_passwords() {
    let users = sample_users();
    let shown = format!("{users:?}");
    assert!(!shown.contains("s3cr3t-Pa55"), "{shown}");
    assert!(!shown.contains("pw1"));
    assert!(!shown.contains("pw2"));
    assert!(shown.contains("support-a1b2"));
    assert!(shown.contains("***"));
}

#[test]
fn json_line_escapes_like_go() {
    let info = ServiceInfo {
        label: "<a&b>\u{2028}\u{2029}é\"\\\n".into(),
        ..ServiceInfo::default()
    };
    let line = to_json_line(&info);
    assert_eq!(
        core::str::from_utf8(&line).unwrap(),
        "{\"target\":\"\",\"host\":\"\",\"tls\":false,\"label\":\"\\u003ca\\u0026b\\u003e\\u2028\\u2029é\\\"\\\\\\n\"}\n"
    );
    let back: ServiceInfo = serde_json::from_slice(&line).unwrap();
    assert_eq!(back, info);
}

#[test]
fn omitted_fields_default_on_input() {
    let info: ServiceInfo = serde_json::from_str("{}").unwrap();
    assert_eq!(info, ServiceInfo::default());
    let check: Check = serde_json::from_str(r#"{"name":"n","status":"ok"}"#).unwrap();
    assert_eq!(check.value, None);
    assert_eq!(check.details, None);
    let missing_status: Check = serde_json::from_str(r#"{"name":"n"}"#).unwrap();
    assert_eq!(missing_status.status, Status::Unknown);
}

#[test]
fn details_carry_any_json() {
    for value in [json!(null), json!(1), json!("s"), json!([1, {"a": [true]}])] {
        let details = Details(value);
        let text = serde_json::to_string(&details).unwrap();
        assert_eq!(serde_json::from_str::<Details>(&text).unwrap(), details);
        let bytes = to_postcard(&details).unwrap();
        assert_eq!(from_postcard::<Details>(&bytes).unwrap(), details);
    }
}

/// Found by the fuzz smoke: without serde_json's exact float parsing, a plugin's
/// `266666666666666666.1` was read 1 ULP off, so the report the relay stored differed from the
/// one it would read back.
#[test]
fn numbers_in_check_details_survive_a_json_round_trip_exactly() {
    let input = br#"{"collected_at":"2026-03-24T19:13:28.123456789+01:00","duration_ms":1,"overall_status":"warning","plugins":[{"id":"system","name":"System","status":"warning","checks":[{"name":"load","status":"warning","details":{"load":[3.5,266666666666666666.1,1.0,0.1,1e-7,123456789.12345678]}}]}]}"#;
    let report = DiagnosticsReport::parse_json(input).unwrap();
    let again = DiagnosticsReport::parse_json(&to_json_line(&report)).unwrap();
    assert_eq!(again, report);
}
