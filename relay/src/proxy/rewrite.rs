//! How a proxied request and its response are rewritten: paths (REFERENCE 2.10 step 5, with the
//! raw path kept and the prefix stripped by whole segments, fixing B-16), request headers (hop
//! by hop, the operator's credentials, `Host`, `Origin`, `Referer`) and response headers
//! (framing policy merged into CSP, redirects kept inside the proxy; part of B-12). A service
//! origin uses the same route rooted at `/`, plus host-only service cookies and an
//! `Accept-Encoding` the body rewriter can undo.

use agent_core::document::ServiceInfo;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::body::Encoding;
use crate::console::auth as console_auth;
use crate::origin::COOKIE as ORIGIN_COOKIE;

/// Headers that describe one connection, never forwarded (RFC 9110 section 7.6.1), plus the
/// legacy `Proxy-Connection` and `Keep-Alive`.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Request headers dropped besides the hop-by-hop ones: the operator's relay credentials, and
/// forwarding claims the operator's client could forge towards the appliance.
const DROPPED_REQUEST: [HeaderName; 7] = [
    header::AUTHORIZATION,
    header::HOST,
    header::EXPECT,
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
];

/// The framing policy the relay's UI needs to show proxied pages.
const FRAME_ANCESTORS: &str = "frame-ancestors 'self'";

/// Splits a raw request path at the service segment:
/// `/api/v1/sessions/<id>/proxy/<service>/rest` → (`/api/v1/sessions/<id>/proxy/<service>`,
/// `/rest`). The rest is the raw text (percent-encoding untouched), `""` when there is none.
pub fn split_proxy_path(raw: &str) -> Option<(&str, &str)> {
    let segments: Vec<(usize, &str)> = raw
        .match_indices('/')
        .map(|(i, _)| i)
        .map(|i| {
            let end = raw[i + 1..].find('/').map_or(raw.len(), |j| i + 1 + j);
            (i, &raw[i + 1..end])
        })
        .collect();
    let at = segments
        .windows(4)
        .position(|w| w[0].1 == "sessions" && w[2].1 == "proxy" && !w[3].1.is_empty())?;
    let (service_start, service) = segments[at + 3];
    let end = service_start + 1 + service.len();
    Some((&raw[..end], &raw[end..]))
}

