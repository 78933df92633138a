//! `tether-agent`: the flags and environment variables of the reference `tunnel-client` into an
//! [`AgentConfig`], tracing, [`agent::run`], and an exit code a service manager can act on:
//! 0 stopped by SIGINT/SIGTERM, 1 unusable configuration, 2 usage error, 3 the relay closed
//! the support session (do not restart).

use std::path::PathBuf;
use std::process::ExitCode;

use agent_core::agent::{self, AgentConfig, AgentError, ProxySettings, RunOutcome, Secret};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

mod diagnostics;
mod platform;

/// Exit code when the relay ended the support session (close code 4000).
const EXIT_SESSION_CLOSED: u8 = 3;
/// Exit code for an unusable configuration.
const EXIT_CONFIG: u8 = 1;

/// Tether remote-support agent (drop-in replacement for tunnel-client).
#[derive(Parser, Debug)]
#[command(
    name = "tether-agent",
    version,
    about,
    after_help = "Local commands: `tether-agent diagnostics [--json]` prints the health report; \
                  `tether-agent plugin check <file>` validates a diagnostics plugin."
)]
struct Cli {
    /// Relay WebSocket URL, e.g. wss://my.example.com/support/api/tunnel
    #[arg(short = 'u', long, env = "SUPPORT_URL", value_name = "URL")]
    url: String,
    /// System key (Basic-auth user)
    #[arg(short = 'k', long, env = "SYSTEM_KEY", value_name = "KEY")]
    key: String,
    /// System secret (Basic-auth password)
    #[arg(
        short = 's',
        long,
        env = "SYSTEM_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        value_parser = parse_secret
    )]
    secret: Secret,
    /// Cluster node id (1 to 10 digits), sent as node_id
    #[arg(short = 'n', long, env = "NODE_ID", value_name = "ID")]
    node_id: Option<String>,
    /// Do not verify the relay certificate (env TLS_INSECURE=true)
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    tls_insecure: Option<String>,
    /// First reconnect delay (Go duration: 300ms, 5s, 1m30s)
    #[arg(
        long,
        env = "RECONNECT_DELAY",
        value_name = "DURATION",
        default_value = "5s"
    )]
    reconnect_delay: String,
    /// Reconnect delay cap (Go duration)
    #[arg(
        long,
        env = "MAX_RECONNECT_DELAY",
        value_name = "DURATION",
        default_value = "5m"
    )]
    max_reconnect_delay: String,
    /// PEM file of extra trusted roots for the relay certificate
    #[arg(long, env = "TETHER_CA_FILE", value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// SHA-256 of the relay certificate's public key (hex or base64); the chain then need not verify
    #[arg(long, env = "TETHER_RELAY_PIN", value_name = "SHA256")]
    relay_pin: Option<String>,
    /// Refuse web terminals (CONNECT terminal); the relay is told so and hides the terminal
    #[arg(long, env = "TETHER_NO_TERMINAL")]
    no_terminal: bool,
    /// User whose login shell the web terminal runs (default: the agent's own user; another
    /// user needs root)
    #[arg(long, env = "TETHER_TERMINAL_USER", value_name = "USER")]
    terminal_user: Option<String>,

    #[command(flatten)]
    diagnostics: diagnostics::DiagnosticsFlags,

    #[command(flatten)]
    discovery: platform::DiscoveryFlags,

    #[command(flatten)]
    users: platform::UsersFlags,

    #[command(flatten)]
    later: NotYetSupported,
}

/// Keeps the secret out of `Debug` output from the moment it is parsed.
fn parse_secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

/// Reference flags the agent does not implement yet: accepted so that existing unit files keep
/// working, and ignored with a log line.
#[derive(clap::Args, Debug, Default)]
struct NotYetSupported {
    /// (not supported yet, ignored)
    #[arg(long, env = "USERS_DIR", value_name = "DIR")]
    users_dir: Option<String>,
    /// (not supported yet, ignored)
    #[arg(long, env = "USERS_PLUGIN_TIMEOUT", value_name = "DURATION")]
    users_plugin_timeout: Option<String>,
    /// (not supported yet, ignored)
    #[arg(long, env = "USERS_TOTAL_TIMEOUT", value_name = "DURATION")]
    users_total_timeout: Option<String>,
}

impl NotYetSupported {
    /// The flags that were given (by flag or environment).
    fn given(&self) -> Vec<&'static str> {
        [
            ("--users-dir", self.users_dir.is_some()),
            (
                "--users-plugin-timeout",
                self.users_plugin_timeout.is_some(),
            ),
            ("--users-total-timeout", self.users_total_timeout.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }
}

/// A flag with a value the agent cannot use.
#[derive(Debug, PartialEq, Eq)]
struct FlagError {
    flag: String,
    message: String,
}

impl std::fmt::Display for FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.flag, self.message)
    }
}

fn flag_error(flag: &str, message: impl std::fmt::Display) -> FlagError {
    FlagError {
        flag: flag.to_owned(),
        message: message.to_string(),
    }
}

/// The flag (or variable) a config setting comes from.
fn flag_for(setting: &str) -> String {
    if setting.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        // environment-only settings (HTTPS_PROXY ...)
        return setting.to_owned();
    }
    format!("--{}", setting.replace('_', "-"))
}

