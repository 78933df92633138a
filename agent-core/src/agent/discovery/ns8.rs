//! NethServer 8 adapter (REFERENCE 3.3.2): the cluster's nodes and leader come from Redis,
//! each node's routes from its Traefik through `api-cli`, and the rules that turn them into
//! services from [`crate::discovery::ns8`].
//!
//! Every Redis call is bounded by [`Ns8Config::redis_timeout`], `api-cli` by
//! [`Ns8Config::command_timeout`] (its whole process group is killed when it takes longer).
//! Each round opens one multiplexed connection and drops it at the end: a round runs every
//! few minutes, so a connection kept across rounds would buy nothing and would have to
//! survive Redis restarts and replica failovers in between.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::format;
use std::net::IpAddr;
use std::path::PathBuf;
use std::prelude::rust_2024::*;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, IntoConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Discover, DiscoverFuture, DiscoveryError, NS8_NODE_ENV, Services};
use crate::discovery::ns8::{
    self as rules, LIST_ROUTES_DATA, MAX_ROUTES_BYTES, Placement, Route, TRAEFIK_KEY_PATTERN,
};
use crate::plugin_output::clip;

pub use crate::discovery::ns8::DEFAULT_REDIS_ADDR;
/// Redis's port when an address has none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;
/// How long `api-cli` may run by default.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one Redis call (or connecting) may take by default.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of `api-cli`'s stderr kept for an error message.
pub const MAX_STDERR: usize = 4 * 1024;
/// Most characters of a command's output repeated in an error message.
const MAX_SHOWN: usize = 512;
/// Keys asked for per `SCAN` step.
const SCAN_COUNT: u32 = 100;
/// Most `SCAN` steps per round: a bound on a server that never returns cursor 0.
const MAX_SCAN_STEPS: usize = 100_000;
/// How long a killed `api-cli` may take to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// Where the cluster state and the route lister are.
#[derive(Debug, Clone)]
pub struct Ns8Config {
    /// `host:port` (as the reference's `--redis-addr`), or a `redis://[user:password@]host:port[/db]` URL.
    pub redis_addr: String,
    /// Database number; overrides the URL's (default 0).
    pub redis_db: Option<i64>,
    /// The node environment file whose `NODE_ID=` names the local node.
    pub node_env_file: PathBuf,
    /// The `api-cli` program (looked up on `PATH` unless it contains a `/`).
    pub api_cli: PathBuf,
    /// `PATH` for `api-cli` and for finding it (`None`: the agent's own).
    pub search_path: Option<OsString>,
    /// How long `api-cli` may run.
    pub command_timeout: Duration,
    /// How long connecting to Redis, and each Redis call, may take.
    pub redis_timeout: Duration,
}

impl Default for Ns8Config {
    fn default() -> Self {
        Ns8Config {
            redis_addr: DEFAULT_REDIS_ADDR.to_string(),
            redis_db: None,
            node_env_file: PathBuf::from(NS8_NODE_ENV),
            api_cli: PathBuf::from("api-cli"),
            search_path: None,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
        }
    }
}

