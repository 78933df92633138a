//! The local target server every figure is measured against, directly and through a tunnel:
//! `/small` (a 16-byte body), `/delay?ms=N` (the same after N ms, to hold streams open) and
//! `/bulk?bytes=N` (N bytes in 64 KiB frames sliced from one shared buffer, so the server
//! itself costs next to nothing).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// The body of `/small` and `/delay`.
pub const SMALL_BODY: &[u8] = b"tether bench ok\n";
/// Frame size of `/bulk`.
const CHUNK: usize = 64 * 1024;
/// Longest `/delay` honoured.
const MAX_DELAY_MS: u64 = 60_000;
/// What `target` prints once it listens.
pub const LISTEN_LINE: &str = "tether-bench target listening on ";

type Body = BoxBody<Bytes, Infallible>;

/// The value of `name` in a query string, as a number.
pub fn query_u64(query: Option<&str>, name: &str) -> Option<u64> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if k == name { v.parse().ok() } else { None }
    })
}

fn small() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(SMALL_BODY)).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    chunk: Bytes,
) -> Result<Response<Body>, Infallible> {
    let query = req.uri().query();
    Ok(match req.uri().path() {
        "/small" => small(),
        "/delay" => {
            let ms = query_u64(query, "ms").unwrap_or(0).min(MAX_DELAY_MS);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            small()
        }
        "/bulk" => {
            let total = query_u64(query, "bytes").unwrap_or(0);
            let frames = total.div_ceil(CHUNK as u64);
            let stream = futures::stream::iter((0..frames).map(move |i| {
                let left = total - i * CHUNK as u64;
                let len = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
                Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
            }));
            let mut r = Response::new(StreamBody::new(stream).boxed());
            let h = r.headers_mut();
            h.insert(CONTENT_LENGTH, HeaderValue::from(total));
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")).boxed());
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    })
}

/// Listen on 127.0.0.1:0, print [`LISTEN_LINE`] and the address, serve until killed.
pub async fn serve_forever() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{LISTEN_LINE}{}", listener.local_addr()?);
    let chunk = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let chunk = chunk.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, chunk.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
