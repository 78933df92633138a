//! NethServer 8 discovery without I/O (REFERENCE 3.3.2): the routes Traefik's `list-routes`
//! action prints, how a route becomes a published service on the local or a remote node, the
//! order the cluster's nodes are visited in and the first-writer-wins merge, plus the Redis
//! key and node environment file formats. The runtime adapter (`agent::discovery::ns8`)
//! fetches the bytes and calls these.

use alloc::collections::BTreeMap;
use alloc::collections::btree_map::Entry;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer};

use crate::document::ServiceInfo;
use crate::plugin_output::clip;
use crate::policy::{self, PolicyError};

/// The reference's Redis address (`--redis-addr`); here so that builds without the `ns8`
/// runtime adapter still document and accept the flag.
pub const DEFAULT_REDIS_ADDR: &str = "127.0.0.1:6379";
/// Most bytes of `list-routes` output accepted.
pub const MAX_ROUTES_BYTES: usize = 4 * 1024 * 1024;
/// Most routes one Traefik instance may list.
pub const MAX_ROUTES: usize = 10_000;
/// Longest module id (such as `traefik1`) accepted from Redis.
pub const MAX_MODULE_NAME: usize = 64;
/// Longest backend URL accepted in a route.
pub const MAX_URL: usize = 2048;
/// Most bytes of a bad backend URL repeated in an error.
const MAX_URL_SHOWN: usize = 256;
/// Port of a remote node's Traefik on the cluster VPN.
pub const REMOTE_PORT: u16 = 443;
/// The `SCAN MATCH` pattern of the keys that name every node's Traefik instance.
pub const TRAEFIK_KEY_PATTERN: &str = "node/*/default_instance/traefik";
/// The `--data` argument of `api-cli run module/<traefik>/list-routes`.
pub const LIST_ROUTES_DATA: &str = r#"{"expand_list": true}"#;

/// One entry of `list-routes` with `expand_list` (`ApiCliRoute` of the reference). Other
/// fields (`lets_encrypt`, `http2https`, `headers`, ...) are ignored; missing or `null`
/// fields are empty or false, since Traefik prints `{}` for a disabled route.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct Route {
    /// The route name, unique in the cluster; becomes the service name.
    #[serde(deserialize_with = "null_as_default")]
    pub instance: String,
    /// The virtual host the route matches (empty for a path-only route).
    #[serde(deserialize_with = "null_as_default")]
    pub host: String,
    /// The path prefix the route matches (empty for a host-only route).
    #[serde(deserialize_with = "null_as_default")]
    pub path: String,
    /// The backend, `http(s)://host[:port][/...]`.
    #[serde(deserialize_with = "null_as_default")]
    pub url: String,
    /// Whether Traefik strips `path` before forwarding.
    #[serde(deserialize_with = "null_as_default")]
    pub strip_prefix: bool,
    /// Whether Traefik skips the backend's certificate check (unused: the agent never checks).
    #[serde(deserialize_with = "null_as_default")]
    pub skip_cert_verify: bool,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Why `list-routes` output was refused as a whole.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    /// More output than [`MAX_ROUTES_BYTES`].
    #[error("route list of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// More routes than [`MAX_ROUTES`].
    #[error("route list has {count} routes, at most {max} are allowed")]
    TooMany { count: usize, max: usize },
    /// Not a JSON array of route objects.
    #[error("route list is not a json array of route objects: {0}")]
    Json(serde_json::Error),
}

/// Parses the output of `api-cli run module/<traefik>/list-routes --data '{"expand_list": true}'`.
pub fn parse_routes(json: &[u8]) -> Result<Vec<Route>, RoutesError> {
    if json.len() > MAX_ROUTES_BYTES {
        return Err(RoutesError::TooLarge {
            len: json.len(),
            max: MAX_ROUTES_BYTES,
        });
    }
    let routes: Vec<Route> = serde_json::from_slice(json).map_err(RoutesError::Json)?;
    if routes.len() > MAX_ROUTES {
        return Err(RoutesError::TooMany {
            count: routes.len(),
            max: MAX_ROUTES,
        });
    }
    Ok(routes)
}

