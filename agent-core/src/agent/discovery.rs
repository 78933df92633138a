//! Service discovery: what is worth reaching on the appliance the agent runs on.
//!
//! A [`Discover`] adapter returns the services it finds; [`Discovery`] runs its adapters in
//! order (later ones overwrite earlier ones, as the reference does), leaves out the excluded
//! names, and [`Discovery::spawn`] repeats that every interval and publishes the result on a
//! watch channel only when it changed; that channel is [`super::AgentConfig::service_source`].
//! An adapter that fails keeps its previous result (a Redis hiccup must not empty the
//! manifest); an adapter that succeeds with nothing publishes nothing (a removed service
//! disappears).
//!
//! Adapters: [`StaticFile`] (TOML), `ns8` (NethServer 8 through Redis and `api-cli`, feature
//! `ns8`), [`openwrt`] (NethSecurity's nginx and OpenWrt's uhttpd). [`detect`] tells which
//! platform this is.

use std::boxed::Box;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::string::{String, ToString};
use std::sync::Arc;
use std::time::Duration;
use std::vec::Vec;

use tokio::sync::watch;

use crate::document::ServiceInfo;
use crate::exclude::ExcludeSet;

#[cfg(feature = "ns8")]
pub mod ns8;
pub mod openwrt;

/// Services by name, as published in the manifest.
pub type Services = BTreeMap<String, ServiceInfo>;

/// What an adapter's [`Discover::discover`] returns.
pub type DiscoverFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Services, DiscoveryError>> + Send + 'a>>;

/// Default re-discovery interval (the reference's `DISCOVERY_INTERVAL`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Why an adapter found nothing this time.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file or a command's output is not what the adapter expects.
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    /// Redis did not answer, or answered with an error.
    #[error("redis at {addr}: {message}")]
    Redis { addr: String, message: String },
    /// A helper command could not run or failed.
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    /// A helper command or a Redis call took too long.
    #[error("`{what}` did not finish within {}", humanize(*timeout))]
    Timeout { what: String, timeout: Duration },
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        std::format!("{}s", d.as_secs())
    } else {
        std::format!("{}ms", d.as_millis())
    }
}

/// A source of services.
pub trait Discover: Send + Sync {
    /// Short name for logs and `tether-agent discover` (`static`, `ns8`, `nethsecurity`, ...).
    fn name(&self) -> &str;
    /// The services found now.
    fn discover(&self) -> DiscoverFuture<'_>;
}

/// The outcome of one adapter in one round, for `tether-agent discover`.
#[derive(Debug)]
pub struct AdapterRound {
    pub adapter: String,
    pub result: Result<usize, String>,
}

/// Adapters in order, with the exclude globs.
pub struct Discovery {
    adapters: Vec<Box<dyn Discover>>,
    exclude: ExcludeSet,
    last: Vec<Option<Services>>,
}

impl Discovery {
    pub fn new(adapters: Vec<Box<dyn Discover>>, exclude: ExcludeSet) -> Self {
        let last = adapters.iter().map(|_| None).collect();
        Discovery {
            adapters,
            exclude,
            last,
        }
    }

    /// Names of the adapters, in order.
    pub fn adapter_names(&self) -> Vec<String> {
        self.adapters.iter().map(|a| a.name().to_string()).collect()
    }

    /// Runs every adapter once and merges the results (later adapters overwrite earlier
    /// ones), without the excluded names. A failing adapter contributes its previous result.
    pub async fn round(&mut self) -> (Services, Vec<AdapterRound>) {
        let mut merged = Services::new();
        let mut report = Vec::with_capacity(self.adapters.len());
        for (adapter, last) in self.adapters.iter().zip(self.last.iter_mut()) {
            let result = match adapter.discover().await {
                Ok(found) => {
                    let n = found.len();
                    *last = Some(found);
                    Ok(n)
                }
                Err(e) => {
                    tracing::warn!(adapter = adapter.name(), "discovery failed: {e}");
                    Err(e.to_string())
                }
            };
            report.push(AdapterRound {
                adapter: adapter.name().to_string(),
                result,
            });
            if let Some(found) = last {
                for (name, info) in found.iter() {
                    merged.insert(name.clone(), info.clone());
                }
            }
        }
        merged.retain(|name, _| {
            let excluded = self.exclude.is_excluded(name);
            if excluded {
                tracing::debug!(service = %name, "service excluded");
            }
            !excluded
        });
        (merged, report)
    }

    /// Runs a first round, then one every `interval`, publishing each result that differs
    /// from the previous one. The task ends when every receiver is gone.
    pub async fn spawn(mut self, interval: Duration) -> watch::Receiver<Services> {
        let (first, _) = self.round().await;
        log_summary(&first);
        let (tx, rx) = watch::channel(first);
        tokio::spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = tx.closed() => return,
                }
                let (found, _) = self.round().await;
                tx.send_if_modified(|current| {
                    if *current == found {
                        return false;
                    }
                    log_summary(&found);
                    *current = found;
                    true
                });
            }
        });
        rx
    }
}

