//! Admin commands, parsed from argv as `tether-relay` would and run on both backends.

use clap::Parser as _;
use serde_json::{Value, json};

use super::*;
use crate::store::tests::on_both_backends;
use crate::store::{AuditFilter, AuthOutcome, SessionStatus};

#[derive(Debug, clap::Parser)]
#[command(name = "tether-relay")]
struct Cli {
    #[command(subcommand)]
    command: AdminCommand,
}

/// Parses `args` like the command line and runs them; returns what was printed.
async fn exec(store: &Store, args: &[&str]) -> anyhow::Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("tether-relay").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    run(cli.command, store, &mut out).await?;
    Ok(String::from_utf8(out)?)
}

async fn exec_json(store: &Store, args: &[&str]) -> Value {
    let text = exec(store, args).await.unwrap();
    assert_eq!(
        text.lines().count(),
        1,
        "one JSON document per command: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

async fn cli_audit(store: &Store) -> Vec<crate::store::AuditRecord> {
    store
        .list_audit(&AuditFilter {
            actor: Some("cli".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
}

on_both_backends!(
    system_create_json_prints_working_credentials,
    system_create_text_shows_secret_once_with_agent_command,
    system_list_prints_a_json_array,
    system_disable_closes_sessions_and_enable_restores,
    system_delete_removes_the_system,
    unknown_targets_are_named_in_errors,
    operator_create_prints_a_working_password,
    operator_disable_and_enable,
    token_create_prints_a_working_token,
);

async fn system_create_json_prints_working_credentials(store: Store) {
    let doc = exec_json(&store, &["system", "create", "fw1", "--json"]).await;
    let key = doc["key"].as_str().unwrap();
    let secret = doc["secret"].as_str().unwrap();
    assert_eq!(doc["name"], "fw1");
    assert!(matches!(
        store.verify_system(key, secret).await.unwrap(),
        AuthOutcome::Valid(s) if s.name == "fw1"
    ));
    let audit = cli_audit(&store).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "system.create");
    assert_eq!(audit[0].system_id.as_deref(), doc["id"].as_str());
    let detail = audit[0].detail.as_ref().unwrap().to_string();
    assert!(!detail.contains(secret), "secret in audit: {detail}");
}

async fn system_create_text_shows_secret_once_with_agent_command(store: Store) {
    let text = exec(&store, &["system", "create", "fw1"]).await.unwrap();
    let system = store.find_system("fw1").await.unwrap().unwrap();
    assert!(text.contains(&system.system_key), "{text}");
    assert!(text.contains("shown only once"), "{text}");
    let command = text
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("tether-agent --url ws://<relay>/api/tunnel")
        })
        .unwrap_or_else(|| panic!("no agent command line in {text}"));
    let words: Vec<&str> = command.split_whitespace().collect();
    let after = |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1];
    assert_eq!(after("--key"), system.system_key);
    assert!(matches!(
        store
            .verify_system(after("--key"), after("--secret"))
            .await
            .unwrap(),
        AuthOutcome::Valid(_)
    ));
}

async fn system_list_prints_a_json_array(store: Store) {
    assert_eq!(
        exec_json(&store, &["system", "list", "--json"]).await,
        json!([])
    );
    exec(&store, &["system", "create", "b-fw"]).await.unwrap();
    exec(&store, &["system", "create", "a-fw"]).await.unwrap();
    let list = exec_json(&store, &["system", "list", "--json"]).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-fw", "b-fw"]);
    assert_eq!(list[0]["support_enabled"], true);
    assert!(list[0].get("secret").is_none() && list[0].get("secret_hash").is_none());
    let text = exec(&store, &["system", "list"]).await.unwrap();
    assert!(text.contains("a-fw") && text.contains("enabled"), "{text}");
}

async fn system_disable_closes_sessions_and_enable_restores(store: Store) {
    let doc = exec_json(&store, &["system", "create", "fw1", "--json"]).await;
    let (key, secret) = (
        doc["key"].as_str().unwrap(),
        doc["secret"].as_str().unwrap(),
    );
    let id = doc["id"].as_str().unwrap();
    let session = store.create_session(id, None, 3_600_000).await.unwrap();
    store.block_reopen(id, Some("2")).await.unwrap();
    assert_eq!(
        exec_json(&store, &["system", "disable", "fw1", "--json"]).await,
        json!({"ok": true})
    );
    assert!(matches!(
        store.verify_system(key, secret).await.unwrap(),
        AuthOutcome::Disabled(_)
    ));
    let session = store.get_session(&session.id).await.unwrap().unwrap();
    assert_eq!(session.status, SessionStatus::Closed);
    assert_eq!(session.closed_by, Some(CloseReason::SystemDisabled));
    // Enable by key; it also lifts sticky closes.
    let text = exec(&store, &["system", "enable", key]).await.unwrap();
    assert_eq!(text.trim(), "system \"fw1\" enabled");
    assert!(matches!(
        store.verify_system(key, secret).await.unwrap(),
        AuthOutcome::Valid(_)
    ));
    assert!(!store.is_reopen_blocked(id, Some("2")).await.unwrap());
    let actions: Vec<String> = cli_audit(&store)
        .await
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(
        actions,
        ["system.enable", "system.disable", "system.create"]
    );
}

async fn system_delete_removes_the_system(store: Store) {
    let doc = exec_json(&store, &["system", "create", "fw1", "--json"]).await;
    let id = doc["id"].as_str().unwrap();
    assert_eq!(
        exec_json(&store, &["system", "delete", id, "--json"]).await,
        json!({"ok": true})
    );
    assert!(store.find_system("fw1").await.unwrap().is_none());
    assert_eq!(cli_audit(&store).await[0].action, "system.delete");
}

async fn unknown_targets_are_named_in_errors(store: Store) {
    for verb in ["disable", "enable", "delete"] {
        let err = exec(&store, &["system", verb, "foo"]).await.unwrap_err();
        assert!(
            err.to_string().starts_with("no system named \"foo\""),
            "{err}"
        );
    }
    let err = exec(&store, &["operator", "disable", "bob"])
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no operator named \"bob\"");
    let err = exec(&store, &["token", "create", "bob"]).await.unwrap_err();
    assert_eq!(err.to_string(), "no operator named \"bob\"");
    exec(&store, &["system", "create", "fw1"]).await.unwrap();
    let err = exec(&store, &["system", "create", "fw1"])
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "system \"fw1\" already exists");
    let err = exec(&store, &["system", "create", "bad name"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"bad name\""), "{err}");
    // Nothing failed half-way into the audit trail.
    assert_eq!(cli_audit(&store).await.len(), 1);
}

