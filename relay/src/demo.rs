//! `tether-relay demo`: a relay on a fresh SQLite store, a demo web service standing in for a
//! device's web UI, and a real `tether-agent` process publishing it, so a newcomer can reach a
//! page "on a device" through the relay within a minute.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use clap::Args;

use crate::config::ServeConfig;
use crate::crypto::DataKey;
use crate::store::{Role, SessionFilter, SessionStatus, Store};

/// Settings of the demo.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where the relay listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for the demo's database and key (wiped at start).
    #[arg(long, default_value = ".tether-demo")]
    pub dir: PathBuf,
    /// The tether-agent binary (default: beside this program).
    #[arg(long)]
    pub agent: Option<PathBuf>,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Setting up files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The crypto key failed.
    #[error("data key: {0}")]
    Key(#[from] crate::crypto::CryptoError),
    /// The relay failed.
    #[error("relay: {0}")]
    Serve(#[from] crate::ServeError),
    /// The agent did not connect.
    #[error("the agent did not connect within 30 s; see its output above")]
    AgentTimeout,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

const PAGE: &str = "<!doctype html><html><head><title>Demo device</title></head><body>\
<h1>Hello from the demo device</h1>\
<p>This page is served on the device's loopback interface and reached through the Tether relay.</p>\
</body></html>";

async fn demo_web_service() -> Result<SocketAddr, DemoError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("bind the demo web service"))?;
    let addr = listener
        .local_addr()
        .map_err(io("demo web service address"))?;
    let app = Router::new().route("/", get(|| async { Html(PAGE) }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

fn agent_path(args: &DemoArgs) -> PathBuf {
    if let Some(p) = &args.agent {
        return p.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tether-agent")))
        .unwrap_or_else(|| Path::new("tether-agent").to_path_buf())
}

/// Run the demo until `shutdown` resolves.
pub async fn run(
    args: DemoArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DemoError> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).map_err(io(format!("clean {}", args.dir.display())))?;
    }
    std::fs::create_dir_all(&args.dir).map_err(io(format!("create {}", args.dir.display())))?;
    let db = format!("sqlite://{}", args.dir.join("tether.db").display());
    let key = DataKey::load_or_create(&args.dir.join("tether.key"))?;
    let store = Store::connect(&db, key.clone()).await?;
    let (_, creds) = store.create_system("demo-device").await?;
    store.create_operator("demo", Role::Admin).await?;
    let token = store.create_token("demo").await?;

    let web = demo_web_service().await?;
    let mut config = ServeConfig::demo_defaults();
    let mut listen = args.listen;
    if listen.port() == 0 {
        // The agent needs the port before the relay starts: take a free one now.
        let probe = std::net::TcpListener::bind(listen).map_err(io(format!("bind {listen}")))?;
        listen = probe.local_addr().map_err(io("probe address"))?;
    }
    config.listen = listen;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let relay_db = db.clone();
    let relay = tokio::spawn(async move {
        crate::serve(&relay_db, key, config, async {
            let _ = stop_rx.await;
        })
        .await
    });

    let agent_bin = agent_path(&args);
    let mut agent = tokio::process::Command::new(&agent_bin)
        .args(["--url", &format!("ws://{listen}/api/tunnel")])
        .args(["--key", &creds.key])
        .args(["--secret", creds.secret.expose()])
        .args(["--static-services", &format!("demo-web={web}")])
        .args(["--reconnect-delay", "1s"])
        .kill_on_drop(true)
        .spawn()
        .map_err(io(format!("start {}", agent_bin.display())))?;

    let filter = SessionFilter {
        status: Some(SessionStatus::Active),
        system: None,
    };
    let mut session = None;
    for _ in 0..300 {
        if relay.is_finished() {
            break;
        }
        if let Some(s) = store.list_sessions(&filter).await?.into_iter().next()
            && s.services.is_some()
        {
            session = Some(s.id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(session) = session else {
        let _ = stop_tx.send(());
        return match relay.await {
            Ok(Err(e)) => Err(e.into()),
            _ => Err(DemoError::AgentTimeout),
        };
    };
    let base = format!("http://{listen}");
    println!();
    println!("Tether demo is running: relay {base}, one agent connected (session {session}).");
    println!("Operator API token: {}", token.expose());
    println!("Open the device's web page through the relay:");
    println!(
        "  curl -H 'Authorization: Bearer {}' {base}/api/v1/sessions/{session}/proxy/demo-web/",
        token.expose()
    );
    println!("List sessions:");
    println!(
        "  curl -H 'Authorization: Bearer {}' {base}/api/v1/sessions",
        token.expose()
    );
    println!("Press Ctrl-C to stop.");

    tokio::select! {
        _ = shutdown => {}
        status = agent.wait() => {
            eprintln!("tether-agent exited: {status:?}");
        }
    }
    let _ = agent.start_kill();
    let _ = stop_tx.send(());
    match relay.await {
        Ok(r) => r?,
        Err(e) => eprintln!("relay task: {e}"),
    }
    Ok(())
}