/// One log line per discovery result that changed: how many services, grouped by node.
fn log_summary(services: &Services) {
    let mut by_node: BTreeMap<&str, usize> = BTreeMap::new();
    for info in services.values() {
        *by_node.entry(info.node_id.as_str()).or_default() += 1;
    }
    let groups: Vec<String> = by_node
        .iter()
        .map(|(node, n)| match *node {
            "" => std::format!("{n} local"),
            node => std::format!("{n} on node {node}"),
        })
        .collect();
    tracing::info!(
        services = services.len(),
        "discovered {} services ({})",
        services.len(),
        groups.join(", ")
    );
}

/// A fixed list of services (the `--static-services` syntax, or firmware's own list).
pub struct Fixed {
    name: String,
    services: Services,
}

impl Fixed {
    pub fn new(name: impl Into<String>, services: Services) -> Self {
        Fixed {
            name: name.into(),
            services,
        }
    }
}

impl Discover for Fixed {
    fn name(&self) -> &str {
        &self.name
    }
    fn discover(&self) -> DiscoverFuture<'_> {
        Box::pin(async move { Ok(self.services.clone()) })
    }
}

/// Services from a TOML file, read again every round so edits are picked up:
///
/// ```toml
/// [services.cluster-admin]
/// target = "127.0.0.1:9090"
/// tls = true
/// label = "Cluster admin"   # default: the name
/// host = "admin.lan"        # optional, the upstream Host
/// path = "/"                # optional
/// ```
pub struct StaticFile {
    path: PathBuf,
}

/// Services of the TOML form.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicesFile {
    #[serde(default)]
    services: BTreeMap<String, FileService>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileService {
    target: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    label: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    path_prefix: String,
    #[serde(default)]
    module_id: String,
    #[serde(default)]
    node_id: String,
}

impl StaticFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StaticFile { path: path.into() }
    }

    /// Parses the TOML form; every name and target is checked so a typo is reported with
    /// the service it belongs to.
    pub fn parse(path: &Path, text: &str) -> Result<Services, DiscoveryError> {
        let invalid = |message: String| DiscoveryError::Invalid {
            what: path.display().to_string(),
            message,
        };
        let file: ServicesFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut services = Services::new();
        for (name, s) in file.services {
            crate::policy::validate_connect_name(&name)
                .map_err(|e| invalid(std::format!("service {name:?}: {e}")))?;
            crate::policy::validate_target_syntax(&s.target)
                .map_err(|e| invalid(std::format!("service {name:?}: {e}")))?;
            if !s.host.is_empty() {
                crate::policy::validate_upstream_host(&s.host)
                    .map_err(|e| invalid(std::format!("service {name:?}: host: {e}")))?;
            }
            let label = if s.label.is_empty() {
                name.clone()
            } else {
                s.label
            };
            services.insert(
                name,
                ServiceInfo {
                    target: s.target,
                    host: s.host,
                    tls: s.tls,
                    label,
                    path: s.path,
                    path_prefix: s.path_prefix,
                    module_id: s.module_id,
                    node_id: s.node_id,
                },
            );
        }
        Ok(services)
    }
}

impl Discover for StaticFile {
    fn name(&self) -> &str {
        "static-file"
    }
    fn discover(&self) -> DiscoverFuture<'_> {
        Box::pin(async move {
            let text = tokio::fs::read_to_string(&self.path)
                .await
                .map_err(|source| DiscoveryError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            Self::parse(&self.path, &text)
        })
    }
}

/// The appliance platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// NethServer 8: node environment file present and Redis answering.
    Ns8,
    /// NethSecurity: `/www-ns/index.html`.
    NethSecurity,
    /// Plain OpenWrt: `/etc/openwrt_release`.
    OpenWrt,
    /// Nothing known: static services only.
    None,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ns8 => "ns8",
            Platform::NethSecurity => "nethsecurity",
            Platform::OpenWrt => "openwrt",
            Platform::None => "none",
        }
    }
}

/// Where the platform's files are: `/` on an appliance, a fixture directory in tests.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            root: PathBuf::from("/"),
        }
    }
}

impl Paths {
    /// `rel` (an absolute appliance path such as `/etc/config/uhttpd`) under the root.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

/// The NethServer 8 node environment file, whose `NODE_ID=` names the local node.
pub const NS8_NODE_ENV: &str = "/var/lib/nethserver/node/state/environment";

/// Tells the platform from its files; NethServer 8 also needs Redis to answer at
/// `redis_addr` (`ping` is that check: the `ns8` adapter's PING, or `None` without the
/// feature, which rules NethServer 8 out).
pub async fn detect<F, Fut>(paths: &Paths, ping: Option<F>) -> Platform
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = bool>,
{
    if paths.file(NS8_NODE_ENV).is_file()
        && let Some(ping) = ping
        && ping().await
    {
        return Platform::Ns8;
    }
    if paths.file("/www-ns/index.html").is_file() {
        return Platform::NethSecurity;
    }
    if paths.file("/etc/openwrt_release").is_file() {
        return Platform::OpenWrt;
    }
    Platform::None
}

/// Shared handle on a discovery adapter (for firmware that keeps one for itself).
pub type SharedDiscover = Arc<dyn Discover>;

impl Discover for Arc<dyn Discover> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn discover(&self) -> DiscoverFuture<'_> {
        (**self).discover()
    }
}

#[cfg(test)]
mod tests;
