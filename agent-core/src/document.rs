//! The JSON documents of PROTOCOL section 5 (REFERENCE 1.8), and their postcard form for v2.
//!
//! JSON output is what Go's `encoding/json` emits for the reference structs: fields in
//! declaration order, `omitempty` fields left out, map keys sorted, `<`, `>`, `&`, U+2028 and
//! U+2029 escaped. Unknown fields are ignored on input. For postcard (not self-describing) every
//! field is always written, so the same types round-trip through both encodings.

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

pub use crate::services::CommandError;

/// Most services in one manifest.
pub const MAX_MANIFEST_SERVICES: usize = 500;
/// Largest diagnostics report the relay accepts.
pub const MAX_DIAGNOSTICS_BYTES: usize = 512 * 1024;
/// Largest users report the relay accepts (and USERS_FETCH reply the agent reads).
pub const MAX_USERS_BYTES: usize = 256 * 1024;
/// Largest agent-opened control stream (manifest, diagnostics, users) the relay reads.
pub const MAX_CONTROL_STREAM_BYTES: usize = 1024 * 1024;
/// Largest `COMMAND 1` JSON payload the agent reads.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Most fractional-second digits accepted in a timestamp (nanoseconds, as Go writes them).
pub const MAX_TIMESTAMP_FRACTION_DIGITS: usize = 9;

/// What was wrong with a document.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("invalid json: {0}")]
    Json(serde_json::Error),
    /// A document larger than its limit.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A manifest with more than [`MAX_MANIFEST_SERVICES`] services.
    #[error("manifest has {count} services, at most {max} are allowed")]
    TooManyServices { count: usize, max: usize },
    /// A timestamp that is not RFC 3339.
    #[error("timestamp {0:?} is not RFC 3339")]
    BadTimestamp(String),
    /// Bytes that are not a postcard encoding of the expected type.
    #[error("invalid postcard encoding: {0}")]
    Postcard(postcard::Error),
    /// Bytes left over after a postcard value.
    #[error("invalid postcard encoding: {0} bytes left after the value")]
    TrailingBytes(usize),
}

fn check_size(what: &'static str, bytes: &[u8], max: usize) -> Result<(), DocumentError> {
    if bytes.len() > max {
        return Err(DocumentError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    Ok(())
}

/// Serializes a struct whose `omitempty` fields are left out of human-readable output only.
///
/// `field` is always written; `field => is_empty` is skipped in JSON when `is_empty(&field)`.
macro_rules! go_struct_serialize {
    ($ty:ident { $($field:ident $(=> $omit:path)?),* $(,)? }) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let readable = serializer.is_human_readable();
                let len = 0 $(+ usize::from(!(readable && go_struct_serialize!(@omit self.$field $(, $omit)?))))*;
                let mut st = serializer.serialize_struct(stringify!($ty), len)?;
                $(
                    if readable && go_struct_serialize!(@omit self.$field $(, $omit)?) {
                        st.skip_field(stringify!($field))?;
                    } else {
                        st.serialize_field(stringify!($field), &self.$field)?;
                    }
                )*
                st.end()
            }
        }
    };
    (@omit $value:expr) => { false };
    (@omit $value:expr, $omit:path) => { $omit(&$value) };
}

/// One published service (REFERENCE 1.8 `ServiceInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default)]
pub struct ServiceInfo {
    /// `host:port` the agent dials.
    pub target: String,
    /// HTTP `Host` to present upstream (may be empty).
    pub host: String,
    /// Whether the agent wraps the connection to the target in TLS.
    pub tls: bool,
    /// Display label.
    pub label: String,
    /// Route path (display and routing hint); omitted when empty.
    pub path: String,
    /// Prefix the relay strips before forwarding; omitted when empty.
    pub path_prefix: String,
    /// NS8 module id; omitted when empty.
    pub module_id: String,
    /// NS8 node id hosting the service; omitted when empty.
    pub node_id: String,
}

go_struct_serialize!(ServiceInfo {
    target,
    host,
    tls,
    label,
    path => String::is_empty,
    path_prefix => String::is_empty,
    module_id => String::is_empty,
    node_id => String::is_empty,
});

/// The service manifest: the agent's complete list of services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Manifest {
    /// Always 1; never checked on input (like the reference relay).
    #[serde(default)]
    pub version: u32,
    /// Services by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceInfo>,
}

