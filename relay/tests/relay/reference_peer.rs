//! A test peer that behaves like the reference Go agent (hashicorp yamux v0.1.2 over gorilla
//! WebSocket): every yamux header and every body is its own WebSocket message, it pings once
//! per round trip, opens streams with a SYN window update and half-closes them with a FIN
//! window update, sends the manifest without a header line and never sends a reconnect token.
//! The yamux framing is written out here on purpose, so the relay is tested against the wire
//! format and not against the crate it uses itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

use crate::harness::{DEADLINE, Relay, eventually};

const DATA: u8 = 0;
const WINDOW_UPDATE: u8 = 1;
const PING: u8 = 2;
const SYN: u16 = 1;
const ACK: u16 = 2;
const FIN: u16 = 4;
const RST: u16 = 8;

fn header(kind: u8, flags: u16, stream: u32, length: u32) -> Vec<u8> {
    let mut h = vec![0u8, kind];
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&stream.to_be_bytes());
    h.extend_from_slice(&length.to_be_bytes());
    h
}

#[derive(Default)]
struct StreamState {
    acked: bool,
    data: Vec<u8>,
    fin: bool,
    rst: bool,
}

#[derive(Default)]
struct PeerState {
    streams: HashMap<u32, StreamState>,
    pongs: u64,
    pings_answered: u64,
    closed: bool,
}

/// The reference-like agent.
struct RefPeer {
    out: mpsc::UnboundedSender<Vec<Vec<u8>>>,
    state: Arc<Mutex<PeerState>>,
    next_id: u32,
}

