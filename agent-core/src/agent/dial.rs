//! Dialing the relay: DNS on every attempt, TCP with a timeout per address, an optional HTTP
//! CONNECT proxy, TLS, and the WebSocket upgrade with Basic authentication.

use std::prelude::rust_2024::*;
use std::{format, vec};

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderValue, StatusCode, header};

use super::config::{AgentConfig, ConfigError};
use super::proxy::{self, ProxyError, ProxyServer};
use crate::transport::{ReadAhead, ws_config};

/// A WebSocket to the relay.
pub(crate) type RelaySocket = WebSocketStream<ReadAhead<MaybeTlsStream<TcpStream>>>;

/// Why one attempt to reach the relay failed; every one of them is retried.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// DNS failed.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    /// DNS gave no address.
    #[error("{host} resolved to no address")]
    NoAddress { host: String },
    /// No address accepted a TCP connection.
    #[error("cannot connect to {what} {addr}: {reason}")]
    Connect {
        what: &'static str,
        addr: SocketAddr,
        reason: String,
    },
    /// The proxy did not open a tunnel.
    #[error("proxy {proxy}: {source}")]
    Proxy {
        proxy: String,
        #[source]
        source: ProxyError,
    },
    /// The TLS handshake with the relay failed (certificate, pin, protocol).
    #[error("tls handshake with the relay failed: {0}")]
    Tls(#[source] io::Error),
    /// The handshakes took longer than allowed.
    #[error("no answer from the relay within {0:?}")]
    HandshakeTimeout(Duration),
    /// 401 at the upgrade.
    #[error("the relay refused the system key/secret (HTTP 401)")]
    Unauthorized,
    /// 403 at the upgrade.
    #[error("support is disabled for this system (HTTP 403)")]
    Forbidden,
    /// 429 at the upgrade.
    #[error("rate limited by the relay (HTTP 429)")]
    RateLimited,
    /// 400 at the upgrade.
    #[error("the relay refused the request (HTTP 400): {0}")]
    BadRequest(String),
    /// Any other HTTP answer than 101.
    #[error("the relay answered HTTP {0}")]
    Status(StatusCode),
    /// The WebSocket upgrade failed otherwise.
    #[error("websocket handshake failed: {0}")]
    WebSocket(#[source] tungstenite::Error),
}

/// Everything needed to dial the relay, computed once per run.
pub(crate) struct Dialer {
    url: String,
    host: String,
    port: u16,
    secure: bool,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    proxy: Option<ProxyServer>,
    authorization: HeaderValue,
    /// `--no-terminal`: told to the relay on the upgrade so that it can hide the terminal.
    terminal_disabled: bool,
    connect_timeout: Duration,
    handshake_timeout: Duration,
}

impl Dialer {
    /// `config` must have passed [`AgentConfig::validate`].
    pub fn new(config: &AgentConfig, tls: Arc<ClientConfig>) -> Result<Dialer, ConfigError> {
        let mut url =
            url::Url::parse(&config.url).map_err(|e| ConfigError::BadUrl(e.to_string()))?;
        if let Some(node) = &config.node_id {
            // Like Go's query.Set: replace any node_id already in the URL.
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "node_id")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair("node_id", node);
        }
        let secure = url.scheme() == "wss";
        let (host, server_name) = match url.host() {
            Some(url::Host::Domain(d)) => {
                let name = ServerName::try_from(d.to_owned())
                    .map_err(|e| ConfigError::BadUrl(format!("host {d:?}: {e}")))?;
                (d.to_owned(), name)
            }
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), ServerName::from(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), ServerName::from(IpAddr::V6(ip))),
            None => return Err(ConfigError::BadUrl("the url has no host".into())),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| ConfigError::BadUrl("the url has no port".into()))?;
        if !secure {
            tracing::warn!(
                "the relay url is ws://: the tunnel is not encrypted (use it for development only)"
            );
        }
        let proxy = proxy::select(&config.proxy, secure, &host, port);
        let credentials = format!("{}:{}", config.key, config.secret.expose());
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        let mut authorization = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| ConfigError::MissingKey)?;
        authorization.set_sensitive(true);
        Ok(Dialer {
            url: url.to_string(),
            host,
            port,
            secure,
            server_name,
            tls,
            proxy,
            authorization,
            terminal_disabled: !config.terminal.enabled,
            connect_timeout: config.connect_timeout,
            handshake_timeout: config.handshake_timeout,
        })
    }

    /// The URL dialed (with `node_id`), for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One attempt: resolve, connect, proxy, TLS, upgrade.
    pub async fn dial(&self) -> Result<RelaySocket, DialError> {
        let (tcp, what) = match &self.proxy {
            Some(p) => (
                connect_any(&p.host, p.port, self.connect_timeout, "proxy").await?,
                "proxy",
            ),
            None => (
                connect_any(&self.host, self.port, self.connect_timeout, "relay").await?,
                "relay",
            ),
        };
        tracing::debug!(via = what, "tcp connected");
        let _ = tcp.set_nodelay(true);
        tokio::time::timeout(self.handshake_timeout, self.establish(tcp))
            .await
            .map_err(|_| DialError::HandshakeTimeout(self.handshake_timeout))?
    }

    /// Proxy CONNECT, TLS and the WebSocket upgrade on a connected socket.
    async fn establish(&self, mut tcp: TcpStream) -> Result<RelaySocket, DialError> {
        if let Some(p) = &self.proxy {
            let target = proxy::authority(&self.host, self.port);
            proxy::connect(&mut tcp, p, &target)
                .await
                .map_err(|source| DialError::Proxy {
                    proxy: p.shown.clone(),
                    source,
                })?;
            tracing::debug!(proxy = %p.shown, "proxy tunnel open");
        }
        let stream = if self.secure {
            let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
            let tls = connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(DialError::Tls)?;
            MaybeTlsStream::Rustls(tls)
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(DialError::WebSocket)?;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, self.authorization.clone());
        // Offer protocol v2 (a reference relay ignores both headers).
        request.headers_mut().insert(
            crate::wire::PROTOCOL_HEADER,
            HeaderValue::from_static(crate::wire::PROTOCOL_V2),
        );
        if self.terminal_disabled {
            use super::terminal::{TERMINAL_HEADER, TERMINAL_HEADER_DISABLED};
            request.headers_mut().insert(
                TERMINAL_HEADER,
                HeaderValue::from_static(TERMINAL_HEADER_DISABLED),
            );
        }
        let (ws, _response) = tokio_tungstenite::client_async_with_config(
            request,
            ReadAhead::new(stream),
            Some(ws_config()),
        )
        .await
        .map_err(classify)?;
        Ok(ws)
    }
}

