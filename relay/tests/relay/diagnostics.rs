//! Health reports end to end: an agent with a plugin directory connects and the operator API
//! shows the overall status and every plugin's checks, per session and per system.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Agent, Relay, device_server, eventually};

fn plugin(dir: &std::path::Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn plugin_named<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no plugin {id} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_every_plugin_and_the_overall_status() {
    let relay = Relay::start(&[]).await;
    let device = device_server().await;
    let plugins = tempfile::tempdir().unwrap();
    plugin(
        plugins.path(),
        "backup.sh",
        r#"echo '{"name":"Backup","status":"warning","summary":"last backup 3 days ago","checks":[{"name":"age","status":"warning","value":"3d"}]}'"#,
    );
    plugin(
        plugins.path(),
        "raid",
        "echo 'RAID CRITICAL - md0 degraded | md0=0;;1:2 md1=2;;1:2'; exit 2",
    );
    plugin(plugins.path(), "hang.sh", "exec sleep 600");
    let dir = plugins.path().to_str().unwrap();
    let _agent = Agent::start(
        &relay,
        &relay.secret,
        &format!("demo={device}"),
        &[
            "--diagnostics-dir",
            dir,
            "--diagnostics-plugin-timeout",
            "1s",
            // the system plugin's limits out of reach: its status does not depend on this machine
            "--diagnostics-thresholds",
            "ram=100:100,disk=100:100,load=100000:100000",
        ],
    );
    let id = relay.active_session_with("demo").await;
    let shown = eventually("a diagnostics report", Duration::from_secs(20), || async {
        let v = relay
            .get_json(&format!("/api/v1/sessions/{id}/diagnostics"))
            .await;
        (!v["diagnostics"].is_null()).then_some(v)
    })
    .await;
    assert_eq!(shown["overall_status"], "critical", "{shown}");
    let report = &shown["diagnostics"];
    let backup = plugin_named(report, "backup");
    assert_eq!(backup["name"], "Backup");
    assert_eq!(backup["status"], "warning");
    assert_eq!(backup["checks"][0]["value"], "3d");
    let raid = plugin_named(report, "raid");
    assert_eq!(raid["status"], "critical");
    assert_eq!(raid["summary"], "RAID CRITICAL - md0 degraded");
    assert_eq!(raid["checks"][0]["name"], "md0");
    assert_eq!(raid["checks"][0]["status"], "critical");
    assert_eq!(raid["checks"][1]["status"], "ok");
    assert_eq!(plugin_named(report, "hang")["status"], "timeout");
    let system = plugin_named(report, "system");
    assert_eq!(system["status"], "ok", "{system}");
    let checks: Vec<&str> = system["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        checks.contains(&"ram_usage") && checks.contains(&"uptime"),
        "{checks:?}"
    );
    let history = shown["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["overall_status"], "critical");

    let session = relay.get_json(&format!("/api/v1/sessions/{id}")).await;
    let system_id = session["system_id"].as_str().unwrap();
    let per_system = relay
        .get_json(&format!("/api/v1/systems/{system_id}/diagnostics"))
        .await;
    assert_eq!(per_system["overall_status"], "critical", "{per_system}");
    assert_eq!(per_system["nodes"][0]["session_id"], id.as_str());
    assert_eq!(
        plugin_named(&per_system["nodes"][0]["diagnostics"], "raid")["status"],
        "critical"
    );
    assert_eq!(
        relay
            .get("/api/v1/systems/no-such-system/diagnostics")
            .await
            .status(),
        404
    );
}
