//! Name rules and the target policy (PROTOCOL section 8, REFERENCE 2.11 and 3.9).
//!
//! Targets are checked in two steps: [`check_target`] judges the syntax, the cloud-metadata name
//! blocklist and literal IP addresses; a target given by name comes back as
//! [`TargetHost::Name`] so that the caller resolves it and judges every resolved address with
//! [`check_ip`] before dialing it. Loopback and private ranges are allowed on purpose: reaching
//! the device's LAN is the point of a support tunnel.

use alloc::string::String;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest service name accepted in a `CONNECT` header.
pub const MAX_CONNECT_NAME: usize = 255;
/// Longest name of a service injected by `add_services`.
pub const MAX_INJECTED_NAME: usize = 64;
/// Most digits in a `node_id`.
pub const MAX_NODE_ID_DIGITS: usize = 10;
/// Longest upstream `host` (an HTTP `Host` value) accepted in a manifest.
pub const MAX_UPSTREAM_HOST: usize = 255;
/// Longest host name accepted in a target (the DNS limit).
pub const MAX_TARGET_NAME: usize = 253;
/// Longest target text (`[` + IPv6 with zone + `]:65535` fits comfortably).
pub const MAX_TARGET: usize = 270;

/// Host names that lead to cloud metadata services; compared case-insensitively, trailing dot ignored.
pub const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.azure.internal",
    "instance-data",
    "metadata.platformequinix.com",
];

/// Why a name or a target was refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A name was empty.
    #[error("name is empty")]
    EmptyName,
    /// A name was longer than its grammar allows.
    #[error("name is {len} bytes long, at most {max} are allowed")]
    NameTooLong { len: usize, max: usize },
    /// A name started with a character its grammar does not allow first.
    #[error("name must start with {allowed}, not {found:?}")]
    NameStart { found: char, allowed: &'static str },
    /// A name contained a character its grammar does not allow.
    #[error("name contains {found:?}, only {allowed} are allowed")]
    NameChar { found: char, allowed: &'static str },
    /// A `node_id` was not 1 to 10 decimal digits.
    #[error("node id {0:?} is not 1 to 10 decimal digits")]
    BadNodeId(String),
    /// A manifest `host` did not match the upstream host grammar.
    #[error(
        "upstream host {0:?} must consist of letters, digits, '.', ':' and '-' and start and end with a letter or digit"
    )]
    BadUpstreamHost(String),
    /// A target was empty.
    #[error("target is empty")]
    EmptyTarget,
    /// A target was longer than [`MAX_TARGET`].
    #[error("target is {len} bytes long, at most {max} are allowed")]
    TargetTooLong { len: usize, max: usize },
    /// A target had no `:port`.
    #[error("target {0:?} has no port, expected host:port")]
    MissingPort(String),
    /// A target had an empty host part.
    #[error("target {0:?} has no host, expected host:port")]
    EmptyHost(String),
    /// An unbracketed IPv6 address, or brackets that do not hold an IPv6 address.
    #[error("target {0:?} is ambiguous, write an IPv6 address as [address]:port")]
    BadBrackets(String),
    /// The port was not a number from 1 to 65535.
    #[error("port {0:?} is not a number from 1 to 65535")]
    BadPort(String),
    /// A host name with characters DNS names cannot have.
    #[error("host name {0:?} may only contain letters, digits, '.', '_' and '-'")]
    BadHostName(String),
    /// A host name that resolvers would read as a numeric IPv4 address in a non-standard form.
    #[error("host name {0:?} looks like a numeric address, write IPv4 addresses as a.b.c.d")]
    NumericHostName(String),
    /// A cloud metadata host name.
    #[error("{0:?} is a cloud metadata host name")]
    MetadataName(String),
    /// An address in a refused range.
    #[error("{ip} is {why}")]
    RefusedAddress { ip: IpAddr, why: &'static str },
}

const CONNECT_START: &str = "a letter or digit";
const CONNECT_CHARS: &str = "letters, digits, '.', '_' and '-'";
const INJECTED_START: &str = "a lowercase letter or digit";
const INJECTED_CHARS: &str = "lowercase letters, digits, '_' and '-'";