/// `path` with a leading `/` and without trailing ones; `""` when it names no path at all.
fn normalise(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// The mapping between the proxy's URL space and one upstream service.
#[derive(Debug, Clone)]
pub struct Route {
    /// The proxy root as the client sees it (raw): `/api/v1/sessions/<id>/proxy/<service>`.
    base: String,
    /// `path_prefix`, normalised; stripped from requests.
    prefix: String,
    /// `path` (the route path), normalised; added to requests that lack it (when no prefix).
    route: String,
    /// `Host` presented upstream.
    host: String,
    /// `http://host` or `https://host`.
    origin: String,
    /// Authorities under which the upstream may name itself in redirects.
    authorities: Vec<String>,
}

impl Route {
    /// The route to `info` for a proxy rooted at `base` (raw path, no trailing `/`).
    pub fn new(base: &str, info: &ServiceInfo) -> Route {
        let host = if info.host.is_empty() {
            info.target.clone()
        } else {
            info.host.clone()
        };
        let scheme = if info.tls { "https" } else { "http" };
        let mut authorities = vec![host.clone()];
        if !info.target.is_empty() && !info.target.eq_ignore_ascii_case(&host) {
            authorities.push(info.target.clone());
        }
        Route {
            base: base.trim_end_matches('/').to_owned(),
            prefix: normalise(&info.path_prefix),
            route: normalise(&info.path),
            origin: format!("{scheme}://{host}"),
            host,
            authorities,
        }
    }

    /// The upstream path for the raw path the client asked for below the proxy root.
    pub fn upstream_path(&self, rest: &str) -> String {
        let path = if rest.is_empty() { "/" } else { rest };
        if !self.prefix.is_empty() {
            if path == self.prefix {
                return "/".to_owned();
            }
            return match path.strip_prefix(self.prefix.as_str()) {
                Some(after) if after.starts_with('/') => after.to_owned(),
                _ => path.to_owned(),
            };
        }
        if !self.route.is_empty() && path != self.route {
            let under = path
                .strip_prefix(self.route.as_str())
                .is_some_and(|after| after.starts_with('/'));
            if !under {
                return format!("{}{path}", self.route);
            }
        }
        path.to_owned()
    }

    /// The client-side path for an upstream absolute path (inverse of [`Route::upstream_path`]).
    pub fn client_path(&self, upstream: &str) -> String {
        format!("{}{}{upstream}", self.base, self.prefix)
    }

    /// The `Host` presented upstream.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Authorities under which the upstream names itself (its `Host`, then its target).
    pub fn authorities(&self) -> &[String] {
        &self.authorities
    }

    /// [`Route::request_headers`] for a service origin: `Accept-Encoding` also narrowed to the
    /// encodings the body rewriter can undo.
    pub fn origin_request_headers(&self, incoming: &HeaderMap, upgrade: bool) -> HeaderMap {
        let mut out = self.request_headers(incoming, upgrade);
        let accepted: Vec<&str> = incoming
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| Encoding::is_known(t.split(';').next().unwrap_or("").trim()))
            .collect();
        out.remove(header::ACCEPT_ENCODING);
        if let Ok(v) = HeaderValue::from_str(&accepted.join(", "))
            && !accepted.is_empty()
        {
            out.insert(header::ACCEPT_ENCODING, v);
        }
        out
    }

    /// [`Route::response_headers`] for a service origin: every cookie the service sets is
    /// host-only on its origin (`Domain` removed, so it can reach no other service and not the
    /// relay), and none may replace the relay's own cookies.
    pub fn origin_response_headers(&self, upstream: &HeaderMap, switching: bool) -> HeaderMap {
        let mut out = self.response_headers(upstream, switching);
        let cookies: Vec<HeaderValue> = out
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(host_only_cookie)
            .filter_map(|c| HeaderValue::from_str(&c).ok())
            .collect();
        out.remove(header::SET_COOKIE);
        for c in cookies {
            out.append(header::SET_COOKIE, c);
        }
        out
    }

    /// Request headers for upstream: connection-scoped and credential headers removed, `Host`
    /// set, `Origin`/`Referer` moved to the upstream origin. For an upgrade request the
    /// `Connection: upgrade` and `Upgrade` headers are carried over.
    pub fn request_headers(&self, incoming: &HeaderMap, upgrade: bool) -> HeaderMap {
        let mut out = incoming.clone();
        let upgrade_value = incoming.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut out);
        for name in &DROPPED_REQUEST {
            out.remove(name);
        }
        if out.contains_key(header::COOKIE) {
            strip_relay_cookies(&mut out);
        }
        if let Ok(host) = HeaderValue::from_str(&self.host) {
            out.insert(header::HOST, host);
        }
        if out.contains_key(header::ORIGIN)
            && let Ok(origin) = HeaderValue::from_str(&self.origin)
        {
            out.insert(header::ORIGIN, origin);
        }
        if let Some(referer) = incoming.get(header::REFERER) {
            let rewritten = referer
                .to_str()
                .ok()
                .map(|r| self.upstream_referer(r))
                .and_then(|r| HeaderValue::from_str(&r).ok());
            match rewritten {
                Some(v) => {
                    out.insert(header::REFERER, v);
                }
                None => {
                    out.remove(header::REFERER);
                }
            }
        }
        if upgrade && let Some(v) = upgrade_value {
            out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            out.insert(header::UPGRADE, v);
        }
        out
    }

    /// A `Referer` inside the proxy becomes the same page upstream; any other becomes the
    /// upstream's root.
    fn upstream_referer(&self, referer: &str) -> String {
        let path_and_query = split_url(referer).map_or("", |(_, _, rest)| rest);
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let below = path
            .strip_prefix(self.base.as_str())
            .filter(|r| r.is_empty() || r.starts_with('/'));
        match below {
            Some(rest) => {
                let mut out = format!("{}{}", self.origin, self.upstream_path(rest));
                if let Some(q) = query {
                    out.push('?');
                    out.push_str(q);
                }
                out
            }
            None => format!("{}/", self.origin),
        }
    }

    /// Response headers for the client: hop-by-hop headers removed (kept on `101`), framing
    /// allowed for the relay's own pages, and redirects to the upstream kept inside the proxy.
    pub fn response_headers(&self, upstream: &HeaderMap, switching: bool) -> HeaderMap {
        let mut out = upstream.clone();
        if !switching {
            strip_hop_by_hop(&mut out);
        }
        out.remove(header::X_FRAME_OPTIONS);
        let policies: Vec<HeaderValue> = out
            .get_all(header::CONTENT_SECURITY_POLICY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(merge_frame_ancestors)
            .filter_map(|p| HeaderValue::from_str(&p).ok())
            .collect();
        out.remove(header::CONTENT_SECURITY_POLICY);
        if policies.is_empty() {
            out.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(FRAME_ANCESTORS),
            );
        }
        for p in policies {
            out.append(header::CONTENT_SECURITY_POLICY, p);
        }
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let rewritten = out
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| self.client_location(v))
                .and_then(|v| HeaderValue::from_str(&v).ok());
            if let Some(v) = rewritten {
                out.insert(name, v);
            }
        }
        out
    }

    /// A `Location` naming the upstream (absolute URL on its authority, or an absolute path)
    /// rewritten into the proxy; `None` to leave it alone.
    fn client_location(&self, location: &str) -> Option<String> {
        if location.starts_with('/') && !location.starts_with("//") {
            return Some(self.client_path(location));
        }
        let (scheme, authority, rest) = split_url(location)?;
        if !self
            .authorities
            .iter()
            .any(|a| same_authority(scheme, authority, a))
        {
            return None;
        }
        let rest = if rest.is_empty() || !rest.starts_with('/') {
            format!("/{rest}")
        } else {
            rest.to_owned()
        };
        Some(self.client_path(&rest))
    }
}