impl Ns8Config {
    /// The defaults with Redis at `redis_addr`.
    pub fn new(redis_addr: impl Into<String>) -> Self {
        Ns8Config {
            redis_addr: redis_addr.into(),
            ..Ns8Config::default()
        }
    }
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cluster {
    /// The leader (`HGET cluster/environment NODE_ID`), when Redis names one.
    pub leader: Option<String>,
    /// This node (`NODE_ID=` of the node environment file), when the file names one.
    pub local: Option<String>,
    /// Nodes with a Traefik instance, in numeric order.
    pub nodes: Vec<String>,
}

impl Cluster {
    /// Whether this node is the cluster's leader (both known and equal).
    pub fn is_leader(&self) -> bool {
        self.local.is_some() && self.leader == self.local
    }
}

/// The NethServer 8 discovery adapter.
pub struct Ns8 {
    config: Ns8Config,
    /// The client, or why the address does not parse (reported by every call).
    client: Result<redis::Client, String>,
    /// The address without a password, for messages.
    shown_addr: String,
}

impl Ns8 {
    /// An adapter for `config`; a bad Redis address is reported by each call, not here.
    pub fn new(config: Ns8Config) -> Self {
        let client = client(&config);
        let shown_addr = without_password(&config.redis_addr);
        Ns8 {
            config,
            client,
            shown_addr,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Ns8Config {
        &self.config
    }

    /// Whether Redis answers `PING` within the Redis timeout (part of platform detection).
    pub async fn ping(&self) -> bool {
        let Ok(mut redis) = self.connect().await else {
            return false;
        };
        redis
            .query::<String>(redis::cmd("PING"), "PING")
            .await
            .is_ok()
    }

    /// The nodes, the leader and this node. Redis failures are errors; an unreadable node
    /// environment file only leaves [`Cluster::local`] empty.
    pub async fn cluster(&self) -> Result<Cluster, DiscoveryError> {
        let mut redis = self.connect().await?;
        let nodes = redis.nodes().await?;
        let leader = redis.leader().await?;
        let local = self.local_node().await;
        Ok(Cluster {
            leader,
            local,
            nodes,
        })
    }

    /// Whether this node leads the cluster.
    pub async fn is_leader(&self) -> Result<bool, DiscoveryError> {
        Ok(self.cluster().await?.is_leader())
    }

    /// The services of every node (REFERENCE 3.3.2). A node whose routes cannot be had is
    /// logged and left out; when every node fails, the first failure is the error.
    pub async fn services(&self) -> Result<Services, DiscoveryError> {
        let mut redis = self.connect().await?;
        let nodes = redis.nodes().await?;
        if nodes.is_empty() {
            return Ok(Services::new());
        }
        let local = self.local_node().await;
        let leader = redis.leader().await.unwrap_or_else(|e| {
            tracing::warn!("no NethServer 8 leader hint: {e}");
            None
        });
        let order = rules::order_nodes(&nodes, leader.as_deref(), local.as_deref());
        let mut merged = Services::new();
        let mut labels = BTreeMap::new();
        let mut first_failure = None;
        let mut failures = 0;
        for node in &order {
            let found = self
                .node_services(&mut redis, node, local.as_deref(), &mut labels)
                .await;
            match found {
                Ok(found) => {
                    let shadowed = rules::merge_first_wins(&mut merged, found);
                    if !shadowed.is_empty() {
                        tracing::debug!(node = %node, ?shadowed, "services already published by an earlier node");
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %node, "NethServer 8 node left out: {e}");
                    failures += 1;
                    first_failure.get_or_insert(e);
                }
            }
        }
        match first_failure {
            Some(e) if failures == order.len() => Err(e),
            _ => Ok(merged),
        }
    }

    /// Runs `api-cli run module/<traefik>/list-routes --data '{"expand_list": true}'` and
    /// parses what it prints.
    pub async fn list_routes(&self, traefik: &str) -> Result<Vec<Route>, DiscoveryError> {
        let action = format!("module/{traefik}/list-routes");
        let shown = format!("{} run {action}", self.config.api_cli.display());
        if !rules::is_module_name(traefik) {
            return Err(DiscoveryError::Invalid {
                what: "traefik module id".to_string(),
                message: format!("{:?} is not a module id", clip(traefik, MAX_SHOWN)),
            });
        }
        let stdout = self.run_api_cli(&action, &shown).await?;
        rules::parse_routes(&stdout).map_err(|e| DiscoveryError::Invalid {
            what: format!("output of `{shown}`"),
            message: e.to_string(),
        })
    }

    /// The services of one node, dialed directly when it is `local`, through its Traefik on
    /// the cluster VPN otherwise.
    async fn node_services(
        &self,
        redis: &mut Session<'_>,
        node: &str,
        local: Option<&str>,
        labels: &mut BTreeMap<String, String>,
    ) -> Result<Vec<(String, crate::document::ServiceInfo)>, DiscoveryError> {
        let placement = if local == Some(node) {
            Placement::Local
        } else {
            Placement::Remote(redis.vpn_address(node).await?)
        };
        let traefik = redis.traefik(node).await?;
        let routes = self.list_routes(&traefik).await?;
        let mut services = Vec::with_capacity(routes.len());
        for route in &routes {
            let label = match rules::module_id(&route.instance) {
                Some(module) => redis.label(module, labels).await,
                None => String::new(),
            };
            match rules::route_service(route, node, placement, &label) {
                Ok(service) => services.push(service),
                Err(e) => tracing::info!(node = %node, traefik = %traefik, "route left out: {e}"),
            }
        }
        Ok(services)
    }

    /// This node's id: `NODE_ID=` of the node environment file (quotes and `export`
    /// tolerated); `None`, logged, when the file cannot be read or names no valid id.
    pub async fn local_node(&self) -> Option<String> {
        let path = &self.config.node_env_file;
        let text = match tokio::fs::read_to_string(path).await {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(
                    "cannot read {}: {e}; every node is treated as remote",
                    path.display()
                );
                return None;
            }
        };
        let id = rules::node_id_from_environment(&text)?;
        match crate::policy::validate_node_id(id) {
            Ok(()) => Some(id.to_string()),
            Err(e) => {
                tracing::warn!("{}: NODE_ID: {e}", path.display());
                None
            }
        }
    }

    async fn connect(&self) -> Result<Session<'_>, DiscoveryError> {
        let timeout = self.config.redis_timeout;
        let client = self
            .client
            .as_ref()
            .map_err(|message| DiscoveryError::Redis {
                addr: self.shown_addr.clone(),
                message: message.clone(),
            })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let connected = tokio::time::timeout(
            timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        match connected {
            Ok(Ok(conn)) => Ok(Session {
                conn,
                addr: &self.shown_addr,
                timeout,
            }),
            Ok(Err(e)) => Err(DiscoveryError::Redis {
                addr: self.shown_addr.clone(),
                message: format!("cannot connect: {e}"),
            }),
            Err(_) => Err(DiscoveryError::Timeout {
                what: format!("connecting to redis at {}", self.shown_addr),
                timeout,
            }),
        }
    }

    /// Runs `api-cli` in its own process group; its stdout, or an error naming what failed.
    async fn run_api_cli(&self, action: &str, shown: &str) -> Result<Vec<u8>, DiscoveryError> {
        let failed = |message: String| DiscoveryError::Command {
            command: shown.to_string(),
            message,
        };
        let mut command = tokio::process::Command::new(&self.config.api_cli);
        command
            .args(["run", action, "--data", LIST_ROUTES_DATA])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(path) = &self.config.search_path {
            command.env("PATH", path);
        }
        let mut child = command
            .spawn()
            .map_err(|e| failed(format!("cannot start: {e}")))?;
        let pgid = child.id();
        let outcome = tokio::time::timeout(self.config.command_timeout, collect(&mut child)).await;
        let outcome = match outcome {
            Ok(Ok(done)) => done,
            Ok(Err(message)) => {
                kill(&mut child, pgid).await;
                return Err(failed(message));
            }
            Err(_) => {
                kill(&mut child, pgid).await;
                return Err(DiscoveryError::Timeout {
                    what: shown.to_string(),
                    timeout: self.config.command_timeout,
                });
            }
        };
        let (status, stdout, stderr) = outcome;
        if !status.success() {
            let stderr = String::from_utf8_lossy(&stderr);
            let detail = if stderr.trim().is_empty() {
                String::from_utf8_lossy(&stdout).trim().to_string()
            } else {
                stderr.trim().to_string()
            };
            let mut message = status.to_string();
            if !detail.is_empty() {
                message.push_str(": ");
                message.push_str(&clip(&detail, MAX_SHOWN));
            }
            return Err(failed(message));
        }
        Ok(stdout)
    }
}

impl Discover for Ns8 {
    fn name(&self) -> &str {
        "ns8"
    }
    fn discover(&self) -> DiscoverFuture<'_> {
        Box::pin(self.services())
    }
}

/// The agent keeps the adapter shared: discovery runs it, the support-users code asks it
/// who leads the cluster.
impl Discover for Arc<Ns8> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn discover(&self) -> DiscoverFuture<'_> {
        (**self).discover()
    }
}

