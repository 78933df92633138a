//! Ephemeral support users (`USERS 1` / `USERS_FETCH 1`, PROTOCOL sections 3 and 5,
//! REFERENCE 3.8): accounts an operator logs in with during a support session, created on the
//! device after the first connection and deleted when the session ends.
//!
//! * NethServer 8 leader: a cluster administrator and a user in every internal user domain
//!   ([`Platform::Ns8`] with [`Ns8Role::Leader`]); a worker creates nothing and fetches the
//!   leader's credentials from the relay.
//! * NethSecurity: a local admin user ([`Platform::NethSecurity`]).
//!
//! Every helper command runs under a timeout in its own process group, secrets on its stdin.
//! The state file ([`UsersConfig::state_file`], 0600, replaced atomically) names each account
//! *before* the command that creates it, so [`SupportUsers::cleanup_orphans`] after a crash
//! deletes whatever may exist. It never holds a password.
//!
//! In the agent runtime ([`super::AgentConfig::support_users`]): orphans are cleaned once
//! before the first dial, the users are created once per process on a background task after
//! the first successful connection, the `USERS 1` report goes out on that connection and again
//! on every later one, and [`super::run`] deletes the users before it returns on close code
//! 4000 or shutdown (bounded by [`UsersConfig::cleanup_timeout`]).
//!
//! Not here: the reference's `users.d` setup/teardown plugins.

use std::format;
use std::prelude::rust_2024::*;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;

use crate::document::{MAX_USERS_BYTES, SessionUsers, Timestamp, UserError, UsersReport};
use crate::transport::MuxHandle;
use crate::wire::AgentStream;

mod command;
mod identity;
mod nethsecurity;
mod ns8;
mod state;

pub use command::{MAX_ERROR_TEXT, Programs, StepError};
pub use identity::{PASSWORD_LEN, password, password_hash, username};
pub use state::{
    Account, DEFAULT_STATE_FILE, Entry, MAX_STATE_BYTES, STATE_VERSION, State, StateError,
};

use command::Runner;
use state::{Ledger, StateFile};

/// Default time one helper command may run before it is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time the deletion at the end of a session (or of orphans at start) may take.
pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of `USERS_FETCH` attempts of a node that created no credentials.
pub const DEFAULT_FETCH_ATTEMPTS: u32 = 3;
/// Default pause after a `USERS_FETCH` that found nothing.
pub const DEFAULT_FETCH_DELAY: Duration = Duration::from_secs(10);
/// Time allowed for one `USERS_FETCH` exchange.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The role of this NethServer 8 node in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns8Role {
    /// The leader: cluster tasks can be submitted here, the users are created here.
    Leader,
    /// A worker: no users are created, the leader's are fetched from the relay.
    Worker,
}

/// Where the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// NethServer 8, with this node's role.
    Ns8(Ns8Role),
    /// NethSecurity (OpenWrt).
    NethSecurity,
}

impl Platform {
    /// The report's `platform`: `ns8` or `nethsecurity`.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Ns8(_) => "ns8",
            Platform::NethSecurity => "nethsecurity",
        }
    }
}

/// How support users are made.
#[derive(Debug, Clone)]
pub struct UsersConfig {
    /// The platform, which decides what is created.
    pub platform: Platform,
    /// The crash-recovery state file ([`DEFAULT_STATE_FILE`]).
    pub state_file: PathBuf,
    /// Helper programs (`runagent` for NS8, `python3` for NethSecurity; NS8 tasks run the
    /// `python3` of the agent environment that `runagent` sets up).
    pub programs: Programs,
    /// Time one helper command may run before its process group is killed.
    pub command_timeout: Duration,
    /// Time the deletion at the end of a session, or of orphans at start, may take; what is
    /// not deleted by then stays in the state file for the next start.
    pub cleanup_timeout: Duration,
    /// `USERS_FETCH` attempts when this node created no credentials.
    pub fetch_attempts: u32,
    /// Pause after a `USERS_FETCH` that found nothing.
    pub fetch_delay: Duration,
}