impl Manifest {
    /// Parses a manifest stream body. Ok(None) when `services` is JSON null or missing, which
    /// the reference relay ignores (an empty object clears the services).
    pub fn parse_json(bytes: &[u8]) -> Result<Option<Manifest>, DocumentError> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            version: u32,
            #[serde(default)]
            services: Option<BTreeMap<String, ServiceInfo>>,
        }
        check_size("manifest", bytes, MAX_CONTROL_STREAM_BYTES)?;
        let wire: Wire = serde_json::from_slice(bytes).map_err(DocumentError::Json)?;
        let Some(services) = wire.services else {
            return Ok(None);
        };
        if services.len() > MAX_MANIFEST_SERVICES {
            return Err(DocumentError::TooManyServices {
                count: services.len(),
                max: MAX_MANIFEST_SERVICES,
            });
        }
        Ok(Some(Manifest {
            version: wire.version,
            services,
        }))
    }
}

/// A check or plugin status, ordered by severity: Ok is the least, Critical the most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// `ok`
    Ok,
    /// `warning`
    Warning,
    /// `unknown`, also any status text this crate does not recognise
    Unknown,
    /// `timeout`: the plugin did not finish in time
    Timeout,
    /// `error`: the plugin could not run
    Error,
    /// `critical`
    Critical,
}

impl Status {
    const ALL: [Status; 6] = [
        Status::Ok,
        Status::Warning,
        Status::Unknown,
        Status::Timeout,
        Status::Error,
        Status::Critical,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Unknown => "unknown",
            Status::Timeout => "timeout",
            Status::Error => "error",
            Status::Critical => "critical",
        }
    }

    /// The most severe status; Ok when there is none.
    pub fn worst<I: IntoIterator<Item = Status>>(it: I) -> Status {
        it.into_iter().max().unwrap_or(Status::Ok)
    }

    /// Reads a status text (case-insensitively); anything unrecognised is Unknown.
    pub fn from_text(text: &str) -> Status {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
            .unwrap_or(Status::Unknown)
    }
}

/// A missing status is Unknown, never Ok.
impl Default for Status {
    fn default() -> Self {
        Status::Unknown
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StatusVisitor;
        impl Visitor<'_> for StatusVisitor {
            type Value = Status;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Status, E> {
                Ok(Status::from_text(v))
            }
        }
        deserializer.deserialize_str(StatusVisitor)
    }
}

/// An RFC 3339 timestamp, kept as the text it was written as (validated on input).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Timestamp(String);

/// The fields of a validated timestamp.
#[derive(Debug, Clone, Copy)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    offset_seconds: i64,
}

/// Earliest and latest instants [`Timestamp::from_unix_millis`] writes (years 0000 to 9999).
const MIN_UNIX_MILLIS: i64 = -62_167_219_200_000;
const MAX_UNIX_MILLIS: i64 = 253_402_300_799_999;
const MILLIS_PER_DAY: i64 = 86_400_000;

impl Timestamp {
    /// Validates RFC 3339 text: `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+HH:MM|-HH:MM)`; `t`/`z` allowed.
    pub fn parse(s: &str) -> Result<Timestamp, DocumentError> {
        match parse_civil(s) {
            Some(_) => Ok(Timestamp(String::from(s))),
            None => Err(DocumentError::BadTimestamp(crate::wire::shown(s))),
        }
    }