/// Waits for `child` to exit while reading its stdout (at most [`MAX_ROUTES_BYTES`]: more
/// is an error) and stderr (the first [`MAX_STDERR`] bytes kept, the rest drained).
async fn collect(
    child: &mut tokio::process::Child,
) -> Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>), String> {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read_stdout = async {
        let Some(stdout) = stdout else {
            return Ok(Vec::new());
        };
        let mut kept = Vec::new();
        stdout
            .take(MAX_ROUTES_BYTES as u64 + 1)
            .read_to_end(&mut kept)
            .await
            .map_err(|e| format!("cannot read its output: {e}"))?;
        if kept.len() > MAX_ROUTES_BYTES {
            return Err(format!("printed more than {MAX_ROUTES_BYTES} bytes"));
        }
        Ok(kept)
    };
    let read_stderr = async {
        match stderr {
            Some(stderr) => Ok(drain(stderr, MAX_STDERR).await),
            None => Ok(Vec::new()),
        }
    };
    let (stdout, stderr) = tokio::try_join!(read_stdout, read_stderr)?;
    let status = child
        .wait()
        .await
        .map_err(|e| format!("cannot wait for it: {e}"))?;
    Ok((status, stdout, stderr))
}

/// Reads `r` to its end, keeping the first `max` bytes.
async fn drain<R: AsyncRead + Unpin>(mut r: R, max: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
            }
        }
    }
}

