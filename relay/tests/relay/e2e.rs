//! End to end: real relay, real agent, a local device web server.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

use crate::harness::{Agent, BIG, DEADLINE, Relay, big_byte, device_server, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_a_page_a_100_mib_download_and_a_websocket_through_the_agent() {
    let relay = Relay::start(&[]).await;
    let device = device_server().await;
    let _agent = Agent::start(&relay, &relay.secret, &format!("demo={device}"), &[]);
    let id = relay.active_session_with("demo").await;
    let proxy = format!("/api/v1/sessions/{id}/proxy/demo");

    let r = relay.get(&format!("{proxy}/hello")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from the device");

    let r = relay.get(&format!("{proxy}/headers")).await;
    assert_eq!(
        r.text().await.unwrap(),
        format!("host={device} authorization=false"),
        "upstream sees the service's host and never the operator's token"
    );

    let r = relay.get(&format!("{proxy}/big")).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut offset = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("download interrupted");
        for b in chunk.iter() {
            assert_eq!(*b, big_byte(offset), "wrong byte at offset {offset}");
            offset += 1;
        }
    }
    assert_eq!(offset, BIG);

    let url = format!("ws://{}{proxy}/ws", relay.addr);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", relay.token).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket through the proxy");
    ws.send(Message::text("echo me")).await.unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert_eq!(first.into_text().unwrap().as_str(), "echo me");
    let second = ws.next().await.unwrap().unwrap();
    assert_eq!(second.into_data().as_ref(), big.as_slice());

    let metrics = reqwest::get(format!("{}/metrics", relay.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "tether_tunnels_connected 1",
        "tether_tunnel_connects_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} missing:\n{metrics}"
        );
    }
    let bytes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tether_bytes_from_agent_total "))
        .expect("bytes from agent")
        .parse()
        .unwrap();
    assert!(bytes >= BIG as f64, "{bytes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_within_grace_resumes_the_same_session() {
    let relay = Relay::start(&["--grace-period", "60s"]).await;
    let device = device_server().await;
    let mut agent = Agent::start(&relay, &relay.secret, &format!("demo={device}"), &[]);
    let first = relay.active_session_with("demo").await;
    agent.kill();
    eventually(
        "the relay to notice the agent is gone",
        DEADLINE,
        || async {
            let s = relay.get_json(&format!("/api/v1/sessions/{first}")).await;
            (s["connected"] == false && s["status"] == "active").then_some(())
        },
    )
    .await;
    let _agent = Agent::start(&relay, &relay.secret, &format!("demo={device}"), &[]);
    let again = relay.active_session_with("demo").await;
    assert_eq!(first, again, "the reconnect resumed the same session");
    let all = relay.get_json("/api/v1/sessions").await;
    assert_eq!(all["sessions"].as_array().unwrap().len(), 1, "{all}");
    let r = relay
        .get(&format!("/api/v1/sessions/{again}/proxy/demo/hello"))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_session_stops_the_agent_for_good() {
    let relay = Relay::start(&[]).await;
    let device = device_server().await;
    let mut agent = Agent::start(&relay, &relay.secret, &format!("demo={device}"), &[]);
    let id = relay.active_session_with("demo").await;

    let r = relay
        .http
        .delete(format!("{}/api/v1/sessions/{id}", relay.base))
        .bearer_auth(&relay.token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "close: {}", r.status());
    let status = agent.wait_exit(DEADLINE).await;
    assert_eq!(status.code(), Some(3), "agent output:\n{}", agent.output());
    assert!(
        agent.output().contains("session_closed"),
        "the agent says why it stopped:\n{}",
        agent.output()
    );
    let s = relay.get_json(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(s["status"], "closed", "{s}");

    // Sticky: the same system coming back is told to stop again, no new session opens.
    let mut again = Agent::start(&relay, &relay.secret, &format!("demo={device}"), &[]);
    assert_eq!(again.wait_exit(DEADLINE).await.code(), Some(3));
    assert!(relay.sessions("active").await.is_empty());
    assert!(relay.sessions("pending").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_gets_401_and_creates_no_session() {
    let relay = Relay::start(&[]).await;
    let r = relay
        .http
        .get(format!("{}/api/tunnel", relay.base))
        .basic_auth(&relay.key, Some("tth_0000.wrong"))
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("credentials")
    );

    let device = device_server().await;
    let mut agent = Agent::start(&relay, "tth_0000.wrong", &format!("demo={device}"), &[]);
    eventually("the agent to report the refusal", DEADLINE, || {
        let out = agent.output();
        async move { out.contains("401").then_some(()) }
    })
    .await;
    agent.kill();
    let all = relay.get_json("/api/v1/sessions").await;
    assert!(all["sessions"].as_array().unwrap().is_empty(), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_relay_restart_agents_resume_and_orphans_close_after_grace() {
    let mut relay = Relay::start(&["--grace-period", "3s"]).await;
    let device = device_server().await;
    let mut agent = Agent::start(&relay, &relay.secret, &format!("demo={device}"), &[]);
    let id = relay.active_session_with("demo").await;

    relay.restart();
    let again = relay.active_session_with("demo").await;
    assert_eq!(
        id, again,
        "the agent resumed its session after the relay restart"
    );

    // Without its agent, the session does not stay active forever.
    agent.kill();
    relay.restart();
    eventually(
        "the orphaned session to close",
        Duration::from_secs(20),
        || async {
            let s = relay.get_json(&format!("/api/v1/sessions/{id}")).await;
            (s["status"] == "closed").then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_stops_its_agent() {
    let relay = Relay::start(&["--session-lifetime", "2s", "--sweep-interval", "200ms"]).await;
    let device = device_server().await;
    let mut agent = Agent::start(&relay, &relay.secret, &format!("demo={device}"), &[]);
    let id = relay.active_session_with("demo").await;
    assert_eq!(
        agent.wait_exit(DEADLINE).await.code(),
        Some(3),
        "{}",
        agent.output()
    );
    let s = relay.get_json(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(s["status"], "expired", "{s}");
}
