//! The console's terminal in a real browser (`relay/tests/browser/terminal.mjs` in headless
//! chromium), against the real relay and an agent with a real shell: tabs, typing, resize,
//! reconnect, the relay's close reason, a viewer refused, and an appliance whose terminal is
//! off (a second relay, its agent run with `--no-terminal`). With `TETHER_SCREENSHOTS_DIR`
//! set, the script saves `terminal.png` there.

use std::time::Duration;

use serde_json::Value;

use crate::console::{CHROMIUM, browser_dir, missing};
use crate::harness::{Agent, DEADLINE, Relay, admin, device_server, eventually};

/// A relay with operators ada (admin), vera (viewer) and otto (operator), and a connected
/// agent; the relay, the agent and each operator's `--json` record.
async fn relay_with_agent(agent_flags: &[&str]) -> (Relay, Agent, [Value; 3]) {
    let relay = Relay::start(&[]).await;
    let people = [("ada", "admin"), ("vera", "viewer"), ("otto", "operator")].map(|(n, r)| {
        admin(
            &relay.database,
            &["operator", "create", n, "--role", r, "--json"],
        )
    });
    let device = device_server().await;
    let agent = Agent::start(
        &relay,
        &relay.secret,
        &format!("demo={device}"),
        agent_flags,
    );
    relay.active_session_with("demo").await;
    (relay, agent, people)
}

fn password(operator: &Value) -> &str {
    operator["password"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_terminal_works_in_a_browser() {
    if let Some(what) = missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the terminal browser test cannot run in CI: {what}"
        );
        eprintln!("skipping the terminal browser test: {what}");
        return;
    }
    let (relay, _agent, [ada, vera, otto]) = relay_with_agent(&[]).await;
    let (bare, _bare_agent, [bare_ada, _, _]) = relay_with_agent(&["--no-terminal"]).await;

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(browser_dir().join("terminal.mjs"))
        .current_dir(browser_dir())
        .env("TETHER_URL", &relay.base)
        .env("TETHER_SYSTEM", "device-1")
        .env("TETHER_ADMIN", "ada")
        .env("TETHER_ADMIN_PASSWORD", password(&ada))
        .env("TETHER_VIEWER", "vera")
        .env("TETHER_VIEWER_PASSWORD", password(&vera))
        .env("TETHER_OPERATOR", "otto")
        .env("TETHER_OPERATOR_PASSWORD", password(&otto))
        .env("TETHER_BARE_URL", &bare.base)
        .env("TETHER_BARE_ADMIN_PASSWORD", password(&bare_ada))
        .env("CHROMIUM", CHROMIUM)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("the browser test finished within 5 minutes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}\nrelay log:\n{}",
        out.status,
        relay.log()
    );

    // every terminal the browser opened was audited as its operator's, and closed
    let audit = eventually("the terminals' close records", DEADLINE, || async {
        let v = relay.get_json("/api/v1/audit?limit=500").await;
        let records = v["audit"].as_array().cloned().unwrap_or_default();
        let count = |actor: &str, action: &str| {
            records
                .iter()
                .filter(|r| r["actor"] == actor && r["action"] == action)
                .count()
        };
        // ada: two tabs and a reconnect; otto: one tab, ended by his disabling
        (count("ada", "terminal_close") >= 3 && count("otto", "terminal_close") == 1)
            .then_some(records)
    })
    .await;
    let otto_closed = audit
        .iter()
        .find(|r| r["actor"] == "otto" && r["action"] == "terminal_close")
        .unwrap();
    assert_eq!(
        otto_closed["detail"]["reason"], "terminal closed: the operator was disabled",
        "{otto_closed}"
    );
    assert!(
        !audit
            .iter()
            .any(|r| r["actor"] == "vera" && r["action"] == "terminal_open"),
        "a viewer opened a terminal"
    );
}
