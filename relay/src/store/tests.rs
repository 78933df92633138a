//! Store behaviour, run on both backends: every test body below runs once on a fresh SQLite file
//! and once in a fresh PostgreSQL schema (`TETHER_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). An unreachable PostgreSQL fails the test unless
//! `TETHER_SKIP_POSTGRES=1` (ignored when `CI=true`).

use serde_json::json;
use sqlx::Row as _;

use super::*;

/// Runs each named `async fn(Store)` as two tests, `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::store::tests::harness::on_sqlite(super::$name).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::store::tests::harness::on_postgres(super::$name).await
            }
        }
    )*};
}
pub(crate) use on_both_backends;

pub(crate) mod harness {
    use std::future::Future;

    use sqlx::Connection as _;
    use sqlx::Executor as _;

    use crate::crypto::DataKey;
    use crate::store::Store;

    const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    pub(crate) fn test_key() -> DataKey {
        DataKey::from_hex(&"5a".repeat(32)).unwrap()
    }

    /// Runs `body` on a store over a new SQLite file.
    pub(crate) async fn on_sqlite<F, Fut>(body: F)
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tether.db").display());
        let store = Store::connect(&url, test_key()).await.unwrap();
        assert_eq!(store.backend(), "sqlite");
        let outcome = tokio::spawn(body(store.clone())).await;
        store.pool.close().await;
        drop(dir);
        rethrow(outcome);
    }

    /// Runs `body` on a store over a new PostgreSQL schema, dropped afterwards even if `body`
    /// panics.
    pub(crate) async fn on_postgres<F, Fut>(body: F)
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let base = std::env::var("TETHER_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let mut admin = match sqlx::PgConnection::connect(&base).await {
            Ok(conn) => conn,
            Err(e) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true");
                let skip = std::env::var("TETHER_SKIP_POSTGRES").is_ok_and(|v| v == "1");
                if skip && !ci {
                    eprintln!(
                        "SKIPPED: PostgreSQL at {base} unreachable ({e}); TETHER_SKIP_POSTGRES=1"
                    );
                    return;
                }
                panic!(
                    "PostgreSQL at {base} is unreachable ({e}); start it, point \
                     TETHER_TEST_POSTGRES_URL at one, or set TETHER_SKIP_POSTGRES=1 (not in CI)"
                );
            }
        };
        let schema = format!("tether_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(format!("CREATE SCHEMA {schema}").as_str())
            .await
            .unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        let outcome = match Store::connect(&url, test_key()).await {
            Ok(store) => {
                assert_eq!(store.backend(), "postgres");
                let outcome = tokio::spawn(body(store.clone())).await;
                store.pool.close().await;
                Ok(outcome)
            }
            Err(e) => Err(e),
        };
        admin
            .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
            .await
            .unwrap();
        admin.close().await.unwrap();
        rethrow(outcome.unwrap());
    }

    fn rethrow(outcome: Result<(), tokio::task::JoinError>) {
        if let Err(e) = outcome {
            match e.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                Err(e) => panic!("test body did not finish: {e}"),
            }
        }
    }
}

const HOUR: Millis = 3_600_000;

