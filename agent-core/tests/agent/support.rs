//! A fake relay (WebSocket + yamux server), local targets and an agent runner for the tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::agent::{self, AgentConfig, AgentError, AgentEvent, ProxySettings, RunOutcome};
use agent_core::document::{Manifest, ServiceInfo};
use agent_core::transport::{self, Incoming, Keepalive, Mode, MuxHandle, MuxStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode, Uri};

/// Deadline for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Awaits `fut` or panics after [`DEADLINE`] naming `what`.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// How the fake relay answers upgrade requests.
#[derive(Clone, Copy)]
pub enum Answer {
    Upgrade,
    Refuse(StatusCode),
}

/// A tunnel the fake relay accepted.
pub struct RelayConn {
    pub uri: Uri,
    pub headers: HeaderMap,
    pub mux: MuxHandle,
    pub incoming: Incoming,
}

impl RelayConn {
    /// The next stream the agent opens.
    pub async fn agent_stream(&mut self) -> MuxStream {
        within("an agent-opened stream", self.incoming.recv())
            .await
            .expect("tunnel ended")
    }

    /// The next agent-opened manifest stream, read to its end and parsed; diagnostics reports
    /// the agent sends meanwhile are read and skipped.
    pub async fn manifest(&mut self) -> Manifest {
        let body = loop {
            let mut stream = self.agent_stream().await;
            let body = within("the manifest body", read_all(&mut stream)).await;
            stream.shutdown().await.unwrap();
            if !body.starts_with(b"DIAGNOSTICS 1\n") {
                break body;
            }
        };
        assert!(body.ends_with(b"\n"), "manifest without newline: {body:?}");
        assert_eq!(body.first(), Some(&b'{'), "manifest must start with '{{'");
        Manifest::parse_json(&body)
            .unwrap()
            .expect("manifest with services")
    }

    /// Asserts that no manifest is waiting among the streams the agent has opened so far
    /// (diagnostics reports may be).
    pub async fn assert_no_manifest_pending(&mut self) {
        while let Ok(mut stream) = self.incoming.try_recv() {
            let body = within("a pending agent stream", read_all(&mut stream)).await;
            stream.shutdown().await.unwrap();
            assert!(
                body.starts_with(b"DIAGNOSTICS 1\n"),
                "unexpected agent stream: {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    /// Opens a stream, writes `bytes` and returns the stream.
    pub async fn open(&self, bytes: &[u8]) -> MuxStream {
        let mut stream = within("opening a stream", self.mux.open()).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        stream
    }

    /// `CONNECT <name>` + `payload`, FIN, and everything the agent sends back.
    pub async fn connect_roundtrip(&self, name: &str, payload: &[u8]) -> Vec<u8> {
        let mut header = format!("CONNECT {name}\n").into_bytes();
        header.extend_from_slice(payload);
        let mut stream = self.open(&header).await;
        stream.shutdown().await.unwrap();
        within("the connect answer", read_all(&mut stream)).await
    }

    /// `COMMAND 1` + JSON line (no FIN, like the relay) and the reply line.
    pub async fn command(&self, json: &str) -> (String, MuxStream) {
        let mut stream = self.open(format!("COMMAND 1\n{json}\n").as_bytes()).await;
        let line = within("the command reply", read_line(&mut stream)).await;
        (line, stream)
    }
}

/// Reads to EOF; an error (a reset) ends the read too.
pub async fn read_all<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads one line (without its `\n`) byte by byte.
pub async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte).await {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8(line).unwrap()
}

/// A fake relay listening on 127.0.0.1.
pub struct FakeRelay {
    pub addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<RelayConn>,
    answer: Arc<Mutex<Answer>>,
    task: JoinHandle<()>,
}

impl FakeRelay {
    pub async fn start() -> FakeRelay {
        FakeRelay::serve(TcpListener::bind("127.0.0.1:0").await.unwrap(), None)
    }

    pub fn serve(listener: TcpListener, tls: Option<TlsAcceptor>) -> FakeRelay {
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::unbounded_channel();
        let answer = Arc::new(Mutex::new(Answer::Upgrade));
        let shared_answer = answer.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let tx = tx.clone();
                let tls = tls.clone();
                let answer = *shared_answer.lock().unwrap();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                upgrade(stream, answer, tx).await;
                            }
                        }
                        None => upgrade(tcp, answer, tx).await,
                    }
                });
            }
        });
        FakeRelay {
            addr,
            conns,
            answer,
            task,
        }
    }

    /// The tunnel URL of this relay.
    pub fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}/support/api/tunnel", self.addr.port())
    }

    pub fn set_answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// The next accepted tunnel.
    pub async fn conn(&mut self) -> RelayConn {
        within("a tunnel connection", self.conns.recv())
            .await
            .expect("relay stopped")
    }

    /// A tunnel accepted already, if any.
    pub fn try_conn(&mut self) -> Option<RelayConn> {
        self.conns.try_recv().ok()
    }
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upgrade<S>(stream: S, answer: Answer, tx: mpsc::UnboundedSender<RelayConn>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (seen_tx, seen_rx) = oneshot::channel();
    // The callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| {
        let _ = seen_tx.send((req.uri().clone(), req.headers().clone()));
        match answer {
            Answer::Upgrade => Ok(resp),
            Answer::Refuse(status) => {
                let mut refusal = ErrorResponse::new(Some("refused by the test".into()));
                *refusal.status_mut() = status;
                Err(refusal)
            }
        }
    };
    let accepted = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(transport::ws_config()),
    )
    .await;
    let Ok(ws) = accepted else {
        return;
    };
    let (uri, headers) = seen_rx.await.unwrap();
    let (mux, incoming) = transport::spawn_mux(ws, Mode::Server, Some(Keepalive::default()));
    let _ = tx.send(RelayConn {
        uri,
        headers,
        mux,
        incoming,
    });
}

