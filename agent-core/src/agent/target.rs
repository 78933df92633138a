//! `CONNECT <service>`: dialing the service target (target policy for injected services,
//! a timeout, TLS with a sensible SNI) and copying bytes both ways with half-close.

use std::prelude::rust_2024::*;
use std::vec;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::document::ServiceInfo;
use crate::policy::{self, PolicyError, TargetHost};

/// Why a service target could not be reached; the text after `failed to connect to <target>: `.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} resolved to no address")]
    NoAddress(String),
    #[error("{0}")]
    Connect(io::Error),
    #[error("tls handshake failed: {0}")]
    Tls(io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// A connected service target.
pub(crate) enum Target {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Dials the target of `service` within `timeout`. For an injected service every resolved
/// address must pass the target policy, and only allowed addresses are dialed.
pub(crate) async fn dial(
    service: &ServiceInfo,
    injected: bool,
    tls: &Arc<ClientConfig>,
    timeout: Duration,
) -> Result<Target, TargetError> {
    tokio::time::timeout(timeout, dial_inner(service, injected, tls))
        .await
        .map_err(|_| TargetError::Timeout(timeout))?
}

async fn dial_inner(
    service: &ServiceInfo,
    injected: bool,
    tls: &Arc<ClientConfig>,
) -> Result<Target, TargetError> {
    let (host, port) = policy::split_target(&service.target)?;
    let addrs = if injected {
        allowed_addresses(&service.target).await?
    } else {
        resolve(host, port).await?
    };
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(tcp), _) => tcp,
        (None, Some(e)) => return Err(TargetError::Connect(e)),
        (None, None) => return Err(TargetError::NoAddress(host.to_owned())),
    };
    let _ = tcp.set_nodelay(true);
    if !service.tls {
        return Ok(Target::Plain(tcp));
    }
    let name = match sni(&service.host, host) {
        Some(name) => name,
        // An IP address as the server name makes rustls send no SNI at all.
        None => ServerName::from(tcp.peer_addr().map_err(TargetError::Connect)?.ip()),
    };
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(TargetError::Tls)?;
    Ok(Target::Tls(Box::new(stream)))
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, TargetError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| TargetError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(TargetError::NoAddress(host.to_owned()));
    }
    Ok(addrs)
}

/// The resolved addresses of an injected target that the policy allows; when it allows none,
/// the policy's reason for the first one.
async fn allowed_addresses(target: &str) -> Result<Vec<SocketAddr>, TargetError> {
    let (host, port) = policy::check_target(target)?;
    let name = match host {
        TargetHost::Ip(ip) => return Ok(vec![SocketAddr::new(ip, port)]),
        TargetHost::Name(name) => name,
    };
    let mut refused = None;
    let allowed: Vec<SocketAddr> = resolve(name, port)
        .await?
        .into_iter()
        .filter(|addr| match policy::check_ip(addr.ip()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(target, %addr, "address refused by the target policy: {e}");
                refused.get_or_insert(e);
                false
            }
        })
        .collect();
    match (allowed.is_empty(), refused) {
        (true, Some(e)) => Err(TargetError::Policy(e)),
        _ => Ok(allowed),
    }
}

/// The check of an `add_services` target on the appliance's own resolver (REFERENCE 3.9): a
/// host name must resolve, and every address it resolves to must pass the target policy
/// (dialing checks again, as names may resolve differently later).
pub(crate) async fn check_injected(target: &str, timeout: Duration) -> Result<(), TargetError> {
    let (host, port) = policy::check_target(target)?;
    let TargetHost::Name(name) = host else {
        return Ok(());
    };
    let addrs = tokio::time::timeout(timeout, resolve(name, port))
        .await
        .map_err(|_| TargetError::Timeout(timeout))??;
    for addr in addrs {
        policy::check_ip(addr.ip())?;
    }
    Ok(())
}

/// SNI for a TLS target: the service's `host` when it is a DNS name (a `:port` suffix is
/// ignored), else the target host when it is a DNS name, else none.
pub(crate) fn sni(service_host: &str, target_host: &str) -> Option<ServerName<'static>> {
    let without_port = |h: &str| -> String {
        match h.rsplit_once(':') {
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name.to_owned()
            }
            _ => h.to_owned(),
        }
    };
    [without_port(service_host), target_host.to_owned()]
        .into_iter()
        .filter(|h| !h.is_empty() && h.parse::<IpAddr>().is_err())
        .find_map(|h| match ServerName::try_from(h) {
            Ok(name @ ServerName::DnsName(_)) => Some(name),
            _ => None,
        })
}

/// Copies both ways until both directions are done. EOF from one side becomes a half-close on
/// the other (`shutdown(SHUT_WR)` on the target, FIN on the yamux stream) and the other
/// direction goes on. `early` are bytes the relay sent right after the header line.
pub(crate) async fn splice<R, T>(relay: R, early: Vec<u8>, target: T) -> io::Result<(u64, u64)>
where
    R: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut relay_rx, mut relay_tx) = tokio::io::split(relay);
    let (target_rx, mut target_tx) = tokio::io::split(target);
    let result = {
        let up = async {
            if !early.is_empty() {
                target_tx.write_all(&early).await?;
            }
            let n = tokio::io::copy(&mut relay_rx, &mut target_tx).await?;
            target_tx.shutdown().await?;
            io::Result::Ok(n + early.len() as u64)
        };
        let down = async {
            let n = copy_growing(target_rx, &mut relay_tx).await?;
            relay_tx.shutdown().await?;
            io::Result::Ok(n)
        };
        futures::future::try_join(up, down).await
    };
    if result.is_err() {
        // One side failed: end the other side too (a FIN if possible).
        let _ = relay_tx.shutdown().await;
        let _ = target_tx.shutdown().await;
    }
    drop(relay_rx);
    result
}

/// First read size of [`copy_growing`]: most answers through the proxy are small.
const FIRST_READ: usize = 4 * 1024;

/// Copies `from` into `to` until EOF, reading [`FIRST_READ`] bytes at first and frame-sized
/// chunks ([`MAX_FRAME_BODY`](crate::transport::MAX_FRAME_BODY)) once a read fills the buffer.
/// Frame-sized reads make one yamux frame, one WebSocket message and one system call on each
/// peer per 64 KiB during a download (tokio's copy would make them per 8 KiB); starting small
/// spares each small exchange a zeroed 64 KiB buffer.
async fn copy_growing<R, W>(mut from: R, to: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; FIRST_READ];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        total += n as u64;
        if n == buf.len() && buf.len() < crate::transport::MAX_FRAME_BODY {
            buf = vec![0u8; crate::transport::MAX_FRAME_BODY];
        }
    }
}
