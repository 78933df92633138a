//! `tether-relay serve` settings: flags with environment fallbacks, validated at start.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 30s, 5m, 24h)"))
}

fn trusted(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR network"))
}

/// Highest `--max-streams-per-tunnel`: below the relay's yamux stream limit, leaving room for
/// the agent's control streams and commands.
pub const MAX_STREAMS_PER_TUNNEL: usize = agent_core::transport::MAX_STREAMS_RELAY - 24;

/// Settings of the relay server.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (HTTP; put a TLS-terminating proxy in front for production).
    #[arg(long, env = "TETHER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Proxies whose X-Forwarded-For is believed (IP or CIDR; repeat or comma-separate).
    #[arg(long = "trusted-proxy", env = "TETHER_TRUSTED_PROXIES", value_delimiter = ',', value_parser = trusted)]
    pub trusted_proxies: Vec<IpNet>,
    /// How long a session waits for its agent to come back after the tunnel drops.
    #[arg(long, env = "TETHER_GRACE_PERIOD", default_value = "60s", value_parser = duration)]
    pub grace_period: Duration,
    /// Lifetime of a new session (operators can extend it).
    #[arg(long, env = "TETHER_SESSION_LIFETIME", default_value = "24h", value_parser = duration)]
    pub session_lifetime: Duration,
    /// How often expired sessions and disabled systems are swept.
    #[arg(long, env = "TETHER_SWEEP_INTERVAL", default_value = "30s", value_parser = duration)]
    pub sweep_interval: Duration,
    /// Tunnel handshakes allowed per client address and window (0 = unlimited).
    #[arg(long, env = "TETHER_RATE_LIMIT_PER_IP", default_value_t = 10)]
    pub rate_limit_per_ip: u32,
    /// Authenticated tunnel handshakes allowed per system key and window (0 = unlimited).
    #[arg(long, env = "TETHER_RATE_LIMIT_PER_KEY", default_value_t = 5)]
    pub rate_limit_per_key: u32,
    /// Window of the handshake rate limits.
    #[arg(long, env = "TETHER_RATE_LIMIT_WINDOW", default_value = "60s", value_parser = duration)]
    pub rate_limit_window: Duration,
    /// Most concurrent proxy and terminal streams per tunnel.
    #[arg(long, env = "TETHER_MAX_STREAMS_PER_TUNNEL", default_value_t = 64)]
    pub max_streams_per_tunnel: usize,
    /// Idle proxy connections kept open per tunnel for the next request to the same service
    /// (each keeps its stream's slot and closes after 4 s unused); 0 opens a stream per request.
    #[arg(long, env = "TETHER_PROXY_KEEPALIVE", default_value_t = 8)]
    pub proxy_keepalive: usize,
    /// Most connected tunnels (new systems are refused beyond it; replacements are not).
    #[arg(long, env = "TETHER_MAX_TUNNELS", default_value_t = 10_000)]
    pub max_tunnels: usize,
    /// How long opening a service through the agent may take (stream, CONNECT, agent's dial).
    #[arg(long, env = "TETHER_CONNECT_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// How long the agent has to answer a command.
    #[arg(long, env = "TETHER_COMMAND_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub command_timeout: Duration,
    /// Unsolicited manifests are applied at most this often per tunnel (later ones are coalesced, never dropped).
    #[arg(long, env = "TETHER_MANIFEST_INTERVAL", default_value = "10s", value_parser = duration)]
    pub manifest_interval: Duration,
    /// How long an agent may take to send one control stream (manifest, diagnostics, users).
    #[arg(long, env = "TETHER_CONTROL_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub control_timeout: Duration,
    /// Diagnostics reports kept per session (the latest is always kept).
    #[arg(long, env = "TETHER_DIAGNOSTICS_HISTORY", default_value_t = crate::store::DEFAULT_DIAGNOSTICS_HISTORY, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub diagnostics_history: i64,
    /// Lifetime of a one-time web terminal ticket.
    #[arg(long, env = "TETHER_TERMINAL_TICKET_TTL", default_value = "30s", value_parser = duration)]
    pub terminal_ticket_ttl: Duration,
    /// A web terminal with no frame either way for this long is closed.
    #[arg(long, env = "TETHER_TERMINAL_IDLE_TIMEOUT", default_value = "30m", value_parser = duration)]
    pub terminal_idle_timeout: Duration,
    /// Directory of the web terminal recordings (asciicast v2 files).
    #[arg(long, env = "TETHER_RECORDINGS_DIR", default_value = "./recordings")]
    pub recordings_dir: std::path::PathBuf,
    /// Recordings older than this are deleted.
    #[arg(long, env = "TETHER_RECORDINGS_RETENTION", default_value = "30d", value_parser = duration)]
    pub recordings_retention: Duration,
    /// Also record the operator's keystrokes ("i" events; they may include passwords).
    #[arg(long, env = "TETHER_RECORD_INPUT")]
    pub record_input: bool,
    /// A console login unused for this long ends.
    #[arg(long, env = "TETHER_CONSOLE_IDLE_TIMEOUT", default_value = "30m", value_parser = duration)]
    pub console_idle_timeout: Duration,
    /// A console login ends this long after it began, however busy.
    #[arg(long, env = "TETHER_CONSOLE_SESSION_LIFETIME", default_value = "12h", value_parser = duration)]
    pub console_session_lifetime: Duration,
    /// Mark console cookies Secure and send HSTS (set it when operators reach the relay over
    /// HTTPS; a trusted proxy's `X-Forwarded-Proto: https` does the same per request).
    #[arg(long, env = "TETHER_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Give every proxied service its own origin `<id>.DOMAIN` (needs a wildcard DNS record,
    /// and a wildcard certificate under TLS); without it, services are proxied under a path.
    #[arg(long, env = "TETHER_PROXY_DOMAIN", value_parser = proxy_domain)]
    pub proxy_domain: Option<String>,
    /// Lifetime of the one-time link that logs an operator into a service origin.
    #[arg(long, env = "TETHER_ORIGIN_LINK_TTL", default_value = "60s", value_parser = duration)]
    pub origin_link_ttl: Duration,
}