impl UsersConfig {
    /// The defaults for `platform`.
    pub fn new(platform: Platform) -> Self {
        UsersConfig {
            platform,
            state_file: PathBuf::from(DEFAULT_STATE_FILE),
            programs: Programs::default(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            cleanup_timeout: DEFAULT_CLEANUP_TIMEOUT,
            fetch_attempts: DEFAULT_FETCH_ATTEMPTS,
            fetch_delay: DEFAULT_FETCH_DELAY,
        }
    }
}

/// Why deleting support users did not complete.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The state file cannot be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The deletion ran out of time; the state file still names the accounts.
    #[error("the support users were not deleted within {}s", .0.as_secs_f32())]
    Timeout(Duration),
}

/// What a cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Accounts deleted (or found absent).
    pub deleted: Vec<Account>,
    /// Accounts whose deletion could not run; they stay in the state file.
    pub kept: Vec<Account>,
}

/// The support users of one agent process; share it through
/// [`super::AgentConfig::support_users`].
pub struct SupportUsers {
    config: UsersConfig,
    runner: Runner,
    state_file: StateFile,
    /// Set when the session ends: provisioning stops before its next step.
    cancel: AtomicBool,
    started: AtomicBool,
    /// Held by whoever creates or deletes accounts.
    ops: Mutex<()>,
    /// The accounts this node created, once provisioning finished.
    local: watch::Sender<Option<SessionUsers>>,
    /// The report as sent: local users plus what `USERS_FETCH` found.
    complete: Mutex<Completion>,
}

struct Completion {
    fetches_left: u32,
    report: Option<SessionUsers>,
}

impl std::fmt::Debug for SupportUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupportUsers")
            .field("config", &self.config)
            .field("started", &self.started.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a provisioning run works with.
pub(crate) struct Provisioning<'a> {
    runner: &'a Runner,
    programs: &'a Programs,
    cancel: &'a AtomicBool,
}

impl Provisioning<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }
}