/// Checks a name against "one start class, then a rest class, at most `max` bytes".
fn check_name(
    name: &str,
    max: usize,
    start_ok: fn(u8) -> bool,
    start_allowed: &'static str,
    rest_ok: fn(u8) -> bool,
    rest_allowed: &'static str,
) -> Result<(), PolicyError> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err(PolicyError::EmptyName);
    };
    if name.len() > max {
        return Err(PolicyError::NameTooLong {
            len: name.len(),
            max,
        });
    }
    if !(first.is_ascii() && start_ok(first as u8)) {
        return Err(PolicyError::NameStart {
            found: first,
            allowed: start_allowed,
        });
    }
    match chars.find(|c| !(c.is_ascii() && rest_ok(*c as u8))) {
        Some(found) => Err(PolicyError::NameChar {
            found,
            allowed: rest_allowed,
        }),
        None => Ok(()),
    }
}

/// A service name in a `CONNECT` header: `^[a-zA-Z0-9][a-zA-Z0-9._-]*$`, at most 255 bytes.
pub fn validate_connect_name(name: &str) -> Result<(), PolicyError> {
    check_name(
        name,
        MAX_CONNECT_NAME,
        |b| b.is_ascii_alphanumeric(),
        CONNECT_START,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'),
        CONNECT_CHARS,
    )
}

/// The name of a service injected by `add_services`: `^[a-z0-9][a-z0-9_-]{0,63}$`.
pub fn validate_injected_name(name: &str) -> Result<(), PolicyError> {
    check_name(
        name,
        MAX_INJECTED_NAME,
        |b| b.is_ascii_lowercase() || b.is_ascii_digit(),
        INJECTED_START,
        |b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'),
        INJECTED_CHARS,
    )
}

/// A cluster node id: `^[0-9]{1,10}$`.
pub fn validate_node_id(s: &str) -> Result<(), PolicyError> {
    if (1..=MAX_NODE_ID_DIGITS).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(PolicyError::BadNodeId(String::from(clip(s))))
    }
}

/// A manifest `host`: empty, or `^[a-zA-Z0-9]([a-zA-Z0-9._:-]*[a-zA-Z0-9])?$` (at most 255 bytes).
pub fn validate_upstream_host(s: &str) -> Result<(), PolicyError> {
    let bytes = s.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Ok(());
    };
    let ok = bytes.len() <= MAX_UPSTREAM_HOST
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PolicyError::BadUpstreamHost(String::from(clip(s))))
    }
}

/// Splits `host:port` or `[v6]:port`; the host comes back without brackets, the port is 1..=65535.
pub fn split_target(target: &str) -> Result<(&str, u16), PolicyError> {
    if target.is_empty() {
        return Err(PolicyError::EmptyTarget);
    }
    if target.len() > MAX_TARGET {
        return Err(PolicyError::TargetTooLong {
            len: target.len(),
            max: MAX_TARGET,
        });
    }
    let owned = || String::from(target);
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| PolicyError::BadBrackets(owned()))?;
        if host.is_empty() || host.contains('[') {
            return Err(PolicyError::BadBrackets(owned()));
        }
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| PolicyError::MissingPort(owned()))?;
        (host, port)
    } else {
        let (host, port) = target
            .rsplit_once(':')
            .ok_or_else(|| PolicyError::MissingPort(owned()))?;
        if host.contains(':') || host.contains('[') || host.contains(']') {
            return Err(PolicyError::BadBrackets(owned()));
        }
        if host.is_empty() {
            return Err(PolicyError::EmptyHost(owned()));
        }
        (host, port)
    };
    Ok((host, parse_port(port)?))
}

/// A decimal port 1..=65535 (digits only: no sign, no spaces).
fn parse_port(text: &str) -> Result<u16, PolicyError> {
    let bad = || PolicyError::BadPort(String::from(clip(text)));
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(bad()),
    }
}

/// The host part of a checked target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetHost<'a> {
    /// A literal address that passed [`check_ip`].
    Ip(IpAddr),
    /// A host name to resolve; every resolved address must pass [`check_ip`] before it is dialed.
    Name(&'a str),
}

