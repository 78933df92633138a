//! `load-agents`: many real, idle tunnels from one process, for the relay's memory per agent.
//!
//! Each tunnel is what a real agent opens: a WebSocket upgrade with Basic authentication and
//! its own `node_id`, yamux over it through [`agent_core::transport::spawn_mux`] as the client,
//! a manifest stream publishing one service, then nothing but keepalive pings. Source
//! addresses cycle through 127.0.0.1..=127.0.0.N so that ephemeral ports never run out.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use agent_core::transport::{Keepalive, Mode, MuxHandle, spawn_mux, ws_config};
use anyhow::Context as _;
use base64::Engine as _;
use http::HeaderValue;
use http::header::AUTHORIZATION;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tungstenite::client::IntoClientRequest;

/// What `load-agents` prints once every tunnel is up (or failed): `ready OK FAILED SECONDS`.
pub const READY_LINE: &str = "load-agents ready";

/// Flags of `load-agents`.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// The relay's address (host:port of its HTTP listener, an IPv4 loopback address).
    #[arg(long)]
    pub relay: SocketAddr,
    #[arg(long)]
    pub key: String,
    #[arg(long)]
    pub secret: String,
    /// How many tunnels; they use node ids `first-node..first-node+count`.
    #[arg(long)]
    pub count: usize,
    #[arg(long, default_value_t = 1)]
    pub first_node: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
    /// Source addresses 127.0.0.1 ..= 127.0.0.N are used in turn.
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
}

/// The manifest every load agent publishes.
const MANIFEST: &[u8] =
    b"{\"version\":1,\"services\":{\"web\":{\"target\":\"127.0.0.1:9\",\"host\":\"\",\"tls\":false,\"label\":\"web\"}}}\n";

/// Open the tunnels, print [`READY_LINE`], hold them until stdin closes.
pub async fn run(args: FleetArgs) -> anyhow::Result<()> {
    let credentials = format!("{}:{}", args.key, args.secret);
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    );
    let auth = Arc::new(HeaderValue::from_str(&auth)?);
    let gate = Arc::new(Semaphore::new(args.parallel.max(1)));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.count {
        let permit = gate.clone().acquire_owned().await?;
        let auth = auth.clone();
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(args.sources.max(1))) as u8);
        let node = args.first_node + i;
        let relay = args.relay;
        tasks.spawn(async move {
            let r = open(relay, source, &auth, node).await;
            drop(permit);
            r
        });
    }
    let mut held: Vec<MuxHandle> = Vec::with_capacity(args.count);
    let mut first_error = None;
    let mut failed = 0usize;
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok(mux) => held.push(mux),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("load-agents: {failed} tunnels failed, the first with: {e}");
    }
    println!(
        "{READY_LINE} {} {failed} {:.3}",
        held.len(),
        start.elapsed().as_secs_f64()
    );
    // Hold the tunnels until the harness closes our stdin (or kills us).
    tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while stdin.read(&mut sink).unwrap_or(0) > 0 {}
    })
    .await?;
    let dead = held.iter().filter(|m| m.is_closed()).count();
    eprintln!("load-agents: {dead} of {} tunnels had ended", held.len());
    Ok(())
}

async fn open(
    relay: SocketAddr,
    source: Ipv4Addr,
    auth: &HeaderValue,
    node: usize,
) -> anyhow::Result<MuxHandle> {
    let socket = TcpSocket::new_v4()?;
    if relay.ip().is_loopback() {
        socket.bind(SocketAddr::from((source, 0)))?;
    }
    let tcp = socket
        .connect(relay)
        .await
        .with_context(|| format!("connect from {source} to {relay}"))?;
    tcp.set_nodelay(true)?;
    let mut req = format!("ws://{relay}/api/tunnel?node_id={node}").into_client_request()?;
    req.headers_mut().insert(AUTHORIZATION, auth.clone());
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(ws_config()))
        .await
        .context("websocket upgrade")?;
    let (mux, mut incoming) = spawn_mux(ws, Mode::Client, Some(Keepalive::default()));
    // The relay opens nothing on an idle agent; answer anything it does open with a FIN.
    tokio::spawn(async move {
        while let Some(mut stream) = incoming.recv().await {
            let _ = stream.shutdown().await;
        }
    });
    let mut manifest = mux.open().await.context("open the manifest stream")?;
    manifest.write_all(MANIFEST).await?;
    manifest.shutdown().await?;
    Ok(mux)
}
