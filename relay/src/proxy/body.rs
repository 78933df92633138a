//! Response bodies of a service origin: absolute URLs naming the service's own host
//! (`https://nas.local/x`, `//nas.local/x`, and their JSON-escaped `https:\/\/nas.local` forms)
//! become the service origin, so that links, scripts and styles stay on the proxy.
//!
//! [`UrlRewriter`] is sans-IO: chunks in, chunks out, with a carry-over of at most the longest
//! pattern plus one byte, so a URL split across chunks is still found. It examines at most its
//! budget of bytes per body and passes the rest through unmodified (never cutting a body).
//! [`rewrite`] drives it over a streaming body, decoding `gzip`, `deflate` and `br` first (pull
//! based, [`DECODE_BUFFER`] bytes of output per step, so a compression bomb never allocates
//! more than one buffer) and sending the result as identity.

use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderMap, HeaderValue};
use futures::{StreamExt as _, TryStreamExt as _};

/// Bytes of one body examined for URLs; the rest of a larger body passes through as it is.
pub const MAX_REWRITE: usize = 32 * 1024 * 1024;
/// Decoded bytes produced per step when a compressed body is rewritten.
pub const DECODE_BUFFER: usize = 16 * 1024;

/// A `Content-Encoding` the rewriter can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No encoding.
    Identity,
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// `deflate`: the zlib format of RFC 9110 section 8.4.1.2, or raw deflate (RFC 1951) as
    /// some servers send it and browsers accept ([`is_zlib_header`] tells them apart).
    Deflate,
    /// `br`.
    Brotli,
}

impl Encoding {
    /// The encoding a response declares, `None` when it is one the rewriter cannot undo (or
    /// several stacked).
    pub fn of(headers: &HeaderMap) -> Option<Encoding> {
        let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
        let Some(value) = values.next() else {
            return Some(Encoding::Identity);
        };
        if values.next().is_some() {
            return None;
        }
        let text = value.to_str().ok()?.trim();
        if text.contains(',') {
            return None;
        }
        match text.to_ascii_lowercase().as_str() {
            "" | "identity" => Some(Encoding::Identity),
            "gzip" | "x-gzip" => Some(Encoding::Gzip),
            "deflate" => Some(Encoding::Deflate),
            "br" => Some(Encoding::Brotli),
            _ => None,
        }
    }

    /// Whether `coding` (an `Accept-Encoding` token) is one the rewriter can undo.
    pub fn is_known(coding: &str) -> bool {
        ["gzip", "x-gzip", "deflate", "br", "identity", "*"]
            .iter()
            .any(|k| coding.eq_ignore_ascii_case(k))
    }
}

/// Whether a response of this type carries URLs worth rewriting (HTML, JavaScript, CSS).
pub fn is_rewritable(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/html"
            | "application/xhtml+xml"
            | "text/javascript"
            | "application/javascript"
            | "application/x-javascript"
            | "text/css"
    )
}

/// One thing to find and what replaces it.
#[derive(Debug, Clone)]
struct Pattern {
    /// Lowercase.
    find: Vec<u8>,
    replace: Vec<u8>,
    /// Starts with `//` or `\/\/`: not a match after `:` (another scheme's URL).
    scheme_relative: bool,
}

enum Found {
    Match(usize),
    NeedMore,
    No,
}

/// Rewrites absolute URLs on the service's authorities to the service origin, chunk by chunk.
#[derive(Debug, Clone)]
pub struct UrlRewriter {
    /// Longest first, so `http://h:80` is tried before `http://h`.
    patterns: Vec<Pattern>,
    carry: Vec<u8>,
    /// The byte before the carry (or before the next chunk).
    prev: u8,
    budget: usize,
    examined: usize,
}

/// Whether `b` may continue an authority (so a match ending before it is not a whole host).
fn continues_authority(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'@' | b'%')
}

impl UrlRewriter {
    /// A rewriter from `authorities` (`host` or `host:port`, as the upstream names itself) to
    /// `origin_scheme://origin_authority`, examining at most `budget` bytes.
    pub fn new(
        authorities: &[String],
        origin_scheme: &str,
        origin_authority: &str,
        budget: usize,
    ) -> UrlRewriter {
        let mut patterns = Vec::new();
        let mut add = |find: String, replace: String, scheme_relative: bool| {
            patterns.push(Pattern {
                find: find.to_ascii_lowercase().into_bytes(),
                replace: replace.into_bytes(),
                scheme_relative,
            });
        };
        for a in authorities.iter().filter(|a| !a.is_empty()) {
            let mut forms = vec![(a.clone(), "http"), (a.clone(), "https")];
            if !a.contains(':') || a.ends_with(']') {
                forms.push((format!("{a}:80"), "http"));
                forms.push((format!("{a}:443"), "https"));
            }
            for (auth, scheme) in &forms {
                add(
                    format!("{scheme}://{auth}"),
                    format!("{origin_scheme}://{origin_authority}"),
                    false,
                );
                add(
                    format!("{scheme}:\\/\\/{auth}"),
                    format!("{origin_scheme}:\\/\\/{origin_authority}"),
                    false,
                );
            }
            add(format!("//{a}"), format!("//{origin_authority}"), true);
            add(
                format!("\\/\\/{a}"),
                format!("\\/\\/{origin_authority}"),
                true,
            );
        }
        patterns.sort_by_key(|p| std::cmp::Reverse(p.find.len()));
        UrlRewriter {
            patterns,
            carry: Vec::new(),
            prev: 0,
            budget,
            examined: 0,
        }
    }