/// The one place where handshake answers get their meaning.
fn classify(e: tungstenite::Error) -> DialError {
    let tungstenite::Error::Http(response) = e else {
        return DialError::WebSocket(e);
    };
    match response.status() {
        StatusCode::UNAUTHORIZED => DialError::Unauthorized,
        StatusCode::FORBIDDEN => DialError::Forbidden,
        StatusCode::TOO_MANY_REQUESTS => DialError::RateLimited,
        StatusCode::BAD_REQUEST => {
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            DialError::BadRequest(body.trim().chars().take(200).collect())
        }
        other => DialError::Status(other),
    }
}

/// Resolves `host` now (never cached) and tries each address with `timeout`.
pub(crate) async fn connect_any(
    host: &str,
    port: u16,
    timeout: Duration,
    what: &'static str,
) -> Result<TcpStream, DialError> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| DialError::Resolve {
                host: host.to_owned(),
                source,
            })?
            .collect(),
    };
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => last = Some((addr, e.to_string())),
            Err(_) => last = Some((addr, format!("timed out after {timeout:?}"))),
        }
    }
    match last {
        Some((addr, reason)) => Err(DialError::Connect { what, addr, reason }),
        None => Err(DialError::NoAddress {
            host: host.to_owned(),
        }),
    }
}