/// The module a route belongs to, as the Go regex `^(.+\d+)(?:[-_]|$)` of the reference
/// finds it: the longest prefix of at least two characters that ends in a digit and is
/// followed by `-`, `_` or the end (`nethvoice103-ui` → `nethvoice103`, `metrics1_grafana`
/// → `metrics1`, `traefik1` → `traefik1`, `loki` → none).
pub fn module_id(instance: &str) -> Option<&str> {
    let bytes = instance.as_bytes();
    // `.` does not match a newline, so the prefix ends before the first one.
    let limit = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    (2..=limit)
        .rev()
        .find(|&end| {
            let digit_before = bytes.get(end - 1).is_some_and(u8::is_ascii_digit);
            let boundary_after = bytes.get(end).is_none_or(|b| matches!(b, b'-' | b'_'));
            digit_before && boundary_after
        })
        .and_then(|end| instance.get(..end))
}

/// Why one route is not published.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A route without `instance` (Traefik prints `{}` for a disabled route).
    #[error("route has no instance name")]
    NoInstance,
    /// An instance name that cannot be a service name.
    #[error("route {instance:?}: not usable as a service name: {source}")]
    BadName {
        instance: String,
        source: PolicyError,
    },
    /// A backend URL the agent cannot dial.
    #[error("route {instance:?}: backend url {url:?} {problem}")]
    BadUrl {
        instance: String,
        url: String,
        problem: &'static str,
    },
    /// A backend URL whose host and port do not form a target.
    #[error("route {instance:?}: backend url {url:?}: {source}")]
    BadTarget {
        instance: String,
        url: String,
        source: PolicyError,
    },
    /// A virtual host that is not a valid upstream `Host`.
    #[error("route {instance:?}: {source}")]
    BadHost {
        instance: String,
        source: PolicyError,
    },
}

/// A backend URL reduced to what the agent dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `host:port` (`[v6]:port`), with 80 or 443 added when the URL has no port.
    pub target: String,
    /// Whether the scheme is `https`.
    pub tls: bool,
}

/// Parses `http(s)://[userinfo@]host[:port][/path][?query][#fragment]`; the error says what
/// is wrong with it.
pub fn parse_backend_url(url: &str) -> Result<Backend, &'static str> {
    if url.len() > MAX_URL {
        return Err("is too long");
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("has no scheme, expected http:// or https://")?;
    let (tls, default_port) = if scheme.eq_ignore_ascii_case("https") {
        (true, 443)
    } else if scheme.eq_ignore_ascii_case("http") {
        (false, 80)
    } else {
        return Err("has a scheme other than http or https");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    let (host, port) = if host_port.starts_with('[') {
        let close = host_port
            .find(']')
            .ok_or("has an IPv6 host without its closing bracket")?;
        let (host, after) = host_port.split_at(close + 1);
        match after {
            "" => (host, ""),
            _ => (
                host,
                after
                    .strip_prefix(':')
                    .ok_or("has text after its IPv6 host")?,
            ),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("has an IPv6 host without brackets");
            }
            Some((host, port)) => (host, port),
            None => (host_port, ""),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err("has no host");
    }
    let port = if port.is_empty() {
        default_port
    } else if port.bytes().all(|b| b.is_ascii_digit()) {
        match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err("has a port outside 1 to 65535"),
        }
    } else {
        return Err("has a port that is not a number");
    };
    Ok(Backend {
        target: format!("{host}:{port}"),
        tls,
    })
}

/// Where the node serving a route is, seen from the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The agent's own node: the route's backend is dialed directly.
    Local,
    /// Another node, reached through its Traefik at this cluster VPN address; that Traefik
    /// does the Host/path routing and strips the prefix itself.
    Remote(IpAddr),
}

