//! The tunnel through an HTTP CONNECT proxy, and NO_PROXY.

use std::net::SocketAddr;

use agent_core::agent::{AgentEvent, ProxySettings};
use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::{AgentRun, FakeRelay, config, dead_addr, within};

/// What the proxy saw: the request line and the Proxy-Authorization value.
type Seen = (String, Option<String>);

/// A CONNECT proxy that requires `Proxy-Authorization: Basic <expected>`.
async fn start_proxy(expected: &'static str) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let mut lines = head.split("\r\n");
                let request = lines.next().unwrap().to_owned();
                let auth = lines
                    .filter_map(|l| l.split_once(": "))
                    .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
                    .map(|(_, v)| v.to_owned());
                let _ = tx.send((request.clone(), auth.clone()));
                let wanted = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(expected)
                );
                if auth.as_deref() != Some(wanted.as_str()) {
                    let _ = client
                        .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
                        .await;
                    return;
                }
                let target = request.split(' ').nth(1).unwrap().to_owned();
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn the_tunnel_goes_through_a_connect_proxy_with_credentials() {
    let mut relay = FakeRelay::start().await;
    let (proxy, mut seen) = start_proxy("user:p@ss").await;
    let mut cfg = config(relay.url("ws", "127.0.0.1"));
    cfg.proxy = ProxySettings {
        http_proxy: Some(format!("http://user:p%40ss@{proxy}")),
        ..ProxySettings::none()
    };
    let _agent = AgentRun::start(cfg);
    relay.conn().await.manifest().await;
    let (request, auth) = within("the proxy request", seen.recv()).await.unwrap();
    assert_eq!(request, format!("CONNECT {} HTTP/1.1", relay.addr));
    assert_eq!(auth.as_deref(), Some("Basic dXNlcjpwQHNz"));
}

#[tokio::test]
async fn a_proxy_refusal_is_retried_and_no_proxy_bypasses_it() {
    let relay = FakeRelay::start().await;
    let (proxy, _seen) = start_proxy("user:secret").await;
    let mut cfg = config(relay.url("ws", "127.0.0.1"));
    cfg.proxy = ProxySettings {
        http_proxy: Some(format!("http://{proxy}")),
        ..ProxySettings::none()
    };
    let mut agent = AgentRun::start(cfg);
    agent
        .event(
            "the 407",
            |e| matches!(e, AgentEvent::AttemptFailed { error, .. } if error.contains("407")),
        )
        .await;
    drop(agent);

    let mut relay = relay;
    let mut cfg = config(relay.url("ws", "127.0.0.1"));
    cfg.proxy = ProxySettings {
        http_proxy: Some(format!("http://{}", dead_addr().await)),
        https_proxy: None,
        no_proxy: Some("example.com, 127.0.0.1".into()),
    };
    let _agent = AgentRun::start(cfg);
    relay.conn().await.manifest().await;
}