async fn operator_create_prints_a_working_password(store: Store) {
    let doc = exec_json(
        &store,
        &["operator", "create", "bob", "--role", "viewer", "--json"],
    )
    .await;
    assert_eq!(doc["name"], "bob");
    assert_eq!(doc["role"], "viewer");
    let password = doc["password"].as_str().unwrap();
    let op = store
        .verify_operator_password("bob", password)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(op.role, Role::Viewer);
    let err = exec(&store, &["operator", "create", "bob", "--role", "admin"])
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "operator \"bob\" already exists");
    let text = exec(&store, &["operator", "create", "carol", "--role", "admin"])
        .await
        .unwrap();
    assert!(text.contains("shown only once"), "{text}");
    let list = exec_json(&store, &["operator", "list", "--json"]).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[1]["role"], "admin");
    assert!(!list.to_string().contains(password));
    let audit = cli_audit(&store).await;
    assert_eq!(audit.len(), 2);
    assert!(
        !audit
            .iter()
            .any(|r| r.detail.as_ref().unwrap().to_string().contains(password))
    );
}

async fn operator_disable_and_enable(store: Store) {
    let doc = exec_json(
        &store,
        &["operator", "create", "bob", "--role", "operator", "--json"],
    )
    .await;
    let password = doc["password"].as_str().unwrap();
    assert_eq!(
        exec_json(&store, &["operator", "disable", "bob", "--json"]).await,
        json!({"ok": true})
    );
    assert!(
        store
            .verify_operator_password("bob", password)
            .await
            .unwrap()
            .is_none()
    );
    exec(&store, &["operator", "enable", "bob"]).await.unwrap();
    assert!(
        store
            .verify_operator_password("bob", password)
            .await
            .unwrap()
            .is_some()
    );
}

async fn token_create_prints_a_working_token(store: Store) {
    exec(&store, &["operator", "create", "bob", "--role", "operator"])
        .await
        .unwrap();
    let doc = exec_json(&store, &["token", "create", "bob", "--json"]).await;
    let token = doc["token"].as_str().unwrap();
    assert_eq!(doc.as_object().unwrap().len(), 1);
    let op = store.operator_for_token(token).await.unwrap().unwrap();
    assert_eq!(op.name, "bob");
    let audit = cli_audit(&store).await;
    assert_eq!(audit[0].action, "token.create");
    assert!(
        !audit[0]
            .detail
            .as_ref()
            .unwrap()
            .to_string()
            .contains(token)
    );
}

#[test]
fn role_flag_is_required_and_checked() {
    let err = Cli::try_parse_from([
        "tether-relay",
        "operator",
        "create",
        "bob",
        "--role",
        "root",
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("root"), "{err}");
    assert!(Cli::try_parse_from(["tether-relay", "operator", "create", "bob"]).is_err());
}
