//! The health report (`DIAGNOSTICS 1`, PROTOCOL sections 3 and 5): the built-in `system`
//! plugin and the external plugins of a directory, run in parallel under per-plugin and total
//! deadlines ([`collect`]), and the per-connection task that sends the report on connect and
//! again whenever it changes.
//!
//! What the reference got wrong and this does not (PROTOCOL section 10, REFERENCE B-17, B-18):
//! plugins run in parallel, each in its own process group that is killed on timeout and when
//! the plugin exits; output is drained past its cap so a chatty plugin never blocks; a
//! grandchild holding stdout open cannot hang the collector; after the total deadline the
//! report goes out with what finished and the late plugins marked `timeout`.

use std::format;
use std::prelude::rust_2024::*;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::document::{DiagnosticsReport, PluginReport, Status, Timestamp};
use crate::plugin_output;
use crate::transport::MuxHandle;
use crate::wire::AgentStream;

mod runner;
mod system;

pub use runner::{PluginRun, Skipped, discover, vet};
pub use system::Thresholds;

/// Default plugin directory.
pub const DEFAULT_DIR: &str = "/usr/share/tether/diagnostics.d";
/// Default time one plugin may run.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time the whole collection may take.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time between collections while connected.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// The relay keeps at most one report per this interval (PROTOCOL section 3).
pub const RELAY_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Margin on top of [`RELAY_MIN_INTERVAL`] against clock and transport jitter.
const SEND_MARGIN: Duration = Duration::from_secs(1);
/// `PATH` of every plugin (the reference's).
pub const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Most stdout kept per plugin; the rest is read and discarded.
pub const MAX_STDOUT: usize = 512 * 1024;
/// Most stderr kept per plugin.
pub const MAX_STDERR: usize = 16 * 1024;

/// How the health report is collected.
#[derive(Debug, Clone)]
pub struct DiagnosticsConfig {
    /// Directory of external plugins; `None` runs only the built-in `system` plugin.
    pub dir: Option<PathBuf>,
    /// Time one plugin may run before its process group is killed.
    pub plugin_timeout: Duration,
    /// Time the whole collection may take; late plugins are reported as `timeout`.
    pub total_timeout: Duration,
    /// Time between collections while connected (a changed report is sent); zero: only on connect.
    pub interval: Duration,
    /// Limits of the built-in `system` plugin.
    pub thresholds: Thresholds,
    /// `PATH` given to plugins.
    pub path: String,
    /// `TETHER_*` variables given to plugins besides the ones the runner sets.
    pub context: Vec<(String, String)>,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        DiagnosticsConfig {
            dir: Some(PathBuf::from(DEFAULT_DIR)),
            plugin_timeout: DEFAULT_PLUGIN_TIMEOUT,
            total_timeout: DEFAULT_TOTAL_TIMEOUT,
            interval: DEFAULT_INTERVAL,
            thresholds: Thresholds::default(),
            path: PLUGIN_PATH.to_owned(),
            context: Vec::new(),
        }
    }
}

/// A finished collection: the report plus what the operator does not see on the wire.
#[derive(Debug, Clone)]
pub struct Collection {
    /// The report as sent.
    pub report: DiagnosticsReport,
    /// Each external plugin's run, in report order (the `system` plugin has none).
    pub runs: Vec<PluginRun>,
    /// Directory entries that were not run, and why.
    pub skipped: Vec<Skipped>,
}

fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs the `system` plugin and every plugin of the directory in parallel; returns by the
/// total deadline (plus the time to kill and reap what is late).
pub async fn collect(config: &DiagnosticsConfig) -> Collection {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let deadline = started + config.total_timeout;
    let (paths, skipped) = match &config.dir {
        Some(dir) => discover(dir),
        None => (Vec::new(), Vec::new()),
    };
    for s in &skipped {
        tracing::warn!(plugin = %s.path.display(), "diagnostics plugin skipped: {}", s.reason);
    }
    let thresholds = config.thresholds;
    let system = tokio::task::spawn_blocking(move || system::collect(&thresholds));
    let mut set = JoinSet::new();
    for (index, path) in paths.iter().enumerate() {
        let path = path.clone();
        let config = config.clone();
        set.spawn(async move { (index, runner::run(&path, &config, deadline).await) });
    }
    let mut runs: Vec<Option<PluginRun>> = paths.iter().map(|_| None).collect();
    // Every run ends by `deadline` plus its kill and drain grace; this bound is for bugs.
    let hard_deadline = deadline + runner::KILL_GRACE * 4;
    loop {
        match tokio::time::timeout_at(hard_deadline, set.join_next()).await {
            Ok(Some(Ok((index, run)))) => {
                if let Some(slot) = runs.get_mut(index) {
                    *slot = Some(run);
                }
            }
            Ok(Some(Err(e))) => tracing::error!("a diagnostics plugin task failed: {e}"),
            Ok(None) => break,
            Err(_) => {
                set.abort_all();
                break;
            }
        }
    }
    let system = match tokio::time::timeout_at(deadline, system).await {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => system::failed(Status::Error, &format!("the system plugin failed: {e}")),
        Err(_) => system::failed(Status::Timeout, "the system plugin did not finish in time"),
    };
    let runs: Vec<PluginRun> = runs
        .into_iter()
        .zip(&paths)
        .map(|(run, path)| run.unwrap_or_else(|| runner::lost(path, started_at, config)))
        .collect();
    let mut plugins = vec![system];
    plugins.extend(runs.iter().map(|r| r.report.clone()));
    let mut report = DiagnosticsReport {
        collected_at: Timestamp::from_unix_millis(unix_millis(started_at)),
        duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        overall_status: Status::Ok,
        plugins,
    };
    for note in plugin_output::clamp_report(&mut report) {
        tracing::debug!("diagnostics report: {note}");
    }
    Collection {
        report,
        runs,
        skipped,
    }
}

/// Runs one plugin (whatever [`vet`] says) under the plugin and total timeouts of `config`;
/// also returns the stdout that was kept (at most [`MAX_STDOUT`] bytes).
pub async fn run_one(path: &Path, config: &DiagnosticsConfig) -> (PluginRun, Vec<u8>) {
    runner::run_captured(path, config, Instant::now() + config.total_timeout).await
}

/// A health check the embedding host runs itself ([`super::AgentConfig::diagnostics_providers`]):
/// called on a blocking thread at every collection, under the plugin timeout.
#[derive(Clone)]
pub struct Provider {
    /// Plugin id shown when the check fails to answer.
    pub id: String,
    /// Produces the check's plugin report.
    pub run: Arc<dyn Fn() -> PluginReport + Send + Sync>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("id", &self.id).finish()
    }
}

/// The host's additions to the diagnostics task of every connection.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    pub providers: Vec<Provider>,
    pub refresh: Option<Arc<tokio::sync::Notify>>,
}

impl Hooks {
    /// Appends every provider's report (in order) to `report`.
    async fn add_provided(&self, report: &mut DiagnosticsReport, timeout: Duration) {
        for provider in &self.providers {
            let run = provider.run.clone();
            let done = tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || run()));
            let plugin = match done.await {
                Ok(Ok(plugin)) => plugin,
                Ok(Err(e)) => placeholder(&provider.id, Status::Error, format!("failed: {e}")),
                Err(_) => placeholder(&provider.id, Status::Timeout, "no answer in time".into()),
            };
            report.plugins.push(plugin);
        }
        if !self.providers.is_empty() {
            for note in plugin_output::clamp_report(report) {
                tracing::debug!("diagnostics report: {note}");
            }
        }
    }

    /// Waits `pause` (forever when `None`) or until a refresh is requested.
    async fn wait(&self, pause: Option<Duration>) {
        match (&self.refresh, pause) {
            (Some(refresh), Some(pause)) => {
                if tokio::time::timeout(pause, refresh.notified())
                    .await
                    .is_ok()
                {
                    tracing::debug!("diagnostics refresh requested");
                }
            }
            (Some(refresh), None) => refresh.notified().await,
            (None, Some(pause)) => tokio::time::sleep(pause).await,
            (None, None) => std::future::pending().await,
        }
    }
}

