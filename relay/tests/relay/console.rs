//! The operator console in a real browser: Debian's headless chromium, driven by playwright-core
//! (`relay/tests/browser/console.mjs`), against the real relay and an agent with the built-in
//! system plugin. Logs in, waits for the system to turn green, adds and removes a service,
//! checks a viewer has no Close button and gets 403 from the API, and reads the audit log.
//! With `TETHER_SCREENSHOTS_DIR` set, the script saves screenshots of the main pages there
//! (`docs/screenshots/` holds the committed ones).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{Agent, Relay, admin, device_server, eventually};

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What the browser test needs and is missing, if anything.
pub fn missing() -> Option<String> {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node is not installed".into());
    }
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some(format!(
            "playwright-core is not installed (npm ci --prefix {})",
            browser_dir().display()
        ));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_browser() {
    if let Some(what) = missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the console browser test cannot run in CI: {what}"
        );
        eprintln!("skipping the console browser test: {what}");
        return;
    }
    let relay = Relay::start(&[]).await;
    let ada = admin(
        &relay.database,
        &["operator", "create", "ada", "--role", "admin", "--json"],
    );
    let vera = admin(
        &relay.database,
        &["operator", "create", "vera", "--role", "viewer", "--json"],
    );
    let device = device_server().await;
    let phone = device_server().await;
    let plugins = tempfile::tempdir().unwrap();
    let _agent = Agent::start(
        &relay,
        &relay.secret,
        &format!("demo={device}"),
        &[
            "--diagnostics-dir",
            plugins.path().to_str().unwrap(),
            // the system plugin's limits out of reach: it reports ok whatever this machine does
            "--diagnostics-thresholds",
            "ram=100:100,disk=100:100,load=100000:100000",
        ],
    );
    relay.active_session_with("demo").await;
    // the page is polled by the script; make sure a report exists before it gives up
    eventually("a diagnostics report", Duration::from_secs(30), || async {
        let s = relay.sessions("active").await;
        s.iter()
            .any(|s| !s["diagnostics_at"].is_null())
            .then_some(())
    })
    .await;

    run_script(
        "console.mjs",
        &relay,
        &[
            ("TETHER_SYSTEM", "device-1"),
            ("TETHER_ADMIN", "ada"),
            ("TETHER_ADMIN_PASSWORD", ada["password"].as_str().unwrap()),
            ("TETHER_VIEWER", "vera"),
            ("TETHER_VIEWER_PASSWORD", vera["password"].as_str().unwrap()),
            ("TETHER_SERVICE_TARGET", &phone.to_string()),
        ],
    )
    .await;
}

/// Runs `script` of `relay/tests/browser` with node against `relay` (`TETHER_URL`) and `env`,
/// and fails with its output and the relay's log unless it passes.
pub async fn run_script(script: &str, relay: &Relay, env: &[(&str, &str)]) {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(browser_dir().join(script))
        .current_dir(browser_dir())
        .env("TETHER_URL", &relay.base)
        .env("CHROMIUM", CHROMIUM)
        .envs(env.iter().copied())
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
        "{script} failed ({}):\n{stdout}\n{stderr}\nrelay log:\n{}",
        out.status,
        relay.log()
    );
}
