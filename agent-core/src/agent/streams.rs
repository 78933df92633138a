//! Streams the relay opens: read the header line, dispatch, answer, and close.

use std::prelude::rust_2024::*;
use std::{format, vec};

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::document::{Command, MAX_COMMAND_BYTES};
use crate::services::{CommandError, ServiceCatalogue};
use crate::transport::MuxStream;
use crate::wire::{self, RelayStream, Reply, WireError};

use super::lock;
use super::manifest::Publisher;
use super::target::{self, Target, TargetError};

/// How long the relay may take to send a header line.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the relay may take to send the JSON of a command.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the stream handlers of one connection share.
pub(crate) struct StreamContext {
    pub catalogue: Arc<Mutex<ServiceCatalogue>>,
    pub target_tls: Arc<ClientConfig>,
    pub connect_timeout: Duration,
    pub publisher: Publisher,
    pub terminal: Arc<super::terminal::TerminalSettings>,
    pub on_event: Option<super::EventHandler>,
}

impl StreamContext {
    fn emit(&self, event: super::AgentEvent) {
        if let Some(handler) = &self.on_event {
            handler(&event);
        }
    }
}

/// Why the first line of a stream could not be read.
#[derive(Debug, thiserror::Error)]
enum HeaderError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("stream ended before a complete header line ({0} bytes)")]
    Eof(usize),
    #[error("no header line within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Handles one relay-opened stream to its end.
pub(crate) async fn handle(mut stream: MuxStream, ctx: Arc<StreamContext>) {
    let mut buf = Vec::with_capacity(256);
    let header = tokio::time::timeout(HEADER_TIMEOUT, read_line(&mut stream, &mut buf))
        .await
        .unwrap_or(Err(HeaderError::Timeout(HEADER_TIMEOUT)));
    let line_len = match header {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("closing a relay stream: bad header line: {e}");
            let _ = stream.shutdown().await;
            return;
        }
    };
    let rest = buf.split_off(line_len);
    let text = match wire::line_text(&buf) {
        Ok(t) => t.to_owned(),
        Err(e) => {
            tracing::warn!("closing a relay stream: bad header line: {e}");
            let _ = stream.shutdown().await;
            return;
        }
    };
    match RelayStream::parse(&text) {
        Ok(RelayStream::Connect(name)) => connect(stream, &name, rest, &ctx).await,
        Ok(RelayStream::Terminal) => {
            ctx.emit(super::AgentEvent::TerminalOpened { operator: None });
            super::terminal::serve(stream, rest, None, &ctx.terminal).await
        }
        Ok(RelayStream::TerminalFor(operator)) => {
            ctx.emit(super::AgentEvent::TerminalOpened {
                operator: Some(operator.clone()),
            });
            super::terminal::serve(stream, rest, Some(operator), &ctx.terminal).await;
        }
        Ok(RelayStream::Command) => command(stream, rest, &ctx).await,
        Err(WireError::UnsupportedCommandVersion(v)) => {
            tracing::warn!(version = %v, "command of an unsupported version refused");
            let reply = Reply::Error(format!("unsupported command version {v:?}"));
            finish(stream, &reply).await;
        }
        Err(WireError::BadServiceName(_)) => {
            // No service can have such a name; answer as the reference does for unknown ones.
            let name = text.strip_prefix("CONNECT ").unwrap_or(&text);
            tracing::warn!(service = %name, "connect to an invalid service name refused");
            finish(stream, &not_found(name)).await;
        }
        Err(e) => {
            tracing::warn!("closing a relay stream: {e}");
            let _ = stream.shutdown().await;
        }
    }
}

