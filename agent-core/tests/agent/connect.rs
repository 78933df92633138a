//! The upgrade request, the first manifest and `CONNECT` streams.

use std::collections::BTreeMap;

use agent_core::exclude::ExcludeSet;
use base64::Engine as _;
use tokio::io::AsyncWriteExt;

use crate::support::{
    AgentRun, FakeRelay, config, dead_addr, half_close_target, read_all, service, tunnel_with,
};

#[tokio::test]
async fn upgrade_carries_basic_auth_and_node_id_without_origin_then_the_manifest() {
    let mut relay = FakeRelay::start().await;
    let mut cfg = config(relay.url("ws", "127.0.0.1"));
    cfg.node_id = Some("42".into());
    cfg.static_services = BTreeMap::from([
        ("ui".to_owned(), service("127.0.0.1:9090")),
        ("metrics1_loki".to_owned(), service("127.0.0.1:3100")),
    ]);
    cfg.exclude = ExcludeSet::parse("*_loki").unwrap();
    let agent = AgentRun::start(cfg);

    let mut conn = relay.conn().await;
    let expected = base64::engine::general_purpose::STANDARD.encode("NETH-TEST-KEY:my_pub.s3cr:et");
    assert_eq!(
        conn.headers.get("authorization").unwrap(),
        &format!("Basic {expected}")
    );
    assert!(conn.headers.get("origin").is_none(), "{:?}", conn.headers);
    assert_eq!(conn.uri.path(), "/support/api/tunnel");
    assert_eq!(conn.uri.query(), Some("node_id=42"));

    let manifest = conn.manifest().await;
    assert_eq!(manifest.version, 1);
    assert_eq!(
        manifest.services.keys().collect::<Vec<_>>(),
        vec!["ui"],
        "static services less the excluded ones"
    );
    assert_eq!(manifest.services["ui"].target, "127.0.0.1:9090");
    drop(agent);
}

#[tokio::test]
async fn connect_copies_both_ways_and_propagates_half_close() {
    let target = half_close_target().await;
    let (_relay, _agent, conn) = tunnel_with(vec![("echo", service(target))]).await;

    // The target answers only after it saw EOF, and the relay still reads that answer
    // after its own FIN.
    let answer = conn.connect_roundtrip("echo", b"hello target").await;
    assert_eq!(answer, b"OK\ngot 12: hello target");

    // More than one yamux window each way.
    let payload: Vec<u8> = (0..600 * 1024u32).map(|i| (i % 253) as u8).collect();
    let answer = conn.connect_roundtrip("echo", &payload).await;
    let mut expected = format!("OK\ngot {}: ", payload.len()).into_bytes();
    expected.extend_from_slice(&payload);
    assert_eq!(answer.len(), expected.len());
    assert!(answer == expected);
}

#[tokio::test]
async fn connect_errors_name_the_service_or_the_target() {
    let dead = dead_addr().await;
    let (_relay, _agent, conn) = tunnel_with(vec![("dead", service(dead))]).await;

    let answer = conn.connect_roundtrip("x", b"").await;
    assert_eq!(
        String::from_utf8(answer).unwrap(),
        "ERROR service not found: x\n"
    );

    let answer = String::from_utf8(conn.connect_roundtrip("dead", b"").await).unwrap();
    let prefix = format!("ERROR failed to connect to {dead}: ");
    assert!(answer.starts_with(&prefix), "{answer}");
    assert!(answer.ends_with('\n'));

    let answer = conn.connect_roundtrip("terminal", b"").await;
    let expected = if cfg!(feature = "pty") {
        "OK\n"
    } else {
        "ERROR terminal is not available on this agent\n"
    };
    assert_eq!(String::from_utf8(answer).unwrap(), expected);
}

#[tokio::test]
async fn an_overlong_or_unknown_header_closes_only_that_stream() {
    let target = half_close_target().await;
    let (_relay, _agent, conn) = tunnel_with(vec![("echo", service(target))]).await;

    // 1024 bytes and the newline: one byte over the limit.
    let mut long = vec![b'A'; 1024];
    long.push(b'\n');
    let mut stream = conn.open(&long).await;
    assert_eq!(read_all(&mut stream).await, b"", "closed without a reply");
    stream.shutdown().await.ok();

    let mut garbage = conn.open(b"HELLO agent\n").await;
    assert_eq!(read_all(&mut garbage).await, b"");
    garbage.shutdown().await.ok();

    let answer = conn.connect_roundtrip("echo", b"still works").await;
    assert_eq!(answer, b"OK\ngot 11: still works");
}
