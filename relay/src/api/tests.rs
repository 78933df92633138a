//! The operator API through the real router over a SQLite store in memory.

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request as HttpRequest, StatusCode};
use clap::Parser;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::config::ServeConfig;
use crate::crypto::DataKey;
use crate::store::{Role, Store};
use crate::{AppState, app};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeConfig,
}

/// Relay state over a fresh in-memory database, with one token per role.
pub(crate) struct Fixture {
    pub state: AppState,
    pub admin: String,
    pub operator: String,
    pub viewer: String,
}

impl Fixture {
    pub async fn new() -> Fixture {
        Fixture::with_args(&[]).await
    }

    /// A fixture whose relay runs with these `serve` flags.
    pub async fn with_args(args: &[&str]) -> Fixture {
        let store = Store::connect("sqlite::memory:", DataKey::generate().unwrap())
            .await
            .unwrap();
        let argv = std::iter::once("tether-relay").chain(args.iter().copied());
        let state = AppState::new(store, Cli::parse_from(argv).serve);
        let mut tokens = Vec::new();
        for (name, role) in [
            ("ada", Role::Admin),
            ("otto", Role::Operator),
            ("vera", Role::Viewer),
        ] {
            state.store.create_operator(name, role).await.unwrap();
            let token = state.store.create_token(name).await.unwrap();
            tokens.push(token.expose().to_owned());
        }
        let [admin, operator, viewer] = <[String; 3]>::try_from(tokens).unwrap();
        Fixture {
            state,
            admin,
            operator,
            viewer,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = HttpRequest::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let resp = app(self.state.clone())
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// A system with one pending session; returns the session id.
    pub async fn session(&self, system: &str) -> String {
        let (sys, _) = self.state.store.create_system(system).await.unwrap();
        let s = self
            .state
            .store
            .create_session(&sys.id, None, 3_600_000)
            .await
            .unwrap();
        s.id
    }
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| agent_core::document::Timestamp::parse(s).is_ok() && s.ends_with('Z'))
}

#[tokio::test]
async fn every_endpoint_checks_the_role() {
    let f = Fixture::new().await;
    let id = f.session("fw1").await;
    let services = format!("/api/v1/sessions/{id}/services");
    let session = format!("/api/v1/sessions/{id}");
    let add = json!({"services": {"web": {"target": "10.0.0.1:80"}}});

    // no or bad token: 401 for everything under /api/v1
    for uri in [
        "/api/v1/systems",
        "/api/v1/sessions",
        "/api/v1/audit",
        &session,
    ] {
        let (s, body) = f.call(Method::GET, uri, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(body["error"]["code"], "unauthorized");
        let (s, _) = f.call(Method::GET, uri, Some("nope"), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
    }

    // viewers read, but cannot act
    let v = Some(f.viewer.as_str());
    for uri in ["/api/v1/systems", "/api/v1/sessions", &session, &services] {
        let (s, _) = f.call(Method::GET, uri, v, None).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
    }
    let writes = [
        (Method::DELETE, session.clone(), None),
        (
            Method::PATCH,
            session.clone(),
            Some(json!({"extend_hours": 1})),
        ),
        (Method::POST, services.clone(), Some(add.clone())),
        (Method::DELETE, format!("{services}/web"), None),
        (Method::GET, format!("{session}/proxy/web/"), None),
    ];
    for (method, uri, body) in writes {
        let (s, resp) = f.call(method.clone(), &uri, v, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {uri}");
        assert!(
            resp["error"]["message"]
                .as_str()
                .unwrap()
                .contains("operator role"),
            "{resp}"
        );
    }

    // operators act but do not read the audit trail; admins do
    let (s, resp) = f
        .call(Method::GET, "/api/v1/audit", Some(&f.operator), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin role")
    );
    let (s, _) = f
        .call(Method::GET, "/api/v1/audit", Some(&f.admin), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = f
        .call(
            Method::PATCH,
            &session,
            Some(&f.operator),
            Some(json!({"extend_hours": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = f
        .call(
            Method::PATCH,
            &session,
            Some(&f.admin),
            Some(json!({"extend_hours": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn sessions_are_listed_filtered_shown_extended_and_closed() {
    let f = Fixture::new().await;
    let id = f.session("fw1").await;
    let op = Some(f.operator.as_str());

    let (s, body) = f.call(Method::GET, "/api/v1/sessions", op, None).await;
    assert_eq!(s, StatusCode::OK);
    let listed = &body["sessions"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["status"], "pending");
    assert_eq!(listed["system_name"], "fw1");
    assert_eq!(listed["node_id"], Value::Null);
    assert_eq!(listed["connected"], false);
    assert!(is_rfc3339(&listed["started_at"]), "{listed}");
    assert!(is_rfc3339(&listed["expires_at"]), "{listed}");

    let count = |body: &Value| body["sessions"].as_array().unwrap().len();
    let (_, body) = f
        .call(Method::GET, "/api/v1/sessions?status=active", op, None)
        .await;
    assert_eq!(count(&body), 0);
    let (_, body) = f
        .call(
            Method::GET,
            "/api/v1/sessions?status=active&status=pending&system=fw1",
            op,
            None,
        )
        .await;
    assert_eq!(count(&body), 1);
    let (_, body) = f
        .call(Method::GET, "/api/v1/sessions?system=other", op, None)
        .await;
    assert_eq!(count(&body), 0);
    let (s, body) = f
        .call(Method::GET, "/api/v1/sessions?status=open", op, None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_status");

    let uri = format!("/api/v1/sessions/{id}");
    let (s, shown) = f.call(Method::GET, &uri, op, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shown["services"], json!({}));
    assert_eq!(shown["diagnostics"], Value::Null);
    assert_eq!(shown["connected"], false);
    let (s, body) = f
        .call(Method::GET, &format!("{uri}/services"), op, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(body["services"].is_object(), "{body}");

    let (s, extended) = f
        .call(Method::PATCH, &uri, op, Some(json!({"extend_hours": 2})))
        .await;
    assert_eq!(s, StatusCode::OK, "{extended}");
    let ms = |v: &Value| {
        agent_core::document::Timestamp::parse(v.as_str().unwrap())
            .unwrap()
            .to_unix_millis()
    };
    assert_eq!(
        ms(&extended["expires_at"]) - ms(&shown["expires_at"]),
        2 * 3_600_000
    );
    for bad in [json!({"extend_hours": 0}), json!({"extend_hours": 169})] {
        let (s, body) = f.call(Method::PATCH, &uri, op, Some(bad)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(body["error"]["message"].as_str().unwrap().contains("168"));
    }
    let (s, _) = f
        .call(Method::PATCH, &uri, op, Some(json!({"hours": 2})))
        .await;
    assert!(s.is_client_error());

    // not connected: commands and the proxy cannot reach the appliance
    let (s, body) = f
        .call(
            Method::POST,
            &format!("{uri}/services"),
            op,
            Some(json!({"services": {"web": {"target": "10.0.0.1:80"}}})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "not_connected");
    let (s, body) = f
        .call(Method::GET, &format!("{uri}/proxy/web/x"), op, None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "not_connected");
    let (s, body) = f
        .call(
            Method::POST,
            &format!("{uri}/services"),
            op,
            Some(json!({"services": {"web": {"target": "169.254.169.254:80"}}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_services");

    let (s, closed) = f.call(Method::DELETE, &uri, op, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(closed["session"]["status"], "closed");
    assert_eq!(closed["session"]["closed_by"], "operator");
    let (s, body) = f.call(Method::DELETE, &uri, op, None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "session_closed");
    let (s, body) = f
        .call(Method::PATCH, &uri, op, Some(json!({"extend_hours": 1})))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "session_closed");
    let (s, body) = f
        .call(Method::GET, &format!("{uri}/proxy/web"), op, None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "session_closed");

    for (method, uri) in [
        (Method::GET, "/api/v1/sessions/nope"),
        (Method::DELETE, "/api/v1/sessions/nope"),
        (Method::GET, "/api/v1/sessions/nope/services"),
    ] {
        let (s, _) = f.call(method.clone(), uri, op, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {uri}");
    }

    // the audit trail has who did what to which session
    let (_, body) = f
        .call(
            Method::GET,
            &format!("/api/v1/audit?session={id}"),
            Some(&f.admin),
            None,
        )
        .await;
    let actions: Vec<(&str, &str)> = body["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["actor"].as_str().unwrap()))
        .collect();
    assert!(actions.contains(&("session_extend", "otto")), "{actions:?}");
    assert!(actions.contains(&("session_close", "otto")), "{actions:?}");
    assert!(is_rfc3339(&body["audit"][0]["at"]));
    let (s, _) = f
        .call(Method::GET, "/api/v1/audit?limit=0", Some(&f.admin), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn systems_health_and_metrics() {
    let f = Fixture::new().await;
    f.session("fw1").await;
    let (s, body) = f
        .call(Method::GET, "/api/v1/systems", Some(&f.viewer), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let sys = &body["systems"][0];
    assert_eq!(sys["name"], "fw1");
    assert_eq!(sys["connected"], false);
    assert_eq!(sys["support_enabled"], true);
    assert!(sys["key"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(sys.get("secret").is_none() && sys.get("secret_hash").is_none());

    let (s, body) = f.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "ok");

    let resp = app(f.state.clone())
        .oneshot(HttpRequest::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text =
        String::from_utf8(to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(
        text.contains("tether_sessions{state=\"pending\"} 1"),
        "{text}"
    );
    assert!(text.contains("tether_tunnels_connected 0"), "{text}");
}
