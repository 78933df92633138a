//! Service origins end to end (`--proxy-domain localhost`): the real relay and agent, two
//! device-side web services. An operator opens a service, trades the one-time link for the
//! origin cookie and gets the service's pages with its URLs rewritten (plain, gzip and br), its
//! cookie host-only and its redirect kept on the origin; the other service's origin is apart;
//! a used or expired link is refused saying what to do; a WebSocket echoes through the origin.
//! `*.localhost` is sent to the relay's loopback address by the clients themselves.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::AsyncReadExt as _;

use crate::harness::{Agent, Relay};

/// The page of a service, naming the service by its own address in absolute URLs.
fn page(name: &str, me: SocketAddr, cookie: &str) -> String {
    format!(
        "<!doctype html><title>{name}</title><h1>service {name}</h1>\
         <p id=\"upstream-cookie\">{cookie}</p>\
         <a id=\"next\" href=\"http://{me}/next\">next</a>\
         <script src=\"//{me}/app.js\"></script>"
    )
}

fn html(body: impl Into<axum::body::Body>, encoding: Option<&'static str>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/html; charset=utf-8".parse().unwrap(),
    );
    if let Some(e) = encoding {
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, e.parse().unwrap());
    }
    r
}

/// `text` as an HTML response in `coding`: `gzip`, `br`, or `deflate` sent raw (no zlib header),
/// as some servers do.
async fn encoded(text: String, coding: &'static str) -> Response {
    use async_compression::tokio::bufread::{BrotliEncoder, DeflateEncoder, GzipEncoder};
    let mut out = Vec::new();
    let read = match coding {
        "gzip" => {
            GzipEncoder::new(text.as_bytes())
                .read_to_end(&mut out)
                .await
        }
        "br" => {
            BrotliEncoder::new(text.as_bytes())
                .read_to_end(&mut out)
                .await
        }
        _ => {
            DeflateEncoder::new(text.as_bytes())
                .read_to_end(&mut out)
                .await
        }
    };
    read.unwrap();
    html(out, Some(coding))
}

fn cookie_of(h: &HeaderMap) -> String {
    h.get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A device-side web service: `/` sets `sid=<name>` (for the device's own domain) and
/// redirects to its absolute `/home`; `/home` is its page; `/gz`, `/br` and `/deflate` (raw,
/// without the zlib header) the page encoded;
/// `/whoami` the cookies it got; `/ws` a WebSocket echo.
pub async fn web_service(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let me = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/",
            get(move || async move {
                let mut r = StatusCode::SEE_OTHER.into_response();
                let h = r.headers_mut();
                h.insert(
                    header::LOCATION,
                    format!("http://{me}/home").parse().unwrap(),
                );
                h.insert(
                    header::SET_COOKIE,
                    format!("sid={name}; Domain=127.0.0.1; Path=/")
                        .parse()
                        .unwrap(),
                );
                r
            }),
        )
        .route(
            "/home",
            get(move |h: HeaderMap| async move { html(page(name, me, &cookie_of(&h)), None) }),
        )
        .route("/gz", get(move || encoded(page(name, me, ""), "gzip")))
        .route("/br", get(move || encoded(page(name, me, ""), "br")))
        .route(
            "/deflate",
            get(move || encoded(page(name, me, ""), "deflate")),
        )
        .route("/whoami", get(|h: HeaderMap| async move { cookie_of(&h) }))
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if matches!(msg, WsMessage::Text(_) | WsMessage::Binary(_))
                            && socket.send(msg).await.is_err()
                        {
                            break;
                        }
                    }
                })
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    me
}

/// A client that sends every request for `host` to the relay and follows no redirect.
fn client_for(host: &str, relay: &Relay) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(host, relay.addr)
        .build()
        .unwrap()
}

/// `POST …/services/{name}/open` as the admin: the one-time URL.
async fn open(relay: &Relay, session: &str, name: &str) -> (u16, Value) {
    let path = format!("/api/v1/sessions/{session}/services/{name}/open");
    crate::services::post(relay, &path, serde_json::json!({})).await
}

/// An opened origin: its base URL, a client for it, and the origin cookie (`name=value`).
struct Origin {
    base: String,
    client: reqwest::Client,
    cookie: String,
}

