//! Support users through the agent runtime against the fake relay: orphans cleaned before the
//! first dial, `USERS 1` on every connection, `USERS_FETCH 1` on a worker, deletion on close
//! code 4000 and on shutdown, streams served while provisioning hangs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use agent_core::agent::RunOutcome;
use agent_core::agent::users::{Ns8Role, Platform, SupportUsers};
use agent_core::document::UsersReport;
use tokio::io::AsyncWriteExt;

use crate::shims::{Shims, until};
use crate::support::{AgentRun, FakeRelay, RelayConn, config, read_all, service, within};

const USER: &str = "support-neth-test-key";

/// Reads the agent's streams until a `USERS 1` report arrives; answers `USERS_FETCH 1` with
/// `replies` in turn (`{}` once they run out) and counts them in `fetches`.
async fn users_report(
    conn: &mut RelayConn,
    replies: &mut VecDeque<Vec<u8>>,
    fetches: &mut usize,
) -> UsersReport {
    loop {
        let mut stream = conn.agent_stream().await;
        let body = within("an agent stream body", read_all(&mut stream)).await;
        if body == b"USERS_FETCH 1\n" {
            *fetches += 1;
            let reply = replies.pop_front().unwrap_or_else(|| b"{}\n".to_vec());
            stream.write_all(&reply).await.unwrap();
            stream.shutdown().await.unwrap();
            continue;
        }
        stream.shutdown().await.unwrap();
        if let Some(json) = body.strip_prefix(b"USERS 1\n") {
            assert!(json.ends_with(b"\n"));
            return UsersReport::parse_json(json).unwrap();
        }
    }
}

fn agent_with(relay: &FakeRelay, users: &Arc<SupportUsers>) -> AgentRun {
    let mut cfg = config(relay.url("ws", "127.0.0.1"));
    cfg.diagnostics.dir = None;
    cfg.support_users = Some(users.clone());
    AgentRun::start(cfg)
}

#[tokio::test]
async fn users_are_reported_on_every_connection_and_deleted_on_close_code_4000() {
    let shims = Shims::new();
    // An orphan of an earlier run, deleted before anything else.
    std::fs::create_dir_all(shims.state_file().parent().unwrap()).unwrap();
    std::fs::write(
        shims.state_file(),
        r#"{"version":1,"entries":[{"account":{"kind":"ns8_cluster_admin","user":"support-old"},"created":true}]}"#,
    )
    .unwrap();
    let users = Arc::new(SupportUsers::new(
        shims.config(Platform::Ns8(Ns8Role::Leader)),
    ));
    let mut relay = FakeRelay::start().await;
    let mut agent = agent_with(&relay, &users);

    let mut conn = relay.conn().await;
    let (mut replies, mut fetches) = (VecDeque::new(), 0);
    let first = users_report(&mut conn, &mut replies, &mut fetches).await;
    assert_eq!(fetches, 0, "a leader with credentials fetches nothing");
    assert_eq!(first.users.session_id, "NETH-TEST-KEY");
    assert_eq!(first.users.platform, "ns8");
    assert_eq!(
        first
            .users
            .cluster_admin
            .as_ref()
            .map(|c| c.username.as_str()),
        Some(USER)
    );
    assert_eq!(first.users.domain_users.len(), 2);
    let steps = shims.steps();
    assert_eq!(steps[0], "runagent cluster/remove-user");
    assert_eq!(
        shims.calls()[0].data,
        serde_json::json!({"user": "support-old"})
    );
    assert_eq!(steps.len(), 8, "{steps:?}");

    // A new connection gets the same report again; nothing is created twice.
    conn.mux.close(None);
    let mut conn = relay.conn().await;
    let again = users_report(&mut conn, &mut replies, &mut fetches).await;
    assert_eq!(again.users, first.users);
    assert_eq!(shims.steps(), steps);

    shims.clear();
    conn.mux.close(Some((4000, "session_closed")));
    assert_eq!(agent.outcome().await.unwrap(), RunOutcome::SessionClosed);
    assert_eq!(
        shims.steps(),
        [
            "runagent module/openldap1/remove-user",
            "runagent module/samba1/remove-user",
            "runagent cluster/remove-user",
        ]
    );
    assert!(!shims.state_file().exists());
}

