//! Rust firmware that embeds the agent runtime (the SDK story): it serves its own web page,
//! publishes it through [`AgentConfig::service_source`] instead of discovery, adds a check of
//! its own through [`AgentConfig::diagnostics_providers`] and stops on Ctrl-C.
//!
//! Usage: `tether-sdk-example URL KEY SECRET` (or `TETHER_URL`, `TETHER_KEY`, `TETHER_SECRET`).

use std::collections::BTreeMap;
use std::sync::Arc;

use agent_core::agent::diagnostics::Provider;
use agent_core::agent::{self, AgentConfig, AgentEvent};
use agent_core::document::{Check, PluginReport, ServiceInfo, Status};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PAGE: &str = "hello from the rust firmware\n";

fn setting(args: &[String], i: usize, env: &str) -> Result<String, String> {
    args.get(i)
        .cloned()
        .or_else(|| std::env::var(env).ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("usage: tether-sdk-example URL KEY SECRET (or {env})"))
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

    // The service list the firmware publishes; `services.send_replace` changes it at runtime.
    let ui = ServiceInfo {
        target: format!("127.0.0.1:{port}"),
        label: "Firmware web UI".into(),
        ..ServiceInfo::default()
    };
    let (services, source) =
        tokio::sync::watch::channel(BTreeMap::from([("firmware-ui".into(), ui)]));
    config.service_source = Some(source);

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
    config.on_event = Some(Arc::new(|event: &AgentEvent| {
        tracing::info!(?event, "agent event");
    }));

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let outcome = agent::run(config, shutdown)
        .await
        .map_err(|e| e.to_string())?;
    drop(services);
    tracing::info!(?outcome, "agent stopped");
    Ok(())
}