impl Origin {
    async fn get(&self, path: &str, cookies: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, cookies)
            .send()
            .await
            .unwrap()
    }
}

/// Opens `name`, checks the link and its cookie, and returns the logged-in origin.
async fn login(relay: &Relay, session: &str, name: &str) -> Origin {
    let (status, v) = open(relay, session, name).await;
    assert_eq!(status, 200, "open {name}: {v}");
    let url = reqwest::Url::parse(v["url"].as_str().unwrap()).unwrap();
    let host = url.host_str().unwrap().to_owned();
    let label = host
        .strip_suffix(".localhost")
        .expect("an origin under localhost");
    assert_eq!(label.len(), 26, "{host}");
    assert_eq!(url.port(), Some(relay.addr.port()), "the relay's own port");
    assert_eq!(url.path(), "/__tether/auth");
    assert_eq!(v["origin"], format!("http://{host}:{}", relay.addr.port()));
    let client = client_for(&host, relay);

    let r = client.get(url.clone()).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/");
    assert_eq!(r.headers()[header::REFERRER_POLICY], "no-referrer");
    let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(
        !set.to_ascii_lowercase().contains("domain="),
        "host-only: {set}"
    );
    assert!(!set.contains("Secure"), "no Secure over plain HTTP: {set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("tether_origin="), "{cookie}");

    // the link is used up
    let again = client.get(url).send().await.unwrap();
    assert_eq!(again.status(), 403);
    let e: Value = again.json().await.unwrap();
    assert_eq!(e["error"]["code"], "token_invalid", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("open the service again from the Tether console"),
        "{e}"
    );
    Origin {
        base: v["origin"].as_str().unwrap().to_owned(),
        client,
        cookie,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_opens_on_its_own_origin() {
    let mut relay = Relay::start(&["--proxy-domain", "localhost"]).await;
    let one = web_service("one").await;
    let two = web_service("two").await;
    let _agent = Agent::start(&relay, &relay.secret, &format!("one={one},two={two}"), &[]);
    let session = relay.active_session_with("two").await;

    let a = login(&relay, &session, "one").await;
    let b = login(&relay, &session, "two").await;
    assert_ne!(a.base, b.base);
    let a_host = a.base.strip_prefix("http://").unwrap().to_owned();

    // no cookie, or another origin's cookie: refused with what to do
    let r = a.get("/home", "").await;
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "origin_login_required", "{e}");
    let r = a.get("/home", &b.cookie).await;
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "origin_cookie_invalid", "{e}");
    // a browser navigating gets the same words as a page that loads nothing
    let r = a
        .client
        .get(format!("{}/home", a.base))
        .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
    );
    assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let text = r.text().await.unwrap();
    assert!(text.starts_with("<!doctype html>"), "{text}");
    assert!(
        text.contains("open it from the Tether console (its Open link logs you in here)"),
        "{text}"
    );
    assert!(
        !text.contains("/assets/"),
        "nothing of the service's paths: {text}"
    );

    // the service sets its cookie (host-only) and redirects to its absolute URL: kept on the
    // origin
    let r = a.get("/", &a.cookie).await;
    assert_eq!(r.status(), 303, "{}", relay.log());
    assert_eq!(r.headers()[header::LOCATION], "/home");
    assert_eq!(r.headers()[header::SET_COOKIE], "sid=one; Path=/");
    let r = b.get("/", &b.cookie).await;
    assert_eq!(r.headers()[header::SET_COOKIE], "sid=two; Path=/");

    // the page, with its URLs on the origin; the relay's cookie never reached the service
    let r = a.get("/home", &format!("{}; sid=one", a.cookie)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-security-policy"],
        "frame-ancestors 'self'"
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("<h1>service one</h1>"), "{text}");
    assert!(
        text.contains("<p id=\"upstream-cookie\">sid=one</p>"),
        "{text}"
    );
    assert!(
        text.contains(&format!("href=\"http://{a_host}/next\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("src=\"//{a_host}/app.js\"")),
        "{text}"
    );
    assert!(!text.contains(&one.to_string()), "{text}");
    let who = a
        .get(
            "/whoami",
            &format!("{}; sid=one; tether_session=x", a.cookie),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(who, "sid=one");

    // every path and method of the origin is the service's, even where the relay has a route
    let r = a
        .client
        .post(format!("{}/healthz", a.base))
        .header(header::COOKIE, &a.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the service's answer, not the relay's 405");
    let r = a.get("/api/v1/systems", &a.cookie).await;
    assert_eq!(r.status(), 404, "the service's answer, not the relay's API");

    // compressed pages are decoded, rewritten and sent as identity
    for (path, encoding) in [("/gz", "gzip"), ("/br", "br"), ("/deflate", "deflate")] {
        let r = a
            .client
            .get(format!("{}{path}", a.base))
            .header(header::COOKIE, &a.cookie)
            .header(header::ACCEPT_ENCODING, "gzip, deflate, br, zstd")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{encoding}");
        assert!(
            r.headers().get(header::CONTENT_ENCODING).is_none(),
            "{encoding}"
        );
        let text = r.text().await.unwrap();
        assert!(text.contains("<h1>service one</h1>"), "{encoding}: {text}");
        assert!(
            text.contains(&format!("href=\"http://{a_host}/next\"")),
            "{encoding}: {text}"
        );
    }

    // a WebSocket through the origin
    let tcp = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{a_host}/ws"))
            .unwrap();
    req.headers_mut()
        .insert(header::COOKIE, a.cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("websocket through the service origin");
    ws.send(tungstenite::Message::text("echo me"))
        .await
        .unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "echo me");
    drop(ws);

    // an open tab keeps working across a relay restart once the agent is back (same origin,
    // same cookie)
    relay.restart();
    assert_eq!(relay.active_session_with("one").await, session);
    let r = a.get("/home", &a.cookie).await;
    assert_eq!(r.status(), 200, "{}", relay.log());
    assert!(r.text().await.unwrap().contains("<h1>service one</h1>"));

    // a disabled operator's cookie opens nothing
    crate::harness::admin(&relay.database, &["operator", "disable", "alice"]);
    let r = a.get("/home", &a.cookie).await;
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("disabled"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_is_refused_and_no_domain_means_no_origins() {
    let relay = Relay::start(&["--proxy-domain", "localhost", "--origin-link-ttl", "1ns"]).await;
    let one = web_service("one").await;
    let _agent = Agent::start(&relay, &relay.secret, &format!("one={one}"), &[]);
    let session = relay.active_session_with("one").await;
    let (status, v) = open(&relay, &session, "one").await;
    assert_eq!(status, 200, "{v}");
    let url = reqwest::Url::parse(v["url"].as_str().unwrap()).unwrap();
    let client = client_for(url.host_str().unwrap(), &relay);
    let r = client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "token_expired", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("expired"),
        "{e}"
    );
    let (status, v) = open(&relay, &session, "nope").await;
    assert_eq!(status, 404, "{v}");
    drop(relay);

    let relay = Relay::start(&[]).await;
    let _agent = Agent::start(&relay, &relay.secret, &format!("one={one}"), &[]);
    let session = relay.active_session_with("one").await;
    let (status, v) = open(&relay, &session, "one").await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "no_proxy_domain");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("/api/v1/sessions/{session}/proxy/one/")),
        "{v}"
    );
}

/// The same in a real browser (`relay/tests/browser/origins.mjs`): the console's Open link
/// opens each service in a new tab on its own origin, and each tab sees only its own cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_open_on_their_own_origins_in_a_browser() {
    use crate::console::{browser_available, run_script};
    if !browser_available("origins browser test") {
        return;
    }
    let relay = Relay::start(&["--proxy-domain", "localhost"]).await;
    let ada = crate::harness::admin(
        &relay.database,
        &["operator", "create", "ada", "--role", "admin", "--json"],
    );
    let one = web_service("one").await;
    let two = web_service("two").await;
    let _agent = Agent::start(&relay, &relay.secret, &format!("one={one},two={two}"), &[]);
    let session = relay.active_session_with("two").await;

    run_script(
        "origins.mjs",
        &[
            ("TETHER_URL", &relay.base),
            ("TETHER_SESSION", &session),
            ("TETHER_ADMIN", "ada"),
            ("TETHER_ADMIN_PASSWORD", ada["password"].as_str().unwrap()),
        ],
        &relay,
    )
    .await;
}
