//! Who is calling: operator bearer tokens and roles, and the believed client address.
//!
//! Every operator endpoint extracts [`CurrentOperator`] (`Authorization: Bearer <token>`,
//! looked up in the store) and calls [`CurrentOperator::require`] with the role it needs; roles
//! nest, admin ⊇ operator ⊇ viewer. [`client_ip`] believes `X-Forwarded-For` only from
//! configured proxies and then takes the right-most hop that is not one of them (reference S-4).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ipnet::IpNet;

use crate::AppState;
use crate::error::AppError;
use crate::store::{Operator, Role};

/// Longest bearer token looked up (real tokens are far shorter).
pub const MAX_TOKEN: usize = 512;

/// The operator whose API token authenticated the request.
#[derive(Debug, Clone)]
pub struct CurrentOperator(pub Operator);

/// A role's rank: each role may do everything the roles below it may.
fn rank(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::Operator => 1,
        Role::Admin => 2,
    }
}

/// Whether `have` grants what `need` requires.
pub fn role_allows(have: Role, need: Role) -> bool {
    rank(have) >= rank(need)
}

impl CurrentOperator {
    /// Ok if the operator's role includes `need`; 403 naming the needed role otherwise.
    pub fn require(&self, need: Role) -> Result<(), AppError> {
        if role_allows(self.0.role, need) {
            Ok(())
        } else {
            Err(AppError::forbidden(format!(
                "this needs the {need} role; operator {:?} has the {} role",
                self.0.name, self.0.role
            )))
        }
    }

    /// The operator's name, as written in the audit trail.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AppError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        AppError::unauthorized("authentication required: send Authorization: Bearer <API token>")
    })?;
    let text = value
        .to_str()
        .map_err(|_| AppError::unauthorized("the Authorization header is not valid text"))?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AppError::unauthorized(
            "unsupported authentication scheme: send Authorization: Bearer <API token>",
        ));
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN || token.contains(char::is_whitespace) {
        return Err(AppError::unauthorized(
            "the bearer token is empty or malformed",
        ));
    }
    Ok(token)
}

impl FromRequestParts<AppState> for CurrentOperator {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<CurrentOperator, AppError> {
        // Without a Bearer token, the console's login cookie (and CSRF token) may stand in.
        if !parts.headers.contains_key(header::AUTHORIZATION)
            && let Some(operator) = crate::console::auth::api_operator(parts, state).await?
        {
            return Ok(CurrentOperator(operator));
        }
        let token = bearer_token(&parts.headers)?;
        match state.store.operator_for_token(token).await? {
            Some(operator) => Ok(CurrentOperator(operator)),
            None => Err(AppError::unauthorized(
                "the API token is not valid: it is unknown or revoked, or its operator is disabled",
            )),
        }
    }
}

/// The believed address of the caller; `None` when the server runs without connection info
/// (tests that call the router directly).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    /// The address as the audit trail stores it.
    pub fn audit_text(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<ClientAddr, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        Ok(ClientAddr(peer.map(|peer| {
            client_ip(peer, &parts.headers, &state.config.trusted_proxies)
        })))
    }
}

/// The client address of a request from `peer`: `X-Forwarded-For` is believed only when `peer`
/// is a trusted proxy, and then only back to the right-most hop that is not trusted (hops to
/// its left were written by the client and prove nothing). An unreadable hop ends the walk at
/// the last hop a trusted proxy vouched for; when every hop is trusted, the left-most one is
/// the client. IPv4-mapped IPv6 addresses are treated as IPv4.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.ip().to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let mut hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .flat_map(|v| v.split(','))
        .collect();
    hops.reverse();
    for hop in hops {
        let Some(ip) = parse_hop(hop.trim()) else {
            return client;
        };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            return client;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|sa| sa.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let ip = client_ip(
            peer("203.0.113.9"),
            &xff(&["1.1.1.1"]),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(ip.to_string(), "203.0.113.9");
        let ip = client_ip(peer("10.0.0.1"), &xff(&["1.1.1.1"]), &[]);
        assert_eq!(ip.to_string(), "10.0.0.1");
    }

    #[test]
    fn trusted_peer_yields_the_rightmost_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8", "192.0.2.7/32"]);
        // the client forged 6.6.6.6; the edge (192.0.2.7) appended the real client
        let h = xff(&["6.6.6.6, 198.51.100.4, 192.0.2.7"]);
        assert_eq!(
            client_ip(peer("10.1.2.3"), &h, &trusted).to_string(),
            "198.51.100.4"
        );
        // several header lines count as one list, in order
        let h = xff(&["6.6.6.6", "198.51.100.4"]);
        assert_eq!(
            client_ip(peer("10.1.2.3"), &h, &trusted).to_string(),
            "198.51.100.4"
        );
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        let ip = client_ip(peer("10.1.2.3"), &HeaderMap::new(), &nets(&["10.0.0.0/8"]));
        assert_eq!(ip.to_string(), "10.1.2.3");
    }

    #[test]
    fn garbage_hop_stops_at_the_last_vouched_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = xff(&["1.2.3.4, not-an-ip, 10.9.9.9"]);
        assert_eq!(
            client_ip(peer("10.1.2.3"), &h, &trusted).to_string(),
            "10.9.9.9"
        );
    }

    #[test]
    fn all_trusted_hops_yield_the_leftmost() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = xff(&["10.5.5.5, 10.6.6.6"]);
        assert_eq!(
            client_ip(peer("10.1.2.3"), &h, &trusted).to_string(),
            "10.5.5.5"
        );
    }

    #[test]
    fn mapped_ipv6_peer_and_hops_with_ports_are_understood() {
        let trusted = nets(&["127.0.0.1/32"]);
        let h = xff(&["[2001:db8::1]:4711, 127.0.0.1"]);
        let ip = client_ip(peer("::ffff:127.0.0.1"), &h, &trusted);
        assert_eq!(ip.to_string(), "2001:db8::1");
        let h = xff(&["198.51.100.1:1234"]);
        let ip = client_ip(peer("::ffff:127.0.0.1"), &h, &trusted);
        assert_eq!(ip.to_string(), "198.51.100.1");
    }

    fn operator(role: Role) -> CurrentOperator {
        CurrentOperator(Operator {
            id: "id".into(),
            name: "alice".into(),
            role,
            disabled: false,
            created_at: 0,
        })
    }

    #[test]
    fn roles_nest_admin_over_operator_over_viewer() {
        let (a, o, v) = (Role::Admin, Role::Operator, Role::Viewer);
        assert!(operator(a).require(a).is_ok());
        assert!(operator(a).require(o).is_ok());
        assert!(operator(a).require(v).is_ok());
        assert!(operator(o).require(o).is_ok());
        assert!(operator(o).require(v).is_ok());
        assert!(operator(v).require(v).is_ok());
        let e = operator(o).require(a).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::FORBIDDEN);
        assert!(e.message().contains("admin role"), "{}", e.message());
        let e = operator(v).require(o).unwrap_err();
        assert!(e.message().contains("operator role"), "{}", e.message());
    }

    #[test]
    fn bearer_token_is_required_and_well_formed() {
        let mut h = HeaderMap::new();
        assert!(bearer_token(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(bearer_token(&h).unwrap_err().message().contains("scheme"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(bearer_token(&h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer tok_123"),
        );
        assert_eq!(bearer_token(&h).unwrap(), "tok_123");
    }
}
