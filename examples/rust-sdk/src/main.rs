//! Rust firmware that embeds the agent runtime (the SDK story): it serves its own web page,
//! publishes it through a discovery adapter of its own (a [`Discover`] implementation run by
//! [`Discovery`], which feeds [`AgentConfig::service_source`]), adds a check of its own
//! through [`AgentConfig::diagnostics_providers`], prints the agent's events, refreshes the
//! report when a `refresh` line arrives on stdin and stops when stdin closes or on Ctrl-C.
//!
//! Usage: `tether-sdk-example URL KEY SECRET` (or `TETHER_URL`, `TETHER_KEY`, `TETHER_SECRET`).

use std::sync::Arc;

use std::time::Duration;

use agent_core::agent::diagnostics::Provider;
use agent_core::agent::discovery::{Discover, DiscoverFuture, Discovery, Services};
use agent_core::agent::{self, AgentConfig, AgentEvent};
use agent_core::document::{Check, PluginReport, ServiceInfo, Status};
use agent_core::exclude::ExcludeSet;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

const PAGE: &str = "hello from the firmware\n";

fn setting(args: &[String], i: usize, env: &str) -> Result<String, String> {
    args.get(i)
        .cloned()
        .or_else(|| std::env::var(env).ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("usage: tether-sdk-example URL KEY SECRET (or {env})"))
}

/// The firmware's discovery adapter: it asks the firmware's own state which services run.
/// A real firmware would read its configuration database here; re-discovery calls it every
/// interval and the agent re-publishes only when the answer changed.
struct FirmwareServices {
    ui_port: u16,
}

impl Discover for FirmwareServices {
    fn name(&self) -> &str {
        "firmware"
    }

    fn discover(&self) -> DiscoverFuture<'_> {
        Box::pin(async move {
            let ui = ServiceInfo {
                target: format!("127.0.0.1:{}", self.ui_port),
                label: "Firmware web UI".into(),
                ..ServiceInfo::default()
            };
            Ok(Services::from([("firmware-ui".into(), ui)]))
        })
    }
}

/// One line per agent event, in the C example's words.
fn print_event(event: &AgentEvent) {
    let line = match event {
        AgentEvent::Connecting { attempt } => format!("connecting: attempt {attempt}"),
        AgentEvent::Connected => "connected".into(),
        AgentEvent::AttemptFailed { error, .. } => format!("attempt failed: {error}"),
        AgentEvent::Disconnected { reason, .. } => format!("disconnected: {reason}"),
        AgentEvent::SessionClosed => "session closed".into(),
        AgentEvent::ServiceOpened { service } => format!("service opened: {service}"),
        AgentEvent::TerminalOpened { operator } => {
            format!("terminal opened: {}", operator.as_deref().unwrap_or("?"))
        }
        AgentEvent::CommandApplied { changed } => format!("command applied: changed={changed}"),
        other => format!("{other:?}"),
    };
    eprintln!("firmware: event {line}");
}

#[tokio::main]
async fn main() -> Result<(), String> {
    tracing_subscriber::fmt().init();
    let args: Vec<String> = std::env::args().collect();
    let mut config = AgentConfig::new(
        setting(&args, 1, "TETHER_URL")?,
        setting(&args, 2, "TETHER_KEY")?,
        setting(&args, 3, "TETHER_SECRET")?,
    );

    // The firmware's own web UI on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("web ui: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 2048];
                let _ = tcp.read(&mut request).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = tcp.write_all(reply.as_bytes()).await;
            });
        }
    });

    // The firmware's services, discovered by its own adapter every 30 s.
    let discovery = Discovery::new(
        vec![Box::new(FirmwareServices { ui_port: port })],
        ExcludeSet::default(),
    );
    config.service_source = Some(discovery.spawn(Duration::from_secs(30)).await);

    // A check of its own in every health report (runs on a blocking thread).
    config.diagnostics_providers.push(Provider {
        id: "firmware".into(),
        run: Arc::new(move || PluginReport {
            id: "firmware".into(),
            name: "Firmware".into(),
            status: Status::Ok,
            summary: Some("firmware web UI is serving".into()),
            checks: vec![Check {
                name: "web-ui".into(),
                status: Status::Ok,
                value: Some(format!("port {port}")),
                details: None,
            }],
        }),
    });
    config.diagnostics.dir = None;
    config.on_event = Some(Arc::new(print_event));
    let refresh = Arc::new(tokio::sync::Notify::new());
    config.diagnostics_refresh = Some(refresh.clone());

    // Stop on Ctrl-C or when stdin closes; `refresh` re-collects the health report.
    let shutdown = async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                line = lines.next_line() => match line {
                    Ok(Some(line)) if line.trim() == "refresh" => refresh.notify_one(),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return,
                },
            }
        }
    };
    let outcome = agent::run(config, shutdown)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("firmware: event stopped ({outcome:?})");
    eprintln!("firmware: exit 0");
    Ok(())
}