/// Kills `child`'s process group and reaps the child.
async fn kill(child: &mut tokio::process::Child, pgid: Option<u32>) {
    if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // The child is not reaped yet, so its group id cannot have been reused.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.start_kill();
    let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
}

/// One round's Redis connection, with the timeout applied to every call.
struct Session<'a> {
    conn: MultiplexedConnection,
    addr: &'a str,
    timeout: Duration,
}

impl Session<'_> {
    async fn query<T: FromRedisValue>(
        &mut self,
        cmd: redis::Cmd,
        what: &str,
    ) -> Result<T, DiscoveryError> {
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut self.conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(DiscoveryError::Redis {
                addr: self.addr.to_string(),
                message: format!("{what}: {e}"),
            }),
            Err(_) => Err(DiscoveryError::Timeout {
                what: format!("redis {what}"),
                timeout: self.timeout,
            }),
        }
    }

    /// Node ids of the `node/<id>/default_instance/traefik` keys, in numeric order.
    async fn nodes(&mut self) -> Result<Vec<String>, DiscoveryError> {
        let mut nodes = Vec::new();
        let mut cursor: u64 = 0;
        for _ in 0..MAX_SCAN_STEPS {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(TRAEFIK_KEY_PATTERN)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let what = format!("SCAN {cursor} MATCH {TRAEFIK_KEY_PATTERN}");
            let (next, keys): (u64, Vec<String>) = self.query(cmd, &what).await?;
            nodes.extend(
                keys.iter()
                    .filter_map(|k| rules::node_id_from_traefik_key(k))
                    .map(str::to_string),
            );
            if next == 0 {
                return Ok(rules::order_nodes(&nodes, None, None));
            }
            cursor = next;
        }
        Err(DiscoveryError::Redis {
            addr: self.addr.to_string(),
            message: format!(
                "SCAN MATCH {TRAEFIK_KEY_PATTERN} did not end after {MAX_SCAN_STEPS} steps"
            ),
        })
    }

    /// The leader's node id, when Redis names a valid one.
    async fn leader(&mut self) -> Result<Option<String>, DiscoveryError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg("cluster/environment").arg("NODE_ID");
        let leader: Option<String> = self.query(cmd, "HGET cluster/environment NODE_ID").await?;
        Ok(
            leader.filter(|id| match crate::policy::validate_node_id(id) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("cluster/environment NODE_ID: {e}");
                    false
                }
            }),
        )
    }

    /// A remote node's cluster VPN address.
    async fn vpn_address(&mut self, node: &str) -> Result<IpAddr, DiscoveryError> {
        let key = format!("node/{node}/vpn");
        let what = format!("HGET {key} ip_address");
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&key).arg("ip_address");
        let ip: Option<String> = self.query(cmd, &what).await?;
        let invalid = |message: String| DiscoveryError::Invalid {
            what: format!("VPN address of node {node} ({what})"),
            message,
        };
        let ip = ip.ok_or_else(|| invalid("not set".to_string()))?;
        ip.trim()
            .parse()
            .map_err(|_| invalid(format!("{:?} is not an IP address", clip(&ip, MAX_SHOWN))))
    }

    /// The node's Traefik module id (`traefik1`).
    async fn traefik(&mut self, node: &str) -> Result<String, DiscoveryError> {
        let key = format!("node/{node}/default_instance/traefik");
        let mut cmd = redis::cmd("GET");
        cmd.arg(&key);
        let traefik: Option<String> = self.query(cmd, &format!("GET {key}")).await?;
        let invalid = |message: String| DiscoveryError::Invalid {
            what: format!("traefik of node {node} (GET {key})"),
            message,
        };
        match traefik {
            None => Err(invalid("not set".to_string())),
            Some(t) if !rules::is_module_name(&t) => Err(invalid(format!(
                "{:?} is not a module id",
                clip(&t, MAX_SHOWN)
            ))),
            Some(t) => Ok(t),
        }
    }

    /// The module's `ui_name`, asked once per round; empty when unset or unreadable.
    async fn label(&mut self, module: &str, cache: &mut BTreeMap<String, String>) -> String {
        if let Some(label) = cache.get(module) {
            return label.clone();
        }
        let key = format!("module/{module}/ui_name");
        let mut cmd = redis::cmd("GET");
        cmd.arg(&key);
        let label = match self
            .query::<Option<String>>(cmd, &format!("GET {key}"))
            .await
        {
            Ok(label) => label.unwrap_or_default(),
            Err(e) => {
                tracing::debug!("no label for {module}: {e}");
                String::new()
            }
        };
        cache.insert(module.to_string(), label.clone());
        label
    }
}

