//! The console through the real router over a SQLite store in memory: every route with every
//! role, CSRF and `Origin`, the login lockout, cookie flags, security headers, and the API
//! accepting the console cookie.

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use clap::Parser;
use tower::ServiceExt as _;

use super::auth::{self, COOKIE, CSP, LOGIN_COOKIE};
use super::login::{LOCKOUT_FAILURES, LOCKOUT_MS, LOCKOUT_WINDOW_MS, locked_until};
use crate::config::ServeConfig;
use crate::crypto::DataKey;
use crate::store::{Operator, Role, Store};
use crate::{AppState, app};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeConfig,
}

struct Fixture {
    state: AppState,
    admin: (Operator, String),
    operator: (Operator, String),
    viewer: (Operator, String),
    victim: Operator,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

/// A console login: its cookie value and CSRF token.
struct Login {
    cookie: String,
    csrf: String,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(Cli::parse_from(["tether-relay"]).serve).await
    }

    async fn with(config: ServeConfig) -> Fixture {
        let store = Store::connect("sqlite::memory:", DataKey::generate().unwrap())
            .await
            .unwrap();
        let state = AppState::new(store, config);
        let mut made = Vec::new();
        for (name, role) in [
            ("ada", Role::Admin),
            ("otto", Role::Operator),
            ("vera", Role::Viewer),
        ] {
            let (op, password) = state.store.create_operator(name, role).await.unwrap();
            made.push((op, password.expose().to_owned()));
        }
        let (victim, _) = state
            .store
            .create_operator("victor", Role::Viewer)
            .await
            .unwrap();
        let [admin, operator, viewer] = <[(Operator, String); 3]>::try_from(made).unwrap();
        Fixture {
            state,
            admin,
            operator,
            viewer,
            victim,
        }
    }

    /// A fresh console login of `op` (without the password round trip).
    async fn login(&self, op: &Operator) -> Login {
        let set = auth::start(&self.state, op, false).await.unwrap();
        let cookie = set
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("tether_session=")
            .unwrap()
            .to_owned();
        let session = auth::lookup(&self.state, &cookie_header(COOKIE, &cookie))
            .await
            .unwrap()
            .unwrap();
        Login {
            cookie,
            csrf: session.csrf_token,
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        form: Option<&str>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "relay.test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match form {
            Some(f) => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(f.to_owned())
            }
            None => Body::empty(),
        };
        let resp = app(self.state.clone())
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = to_bytes(resp.into_body(), 1 << 22).await.unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// A request as a logged-in browser sends it: cookie, and for a form the CSRF field.
    async fn as_user(
        &self,
        login: &Login,
        method: Method,
        uri: &str,
        form: Option<&str>,
    ) -> Answer {
        let cookie = format!("{COOKIE}={}", login.cookie);
        let form = form.map(|f| {
            if f.is_empty() {
                format!("csrf={}", login.csrf)
            } else {
                format!("csrf={}&{f}", login.csrf)
            }
        });
        self.send(
            method,
            uri,
            &[("cookie", &cookie), ("origin", "http://relay.test")],
            form.as_deref(),
        )
        .await
    }

    async fn session(&self, system: &str) -> String {
        let sys = match self.state.store.find_system(system).await.unwrap() {
            Some(s) => s,
            None => self.state.store.create_system(system).await.unwrap().0,
        };
        self.state
            .store
            .create_session(&sys.id, None, 3_600_000)
            .await
            .unwrap()
            .id
    }
}

fn cookie_header(name: &str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, format!("{name}={value}").parse().unwrap());
    h
}

/// One console route: method, path (`{sid}` a fresh session, `{sys}` its system, `{victim}` an
/// operator, `{n}` a unique number), form, the least role, and the status it answers when
/// allowed.
struct Route {
    method: Method,
    path: &'static str,
    form: Option<&'static str>,
    need: Role,
    ok: StatusCode,
}

