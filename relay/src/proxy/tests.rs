use super::*;

fn key(op: &str) -> (String, String, String) {
    (op.to_owned(), "s1".to_owned(), "web".to_owned())
}

#[test]
fn a_service_is_audited_once_per_operator_and_window() {
    let uses = RecentUses::default();
    let t0 = Instant::now();
    assert!(uses.first_use(key("otto"), t0));
    assert!(!uses.first_use(key("otto"), t0 + Duration::from_secs(5)));
    assert!(uses.first_use(key("ada"), t0 + Duration::from_secs(5)));
    assert!(!uses.first_use(key("otto"), t0 + AUDIT_WINDOW - Duration::from_secs(1)));
    assert!(uses.first_use(key("otto"), t0 + AUDIT_WINDOW + Duration::from_secs(1)));
}

#[test]
fn upgrade_needs_both_headers() {
    let mut h = HeaderMap::new();
    h.insert(header::UPGRADE, "websocket".parse().unwrap());
    assert!(!is_upgrade(&h));
    h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
    assert!(is_upgrade(&h));
    h.remove(header::UPGRADE);
    assert!(!is_upgrade(&h));
}

/// End to end: a real relay on a loopback port, a fake agent speaking the tunnel protocol over
/// WebSocket + yamux, and an upstream web server the agent reaches.
mod through_a_tunnel {
    use std::net::SocketAddr;
    use std::time::Duration;

    use agent_core::transport::{self, Mode, MuxHandle};
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use base64::Engine as _;
    use futures::{SinkExt as _, StreamExt as _};
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    use crate::api::tests::Fixture;

    const BIG: usize = 24 * 1024 * 1024;