/// Reads until `buf` holds a complete line; returns its length (the `\n` included). Bytes after
/// the line stay in `buf`.
async fn read_line<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<usize, HeaderError> {
    let mut chunk = [0u8; 512];
    loop {
        if let Some(n) = wire::find_line(buf)? {
            return Ok(n);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeaderError::Eof(buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes the reply, then FIN.
async fn finish<S: AsyncWrite + Unpin>(mut stream: S, reply: &Reply) {
    if let Err(e) = stream.write_all(&reply.encode()).await {
        tracing::debug!("reply not delivered: {e}");
    }
    let _ = stream.shutdown().await;
}

fn not_found(name: &str) -> Reply {
    Reply::Error(format!("service not found: {name}"))
}

/// The one mapping of dial failures to the wire.
fn dial_failed(target: &str, e: &TargetError) -> Reply {
    Reply::Error(format!("failed to connect to {target}: {e}"))
}

async fn connect(mut stream: MuxStream, name: &str, early: Vec<u8>, ctx: &StreamContext) {
    let found = {
        let catalogue = lock(&ctx.catalogue);
        catalogue
            .get(name)
            .cloned()
            .map(|s| (s, catalogue.is_injected(name)))
    };
    let Some((service, injected)) = found else {
        tracing::warn!(service = %name, "connect to an unknown service");
        finish(stream, &not_found(name)).await;
        return;
    };
    let target = match target::dial(&service, injected, &ctx.target_tls, ctx.connect_timeout).await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(service = %name, target = %service.target, "connect failed: {e}");
            finish(stream, &dial_failed(&service.target, &e)).await;
            return;
        }
    };
    if let Err(e) = stream.write_all(&Reply::Ok.encode()).await {
        tracing::debug!(service = %name, "relay stream gone before OK: {e}");
        return;
    }
    tracing::debug!(service = %name, target = %service.target, tls = service.tls, "connected");
    ctx.emit(super::AgentEvent::ServiceOpened {
        service: name.to_owned(),
    });
    let copied = match target {
        Target::Plain(tcp) => target::splice(stream, early, tcp).await,
        Target::Tls(tls) => target::splice(stream, early, tls).await,
    };
    match copied {
        Ok((up, down)) => tracing::debug!(service = %name, up, down, "connect stream done"),
        Err(e) => tracing::debug!(service = %name, "connect stream ended: {e}"),
    }
}

/// `COMMAND 1`: one JSON line (the relay does not FIN), applied to the catalogue; a changed
/// manifest is re-sent before the answer.
async fn command(mut stream: MuxStream, mut buf: Vec<u8>, ctx: &StreamContext) {
    let json = tokio::time::timeout(COMMAND_TIMEOUT, read_json_line(&mut stream, &mut buf)).await;
    let reply = match json {
        Err(_) => {
            tracing::warn!("no command within {COMMAND_TIMEOUT:?}");
            Reply::Error(format!("no command received within {COMMAND_TIMEOUT:?}"))
        }
        Ok(Err(reply)) => reply,
        Ok(Ok(len)) => run_command(buf.get(..len).unwrap_or(&buf), ctx).await,
    };
    finish(stream, &reply).await;
}

/// Reads the command's JSON line into `buf`; its length without the `\n`. A stream that ends
/// without a newline yields what it sent.
async fn read_json_line(stream: &mut MuxStream, buf: &mut Vec<u8>) -> Result<usize, Reply> {
    let mut chunk = vec![0u8; 8 * 1024];
    let mut scanned = 0;
    loop {
        if let Some(i) = buf[scanned..].iter().position(|b| *b == b'\n') {
            let end = scanned + i;
            if end > MAX_COMMAND_BYTES {
                return Err(too_large());
            }
            return Ok(end);
        }
        scanned = buf.len();
        if buf.len() > MAX_COMMAND_BYTES {
            return Err(too_large());
        }
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) => return Err(Reply::Error(format!("cannot read the command: {e}"))),
        };
        if n == 0 {
            return Ok(buf.len());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn too_large() -> Reply {
    tracing::warn!("command over {MAX_COMMAND_BYTES} bytes refused");
    Reply::Error(format!(
        "command too large: more than {MAX_COMMAND_BYTES} bytes"
    ))
}

async fn run_command(json: &[u8], ctx: &StreamContext) -> Reply {
    let command = match Command::parse_json(json) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("command refused: {e}");
            return Reply::Error(e.to_string());
        }
    };
    if let Command::AddServices { services } = &command {
        for (name, info) in services {
            if let Err(e) = target::check_injected(&info.target, ctx.connect_timeout).await {
                let reason = match e {
                    TargetError::Policy(reason) => CommandError::TargetRefused {
                        name: name.clone(),
                        reason,
                    }
                    .to_string(),
                    other => format!("target of {name:?} refused: {other}"),
                };
                tracing::warn!("command refused: {reason}");
                return Reply::Error(reason);
            }
        }
    }
    let applied = lock(&ctx.catalogue).apply(&command);
    match applied {
        Err(e) => {
            tracing::warn!("command refused: {e}");
            Reply::Error(e.to_string())
        }
        Ok(changed) => {
            log_command(&command, changed);
            ctx.emit(super::AgentEvent::CommandApplied { changed });
            if changed && let Err(e) = ctx.publisher.publish().await {
                return Reply::Error(format!("failed to send the manifest: {e}"));
            }
            Reply::Ok
        }
    }
}

fn log_command(command: &Command, changed: bool) {
    match command {
        Command::AddServices { services } => {
            let names: Vec<&str> = services.keys().map(String::as_str).collect();
            tracing::info!(services = ?names, changed, "services added by the relay");
        }
        Command::RemoveServices { service_names } => {
            tracing::info!(services = ?service_names, changed, "services removed by the relay");
        }
    }
}