/// Turns the parsed flags into a validated config. `tls_insecure_env` is the value of
/// `TLS_INSECURE` (only `"true"` counts, like the reference).
fn build_config(
    cli: &Cli,
    tls_insecure_env: Option<&str>,
    proxy: ProxySettings,
) -> Result<AgentConfig, FlagError> {
    let mut config = AgentConfig::new(&cli.url, &cli.key, cli.secret.clone());
    config.proxy = proxy;
    config.node_id = cli.node_id.clone().filter(|n| !n.is_empty());
    config.static_services = cli
        .discovery
        .static_services()
        .map_err(|(flag, e)| flag_error(flag, e))?;
    config.exclude = cli
        .discovery
        .exclude_set()
        .map_err(|(flag, e)| flag_error(flag, e))?;
    config.tls_insecure = match cli.tls_insecure.as_deref() {
        Some(v) => agent::parse_go_bool(v).map_err(|e| flag_error("--tls-insecure", e))?,
        None => tls_insecure_env == Some("true"),
    };
    config.reconnect_delay = agent::parse_go_duration(&cli.reconnect_delay)
        .map_err(|e| flag_error("--reconnect-delay", e))?;
    config.max_reconnect_delay = agent::parse_go_duration(&cli.max_reconnect_delay)
        .map_err(|e| flag_error("--max-reconnect-delay", e))?;
    config.ca_file = cli.ca_file.clone();
    config.diagnostics = cli
        .diagnostics
        .to_config()
        .map_err(|(flag, e)| flag_error(flag, e))?;
    config.terminal = agent::terminal::TerminalSettings {
        // a build without the `pty` feature refuses terminals (and tells the relay so)
        enabled: cfg!(feature = "pty") && !cli.no_terminal,
        user: cli.terminal_user.clone().filter(|u| !u.is_empty()),
    };
    config
        .terminal
        .check()
        .map_err(|e| flag_error("--terminal-user", e))?;
    config.relay_pin = cli
        .relay_pin
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(agent::parse_relay_pin)
        .transpose()
        .map_err(|e| flag_error("--relay-pin", e))?;
    config
        .validate()
        .map_err(|e| flag_error(&flag_for(e.setting()), e))?;
    Ok(config)
}

/// Detects the platform, starts discovery and runs the agent.
async fn start(
    mut config: AgentConfig,
    cli: &Cli,
) -> Result<Result<RunOutcome, AgentError>, FlagError> {
    let plan = cli
        .discovery
        .plan()
        .await
        .map_err(|(flag, e)| flag_error(flag, e))?;
    if config.node_id.is_none()
        && let Some(node) = plan.ns8_node.clone()
    {
        tracing::info!(node = %node, "node id from the NethServer 8 node environment");
        config.node_id = Some(node);
    }
    config.support_users = cli
        .users
        .support_users(&plan)
        .await
        .map(std::sync::Arc::new);
    config.service_source = Some(plan.discovery.spawn(plan.interval).await);
    Ok(agent::run(config, shutdown_signal()).await)
}

/// Builds the tokio runtime of a command; the error is the exit code, already explained.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("tether-agent: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => tracing::warn!("cannot watch SIGTERM: {e}"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The log filter of `RUST_LOG`: a level (`debug`), `target=level` pairs, or both
/// (`info,agent_core::agent=debug`). Unset, empty or unreadable is `info`. `Targets` reads the
/// same directives as `EnvFilter` without its span and field filters, which would need a
/// regex engine in every appliance build.
fn log_filter(rust_log: Option<&str>) -> Targets {
    rust_log
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

fn init_tracing() {
    let rust_log = std::env::var("RUST_LOG").ok();
    tracing_subscriber::registry()
        .with(log_filter(rust_log.as_deref()))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = diagnostics::dispatch(&args) {
        return code;
    }
    if let Some(code) = platform::dispatch(&args) {
        return code;
    }
    let cli = Cli::parse_from(args);
    let empty: Vec<&str> = [
        ("--url", cli.url.is_empty()),
        ("--key", cli.key.is_empty()),
        ("--secret", cli.secret.is_empty()),
    ]
    .into_iter()
    .filter_map(|(flag, empty)| empty.then_some(flag))
    .collect();
    if !empty.is_empty() {
        Cli::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                format!("{} must not be empty", empty.join(", ")),
            )
            .exit();
    }
    init_tracing();
    for flag in cli.later.given() {
        tracing::warn!("{flag} is not supported yet, ignored");
    }
    let tls_insecure_env = std::env::var("TLS_INSECURE").ok();
    let config = match build_config(&cli, tls_insecure_env.as_deref(), ProxySettings::from_env()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tether-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let outcome = match runtime.block_on(start(config, &cli)) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("tether-agent: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match outcome {
        Ok(RunOutcome::Shutdown) => ExitCode::SUCCESS,
        Ok(RunOutcome::SessionClosed) => ExitCode::from(EXIT_SESSION_CLOSED),
        Err(AgentError::Config(e)) => {
            eprintln!("tether-agent: {}: {e}", flag_for(e.setting()));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("tether-agent: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

#[cfg(test)]
mod tests;