/// Cookies of the relay itself, never forwarded to a service nor set by one.
const RELAY_COOKIES: [&str; 3] = [
    console_auth::COOKIE,
    console_auth::LOGIN_COOKIE,
    ORIGIN_COOKIE,
];

/// A `Set-Cookie` value without its `Domain` attributes; `None` for one that names a cookie
/// of the relay.
fn host_only_cookie(set_cookie: &str) -> Option<String> {
    let mut parts = set_cookie.split(';');
    let pair = parts.next()?.trim();
    let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
    if RELAY_COOKIES.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return None;
    }
    let mut out = pair.to_owned();
    for attr in parts.map(str::trim).filter(|a| !a.is_empty()) {
        let key = attr.split_once('=').map_or(attr, |(k, _)| k).trim();
        if !key.eq_ignore_ascii_case("domain") {
            out.push_str("; ");
            out.push_str(attr);
        }
    }
    Some(out)
}

/// The `Cookie` header without the relay's own cookies (removed when none is left).
fn strip_relay_cookies(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n).trim();
            !pair.is_empty() && !RELAY_COOKIES.contains(&name)
        })
        .map(str::to_owned)
        .collect();
    let joined = HeaderValue::from_str(&kept.join("; ")).ok();
    headers.remove(header::COOKIE);
    if let Some(v) = joined
        && !kept.is_empty()
    {
        headers.insert(header::COOKIE, v);
    }
}

/// Removes the hop-by-hop headers and every header the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// `scheme://authority/rest` (or scheme-relative `//authority/rest`) → (scheme, authority,
/// rest); the scheme is `""` when relative.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, after) = if let Some(after) = url.strip_prefix("//") {
        ("", after)
    } else {
        let (scheme, after) = url.split_once("://")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        (scheme, after)
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    Some((scheme, &after[..end], &after[end..]))
}

/// Whether two authorities name the same host and port, a scheme's default port being implied.
fn same_authority(scheme: &str, a: &str, b: &str) -> bool {
    let default = if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else {
        ":80"
    };
    let strip = |s: &str| -> String {
        let lower = s.to_ascii_lowercase();
        lower
            .strip_suffix(default)
            .map(str::to_owned)
            .unwrap_or(lower)
    };
    strip(a) == strip(b)
}

/// One CSP with its `frame-ancestors` directive set to `'self'` and every other directive kept.
pub fn merge_frame_ancestors(policy: &str) -> String {
    let mut found = false;
    let mut directives: Vec<&str> = Vec::new();
    for d in policy.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let name = d.split_ascii_whitespace().next().unwrap_or("");
        if !name.eq_ignore_ascii_case("frame-ancestors") {
            directives.push(d);
        } else if !found {
            // Browsers honour the first occurrence of a directive; later ones are dropped.
            found = true;
            directives.push(FRAME_ANCESTORS);
        }
    }
    if !found {
        directives.push(FRAME_ANCESTORS);
    }
    directives.join("; ")
}

#[cfg(test)]
mod tests;