    async fn serve(router: Router) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        addr
    }

    /// The appliance's web service.
    fn upstream() -> Router {
        async fn echo(headers: HeaderMap, req: axum::extract::Request) -> axum::Json<Value> {
            let h = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_owned());
            let uri = req.uri().to_string();
            let method = req.method().to_string();
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap();
            axum::Json(json!({
                "method": method, "uri": uri, "host": h("host"), "origin": h("origin"),
                "referer": h("referer"), "authorization": h("authorization"),
                "cookie": h("cookie"), "body_len": body.len(),
            }))
        }
        Router::new()
            .route("/echo/{*rest}", axum::routing::any(echo))
            .route(
                "/big",
                get(|| async {
                    let chunks = futures::stream::iter(
                        (0..BIG / 65536)
                            .map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 65536]))),
                    );
                    axum::body::Body::from_stream(chunks)
                }),
            )
            .route(
                "/redirect",
                get(|headers: HeaderMap| async move {
                    let host = headers["host"].to_str().unwrap().to_owned();
                    (
                        axum::http::StatusCode::FOUND,
                        [
                            ("location", format!("http://{host}/login")),
                            ("x-frame-options", "DENY".to_owned()),
                            ("content-security-policy", "default-src 'self'".to_owned()),
                        ],
                    )
                }),
            )
            .route(
                "/ws",
                get(|ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(|mut socket| async move {
                        while let Some(Ok(msg)) = socket.recv().await {
                            if let Message::Text(t) = msg {
                                let reply = format!("echo: {}", t.as_str());
                                if socket.send(Message::Text(reply.into())).await.is_err() {
                                    break;
                                }
                            }
                        }
                    })
                    .into_response()
                }),
            )
    }

    async fn read_line(s: &mut agent_core::transport::MuxStream) -> Option<String> {
        let mut line = Vec::new();
        loop {
            let mut b = [0u8; 1];
            if s.read(&mut b).await.ok()? == 0 {
                return None;
            }
            if b[0] == b'\n' {
                return String::from_utf8(line).ok();
            }
            line.push(b[0]);
        }
    }

    async fn send_manifest(mux: &MuxHandle, services: &Value) {
        let mut s = mux.open().await.unwrap();
        let doc = json!({"version": 1, "services": services});
        s.write_all(format!("{doc}\n").as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
    }

    /// A minimal agent: publishes `web` (the upstream), `down` (refused) and `once` (a service
    /// that answers the first request on a connection and closes it on the second without an
    /// answer), proxies CONNECT, and applies commands (refusing targets on port 9). Returns the
    /// number of `CONNECT`s it has been sent so far.
    async fn agent(
        relay: SocketAddr,
        key: &str,
        secret: &str,
        upstream: SocketAddr,
    ) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        let connects = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connects.clone();
        let mut req = format!("ws://{relay}/api/tunnel")
            .into_client_request()
            .unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
        req.headers_mut()
            .insert("authorization", format!("Basic {basic}").parse().unwrap());
        let tcp = TcpStream::connect(relay).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        let (mux, mut incoming) = transport::spawn_mux(ws, Mode::Client, None);
        let services = std::sync::Arc::new(std::sync::Mutex::new(json!({
            "web": {"target": upstream.to_string(), "host": "", "tls": false, "label": "Web"},
            "down": {"target": "127.0.0.1:1", "host": "", "tls": false, "label": "Down"},
            "once": {"target": "127.0.0.1:2", "host": "", "tls": false, "label": "Once"},
        })));
        let current = services.lock().unwrap().clone();
        send_manifest(&mux, &current).await;
        tokio::spawn(async move {
            while let Some(mut s) = incoming.recv().await {
                let mux = mux.clone();
                let services = services.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Some(header) = read_line(&mut s).await else {
                        return;
                    };
                    if header.starts_with("CONNECT ") {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    if header == "CONNECT once" {
                        s.write_all(b"OK\n").await.unwrap();
                        // the request head (no body), then one answer; the second request
                        // finds the connection closed
                        let mut head = Vec::new();
                        while !head.ends_with(b"\r\n\r\n") {
                            let mut b = [0u8; 1];
                            if s.read(&mut b).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(b[0]);
                        }
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nonce")
                            .await
                            .unwrap();
                        let mut b = [0u8; 1];
                        let _ = s.read(&mut b).await;
                        let _ = s.shutdown().await;
                    } else if header == "CONNECT web" {
                        let mut up = TcpStream::connect(upstream).await.unwrap();
                        s.write_all(b"OK\n").await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
                    } else if header.starts_with("CONNECT ") {
                        let _ = s
                            .write_all(
                                b"ERROR failed to connect to 127.0.0.1:1: connection refused\n",
                            )
                            .await;
                        let _ = s.shutdown().await;
                    } else if header == "COMMAND 1" {
                        let cmd: Value =
                            serde_json::from_str(&read_line(&mut s).await.unwrap()).unwrap();
                        let reply = if cmd["action"] == "add_services" {
                            let added = cmd["services"].as_object().unwrap();
                            if added
                                .values()
                                .any(|v| v["target"].as_str().unwrap().ends_with(":9"))
                            {
                                "ERROR target of \"x\" refused: port 9 is not allowed here"
                                    .to_owned()
                            } else {
                                let snapshot = {
                                    let mut all = services.lock().unwrap();
                                    for (k, v) in added {
                                        all[k] = v.clone();
                                    }
                                    all.clone()
                                };
                                send_manifest(&mux, &snapshot).await;
                                "OK".to_owned()
                            }
                        } else {
                            "OK".to_owned()
                        };
                        let _ = s.write_all(format!("{reply}\n").as_bytes()).await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
        connects
    }

    async fn until<T>(mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = probe() {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A relay on a loopback port with the fake agent connected and its session registered.
    struct Bed {
        f: Fixture,
        relay: SocketAddr,
        up: SocketAddr,
        id: String,
        connects: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Bed {
        async fn start(args: &[&str]) -> Bed {
            let f = Fixture::with_args(args).await;
            let (_, creds) = f.state.store.create_system("fw1").await.unwrap();
            let relay = serve(crate::app(f.state.clone())).await;
            let up = serve(upstream()).await;
            let connects = agent(relay, &creds.key, creds.secret.expose(), up).await;
            let tunnels = f.state.tunnels.clone();
            let id = until(|| {
                let t = tunnels.all().into_iter().next()?;
                t.service("web").map(|_| t.session_id().to_owned())
            })
            .await;
            Bed {
                f,
                relay,
                up,
                id,
                connects,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proxies_http_streams_and_websockets_through_the_agent() {
        let Bed {
            f, relay, up, id, ..
        } = Bed::start(&[]).await;
        let base = format!("http://{relay}/api/v1/sessions/{id}/proxy");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let get = |url: String| http.get(url).bearer_auth(&f.operator);

        // path, query, headers
        let resp = get(format!("{base}/web/echo/a%2Fb?x=1&y=%20"))
            .header("origin", format!("http://{relay}"))
            .header("cookie", "app=1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-security-policy"],
            "frame-ancestors 'self'"
        );
        let echo: Value = resp.json().await.unwrap();
        assert_eq!(echo["uri"], "/echo/a%2Fb?x=1&y=%20");
        assert_eq!(echo["host"], up.to_string());
        assert_eq!(echo["origin"], format!("http://{up}"));
        assert_eq!(echo["authorization"], Value::Null);
        assert_eq!(echo["cookie"], "app=1");

        // a streamed upload
        let resp = http
            .post(format!("{base}/web/echo/up"))
            .bearer_auth(&f.operator)
            .body(vec![1u8; 3 * 1024 * 1024])
            .send()
            .await
            .unwrap();
        let echo: Value = resp.json().await.unwrap();
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["body_len"], 3 * 1024 * 1024);

        // redirects stay in the proxy, framing is allowed
        let resp = get(format!("{base}/web/redirect")).send().await.unwrap();
        assert_eq!(resp.status(), 302);
        assert_eq!(
            resp.headers()["location"],
            format!("/api/v1/sessions/{id}/proxy/web/login").as_str()
        );
        assert!(!resp.headers().contains_key("x-frame-options"));
        assert_eq!(
            resp.headers()["content-security-policy"],
            "default-src 'self'; frame-ancestors 'self'"
        );

        // a large download arrives whole, chunk by chunk
        let mut resp = get(format!("{base}/web/big")).send().await.unwrap();
        let mut total = 0;
        while let Some(chunk) = resp.chunk().await.unwrap() {
            total += chunk.len();
        }
        assert_eq!(total, BIG);

        // more sequential requests than the stream cap: every stream is given back (B-11)
        for _ in 0..(f.state.config.max_streams_per_tunnel + 6) {
            let resp = get(format!("{base}/web/echo/again")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap();
        }
        let metrics = f.state.metrics.clone();
        until(|| (metrics.streams_open.get() == 0).then_some(())).await;
        assert!(metrics.bytes_from_agent.get() >= BIG as u64);
        assert!(metrics.bytes_to_agent.get() >= 3 * 1024 * 1024);

        // the agent's refusal to CONNECT is a 502 naming the service and the agent's reason
        let resp = get(format!("{base}/down/")).send().await.unwrap();
        assert_eq!(resp.status(), 502);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "connect_failed");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("\"down\"") && message.contains("connection refused"),
            "{message}"
        );
        let resp = get(format!("{base}/nope/")).send().await.unwrap();
        assert_eq!(resp.status(), 404);

        // WebSocket upgrade through the proxy
        let mut req = format!("ws://{relay}/api/v1/sessions/{id}/proxy/web/ws")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", f.operator).parse().unwrap(),
        );
        let tcp = TcpStream::connect(relay).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        assert_eq!(resp.status(), 101);
        ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
            .await
            .unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), "echo: hi");
        ws.close(None).await.unwrap();

        // commands: applied (with the new manifest in the answer) or refused with the reason
        let services = format!("http://{relay}/api/v1/sessions/{id}/services");
        let resp = http
            .post(&services)
            .bearer_auth(&f.operator)
            .json(&json!({"services": {"extra": {"target": up.to_string(), "label": "Extra"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["ok"], true);
        assert_eq!(body["services"]["extra"]["label"], "Extra");
        let resp = http
            .post(&services)
            .bearer_auth(&f.operator)
            .json(&json!({"services": {"nine": {"target": "10.0.0.1:9"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "agent_refused");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("port 9")
        );

        // one audit record for the operator's use of `web`, not one per request
        let records = f
            .state
            .store
            .list_audit(&crate::store::AuditFilter {
                action: Some("proxy_open".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let web: Vec<_> = records
            .iter()
            .filter(|r| r.service.as_deref() == Some("web"))
            .collect();
        assert_eq!(web.len(), 1, "{records:?}");
        assert_eq!(web[0].actor, "otto");
        assert_eq!(web[0].remote_addr.as_deref(), Some("127.0.0.1"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keeps_connections_alive_per_service_closes_them_when_idle_and_at_the_cap() {
        use std::sync::atomic::Ordering::SeqCst;
        let Bed {
            f,
            relay,
            id,
            connects,
            ..
        } = Bed::start(&["--max-streams-per-tunnel", "2", "--proxy-keepalive", "2"]).await;
        let tunnel = f.state.tunnels.by_session(&id).unwrap();
        let base = format!("http://{relay}/api/v1/sessions/{id}/proxy");
        let http = reqwest::Client::new();
        let get = |url: String| http.get(url).bearer_auth(&f.operator);
        let metrics = f.state.metrics.clone();

        // sequential requests, an upload among them, share one stream and one agent dial
        for i in 0..5 {
            let resp = get(format!("{base}/web/echo/{i}")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap();
        }
        let resp = http
            .post(format!("{base}/web/echo/up"))
            .bearer_auth(&f.operator)
            .body(vec![1u8; 100_000])
            .send()
            .await
            .unwrap();
        let echo: Value = resp.json().await.unwrap();
        assert_eq!(echo["body_len"], 100_000);
        assert_eq!(connects.load(SeqCst), 1, "one CONNECT for six requests");
        assert_eq!(tunnel.pool().len(), 1);
        assert_eq!(
            metrics.streams_open.get(),
            1,
            "the idle stream keeps its slot"
        );

        // a terminal stream needs a slot too: with both taken (one idle), the idle one is
        // closed to make room (the fake agent does not serve terminals: the slot is what counts)
        let held = get(format!("{base}/web/big")).send().await.unwrap();
        assert_eq!(held.status(), 200);
        assert_eq!(connects.load(SeqCst), 1, "the idle connection was reused");
        let other = tokio::spawn({
            let req = get(format!("{base}/web/big"));
            async move { req.send().await.unwrap() }
        });
        let other = other.await.unwrap();
        assert_eq!(other.status(), 200);
        assert_eq!(connects.load(SeqCst), 2);
        // both slots are busy now, none idle: a third stream is refused
        let resp = get(format!("{base}/web/echo/third")).send().await.unwrap();
        assert_eq!(resp.status(), 429, "{:?}", resp.text().await);
        drop(other);
        held.bytes().await.unwrap();
        // the abandoned download's slot comes back when its client has gone away, and the
        // finished one's connection is idle in the pool
        until(|| (tunnel.pool().len() == 1 && metrics.streams_open.get() == 1).then_some(())).await;
        let free = tunnel.acquire_stream_evicting().unwrap();
        assert_eq!(tunnel.pool().len(), 1, "a free slot needs no eviction");
        // at the cap, a new stream closes the idle connection and takes its slot
        let evicting = tunnel.acquire_stream_evicting().unwrap();
        assert_eq!(tunnel.pool().len(), 0);
        drop((free, evicting));
        assert_eq!(metrics.streams_open.get(), 0);

        // a connection the service closed as it was reused: a request without a body is sent
        // again on a new connection, transparently
        for _ in 0..3 {
            let resp = get(format!("{base}/once/")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.text().await.unwrap(), "once");
        }

        // idle connections close on their own after the idle timeout, giving their slots back
        until(|| (metrics.streams_open.get() == 0).then_some(())).await;
        assert_eq!(tunnel.pool().len(), 0);
        let before = connects.load(SeqCst);
        let resp = get(format!("{base}/web/echo/later")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            connects.load(SeqCst),
            before + 1,
            "a new connection after the timeout"
        );
    }
}
