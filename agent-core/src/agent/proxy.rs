//! HTTP CONNECT proxies for the tunnel: which proxy (if any) a relay URL goes through
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), and the CONNECT exchange itself.

use std::prelude::rust_2024::*;
use std::{format, vec};

use std::io;
use std::net::IpAddr;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config::{ProxySettings, Secret, redact_userinfo};

/// Largest proxy response head we read.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// A proxy to go through.
#[derive(Clone, Debug)]
pub(crate) struct ProxyServer {
    /// Host name or address, without brackets.
    pub host: String,
    pub port: u16,
    /// `Basic <base64(user:pass)>` when the URL carries credentials.
    auth: Option<Secret>,
    /// The URL without credentials, for logs.
    pub shown: String,
}

impl ProxyServer {
    /// `http://[user[:pass]@]host[:port][/]`; a URL without scheme means http; credentials are
    /// percent-decoded.
    pub fn parse(text: &str) -> Result<ProxyServer, String> {
        let shown = redact_userinfo(text);
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let url = url::Url::parse(&with_scheme)
            .map_err(|e| format!("invalid proxy url {shown:?}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!(
                "proxy url {shown:?}: only http:// proxies are supported, not {}://",
                url.scheme()
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("proxy url {shown:?} has no host")),
        };
        let port = url.port().unwrap_or(80);
        let auth = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let user = percent_decode(url.username());
            let pass = percent_decode(url.password().unwrap_or(""));
            let mut credentials = user;
            credentials.push(b':');
            credentials.extend_from_slice(&pass);
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            Some(Secret::new(format!("Basic {encoded}")))
        };
        Ok(ProxyServer {
            shown: format!("http://{}", authority(&host, port)),
            host,
            port,
            auth,
        })
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub(crate) fn authority(host: &str, port: u16) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{bare}]:{port}")
    } else {
        format!("{bare}:{port}")
    }
}

/// `%XX` sequences to bytes; anything malformed stays as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The proxy a relay URL goes through, if any. `settings` were validated already, so a proxy
/// URL that does not parse here means "no proxy".
pub(crate) fn select(
    settings: &ProxySettings,
    secure: bool,
    host: &str,
    port: u16,
) -> Option<ProxyServer> {
    let proxy = if secure {
        settings.https_proxy.as_deref()
    } else {
        settings.http_proxy.as_deref()
    }?;
    if let Some(no_proxy) = settings.no_proxy.as_deref()
        && bypass(no_proxy, host, port)
    {
        return None;
    }
    ProxyServer::parse(proxy).ok()
}

/// Whether `NO_PROXY` says to reach `host:port` directly: `*`; a name matching the host or a
/// domain suffix of it (a leading `.` or `*.` is ignored); an IP address; a CIDR block; any of
/// them with `:port` to match one port only. Case-insensitive.
pub(crate) fn bypass(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let (pattern, entry_port) = split_entry_port(entry);
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            let pattern = pattern.to_ascii_lowercase();
            if let Some((net, bits)) = pattern.split_once('/') {
                return match (net.parse::<IpAddr>(), bits.parse::<u8>(), host_ip) {
                    (Ok(net), Ok(bits), Some(ip)) => in_cidr(ip, net, bits),
                    _ => false,
                };
            }
            if let Ok(ip) = pattern.parse::<IpAddr>() {
                return host_ip == Some(ip);
            }
            let domain = pattern
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.');
            !domain.is_empty()
                && (host == domain
                    || host
                        .strip_suffix(domain)
                        .is_some_and(|head| head.ends_with('.')))
        })
}

/// `name:port`, `[v6]:port`, `v4:port` → (pattern, port); bare IPv6 addresses have no port.
fn split_entry_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((addr, tail)) = rest.split_once(']') {
            return (addr, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
        return (entry, None);
    }
    if entry.matches(':').count() == 1
        && let Some((name, port)) = entry.split_once(':')
        && let Ok(port) = port.parse()
    {
        return (name, Some(port));
    }
    (entry, None)
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Why the proxy did not open a tunnel.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("i/o with the proxy failed: {0}")]
    Io(#[from] io::Error),
    #[error("the proxy closed the connection before answering")]
    Closed,
    #[error("the proxy's answer is not HTTP")]
    Malformed,
    #[error("the proxy's answer is longer than {MAX_RESPONSE_HEAD} bytes")]
    TooLong,
    #[error("the proxy requires authentication (HTTP 407)")]
    AuthRequired,
    #[error("the proxy refused the tunnel: {0}")]
    Refused(String),
    #[error("the proxy sent data before the tunnel was used")]
    EarlyData,
}

/// Asks the proxy on `stream` for a tunnel to `target` (`host:port`).
pub(crate) async fn connect(
    stream: &mut TcpStream,
    proxy: &ProxyServer,
    target: &str,
) -> Result<(), ProxyError> {
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = &proxy.auth {
        request.push_str("Proxy-Authorization: ");
        request.push_str(auth.expose());
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;

    let mut head = Vec::with_capacity(256);
    let mut chunk = vec![0u8; 1024];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(ProxyError::TooLong);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        head.extend_from_slice(&chunk[..n]);
    };
    // Neither TLS nor the WebSocket upgrade lets the server speak first.
    if head.len() > end {
        return Err(ProxyError::EarlyData);
    }
    let status_line = head
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .map(str::trim_end)
        .ok_or(ProxyError::Malformed)?;
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(ProxyError::Malformed);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ProxyError::Malformed);
    }
    match code.parse::<u16>() {
        Ok(200..=299) => Ok(()),
        Ok(407) => Err(ProxyError::AuthRequired),
        Ok(_) => Err(ProxyError::Refused(status_line.chars().take(200).collect())),
        Err(_) => Err(ProxyError::Malformed),
    }
}
