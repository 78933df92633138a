//! Platform detection and service discovery for the agent, and the local command
//! `tether-agent discover [--json]` that prints what would be published.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[cfg(any(feature = "ns8", test))]
use agent_core::agent::discovery::NS8_NODE_ENV;
#[cfg(feature = "ns8")]
use agent_core::agent::discovery::ns8::{Ns8, Ns8Config};
use agent_core::agent::discovery::openwrt::{NethSecurity, OpenWrt};
use agent_core::agent::discovery::{
    self, Discover, Discovery, Paths, Platform, Services, StaticFile,
};
use agent_core::agent::parse_go_duration;
#[cfg(feature = "ns8")]
use agent_core::agent::users::Ns8Role;
use agent_core::agent::users::{self, SupportUsers, UsersConfig};
use agent_core::exclude::ExcludeSet;
use agent_core::services::parse_static_services;
use clap::{Parser, Subcommand};

/// What the agent publishes and where it finds it.
#[derive(clap::Args, Debug, Clone)]
pub struct DiscoveryFlags {
    /// Static services: name=host:port[:host=vhost][:tls],...
    #[arg(long, env = "STATIC_SERVICES", value_name = "LIST", default_value = "")]
    pub static_services: String,
    /// TOML file of static services ([services.<name>] target, tls, label, host, path)
    #[arg(long, env = "TETHER_SERVICES_FILE", value_name = "PATH")]
    pub services_file: Option<PathBuf>,
    /// Comma-separated globs of service names to leave out
    #[arg(
        long,
        env = "EXCLUDE_PATTERNS",
        value_name = "LIST",
        default_value = ""
    )]
    pub exclude: String,
    /// Appliance platform: auto (detect), ns8, nethsecurity, openwrt or none (static only)
    #[arg(
        long,
        env = "TETHER_PLATFORM",
        value_name = "PLATFORM",
        default_value = "auto",
        value_parser = ["auto", "ns8", "nethsecurity", "openwrt", "none"]
    )]
    pub platform: String,
    /// Redis of the NethServer 8 node (host:port); NethServer 8 also needs its node
    /// environment file, so a Redis alone does not make a machine NethServer 8 (accepted and
    /// unused by builds without NethServer 8 support)
    #[arg(
        short = 'r',
        long,
        env = "REDIS_ADDR",
        value_name = "ADDR",
        default_value = agent_core::discovery::ns8::DEFAULT_REDIS_ADDR
    )]
    pub redis_addr: String,
    /// How often services are discovered again; a changed list is re-published (Go duration)
    #[arg(
        long,
        env = "DISCOVERY_INTERVAL",
        value_name = "DURATION",
        default_value = "5m"
    )]
    pub discovery_interval: String,
    /// Directory the appliance's files are read under (for chroots and fixtures)
    #[arg(
        long,
        env = "TETHER_PLATFORM_ROOT",
        value_name = "DIR",
        default_value = "/",
        hide = true
    )]
    pub platform_root: PathBuf,
    /// The NethServer 8 `api-cli` program
    #[arg(
        long,
        env = "TETHER_API_CLI",
        value_name = "PATH",
        default_value = "api-cli",
        hide = true
    )]
    pub api_cli: PathBuf,
}

/// Ephemeral support users (a temporary admin for the support session).
#[derive(clap::Args, Debug, Clone)]
pub struct UsersFlags {
    /// Do not create temporary support users (NethServer 8 cluster admin and domain users,
    /// NethSecurity local admin) for the session
    #[arg(long, env = "TETHER_NO_SUPPORT_USERS")]
    pub no_support_users: bool,
    /// Where the accounts being created are recorded, so a crashed agent removes them at its
    /// next start
    #[arg(
        long,
        env = "USERS_STATE_FILE",
        value_name = "PATH",
        default_value = agent_core::agent::users::DEFAULT_STATE_FILE
    )]
    pub users_state_file: PathBuf,
}

