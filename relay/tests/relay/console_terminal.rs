//! The console's terminal in a real browser (`relay/tests/browser/terminal.mjs` in headless
//! chromium), against the real relay and an agent with a real shell: tabs, typing, resize,
//! reconnect, the relay's close reason, a viewer refused, and an appliance whose terminal is
//! off (a second relay, its agent run with `--no-terminal`). With `TETHER_SCREENSHOTS_DIR`
//! set, the script saves `terminal.png` there.

use serde_json::Value;

use crate::console::{browser_available, run_script};
use crate::harness::{Agent, DEADLINE, Relay, admin, eventually};

/// A relay with a connected agent and operators ada (admin), vera (viewer) and otto
/// (operator); the relay, the agent and each operator's `--json` record.
async fn relay_with_agent(agent_flags: &[&str]) -> (Relay, Agent, [Value; 3]) {
    let (relay, agent, _) = crate::terminal::setup(&[], agent_flags).await;
    let people = [("ada", "admin"), ("vera", "viewer"), ("otto", "operator")].map(|(n, r)| {
        admin(
            &relay.database,
            &["operator", "create", n, "--role", r, "--json"],
        )
    });
    (relay, agent, people)
}

fn password(operator: &Value) -> &str {
    operator["password"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_terminal_works_in_a_browser() {
    if !browser_available("terminal browser test") {
        return;
    }
    let (relay, _agent, [ada, vera, otto]) = relay_with_agent(&[]).await;
    let (bare, _bare_agent, [bare_ada, _, _]) = relay_with_agent(&["--no-terminal"]).await;
    run_script(
        "terminal.mjs",
        &[
            ("TETHER_URL", &relay.base),
            ("TETHER_SYSTEM", "device-1"),
            ("TETHER_ADMIN", "ada"),
            ("TETHER_ADMIN_PASSWORD", password(&ada)),
            ("TETHER_VIEWER", "vera"),
            ("TETHER_VIEWER_PASSWORD", password(&vera)),
            ("TETHER_OPERATOR", "otto"),
            ("TETHER_OPERATOR_PASSWORD", password(&otto)),
            ("TETHER_BARE_URL", &bare.base),
            ("TETHER_BARE_ADMIN_PASSWORD", password(&bare_ada)),
        ],
        &relay,
    )
    .await;

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
