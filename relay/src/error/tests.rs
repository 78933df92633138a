use super::*;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::routing::get;
use tower::ServiceExt as _;

fn mapped(e: impl Into<AppError>) -> (u16, &'static str, String) {
    let e = e.into();
    (e.status().as_u16(), e.code(), e.message().to_owned())
}

#[test]
fn tunnel_errors_map_to_statuses() {
    let cases = [
        (
            TunnelError::TooManyStreams { max: 64 },
            429,
            "too_many_streams",
        ),
        (
            TunnelError::ServiceNotFound("web".into()),
            404,
            "service_not_found",
        ),
        (
            TunnelError::Agent("target refused".into()),
            422,
            "agent_refused",
        ),
        (TunnelError::Timeout("no answer"), 504, "agent_timeout"),
        (TunnelError::Closed, 503, "tunnel_closed"),
        (TunnelError::Io("reset".into()), 502, "tunnel_error"),
    ];
    for (e, status, code) in cases {
        let (s, c, _) = mapped(e);
        assert_eq!((s, c), (status, code));
    }
    let (_, _, message) = mapped(TunnelError::Agent("no services provided".into()));
    assert!(message.contains("no services provided"), "{message}");
    let (_, _, message) = mapped(TunnelError::TooManyStreams { max: 64 });
    assert!(message.contains("64"), "{message}");
}

#[test]
fn connect_refusal_is_a_bad_gateway_naming_service_and_agent_text() {
    let e = AppError::connect_failed(
        "web",
        TunnelError::Agent("failed to connect to 10.0.0.1:80: connection refused".into()),
    );
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(e.code(), "connect_failed");
    assert!(e.message().contains("\"web\""), "{}", e.message());
    assert!(
        e.message().contains("connection refused"),
        "{}",
        e.message()
    );
    let e = AppError::connect_failed("web", TunnelError::Timeout("slow"));
    assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
    let e = AppError::connect_failed("web", TunnelError::TooManyStreams { max: 1 });
    assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn store_errors_map_to_statuses() {
    let cases = [
        (
            StoreError::NotFound {
                what: "session",
                key: "x".into(),
            },
            404,
            "not_found",
        ),
        (StoreError::Conflict("taken".into()), 409, "conflict"),
        (
            StoreError::Invalid("1 to 168".into()),
            400,
            "invalid_request",
        ),
        (
            StoreError::Database(sqlx::Error::PoolTimedOut),
            500,
            "internal",
        ),
        (StoreError::Corrupt("status".into()), 500, "internal"),
    ];
    for (e, status, code) in cases {
        let (s, c, _) = mapped(e);
        assert_eq!((s, c), (status, code));
    }
    let (_, _, message) = mapped(StoreError::Invalid("extend by 1 to 168 hours".into()));
    assert_eq!(message, "extend by 1 to 168 hours");
}

async fn body_json(resp: Response) -> serde_json::Value {
    let bytes = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn app() -> Router {
    Router::new()
        .route(
            "/bad",
            get(|| async { AppError::bad_request("invalid_thing", "thing must be blue") }),
        )
        .route(
            "/boom",
            get(|| async { AppError::from(StoreError::Database(sqlx::Error::PoolTimedOut)) }),
        )
        .route("/who", get(|| async { AppError::unauthorized("no token") }))
        .layer(axum::middleware::from_fn(request_id))
}

async fn call(uri: &str, id: Option<&str>) -> Response {
    let mut req = axum::http::Request::get(uri);
    if let Some(id) = id {
        req = req.header("x-request-id", id);
    }
    app()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn client_error_body_says_what_was_wrong_with_the_request_id() {
    let resp = call("/bad", Some("abc-123")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let body = body_json(resp).await;
    assert_eq!(body["error"]["code"], "invalid_thing");
    assert_eq!(body["error"]["message"], "thing must be blue");
    assert_eq!(body["error"]["request_id"], "abc-123");
}

#[tokio::test]
async fn internal_error_body_is_generic_and_names_the_request() {
    let resp = call("/boom", None).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "generated ids are uuids: {id}");
    let body = body_json(resp).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!("internal error, see the relay log for request {id}")
    );
    assert!(!message.contains("pool"), "no detail leaks: {message}");
}

#[tokio::test]
async fn unsafe_request_ids_are_replaced() {
    for bad in ["has space", "quote\"", &"x".repeat(MAX_REQUEST_ID + 1)] {
        let resp = call("/bad", Some(bad)).await;
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32);
    }
}

#[tokio::test]
async fn unauthorized_asks_for_a_bearer_token() {
    let resp = call("/who", None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
}
