//! Prometheus metrics of the relay, served as OpenMetrics text on `GET /metrics`.
//!
//! Counters and gauges are updated where things happen (tunnel handshakes, streams, the proxy);
//! session counts by state are read from the store when the metrics are rendered, so they are
//! right even after a restart.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::store::{SessionStatus, Store};

/// Content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label of [`Metrics::tunnel_rejections`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why the handshake was refused (`invalid_credentials`, `rate_limited`, ...).
    pub reason: &'static str,
}

/// Label of [`Metrics::control_streams`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    /// The stream kind (`manifest`, `diagnostics`, `users`, `users_fetch`, ...).
    pub kind: &'static str,
}

/// Label of the sessions-by-state gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Session states reported by [`Metrics::render`].
const OPEN_STATES: [SessionStatus; 2] = [SessionStatus::Pending, SessionStatus::Active];

/// Every metric of the relay; share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    /// Tunnels connected now.
    pub tunnels_connected: Gauge,
    /// Tunnels accepted since start.
    pub tunnel_connects: Counter,
    /// Tunnel handshakes refused, by reason.
    pub tunnel_rejections: Family<ReasonLabel, Counter>,
    /// Proxy and terminal streams open now.
    pub streams_open: Gauge,
    /// Operator HTTP requests proxied to agents.
    pub proxy_requests: Counter,
    /// Bytes sent to agents on proxy and terminal streams.
    pub bytes_to_agent: Counter,
    /// Bytes received from agents on proxy and terminal streams.
    pub bytes_from_agent: Counter,
    /// Streams opened by agents (manifest, diagnostics, users), by kind.
    pub control_streams: Family<KindLabel, Counter>,
    sessions: Family<StateLabel, Gauge>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics at zero, registered under the `tether_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tether");
        let m = Metrics {
            tunnels_connected: Gauge::default(),
            tunnel_connects: Counter::default(),
            tunnel_rejections: Family::default(),
            streams_open: Gauge::default(),
            proxy_requests: Counter::default(),
            bytes_to_agent: Counter::default(),
            bytes_from_agent: Counter::default(),
            control_streams: Family::default(),
            sessions: Family::default(),
            registry: Registry::default(),
        };
        // Metrics are handles onto shared atomics: the registry's clones are the same series.
        registry.register(
            "tunnels_connected",
            "Agent tunnels connected now",
            m.tunnels_connected.clone(),
        );
        registry.register(
            "tunnel_connects",
            "Agent tunnels accepted",
            m.tunnel_connects.clone(),
        );
        registry.register(
            "tunnel_rejections",
            "Agent tunnel handshakes refused, by reason",
            m.tunnel_rejections.clone(),
        );
        registry.register(
            "streams_open",
            "Proxy and terminal streams open now",
            m.streams_open.clone(),
        );
        registry.register(
            "proxy_requests",
            "Operator HTTP requests proxied to agents",
            m.proxy_requests.clone(),
        );
        registry.register(
            "bytes_to_agent",
            "Bytes sent to agents on proxy and terminal streams",
            m.bytes_to_agent.clone(),
        );
        registry.register(
            "bytes_from_agent",
            "Bytes received from agents on proxy and terminal streams",
            m.bytes_from_agent.clone(),
        );
        registry.register(
            "control_streams",
            "Streams opened by agents, by kind",
            m.control_streams.clone(),
        );
        registry.register(
            "sessions",
            "Open support sessions in the database, by state",
            m.sessions.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Count a refused tunnel handshake.
    pub fn reject(&self, reason: &'static str) {
        self.tunnel_rejections
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Count a stream an agent opened.
    pub fn control_stream(&self, kind: &'static str) {
        self.control_streams
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// OpenMetrics text of every metric, with session counts read from the store now.
    pub async fn render(&self, store: &Store) -> String {
        // Only open sessions are counted: the store has no cheap count of closed ones yet, and
        // loading every closed session on each scrape would grow without bound.
        match store.open_sessions().await {
            Ok(open) => {
                for state in OPEN_STATES {
                    let n = open.iter().filter(|s| s.status == state).count();
                    self.sessions
                        .get_or_create(&StateLabel {
                            state: state.as_str(),
                        })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            // Better a page without fresh session counts than no metrics at all.
            Err(e) => tracing::warn!(error = %e, "cannot count sessions for /metrics"),
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            // Writing into a String only fails if a metric's encoder does, which is a bug.
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_labels_appear_in_the_text() {
        let m = Metrics::new();
        m.tunnel_connects.inc();
        m.reject("rate_limited");
        m.control_stream("manifest");
        m.bytes_from_agent.inc_by(42);
        let mut out = String::new();
        encode(&mut out, &m.registry).unwrap();
        assert!(out.contains("tether_tunnel_connects_total 1"), "{out}");
        assert!(
            out.contains("tether_tunnel_rejections_total{reason=\"rate_limited\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("tether_control_streams_total{kind=\"manifest\"} 1"),
            "{out}"
        );
        assert!(out.contains("tether_bytes_from_agent_total 42"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