    /// The timestamp text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// UTC text for milliseconds since the Unix epoch, written like Go's `RFC3339Nano`
    /// (trailing zeros of the fraction trimmed): `2026-11-22T21:47:19.123Z`. Instants outside
    /// the years 0000 to 9999 are clamped to them.
    pub fn from_unix_millis(ms: i64) -> Timestamp {
        let ms = ms.clamp(MIN_UNIX_MILLIS, MAX_UNIX_MILLIS);
        let days = ms.div_euclid(MILLIS_PER_DAY);
        let of_day = ms.rem_euclid(MILLIS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let secs = of_day / 1000;
        let millis = of_day % 1000;
        let mut text = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        if millis != 0 {
            let fraction = format!("{millis:03}");
            text.push('.');
            text.push_str(fraction.trim_end_matches('0'));
        }
        text.push('Z');
        Timestamp(text)
    }

    /// Milliseconds since the Unix epoch, honouring the offset (sub-millisecond digits truncated
    /// towards the past).
    pub fn to_unix_millis(&self) -> i64 {
        // The text was validated when the Timestamp was made, so this cannot fail.
        let Some(c) = parse_civil(&self.0) else {
            return 0;
        };
        let days = days_from_civil(c.year, c.month, c.day);
        let local_seconds = days * 86_400
            + i64::from(c.hour) * 3600
            + i64::from(c.minute) * 60
            + i64::from(c.second);
        (local_seconds - c.offset_seconds) * 1000 + i64::from(c.nanos / 1_000_000)
    }
}

/// Go's zero `time.Time`, what Go decodes a missing time field as.
impl Default for Timestamp {
    fn default() -> Self {
        Timestamp(String::from("0001-01-01T00:00:00Z"))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(de::Error::custom)
    }
}

/// Parses RFC 3339; None for anything else (including out-of-range fields).
fn parse_civil(s: &str) -> Option<Civil> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from.checked_add(len)?)?;
        digits.iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let at = |i: usize, want: &[u8]| b.get(i).is_some_and(|c| want.contains(c));
    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let hour = num(11, 2)?;
    let minute = num(14, 2)?;
    let second = num(17, 2)?;
    let separators_ok = at(4, b"-") && at(7, b"-") && at(10, b"Tt") && at(13, b":") && at(16, b":");
    if !separators_ok {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if at(i, b".") {
        let digits = b
            .get(i + 1..)?
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 || digits > MAX_TIMESTAMP_FRACTION_DIGITS {
            return None;
        }
        let value = num(i + 1, digits)?;
        nanos = value * 10u32.pow((MAX_TIMESTAMP_FRACTION_DIGITS - digits) as u32);
        i += 1 + digits;
    }
    let offset_seconds = if at(i, b"Zz") {
        i += 1;
        0
    } else if at(i, b"+-") {
        let oh = num(i + 1, 2)?;
        let om = num(i + 4, 2)?;
        if !at(i + 3, b":") || oh > 23 || om > 59 {
            return None;
        }
        let magnitude = i64::from(oh * 3600 + om * 60);
        let negative = at(i, b"-");
        i += 6;
        if negative { -magnitude } else { magnitude }
    } else {
        return None;
    };
    let in_range = i == b.len()
        && (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(i64::from(year), month)
        && hour <= 23
        && minute <= 59
        && second <= 59;
    in_range.then_some(Civil {
        year: i64::from(year),
        month,
        day,
        hour,
        minute,
        second,
        nanos,
        offset_seconds,
    })
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day number since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // day is 1..=31 and month 1..=12 by construction.
    (year, month as u32, day as u32)
}

/// Arbitrary JSON `details` of a check: the JSON value itself in human-readable formats, a JSON
/// string in postcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details(pub serde_json::Value);

impl Serialize for Details {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.0.serialize(serializer)
        } else {
            let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
            serializer.serialize_str(&text)
        }
    }
}

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            serde_json::Value::deserialize(deserializer).map(Details)
        } else {
            let text = Cow::<'de, str>::deserialize(deserializer)?;
            serde_json::from_str(&text)
                .map(Details)
                .map_err(de::Error::custom)
        }
    }
}

/// One check of a diagnostics plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default)]
pub struct Check {
    /// Check name.
    pub name: String,
    /// Check status.
    pub status: Status,
    /// Measured value, omitted when None.
    pub value: Option<String>,
    /// Arbitrary JSON, omitted when None.
    pub details: Option<Details>,
}

go_struct_serialize!(Check {
    name,
    status,
    value => Option::is_none,
    details => Option::is_none,
});

/// The result of one diagnostics plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default)]
pub struct PluginReport {
    /// Plugin id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Plugin status.
    pub status: Status,
    /// One-line summary, omitted when None.
    pub summary: Option<String>,
    /// Checks, omitted when empty.
    pub checks: Vec<Check>,
}

go_struct_serialize!(PluginReport {
    id,
    name,
    status,
    summary => Option::is_none,
    checks => Vec::is_empty,
});

/// The `DIAGNOSTICS 1` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DiagnosticsReport {
    /// When collection started.
    pub collected_at: Timestamp,
    /// How long collection took.
    pub duration_ms: i64,
    /// The most severe plugin status.
    pub overall_status: Status,
    /// Plugin results.
    pub plugins: Vec<PluginReport>,
}