/// A raw text column of one row, read past the store's API.
async fn raw_text(store: &Store, sql: &str, id: &str) -> Option<String> {
    sqlx::query(sql)
        .bind(id)
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

/// Runs a one-parameter statement past the store's API (to age timestamps).
async fn run_sql(store: &Store, sql: &str, id: &str) {
    sqlx::query(sql)
        .bind(id)
        .execute(&store.pool)
        .await
        .unwrap();
}

/// A new pending session lasting an hour.
async fn session(store: &Store, system_id: &str, node: Option<&str>) -> Session {
    store.create_session(system_id, node, HOUR).await.unwrap()
}

async fn system(store: &Store, name: &str) -> (System, SystemCredentials) {
    store.create_system(name).await.unwrap()
}

on_both_backends!(
    system_credentials_verify,
    system_secret_is_stored_only_as_salted_hash,
    system_names_are_validated_and_unique,
    find_system_by_name_key_or_id,
    delete_system_cascades_sessions,
    creating_a_session_replaces_the_open_one,
    sessions_of_different_nodes_coexist,
    activate_moves_pending_to_active_only,
    close_clears_users_and_only_touches_open_sessions,
    expire_due_sessions_returns_exactly_the_expired,
    extend_enforces_per_call_and_total_limits,
    diagnostics_are_rate_limited_to_one_per_30s,
    services_round_trip,
    users_are_encrypted_at_rest_and_round_trip,
    users_for_system_returns_newest_open_report,
    reopen_blocks_are_cleared_by_enable,
    operator_passwords_verify,
    tokens_authenticate_enabled_operators_only,
    audit_list_filters_newest_first,
    list_sessions_filters_by_status_and_system,
    open_sessions_lists_every_open_one,
    concurrent_creates_leave_one_open_session,
    cached_sessions_follow_every_change_made_here,
    cached_answers_follow_other_processes_within_the_ttl,
);

async fn system_credentials_verify(store: Store) {
    let (sys, creds) = system(&store, "fw1").await;
    assert!(sys.support_enabled);
    assert_eq!(creds.key, sys.system_key);
    let secret = creds.secret.expose();
    match store.verify_system(&creds.key, secret).await.unwrap() {
        AuthOutcome::Valid(s) => assert_eq!(s.id, sys.id),
        _ => panic!("right secret must be valid"),
    }
    let last = if secret.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &secret[..secret.len() - 1]);
    assert!(matches!(
        store.verify_system(&creds.key, &wrong).await.unwrap(),
        AuthOutcome::Invalid
    ));
    assert!(matches!(
        store
            .verify_system("TTH-0000-0000-0000-0000-0000-0000", secret)
            .await
            .unwrap(),
        AuthOutcome::Invalid
    ));
    store.set_system_enabled(&sys.id, false).await.unwrap();
    match store.verify_system(&creds.key, secret).await.unwrap() {
        AuthOutcome::Disabled(s) => assert!(!s.support_enabled),
        _ => panic!("disabled system with right secret must be Disabled"),
    }
    // A wrong secret on a disabled system says nothing about the system.
    assert!(matches!(
        store.verify_system(&creds.key, &wrong).await.unwrap(),
        AuthOutcome::Invalid
    ));
    assert!(matches!(
        store.set_system_enabled("no-such-id", true).await,
        Err(StoreError::NotFound { what: "system", .. })
    ));
}

async fn system_secret_is_stored_only_as_salted_hash(store: Store) {
    let (sys, creds) = system(&store, "fw1").await;
    let row = sqlx::query("SELECT * FROM systems WHERE id = $1")
        .bind(&sys.id)
        .fetch_one(&store.pool)
        .await
        .unwrap();
    let secret = creds.secret.expose();
    let (_, private) = secret.split_once('.').unwrap();
    for i in 0..row.len() {
        if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
            assert!(!text.contains(private), "column {i} holds the secret");
        }
    }
    let stored = raw_text(
        &store,
        "SELECT secret_hash FROM systems WHERE id = $1",
        &sys.id,
    )
    .await
    .unwrap();
    let (salt, hash) = stored.split_once(':').unwrap();
    assert_eq!((salt.len(), hash.len()), (32, 64));
    assert!(crypto::verify_system_secret(&stored, secret));
}

async fn system_names_are_validated_and_unique(store: Store) {
    system(&store, "fw-1.lab_a").await;
    match store.create_system("fw-1.lab_a").await {
        Err(StoreError::Conflict(msg)) => assert_eq!(msg, "system \"fw-1.lab_a\" already exists"),
        other => panic!("expected conflict, got {:?}", other.map(|_| ())),
    }
    for bad in ["", "has space", "slash/", &"x".repeat(65)] {
        assert!(
            matches!(store.create_system(bad).await, Err(StoreError::Invalid(_))),
            "{bad:?} accepted"
        );
    }
    store.create_system(&"x".repeat(64)).await.unwrap();
    assert_eq!(store.list_systems().await.unwrap().len(), 2);
}

async fn find_system_by_name_key_or_id(store: Store) {
    let (sys, creds) = system(&store, "fw1").await;
    system(&store, "fw2").await;
    for needle in [sys.id.as_str(), creds.key.as_str(), "fw1"] {
        assert_eq!(store.find_system(needle).await.unwrap().unwrap().id, sys.id);
    }
    assert!(store.find_system("nope").await.unwrap().is_none());
    let names: Vec<String> = store
        .list_systems()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["fw1", "fw2"]);
}