/// The service a route publishes on node `node_id` (REFERENCE 3.3.2 step 6): the name is
/// the route's `instance`, the label is the module's `ui_name` (empty when it has none).
/// The name must be a valid service name; a local route also needs a backend URL the agent
/// can dial.
pub fn route_service(
    route: &Route,
    node_id: &str,
    placement: Placement,
    label: &str,
) -> Result<(String, ServiceInfo), RouteError> {
    let instance = route.instance.as_str();
    if instance.is_empty() {
        return Err(RouteError::NoInstance);
    }
    policy::validate_connect_name(instance).map_err(|source| RouteError::BadName {
        instance: String::from(instance),
        source,
    })?;
    policy::validate_upstream_host(&route.host).map_err(|source| RouteError::BadHost {
        instance: String::from(instance),
        source,
    })?;
    let (target, tls, path_prefix) = match placement {
        Placement::Local => {
            let bad_url = |problem| RouteError::BadUrl {
                instance: String::from(instance),
                url: clip(&route.url, MAX_URL_SHOWN),
                problem,
            };
            if route.url.is_empty() {
                return Err(bad_url("is empty"));
            }
            let backend = parse_backend_url(&route.url).map_err(bad_url)?;
            policy::validate_target_syntax(&backend.target).map_err(|source| {
                RouteError::BadTarget {
                    instance: String::from(instance),
                    url: clip(&route.url, MAX_URL_SHOWN),
                    source,
                }
            })?;
            let prefix = if route.strip_prefix {
                route.path.clone()
            } else {
                String::new()
            };
            (backend.target, backend.tls, prefix)
        }
        Placement::Remote(ip) => (
            format!("{}", SocketAddr::new(ip, REMOTE_PORT)),
            true,
            String::new(),
        ),
    };
    let info = ServiceInfo {
        target,
        host: route.host.clone(),
        tls,
        label: String::from(label),
        path: route.path.clone(),
        path_prefix,
        module_id: String::from(module_id(instance).unwrap_or_default()),
        node_id: String::from(node_id),
    };
    Ok((String::from(instance), info))
}

/// The order nodes are visited in (REFERENCE 3.3.2 step 4): the leader, then the local node,
/// then the others in numeric order; each once, and only nodes in `nodes`.
pub fn order_nodes(nodes: &[String], leader: Option<&str>, local: Option<&str>) -> Vec<String> {
    let mut rest: Vec<&str> = nodes.iter().map(String::as_str).collect();
    rest.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    rest.dedup();
    let mut ordered = Vec::with_capacity(rest.len());
    for first in [leader, local].into_iter().flatten() {
        if let Some(i) = rest.iter().position(|n| *n == first) {
            ordered.push(String::from(rest.remove(i)));
        }
    }
    ordered.extend(rest.into_iter().map(String::from));
    ordered
}

/// Adds a node's services to `merged` unless an earlier node already published the name
/// (REFERENCE 3.3.2 step 7); returns the names left out.
pub fn merge_first_wins(
    merged: &mut BTreeMap<String, ServiceInfo>,
    services: impl IntoIterator<Item = (String, ServiceInfo)>,
) -> Vec<String> {
    let mut shadowed = Vec::new();
    for (name, info) in services {
        match merged.entry(name) {
            Entry::Occupied(earlier) => shadowed.push(earlier.key().clone()),
            Entry::Vacant(slot) => {
                slot.insert(info);
            }
        }
    }
    shadowed
}

/// The node id in a key `node/<id>/default_instance/traefik` (an id of decimal digits).
pub fn node_id_from_traefik_key(key: &str) -> Option<&str> {
    let id = key
        .strip_prefix("node/")?
        .strip_suffix("/default_instance/traefik")?;
    policy::validate_node_id(id).ok().map(|()| id)
}

/// Whether a module id read from Redis (such as `traefik1`) is safe to put in an `api-cli`
/// action path and a Redis key: 1 to [`MAX_MODULE_NAME`] ASCII letters, digits, `-` or `_`.
pub fn is_module_name(s: &str) -> bool {
    (1..=MAX_MODULE_NAME).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// The value of the first `NODE_ID=` line of the node environment file, tolerating leading
/// `export`, surrounding whitespace and one pair of quotes; `None` when missing or empty.
pub fn node_id_from_environment(text: &str) -> Option<&str> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let line = line
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map_or(line, str::trim_start);
        let value = line
            .strip_prefix("NODE_ID")?
            .trim_start()
            .strip_prefix('=')?;
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q)?.strip_suffix(*q))
            .unwrap_or(value)
            .trim();
        (!value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests;
