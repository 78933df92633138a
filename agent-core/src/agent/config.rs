//! What the agent is told: [`AgentConfig`], its validation, and the parsers for the textual
//! forms of its settings (Go durations, relay pins, proxy variables) that every front end shares.

use std::format;
use std::prelude::rust_2024::*;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use crate::document::ServiceInfo;
use crate::exclude::ExcludeSet;
use crate::policy::{self, PolicyError};

use super::AgentEvent;

/// Default first reconnect delay (the reference `RECONNECT_DELAY`).
pub const DEFAULT_RECONNECT_DELAY: Duration = Duration::from_secs(5);
/// Default reconnect delay cap (the reference `MAX_RECONNECT_DELAY`).
pub const DEFAULT_MAX_RECONNECT_DELAY: Duration = Duration::from_secs(300);
/// Default time allowed for one TCP connect (relay address or service target, TLS included for
/// targets).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time allowed for the proxy CONNECT, TLS and WebSocket handshakes with the relay.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The reference relay silently drops a manifest that comes less than this after the last one
/// it accepted (REFERENCE B-7).
pub const REFERENCE_MANIFEST_INTERVAL: Duration = Duration::from_secs(10);

pub use crate::secret::Secret;

/// Called with every [`AgentEvent`], on the agent's own tasks: it must return quickly.
pub type EventHandler = Arc<dyn Fn(&AgentEvent) + Send + Sync>;

/// HTTP CONNECT proxies for the tunnel, in the form of the usual environment variables.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// Proxy for `wss://` relay URLs (`HTTPS_PROXY`), `http://[user:pass@]host[:port]`.
    pub https_proxy: Option<String>,
    /// Proxy for `ws://` relay URLs (`HTTP_PROXY`).
    pub http_proxy: Option<String>,
    /// Hosts reached directly (`NO_PROXY`): comma list of names (suffix match), IPs, CIDRs, `*`.
    pub no_proxy: Option<String>,
}

impl ProxySettings {
    /// No proxy at all.
    pub fn none() -> Self {
        ProxySettings::default()
    }

    /// `HTTPS_PROXY`/`https_proxy`, `HTTP_PROXY`/`http_proxy`, `NO_PROXY`/`no_proxy` (upper case
    /// first; empty values count as unset).
    pub fn from_env() -> Self {
        fn var(names: &[&str]) -> Option<String> {
            names
                .iter()
                .filter_map(|n| std::env::var(n).ok())
                .map(|v| v.trim().to_owned())
                .find(|v| !v.is_empty())
        }
        ProxySettings {
            https_proxy: var(&["HTTPS_PROXY", "https_proxy"]),
            http_proxy: var(&["HTTP_PROXY", "http_proxy"]),
            no_proxy: var(&["NO_PROXY", "no_proxy"]),
        }
    }
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Proxy URLs may carry credentials.
        let shown = |p: &Option<String>| p.as_deref().map(redact_userinfo);
        f.debug_struct("ProxySettings")
            .field("https_proxy", &shown(&self.https_proxy))
            .field("http_proxy", &shown(&self.http_proxy))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// `scheme://user:pass@host` → `scheme://***@host`.
pub(crate) fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let shown = match rest[..authority_end].rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{shown}"),
        None => shown,
    }
}

/// Everything the agent runtime needs; build it with [`AgentConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct AgentConfig {
    /// The relay's tunnel URL (`wss://host/support/api/tunnel`; `ws://` for development).
    pub url: String,
    /// The system key (Basic-auth user).
    pub key: String,
    /// The system secret (Basic-auth password).
    pub secret: Secret,
    /// Cluster node id (`^[0-9]{1,10}$`), sent as the `node_id` query parameter.
    pub node_id: Option<String>,
    /// Services from `--static-services`.
    pub static_services: BTreeMap<String, ServiceInfo>,
    /// Names of static and discovered services to leave out (not applied to injected ones).
    pub exclude: ExcludeSet,
    /// Accept any relay certificate (unless `relay_pin` is set, which wins).
    pub tls_insecure: bool,
    /// PEM file of extra trusted roots for the relay certificate.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the relay certificate's SubjectPublicKeyInfo; when set, the chain need not
    /// verify but this must match.
    pub relay_pin: Option<[u8; 32]>,
    /// First reconnect delay.
    pub reconnect_delay: Duration,
    /// Reconnect delay cap.
    pub max_reconnect_delay: Duration,
    /// Time for one TCP connect (each relay address; each service dial including TLS).
    pub connect_timeout: Duration,
    /// Time for the proxy, TLS and WebSocket handshakes with the relay.
    pub handshake_timeout: Duration,
    /// After a manifest goes out less than this after the last one a reference relay accepted,
    /// one more is sent when this much time has passed (the reference relay drops the early one).
    pub manifest_interval: Duration,
    /// HTTP CONNECT proxies ([`ProxySettings::from_env`] by default).
    pub proxy: ProxySettings,
    /// Observer of connection events (status displays, C callbacks, tests).
    pub on_event: Option<EventHandler>,
    /// Whether `CONNECT terminal` opens a shell, and as whom.
    pub terminal: super::terminal::TerminalSettings,
    /// How the health report is collected and how often it is refreshed.
    pub diagnostics: super::diagnostics::DiagnosticsConfig,
    /// Services the host publishes itself instead of discovery (embedded firmware), followed
    /// while the agent runs; static services win on a name clash, excluded names are left out.
    pub service_source: Option<tokio::sync::watch::Receiver<BTreeMap<String, ServiceInfo>>>,
    /// Checks the host runs itself; their reports follow the plugins' in every health report.
    pub diagnostics_providers: Vec<super::diagnostics::Provider>,
    /// Notified to collect and send a health report now (the relay keeps one per 30 s).
    pub diagnostics_refresh: Option<Arc<tokio::sync::Notify>>,
    /// Ephemeral support users (`USERS 1`): orphans cleaned before the first dial, users made
    /// after the first connection and deleted when [`super::run`] returns; `None`: off.
    pub support_users: Option<Arc<super::users::SupportUsers>>,
}

impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("url", &self.url)
            .field("key", &self.key)
            .field("secret", &self.secret)
            .field("node_id", &self.node_id)
            .field("static_services", &self.static_services.keys())
            .field("exclude", &self.exclude)
            .field("tls_insecure", &self.tls_insecure)
            .field("ca_file", &self.ca_file)
            .field("relay_pin", &self.relay_pin.map(hex::encode))
            .field("reconnect_delay", &self.reconnect_delay)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .field("connect_timeout", &self.connect_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("manifest_interval", &self.manifest_interval)
            .field("proxy", &self.proxy)
            .field("on_event", &self.on_event.as_ref().map(|_| "Fn"))
            .field("terminal", &self.terminal)
            .field("diagnostics", &self.diagnostics)
            .field("service_source", &self.service_source.is_some())
            .field("diagnostics_providers", &self.diagnostics_providers)
            .field("diagnostics_refresh", &self.diagnostics_refresh.is_some())
            .field("support_users", &self.support_users)
            .finish()
    }
}

impl AgentConfig {
    /// A configuration with the reference defaults and the proxy variables of the environment.
    pub fn new(url: impl Into<String>, key: impl Into<String>, secret: impl Into<Secret>) -> Self {
        AgentConfig {
            url: url.into(),
            key: key.into(),
            secret: secret.into(),
            node_id: None,
            static_services: BTreeMap::new(),
            exclude: ExcludeSet::default(),
            tls_insecure: false,
            ca_file: None,
            relay_pin: None,
            reconnect_delay: DEFAULT_RECONNECT_DELAY,
            max_reconnect_delay: DEFAULT_MAX_RECONNECT_DELAY,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            manifest_interval: REFERENCE_MANIFEST_INTERVAL,
            proxy: ProxySettings::from_env(),
            on_event: None,
            terminal: super::terminal::TerminalSettings::default(),
            diagnostics: super::diagnostics::DiagnosticsConfig::default(),
            service_source: None,
            diagnostics_providers: Vec::new(),
            diagnostics_refresh: None,
            support_users: None,
        }
    }

    /// Checks every setting that can be checked without touching the network or files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(&self.url).map_err(|e| ConfigError::BadUrl(e.to_string()))?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(ConfigError::UnsupportedScheme(url.scheme().to_owned()));
        }
        if url.host().is_none() {
            return Err(ConfigError::BadUrl("the url has no host".into()));
        }
        if self.key.is_empty() {
            return Err(ConfigError::MissingKey);
        }
        if self.key.contains(':') {
            return Err(ConfigError::KeyWithColon);
        }
        if self.secret.is_empty() {
            return Err(ConfigError::MissingSecret);
        }
        if let Some(node) = &self.node_id {
            policy::validate_node_id(node).map_err(ConfigError::BadNodeId)?;
        }
        for (name, delay) in [
            ("reconnect_delay", self.reconnect_delay),
            ("max_reconnect_delay", self.max_reconnect_delay),
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
        ] {
            if delay.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if self.max_reconnect_delay < self.reconnect_delay {
            return Err(ConfigError::CapBelowDelay {
                delay: self.reconnect_delay,
                cap: self.max_reconnect_delay,
            });
        }
        for (var, value) in [
            ("HTTPS_PROXY", &self.proxy.https_proxy),
            ("HTTP_PROXY", &self.proxy.http_proxy),
        ] {
            if let Some(value) = value {
                super::proxy::ProxyServer::parse(value)
                    .map_err(|reason| ConfigError::BadProxy { var, reason })?;
            }
        }
        Ok(())
    }
}