fn routes() -> Vec<Route> {
    use StatusCode as S;
    let r = |method: Method, path, form, need, ok| Route {
        method,
        path,
        form,
        need,
        ok,
    };
    vec![
        r(Method::GET, "/systems", None, Role::Viewer, S::OK),
        r(Method::GET, "/sessions", None, Role::Viewer, S::OK),
        r(
            Method::GET,
            "/sessions?status=active&system={sys}",
            None,
            Role::Viewer,
            S::OK,
        ),
        r(Method::GET, "/sessions/{sid}", None, Role::Viewer, S::OK),
        // no agent is connected: the page says so
        r(
            Method::GET,
            "/sessions/{sid}/terminal",
            None,
            Role::Operator,
            S::OK,
        ),
        r(Method::GET, "/account", None, Role::Viewer, S::OK),
        r(Method::GET, "/audit", None, Role::Admin, S::OK),
        r(
            Method::GET,
            "/audit/export?format=csv",
            None,
            Role::Admin,
            S::OK,
        ),
        r(
            Method::GET,
            "/audit/export?format=jsonl",
            None,
            Role::Admin,
            S::OK,
        ),
        r(Method::GET, "/operators", None, Role::Admin, S::OK),
        r(
            Method::POST,
            "/systems",
            Some("name=made-{n}"),
            Role::Admin,
            S::OK,
        ),
        r(
            Method::POST,
            "/systems/{sys}/support",
            Some("enabled=true"),
            Role::Admin,
            S::SEE_OTHER,
        ),
        r(
            Method::POST,
            "/sessions/{sid}/extend",
            Some("hours=1"),
            Role::Operator,
            S::OK,
        ),
        r(
            Method::POST,
            "/sessions/{sid}/close",
            Some(""),
            Role::Operator,
            S::OK,
        ),
        // no agent is connected: the answer is shown on the session page
        r(
            Method::POST,
            "/sessions/{sid}/services",
            Some("name=web&target=10.0.0.1:80"),
            Role::Operator,
            S::SEE_OTHER,
        ),
        r(
            Method::POST,
            "/sessions/{sid}/services/web/remove",
            Some(""),
            Role::Operator,
            S::SEE_OTHER,
        ),
        r(
            Method::POST,
            "/sessions/{sid}/users",
            Some(""),
            Role::Operator,
            S::OK,
        ),
        r(
            Method::POST,
            "/operators",
            Some("name=op-{n}&role=viewer"),
            Role::Admin,
            S::OK,
        ),
        r(
            Method::POST,
            "/operators/{victim}/disable",
            Some(""),
            Role::Admin,
            S::SEE_OTHER,
        ),
        r(
            Method::POST,
            "/operators/{victim}/enable",
            Some(""),
            Role::Admin,
            S::SEE_OTHER,
        ),
        // the current password is wrong: refused with 400, but not for want of a role
        r(
            Method::POST,
            "/account/password",
            Some("current=nope&new=0123456789abcdef&confirm=0123456789abcdef"),
            Role::Viewer,
            S::BAD_REQUEST,
        ),
        r(
            Method::POST,
            "/logout",
            Some(""),
            Role::Viewer,
            S::SEE_OTHER,
        ),
    ]
}

