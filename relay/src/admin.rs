//! Command-line administration: `tether-relay system|operator|token …`.
//!
//! Every command prints either human text or, with `--json`, one JSON document; every change is
//! also written to the audit trail with actor `cli`. Secrets (system secrets, passwords, tokens)
//! are printed exactly once, at creation, and never audited.

use std::io::Write;

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::store::{AuditEntry, CloseReason, Operator, Role, SessionFilter, Store, System};

/// The actor recorded in the audit trail for command-line changes.
pub const AUDIT_ACTOR: &str = "cli";

/// An administration command.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Manage systems (appliances allowed to open tunnels).
    #[command(subcommand)]
    System(SystemCmd),
    /// Manage operators (people using the operator API).
    #[command(subcommand)]
    Operator(OperatorCmd),
    /// Manage operator API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
}

/// Output format shared by every command.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Output {
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `tether-relay system …`
#[derive(Debug, clap::Subcommand)]
pub enum SystemCmd {
    /// Register a system and print its key and secret (shown only once).
    Create {
        /// 1 to 64 letters, digits, '.', '_' or '-'.
        name: String,
        #[command(flatten)]
        output: Output,
    },
    /// List systems.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Refuse the system's tunnels and close its open sessions.
    Disable {
        /// Name, key or id.
        system: String,
        #[command(flatten)]
        output: Output,
    },
    /// Accept the system's tunnels again (also lifts operators' sticky closes).
    Enable {
        /// Name, key or id.
        system: String,
        #[command(flatten)]
        output: Output,
    },
    /// Delete the system and its sessions (the audit trail stays).
    Delete {
        /// Name, key or id.
        system: String,
        #[command(flatten)]
        output: Output,
    },
}

/// `tether-relay operator …`
#[derive(Debug, clap::Subcommand)]
pub enum OperatorCmd {
    /// Create an operator and print the generated password (shown only once).
    Create {
        /// 1 to 64 letters, digits, '.', '_' or '-'.
        name: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: Role,
        #[command(flatten)]
        output: Output,
    },
    /// List operators.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Stop the operator from logging in or using tokens.
    Disable {
        /// Name or id.
        operator: String,
        #[command(flatten)]
        output: Output,
    },
    /// Let a disabled operator in again.
    Enable {
        /// Name or id.
        operator: String,
        #[command(flatten)]
        output: Output,
    },
}

/// `tether-relay token …`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCmd {
    /// Issue an API token for an operator (shown only once).
    Create {
        /// Name or id of the operator.
        operator: String,
        #[command(flatten)]
        output: Output,
    },
}

/// Runs one administration command against `store`, writing its result to `out`.
pub async fn run(cmd: AdminCommand, store: &Store, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::System(cmd) => run_system(cmd, store, out).await,
        AdminCommand::Operator(cmd) => run_operator(cmd, store, out).await,
        AdminCommand::Token(TokenCmd::Create { operator, output }) => {
            let found = find_operator(store, &operator).await?;
            let token = store.create_token(&found.id).await?;
            audit(
                store,
                "token.create",
                None,
                json!({ "operator": found.name }),
            )
            .await?;
            if output.json {
                print_json(out, &json!({ "token": token.expose() }))
            } else {
                writeln!(
                    out,
                    "API token for operator {:?} (shown only once, store it now):\n{}",
                    found.name,
                    token.expose()
                )?;
                Ok(())
            }
        }
    }
}

async fn run_system(cmd: SystemCmd, store: &Store, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        SystemCmd::Create { name, output } => {
            let (system, credentials) = store.create_system(&name).await?;
            audit(
                store,
                "system.create",
                Some(&system),
                json!({ "name": name }),
            )
            .await?;
            let (key, secret) = (&credentials.key, credentials.secret.expose());
            if output.json {
                return print_json(
                    out,
                    &json!({ "id": system.id, "name": system.name, "key": key, "secret": secret }),
                );
            }
            writeln!(out, "created system {:?} (id {})", system.name, system.id)?;
            writeln!(out, "key:    {key}")?;
            writeln!(out, "secret: {secret}")?;
            writeln!(
                out,
                "the key and secret are shown only once: store them now"
            )?;
            writeln!(out, "connect the appliance with:")?;
            writeln!(
                out,
                "  tether-agent --url ws://<relay>/api/tunnel --key {key} --secret {secret}"
            )?;
            Ok(())
        }
        SystemCmd::List { output } => {
            let systems = store.list_systems().await?;
            if output.json {
                return print_json(out, &systems);
            }
            let rows = systems
                .into_iter()
                .map(|s| {
                    let support = if s.support_enabled {
                        "enabled"
                    } else {
                        "disabled"
                    };
                    [s.name, s.system_key, support.to_owned(), s.id]
                })
                .collect();
            print_table(out, "systems", ["NAME", "KEY", "SUPPORT", "ID"], rows)
        }
        SystemCmd::Disable { system, output } => {
            let found = find_system(store, &system).await?;
            let closed = disable_system(store, &found.id).await?;
            audit(
                store,
                "system.disable",
                Some(&found),
                json!({ "name": found.name, "closed_sessions": closed }),
            )
            .await?;
            done(
                out,
                output,
                &format!(
                    "system {:?} disabled ({closed} open session(s) closed)",
                    found.name
                ),
            )
        }
        SystemCmd::Enable { system, output } => {
            let found = find_system(store, &system).await?;
            store.set_system_enabled(&found.id, true).await?;
            audit(
                store,
                "system.enable",
                Some(&found),
                json!({ "name": found.name }),
            )
            .await?;
            done(out, output, &format!("system {:?} enabled", found.name))
        }
        SystemCmd::Delete { system, output } => {
            let found = find_system(store, &system).await?;
            store.delete_system(&found.id).await?;
            audit(
                store,
                "system.delete",
                Some(&found),
                json!({ "name": found.name, "key": found.system_key }),
            )
            .await?;
            done(out, output, &format!("system {:?} deleted", found.name))
        }
    }
}

