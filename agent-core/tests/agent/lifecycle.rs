//! Reconnects, close code 4000, refusals at the upgrade, shutdown, and what a lost tunnel
//! takes with it.

use agent_core::agent::{AgentEvent, RunOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::support::{
    AgentRun, Answer, FakeRelay, config, dead_addr, read_line, service, tunnel_with, within,
};

#[tokio::test]
async fn reconnects_after_the_relay_drops_the_tunnel() {
    let mut relay = FakeRelay::start().await;
    let mut agent = AgentRun::start(config(relay.url("ws", "127.0.0.1")));
    let mut first = relay.conn().await;
    first.manifest().await;

    first.mux.close(None);
    agent
        .event("the disconnect", |e| {
            matches!(e, AgentEvent::Disconnected { .. })
        })
        .await;
    let mut second = relay.conn().await;
    second.manifest().await;
    assert!(!agent.is_finished());
}

#[tokio::test]
async fn a_failed_first_attempt_is_retried() {
    let addr = dead_addr().await;
    let url = format!("ws://{addr}/support/api/tunnel");
    let mut agent = AgentRun::start(config(url));
    let failed = agent
        .event("a failed attempt", |e| {
            matches!(e, AgentEvent::AttemptFailed { .. })
        })
        .await;
    assert!(
        matches!(&failed, AgentEvent::AttemptFailed { attempt: 1, error, .. } if error.contains("refused")),
        "{failed:?}"
    );
    let mut relay = FakeRelay::serve(TcpListener::bind(addr).await.unwrap(), None);
    relay.conn().await.manifest().await;
}

#[tokio::test]
async fn close_code_4000_ends_run_without_reconnecting() {
    let mut relay = FakeRelay::start().await;
    let mut agent = AgentRun::start(config(relay.url("ws", "127.0.0.1")));
    let mut conn = relay.conn().await;
    conn.manifest().await;

    conn.mux.close(Some((4000, "session_closed")));
    assert_eq!(agent.outcome().await.unwrap(), RunOutcome::SessionClosed);
    let mut events = Vec::new();
    while let Ok(e) = agent.events.try_recv() {
        events.push(e);
    }
    assert_eq!(
        events.last(),
        Some(&AgentEvent::SessionClosed),
        "{events:?}"
    );
    let attempts = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::Connecting { .. }))
        .count();
    assert_eq!(attempts, 1, "{events:?}");
    tokio::task::yield_now().await;
    assert!(relay.try_conn().is_none());
}

#[tokio::test]
async fn refusals_at_the_upgrade_are_explained_and_retried() {
    let mut relay = FakeRelay::start().await;
    relay.set_answer(Answer::Refuse(StatusCode::UNAUTHORIZED));
    let mut agent = AgentRun::start(config(relay.url("ws", "127.0.0.1")));
    agent
        .event("a 401", |e| {
            matches!(e, AgentEvent::AttemptFailed { error, .. }
                if error.contains("relay refused the system key/secret"))
        })
        .await;
    relay.set_answer(Answer::Refuse(StatusCode::FORBIDDEN));
    agent
        .event("a 403", |e| {
            matches!(e, AgentEvent::AttemptFailed { error, .. }
                if error.contains("support is disabled for this system"))
        })
        .await;
    relay.set_answer(Answer::Refuse(StatusCode::TOO_MANY_REQUESTS));
    agent
        .event("a 429", |e| {
            matches!(e, AgentEvent::AttemptFailed { error, .. } if error.contains("rate limited"))
        })
        .await;
    relay.set_answer(Answer::Upgrade);
    relay.conn().await.manifest().await;
}

#[tokio::test]
async fn shutdown_closes_the_tunnel_and_returns() {
    let mut relay = FakeRelay::start().await;
    let agent = AgentRun::start(config(relay.url("ws", "127.0.0.1")));
    let mut conn = relay.conn().await;
    conn.manifest().await;
    assert_eq!(agent.stop().await, RunOutcome::Shutdown);
    let end = within("the tunnel end", conn.mux.closed()).await;
    assert_eq!(end.close_code, Some(1000), "{end:?}");
}

#[tokio::test]
async fn a_lost_tunnel_ends_its_connect_streams() {
    // A target that reports when its connection ends.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = ended_tx.send(());
            });
        }
    });
    let (mut relay, mut agent, conn) = tunnel_with(vec![("hold", service(target))]).await;
    let mut stream = conn.open(b"CONNECT hold\n").await;
    assert_eq!(within("OK", read_line(&mut stream)).await, "OK");
    stream.write_all(b"no FIN from the relay").await.unwrap();

    conn.mux.close(None);
    within("the target connection to end", ended.recv())
        .await
        .unwrap();
    agent
        .event("the disconnect", |e| {
            matches!(e, AgentEvent::Disconnected { .. })
        })
        .await;
    relay.conn().await.manifest().await;
}