#[tokio::test]
async fn every_console_route_checks_the_role() {
    let f = Fixture::new().await;
    let users = [
        ("admin", Some(&f.admin.0), Role::Admin),
        ("operator", Some(&f.operator.0), Role::Operator),
        ("viewer", Some(&f.viewer.0), Role::Viewer),
        ("nobody", None, Role::Viewer),
    ];
    let mut n = 0;
    for route in routes() {
        for (label, who, role) in users {
            n += 1;
            let sid = f.session("fw1").await;
            let sys = f.state.store.find_system("fw1").await.unwrap().unwrap().id;
            let fill = |s: &str| {
                s.replace("{sid}", &sid)
                    .replace("{sys}", &sys)
                    .replace("{victim}", &f.victim.id)
                    .replace("{n}", &n.to_string())
            };
            let path = fill(route.path);
            let form = route.form.map(fill);
            let what = format!("{} {path} as {label}", route.method);
            let Some(op) = who else {
                let a = f
                    .send(route.method.clone(), &path, &[], form.as_deref())
                    .await;
                assert_eq!(a.status, StatusCode::SEE_OTHER, "{what}: {}", a.body);
                assert!(
                    a.location().starts_with("/login"),
                    "{what}: {}",
                    a.location()
                );
                continue;
            };
            let login = f.login(op).await;
            let a = f
                .as_user(&login, route.method.clone(), &path, form.as_deref())
                .await;
            if crate::auth::role_allows(role, route.need) {
                assert_eq!(a.status, route.ok, "{what}: {}", a.body);
                assert!(
                    !a.location().starts_with("/login") || path == "/logout",
                    "{what}"
                );
            } else {
                assert_eq!(a.status, StatusCode::FORBIDDEN, "{what}: {}", a.body);
                assert!(
                    a.body
                        .contains(&format!("this needs the {} role", route.need)),
                    "{what}: {}",
                    a.body
                );
            }
        }
    }
    // the root sends everyone on to the systems page (and strangers from there to the login)
    let a = f.send(Method::GET, "/", &[], None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.location(), "/systems");
    let a = f.send(Method::GET, "/systems", &[], None).await;
    assert_eq!(a.location(), "/login?next=%2Fsystems");
}