impl RefPeer {
    async fn connect(relay: &Relay) -> RefPeer {
        let mut req = relay.tunnel_url().into_client_request().unwrap();
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", relay.key, relay.secret));
        req.headers_mut()
            .insert("authorization", format!("Basic {auth}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("tunnel handshake");
        let (mut sink, mut source) = ws.split();
        // One WebSocket message per write, exactly like the Go WsNetConn; a frame's header and
        // body travel as one group, as hashicorp's single send loop keeps them together.
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<Vec<u8>>>();
        tokio::spawn(async move {
            while let Some(group) = out_rx.recv().await {
                for bytes in group {
                    if sink.send(Message::binary(bytes)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let state = Arc::new(Mutex::new(PeerState::default()));
        let st = state.clone();
        let tx = out.clone();
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            let mut ping_id = 1u32;
            // hashicorp's keepalive with a nanosecond interval: ping, wait for the pong, ping again
            let _ = tx.send(vec![header(PING, SYN, 0, ping_id)]);
            while let Some(Ok(msg)) = source.next().await {
                buf.extend_from_slice(&msg.into_data());
                while buf.len() >= 12 {
                    let kind = buf[1];
                    let flags = u16::from_be_bytes([buf[2], buf[3]]);
                    let id = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                    let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                    let body_len = if kind == DATA { len as usize } else { 0 };
                    if buf.len() < 12 + body_len {
                        break;
                    }
                    let body: Vec<u8> = buf[12..12 + body_len].to_vec();
                    buf.drain(..12 + body_len);
                    let mut s = st.lock().unwrap();
                    match kind {
                        PING if flags & SYN != 0 => {
                            s.pings_answered += 1;
                            let _ = tx.send(vec![header(PING, ACK, 0, len)]);
                        }
                        PING if flags & ACK != 0 => {
                            s.pongs += 1;
                            ping_id = ping_id.wrapping_add(1);
                            let _ = tx.send(vec![header(PING, SYN, 0, ping_id)]);
                        }
                        DATA | WINDOW_UPDATE => {
                            let stream = s.streams.entry(id).or_default();
                            if flags & SYN != 0 && id.is_multiple_of(2) {
                                // Accept(): a window update carrying ACK
                                let _ = tx.send(vec![header(WINDOW_UPDATE, ACK, id, 0)]);
                            }
                            if flags & ACK != 0 {
                                stream.acked = true;
                            }
                            stream.data.extend_from_slice(&body);
                            if flags & FIN != 0 {
                                stream.fin = true;
                            }
                            if flags & RST != 0 {
                                stream.rst = true;
                            }
                            // give back credit for what we read, as hashicorp does
                            if !body.is_empty() {
                                let _ =
                                    tx.send(vec![header(WINDOW_UPDATE, 0, id, body.len() as u32)]);
                            }
                        }
                        _ => {}
                    }
                }
            }
            st.lock().unwrap().closed = true;
        });
        RefPeer {
            out,
            state,
            next_id: 1,
        }
    }

    /// Open a stream (SYN window update), write `body` as header+body messages, then FIN.
    fn open_and_send(&mut self, body: &[u8], fin: bool) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        self.out
            .send(vec![header(WINDOW_UPDATE, SYN, id, 0)])
            .unwrap();
        self.write(id, body);
        if fin {
            self.out
                .send(vec![header(WINDOW_UPDATE, FIN, id, 0)])
                .unwrap();
        }
        id
    }

    fn write(&self, id: u32, body: &[u8]) {
        for chunk in body.chunks(16 * 1024) {
            self.out
                .send(vec![
                    header(DATA, 0, id, chunk.len() as u32),
                    chunk.to_vec(),
                ])
                .unwrap();
        }
    }

    fn fin(&self, id: u32) {
        self.out
            .send(vec![header(WINDOW_UPDATE, FIN, id, 0)])
            .unwrap();
    }

    fn with<T>(&self, f: impl FnOnce(&mut PeerState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    async fn wait_closed(&self) {
        eventually("the peer's tunnel to close", DEADLINE, || {
            let closed = self.with(|s| s.closed);
            async move { closed.then_some(()) }
        })
        .await
    }

    async fn wait_stream<T>(
        &self,
        what: &str,
        f: impl Fn(&StreamState) -> Option<T>,
        id: u32,
    ) -> T {
        eventually(what, DEADLINE, || {
            let r = self.with(|s| s.streams.get(&id).and_then(&f));
            async move { r }
        })
        .await
    }
}

/// Answer the relay's `CONNECT web` streams: `OK` once the header line is in, then a canned
/// HTTP response once the request head is in.
async fn serve_connects(
    peer: &RefPeer,
    accepted: &mut std::collections::HashSet<u32>,
    answered: &mut std::collections::HashSet<u32>,
) {
    let streams: Vec<(u32, Vec<u8>)> = peer.with(|s| {
        s.streams
            .iter()
            .filter(|(id, _)| id.is_multiple_of(2) && !answered.contains(*id))
            .map(|(id, st)| (*id, st.data.clone()))
            .collect()
    });
    for (id, data) in streams {
        let Some(nl) = data.iter().position(|b| *b == b'\n') else {
            continue;
        };
        if accepted.insert(id) {
            assert_eq!(&data[..=nl], b"CONNECT web\n");
            peer.write(id, b"OK\n");
        }
        if data[nl + 1..].windows(4).any(|w| w == b"\r\n\r\n") {
            answered.insert(id);
            peer.write(
                id,
                b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\nConnection: close\r\n\r\nhello from reference",
            );
            peer.fin(id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_style_agent_is_served() {
    let relay = Relay::start(&[]).await;
    let mut peer = RefPeer::connect(&relay).await;

    let manifest = br#"{"version":1,"services":{"web":{"target":"127.0.0.1:80","host":"","tls":false,"label":"web"}}}
"#;
    let m = peer.open_and_send(manifest, true);
    peer.wait_stream(
        "the manifest stream to be ACKed",
        |s| s.acked.then_some(()),
        m,
    )
    .await;
    let id = relay.active_session_with("web").await;

    let diag = br#"DIAGNOSTICS 1
{"collected_at":"2026-03-24T19:13:28.123456789+01:00","duration_ms":12,"overall_status":"warning","plugins":[{"id":"system","name":"System","status":"warning","checks":[{"name":"load","status":"warning","value":"2.5","details":{"cpu_count":2}}]}]}
"#;
    let d = peer.open_and_send(diag, true);
    peer.wait_stream(
        "the diagnostics stream to be ACKed",
        |s| s.acked.then_some(()),
        d,
    )
    .await;
    let session = eventually("the diagnostics to be stored", DEADLINE, || async {
        let s = relay.get_json(&format!("/api/v1/sessions/{id}")).await;
        (s["diagnostics"]["overall_status"] == "warning").then_some(s)
    })
    .await;
    assert_eq!(
        session["diagnostics"]["plugins"][0]["checks"][0]["details"]["cpu_count"],
        2
    );

    // USERS_FETCH with nothing stored: `{}` and a close
    let f = peer.open_and_send(b"USERS_FETCH 1\n", false);
    let reply = peer
        .wait_stream(
            "the USERS_FETCH reply",
            |s| s.fin.then(|| s.data.clone()),
            f,
        )
        .await;
    assert_eq!(reply, b"{}\n");

    // A header line over 1024 bytes closes that stream and nothing else.
    let mut long = vec![b'D'; 1025];
    long.push(b'\n');
    let bad = peer.open_and_send(&long, false);
    peer.wait_stream(
        "the over-long stream to be closed",
        |s| (s.fin || s.rst).then_some(()),
        bad,
    )
    .await;

    // The relay proxies to the reference agent: CONNECT, OK, then raw HTTP.
    let (mut accepted, mut answered) = Default::default();
    let path = format!("/api/v1/sessions/{id}/proxy/web/");
    let get = relay.get(&path);
    tokio::pin!(get);
    let resp = loop {
        tokio::select! {
            r = &mut get => break r,
            _ = tokio::time::sleep(Duration::from_millis(5)) => serve_connects(&peer, &mut accepted, &mut answered).await,
        }
    };
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "hello from reference"),
        "relay log:\n{}",
        relay.log()
    );

    // The session is still there and pings kept being answered all along.
    let s = relay.get_json(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(s["status"], "active");
    let pongs = peer.with(|s| s.pongs);
    assert!(pongs >= 10, "the relay answered only {pongs} pings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tunnel_replaces_the_first_without_being_torn_down() {
    let relay = Relay::start(&[]).await;
    let manifest = br#"{"version":1,"services":{"web":{"target":"127.0.0.1:80","host":"","tls":false,"label":"web"}}}
"#;
    let mut first = RefPeer::connect(&relay).await;
    first.open_and_send(manifest, true);
    let id = relay.active_session_with("web").await;

    let mut second = RefPeer::connect(&relay).await;
    first.wait_closed().await;
    second.open_and_send(manifest, true);

    // The replaced tunnel's cleanup has run; the successor still serves the same session.
    let path = format!("/api/v1/sessions/{id}/proxy/web/");
    let (mut accepted, mut answered) = Default::default();
    for _ in 0..3 {
        let get = relay.get(&path);
        tokio::pin!(get);
        let resp = loop {
            tokio::select! {
                r = &mut get => break r,
                _ = tokio::time::sleep(Duration::from_millis(5)) => serve_connects(&second, &mut accepted, &mut answered).await,
            }
        };
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_eq!(status, 200, "{body}\nrelay log:\n{}", relay.log());
    }
    let s = relay.get_json(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(
        (s["status"].as_str(), s["connected"].as_bool()),
        (Some("active"), Some(true)),
        "{s}"
    );
    assert!(!second.with(|s| s.closed));
    let all = relay.get_json("/api/v1/sessions").await;
    assert_eq!(all["sessions"].as_array().unwrap().len(), 1, "{all}");
}