async fn delete_system_cascades_sessions(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let session = session(&store, &sys.id, None).await;
    store.block_reopen(&sys.id, None).await.unwrap();
    store.delete_system(&sys.id).await.unwrap();
    assert!(store.get_session(&session.id).await.unwrap().is_none());
    assert!(!store.is_reopen_blocked(&sys.id, None).await.unwrap());
    assert!(store.find_system("fw1").await.unwrap().is_none());
    assert!(matches!(
        store.delete_system(&sys.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn creating_a_session_replaces_the_open_one(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let first = session(&store, &sys.id, None).await;
    assert_eq!(first.status, SessionStatus::Pending);
    assert_eq!(first.system_name, "fw1");
    assert_eq!(first.node_id, None);
    assert!(first.expires_at - first.started_at == HOUR);
    store.activate_session(&first.id).await.unwrap();
    store
        .save_users(&first.id, b"{\"users\":{}}")
        .await
        .unwrap();
    let second = session(&store, &sys.id, None).await;
    assert_ne!(first.id, second.id);
    let first = store.get_session(&first.id).await.unwrap().unwrap();
    assert_eq!(first.status, SessionStatus::Closed);
    assert_eq!(first.closed_by, Some(CloseReason::Replaced));
    assert!(first.closed_at.is_some());
    assert!(!first.has_users);
    let open = store
        .open_session_for(&sys.id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open.id, second.id);
    assert!(matches!(
        store.create_session("no-such-system", None, HOUR).await,
        Err(StoreError::NotFound { what: "system", .. })
    ));
}

async fn sessions_of_different_nodes_coexist(store: Store) {
    let (sys, _) = system(&store, "cluster").await;
    let one = session(&store, &sys.id, Some("1")).await;
    let two = session(&store, &sys.id, Some("2")).await;
    let single = session(&store, &sys.id, None).await;
    assert_eq!(one.node_id.as_deref(), Some("1"));
    for (node, id) in [
        (Some("1"), &one.id),
        (Some("2"), &two.id),
        (None, &single.id),
    ] {
        assert_eq!(
            &store
                .open_session_for(&sys.id, node)
                .await
                .unwrap()
                .unwrap()
                .id,
            id
        );
    }
    assert!(
        store
            .open_session_for(&sys.id, Some("3"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn activate_moves_pending_to_active_only(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let s = session(&store, &sys.id, None).await;
    store.activate_session(&s.id).await.unwrap();
    assert_eq!(
        store.get_session(&s.id).await.unwrap().unwrap().status,
        SessionStatus::Active
    );
    store.activate_session(&s.id).await.unwrap();
    assert!(
        store
            .close_session(&s.id, CloseReason::Operator)
            .await
            .unwrap()
    );
    assert!(matches!(
        store.activate_session(&s.id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.activate_session("missing").await,
        Err(StoreError::NotFound {
            what: "session",
            ..
        })
    ));
}

async fn close_clears_users_and_only_touches_open_sessions(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let s = session(&store, &sys.id, None).await;
    store.save_users(&s.id, b"{\"pw\":\"x\"}").await.unwrap();
    assert!(store.get_session(&s.id).await.unwrap().unwrap().has_users);
    assert!(
        store
            .close_session(&s.id, CloseReason::Operator)
            .await
            .unwrap()
    );
    let closed = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(closed.status, SessionStatus::Closed);
    assert_eq!(closed.closed_by, Some(CloseReason::Operator));
    assert!(!closed.has_users);
    assert_eq!(store.users_for_session(&s.id).await.unwrap(), None);
    assert_eq!(
        raw_text(
            &store,
            "SELECT users_enc FROM sessions WHERE id = $1",
            &s.id
        )
        .await,
        None
    );
    // Already closed: nothing changes, the first reason stays.
    assert!(
        !store
            .close_session(&s.id, CloseReason::Timeout)
            .await
            .unwrap()
    );
    let again = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(again.closed_by, Some(CloseReason::Operator));
    // Users cannot be stored on a closed session.
    assert!(matches!(
        store.save_users(&s.id, b"{}").await,
        Err(StoreError::Conflict(_))
    ));
    // A timeout close ends as expired.
    let t = session(&store, &sys.id, None).await;
    assert!(
        store
            .close_session(&t.id, CloseReason::Timeout)
            .await
            .unwrap()
    );
    let t = store.get_session(&t.id).await.unwrap().unwrap();
    assert_eq!(t.status, SessionStatus::Expired);
    assert_eq!(t.closed_by, Some(CloseReason::Timeout));
}

async fn expire_due_sessions_returns_exactly_the_expired(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let short = store
        .create_session(&sys.id, Some("1"), 1_000)
        .await
        .unwrap();
    let short2 = store
        .create_session(&sys.id, Some("2"), 2_000)
        .await
        .unwrap();
    let long = session(&store, &sys.id, Some("3")).await;
    let closed = store
        .create_session(&sys.id, Some("4"), 1_000)
        .await
        .unwrap();
    store
        .close_session(&closed.id, CloseReason::Operator)
        .await
        .unwrap();
    store.save_users(&short.id, b"{}").await.unwrap();
    let now = Store::now() + 60_000;
    let mut expired = store.expire_due_sessions(now).await.unwrap();
    expired.sort();
    let mut want = vec![short.id.clone(), short2.id.clone()];
    want.sort();
    assert_eq!(expired, want);
    let s = store.get_session(&short.id).await.unwrap().unwrap();
    assert_eq!(
        (s.status, s.closed_by, s.closed_at, s.has_users),
        (
            SessionStatus::Expired,
            Some(CloseReason::Timeout),
            Some(now),
            false
        )
    );
    assert_eq!(
        store.get_session(&long.id).await.unwrap().unwrap().status,
        SessionStatus::Pending
    );
    assert_eq!(
        store
            .get_session(&closed.id)
            .await
            .unwrap()
            .unwrap()
            .closed_by,
        Some(CloseReason::Operator)
    );
    assert!(store.expire_due_sessions(now).await.unwrap().is_empty());
}

async fn extend_enforces_per_call_and_total_limits(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let s = store
        .create_session(&sys.id, None, 24 * HOUR)
        .await
        .unwrap();
    for bad in [0, -1, 169] {
        match store.extend_session(&s.id, bad).await {
            Err(StoreError::Invalid(msg)) => assert!(msg.contains("1 to 168 hours"), "{msg}"),
            other => panic!("{bad} h accepted: {:?}", other.map(|_| ())),
        }
    }
    let extended = store.extend_session(&s.id, 168).await.unwrap();
    assert_eq!(extended.expires_at, s.expires_at + 168 * HOUR);
    // 24 + 3 * 168 = 528 h; another 168 would make 696; then 25 more is 721 > 720.
    store.extend_session(&s.id, 168).await.unwrap();
    store.extend_session(&s.id, 168).await.unwrap();
    let at_696 = store.extend_session(&s.id, 168).await.unwrap();
    assert_eq!(at_696.expires_at - at_696.started_at, 696 * HOUR);
    match store.extend_session(&s.id, 25).await {
        Err(StoreError::Invalid(msg)) => assert!(msg.contains("720 hours"), "{msg}"),
        other => panic!("total over 720 h accepted: {:?}", other.map(|_| ())),
    }
    let at_720 = store.extend_session(&s.id, 24).await.unwrap();
    assert_eq!(at_720.expires_at - at_720.started_at, 720 * HOUR);
    store
        .close_session(&s.id, CloseReason::Operator)
        .await
        .unwrap();
    let other = session(&store, &sys.id, None).await;
    store
        .close_session(&other.id, CloseReason::Operator)
        .await
        .unwrap();
    match store.extend_session(&other.id, 1).await {
        Err(StoreError::Invalid(msg)) => assert!(msg.contains("closed"), "{msg}"),
        other => panic!("closed session extended: {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        store.extend_session("missing", 1).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn diagnostics_are_rate_limited_to_one_per_30s(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let s = session(&store, &sys.id, None).await;
    let first = json!({"overall_status": "ok", "plugins": []});
    let second = json!({"overall_status": "critical", "plugins": []});
    assert!(store.save_diagnostics(&s.id, &first).await.unwrap());
    assert!(!store.save_diagnostics(&s.id, &second).await.unwrap());
    let kept = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(kept.diagnostics, Some(first));
    // Age the stored report past the interval: the next one is accepted.
    run_sql(
        &store,
        "UPDATE sessions SET diagnostics_at = diagnostics_at - 30001 WHERE id = $1",
        &s.id,
    )
    .await;
    assert!(store.save_diagnostics(&s.id, &second).await.unwrap());
    let kept = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(kept.diagnostics, Some(second));
    assert!(kept.diagnostics_at.is_some());
    assert!(matches!(
        store.save_diagnostics("missing", &json!({})).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn services_round_trip(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let s = session(&store, &sys.id, None).await;
    assert_eq!(s.services, None);
    let manifest = json!({"version": 1, "services": {"ui": {"target": "127.0.0.1:443",
        "host": "", "tls": true, "label": "UI"}}});
    store.save_services(&s.id, &manifest).await.unwrap();
    let got = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(got.services, Some(manifest));
    assert!(got.services_at.is_some());
    store.save_services(&s.id, &json!({})).await.unwrap();
    assert_eq!(
        store.get_session(&s.id).await.unwrap().unwrap().services,
        Some(json!({}))
    );
    assert!(matches!(
        store.save_services("missing", &json!({})).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn users_are_encrypted_at_rest_and_round_trip(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let s = session(&store, &sys.id, None).await;
    assert_eq!(store.users_for_session(&s.id).await.unwrap(), None);
    let report =
        br#"{"users":{"cluster_admin":{"username":"support","password":"Hunter2-Secret"}}}"#;
    store.save_users(&s.id, report).await.unwrap();
    let raw = raw_text(
        &store,
        "SELECT users_enc FROM sessions WHERE id = $1",
        &s.id,
    )
    .await
    .unwrap();
    assert!(!raw.contains("Hunter2"), "plaintext at rest: {raw}");
    assert!(!raw.contains("support"));
    assert_eq!(
        store.users_for_session(&s.id).await.unwrap().unwrap(),
        report
    );
    // A later report replaces the first (reference B-20).
    let newer = br#"{"users":{"module_domains":{"m1":"d1"}}}"#;
    store.save_users(&s.id, newer).await.unwrap();
    assert_eq!(
        store.users_for_session(&s.id).await.unwrap().unwrap(),
        newer
    );
    // Moving a ciphertext to another session's row does not decrypt (session id is the AAD).
    let other = session(&store, &sys.id, Some("2")).await;
    let raw = raw_text(
        &store,
        "SELECT users_enc FROM sessions WHERE id = $1",
        &s.id,
    )
    .await
    .unwrap();
    sqlx::query("UPDATE sessions SET users_enc = $2 WHERE id = $1")
        .bind(&other.id)
        .bind(raw)
        .execute(&store.pool)
        .await
        .unwrap();
    assert!(matches!(
        store.users_for_session(&other.id).await,
        Err(StoreError::Crypto(CryptoError::Decrypt))
    ));
    // A store with another data key cannot read them either.
    let foreign = Store {
        key: Arc::new(DataKey::from_hex(&"11".repeat(32)).unwrap()),
        ..store.clone()
    };
    assert!(matches!(
        foreign.users_for_session(&s.id).await,
        Err(StoreError::Crypto(CryptoError::Decrypt))
    ));
}

async fn users_for_system_returns_newest_open_report(store: Store) {
    let (sys, _) = system(&store, "cluster").await;
    assert_eq!(store.users_for_system(&sys.id).await.unwrap(), None);
    let leader = session(&store, &sys.id, Some("1")).await;
    let worker = session(&store, &sys.id, Some("2")).await;
    store.save_users(&leader.id, b"old").await.unwrap();
    store.save_users(&worker.id, b"new").await.unwrap();
    run_sql(
        &store,
        "UPDATE sessions SET users_at = users_at - 1000 WHERE id = $1",
        &leader.id,
    )
    .await;
    assert_eq!(
        store.users_for_system(&sys.id).await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    store
        .close_session(&worker.id, CloseReason::Disconnect)
        .await
        .unwrap();
    assert_eq!(
        store.users_for_system(&sys.id).await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    store
        .close_session(&leader.id, CloseReason::Operator)
        .await
        .unwrap();
    assert_eq!(store.users_for_system(&sys.id).await.unwrap(), None);
}

async fn reopen_blocks_are_cleared_by_enable(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let (other, _) = system(&store, "fw2").await;
    store.block_reopen(&sys.id, None).await.unwrap();
    store.block_reopen(&sys.id, Some("2")).await.unwrap();
    store.block_reopen(&sys.id, None).await.unwrap();
    store.block_reopen(&other.id, None).await.unwrap();
    assert!(store.is_reopen_blocked(&sys.id, None).await.unwrap());
    assert!(store.is_reopen_blocked(&sys.id, Some("2")).await.unwrap());
    assert!(!store.is_reopen_blocked(&sys.id, Some("3")).await.unwrap());
    store.set_system_enabled(&sys.id, false).await.unwrap();
    assert!(store.is_reopen_blocked(&sys.id, None).await.unwrap());
    store.set_system_enabled(&sys.id, true).await.unwrap();
    assert!(!store.is_reopen_blocked(&sys.id, None).await.unwrap());
    assert!(!store.is_reopen_blocked(&sys.id, Some("2")).await.unwrap());
    assert!(store.is_reopen_blocked(&other.id, None).await.unwrap());
    assert!(store.unblock_reopen(&other.id, None).await.unwrap());
    assert!(!store.is_reopen_blocked(&other.id, None).await.unwrap());
    assert!(matches!(
        store.block_reopen("missing", None).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn operator_passwords_verify(store: Store) {
    let (op, password) = store.create_operator("alice", Role::Admin).await.unwrap();
    assert_eq!(op.role, Role::Admin);
    assert_eq!(password.expose().len(), crypto::PASSWORD_LEN);
    let stored = raw_text(
        &store,
        "SELECT password_hash FROM operators WHERE id = $1",
        &op.id,
    )
    .await
    .unwrap();
    assert!(stored.starts_with("$argon2id$"));
    assert!(!stored.contains(password.expose()));
    let ok = store
        .verify_operator_password("alice", password.expose())
        .await
        .unwrap();
    assert_eq!(ok.map(|o| o.id), Some(op.id.clone()));
    assert!(
        store
            .verify_operator_password("alice", "wrong")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .verify_operator_password("nobody", password.expose())
            .await
            .unwrap()
            .is_none()
    );
    store.set_operator_disabled(&op.id, true).await.unwrap();
    assert!(
        store
            .verify_operator_password("alice", password.expose())
            .await
            .unwrap()
            .is_none()
    );
    match store.create_operator("alice", Role::Viewer).await {
        Err(StoreError::Conflict(msg)) => assert_eq!(msg, "operator \"alice\" already exists"),
        other => panic!("duplicate accepted: {:?}", other.map(|_| ())),
    }
    assert_eq!(
        store.find_operator(&op.id).await.unwrap().unwrap().name,
        "alice"
    );
    assert!(
        store
            .find_operator("alice")
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
}

async fn tokens_authenticate_enabled_operators_only(store: Store) {
    let (op, _) = store.create_operator("bob", Role::Operator).await.unwrap();
    let token = store.create_token("bob").await.unwrap();
    assert!(token.expose().starts_with("tta_"));
    let stored = raw_text(
        &store,
        "SELECT token_hash FROM api_tokens WHERE operator_id = $1",
        &op.id,
    )
    .await
    .unwrap();
    assert_eq!(stored, crypto::hash_token(token.expose()));
    let found = store
        .operator_for_token(token.expose())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, op.id);
    let used = raw_text(
        &store,
        "SELECT CAST(last_used_at AS TEXT) FROM api_tokens WHERE operator_id = $1",
        &op.id,
    )
    .await;
    assert!(used.is_some());
    assert!(
        store
            .operator_for_token("tta_unknown")
            .await
            .unwrap()
            .is_none()
    );
    store.set_operator_disabled(&op.id, true).await.unwrap();
    assert!(
        store
            .operator_for_token(token.expose())
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.create_token("bob").await,
        Err(StoreError::Conflict(_))
    ));
    store.set_operator_disabled(&op.id, false).await.unwrap();
    assert!(
        store
            .operator_for_token(token.expose())
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        store.create_token("nobody").await,
        Err(StoreError::NotFound {
            what: "operator",
            ..
        })
    ));
}

async fn audit_list_filters_newest_first(store: Store) {
    for (actor, action, session) in [
        ("cli", "system.create", None),
        ("alice", "proxy.open", Some("s1")),
        ("alice", "users.reveal", Some("s1")),
        ("bob", "proxy.open", Some("s2")),
    ] {
        store
            .audit(AuditEntry {
                actor: actor.into(),
                action: action.into(),
                session_id: session.map(str::to_owned),
                service: Some("ui".into()),
                remote_addr: Some("192.0.2.1".into()),
                detail: Some(json!({"n": 1})),
                ..AuditEntry::default()
            })
            .await
            .unwrap();
    }
    let all = store.list_audit(&AuditFilter::default()).await.unwrap();
    let actions: Vec<&str> = all.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["proxy.open", "users.reveal", "proxy.open", "system.create"]
    );
    assert_eq!(all[0].detail, Some(json!({"n": 1})));
    assert_eq!(all[0].remote_addr.as_deref(), Some("192.0.2.1"));
    let by_session = AuditFilter {
        session_id: Some("s1".into()),
        ..AuditFilter::default()
    };
    let got = store.list_audit(&by_session).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got[0].id > got[1].id);
    let by_action = AuditFilter {
        actor: Some("alice".into()),
        action: Some("proxy.open".into()),
        ..AuditFilter::default()
    };
    assert_eq!(store.list_audit(&by_action).await.unwrap().len(), 1);
    let limited = AuditFilter {
        limit: Some(1),
        ..AuditFilter::default()
    };
    let got = store.list_audit(&limited).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].actor, "bob");
}

async fn list_sessions_filters_by_status_and_system(store: Store) {
    let (a, _) = system(&store, "alpha").await;
    let (b, _) = system(&store, "beta").await;
    let a1 = session(&store, &a.id, Some("1")).await;
    let a2 = session(&store, &a.id, Some("2")).await;
    let b1 = session(&store, &b.id, None).await;
    store.activate_session(&a2.id).await.unwrap();
    store
        .close_session(&b1.id, CloseReason::Operator)
        .await
        .unwrap();
    // Distinct creation times so "newest first" is observable.
    for (id, at) in [(&a1.id, 1_000), (&a2.id, 2_000), (&b1.id, 3_000)] {
        sqlx::query("UPDATE sessions SET created_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&store.pool)
            .await
            .unwrap();
    }
    let ids = |v: Vec<Session>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    let all = store
        .list_sessions(&SessionFilter::default())
        .await
        .unwrap();
    assert_eq!(ids(all), [b1.id.clone(), a2.id.clone(), a1.id.clone()]);
    let by_name = SessionFilter {
        system: Some("alpha".into()),
        ..SessionFilter::default()
    };
    assert_eq!(
        ids(store.list_sessions(&by_name).await.unwrap()),
        [a2.id.clone(), a1.id.clone()]
    );
    let by_id = SessionFilter {
        system: Some(b.id.clone()),
        ..SessionFilter::default()
    };
    assert_eq!(
        ids(store.list_sessions(&by_id).await.unwrap()),
        [b1.id.as_str()]
    );
    let active = SessionFilter {
        status: Some(SessionStatus::Active),
        ..SessionFilter::default()
    };
    assert_eq!(
        ids(store.list_sessions(&active).await.unwrap()),
        [a2.id.as_str()]
    );
    let pending_beta = SessionFilter {
        status: Some(SessionStatus::Pending),
        system: Some("beta".into()),
    };
    assert!(store.list_sessions(&pending_beta).await.unwrap().is_empty());
    let listed = store.list_sessions(&by_name).await.unwrap();
    assert!(listed.iter().all(|s| s.system_name == "alpha"));
}

async fn open_sessions_lists_every_open_one(store: Store) {
    let (a, _) = system(&store, "alpha").await;
    let (b, _) = system(&store, "beta").await;
    let a1 = session(&store, &a.id, None).await;
    let b1 = session(&store, &b.id, None).await;
    let b2 = session(&store, &b.id, Some("2")).await;
    store.activate_session(&b1.id).await.unwrap();
    store
        .close_session(&b2.id, CloseReason::Disconnect)
        .await
        .unwrap();
    let mut open: Vec<String> = store
        .open_sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    open.sort();
    let mut want = vec![a1.id, b1.id];
    want.sort();
    assert_eq!(open, want);
}

async fn concurrent_creates_leave_one_open_session(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, id) = (store.clone(), sys.id.clone());
        tasks.push(tokio::spawn(async move {
            store.create_session(&id, Some("1"), HOUR).await
        }));
    }
    let mut created = Vec::new();
    for task in tasks {
        created.push(task.await.unwrap().unwrap().id);
    }
    let open = store.open_sessions().await.unwrap();
    assert_eq!(open.len(), 1);
    assert!(created.contains(&open[0].id));
    let all = store
        .list_sessions(&SessionFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 8);
    assert_eq!(
        all.iter()
            .filter(|s| s.closed_by == Some(CloseReason::Replaced))
            .count(),
        7
    );
}

#[test]
fn enums_parse_their_names_and_name_bad_values() {
    for role in [Role::Admin, Role::Operator, Role::Viewer] {
        assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
    }
    let err = "root".parse::<Role>().unwrap_err().to_string();
    assert!(err.contains("\"root\""), "{err}");
    for status in [
        SessionStatus::Pending,
        SessionStatus::Active,
        SessionStatus::Closed,
        SessionStatus::Expired,
    ] {
        assert_eq!(status.as_str().parse::<SessionStatus>().unwrap(), status);
    }
    assert_eq!(
        serde_json::to_value(CloseReason::SystemDisabled).unwrap(),
        json!("system_disabled")
    );
    assert_eq!(
        "relay_restart".parse::<CloseReason>().unwrap(),
        CloseReason::RelayRestart
    );
}

#[test]
fn urls_in_messages_hide_passwords() {
    assert_eq!(
        redact_url("postgres://u:pw@h:5432/db?sslmode=require&password=x"),
        "postgres://u:***@h:5432/db?sslmode=require&password=***"
    );
    assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(redact_url("sqlite://./tether.db"), "sqlite://./tether.db");
}

#[tokio::test]
async fn memory_and_file_sqlite_urls_work() {
    let store = Store::connect("sqlite::memory:", harness::test_key())
        .await
        .unwrap();
    // Every pooled use sees the same in-memory database.
    let (sys, _) = store.create_system("mem").await.unwrap();
    let (a, b) = tokio::join!(store.find_system("mem"), store.list_systems());
    assert_eq!(a.unwrap().unwrap().id, sys.id);
    assert_eq!(b.unwrap().len(), 1);

    // `sqlite://./relative.db` form: a path relative to the working directory, created on
    // first use.
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count() - 1);
    let relative = format!("./{up}{}", dir.path().join("tether.db").display());
    let url = format!("sqlite://{}", relative.replace("//", "/"));
    let store = Store::connect(&url, harness::test_key()).await.unwrap();
    store.create_system("file").await.unwrap();
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query("PRAGMA foreign_keys")
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(fk, 1);
    store.pool.close().await;
    // Reopening migrates nothing twice and keeps the data.
    let store = Store::connect(&url, harness::test_key()).await.unwrap();
    assert!(store.find_system("file").await.unwrap().is_some());
}

#[tokio::test]
async fn connect_errors_name_the_database_without_password() {
    let err = Store::connect("mysql://u:pw@h/db", harness::test_key())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("mysql://u:***@h/db"), "{err}");
    let err = Store::connect("postgres://u:topsecret@127.0.0.1:1/db", harness::test_key())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("postgres://u:***@127.0.0.1:1/db"), "{text}");
    assert!(!text.contains("topsecret"));
}

/// The status operator requests see for session `id` now.
async fn brief_status(store: &Store, id: &str) -> Option<SessionStatus> {
    store.session_brief(id).await.unwrap().map(|b| b.status)
}

async fn cached_sessions_follow_every_change_made_here(store: Store) {
    let (sys, _) = system(&store, "fw1").await;
    let s = session(&store, &sys.id, None).await;
    let brief = store.session_brief(&s.id).await.unwrap().unwrap();
    assert_eq!(
        (
            brief.id.as_str(),
            brief.system_id.as_str(),
            brief.system_name.as_str()
        ),
        (s.id.as_str(), sys.id.as_str(), "fw1")
    );
    assert_eq!(brief.status, SessionStatus::Pending);
    store.activate_session(&s.id).await.unwrap();
    assert_eq!(
        brief_status(&store, &s.id).await,
        Some(SessionStatus::Active)
    );
    store.extend_session(&s.id, 1).await.unwrap();
    assert_eq!(
        brief_status(&store, &s.id).await,
        Some(SessionStatus::Active)
    );
    // closed by an operator
    store
        .close_session(&s.id, CloseReason::Operator)
        .await
        .unwrap();
    assert_eq!(
        brief_status(&store, &s.id).await,
        Some(SessionStatus::Closed)
    );
    // replaced by a new connection of the same system
    let old = session(&store, &sys.id, None).await;
    assert_eq!(
        brief_status(&store, &old.id).await,
        Some(SessionStatus::Pending)
    );
    let new = session(&store, &sys.id, None).await;
    assert_eq!(
        brief_status(&store, &old.id).await,
        Some(SessionStatus::Closed)
    );
    // expired
    assert_eq!(
        brief_status(&store, &new.id).await,
        Some(SessionStatus::Pending)
    );
    store
        .expire_due_sessions(Store::now() + 2 * HOUR)
        .await
        .unwrap();
    assert_eq!(
        brief_status(&store, &new.id).await,
        Some(SessionStatus::Expired)
    );
    // the system deleted
    let last = session(&store, &sys.id, None).await;
    assert!(brief_status(&store, &last.id).await.is_some());
    store.delete_system(&sys.id).await.unwrap();
    assert_eq!(brief_status(&store, &last.id).await, None);
}

/// Poll `check` until it holds, failing after a few TTLs.
async fn within_ttl<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + 5 * cache::TTL;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} not seen within the TTL");
        tokio::time::sleep(cache::TTL / 20).await;
    }
}

async fn cached_answers_follow_other_processes_within_the_ttl(store: Store) {
    // `other` shares the database but not the cache, like `tether-relay operator disable`.
    let other = Store {
        cache: Arc::new(cache::Caches::new(cache::TTL)),
        ..store.clone()
    };
    let (op, _) = store.create_operator("bob", Role::Operator).await.unwrap();
    let token = store.create_token("bob").await.unwrap();
    let (sys, _) = system(&store, "fw1").await;
    let s = session(&store, &sys.id, None).await;
    assert!(
        store
            .operator_for_token(token.expose())
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.session_brief(&s.id).await.unwrap().is_some());

    other.set_operator_disabled(&op.id, true).await.unwrap();
    other
        .close_session(&s.id, CloseReason::Operator)
        .await
        .unwrap();
    within_ttl("the disabled operator", || async {
        store
            .operator_for_token(token.expose())
            .await
            .unwrap()
            .is_none()
    })
    .await;
    within_ttl("the closed session", || async {
        brief_status(&store, &s.id).await == Some(SessionStatus::Closed)
    })
    .await;
}
