use super::*;

use http_body_util::BodyExt as _;
use tokio::io::AsyncReadExt as _;

const ORIGIN: &str = "abc.localhost:8080";

fn rewriter(budget: usize) -> UrlRewriter {
    let authorities = ["nas.local".to_owned(), "192.168.1.20:8443".to_owned()];
    UrlRewriter::new(&authorities, "http", ORIGIN, budget)
}

fn whole(input: &str) -> String {
    let mut rw = rewriter(MAX_REWRITE);
    let mut out = rw.push(input.as_bytes());
    out.extend(rw.finish());
    String::from_utf8(out).unwrap()
}

const PAGE: &str = r#"<a href="https://nas.local/login">x</a><script src="//NAS.local/app.js"></script>
<img src="http://nas.local:80/i.png"><a href="https://192.168.1.20:8443/">ip</a>
var u = "https:\/\/nas.local\/api"; url(//nas.local/bg.png)
keep: https://nas.local.evil.com/ //nas.localhost/ ftp://nas.local/ //nas.local:9000/ https://other/ http://nas.local@evil/
end http://nas.local"#;

const EXPECTED: &str = r#"<a href="http://abc.localhost:8080/login">x</a><script src="//abc.localhost:8080/app.js"></script>
<img src="http://abc.localhost:8080/i.png"><a href="http://abc.localhost:8080/">ip</a>
var u = "http:\/\/abc.localhost:8080\/api"; url(//abc.localhost:8080/bg.png)
keep: https://nas.local.evil.com/ //nas.localhost/ ftp://nas.local/ //nas.local:9000/ https://other/ http://nas.local@evil/
end http://abc.localhost:8080"#;

#[test]
fn rewrites_urls_naming_the_service_host_and_nothing_else() {
    assert_eq!(whole(PAGE), EXPECTED);
}

#[test]
fn finds_urls_split_at_every_chunk_boundary() {
    for cut in 0..=PAGE.len() {
        let mut rw = rewriter(MAX_REWRITE);
        let mut out = rw.push(&PAGE.as_bytes()[..cut]);
        out.extend(rw.push(&PAGE.as_bytes()[cut..]));
        out.extend(rw.finish());
        assert_eq!(String::from_utf8(out).unwrap(), EXPECTED, "cut at {cut}");
    }
}

#[test]
fn finds_urls_fed_one_byte_at_a_time_with_a_bounded_carry() {
    let mut rw = rewriter(MAX_REWRITE);
    let longest = rw.patterns.iter().map(|p| p.find.len()).max().unwrap();
    let mut out = Vec::new();
    for b in PAGE.as_bytes() {
        out.extend(rw.push(std::slice::from_ref(b)));
        assert!(rw.carry.len() <= longest, "carry {} bytes", rw.carry.len());
    }
    out.extend(rw.finish());
    assert_eq!(String::from_utf8(out).unwrap(), EXPECTED);
}

#[test]
fn a_body_larger_than_the_budget_passes_its_rest_through_whole() {
    let filler = "x".repeat(1000);
    let body = format!("https://nas.local/a {filler} https://nas.local/b");
    let mut rw = rewriter(500);
    let mut out = Vec::new();
    for chunk in body.as_bytes().chunks(64) {
        out.extend(rw.push(chunk));
    }
    out.extend(rw.finish());
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out,
        format!("http://abc.localhost:8080/a {filler} https://nas.local/b"),
        "the first URL is rewritten, the rest passes through untouched and uncut"
    );
}

async fn compress(encoding: Encoding, data: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder};
    let mut out = Vec::new();
    match encoding {
        Encoding::Identity => out.extend_from_slice(data),
        Encoding::Gzip => {
            GzipEncoder::new(data).read_to_end(&mut out).await.unwrap();
        }
        Encoding::Deflate => {
            ZlibEncoder::new(data).read_to_end(&mut out).await.unwrap();
        }
        Encoding::Brotli => {
            BrotliEncoder::new(data)
                .read_to_end(&mut out)
                .await
                .unwrap();
        }
    }
    out
}