/// An agent running in the background.
pub struct AgentRun {
    pub events: mpsc::UnboundedReceiver<AgentEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<RunOutcome, AgentError>>>,
}

impl AgentRun {
    pub fn start(mut config: AgentConfig) -> AgentRun {
        let (events_tx, events) = mpsc::unbounded_channel();
        config.on_event = Some(Arc::new(move |e: &AgentEvent| {
            let _ = events_tx.send(e.clone());
        }));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(agent::run(config, async move {
            let _ = stopped.await;
        }));
        AgentRun {
            events,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Waits for an event matching `pred`, skipping others.
    pub async fn event(&mut self, what: &str, pred: impl Fn(&AgentEvent) -> bool) -> AgentEvent {
        within(what, async {
            loop {
                let e = self.events.recv().await.expect("agent ended");
                if pred(&e) {
                    return e;
                }
            }
        })
        .await
    }

    /// Waits for `run` to return on its own.
    pub async fn outcome(&mut self) -> Result<RunOutcome, AgentError> {
        let task = self.task.take().expect("already awaited");
        within("the agent to stop", task).await.unwrap()
    }

    /// Whether `run` returned already.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the agent through its shutdown future.
    pub async fn stop(mut self) -> RunOutcome {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.outcome().await.unwrap()
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A config for tests: fast reconnects, no proxy, manifest follow-ups out of the way.
pub fn config(url: String) -> AgentConfig {
    let mut config = AgentConfig::new(url, "NETH-TEST-KEY", "my_pub.s3cr:et");
    config.reconnect_delay = Duration::from_millis(50);
    config.max_reconnect_delay = Duration::from_millis(200);
    config.proxy = ProxySettings::none();
    config.manifest_interval = Duration::from_secs(3600);
    config
}

/// A plain TCP service.
pub fn service(target: impl ToString) -> ServiceInfo {
    ServiceInfo {
        target: target.to_string(),
        label: "label".into(),
        ..ServiceInfo::default()
    }
}

/// A relay, an agent publishing `services`, and its tunnel after the first manifest.
pub async fn tunnel_with(services: Vec<(&str, ServiceInfo)>) -> (FakeRelay, AgentRun, RelayConn) {
    let mut relay = FakeRelay::start().await;
    let mut cfg = config(relay.url("ws", "127.0.0.1"));
    cfg.static_services = services
        .into_iter()
        .map(|(name, info)| (name.to_owned(), info))
        .collect();
    let agent = AgentRun::start(cfg);
    let mut conn = relay.conn().await;
    conn.manifest().await;
    (relay, agent, conn)
}

/// A target that reads until EOF and then answers `got <n>: <data>` and closes: it only
/// answers when the half-close reached it.
pub async fn half_close_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if tcp.read_to_end(&mut got).await.is_err() {
                    return;
                }
                let mut answer = format!("got {}: ", got.len()).into_bytes();
                answer.extend_from_slice(&got);
                let _ = tcp.write_all(&answer).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// An address where nothing listens.
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