impl DiagnosticsReport {
    /// Parses a diagnostics stream body (at most [`MAX_DIAGNOSTICS_BYTES`]).
    pub fn parse_json(bytes: &[u8]) -> Result<DiagnosticsReport, DocumentError> {
        check_size("diagnostics report", bytes, MAX_DIAGNOSTICS_BYTES)?;
        serde_json::from_slice(bytes).map_err(DocumentError::Json)
    }
}

/// A username and its password; Debug never shows the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Credential {
    /// User name.
    pub username: String,
    /// Plaintext password (a secret).
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// A support user in a domain; Debug never shows the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DomainUser {
    /// User domain.
    pub domain: String,
    /// Module the domain belongs to.
    pub module: String,
    /// User name.
    pub username: String,
    /// Plaintext password (a secret).
    pub password: String,
}

impl fmt::Debug for DomainUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainUser")
            .field("domain", &self.domain)
            .field("module", &self.module)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// An application the support users can log in to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default)]
pub struct AppInfo {
    /// Application id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Login URL, omitted when None.
    pub url: Option<String>,
    /// Notes for the operator, omitted when None.
    pub notes: Option<String>,
}

go_struct_serialize!(AppInfo {
    id,
    name,
    url => Option::is_none,
    notes => Option::is_none,
});

/// A provisioning step that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct UserError {
    /// Plugin or step id.
    pub id: String,
    /// What went wrong.
    pub message: String,
}

/// The support users created on the device for one session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default)]
pub struct SessionUsers {
    /// Carries the system key (as the reference does).
    pub session_id: String,
    /// `ns8` or `nethsecurity`.
    pub platform: String,
    /// Cluster administrator, omitted when None.
    pub cluster_admin: Option<Credential>,
    /// Domain users, omitted when empty.
    pub domain_users: Vec<DomainUser>,
    /// Local users, omitted when empty.
    pub local_users: Vec<Credential>,
    /// Applications, omitted when empty.
    pub apps: Vec<AppInfo>,
    /// Failed steps, omitted when empty.
    pub errors: Vec<UserError>,
    /// Module id to user domain, omitted when empty.
    pub module_domains: BTreeMap<String, String>,
    /// When the users were created.
    pub created_at: Timestamp,
}

go_struct_serialize!(SessionUsers {
    session_id,
    platform,
    cluster_admin => Option::is_none,
    domain_users => Vec::is_empty,
    local_users => Vec::is_empty,
    apps => Vec::is_empty,
    errors => Vec::is_empty,
    module_domains => BTreeMap::is_empty,
    created_at,
});

/// The `USERS 1` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct UsersReport {
    /// When the report was made.
    pub created_at: Timestamp,
    /// Time since `users.created_at` at send time.
    pub duration_ms: i64,
    /// The users.
    pub users: SessionUsers,
}

impl UsersReport {
    /// Parses a users stream body or USERS_FETCH reply (at most [`MAX_USERS_BYTES`]); `{}` (the
    /// relay's "none") parses as the default report, like Go's zero value.
    pub fn parse_json(bytes: &[u8]) -> Result<UsersReport, DocumentError> {
        check_size("users report", bytes, MAX_USERS_BYTES)?;
        serde_json::from_slice(bytes).map_err(DocumentError::Json)
    }
}

/// A `COMMAND 1` payload, tagged by `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Publish services until they are removed or the agent restarts.
    AddServices {
        /// Services by name.
        services: BTreeMap<String, ServiceInfo>,
    },
    /// Remove services added by `add_services`.
    RemoveServices {
        /// Names to remove.
        service_names: Vec<String>,
    },
}

/// JSON form: internally tagged by `action`, as the reference `commandPayload`.
#[derive(Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum CommandJsonOut<'a> {
    AddServices {
        services: &'a BTreeMap<String, ServiceInfo>,
    },
    RemoveServices {
        service_names: &'a [String],
    },
}

