//! NethSecurity (OpenWrt): a local user of the `main` database with the admin role, through
//! the `nethsec` Python helpers (REFERENCE 3.8).
//!
//! One constant script runs every step: the step name goes in its argv, the user name and
//! password as JSON on its stdin (the reference quoted them into the code).

use std::prelude::rust_2024::*;

use serde_json::{Value, json};

use crate::document::{Credential, SessionUsers};

use super::command::{Programs, Runner, StepError};
use super::identity;
use super::state::{Account, Ledger};
use super::{Provisioning, record_error};

/// Runs one `nethsec.users` call named by argv[1] with arguments from stdin.
const STEP_SCRIPT: &str = r#"import json, sys
from nethsec import users
from euci import EUci
step, a = sys.argv[1], json.load(sys.stdin)
u = EUci()
if step == "remove_admin":
    users.remove_admin(u, a["user"])
elif step == "delete_local_user":
    users.delete_local_user(u, a["user"], "main")
elif step == "add_local_user":
    users.add_local_user(u, a["user"], a["password"], "Support Session", "main")
elif step == "set_admin":
    users.set_admin(u, a["user"], "main")
else:
    sys.exit("unknown step: " + step)
"#;

async fn step(
    runner: &Runner,
    programs: &Programs,
    name: &str,
    args: &Value,
    secrets: &[&str],
) -> Result<(), StepError> {
    let stdin = serde_json::to_vec(args).unwrap_or_default();
    runner
        .run(
            name,
            &programs.python3,
            &["-c", STEP_SCRIPT, name],
            &stdin,
            secrets,
        )
        .await
        .map(|_| ())
}

/// Creates the admin user; when it cannot be made admin it is deleted again.
pub(super) async fn create(
    run: &Provisioning<'_>,
    ledger: &mut Ledger<'_>,
    username: &str,
    users: &mut SessionUsers,
) {
    let user = json!({ "user": username });
    if run.cancelled() {
        return;
    }
    // Leftovers of an earlier session go first, so that the new password is the one that counts.
    for name in ["remove_admin", "delete_local_user"] {
        if let Err(e) = step(run.runner, run.programs, name, &user, &[]).await {
            tracing::debug!("{e} (ignored)");
        }
    }
    let account = Account::NethsecurityAdmin {
        user: username.to_owned(),
    };
    if let Err(e) = ledger.intend(&account) {
        record_error(users, "add_local_user", &e);
        return;
    }
    let password = identity::password();
    let args = json!({ "user": username, "password": password });
    if let Err(e) = step(
        run.runner,
        run.programs,
        "add_local_user",
        &args,
        &[&password],
    )
    .await
    {
        record_error(users, "add_local_user", &e);
        return;
    }
    if let Err(e) = step(run.runner, run.programs, "set_admin", &user, &[]).await {
        record_error(users, "set_admin", &e);
        match step(run.runner, run.programs, "delete_local_user", &user, &[]).await {
            Ok(()) => ledger.forget(&account),
            Err(e) => tracing::warn!("{e}; the user stays recorded for the cleanup"),
        }
        return;
    }
    ledger.created(&account);
    tracing::info!(user = username, "NethSecurity admin user created");
    users.local_users.push(Credential {
        username: username.to_owned(),
        password,
    });
}

/// Deletes one NethSecurity account: its admin role, then the user. An error that says
/// nothing about the user (the helper could not run) wins over a refusal.
pub(super) async fn delete(
    runner: &Runner,
    programs: &Programs,
    account: &Account,
) -> Result<(), StepError> {
    let Account::NethsecurityAdmin { user } = account else {
        return Ok(());
    };
    let user = json!({ "user": user });
    let admin = step(runner, programs, "remove_admin", &user, &[]).await;
    let deleted = step(runner, programs, "delete_local_user", &user, &[]).await;
    match (admin, deleted) {
        (Err(e), _) if !e.ran() => Err(e),
        (_, deleted) => deleted,
    }
}