    /// The rewritten output for the next chunk (possibly holding back a few bytes).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.examined >= self.budget {
            let mut out = std::mem::take(&mut self.carry);
            out.extend_from_slice(chunk);
            return out;
        }
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        let (out, used) = self.scan(&buf, false);
        self.examined = self.examined.saturating_add(used);
        self.carry = buf[used..].to_vec();
        out
    }

    /// What is left at the end of the body.
    pub fn finish(&mut self) -> Vec<u8> {
        let buf = std::mem::take(&mut self.carry);
        if self.examined >= self.budget {
            return buf;
        }
        let (mut out, used) = self.scan(&buf, true);
        out.extend_from_slice(&buf[used..]);
        out
    }

    /// Rewrites `buf` up to where a pattern might continue past its end; returns the output
    /// and how many bytes of `buf` it covers.
    fn scan(&mut self, buf: &[u8], at_end: bool) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            if matches!(b, b'h' | b'H' | b'/' | b'\\') {
                match self.find(&buf[i..], at_end) {
                    Found::Match(p) => {
                        let pattern = &self.patterns[p];
                        out.extend_from_slice(&pattern.replace);
                        i += pattern.find.len();
                        self.prev = buf[i - 1];
                        continue;
                    }
                    Found::NeedMore => return (out, i),
                    Found::No => {}
                }
            }
            out.push(b);
            self.prev = b;
            i += 1;
        }
        (out, i)
    }

    fn find(&self, rest: &[u8], at_end: bool) -> Found {
        for (n, p) in self.patterns.iter().enumerate() {
            if p.scheme_relative && self.prev == b':' {
                continue;
            }
            let common = rest.len().min(p.find.len());
            if !rest[..common].eq_ignore_ascii_case(&p.find[..common]) {
                continue;
            }
            match rest.get(p.find.len()) {
                _ if rest.len() < p.find.len() => {
                    if !at_end {
                        return Found::NeedMore;
                    }
                }
                Some(&next) if continues_authority(next) => {}
                Some(_) => return Found::Match(n),
                None if at_end => return Found::Match(n),
                None => return Found::NeedMore,
            }
        }
        Found::No
    }
}

/// `body` (encoded with `encoding`) decoded and rewritten by `rewriter`, streaming.
pub fn rewrite(body: Body, encoding: Encoding, rewriter: UrlRewriter) -> Body {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder};
    use tokio_util::io::{ReaderStream, StreamReader};

    let raw = body.into_data_stream().map_err(std::io::Error::other);
    let decoded: futures::stream::BoxStream<'static, std::io::Result<Bytes>> = match encoding {
        Encoding::Identity => raw.boxed(),
        Encoding::Gzip => {
            let mut decoder = GzipDecoder::new(StreamReader::new(raw));
            decoder.multiple_members(true);
            ReaderStream::with_capacity(decoder, DECODE_BUFFER).boxed()
        }
        Encoding::Deflate => inflate(raw.boxed()),
        Encoding::Brotli => {
            ReaderStream::with_capacity(BrotliDecoder::new(StreamReader::new(raw)), DECODE_BUFFER)
                .boxed()
        }
    };
    let stream = futures::stream::unfold(Some((decoded, rewriter)), |state| async move {
        let (mut decoded, mut rw) = state?;
        loop {
            match decoded.next().await {
                Some(Ok(chunk)) => {
                    let out = rw.push(&chunk);
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), Some((decoded, rw))));
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => return Some((Ok(Bytes::from(rw.finish())), None)),
            }
        }
    });
    Body::from_stream(stream)
}

type ByteStream = futures::stream::BoxStream<'static, std::io::Result<Bytes>>;

/// Whether a `deflate` body starting with `head` is zlib-wrapped: a zlib header names method 8
/// with a window of at most 32 KiB and is a multiple of 31 (RFC 1950 section 2.2). Chromium
/// and Firefox use the same test to accept raw deflate too.
pub fn is_zlib_header(head: &[u8]) -> bool {
    match head {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// A `deflate` body decoded: zlib-wrapped or raw, told apart by its first two bytes.
fn inflate(mut raw: ByteStream) -> ByteStream {
    use async_compression::tokio::bufread::{DeflateDecoder, ZlibDecoder};
    use tokio_util::io::{ReaderStream, StreamReader};

    futures::stream::once(async move {
        let mut head = Vec::new();
        while head.len() < 2 {
            match raw.next().await {
                Some(Ok(chunk)) => head.extend_from_slice(&chunk),
                Some(Err(e)) => return futures::stream::iter([Err(e)]).boxed(),
                None => break,
            }
        }
        let zlib = is_zlib_header(&head);
        let whole = StreamReader::new(futures::stream::iter([Ok(Bytes::from(head))]).chain(raw));
        if zlib {
            ReaderStream::with_capacity(ZlibDecoder::new(whole), DECODE_BUFFER).boxed()
        } else {
            ReaderStream::with_capacity(DeflateDecoder::new(whole), DECODE_BUFFER).boxed()
        }
    })
    .flatten()
    .boxed()
}

/// Response headers of a body that [`rewrite`] changes: it is sent as identity, its length is
/// unknown and its validators are weak.
pub fn rewritten_headers(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    headers.remove("content-md5");
    if let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok())
        && !etag.starts_with("W/")
        && let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}"))
    {
        headers.insert(header::ETAG, weak);
    }
}

#[cfg(test)]
mod tests;