impl SupportUsers {
    /// Support users made as `config` says; nothing runs until asked.
    pub fn new(config: UsersConfig) -> Self {
        SupportUsers {
            runner: Runner {
                timeout: config.command_timeout,
            },
            state_file: StateFile::new(config.state_file.clone()),
            complete: Mutex::new(Completion {
                fetches_left: config.fetch_attempts,
                report: None,
            }),
            config,
            cancel: AtomicBool::new(false),
            started: AtomicBool::new(false),
            ops: Mutex::new(()),
            local: watch::channel(None).0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &UsersConfig {
        &self.config
    }

    /// Creates the support users for `system_key` now; what failed is in `errors`. Every
    /// account is in the state file before its creation starts. Returns at once (with no
    /// users) after [`SupportUsers::cleanup`].
    pub async fn provision(&self, system_key: &str) -> SessionUsers {
        let _ops = self.ops.lock().await;
        let mut users = SessionUsers {
            session_id: system_key.to_owned(),
            platform: self.config.platform.name().to_owned(),
            created_at: now(),
            ..SessionUsers::default()
        };
        let run = Provisioning {
            runner: &self.runner,
            programs: &self.config.programs,
            cancel: &self.cancel,
        };
        if run.cancelled() {
            return users;
        }
        let mut ledger = match Ledger::open(&self.state_file) {
            Ok(ledger) => ledger,
            Err(e) => {
                record_error(&mut users, "state", &e);
                return users;
            }
        };
        let username = username(system_key);
        match self.config.platform {
            Platform::Ns8(role) => {
                ns8::create(&run, &mut ledger, role, &username, &mut users).await;
            }
            Platform::NethSecurity => {
                nethsecurity::create(&run, &mut ledger, &username, &mut users).await;
            }
        }
        users
    }

    /// Deletes every account the state file names (left by a crash), then removes the file.
    /// Call it once at start, before anything is provisioned; [`super::run`] does.
    pub async fn cleanup_orphans(&self) -> Result<Cleanup, UsersError> {
        self.delete_recorded().await
    }

    /// Ends the session's users: stops provisioning after its current step, then deletes every
    /// account the state file names and removes the file, within the cleanup timeout.
    pub async fn cleanup(&self) -> Result<Cleanup, UsersError> {
        self.cancel.store(true, Ordering::Release);
        self.delete_recorded().await
    }

    /// The report as last sent (or to be sent), once provisioning finished.
    pub async fn report(&self) -> Option<SessionUsers> {
        let complete = self.complete.lock().await;
        match &complete.report {
            Some(report) => Some(report.clone()),
            None => self.local.borrow().clone(),
        }
    }

    async fn delete_recorded(&self) -> Result<Cleanup, UsersError> {
        let limit = self.config.cleanup_timeout;
        tokio::time::timeout(limit, async {
            let _ops = self.ops.lock().await;
            self.delete_recorded_locked().await
        })
        .await
        .map_err(|_| UsersError::Timeout(limit))?
    }

    async fn delete_recorded_locked(&self) -> Result<Cleanup, UsersError> {
        let Some(state) = self.state_file.load()? else {
            return Ok(Cleanup::default());
        };
        let mut done = Cleanup::default();
        let mut kept = Vec::new();
        for entry in state.entries.iter().rev() {
            let account = &entry.account;
            let deleted = match account {
                Account::Ns8ClusterAdmin { .. } | Account::Ns8DomainUser { .. } => {
                    ns8::delete(&self.runner, &self.config.programs, account).await
                }
                Account::NethsecurityAdmin { .. } => {
                    nethsecurity::delete(&self.runner, &self.config.programs, account).await
                }
            };
            match deleted {
                Ok(()) => {
                    tracing::info!(user = account.user(), ?account, "support user deleted");
                }
                Err(e) if e.ran() => {
                    tracing::info!(
                        user = account.user(),
                        ?account,
                        "support user not deleted, taken as absent: {}",
                        describe(&e)
                    );
                }
                Err(e) => {
                    tracing::warn!(
                        user = account.user(),
                        ?account,
                        "support user not deleted, kept for the next start: {}",
                        describe(&e)
                    );
                    kept.push(entry.clone());
                    done.kept.push(account.clone());
                    continue;
                }
            }
            done.deleted.push(account.clone());
        }
        kept.reverse();
        self.state_file.save(&State {
            entries: kept,
            ..State::default()
        })?;
        Ok(done)
    }

    /// Starts provisioning on a background task, once per process (later calls do nothing).
    pub(crate) fn start(self: &Arc<Self>, system_key: &str) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let key = system_key.to_owned();
        tokio::spawn(async move {
            let users = this.provision(&key).await;
            tracing::info!(
                cluster_admin = users.cluster_admin.is_some(),
                domain_users = users.domain_users.len(),
                local_users = users.local_users.len(),
                errors = users.errors.len(),
                "support users provisioned"
            );
            this.local.send_replace(Some(users));
        });
    }

    /// Deletes the users at the end of [`super::run`]; failures are logged.
    pub(crate) async fn end_session(&self) {
        match self.cleanup().await {
            Ok(done) if done.kept.is_empty() => {
                if !done.deleted.is_empty() {
                    tracing::info!(count = done.deleted.len(), "support users deleted");
                }
            }
            Ok(done) => tracing::warn!(
                count = done.kept.len(),
                "support users left for the next start to delete"
            ),
            Err(e) => tracing::warn!("{}", describe(&e)),
        }
    }

    /// The report of this node: the local users, completed through `USERS_FETCH` (once per
    /// process, over `mux`) when this node created no credentials.
    async fn completed(&self, mux: &MuxHandle, local: SessionUsers) -> SessionUsers {
        let mut complete = self.complete.lock().await;
        if let Some(report) = &complete.report {
            return report.clone();
        }
        let mut users = local;
        while !has_credentials(&users) && complete.fetches_left > 0 {
            complete.fetches_left -= 1;
            match fetch(mux).await {
                Ok(fetched) if has_credentials(&fetched.users) => {
                    merge(&mut users, fetched.users);
                    tracing::info!("support user credentials fetched from the relay");
                    break;
                }
                Ok(_) => tracing::info!("the relay has no support user credentials yet"),
                Err(e) => tracing::warn!("USERS_FETCH failed: {e}"),
            }
            if complete.fetches_left > 0 {
                tokio::time::sleep(self.config.fetch_delay).await;
            }
        }
        complete.report = Some(users.clone());
        users
    }
}

/// Starts the users task of one connection: once provisioning finished, it sends `USERS 1`
/// (after `USERS_FETCH` on a node without credentials of its own).
pub(crate) fn spawn(tasks: &mut JoinSet<()>, mux: MuxHandle, users: Arc<SupportUsers>) {
    tasks.spawn(async move {
        let mut local = users.local.subscribe();
        let local = match local.wait_for(Option::is_some).await {
            Ok(local) => local.clone(),
            Err(_) => return,
        };
        let Some(local) = local else { return };
        let users = users.completed(&mux, local).await;
        let created = now();
        let report = UsersReport {
            duration_ms: created
                .to_unix_millis()
                .saturating_sub(users.created_at.to_unix_millis()),
            created_at: created,
            users,
        };
        match send(&mux, &report).await {
            Ok(()) => tracing::info!("support users report sent"),
            Err(e) => tracing::warn!("support users report not sent: {e}"),
        }
    });
}

/// One `USERS 1` stream: header, JSON line, FIN.
async fn send(mux: &MuxHandle, report: &UsersReport) -> Result<(), String> {
    super::send_document(mux, AgentStream::Users, report).await
}

/// One `USERS_FETCH 1` exchange: what the relay stores for this system (`{}`: nothing).
async fn fetch(mux: &MuxHandle) -> Result<UsersReport, String> {
    let exchange = async {
        let mut stream = mux.open().await.map_err(|e| e.to_string())?;
        stream
            .write_all(AgentStream::UsersFetch.header())
            .await
            .map_err(|e| e.to_string())?;
        stream.shutdown().await.map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        (&mut stream)
            .take(MAX_USERS_BYTES as u64 + 2)
            .read_to_end(&mut body)
            .await
            .map_err(|e| e.to_string())?;
        if body.trim_ascii().is_empty() {
            return Ok(UsersReport::default());
        }
        // serde_json errors name positions, never values: no secret reaches the log.
        UsersReport::parse_json(body.trim_ascii()).map_err(|e| e.to_string())
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", FETCH_TIMEOUT.as_secs()))?
}

fn has_credentials(users: &SessionUsers) -> bool {
    users.cluster_admin.is_some() || !users.domain_users.is_empty() || !users.local_users.is_empty()
}

/// Adds the credentials another node created to this node's report.
fn merge(users: &mut SessionUsers, fetched: SessionUsers) {
    if fetched.cluster_admin.is_some() {
        users.cluster_admin = fetched.cluster_admin;
    }
    users.domain_users.extend(fetched.domain_users);
    users.local_users.extend(fetched.local_users);
}

/// Adds a failed step to the report and the log (never a secret: helper output is masked).
pub(crate) fn record_error(users: &mut SessionUsers, id: &str, e: &dyn std::error::Error) {
    let message = describe(e);
    tracing::warn!(step = id, "support user step failed: {message}");
    users.errors.push(UserError {
        id: id.to_owned(),
        message,
    });
}

/// An error and its causes on one line.
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The current time (the timestamps of the report).
fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_millis(ms)
}

#[cfg(test)]
mod tests;