/// Syntax, the metadata-name blocklist and the literal-IP policy of a `host:port` target.
pub fn check_target(target: &str) -> Result<(TargetHost<'_>, u16), PolicyError> {
    let (host, port) = split_target(target)?;
    let bracketed = target.starts_with('[');
    if let Ok(ip) = host.parse::<IpAddr>() {
        if bracketed != ip.is_ipv6() {
            return Err(PolicyError::BadBrackets(String::from(target)));
        }
        check_ip(ip)?;
        return Ok((TargetHost::Ip(ip), port));
    }
    if bracketed {
        return Err(PolicyError::BadBrackets(String::from(target)));
    }
    check_host_name(host)?;
    Ok((TargetHost::Name(host), port))
}

/// Syntax only (no address policy): `host:port` or `[v6]:port` where the host is an IP
/// literal or a DNS-style name. For targets the device's own configuration names (static and
/// discovered services), which the reference never subjects to the target policy.
pub fn validate_target_syntax(target: &str) -> Result<(), PolicyError> {
    let (host, _) = split_target(target)?;
    if target.starts_with('[') {
        // A zone ("fe80::1%eth0") is legitimate in the device's own configuration.
        let address = host.split_once('%').map_or(host, |(address, _)| address);
        return match address.parse::<Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(PolicyError::BadBrackets(String::from(clip(target)))),
        };
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    check_host_name_syntax(host)
}

/// DNS characters, 1 to 253 bytes (a trailing dot allowed).
fn check_host_name_syntax(host: &str) -> Result<(), PolicyError> {
    let bare = host.strip_suffix('.').unwrap_or(host);
    let ok = !bare.is_empty()
        && bare.len() <= MAX_TARGET_NAME
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PolicyError::BadHostName(String::from(clip(host))))
    }
}

/// A host name to be resolved: DNS characters, not a metadata name, not a numeric address in disguise.
fn check_host_name(host: &str) -> Result<(), PolicyError> {
    check_host_name_syntax(host)?;
    let bare = host.strip_suffix('.').unwrap_or(host);
    if METADATA_NAMES
        .iter()
        .any(|blocked| blocked.eq_ignore_ascii_case(bare))
    {
        return Err(PolicyError::MetadataName(String::from(host)));
    }
    // inet_aton-style resolvers read "2852039166", "0xa9fea9fe" or "169.254.43518" as IPv4
    // addresses; no real DNS name has an all-numeric top-level label, so refuse them rather
    // than trust every resolver to be strict.
    let last = bare.rsplit('.').next().unwrap_or(bare);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.len() > 2
            && last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
            && last.bytes().skip(2).all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Err(PolicyError::NumericHostName(String::from(host)));
    }
    Ok(())
}

/// The address policy, applied to literal targets and to every resolved address before dialing.
pub fn check_ip(ip: IpAddr) -> Result<(), PolicyError> {
    let why = match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    };
    match why {
        Some(why) => Err(PolicyError::RefusedAddress { ip, why }),
        None => Ok(()),
    }
}

const METADATA_ADDRESS: &str = "a cloud metadata address";

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, d] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some(METADATA_ADDRESS)
    } else if a == 0 {
        Some("an unspecified (this-network) address")
    } else if a == 169 && b == 254 {
        Some("a link-local address")
    } else if (224..=239).contains(&a) {
        Some("a multicast address")
    } else if [a, b, c, d] == [255; 4] {
        Some("the broadcast address")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(METADATA_ADDRESS);
    }
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return None;
    }
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d)
    // addresses reach the embedded IPv4 address, so they are judged as that address.
    if let Some(v4) = ip.to_ipv4() {
        return refused_v4(v4);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = seg;
        let embedded = (u32::from(hi) << 16) | u32::from(lo);
        return refused_v4(Ipv4Addr::from(embedded));
    }
    if seg[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if seg[0] & 0xff00 == 0xff00 {
        Some("a multicast address")
    } else {
        None
    }
}

/// At most 64 bytes of untrusted text for an error message, cut at a character boundary.
fn clip(s: &str) -> &str {
    const SHOWN: usize = 64;
    if s.len() <= SHOWN {
        return s;
    }
    let mut end = SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests;