/// Postcard form: externally tagged (postcard cannot read internally tagged enums).
#[derive(Serialize, Deserialize)]
enum CommandCompact {
    AddServices {
        services: BTreeMap<String, ServiceInfo>,
    },
    RemoveServices {
        service_names: Vec<String>,
    },
}

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (serializer.is_human_readable(), self) {
            (true, Command::AddServices { services }) => {
                CommandJsonOut::AddServices { services }.serialize(serializer)
            }
            (true, Command::RemoveServices { service_names }) => {
                CommandJsonOut::RemoveServices { service_names }.serialize(serializer)
            }
            (false, Command::AddServices { services }) => serializer.serialize_newtype_variant(
                "Command",
                0,
                "AddServices",
                &CompactAdd { services },
            ),
            (false, Command::RemoveServices { service_names }) => serializer
                .serialize_newtype_variant(
                    "Command",
                    1,
                    "RemoveServices",
                    &CompactRemove { service_names },
                ),
        }
    }
}

/// Borrowing twins of the [`CommandCompact`] variants (same postcard layout).
#[derive(Serialize)]
struct CompactAdd<'a> {
    services: &'a BTreeMap<String, ServiceInfo>,
}
#[derive(Serialize)]
struct CompactRemove<'a> {
    service_names: &'a [String],
}

impl<'de> Deserialize<'de> for Command {
    /// Postcard reads the compact form; JSON goes through [`Command::parse_json`], whose errors
    /// are the reference's words.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let value = serde_json::Value::deserialize(deserializer)?;
            let bytes = serde_json::to_vec(&value).map_err(de::Error::custom)?;
            return Command::parse_json(&bytes).map_err(de::Error::custom);
        }
        Ok(match CommandCompact::deserialize(deserializer)? {
            CommandCompact::AddServices { services } => Command::AddServices { services },
            CommandCompact::RemoveServices { service_names } => {
                Command::RemoveServices { service_names }
            }
        })
    }
}

impl Command {
    /// Parses a `COMMAND 1` JSON payload; errors carry the reference's `ERROR` texts. Only the
    /// shape is checked here; [`Command::validate`] and the catalogue check the contents.
    pub fn parse_json(bytes: &[u8]) -> Result<Command, CommandError> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            action: String,
            #[serde(default)]
            services: Option<BTreeMap<String, ServiceInfo>>,
            #[serde(default)]
            service_names: Option<Vec<String>>,
        }
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(CommandError::TooLarge {
                len: bytes.len(),
                max: MAX_COMMAND_BYTES,
            });
        }
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| CommandError::InvalidJson(format!("{e}")))?;
        match wire.action.as_str() {
            "add_services" => Ok(Command::AddServices {
                services: wire.services.unwrap_or_default(),
            }),
            "remove_services" => Ok(Command::RemoveServices {
                service_names: wire.service_names.unwrap_or_default(),
            }),
            other => Err(CommandError::UnknownAction(crate::wire::shown(other))),
        }
    }

    /// Compact JSON and `\n`, as the relay writes it after `COMMAND 1\n`.
    pub fn to_json_line(&self) -> Vec<u8> {
        to_json_line(self)
    }
}

/// Compact JSON and `\n`, escaped like Go's `encoding/json`.
///
/// Serializing the types of this crate cannot fail (string map keys, no custom failures); a
/// failure of some other type would yield `{}` and the newline.
pub fn to_json_line<T: Serialize>(value: &T) -> Vec<u8> {
    let json = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(json.len() + 1);
    // In JSON text these characters can only occur inside strings, so escaping them byte-wise
    // gives exactly Go's output.
    let mut rest = json.as_slice();
    while let Some((&b, tail)) = rest.split_first() {
        match (b, tail) {
            (b'<', _) => out.extend_from_slice(b"\\u003c"),
            (b'>', _) => out.extend_from_slice(b"\\u003e"),
            (b'&', _) => out.extend_from_slice(b"\\u0026"),
            (0xe2, [0x80, 0xa8, ..]) | (0xe2, [0x80, 0xa9, ..]) => {
                let escape: &[u8] = if tail.get(1) == Some(&0xa8) {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                };
                out.extend_from_slice(escape);
                rest = tail.get(2..).unwrap_or(&[]);
                continue;
            }
            _ => out.push(b),
        }
        rest = tail;
    }
    out.push(b'\n');
    out
}

/// The postcard encoding of a document (protocol v2).
pub fn to_postcard<T: Serialize>(value: &T) -> Result<Vec<u8>, DocumentError> {
    postcard::to_allocvec(value).map_err(DocumentError::Postcard)
}

/// Reads a postcard document; bytes left over after the value are an error.
pub fn from_postcard<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DocumentError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(DocumentError::Postcard)?;
    if !rest.is_empty() {
        return Err(DocumentError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
