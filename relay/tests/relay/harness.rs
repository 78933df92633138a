//! Starts the real `tether-relay` and `tether-agent` binaries on port 0 with a temporary
//! SQLite store, plus local services for them to reach. Everything polls with deadlines.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub fn relay_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether-relay"))
}

pub fn agent_bin() -> PathBuf {
    let p = relay_bin().with_file_name("tether-agent");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p tether-agent)",
        p.display()
    );
    p
}

/// Poll `f` until it yields `Some`, or panic naming `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A running relay with an admin token and one system's credentials.
pub struct Relay {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub database: String,
    pub base: String,
    pub addr: SocketAddr,
    pub token: String,
    pub key: String,
    pub secret: String,
    serve_args: Vec<String>,
    pub http: reqwest::Client,
}

fn read_listen_line(child: &mut Child) -> SocketAddr {
    let stdout = child.stdout.take().expect("relay stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.strip_prefix("tether-relay listening on http://") {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(DEADLINE)
        .expect("relay did not print its listen address");
    addr.parse().expect("listen address")
}

impl Relay {
    /// Start a relay on a fresh database, with extra `serve` flags.
    pub async fn start(extra: &[&str]) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}", dir.path().join("tether.db").display());
        let sys = admin(&database, &["system", "create", "device-1", "--json"]);
        admin(
            &database,
            &["operator", "create", "alice", "--role", "admin", "--json"],
        );
        let tok = admin(&database, &["token", "create", "alice", "--json"]);
        let mut relay = Relay {
            child: None,
            dir,
            database,
            base: String::new(),
            addr: "127.0.0.1:1".parse().unwrap(),
            token: tok["token"].as_str().unwrap().to_owned(),
            key: sys["key"].as_str().unwrap().to_owned(),
            secret: sys["secret"].as_str().unwrap().to_owned(),
            serve_args: extra.iter().map(|s| s.to_string()).collect(),
            http: reqwest::Client::new(),
        };
        relay.spawn("127.0.0.1:0");
        relay
    }

    fn spawn(&mut self, listen: &str) {
        let mut cmd = Command::new(relay_bin());
        cmd.args(["--database", &self.database, "serve", "--listen", listen])
            .args(["--rate-limit-per-ip", "0", "--rate-limit-per-key", "0"])
            .args(&self.serve_args)
            .env("TETHER_LOG", "info,tether_relay=debug")
            // Relative defaults (./recordings) land in the test's own directory.
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(log_file(self.dir.path(), "relay"));
        let mut child = cmd.spawn().expect("start tether-relay");
        self.addr = read_listen_line(&mut child);
        self.base = format!("http://{}", self.addr);
        self.child = Some(child);
    }

    /// Stop and start again on the same address and database.
    pub fn restart(&mut self) {
        self.stop();
        let addr = self.addr.to_string();
        self.spawn(&addr);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The relay's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    pub fn tunnel_url(&self) -> String {
        format!("ws://{}/api/tunnel", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// The sessions with the given status.
    pub async fn sessions(&self, status: &str) -> Vec<Value> {
        let v = self
            .get_json(&format!("/api/v1/sessions?status={status}"))
            .await;
        v["sessions"].as_array().cloned().unwrap_or_default()
    }

    /// Wait for an active session whose agent is connected and publishes `service`.
    pub async fn active_session_with(&self, service: &str) -> String {
        self.active_session_within(service, DEADLINE).await
    }

    /// [`Relay::active_session_with`] with its own deadline (agents under valgrind are slow).
    pub async fn active_session_within(&self, service: &str, deadline: Duration) -> String {
        eventually("a connected session with the service", deadline, || async {
            for s in self.sessions("active").await {
                let id = s["id"].as_str()?.to_owned();
                let detail = self.get_json(&format!("/api/v1/sessions/{id}")).await;
                if detail["connected"] == true && detail["services"].get(service).is_some() {
                    return Some(id);
                }
            }
            None
        })
        .await
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap()
}

/// Run an admin command on a database and parse its `--json` output.
pub fn admin(database: &str, args: &[&str]) -> Value {
    let out = Command::new(relay_bin())
        .args(["--database", database])
        .args(args)
        .output()
        .expect("run tether-relay admin command");
    assert!(
        out.status.success(),
        "tether-relay {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A running `tether-agent`.
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(relay: &Relay, secret: &str, static_services: &str, extra: &[&str]) -> Agent {
        Agent::start_under(&[], relay, secret, static_services, extra)
    }

    /// Like [`Agent::start`], with `wrapper` (a program and its arguments) in front of the
    /// agent's command line.
    pub fn start_under(
        wrapper: &[&str],
        relay: &Relay,
        secret: &str,
        static_services: &str,
        extra: &[&str],
    ) -> Agent {
        let n = std::fs::read_dir(relay.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let name = format!("agent-{n}");
        let log = relay.dir.path().join(format!("{name}.log"));
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(agent_bin());
                cmd
            }
            None => Command::new(agent_bin()),
        };
        let child = cmd
            .args(["--url", &relay.tunnel_url(), "--key", &relay.key])
            .args(["--secret", secret])
            .args(["--static-services", static_services])
            .args([
                "--reconnect-delay",
                "100ms",
                "--max-reconnect-delay",
                "500ms",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .env_remove("https_proxy")
            .env_remove("http_proxy")
            .stdout(log_file(relay.dir.path(), &name))
            .stderr(log_file(relay.dir.path(), &name))
            .spawn()
            .expect("start tether-agent");
        Agent {
            child: Some(child),
            log,
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for the agent to exit on its own.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("agent running");
        eventually("the agent to exit", deadline, || {
            let r = child.try_wait().ok().flatten();
            async move { r }
        })
        .await
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Size of the `/big` download of the device server.
pub const BIG: u64 = 100 * 1024 * 1024;

/// The byte at offset `i` of `/big`.
pub fn big_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// A local HTTP/1.1 server standing in for a device's web UI: `/hello`, `/big` (100 MiB),
/// `/headers` (echoes Host), `/ws` (WebSocket echo). Returns its address.
pub async fn device_server() -> SocketAddr {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    use hyper::service::service_fn;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;

    type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;
    fn full(s: impl Into<Bytes>) -> Body {
        Full::new(s.into()).map_err(|never| match never {}).boxed()
    }

    async fn handle(
        mut req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Body>, std::io::Error> {
        match req.uri().path() {
            "/hello" => Ok(Response::new(full("hello from the device"))),
            "/headers" => {
                let host = req
                    .headers()
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let auth = req.headers().contains_key("authorization");
                Ok(Response::new(full(format!(
                    "host={host} authorization={auth}"
                ))))
            }
            "/big" => {
                let chunk = 64 * 1024u64;
                let stream = futures::stream::iter((0..BIG.div_ceil(chunk)).map(move |c| {
                    let start = c * chunk;
                    let end = (start + chunk).min(BIG);
                    let data: Vec<u8> = (start..end).map(big_byte).collect();
                    Ok::<_, std::io::Error>(Frame::data(Bytes::from(data)))
                }));
                let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
                resp.headers_mut()
                    .insert("content-length", BIG.to_string().parse().unwrap());
                Ok(resp)
            }
            "/ws" => {
                let key = req
                    .headers()
                    .get("sec-websocket-key")
                    .map(|k| tungstenite::handshake::derive_accept_key(k.as_bytes()));
                let Some(accept) = key else {
                    let mut r = Response::new(full("expected a websocket"));
                    *r.status_mut() = StatusCode::BAD_REQUEST;
                    return Ok(r);
                };
                let on_upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    use futures::{SinkExt, StreamExt};
                    let Ok(up) = on_upgrade.await else { return };
                    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        TokioIo::new(up),
                        tungstenite::protocol::Role::Server,
                        None,
                    )
                    .await;
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            if ws.send(msg).await.is_err() {
                                break;
                            }
                        } else if msg.is_close() {
                            break;
                        }
                    }
                });
                let mut r = Response::new(full(""));
                *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let h = r.headers_mut();
                h.insert("upgrade", "websocket".parse().unwrap());
                h.insert("connection", "Upgrade".parse().unwrap());
                h.insert("sec-websocket-accept", accept.parse().unwrap());
                Ok(r)
            }
            _ => {
                let mut r = Response::new(full("not found"));
                *r.status_mut() = StatusCode::NOT_FOUND;
                Ok(r)
            }
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(handle))
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}
