//! `tether-agent discover` against the fixture roots of agent-core.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../agent-core/tests/fixtures")
        .join(name)
}

fn discover(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tether-agent"))
        .arg("discover")
        .args(args)
        .env_remove("STATIC_SERVICES")
        .env_remove("TETHER_PLATFORM")
        .env_remove("TETHER_SERVICES_FILE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn nethsecurity_is_detected_and_its_ui_published_with_the_static_services() {
    let root = fixture("nethsecurity");
    let (ok, out, err) = discover(&[
        "--json",
        "--platform-root",
        root.to_str().unwrap(),
        "--static-services",
        "phone=192.168.1.100:443:host=phone.lan:tls",
    ]);
    assert!(ok, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ui = &v["services"]["nethsecurity-ui"];
    assert_eq!(ui["target"], "127.0.0.1:9090", "{v}");
    assert_eq!(ui["tls"], true);
    assert_eq!(v["services"]["phone"]["host"], "phone.lan");
}

#[test]
fn the_table_names_the_platform_and_each_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.toml");
    std::fs::write(
        &file,
        "[services.switch]\ntarget = \"192.168.1.2:80\"\nlabel = \"Core switch\"\n",
    )
    .unwrap();
    let root = fixture("openwrt");
    let (ok, out, err) = discover(&[
        "--platform-root",
        root.to_str().unwrap(),
        "--services-file",
        file.to_str().unwrap(),
        "--exclude",
        "nothing-*",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("platform: openwrt\n"), "{out}");
    assert!(out.contains("adapter static-file: 1 services"), "{out}");
    assert!(out.contains("adapter openwrt: 1 services"), "{out}");
    assert!(out.contains("switch"), "{out}");
    assert!(out.contains("\"Core switch\""), "{out}");
    assert!(out.contains("luci"), "{out}");
}

#[test]
fn a_failing_adapter_is_shown_and_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let (ok, out, _) = discover(&[
        "--platform",
        "none",
        "--services-file",
        missing.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        out.contains("adapter static-file: FAILED: cannot read"),
        "{out}"
    );
}

#[test]
fn a_bad_flag_is_named() {
    let (ok, _, err) = discover(&["--discovery-interval", "0"]);
    assert!(!ok);
    assert!(err.contains("--discovery-interval"), "{err}");
    let (ok, _, err) = discover(&["--platform", "windows"]);
    assert!(!ok);
    assert!(err.contains("windows"), "{err}");
}
