//! The README's first command: `tether-relay demo` serves a page "on a device" through the relay.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::harness::{DEADLINE, relay_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_device_page_through_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(relay_bin())
        .current_dir(dir.path())
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut token, mut url) = (None, None);
    while token.is_none() || url.is_none() {
        let line = rx.recv_timeout(DEADLINE).expect("demo output");
        if let Some(t) = line.strip_prefix("Operator API token: ") {
            token = Some(t.to_owned());
        }
        if line.contains("/proxy/demo-web/") {
            url = line.split_whitespace().last().map(str::to_owned);
        }
    }
    let body = reqwest::Client::new()
        .get(url.unwrap())
        .bearer_auth(token.unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // SIGTERM, so the demo stops its agent too (a SIGKILL would orphan it).
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the demo stops cleanly on SIGTERM: {status}"
    );
    assert!(body.contains("Hello from the demo device"), "{body}");
}
