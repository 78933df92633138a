//! `COMMAND 1`: add_services, remove_services, refusals, and the manifest re-sends.

use std::time::Duration;

use std::collections::BTreeMap;

use agent_core::document::ServiceInfo;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::support::{AgentRun, FakeRelay, config, half_close_target, read_all, read_line, within};

fn add(name: &str, target: &str) -> String {
    format!(
        r#"{{"action":"add_services","services":{{"{name}":{{"target":"{target}","host":"","tls":false,"label":"Added"}}}}}}"#
    )
}

#[tokio::test]
async fn add_and_remove_services_resend_the_manifest_before_ok() {
    let mut relay = FakeRelay::start().await;
    let target = half_close_target().await;
    let mut cfg = config(relay.url("ws", "127.0.0.1"));
    // A manifest larger than a yamux window (256 KiB): its sender cannot finish before the
    // relay reads it, which makes "manifest before OK" observable.
    let big = ServiceInfo {
        target: target.to_string(),
        label: "x".repeat(300 * 1024),
        ..ServiceInfo::default()
    };
    cfg.static_services = BTreeMap::from([("big".to_owned(), big)]);
    let _agent = AgentRun::start(cfg);
    let mut conn = relay.conn().await;
    assert_eq!(conn.manifest().await.services.len(), 1);

    let mut command = conn
        .open(format!("COMMAND 1\n{}\n", add("web", &target.to_string())).as_bytes())
        .await;
    // No reply while the re-sent manifest is unread...
    let early = tokio::time::timeout(Duration::from_millis(300), read_line(&mut command)).await;
    assert!(
        early.is_err(),
        "replied before the manifest was sent: {early:?}"
    );
    // ...then the manifest, and only then OK.
    let manifest = conn.manifest().await;
    assert_eq!(manifest.services["web"].target, target.to_string());
    assert_eq!(manifest.services["web"].label, "Added");
    assert_eq!(within("the reply", read_line(&mut command)).await, "OK");
    command.shutdown().await.ok();

    let answer = conn.connect_roundtrip("web", b"injected").await;
    assert_eq!(answer, b"OK\ngot 8: injected");

    let remove = r#"{"action":"remove_services","service_names":["web"]}"#;
    let mut command = conn.open(format!("COMMAND 1\n{remove}\n").as_bytes()).await;
    let manifest = conn.manifest().await;
    assert_eq!(manifest.services.keys().collect::<Vec<_>>(), vec!["big"]);
    assert_eq!(within("the reply", read_line(&mut command)).await, "OK");
    command.shutdown().await.ok();
    let answer = conn.connect_roundtrip("web", b"").await;
    assert_eq!(answer, b"ERROR service not found: web\n");
}

#[tokio::test]
async fn refused_commands_answer_error_text() {
    let mut relay = FakeRelay::start().await;
    let _agent = AgentRun::start(config(relay.url("ws", "127.0.0.1")));
    let mut conn = relay.conn().await;
    conn.manifest().await;

    let (reply, _) = conn.command(&add("Bad.Name", "127.0.0.1:80")).await;
    assert!(
        reply.starts_with(r#"ERROR invalid service name "Bad.Name""#),
        "{reply}"
    );

    let (reply, _) = conn.command(&add("meta", "169.254.169.254:80")).await;
    assert_eq!(
        reply,
        r#"ERROR target of "meta" refused: 169.254.169.254 is a cloud metadata address"#
    );

    let (reply, _) = conn.command(r#"{"action":"reboot"}"#).await;
    assert_eq!(reply, r#"ERROR unknown action "reboot""#);

    let (reply, _) = conn.command("{not json").await;
    assert!(reply.starts_with("ERROR invalid json"), "{reply}");

    let mut stream = conn.open(b"COMMAND 2\n{}\n").await;
    let reply = read_all(&mut stream).await;
    assert_eq!(reply, b"ERROR unsupported command version \"2\"\n");

    let huge = format!("{{\"action\":\"{}\"}}", "x".repeat(70 * 1024));
    let (reply, _) = conn.command(&huge).await;
    assert!(reply.starts_with("ERROR command too large"), "{reply}");

    // nothing changed, so no manifest went out
    tokio::task::yield_now().await;
    conn.assert_no_manifest_pending().await;
}

#[tokio::test]
async fn an_early_manifest_update_is_sent_again_at_the_interval_mark() {
    let mut relay = FakeRelay::start().await;
    let target = half_close_target().await;
    let interval = Duration::from_millis(300);
    let mut cfg = config(relay.url("ws", "127.0.0.1"));
    cfg.manifest_interval = interval;
    let _agent = AgentRun::start(cfg);
    let mut conn = relay.conn().await;
    conn.manifest().await;
    let first = Instant::now();

    let (reply, _) = conn.command(&add("web", &target.to_string())).await;
    assert_eq!(reply, "OK");
    let (reply, _) = conn.command(&add("api", &target.to_string())).await;
    assert_eq!(reply, "OK");
    assert!(conn.manifest().await.services.contains_key("web"));
    assert!(conn.manifest().await.services.contains_key("api"));

    // Both updates came too early for a reference relay: one follow-up carries the latest.
    let follow_up = conn.manifest().await;
    assert!(first.elapsed() >= interval, "{:?}", first.elapsed());
    assert_eq!(
        follow_up.services.keys().collect::<Vec<_>>(),
        vec!["api", "web"]
    );
}