/// The Redis client for `config`, or why its address is unusable.
fn client(config: &Ns8Config) -> Result<redis::Client, String> {
    let addr = config.redis_addr.trim();
    let info = if addr.contains("://") {
        addr.into_connection_info()
            .map_err(|e| format!("invalid redis url: {e}"))?
    } else {
        let (host, port) = match crate::policy::split_target(addr) {
            Ok((host, port)) => (host, port),
            Err(_) if !addr.is_empty() && !addr.contains(':') => (addr, DEFAULT_REDIS_PORT),
            Err(e) => return Err(format!("invalid address, expected host:port: {e}")),
        };
        (host.to_string(), port)
            .into_connection_info()
            .map_err(|e| format!("invalid address: {e}"))?
    };
    let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
    if let Some(db) = config.redis_db {
        settings = settings.set_db(db);
    }
    let info = info.set_redis_settings(settings);
    redis::Client::open(info).map_err(|e| format!("invalid address: {e}"))
}

/// `addr` with the password of a `redis://user:password@host` URL replaced by `***`.
fn without_password(addr: &str) -> String {
    let Some((scheme, rest)) = addr.split_once("://") else {
        return addr.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(without_password("127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(
            without_password("redis://default:s3cret@127.0.0.1:6379/2"),
            "redis://default:***@127.0.0.1:6379/2"
        );
        assert_eq!(without_password("redis://:s3cret@h"), "redis://:***@h");
        assert_eq!(without_password("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn accepts_the_reference_address_forms() {
        let db = |config: Ns8Config| -> (String, i64) {
            let client = client(&config).unwrap();
            let info = client.get_connection_info();
            (format!("{}", info.addr()), info.redis_settings().db())
        };
        assert_eq!(
            db(Ns8Config::new("127.0.0.1:6379")),
            ("127.0.0.1:6379".to_string(), 0)
        );
        assert_eq!(
            db(Ns8Config::new("localhost")),
            ("localhost:6379".to_string(), 0)
        );
        assert_eq!(
            db(Ns8Config::new("[::1]:7000")),
            ("::1:7000".to_string(), 0)
        );
        assert_eq!(
            db(Ns8Config::new("redis://127.0.0.1:6380/3")),
            ("127.0.0.1:6380".to_string(), 3)
        );
        let mut config = Ns8Config::new("redis://127.0.0.1:6380/3");
        config.redis_db = Some(11);
        assert_eq!(db(config), ("127.0.0.1:6380".to_string(), 11));
        for bad in ["", "host:port", "::1:6379", "ftp://x"] {
            let err = client(&Ns8Config::new(bad)).unwrap_err();
            assert!(err.starts_with("invalid"), "{bad:?}: {err}");
        }
    }

    #[tokio::test]
    async fn a_bad_address_is_reported_by_each_call() {
        let ns8 = Ns8::new(Ns8Config::new("host:port"));
        assert!(!ns8.ping().await);
        let err = ns8.cluster().await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("redis at host:port: invalid address"),
            "{err}"
        );
    }

    #[test]
    fn leader_is_the_local_node_only_when_both_are_known() {
        let cluster = |leader: Option<&str>, local: Option<&str>| Cluster {
            leader: leader.map(str::to_string),
            local: local.map(str::to_string),
            nodes: vec![],
        };
        assert!(cluster(Some("1"), Some("1")).is_leader());
        assert!(!cluster(Some("1"), Some("2")).is_leader());
        assert!(!cluster(None, None).is_leader());
        assert!(!cluster(None, Some("1")).is_leader());
    }
}