#[tokio::test]
async fn state_changing_requests_need_the_csrf_token_and_the_same_origin() {
    let f = Fixture::new().await;
    let sid = f.session("fw1").await;
    let login = f.login(&f.operator.0).await;
    let cookie = format!("{COOKIE}={}", login.cookie);
    let uri = format!("/sessions/{sid}/extend");
    let origin = ("origin", "http://relay.test");
    // no token
    let a = f
        .send(
            Method::POST,
            &uri,
            &[("cookie", &cookie), origin],
            Some("hours=1"),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("CSRF token"), "{}", a.body);
    // a wrong token, as field and as header
    let wrong = "A".repeat(43);
    let a = f
        .send(
            Method::POST,
            &uri,
            &[("cookie", &cookie), origin],
            Some(&format!("csrf={wrong}&hours=1")),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = f
        .send(
            Method::POST,
            &uri,
            &[("cookie", &cookie), origin, ("x-csrf-token", &wrong)],
            Some("hours=1"),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // the right token from another site
    let form = format!("csrf={}&hours=1", login.csrf);
    let a = f
        .send(
            Method::POST,
            &uri,
            &[("cookie", &cookie), ("origin", "https://evil.example")],
            Some(&form),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("cross-origin"), "{}", a.body);
    let a = f
        .send(
            Method::POST,
            &uri,
            &[("cookie", &cookie), ("sec-fetch-site", "cross-site")],
            Some(&form),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // the right token as header (htmx) and as field (forms)
    let a = f
        .send(
            Method::POST,
            &uri,
            &[("cookie", &cookie), origin, ("x-csrf-token", &login.csrf)],
            Some("hours=1"),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = f
        .send(
            Method::POST,
            &uri,
            &[("cookie", &cookie), origin],
            Some(&form),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // another login's token does not do
    let other = f.login(&f.operator.0).await;
    let a = f
        .send(
            Method::POST,
            &uri,
            &[("cookie", &cookie), origin, ("x-csrf-token", &other.csrf)],
            Some("hours=1"),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // the login form needs its own double-submit cookie
    let a = f
        .send(
            Method::POST,
            "/login",
            &[origin],
            Some("name=otto&password=x"),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("login form has expired"), "{}", a.body);
}

/// Fetches the login form; returns the double-submit cookie header and the form token.
async fn login_form(f: &Fixture) -> (String, String) {
    let a = f.send(Method::GET, "/login", &[], None).await;
    assert_eq!(a.status, StatusCode::OK);
    let set = a
        .cookies()
        .into_iter()
        .find(|c| c.starts_with(LOGIN_COOKIE))
        .unwrap();
    let value = set.split(';').next().unwrap().to_owned();
    let token = value.split_once('=').unwrap().1.to_owned();
    assert!(a.body.contains(&token));
    (value, token)
}

async fn try_login(f: &Fixture, name: &str, password: &str) -> Answer {
    let (cookie, token) = login_form(f).await;
    let form = format!(
        "csrf={token}&name={name}&password={}&next=%2Fsessions",
        auth::urlencode(password)
    );
    f.send(
        Method::POST,
        "/login",
        &[("cookie", &cookie), ("origin", "http://relay.test")],
        Some(&form),
    )
    .await
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_logout_ends_it() {
    let f = Fixture::new().await;
    let a = try_login(&f, "vera", &f.viewer.1).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.location(), "/sessions");
    let set = a
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("tether_session="))
        .unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/;", "Max-Age=43200"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(!a.headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
    let value = set.split(';').next().unwrap().to_owned();
    let page = f
        .send(Method::GET, "/sessions", &[("cookie", &value)], None)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("vera"));
    let audit = f.state.store.list_audit(&Default::default()).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == "login" && r.actor == "vera")
    );

    // logout needs the CSRF token too, then the cookie no longer works
    let csrf = auth::lookup(&f.state, &page_cookie(&value))
        .await
        .unwrap()
        .unwrap()
        .csrf_token;
    let a = f
        .send(
            Method::POST,
            "/logout",
            &[("cookie", &value), ("origin", "http://relay.test")],
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(
        a.cookies()
            .iter()
            .any(|c| c.starts_with("tether_session=;") && c.contains("Max-Age=0"))
    );
    let page = f
        .send(Method::GET, "/sessions", &[("cookie", &value)], None)
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let audit = f.state.store.list_audit(&Default::default()).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == "logout" && r.actor == "vera")
    );

    // behind TLS (--secure-cookies): Secure and HSTS
    let mut config = Cli::parse_from(["tether-relay"]).serve;
    config.secure_cookies = true;
    let tls = Fixture::with(config).await;
    let a = try_login(&tls, "vera", &tls.viewer.1).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(
        a.cookies()
            .iter()
            .any(|c| c.starts_with("tether_session=") && c.ends_with("; Secure"))
    );
    assert!(a.headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
}

fn page_cookie(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, value.parse().unwrap());
    h
}

#[tokio::test]
async fn five_failed_logins_lock_the_name_and_say_so() {
    let f = Fixture::new().await;
    for i in 1..LOCKOUT_FAILURES {
        let a = try_login(&f, "otto", "wrong password").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert!(a.body.contains("Wrong name or password"), "{}", a.body);
        assert!(
            a.cookies()
                .iter()
                .all(|c| !c.starts_with("tether_session="))
        );
    }
    let a = try_login(&f, "otto", "wrong password").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.body.contains("locked for 15 minutes"), "{}", a.body);
    // now even the right password is refused, plainly
    let a = try_login(&f, "otto", &f.operator.1).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        a.body
            .contains("This account is locked after 5 failed logins"),
        "{}",
        a.body
    );
    assert!(
        a.cookies()
            .iter()
            .all(|c| !c.starts_with("tether_session="))
    );
    // other names are not locked
    let a = try_login(&f, "vera", &f.viewer.1).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let audit = f.state.store.list_audit(&Default::default()).await.unwrap();
    let failed = audit
        .iter()
        .filter(|r| r.action == "login_failed" && r.actor == "otto")
        .count();
    assert_eq!(failed, LOCKOUT_FAILURES + 1);
}

#[test]
fn lockout_needs_five_failures_within_the_window() {
    let m = 60_000;
    assert_eq!(locked_until(&[0, m, 2 * m, 3 * m]), None);
    assert_eq!(
        locked_until(&[0, m, 2 * m, 3 * m, 4 * m]),
        Some(4 * m + LOCKOUT_MS)
    );
    // spread over more than the window: no lock
    let spread: Vec<i64> = (0..5).map(|i| i * (LOCKOUT_WINDOW_MS / 4 + 1)).collect();
    assert_eq!(locked_until(&spread), None);
}