/// Longest DNS name, less a 26-character label and its dot.
const MAX_PROXY_DOMAIN: usize = 253 - 27;

/// A DNS domain (lowercased) under which service origins are named.
fn proxy_domain(s: &str) -> Result<String, String> {
    let d = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let fail = |why: &str| Err(format!("{s:?} is not a usable proxy domain: {why}"));
    if d.is_empty() {
        return fail("it is empty");
    }
    if d.len() > MAX_PROXY_DOMAIN {
        return fail(&format!("it is longer than {MAX_PROXY_DOMAIN} characters"));
    }
    if d.contains(':') || d.contains('/') {
        return fail("give the bare domain, without scheme or port (e.g. proxy.example.com)");
    }
    for label in d.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return fail(&format!(
                "label {label:?} is not a DNS label (letters, digits and inner hyphens, 1 to 63)"
            ));
        }
    }
    Ok(d)
}

impl ServeConfig {
    /// Check values that clap cannot check on its own; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_streams_per_tunnel == 0 || self.max_streams_per_tunnel > MAX_STREAMS_PER_TUNNEL
        {
            return Err(format!(
                "--max-streams-per-tunnel must be between 1 and {MAX_STREAMS_PER_TUNNEL}"
            ));
        }
        if self.proxy_keepalive > self.max_streams_per_tunnel {
            return Err(format!(
                "--proxy-keepalive ({}) must not exceed --max-streams-per-tunnel ({})",
                self.proxy_keepalive, self.max_streams_per_tunnel
            ));
        }
        if self.session_lifetime < Duration::from_secs(1) {
            return Err("--session-lifetime must be at least 1s".into());
        }
        if self.sweep_interval.is_zero() {
            return Err("--sweep-interval must be more than 0".into());
        }
        if self.connect_timeout.is_zero() || self.command_timeout.is_zero() {
            return Err("--connect-timeout and --command-timeout must be more than 0".into());
        }
        if self.terminal_ticket_ttl.is_zero() || self.terminal_idle_timeout.is_zero() {
            return Err(
                "--terminal-ticket-ttl and --terminal-idle-timeout must be more than 0".into(),
            );
        }
        if self.console_idle_timeout.is_zero() || self.console_session_lifetime.is_zero() {
            return Err(
                "--console-idle-timeout and --console-session-lifetime must be more than 0".into(),
            );
        }
        if self.origin_link_ttl.is_zero() {
            return Err("--origin-link-ttl must be more than 0".into());
        }
        if self.recordings_retention.is_zero() {
            return Err("--recordings-retention must be more than 0".into());
        }
        Ok(())
    }

    /// Whether X-Forwarded-For from `peer` may be believed.
    pub fn is_trusted_proxy(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }
}

#[derive(clap::Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    config: ServeConfig,
}

impl ServeConfig {
    /// The default settings (environment variables still apply), for the demo and tests.
    pub fn demo_defaults() -> ServeConfig {
        use clap::Parser;
        match DefaultsOnly::try_parse_from(["tether-relay"]) {
            Ok(d) => d.config,
            // Only a malformed TETHER_* environment variable can fail here.
            Err(e) => e.exit(),
        }
    }
}
