//! `tether-plugin-dns`: a Tether diagnostics plugin (see `plugins/README.md`) that checks that
//! the names the appliance depends on resolve, and how long resolving takes.
//!
//! Names come from the arguments, else from `/etc/tether/dns-check.names` (one per line, `#`
//! comments), else the relay's host (`TETHER_RELAY_HOST`, set by the agent). Each name is one
//! check: `ok` when it resolves within [`SLOW`], `warning` when slower, `critical` when it does
//! not resolve. Output is the JSON format; the exit code is the Nagios one (0/1/2/3).
//! Standard library only, so it builds for any appliance target.

use std::fmt::Write as _;
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Resolving slower than this is a warning.
const SLOW: Duration = Duration::from_secs(2);
/// Where the names to check are configured.
const NAMES_FILE: &str = "/etc/tether/dns-check.names";

/// Severity, least first (the order of `plugins/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Ok,
    Warning,
    Unknown,
    Critical,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Unknown => "unknown",
            Status::Critical => "critical",
        }
    }

    fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }
}

/// One name's result.
struct Check {
    name: String,
    status: Status,
    value: String,
}

fn resolve(name: &str) -> Check {
    let started = Instant::now();
    // The port is required by the std resolver and irrelevant to the answer.
    let result = (name, 0u16).to_socket_addrs();
    let took = started.elapsed();
    match result {
        Ok(addrs) => {
            let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            let status = if addrs.is_empty() {
                Status::Critical
            } else if took > SLOW {
                Status::Warning
            } else {
                Status::Ok
            };
            Check {
                name: name.to_owned(),
                status,
                value: format!("{} in {} ms", addrs.join(" "), took.as_millis()),
            }
        }
        Err(e) => Check {
            name: name.to_owned(),
            status: Status::Critical,
            value: format!("does not resolve: {e}"),
        },
    }
}

/// The names to check: arguments, the names file, or the relay host.
fn names(args: Vec<String>, file: Option<String>, relay: Option<String>) -> Vec<String> {
    if !args.is_empty() {
        return args;
    }
    if let Some(text) = file {
        let listed: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if !listed.is_empty() {
            return listed;
        }
    }
    relay.filter(|r| !r.is_empty()).into_iter().collect()
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The plugin's JSON report and its status.
fn report(checks: &[Check]) -> (String, Status) {
    let status = checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Unknown);
    let failed = checks.iter().filter(|c| c.status != Status::Ok).count();
    let summary = if checks.is_empty() {
        format!("no names to check: list them in {NAMES_FILE}")
    } else if failed == 0 {
        format!("{} names resolve", checks.len())
    } else {
        format!("{failed} of {} names fail or are slow", checks.len())
    };
    let list: Vec<String> = checks
        .iter()
        .map(|c| {
            format!(
                "{{\"name\":{},\"status\":\"{}\",\"value\":{}}}",
                json_str(&c.name),
                c.status.as_str(),
                json_str(&c.value)
            )
        })
        .collect();
    let json = format!(
        "{{\"id\":\"dns\",\"name\":\"DNS resolution\",\"status\":\"{}\",\"summary\":{},\"checks\":[{}]}}",
        status.as_str(),
        json_str(&summary),
        list.join(",")
    );
    (json, status)
}

fn main() -> ExitCode {
    let names = names(
        std::env::args().skip(1).collect(),
        std::fs::read_to_string(NAMES_FILE).ok(),
        std::env::var("TETHER_RELAY_HOST").ok(),
    );
    let checks: Vec<Check> = names.iter().map(|n| resolve(n)).collect();
    let (json, status) = report(&checks);
    println!("{json}");
    ExitCode::from(status.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_resolves_ok() {
        let check = resolve("localhost");
        assert_eq!(check.status, Status::Ok, "{}", check.value);
    }

    #[test]
    fn no_names_is_unknown_with_a_hint() {
        let (json, status) = report(&[]);
        assert_eq!(status, Status::Unknown);
        assert!(json.contains(NAMES_FILE), "{json}");
    }

    #[test]
    fn names_come_from_args_then_file_then_relay() {
        let arg = vec!["a.example".to_owned()];
        let file = Some("# comment\n b.example \n\n".to_owned());
        let relay = Some("relay.example".to_owned());
        assert_eq!(names(arg, file.clone(), relay.clone()), ["a.example"]);
        assert_eq!(names(vec![], file, relay.clone()), ["b.example"]);
        assert_eq!(names(vec![], None, relay), ["relay.example"]);
        assert!(names(vec![], None, None).is_empty());
    }

    #[test]
    fn worst_check_decides_and_text_is_escaped() {
        let checks = [
            Check {
                name: "ok\"name".into(),
                status: Status::Ok,
                value: "1.2.3.4".into(),
            },
            Check {
                name: "bad".into(),
                status: Status::Critical,
                value: "does not resolve:\nnxdomain".into(),
            },
        ];
        let (json, status) = report(&checks);
        assert_eq!(status, Status::Critical);
        assert_eq!(status.exit_code(), 2);
        assert!(json.contains(r#""name":"ok\"name""#), "{json}");
        assert!(json.contains(r"resolve:\nnxdomain"), "{json}");
        assert!(json.contains("1 of 2 names"), "{json}");
    }
}