#[tokio::test]
async fn a_disabled_operator_is_logged_out_and_cannot_log_in() {
    let f = Fixture::new().await;
    let login = f.login(&f.viewer.0).await;
    f.state
        .store
        .set_operator_disabled(&f.viewer.0.id, true)
        .await
        .unwrap();
    let a = f.as_user(&login, Method::GET, "/systems", None).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert!(a.location().starts_with("/login"));
    let a = try_login(&f, "vera", &f.viewer.1).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // an admin disabling from the console ends the logins at once
    f.state
        .store
        .set_operator_disabled(&f.viewer.0.id, false)
        .await
        .unwrap();
    let login = f.login(&f.viewer.0).await;
    let admin = f.login(&f.admin.0).await;
    let a = f
        .as_user(
            &admin,
            Method::POST,
            &format!("/operators/{}/disable", f.viewer.0.id),
            Some(""),
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let hash = crate::crypto::hash_token(&login.cookie);
    assert!(
        f.state
            .store
            .console_session(&hash, i64::MAX, Store::now())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn idle_and_expired_logins_end() {
    let f = Fixture::new().await;
    let login = f.login(&f.viewer.0).await;
    let hash = crate::crypto::hash_token(&login.cookie);
    let idle = auth::millis(f.state.config.console_idle_timeout);
    let now = Store::now();
    let s = f
        .state
        .store
        .console_session(&hash, idle, now)
        .await
        .unwrap();
    assert!(s.is_some());
    // unused for the idle timeout: gone (and deleted)
    let later = now + idle + 1;
    assert!(
        f.state
            .store
            .console_session(&hash, idle, later)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.state
            .store
            .console_session(&hash, idle, now)
            .await
            .unwrap()
            .is_none()
    );
    // past the absolute lifetime, however busy
    let login = f.login(&f.viewer.0).await;
    let hash = crate::crypto::hash_token(&login.cookie);
    let end = Store::now() + auth::millis(f.state.config.console_session_lifetime) + 1;
    assert!(
        f.state
            .store
            .console_session(&hash, i64::MAX, end)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn console_pages_send_the_security_headers() {
    let f = Fixture::new().await;
    let login = f.login(&f.viewer.0).await;
    for (uri, who) in [
        ("/login", None),
        ("/systems", Some(&login)),
        ("/assets/console.js", None),
    ] {
        let a = match who {
            Some(l) => f.as_user(l, Method::GET, uri, None).await,
            None => f.send(Method::GET, uri, &[], None).await,
        };
        assert_eq!(a.status, StatusCode::OK, "{uri}");
        let h =
            |name: header::HeaderName| a.headers.get(name).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h(header::CONTENT_SECURITY_POLICY), CSP, "{uri}");
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(h(header::REFERRER_POLICY), "same-origin");
    }
    let a = f.as_user(&login, Method::GET, "/systems", None).await;
    assert_eq!(a.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    // no inline script or style for the CSP to block
    assert!(
        !a.body.contains("<script>") && !a.body.contains("style="),
        "{}",
        a.body
    );
    for (asset, content_type) in [
        ("htmx.min.js", "text/javascript"),
        ("xterm.mjs", "text/javascript"),
        ("addon-fit.mjs", "text/javascript"),
        ("xterm.css", "text/css"),
        ("terminal.js", "text/javascript"),
    ] {
        let a = f
            .send(Method::GET, &format!("/assets/{asset}"), &[], None)
            .await;
        assert_eq!(a.status, StatusCode::OK, "{asset}");
        let served = a
            .headers
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(served.starts_with(content_type), "{asset}: {served}");
        assert!(a.body.len() > 1_000, "{asset}");
    }
}

#[tokio::test]
async fn the_api_accepts_the_console_cookie_with_csrf_for_changes() {
    let f = Fixture::new().await;
    let sid = f.session("fw1").await;
    let viewer = f.login(&f.viewer.0).await;
    let operator = f.login(&f.operator.0).await;
    let call = |login: &Login, method: Method, csrf: bool| {
        let cookie = format!("{COOKIE}={}", login.cookie);
        let token = login.csrf.clone();
        let uri = format!("/api/v1/sessions/{sid}");
        let f = &f;
        async move {
            let mut h = vec![("cookie", cookie.as_str()), ("origin", "http://relay.test")];
            if csrf {
                h.push(("x-csrf-token", token.as_str()));
            }
            f.send(method, &uri, &h, None).await
        }
    };
    assert_eq!(
        call(&viewer, Method::GET, false).await.status,
        StatusCode::OK
    );
    let a = call(&viewer, Method::DELETE, true).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("operator role"), "{}", a.body);
    let a = call(&operator, Method::DELETE, false).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("X-CSRF-Token"), "{}", a.body);
    let a = call(&operator, Method::DELETE, true).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // a stale cookie is a 401, not a silent fall-through
    let a = f
        .send(
            Method::GET,
            "/api/v1/systems",
            &[("cookie", &format!("{COOKIE}={}", "B".repeat(43)))],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn password_change_checks_the_current_password_and_ends_other_logins() {
    let f = Fixture::new().await;
    let here = f.login(&f.viewer.0).await;
    let elsewhere = f.login(&f.viewer.0).await;
    let new = "a new password 42";
    let form = |current: &str, new: &str, confirm: &str| {
        format!(
            "current={}&new={}&confirm={}",
            auth::urlencode(current),
            auth::urlencode(new),
            auth::urlencode(confirm)
        )
    };
    let a = f
        .as_user(
            &here,
            Method::POST,
            "/account/password",
            Some(&form(&f.viewer.1, "short", "short")),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("at least 12 characters"), "{}", a.body);
    let a = f
        .as_user(
            &here,
            Method::POST,
            "/account/password",
            Some(&form(&f.viewer.1, new, new)),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("Password changed"));
    assert!(f.as_user(&here, Method::GET, "/systems", None).await.status == StatusCode::OK);
    assert_eq!(
        f.as_user(&elsewhere, Method::GET, "/systems", None)
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert!(
        f.state
            .store
            .verify_operator_password("vera", new)
            .await
            .unwrap()
            .is_some()
    );
    let audit = f.state.store.list_audit(&Default::default()).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == "password_change" && r.actor == "vera")
    );
}

#[test]
fn csv_export_quotes_and_defuses_formulas() {
    let record = crate::store::AuditRecord {
        id: 1,
        at: 0,
        actor: "=cmd".into(),
        action: "login".into(),
        system_id: None,
        session_id: None,
        service: Some("a,b".into()),
        remote_addr: None,
        detail: Some(serde_json::json!({"k": "v"})),
    };
    let out = super::audit::csv(vec![record]);
    let line = out.lines().nth(1).unwrap();
    assert!(line.contains(",'=cmd,"), "{line}");
    assert!(line.contains(",\"a,b\","), "{line}");
    assert!(line.ends_with("\"{\"\"k\"\":\"\"v\"\"}\""), "{line}");
}

#[tokio::test]
async fn the_terminal_page_says_why_an_unconnected_appliance_has_no_terminal() {
    let f = Fixture::new().await;
    let sid = f.session("fw-1").await;
    let login = f.login(&f.operator.0).await;
    for uri in [
        format!("/sessions/{sid}"),
        format!("/sessions/{sid}/terminal"),
    ] {
        let a = f.as_user(&login, Method::GET, &uri, None).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}");
        assert!(
            a.body.contains("The appliance is not connected now"),
            "{uri}: {}",
            a.body
        );
        assert!(!a.body.contains("id=\"open-terminal\""), "{uri}");
        assert!(!a.body.contains("id=\"terminals\""), "{uri}");
    }
}
