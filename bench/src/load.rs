//! The load generator: hyper HTTP/1.1 keep-alive connections, one request in flight per
//! connection. Latency runs for a fixed time at a fixed concurrency; bulk runs download fixed
//! sizes in parallel; a burst opens many connections and fires one request on each at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// One way to reach the target: directly, through Tether's proxy or through a peer.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Prepended to the target's path (`/api/v1/sessions/ID/proxy/web` for Tether).
    pub prefix: String,
    pub bearer: Option<String>,
}

impl Endpoint {
    pub fn direct(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            prefix: String::new(),
            bearer: None,
        }
    }

    fn request(&self, path: &str) -> anyhow::Result<Request<Empty<Bytes>>> {
        let mut req = Request::get(format!("{}{}", self.prefix, path)).body(Empty::new())?;
        let h = req.headers_mut();
        h.insert(HOST, HeaderValue::from_str(&self.addr.to_string())?);
        if let Some(token) = &self.bearer {
            h.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}"))?,
            );
        }
        Ok(req)
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    send: SendRequest<Empty<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { send })
    }

    /// GET `path` of `ep`, keeping the body.
    async fn fetch(&mut self, ep: &Endpoint, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send.ready().await?;
        let resp = self.send.send_request(ep.request(path)?).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// GET `path` of `ep` and count the body's bytes without keeping them.
    pub async fn get(&mut self, ep: &Endpoint, path: &str) -> anyhow::Result<(StatusCode, u64)> {
        self.send.ready().await?;
        let resp = self.send.send_request(ep.request(path)?).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                n += data.len() as u64;
            }
        }
        Ok((status, n))
    }
}

/// GET on a fresh connection, keeping the body (API calls of the harness).
pub async fn get_body(ep: &Endpoint, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut conn = Conn::open(ep.addr).await?;
    conn.fetch(ep, path).await
}

/// GET a JSON document, failing on any status but 200.
pub async fn get_json(ep: &Endpoint, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = get_body(ep, path).await?;
    if status != StatusCode::OK {
        bail!(
            "GET {path}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Flags of `load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Where to send the requests (`host:port`).
    #[arg(long)]
    pub addr: SocketAddr,
    /// The request path, e.g. `/api/v1/sessions/ID/proxy/web/small`.
    #[arg(long)]
    pub path: String,
    /// A bearer token for the relay's API.
    #[arg(long)]
    pub bearer: Option<String>,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to send requests.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
}

/// `load`: one latency run, printed.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let ep = Endpoint {
        addr: args.addr,
        prefix: String::new(),
        bearer: args.bearer,
    };
    let l = latency(
        &ep,
        &args.path,
        args.concurrency,
        Duration::from_secs_f64(args.secs),
    )
    .await?;
    println!(
        "{:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, {} errors",
        l.rps, l.p50_us, l.p99_us, l.errors
    );
    Ok(())
}

/// What a latency run measured.
#[derive(Debug, Clone)]
pub struct Latency {
    pub errors: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub rps: f64,
}

/// `concurrency` connections each send GET `path` back to back for `duration`.
pub async fn latency(
    ep: &Endpoint,
    path: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Latency> {
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let mut conn = Conn::open(ep.addr).await?;
        // Warm the connection (and the proxy's audit memory) outside the timed window.
        let (status, _) = conn.get(ep, path).await?;
        if status != StatusCode::OK {
            bail!("warm-up GET {}{path}: {status}", ep.prefix);
        }
        let (ep, path, barrier) = (ep.clone(), path.to_owned(), barrier.clone());
        tasks.spawn(async move {
            let mut samples: Vec<u32> = Vec::with_capacity(16 * 1024);
            let mut errors = 0u64;
            barrier.wait().await;
            let end = Instant::now() + duration;
            while Instant::now() < end {
                let t = Instant::now();
                match conn.get(&ep, &path).await {
                    Ok((StatusCode::OK, _)) => {
                        let us = t.elapsed().as_nanos() / 1000;
                        samples.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        match Conn::open(ep.addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (samples, errors)
        });
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut all: Vec<u32> = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (samples, e) = r?;
        all.extend(samples);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    if all.is_empty() {
        bail!("no request to {}{path} succeeded", ep.prefix);
    }
    Ok(Latency {
        errors,
        p50_us: f64::from(percentile(&all, 0.50)),
        p99_us: f64::from(percentile(&all, 0.99)),
        rps: all.len() as f64 / secs,
    })
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

/// `streams` connections each download `/bulk?bytes=bytes_each` at the same time: MB/s
/// (10^6 bytes) over the wall time of the slowest.
pub async fn bulk(ep: &Endpoint, bytes_each: u64, streams: usize) -> anyhow::Result<f64> {
    let barrier = Arc::new(Barrier::new(streams + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let mut conn = Conn::open(ep.addr).await?;
        let (ep, barrier) = (ep.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            conn.get(&ep, &format!("/bulk?bytes={bytes_each}")).await
        });
    }
    barrier.wait().await;
    let start = Instant::now();
    while let Some(r) = tasks.join_next().await {
        let (status, n) = r??;
        if status != StatusCode::OK || n != bytes_each {
            bail!(
                "bulk download via {:?}: {status}, {n} of {bytes_each} bytes",
                ep.prefix
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((bytes_each * streams as u64) as f64 / secs / 1e6)
}

/// What a burst measured.
#[derive(Debug, Clone, Default)]
pub struct Burst {
    pub ok: u64,
    /// Failures by status code, or "error" for transport errors.
    pub failures: BTreeMap<String, u64>,
    pub seconds: f64,
}

/// Open `n` connections, then send GET `path` on all of them at once.
pub async fn burst(ep: &Endpoint, path: &str, n: usize) -> anyhow::Result<Burst> {
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (ep, path, barrier) = (ep.clone(), path.to_owned(), barrier.clone());
        tasks.spawn(async move {
            let conn = Conn::open(ep.addr).await;
            barrier.wait().await;
            let mut conn = conn?;
            conn.get(&ep, &path).await
        });
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut out = Burst::default();
    while let Some(r) = tasks.join_next().await {
        match r? {
            Ok((StatusCode::OK, _)) => out.ok += 1,
            Ok((status, _)) => *out.failures.entry(status.as_u16().to_string()).or_default() += 1,
            Err(_) => *out.failures.entry("error".into()).or_default() += 1,
        }
    }
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}