/// The last report collected, shared by the connections of one agent run.
#[derive(Default)]
pub(crate) struct Cache {
    last: tokio::sync::Mutex<Option<(Instant, DiagnosticsReport)>>,
}

/// Starts the diagnostics task of one connection in `tasks`: it sends a report on connect (a
/// fresh one, or the cached one when younger than the interval) and, every interval, a new one
/// when it [differs](plugin_output::differs) from the last sent, never within the relay's 30 s.
pub(crate) fn spawn(
    tasks: &mut JoinSet<()>,
    mux: MuxHandle,
    config: Arc<DiagnosticsConfig>,
    cache: Arc<Cache>,
    hooks: Arc<Hooks>,
) {
    tasks.spawn(async move {
        let mut last_sent: Option<(Instant, DiagnosticsReport)> = None;
        loop {
            let report = {
                let mut cached = cache.last.lock().await;
                let fresh = cached.as_ref().filter(|(at, _)| {
                    last_sent.is_none()
                        && !config.interval.is_zero()
                        && at.elapsed() < config.interval
                });
                match fresh {
                    Some((_, report)) => report.clone(),
                    None => {
                        let mut report = collect(&config).await.report;
                        hooks.add_provided(&mut report, config.plugin_timeout).await;
                        *cached = Some((Instant::now(), report.clone()));
                        report
                    }
                }
            };
            let due = match &last_sent {
                None => true,
                Some((_, sent)) => plugin_output::differs(sent, &report),
            };
            if due {
                if let Some((at, _)) = &last_sent {
                    tokio::time::sleep_until(*at + RELAY_MIN_INTERVAL + SEND_MARGIN).await;
                }
                match send(&mux, &report).await {
                    Ok(()) => {
                        tracing::info!(overall = %report.overall_status, "diagnostics report sent");
                        last_sent = Some((Instant::now(), report));
                    }
                    Err(e) => {
                        tracing::warn!("diagnostics report not sent: {e}");
                        if mux.is_closed() {
                            return;
                        }
                    }
                }
            }
            let on_request_only = config.interval.is_zero() && last_sent.is_some();
            if on_request_only && hooks.refresh.is_none() {
                return;
            }
            let pause = if on_request_only {
                None
            } else if config.interval.is_zero() {
                Some(RELAY_MIN_INTERVAL)
            } else {
                Some(config.interval)
            };
            hooks.wait(pause).await;
        }
    });
}

/// One `DIAGNOSTICS 1` stream: header, JSON line, FIN.
async fn send(mux: &MuxHandle, report: &DiagnosticsReport) -> Result<(), String> {
    super::send_document(mux, AgentStream::Diagnostics, report).await
}

/// The agent's diagnostics settings with the `TETHER_*` context of this agent added:
/// `TETHER_RELAY_HOST`, `TETHER_NODE_ID` (when set), `TETHER_AGENT_VERSION`.
pub(crate) fn for_agent(config: &super::AgentConfig) -> DiagnosticsConfig {
    let mut diagnostics = config.diagnostics.clone();
    if let Some(host) = url::Url::parse(&config.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
    {
        diagnostics.context.push(("TETHER_RELAY_HOST".into(), host));
    }
    if let Some(node) = &config.node_id {
        diagnostics
            .context
            .push(("TETHER_NODE_ID".into(), node.clone()));
    }
    diagnostics.context.push((
        "TETHER_AGENT_VERSION".into(),
        env!("CARGO_PKG_VERSION").into(),
    ));
    diagnostics
}

/// A plugin report for something that did not produce one.
fn placeholder(id: &str, status: Status, summary: String) -> PluginReport {
    PluginReport {
        id: id.to_owned(),
        name: id.to_owned(),
        status,
        summary: Some(summary),
        checks: Vec::new(),
    }
}

/// The plugin id of a path (its file name less the last extension).
pub fn id_of(path: &Path) -> String {
    plugin_output::plugin_id(&path.file_name().unwrap_or_default().to_string_lossy())
}

#[cfg(test)]
mod tests;