/// A setting the agent cannot work with.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The relay URL does not parse.
    #[error("invalid relay url: {0}")]
    BadUrl(String),
    /// The relay URL is not `ws://` or `wss://`.
    #[error("relay url scheme must be ws or wss, not {0:?}")]
    UnsupportedScheme(String),
    /// No system key.
    #[error("the system key is empty")]
    MissingKey,
    /// A system key with `:` cannot be sent with Basic authentication.
    #[error("the system key must not contain ':'")]
    KeyWithColon,
    /// No system secret.
    #[error("the system secret is empty")]
    MissingSecret,
    /// A node id outside `^[0-9]{1,10}$`.
    #[error("{0}")]
    BadNodeId(#[source] PolicyError),
    /// A duration that must be positive is zero.
    #[error("must be greater than zero")]
    ZeroDuration(&'static str),
    /// The reconnect cap is below the first delay.
    #[error("the maximum reconnect delay {cap:?} is below the reconnect delay {delay:?}")]
    CapBelowDelay { delay: Duration, cap: Duration },
    /// A proxy URL that cannot be used.
    #[error("{reason}")]
    BadProxy { var: &'static str, reason: String },
    /// The CA file cannot be read or holds no certificate.
    #[error("{path}: {reason}")]
    CaFile { path: String, reason: String },
    /// The TLS settings cannot be built (a bad root certificate, no usable protocol).
    #[error("tls setup: {0}")]
    Tls(#[source] rustls::Error),
}

impl ConfigError {
    /// The [`AgentConfig`] field (or environment variable) the error is about; front ends map
    /// it to their own names (`--node-id`, `NODE_ID` ...).
    pub fn setting(&self) -> &'static str {
        match self {
            ConfigError::BadUrl(_) | ConfigError::UnsupportedScheme(_) => "url",
            ConfigError::MissingKey | ConfigError::KeyWithColon => "key",
            ConfigError::MissingSecret => "secret",
            ConfigError::BadNodeId(_) => "node_id",
            ConfigError::ZeroDuration(name) => name,
            ConfigError::CapBelowDelay { .. } => "max_reconnect_delay",
            ConfigError::BadProxy { var, .. } => var,
            ConfigError::CaFile { .. } | ConfigError::Tls(_) => "ca_file",
        }
    }
}

/// Why a textual setting does not parse.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a Go duration.
    #[error("invalid duration {0:?}, expected Go syntax such as 300ms, 5s, 1m30s or 2h")]
    BadDuration(String),
    /// A negative Go duration.
    #[error("negative duration {0:?}")]
    NegativeDuration(String),
    /// Not a SHA-256 pin.
    #[error(
        "invalid pin {0:?}, expected the SHA-256 of the certificate's public key (64 hex digits or base64)"
    )]
    BadPin(String),
    /// Not a Go boolean.
    #[error("invalid boolean {0:?}, expected true or false")]
    BadBool(String),
}

/// Parses Go's `time.ParseDuration` syntax (`300ms`, `1.5h`, `1m30s`, `0`); negative values
/// are refused.
pub fn parse_go_duration(text: &str) -> Result<Duration, ParseError> {
    let bad = || ParseError::BadDuration(text.to_owned());
    let mut s = text;
    if let Some(rest) = s.strip_prefix('-') {
        if rest == "0" {
            return Ok(Duration::ZERO);
        }
        return Err(ParseError::NegativeDuration(text.to_owned()));
    }
    s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int, rest) = s.split_at(int_len);
        let (frac, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                r.split_at(n)
            }
            None => ("", rest),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let (unit, rest) = rest.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut value = int.checked_mul(unit_nanos).ok_or_else(bad)?;
        // Fraction digits beyond nanosecond precision of the largest unit cannot matter.
        let frac = frac.get(..frac.len().min(20)).unwrap_or(frac);
        if !frac.is_empty() {
            let digits: u128 = frac.parse().map_err(|_| bad())?;
            let scale = 10u128.pow(frac.len() as u32);
            value = value
                .checked_add(digits * unit_nanos / scale)
                .ok_or_else(bad)?;
        }
        total = total.checked_add(value).ok_or_else(bad)?;
        s = rest;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    // The remainder is below 10^9 and fits in u32.
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Parses Go's `strconv.ParseBool` values (`1 t T TRUE true True 0 f F FALSE false False`).
pub fn parse_go_bool(text: &str) -> Result<bool, ParseError> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ParseError::BadBool(text.to_owned())),
    }
}

/// Parses a relay pin: the SHA-256 of the certificate's SubjectPublicKeyInfo as 64 hex digits
/// (colons allowed) or base64 (standard or URL-safe, padding optional), optionally prefixed
/// with `sha256/` or `sha256:`.
pub fn parse_relay_pin(text: &str) -> Result<[u8; 32], ParseError> {
    let bad = || ParseError::BadPin(text.to_owned());
    let mut s = text.trim();
    for prefix in ["sha256/", "sha256:", "SHA256/", "SHA256:"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
            break;
        }
    }
    let hexed: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = if hexed.len() == 64 && hexed.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(&hexed).map_err(|_| bad())?
    } else {
        let unpadded = s.trim_end_matches('=');
        let engines = [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        engines
            .iter()
            .find_map(|e| e.decode(unpadded).ok())
            .ok_or_else(bad)?
    };
    bytes.try_into().map_err(|_: Vec<u8>| bad())
}
