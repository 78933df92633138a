//! Each provisioner's exact helper calls for creation and deletion, and the state file.

use std::os::unix::fs::PermissionsExt as _;

use agent_core::agent::users::{Account, Ns8Role, Platform, SupportUsers, password_hash, username};
use serde_json::json;

use crate::shims::Shims;

const KEY: &str = "NETH-TEST-KEY";
const USER: &str = "support-neth-test-key";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn ns8_leader_creates_the_admin_and_domain_users_and_deletes_them_in_reverse() {
    let shims = Shims::new();
    let users = SupportUsers::new(shims.config(Platform::Ns8(Ns8Role::Leader)));
    assert_eq!(username(KEY), USER);

    let made = users.provision(KEY).await;
    assert_eq!(
        shims.steps(),
        strings(&[
            "runagent cluster/remove-user",
            "runagent cluster/add-user",
            "runagent cluster/list-user-domains",
            "runagent module/samba1/remove-user",
            "runagent module/samba1/add-user",
            "runagent module/openldap1/remove-user",
            "runagent module/openldap1/add-user",
        ])
    );
    assert_eq!(made.platform, "ns8");
    assert_eq!(made.session_id, KEY);
    assert!(made.errors.is_empty(), "{:?}", made.errors);
    let admin = made.cluster_admin.clone().expect("a cluster admin");
    assert_eq!(admin.username, USER);
    let domains: Vec<_> = made
        .domain_users
        .iter()
        .map(|d| (d.domain.as_str(), d.module.as_str(), d.username.as_str()))
        .collect();
    assert_eq!(
        domains,
        [
            ("ad.example.org", "samba1", USER),
            ("dir.example.org", "openldap1", USER)
        ]
    );
    let calls = shims.calls();
    assert_eq!(calls[0].data, json!({ "user": USER }));
    assert_eq!(
        calls[1].data,
        json!({
            "user": USER,
            "password_hash": password_hash(&admin.password),
            "set": { "display_name": "Support Session" },
            "grant": [{ "role": "owner", "on": "*" }],
        })
    );
    assert_eq!(calls[2].data, json!({}));
    assert_eq!(calls[3].data, json!({ "user": USER }));
    for (call, user) in [
        (&calls[4], &made.domain_users[0]),
        (&calls[6], &made.domain_users[1]),
    ] {
        assert_eq!(
            call.data,
            json!({
                "user": USER,
                "display_name": "Support Session",
                "password": user.password,
                "locked": false,
            })
        );
    }
    // Every object has its own password.
    assert_ne!(made.domain_users[0].password, made.domain_users[1].password);
    assert_ne!(admin.password, made.domain_users[0].password);
    // The script is the reference's, and no secret is on a command line.
    let argv = shims.argv_log();
    assert!(
        argv.contains(r#"endpoint="redis://cluster-leader""#),
        "{argv}"
    );
    assert!(
        argv.contains(r#"extra={"isNotificationHidden": True}"#),
        "{argv}"
    );
    for secret in [
        admin.password.clone(),
        password_hash(&admin.password),
        made.domain_users[0].password.clone(),
        made.domain_users[1].password.clone(),
    ] {
        assert!(!argv.contains(&secret), "a secret on a command line");
    }

    // The state file names every account, 0600, without passwords.
    let state_file = shims.state_file();
    let mode = std::fs::metadata(&state_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let state = std::fs::read_to_string(&state_file).unwrap();
    assert!(!state.contains(&admin.password));
    assert!(!state.contains(&made.domain_users[0].password));
    let recorded: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(recorded["entries"].as_array().unwrap().len(), 3);
    assert!(
        recorded["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["created"] == json!(true))
    );

    shims.clear();
    let done = users.cleanup().await.unwrap();
    assert_eq!(
        shims.steps(),
        strings(&[
            "runagent module/openldap1/remove-user",
            "runagent module/samba1/remove-user",
            "runagent cluster/remove-user",
        ])
    );
    assert!(
        shims
            .calls()
            .iter()
            .all(|c| c.data == json!({ "user": USER }))
    );
    assert_eq!(done.deleted.len(), 3);
    assert!(done.kept.is_empty());
    assert!(!state_file.exists());
}

#[tokio::test]
async fn a_failed_domain_user_is_reported_and_still_deleted() {
    let shims = Shims::new();
    shims.fail("module/samba1/add-user");
    let users = SupportUsers::new(shims.config(Platform::Ns8(Ns8Role::Leader)));
    let made = users.provision(KEY).await;
    assert!(made.cluster_admin.is_some());
    assert_eq!(made.domain_users.len(), 1);
    assert_eq!(made.domain_users[0].module, "openldap1");
    assert_eq!(made.errors.len(), 1, "{:?}", made.errors);
    assert_eq!(made.errors[0].id, "module/samba1/add-user");
    assert!(
        made.errors[0]
            .message
            .contains("task module/samba1/add-user failed"),
        "{}",
        made.errors[0].message
    );

    shims.clear();
    users.cleanup().await.unwrap();
    assert_eq!(
        shims.steps(),
        strings(&[
            "runagent module/openldap1/remove-user",
            "runagent module/samba1/remove-user",
            "runagent cluster/remove-user",
        ])
    );
    assert!(!shims.state_file().exists());
}

#[tokio::test]
async fn ns8_worker_creates_and_deletes_nothing() {
    let shims = Shims::new();
    let users = SupportUsers::new(shims.config(Platform::Ns8(Ns8Role::Worker)));
    let made = users.provision(KEY).await;
    assert_eq!(made.platform, "ns8");
    assert!(made.cluster_admin.is_none());
    assert!(made.domain_users.is_empty() && made.errors.is_empty());
    users.cleanup().await.unwrap();
    assert_eq!(shims.steps(), Vec::<String>::new());
    assert!(!shims.state_file().exists());
}

#[tokio::test]
async fn nethsecurity_creates_a_local_admin_and_deletes_it() {
    let shims = Shims::new();
    let users = SupportUsers::new(shims.config(Platform::NethSecurity));
    let made = users.provision(KEY).await;
    assert_eq!(
        shims.steps(),
        strings(&[
            "python3 remove_admin",
            "python3 delete_local_user",
            "python3 add_local_user",
            "python3 set_admin",
        ])
    );
    assert_eq!(made.platform, "nethsecurity");
    assert!(made.errors.is_empty(), "{:?}", made.errors);
    assert_eq!(made.local_users.len(), 1);
    let local = &made.local_users[0];
    assert_eq!(local.username, USER);
    let calls = shims.calls();
    assert_eq!(
        calls[2].data,
        json!({ "user": USER, "password": local.password })
    );
    for i in [0, 1, 3] {
        assert_eq!(calls[i].data, json!({ "user": USER }));
    }
    let argv = shims.argv_log();
    assert!(argv.contains("from nethsec import users"), "{argv}");
    assert!(argv.contains("from euci import EUci"), "{argv}");
    assert!(
        !argv.contains(&local.password),
        "a secret on a command line"
    );
    let mode = std::fs::metadata(shims.state_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    shims.clear();
    users.cleanup().await.unwrap();
    assert_eq!(
        shims.steps(),
        strings(&["python3 remove_admin", "python3 delete_local_user"])
    );
    assert!(!shims.state_file().exists());
}

#[tokio::test]
async fn nethsecurity_deletes_the_user_when_it_cannot_be_made_admin() {
    let shims = Shims::new();
    shims.fail("set_admin");
    let users = SupportUsers::new(shims.config(Platform::NethSecurity));
    let made = users.provision(KEY).await;
    assert_eq!(
        shims.steps(),
        strings(&[
            "python3 remove_admin",
            "python3 delete_local_user",
            "python3 add_local_user",
            "python3 set_admin",
            "python3 delete_local_user",
        ])
    );
    assert!(made.local_users.is_empty());
    assert_eq!(made.errors.len(), 1);
    assert_eq!(made.errors[0].id, "set_admin");
    assert!(!shims.state_file().exists(), "nothing is left to delete");
    shims.clear();
    users.cleanup().await.unwrap();
    assert_eq!(shims.steps(), Vec::<String>::new());
}

#[tokio::test]
async fn an_account_whose_deletion_cannot_run_stays_for_the_next_start() {
    let shims = Shims::new();
    let mut config = shims.config(Platform::Ns8(Ns8Role::Leader));
    config.command_timeout = std::time::Duration::from_millis(500);
    let users = SupportUsers::new(config.clone());
    let made = users.provision(KEY).await;
    assert_eq!(made.domain_users.len(), 2);

    shims.hang("module/samba1/remove-user");
    let done = users.cleanup().await.unwrap();
    assert_eq!(
        done.kept,
        [Account::Ns8DomainUser {
            module: "samba1".into(),
            domain: "ad.example.org".into(),
            user: USER.into(),
        }]
    );
    assert_eq!(done.deleted.len(), 2);
    let state = std::fs::read_to_string(shims.state_file()).unwrap();
    assert!(
        state.contains("samba1") && !state.contains("openldap1"),
        "{state}"
    );

    shims.heal("module/samba1/remove-user");
    shims.clear();
    let next = SupportUsers::new(config);
    let done = next.cleanup_orphans().await.unwrap();
    assert_eq!(done.deleted.len(), 1);
    assert_eq!(
        shims.steps(),
        strings(&["runagent module/samba1/remove-user"])
    );
    assert!(!shims.state_file().exists());
}