/// A body that arrives in `size`-byte chunks.
fn chunked(data: Vec<u8>, size: usize) -> Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn decodes_gzip_deflate_and_br_then_rewrites_to_identity() {
    // Large enough for several decode steps, with URLs across their boundaries.
    let page = PAGE.repeat(400);
    let expected = EXPECTED.repeat(400);
    for encoding in [
        Encoding::Identity,
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Brotli,
    ] {
        let encoded = compress(encoding, page.as_bytes()).await;
        let body = rewrite(chunked(encoded, 7), encoding, rewriter(MAX_REWRITE));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            expected,
            "{encoding:?}"
        );
    }
}

#[tokio::test]
async fn decodes_raw_deflate_without_a_zlib_header_as_browsers_do() {
    use async_compression::tokio::bufread::DeflateEncoder;
    let page = PAGE.repeat(400);
    let mut raw = Vec::new();
    DeflateEncoder::new(page.as_bytes())
        .read_to_end(&mut raw)
        .await
        .unwrap();
    assert!(!is_zlib_header(&raw), "the test body has no zlib header");
    for size in [1, 7, 4096] {
        let body = rewrite(
            chunked(raw.clone(), size),
            Encoding::Deflate,
            rewriter(MAX_REWRITE),
        );
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            EXPECTED.repeat(400),
            "raw deflate in {size}-byte chunks"
        );
    }
}

#[test]
fn tells_a_zlib_header_from_raw_deflate() {
    // 78 01, 78 9c, 78 da: zlib's usual headers; 08 1d: a 256-byte window, still zlib.
    for head in [[0x78, 0x01], [0x78, 0x9c], [0x78, 0xda], [0x08, 0x1d]] {
        assert!(is_zlib_header(&head), "{head:02x?}");
    }
    // raw deflate blocks, a window over 32 KiB, a bad check, too short
    for head in [
        &[0xcb, 0x48][..],
        &[0xf3, 0x48],
        &[0x88, 0x98],
        &[0x78, 0x9d],
        &[0x78],
    ] {
        assert!(!is_zlib_header(head), "{head:02x?}");
    }
}

#[tokio::test]
async fn a_corrupt_encoded_body_ends_in_an_error_not_a_short_body() {
    let body = rewrite(
        chunked(b"this is not gzip at all".to_vec(), 4),
        Encoding::Gzip,
        rewriter(MAX_REWRITE),
    );
    assert!(body.collect().await.is_err());
}

#[test]
fn knows_the_encodings_it_can_undo() {
    let mut h = HeaderMap::new();
    assert_eq!(Encoding::of(&h), Some(Encoding::Identity));
    for (v, e) in [
        ("gzip", Some(Encoding::Gzip)),
        ("X-GZIP", Some(Encoding::Gzip)),
        ("deflate", Some(Encoding::Deflate)),
        ("br", Some(Encoding::Brotli)),
        ("zstd", None),
        ("gzip, br", None),
    ] {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(v));
        assert_eq!(Encoding::of(&h), e, "{v}");
    }
}

#[test]
fn only_html_javascript_and_css_are_rewritten() {
    let mut h = HeaderMap::new();
    assert!(!is_rewritable(&h));
    for (ct, yes) in [
        ("text/html; charset=utf-8", true),
        ("TEXT/CSS", true),
        ("application/javascript", true),
        ("text/javascript;charset=utf-8", true),
        ("image/png", false),
        ("application/json", false),
    ] {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        assert_eq!(is_rewritable(&h), yes, "{ct}");
    }
}

#[test]
fn rewritten_bodies_lose_length_encoding_and_strong_validators() {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
    h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
    rewritten_headers(&mut h);
    assert!(!h.contains_key(header::CONTENT_ENCODING));
    assert!(!h.contains_key(header::CONTENT_LENGTH));
    assert_eq!(h[header::ETAG], "W/\"v1\"");
}