async fn run_operator(cmd: OperatorCmd, store: &Store, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        OperatorCmd::Create { name, role, output } => {
            let (operator, password) = store.create_operator(&name, role).await?;
            audit(
                store,
                "operator.create",
                None,
                json!({ "name": operator.name, "role": role }),
            )
            .await?;
            if output.json {
                return print_json(
                    out,
                    &json!({
                        "id": operator.id,
                        "name": operator.name,
                        "role": role,
                        "password": password.expose(),
                    }),
                );
            }
            writeln!(out, "created operator {:?} (role {role})", operator.name)?;
            writeln!(out, "password: {}", password.expose())?;
            writeln!(out, "the password is shown only once: store it now")?;
            Ok(())
        }
        OperatorCmd::List { output } => {
            let operators = store.list_operators().await?;
            if output.json {
                return print_json(out, &operators);
            }
            let rows = operators
                .into_iter()
                .map(|o| {
                    let state = if o.disabled { "disabled" } else { "enabled" };
                    [o.name, o.role.to_string(), state.to_owned(), o.id]
                })
                .collect();
            print_table(out, "operators", ["NAME", "ROLE", "STATE", "ID"], rows)
        }
        OperatorCmd::Disable { operator, output } => {
            set_operator(store, &operator, true, output, out).await
        }
        OperatorCmd::Enable { operator, output } => {
            set_operator(store, &operator, false, output, out).await
        }
    }
}

/// Disables support for a system and closes its open sessions (a disabled system must not keep
/// a support window open); returns how many sessions were closed.
pub async fn disable_system(store: &Store, id: &str) -> Result<usize, crate::store::StoreError> {
    store.set_system_enabled(id, false).await?;
    let filter = SessionFilter {
        status: None,
        system: Some(id.to_owned()),
    };
    let mut closed = 0usize;
    for session in store.list_sessions(&filter).await? {
        if session.status.is_open()
            && store
                .close_session(&session.id, CloseReason::SystemDisabled)
                .await?
        {
            closed += 1;
        }
    }
    Ok(closed)
}

async fn set_operator(
    store: &Store,
    name: &str,
    disabled: bool,
    output: Output,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let found = find_operator(store, name).await?;
    store.set_operator_disabled(&found.id, disabled).await?;
    let (action, verb) = if disabled {
        ("operator.disable", "disabled")
    } else {
        ("operator.enable", "enabled")
    };
    audit(store, action, None, json!({ "name": found.name })).await?;
    done(out, output, &format!("operator {:?} {verb}", found.name))
}

async fn find_system(store: &Store, target: &str) -> anyhow::Result<System> {
    match store.find_system(target).await? {
        Some(system) => Ok(system),
        None => bail!("no system named {target:?} (give a name, key or id)"),
    }
}

async fn find_operator(store: &Store, target: &str) -> anyhow::Result<Operator> {
    match store.find_operator(target).await? {
        Some(operator) => Ok(operator),
        None => bail!("no operator named {target:?}"),
    }
}

async fn audit(
    store: &Store,
    action: &str,
    system: Option<&System>,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    store
        .audit(AuditEntry {
            actor: AUDIT_ACTOR.to_owned(),
            action: action.to_owned(),
            system_id: system.map(|s| s.id.clone()),
            detail: Some(detail),
            ..AuditEntry::default()
        })
        .await
        .with_context(|| format!("cannot write the audit record for {action}"))
}

fn done(out: &mut impl Write, output: Output, message: &str) -> anyhow::Result<()> {
    if output.json {
        print_json(out, &json!({ "ok": true }))
    } else {
        writeln!(out, "{message}")?;
        Ok(())
    }
}

/// Prints rows under a header, columns padded to their widest cell.
fn print_table<const N: usize>(
    out: &mut impl Write,
    what: &str,
    header: [&str; N],
    rows: Vec<[String; N]>,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        writeln!(out, "no {what}")?;
        return Ok(());
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

fn print_json(out: &mut impl Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests;