impl UsersFlags {
    /// Support users for the platform of `plan`: on the NethServer 8 leader and on
    /// NethSecurity; a NethServer 8 worker fetches the leader's. `None` elsewhere or when
    /// turned off.
    pub async fn support_users(&self, plan: &Plan) -> Option<SupportUsers> {
        if self.no_support_users {
            tracing::info!("support users turned off (--no-support-users)");
            return None;
        }
        let platform = match (plan.platform, &plan.ns8) {
            #[cfg(feature = "ns8")]
            (Platform::Ns8, Some(ns8)) => match ns8.is_leader().await {
                Ok(true) => users::Platform::Ns8(Ns8Role::Leader),
                Ok(false) => users::Platform::Ns8(Ns8Role::Worker),
                Err(e) => {
                    tracing::warn!(
                        "cannot tell whether this node leads the cluster ({e}); acting as a worker that fetches the leader's support users"
                    );
                    users::Platform::Ns8(Ns8Role::Worker)
                }
            },
            (Platform::NethSecurity, _) => users::Platform::NethSecurity,
            _ => return None,
        };
        let mut config = UsersConfig::new(platform);
        config.state_file = self.users_state_file.clone();
        Some(SupportUsers::new(config))
    }
}

/// A flag and what is wrong with its value.
pub type FlagProblem = (&'static str, String);

/// The adapters for the detected (or forced) platform, ready to run.
pub struct Plan {
    pub platform: Platform,
    pub discovery: Discovery,
    pub interval: Duration,
    /// The local NethServer 8 node, when this is one (the default `--node-id`).
    pub ns8_node: Option<String>,
    /// The NethServer 8 adapter (also tells whether this node leads the cluster).
    #[cfg(feature = "ns8")]
    pub ns8: Option<std::sync::Arc<Ns8>>,
    /// Without NethServer 8 support there is never an adapter.
    #[cfg(not(feature = "ns8"))]
    pub ns8: Option<std::convert::Infallible>,
}

/// What `--platform ns8` says to a build without NethServer 8 support.
#[cfg(not(feature = "ns8"))]
pub const NO_NS8: &str = "ns8 is not available: this tether-agent was built without \
                          NethServer 8 support (cargo feature `ns8`, left out of the MIPS \
                          builds for OpenWrt)";

impl DiscoveryFlags {
    /// Static services of `--static-services` (checked now, so a typo stops the agent).
    pub fn static_services(&self) -> Result<Services, FlagProblem> {
        parse_static_services(&self.static_services)
            .map_err(|e| ("--static-services", e.to_string()))
    }

    pub fn exclude_set(&self) -> Result<ExcludeSet, FlagProblem> {
        ExcludeSet::parse(&self.exclude).map_err(|e| ("--exclude", e.to_string()))
    }

    fn interval(&self) -> Result<Duration, FlagProblem> {
        let d = parse_go_duration(&self.discovery_interval)
            .map_err(|e| ("--discovery-interval", e.to_string()))?;
        if d < Duration::from_secs(1) {
            return Err(("--discovery-interval", "must be at least 1s".to_owned()));
        }
        Ok(d)
    }

    #[cfg(feature = "ns8")]
    fn ns8_adapter(&self, paths: &Paths) -> Ns8 {
        Ns8::new(Ns8Config {
            redis_addr: self.redis_addr.clone(),
            node_env_file: paths.file(NS8_NODE_ENV),
            api_cli: self.api_cli.clone(),
            ..Ns8Config::default()
        })
    }

    /// Detects the platform (unless forced) and builds its adapters: the TOML file first,
    /// then the platform's own. `--static-services` are not among them: the runtime
    /// publishes those itself, ahead of anything discovered.
    pub async fn plan(&self) -> Result<Plan, FlagProblem> {
        let interval = self.interval()?;
        let exclude = self.exclude_set()?;
        let paths = Paths {
            root: self.platform_root.clone(),
        };
        #[cfg(feature = "ns8")]
        let ns8 = std::sync::Arc::new(self.ns8_adapter(&paths));
        let platform = match self.platform.as_str() {
            #[cfg(feature = "ns8")]
            "ns8" => Platform::Ns8,
            #[cfg(not(feature = "ns8"))]
            "ns8" => return Err(("--platform", NO_NS8.to_owned())),
            "nethsecurity" => Platform::NethSecurity,
            "openwrt" => Platform::OpenWrt,
            "none" => Platform::None,
            #[cfg(feature = "ns8")]
            _ => {
                let probe = ns8.clone();
                discovery::detect(&paths, Some(|| async move { probe.ping().await })).await
            }
            // no Redis client: NethServer 8 is never detected
            #[cfg(not(feature = "ns8"))]
            _ => discovery::detect(&paths, None::<fn() -> std::future::Ready<bool>>).await,
        };
        tracing::info!(platform = platform.as_str(), "platform");
        let mut adapters: Vec<Box<dyn Discover>> = vec![];
        if let Some(file) = &self.services_file {
            adapters.push(Box::new(StaticFile::new(file.clone())));
        }
        #[cfg(feature = "ns8")]
        let (ns8_node, ns8_adapter) = match platform {
            Platform::Ns8 => {
                adapters.push(Box::new(ns8.clone()));
                (read_node_id(&paths.file(NS8_NODE_ENV)), Some(ns8))
            }
            _ => (None, None),
        };
        // detect() without a Redis probe never answers Ns8, and the flag was refused above
        #[cfg(not(feature = "ns8"))]
        let (ns8_node, ns8_adapter) = (None, None);
        match platform {
            Platform::Ns8 => {} // its adapter is in already
            Platform::NethSecurity => adapters.push(Box::new(NethSecurity {
                paths: paths.clone(),
                hostname: None,
            })),
            Platform::OpenWrt => adapters.push(Box::new(OpenWrt {
                paths: paths.clone(),
                hostname: None,
            })),
            Platform::None => {}
        }
        Ok(Plan {
            platform,
            discovery: Discovery::new(adapters, exclude),
            interval,
            ns8_node,
            ns8: ns8_adapter,
        })
    }
}

/// `NODE_ID=` of a NethServer 8 node environment file.
#[cfg(feature = "ns8")]
fn read_node_id(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    agent_core::discovery::ns8::node_id_from_environment(&text).map(str::to_owned)
}

/// `tether-agent discover`.
#[derive(Parser, Debug)]
#[command(name = "tether-agent", version)]
struct Tool {
    #[command(subcommand)]
    command: ToolCommand,
}

#[derive(Subcommand, Debug)]
enum ToolCommand {
    /// Detect the platform, discover services and print what would be published
    Discover {
        /// Print the manifest as the JSON the relay receives
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        flags: DiscoveryFlags,
    },
}

/// Runs `discover` when the first argument names it; `None` otherwise.
pub fn dispatch(args: &[OsString]) -> Option<ExitCode> {
    if args.get(1)?.to_str()? != "discover" {
        return None;
    }
    let Tool {
        command: ToolCommand::Discover { json, flags },
    } = Tool::parse_from(args);
    Some(
        match crate::runtime(tokio::runtime::Builder::new_current_thread()) {
            Ok(runtime) => runtime.block_on(discover(&flags, json)),
            Err(code) => code,
        },
    )
}

async fn discover(flags: &DiscoveryFlags, json: bool) -> ExitCode {
    let problem = |(flag, e): FlagProblem| {
        eprintln!("tether-agent: {flag}: {e}");
        ExitCode::from(1)
    };
    let statics = match flags.static_services() {
        Ok(s) => s,
        Err(e) => return problem(e),
    };
    let exclude = match flags.exclude_set() {
        Ok(s) => s,
        Err(e) => return problem(e),
    };
    let mut plan = match flags.plan().await {
        Ok(p) => p,
        Err(e) => return problem(e),
    };
    let (found, rounds) = plan.discovery.round().await;
    // What the runtime publishes: static services first, then what discovery found.
    let mut services: Services = statics
        .into_iter()
        .filter(|(name, _)| !exclude.is_excluded(name))
        .collect();
    for (name, info) in found {
        services.entry(name).or_insert(info);
    }
    let failed = rounds.iter().any(|r| r.result.is_err());
    if json {
        let manifest = agent_core::document::Manifest {
            version: 1,
            services,
        };
        print!(
            "{}",
            String::from_utf8_lossy(&agent_core::document::to_json_line(&manifest))
        );
    } else {
        print!("{}", table(plan.platform, &rounds, &services));
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The platform, each adapter's outcome, then one line per service.
fn table(platform: Platform, rounds: &[discovery::AdapterRound], services: &Services) -> String {
    let mut out = format!("platform: {}\n", platform.as_str());
    for r in rounds {
        match &r.result {
            Ok(n) => out.push_str(&format!("adapter {}: {n} services\n", r.adapter)),
            Err(e) => out.push_str(&format!("adapter {}: FAILED: {e}\n", r.adapter)),
        }
    }
    out.push_str(&format!("\n{} services\n", services.len()));
    for (name, s) in services {
        let mut line = format!(
            "{name:<28} {}{}",
            if s.tls { "https://" } else { "http://" },
            s.target
        );
        if !s.path.is_empty() {
            line.push_str(&s.path);
        }
        if !s.host.is_empty() {
            line.push_str(&format!("  host={}", s.host));
        }
        if !s.node_id.is_empty() {
            line.push_str(&format!("  node={}", s.node_id));
        }
        if !s.label.is_empty() && s.label != *name {
            line.push_str(&format!("  \"{}\"", s.label));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The discovery flags of `tether-agent discover ARGS`.
    #[cfg(not(feature = "ns8"))]
    fn discover_flags(args: &[&str]) -> DiscoveryFlags {
        let args = ["tether-agent", "discover"].iter().chain(args);
        let Tool {
            command: ToolCommand::Discover { flags, .. },
        } = Tool::try_parse_from(args).unwrap();
        flags
    }

    #[cfg(not(feature = "ns8"))]
    fn plan(flags: &DiscoveryFlags) -> Result<Plan, FlagProblem> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(flags.plan())
    }

    #[cfg(not(feature = "ns8"))]
    #[test]
    fn platform_ns8_is_refused_by_a_build_without_it() {
        let Err((flag, message)) = plan(&discover_flags(&["--platform", "ns8"])) else {
            panic!("--platform ns8 was planned without the ns8 feature");
        };
        assert_eq!(flag, "--platform");
        assert!(
            message.contains("without NethServer 8 support"),
            "{message}"
        );
    }

    #[cfg(not(feature = "ns8"))]
    #[test]
    fn a_nethserver_8_node_is_not_detected_by_a_build_without_it() {
        // what makes a NethServer 8 node: its environment file (and a Redis answering, which
        // a build without the Redis client cannot ask)
        let root = tempfile::tempdir().unwrap();
        let env = root.path().join(NS8_NODE_ENV.trim_start_matches('/'));
        std::fs::create_dir_all(env.parent().unwrap()).unwrap();
        std::fs::write(&env, "NODE_ID=1\n").unwrap();
        let root = root.path().to_str().unwrap();
        let Ok(plan) = plan(&discover_flags(&["--platform-root", root])) else {
            panic!("auto-detection failed");
        };
        assert_eq!(plan.platform, Platform::None);
        assert!(plan.ns8_node.is_none() && plan.ns8.is_none());
    }

    #[cfg(feature = "ns8")]
    #[test]
    fn node_id_is_read_with_or_without_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("environment");
        std::fs::write(&file, "FOO=1\nexport NODE_ID=\"7\"\n").unwrap();
        assert_eq!(read_node_id(&file).as_deref(), Some("7"));
        std::fs::write(&file, "NODE_ID=12\n").unwrap();
        assert_eq!(read_node_id(&file).as_deref(), Some("12"));
        std::fs::write(&file, "NODE_ID=\n").unwrap();
        assert_eq!(read_node_id(&file), None);
    }
}