#[tokio::test]
async fn a_worker_fetches_the_leaders_credentials() {
    let shims = Shims::new();
    let users = Arc::new(SupportUsers::new(
        shims.config(Platform::Ns8(Ns8Role::Worker)),
    ));
    let mut relay = FakeRelay::start().await;
    let agent = agent_with(&relay, &users);
    let mut conn = relay.conn().await;
    let stored = include_bytes!("../golden/users.json");
    let leader = UsersReport::parse_json(stored).unwrap();
    let mut replies = VecDeque::from([b"{}\n".to_vec(), stored.to_vec()]);
    let mut fetches = 0;
    let report = users_report(&mut conn, &mut replies, &mut fetches).await;
    assert_eq!(fetches, 2, "an empty answer is retried after the delay");
    assert_eq!(report.users.session_id, "NETH-TEST-KEY");
    assert_eq!(report.users.platform, "ns8");
    assert_eq!(report.users.cluster_admin, leader.users.cluster_admin);
    assert_eq!(report.users.domain_users, leader.users.domain_users);
    assert_eq!(report.users.local_users, leader.users.local_users);
    assert!(report.users.apps.is_empty(), "only credentials are merged");

    // The next connection re-sends the merged report without fetching again.
    conn.mux.close(None);
    let mut conn = relay.conn().await;
    let again = users_report(&mut conn, &mut replies, &mut fetches).await;
    assert_eq!(fetches, 2);
    assert_eq!(again.users, report.users);

    assert_eq!(agent.stop().await, RunOutcome::Shutdown);
    assert_eq!(
        shims.steps(),
        Vec::<String>::new(),
        "a worker runs no helper"
    );
}

#[tokio::test]
async fn a_worker_gives_up_after_the_fetch_attempts() {
    let shims = Shims::new();
    let users = Arc::new(SupportUsers::new(
        shims.config(Platform::Ns8(Ns8Role::Worker)),
    ));
    let mut relay = FakeRelay::start().await;
    let agent = agent_with(&relay, &users);
    let mut conn = relay.conn().await;
    let (mut replies, mut fetches) = (VecDeque::new(), 0);
    let report = users_report(&mut conn, &mut replies, &mut fetches).await;
    assert_eq!(fetches, 3);
    assert!(report.users.cluster_admin.is_none());
    agent.stop().await;
}

#[tokio::test]
async fn shutdown_deletes_the_nethsecurity_admin() {
    let shims = Shims::new();
    let users = Arc::new(SupportUsers::new(shims.config(Platform::NethSecurity)));
    let mut relay = FakeRelay::start().await;
    let agent = agent_with(&relay, &users);
    let mut conn = relay.conn().await;
    let (mut replies, mut fetches) = (VecDeque::new(), 0);
    let report = users_report(&mut conn, &mut replies, &mut fetches).await;
    assert_eq!(report.users.platform, "nethsecurity");
    assert_eq!(report.users.local_users.len(), 1);
    assert!(shims.state_file().exists());

    shims.clear();
    assert_eq!(agent.stop().await, RunOutcome::Shutdown);
    assert_eq!(
        shims.steps(),
        ["python3 remove_admin", "python3 delete_local_user"]
    );
    assert!(!shims.state_file().exists());
}

#[tokio::test]
async fn streams_are_served_while_provisioning_hangs_and_the_cleanup_is_bounded() {
    let shims = Shims::new();
    shims.hang("cluster/add-user");
    let mut config = shims.config(Platform::Ns8(Ns8Role::Leader));
    config.command_timeout = Duration::from_secs(60);
    config.cleanup_timeout = Duration::from_millis(300);
    let users = Arc::new(SupportUsers::new(config.clone()));
    let mut relay = FakeRelay::start().await;
    let mut cfg = crate::support::config(relay.url("ws", "127.0.0.1"));
    cfg.diagnostics.dir = None;
    cfg.support_users = Some(users.clone());
    let target = crate::support::half_close_target().await;
    cfg.static_services = [("web".to_owned(), service(target))].into();
    let agent = AgentRun::start(cfg);
    let mut conn = relay.conn().await;
    conn.manifest().await;
    until("the admin creation to hang", || {
        shims.dir.join("hung.pid").exists()
    })
    .await;
    let answer = conn.connect_roundtrip("web", b"ping").await;
    assert_eq!(answer, b"OK\ngot 4: ping");

    // The cleanup waits for the step under way no longer than its timeout; the account
    // announced before that step stays in the state file for the next start.
    assert_eq!(agent.stop().await, RunOutcome::Shutdown);
    assert_eq!(
        shims.steps(),
        ["runagent cluster/remove-user", "runagent cluster/add-user"]
    );
    let state = std::fs::read_to_string(shims.state_file()).unwrap();
    assert!(state.contains(USER), "{state}");

    shims.heal("cluster/add-user");
    shims.clear();
    let next = SupportUsers::new(config);
    next.cleanup_orphans().await.unwrap();
    assert_eq!(shims.steps(), ["runagent cluster/remove-user"]);
    assert!(!shims.state_file().exists());
}
