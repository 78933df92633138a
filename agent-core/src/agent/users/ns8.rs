//! NethServer 8: a cluster administrator and one user per internal user domain, created on the
//! leader through cluster agent tasks (`runagent python3 -c <script>`, REFERENCE 3.8).
//!
//! The script is a constant: the agent id and action go in its argv, the task data (with the
//! password) as JSON on its stdin, so nothing is interpolated into code and no secret shows in
//! a process listing.

use std::format;
use std::prelude::rust_2024::*;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::document::{Credential, DomainUser, SessionUsers};

use super::command::{Programs, Runner, StepError};
use super::identity;
use super::state::{Account, Ledger};
use super::{Ns8Role, Provisioning, record_error};

/// Display name of every support user.
const DISPLAY_NAME: &str = "Support Session";

/// Runs one agent task and prints its output as JSON; on failure prints the task error to
/// stderr and exits 1 (the reference's script, with data read from stdin).
const TASK_SCRIPT: &str = r#"import json, sys
import agent.tasks
agent_id, action = sys.argv[1], sys.argv[2]
data = json.load(sys.stdin)
result = agent.tasks.run(
    agent_id=agent_id,
    action=action,
    data=data,
    extra={"isNotificationHidden": True},
    endpoint="redis://cluster-leader",
)
if result["exit_code"] != 0:
    print(json.dumps(result.get("error", "task failed")), file=sys.stderr)
    sys.exit(1)
print(json.dumps(result["output"]))
"#;

/// `cluster/list-user-domains` output.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UserDomains {
    domains: Vec<UserDomain>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UserDomain {
    name: String,
    /// `internal` or `external`.
    location: String,
    providers: Vec<Provider>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Provider {
    id: String,
}

/// Runs `action` of agent `agent_id` with `data`; its JSON output.
async fn task(
    runner: &Runner,
    programs: &Programs,
    agent_id: &str,
    action: &str,
    data: &Value,
    secrets: &[&str],
) -> Result<Value, StepError> {
    let step = format!("{agent_id}/{action}");
    let stdin = serde_json::to_vec(data).unwrap_or_default();
    let out = runner
        .run(
            &step,
            &programs.runagent,
            &["python3", "-c", TASK_SCRIPT, agent_id, action],
            &stdin,
            secrets,
        )
        .await?;
    let text = String::from_utf8_lossy(&out);
    let text = text.trim();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).or_else(|e| {
        // The output is the script's last line; anything the task library printed comes first.
        match text.lines().next_back() {
            Some(last) if last.len() < text.len() => serde_json::from_str(last),
            _ => Err(e),
        }
        .map_err(|source| StepError::BadOutput { step, source })
    })
}

/// Creates the cluster administrator and the domain users (only on the leader; a worker gets
/// nothing and fetches the leader's credentials instead).
pub(super) async fn create(
    run: &Provisioning<'_>,
    ledger: &mut Ledger<'_>,
    role: Ns8Role,
    username: &str,
    users: &mut SessionUsers,
) {
    if role == Ns8Role::Worker {
        tracing::info!("NS8 worker node: support users are created by the leader");
        return;
    }
    if run.cancelled() {
        return;
    }
    remove_first(run, "cluster", username).await;
    let password = identity::password();
    let hash = identity::password_hash(&password);
    let admin = Account::Ns8ClusterAdmin {
        user: username.to_owned(),
    };
    let data = json!({
        "user": username,
        "password_hash": hash,
        "set": { "display_name": DISPLAY_NAME },
        "grant": [{ "role": "owner", "on": "*" }],
    });
    if add(
        run,
        ledger,
        users,
        &admin,
        "cluster",
        &data,
        &[&password, &hash],
    )
    .await
    {
        tracing::info!(user = username, "NS8 cluster administrator created");
        users.cluster_admin = Some(Credential {
            username: username.to_owned(),
            password,
        });
    }

    if run.cancelled() {
        return;
    }
    let listed = task(
        run.runner,
        run.programs,
        "cluster",
        "list-user-domains",
        &json!({}),
        &[],
    )
    .await
    .and_then(|out| {
        serde_json::from_value::<UserDomains>(out).map_err(|source| StepError::BadOutput {
            step: "cluster/list-user-domains".into(),
            source,
        })
    });
    let domains = match listed {
        Ok(list) => list.domains,
        Err(e) => {
            record_error(users, "cluster/list-user-domains", &e);
            return;
        }
    };
    for domain in domains {
        if domain.location == "external" {
            tracing::info!(domain = %domain.name, "external user domain skipped (read-only)");
            continue;
        }
        let Some(provider) = domain.providers.first().filter(|p| !p.id.is_empty()) else {
            tracing::info!(domain = %domain.name, "user domain without provider skipped");
            continue;
        };
        if run.cancelled() {
            return;
        }
        let agent_id = format!("module/{}", provider.id);
        remove_first(run, &agent_id, username).await;
        let password = identity::password();
        let account = Account::Ns8DomainUser {
            module: provider.id.clone(),
            domain: domain.name.clone(),
            user: username.to_owned(),
        };
        let data = json!({
            "user": username,
            "display_name": DISPLAY_NAME,
            "password": password,
            "locked": false,
        });
        if add(run, ledger, users, &account, &agent_id, &data, &[&password]).await {
            tracing::info!(
                user = username,
                module = %provider.id,
                domain = %domain.name,
                "NS8 domain user created"
            );
            users.domain_users.push(DomainUser {
                domain: domain.name.clone(),
                module: provider.id.clone(),
                username: username.to_owned(),
                password,
            });
        }
    }
}

/// `remove-user` before `add-user`, so that the new password is the one that counts; a
/// failure (usually: no such user) is expected.
async fn remove_first(run: &Provisioning<'_>, agent_id: &str, username: &str) {
    let data = json!({ "user": username });
    if let Err(e) = task(
        run.runner,
        run.programs,
        agent_id,
        "remove-user",
        &data,
        &[],
    )
    .await
    {
        tracing::debug!("{e} (ignored)");
    }
}

/// Records `account` in the state file, then runs `add-user` of `agent_id`; true when the
/// account was created. Failures go to the report's errors.
async fn add(
    run: &Provisioning<'_>,
    ledger: &mut Ledger<'_>,
    users: &mut SessionUsers,
    account: &Account,
    agent_id: &str,
    data: &Value,
    secrets: &[&str],
) -> bool {
    let step = format!("{agent_id}/add-user");
    if let Err(e) = ledger.intend(account) {
        record_error(users, &step, &e);
        return false;
    }
    match task(
        run.runner,
        run.programs,
        agent_id,
        "add-user",
        data,
        secrets,
    )
    .await
    {
        Ok(_) => {
            ledger.created(account);
            true
        }
        Err(e) => {
            record_error(users, &step, &e);
            false
        }
    }
}

/// Deletes one NS8 account.
pub(super) async fn delete(
    runner: &Runner,
    programs: &Programs,
    account: &Account,
) -> Result<(), StepError> {
    let (agent_id, user) = match account {
        Account::Ns8ClusterAdmin { user } => ("cluster".to_owned(), user),
        Account::Ns8DomainUser { module, user, .. } => (format!("module/{module}"), user),
        Account::NethsecurityAdmin { .. } => return Ok(()),
    };
    let data = json!({ "user": user });
    task(runner, programs, &agent_id, "remove-user", &data, &[])
        .await
        .map(|_| ())
}
