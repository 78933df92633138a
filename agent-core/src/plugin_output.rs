//! Diagnostics plugin output (`plugins/README.md`): what a plugin printed and how it exited,
//! turned into a [`PluginReport`]; the limits every report is clamped to (the agent before
//! sending, the relay on receipt); and when two reports differ enough to send again.
//!
//! A plugin speaks one of two formats:
//!
//! * **JSON**: stdout is one object `{"id","name","status","summary","checks"}` (PROTOCOL
//!   section 5). Missing `id`/`name` come from the plugin's file name; the status is the more
//!   severe of the reported one and the exit code's.
//! * **Monitoring Plugins (Nagios)**: exit 0/1/2/3 = ok/warning/critical/unknown, any other
//!   code is `error`; the first stdout line `TEXT | perfdata` gives the summary and every
//!   performance datum (`'label'=value[UOM];[warn];[crit];[min];[max]`) becomes a check, its
//!   status judged against its own warn/crit ranges.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::Deserialize;

use crate::document::{Check, Details, DiagnosticsReport, PluginReport, Status};

/// Longest plugin id; longer ones are cut.
pub const MAX_ID_LEN: usize = 64;
/// Longest plugin or check name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest summary or check value.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most checks one plugin reports; more are dropped.
pub const MAX_CHECKS: usize = 200;
/// Most plugins in one report; more are dropped.
pub const MAX_PLUGINS: usize = 256;
/// Largest `details` of one check, as compact JSON; larger ones are dropped.
pub const MAX_DETAILS_BYTES: usize = 16 * 1024;

/// The status a plugin's exit code means (`None`: killed by a signal, or never exited).
pub fn exit_status(code: Option<i32>) -> Status {
    match code {
        Some(0) => Status::Ok,
        Some(1) => Status::Warning,
        Some(2) => Status::Critical,
        Some(3) => Status::Unknown,
        _ => Status::Error,
    }
}

/// The plugin id of an executable's file name: the name less its last extension
/// (`check-disk.sh` → `check-disk`), one rule for every plugin directory (REFERENCE B-19).
pub fn plugin_id(file_name: &str) -> String {
    let stem = match file_name.rfind('.') {
        Some(0) | None => file_name,
        Some(dot) => file_name.get(..dot).unwrap_or(file_name),
    };
    clip(stem, MAX_ID_LEN)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonOutput {
    id: Option<String>,
    name: Option<String>,
    status: Option<Status>,
    summary: Option<String>,
    checks: Option<Vec<Check>>,
}

/// A plugin's result from its id, stdout and exit code; never fails, never panics.
pub fn parse(id: &str, stdout: &[u8], exit_code: Option<i32>) -> PluginReport {
    let exit = exit_status(exit_code);
    let text = String::from_utf8_lossy(stdout);
    let trimmed = text.trim();
    let mut report = if trimmed.starts_with('{') {
        match serde_json::from_str::<JsonOutput>(trimmed) {
            Ok(out) => PluginReport {
                id: out
                    .id
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| id.to_owned()),
                name: out
                    .name
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| id.to_owned()),
                status: out.status.map_or(exit, |s| Status::worst([s, exit])),
                summary: out.summary.filter(|s| !s.is_empty()),
                checks: out.checks.unwrap_or_default(),
            },
            Err(e) => PluginReport {
                id: id.to_owned(),
                name: id.to_owned(),
                status: Status::worst([exit, Status::Unknown]),
                summary: Some(format!("output looks like JSON but is not valid: {e}")),
                checks: Vec::new(),
            },
        }
    } else {
        nagios(id, trimmed, exit)
    };
    if report.summary.is_none() && exit == Status::Error {
        report.summary = Some(match exit_code {
            Some(code) => format!("exited with code {code}"),
            None => "killed by a signal".to_owned(),
        });
    }
    clamp_plugin(&mut report);
    report
}

/// Monitoring Plugins output: `TEXT | perf` on the first line, long text, `| more perf` after.
fn nagios(id: &str, text: &str, exit: Status) -> PluginReport {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let (summary, mut perf) = match first.split_once('|') {
        Some((t, p)) => (t.trim(), String::from(p)),
        None => (first.trim(), String::new()),
    };
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf.push(' ');
            perf.push_str(line);
        } else if let Some((_, p)) = line.split_once('|') {
            in_perf = true;
            perf.push(' ');
            perf.push_str(p);
        }
    }
    PluginReport {
        id: id.to_owned(),
        name: id.to_owned(),
        status: exit,
        summary: (!summary.is_empty()).then(|| summary.to_owned()),
        checks: perfdata(&perf),
    }
}

/// One performance datum, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfDatum {
    /// Label, unquoted.
    pub label: String,
    /// The value text (`U` when undetermined).
    pub value: String,
    /// Unit of measure.
    pub uom: String,
    /// Warning range, as written.
    pub warn: String,
    /// Critical range, as written.
    pub crit: String,
    /// Minimum, as written.
    pub min: String,
    /// Maximum, as written.
    pub max: String,
}

impl PerfDatum {
    /// The datum's status: critical or warning when the value is outside (or, for `@` ranges,
    /// inside) that range, unknown when the value is undetermined, otherwise ok.
    pub fn status(&self) -> Status {
        let Ok(value) = self.value.parse::<f64>() else {
            return Status::Unknown;
        };
        if range_alerts(&self.crit, value) {
            Status::Critical
        } else if range_alerts(&self.warn, value) {
            Status::Warning
        } else {
            Status::Ok
        }
    }
}

/// Whether `value` raises an alert against a Monitoring Plugins range (`10`, `10:`, `~:10`,
/// `10:20`, `@10:20`); an empty or malformed range never alerts.
fn range_alerts(range: &str, value: f64) -> bool {
    let range = range.trim();
    if range.is_empty() {
        return false;
    }
    let (inside, range) = match range.strip_prefix('@') {
        Some(r) => (true, r),
        None => (false, range),
    };
    let (start, end) = match range.split_once(':') {
        Some((s, e)) => (s, e),
        None => ("0", range),
    };
    let start = match start {
        "~" => f64::NEG_INFINITY,
        "" => 0.0,
        s => match s.parse::<f64>() {
            Ok(v) => v,
            Err(_) => return false,
        },
    };
    let end = match end {
        "" => f64::INFINITY,
        e => match e.parse::<f64>() {
            Ok(v) => v,
            Err(_) => return false,
        },
    };
    let within = value >= start && value <= end;
    if inside { within } else { !within }
}

/// Splits performance data into data; malformed items are skipped.
pub fn parse_perfdata(perf: &str) -> Vec<PerfDatum> {
    let mut out = Vec::new();
    let mut rest = perf.trim_start();
    while !rest.is_empty() && out.len() < MAX_CHECKS {
        // The label: quoted ('' is a quote inside) or up to '='.
        let (label, after) = if let Some(quoted) = rest.strip_prefix('\'') {
            let mut label = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if quoted.get(i + 1..).is_some_and(|r| r.starts_with('\'')) {
                        label.push('\'');
                        chars.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    label.push(c);
                }
            }
            match end {
                Some(e) => (label, quoted.get(e..).unwrap_or("")),
                None => break,
            }
        } else {
            match rest.find(['=', ' ']) {
                Some(i) => (
                    rest.get(..i).unwrap_or("").to_owned(),
                    rest.get(i..).unwrap_or(""),
                ),
                None => break,
            }
        };
        let item_end = after.find(char::is_whitespace).unwrap_or(after.len());
        let item = after.get(..item_end).unwrap_or("");
        rest = after.get(item_end..).unwrap_or("").trim_start();
        let Some(fields) = item.strip_prefix('=') else {
            continue;
        };
        if label.is_empty() {
            continue;
        }
        let mut parts = fields.split(';');
        let first = parts.next().unwrap_or("");
        let number_end = first
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
            .unwrap_or(first.len());
        let (value, uom) = if first.starts_with('U') {
            ("U", "")
        } else {
            (
                first.get(..number_end).unwrap_or(""),
                first.get(number_end..).unwrap_or(""),
            )
        };
        if value.is_empty() {
            continue;
        }
        let mut next = || parts.next().unwrap_or("").to_owned();
        out.push(PerfDatum {
            label,
            value: value.to_owned(),
            uom: uom.to_owned(),
            warn: next(),
            crit: next(),
            min: next(),
            max: next(),
        });
    }
    out
}

/// Performance data as checks.
fn perfdata(perf: &str) -> Vec<Check> {
    parse_perfdata(perf)
        .into_iter()
        .map(|d| {
            let mut details = serde_json::Map::new();
            if let Ok(v) = d.value.parse::<f64>()
                && let Some(n) = serde_json::Number::from_f64(v)
            {
                details.insert("value".into(), serde_json::Value::Number(n));
            }
            for (key, text) in [
                ("uom", &d.uom),
                ("warn", &d.warn),
                ("crit", &d.crit),
                ("min", &d.min),
                ("max", &d.max),
            ] {
                if !text.is_empty() {
                    details.insert(key.into(), serde_json::Value::String(text.clone()));
                }
            }
            Check {
                status: d.status(),
                value: Some(format!("{}{}", d.value, d.uom)),
                details: Some(Details(serde_json::Value::Object(details))),
                name: d.label,
            }
        })
        .collect()
}

/// What a vendor should fix in a plugin's output or exit code (`tether-agent plugin check`);
/// empty when the plugin is well-formed.
pub fn problems(stdout: &[u8], exit_code: Option<i32>) -> Vec<String> {
    let mut out = Vec::new();
    match exit_code {
        Some(0..=3) => {}
        Some(code) => out.push(format!(
            "exit code {code}: use 0 (ok), 1 (warning), 2 (critical) or 3 (unknown)"
        )),
        None => out.push("killed by a signal instead of exiting".to_owned()),
    }
    let Ok(text) = core::str::from_utf8(stdout) else {
        out.push("stdout is not UTF-8".to_owned());
        return out;
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        out.push("prints nothing: the operator sees no summary".to_owned());
    } else if trimmed.starts_with('{') {
        match serde_json::from_str::<serde_json::Value>(trimmed) {
            Err(e) => out.push(format!(
                "stdout starts like JSON but is not valid JSON: {e}"
            )),
            Ok(value) => {
                let statuses = ["ok", "warning", "critical", "unknown", "error", "timeout"];
                let mut check_status = |what: String, v: Option<&serde_json::Value>| {
                    if let Some(v) = v
                        && !v.as_str().is_some_and(|s| statuses.contains(&s))
                    {
                        out.push(format!("{what} {v} is not one of {}", statuses.join(", ")));
                    }
                };
                check_status("status".to_owned(), value.get("status"));
                if let Some(checks) = value.get("checks").and_then(|c| c.as_array()) {
                    for (i, c) in checks.iter().enumerate() {
                        check_status(format!("checks[{i}].status"), c.get("status"));
                    }
                }
                if value.get("checks").is_some_and(|c| !c.is_array()) {
                    out.push("checks is not an array".to_owned());
                }
            }
        }
    } else if trimmed
        .lines()
        .next()
        .is_some_and(|l| l.len() > MAX_TEXT_LEN)
    {
        out.push(format!(
            "the first line is longer than {MAX_TEXT_LEN} bytes"
        ));
    }
    out
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    String::from(s.get(..end).unwrap_or(""))
}

/// Cuts `s` to `max` bytes; records what was cut in `notes`.
fn clip_field(s: &mut String, max: usize, what: &str, notes: &mut Vec<String>) {
    if s.len() > max {
        notes.push(format!("{what} of {} bytes cut to {max}", s.len()));
        *s = clip(s, max);
    }
}

/// Holds a plugin result to the limits of this module; returns what had to change.
pub fn clamp_plugin(plugin: &mut PluginReport) -> Vec<String> {
    let mut notes = Vec::new();
    clip_field(&mut plugin.id, MAX_ID_LEN, "plugin id", &mut notes);
    clip_field(&mut plugin.name, MAX_NAME_LEN, "plugin name", &mut notes);
    if let Some(summary) = &mut plugin.summary {
        clip_field(summary, MAX_TEXT_LEN, "summary", &mut notes);
    }
    if plugin.checks.len() > MAX_CHECKS {
        notes.push(format!(
            "{} checks cut to {MAX_CHECKS}",
            plugin.checks.len()
        ));
        plugin.checks.truncate(MAX_CHECKS);
    }
    for check in &mut plugin.checks {
        clip_field(&mut check.name, MAX_NAME_LEN, "check name", &mut notes);
        if let Some(value) = &mut check.value {
            clip_field(value, MAX_TEXT_LEN, "check value", &mut notes);
        }
        let oversized = check
            .details
            .as_ref()
            .and_then(|d| serde_json::to_vec(&d.0).ok())
            .is_some_and(|json| json.len() > MAX_DETAILS_BYTES);
        if oversized {
            notes.push(format!(
                "details of check {:?} over {MAX_DETAILS_BYTES} bytes dropped",
                check.name
            ));
            check.details = None;
        }
    }
    notes
}

/// Holds a report to the limits of this module and makes `overall_status` the most severe
/// plugin status; returns what had to change.
pub fn clamp_report(report: &mut DiagnosticsReport) -> Vec<String> {
    let mut notes = Vec::new();
    if report.plugins.len() > MAX_PLUGINS {
        notes.push(format!(
            "{} plugins cut to {MAX_PLUGINS}",
            report.plugins.len()
        ));
        report.plugins.truncate(MAX_PLUGINS);
    }
    for plugin in &mut report.plugins {
        for note in clamp_plugin(plugin) {
            notes.push(format!("plugin {:?}: {note}", plugin.id));
        }
    }
    let overall = Status::worst(report.plugins.iter().map(|p| p.status));
    if report.overall_status != overall {
        notes.push(format!(
            "overall_status {} corrected to {overall}",
            report.overall_status
        ));
        report.overall_status = overall;
    }
    notes
}

/// Whether an operator would see a difference: the overall status, or any plugin's or check's
/// status or summary (values such as load averages change all the time and do not count).
pub fn differs(a: &DiagnosticsReport, b: &DiagnosticsReport) -> bool {
    /// What of a plugin an operator compares: id, status, summary, each check's name and status.
    type Seen<'a> = (&'a str, Status, Option<&'a str>, Vec<(&'a str, Status)>);
    fn key(r: &DiagnosticsReport) -> Vec<Seen<'_>> {
        r.plugins
            .iter()
            .map(|p| {
                (
                    p.id.as_str(),
                    p.status,
                    p.summary.as_deref(),
                    p.checks
                        .iter()
                        .map(|c| (c.name.as_str(), c.status))
                        .collect(),
                )
            })
            .collect()
    }
    a.overall_status != b.overall_status || key(a) != key(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn exit_codes_map_to_nagios_statuses() {
        assert_eq!(exit_status(Some(0)), Status::Ok);
        assert_eq!(exit_status(Some(1)), Status::Warning);
        assert_eq!(exit_status(Some(2)), Status::Critical);
        assert_eq!(exit_status(Some(3)), Status::Unknown);
        assert_eq!(exit_status(Some(4)), Status::Error);
        assert_eq!(exit_status(None), Status::Error);
    }

    #[test]
    fn plugin_id_drops_the_last_extension_only() {
        assert_eq!(plugin_id("check-disk.sh"), "check-disk");
        assert_eq!(plugin_id("a.b.py"), "a.b");
        assert_eq!(plugin_id("noext"), "noext");
        assert_eq!(plugin_id(".hidden"), ".hidden");
    }

    #[test]
    fn json_output_fills_missing_fields_and_takes_the_worse_status() {
        let r = parse("disk", br#"{"status":"ok","summary":"fine"}"#, Some(2));
        assert_eq!((r.id.as_str(), r.name.as_str()), ("disk", "disk"));
        assert_eq!(r.status, Status::Critical);
        let r = parse(
            "x",
            br#"{"id":"mine","name":"Mine","status":"warning","checks":[{"name":"a","status":"critical"}]}"#,
            Some(0),
        );
        assert_eq!((r.id.as_str(), r.status), ("mine", Status::Warning));
        assert_eq!(r.checks[0].status, Status::Critical);
        // no status reported: the exit code decides
        assert_eq!(parse("x", b"{}", Some(1)).status, Status::Warning);
    }

    #[test]
    fn broken_json_is_unknown_with_the_reason() {
        let r = parse("x", b"{\"status\":", Some(0));
        assert_eq!(r.status, Status::Unknown);
        assert!(r.summary.unwrap().contains("not valid"));
    }

    #[test]
    fn nagios_first_line_is_summary_and_perfdata_become_checks() {
        let out = b"DISK WARNING - free space: / 3326 MB (6%) | /=2643MB;5948;5958;0;5968 'my tmp'=90%;80;95\nlong text\n| inodes=5%;90;95\n";
        let r = parse("disk", out, Some(1));
        assert_eq!(r.status, Status::Warning);
        assert_eq!(
            r.summary.as_deref(),
            Some("DISK WARNING - free space: / 3326 MB (6%)")
        );
        let names: Vec<_> = r.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["/", "my tmp", "inodes"]);
        assert_eq!(r.checks[0].value.as_deref(), Some("2643MB"));
        assert_eq!(r.checks[0].status, Status::Ok);
        assert_eq!(r.checks[1].status, Status::Warning);
        assert_eq!(r.checks[2].status, Status::Ok);
    }

    #[test]
    fn nagios_ranges_follow_the_guidelines() {
        let d = |value: &str, warn: &str, crit: &str| PerfDatum {
            label: "x".into(),
            value: value.into(),
            uom: String::new(),
            warn: warn.into(),
            crit: crit.into(),
            min: String::new(),
            max: String::new(),
        };
        assert_eq!(d("11", "10", "20").status(), Status::Warning);
        assert_eq!(d("-1", "10", "20").status(), Status::Critical);
        assert_eq!(d("25", "10", "20").status(), Status::Critical);
        assert_eq!(d("5", "10:", "").status(), Status::Warning);
        assert_eq!(d("5", "", "~:0").status(), Status::Critical);
        assert_eq!(d("15", "@10:20", "").status(), Status::Warning);
        assert_eq!(d("U", "10", "20").status(), Status::Unknown);
        assert_eq!(d("5", "", "").status(), Status::Ok);
    }

    #[test]
    fn plain_text_and_odd_exits() {
        let r = parse("x", b"", Some(3));
        assert_eq!((r.status, r.summary), (Status::Unknown, None));
        let r = parse("x", b"", Some(7));
        assert_eq!(r.status, Status::Error);
        assert_eq!(r.summary.as_deref(), Some("exited with code 7"));
    }

    #[test]
    fn problems_name_what_a_vendor_must_fix() {
        assert!(problems(b"OK - fine | x=1", Some(0)).is_empty());
        assert!(problems(br#"{"status":"ok"}"#, Some(0)).is_empty());
        let p = problems(br#"{"status":"green","checks":[{"status":1}]}"#, Some(5));
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(problems(b"{oops", Some(0))[0].contains("not valid JSON"));
        assert!(problems(b"", Some(0))[0].contains("prints nothing"));
    }

    #[test]
    fn clamps_long_text_on_char_boundaries() {
        let long = "é".repeat(MAX_TEXT_LEN);
        let r = parse("x", long.as_bytes(), Some(0));
        let summary = r.summary.unwrap();
        assert!(summary.len() <= MAX_TEXT_LEN && summary.chars().all(|c| c == 'é'));
    }

    #[test]
    fn clamp_report_recomputes_the_overall_status() {
        let mut report = DiagnosticsReport {
            overall_status: Status::Ok,
            plugins: vec![PluginReport {
                id: "a".repeat(100),
                status: Status::Timeout,
                ..Default::default()
            }],
            ..Default::default()
        };
        let notes = clamp_report(&mut report);
        assert_eq!(report.overall_status, Status::Timeout);
        assert_eq!(report.plugins[0].id.len(), MAX_ID_LEN);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    #[test]
    fn differs_ignores_values_but_not_statuses_or_summaries() {
        let check = |status, value: &str| Check {
            name: "load".into(),
            status,
            value: Some(value.into()),
            details: None,
        };
        let report = |summary: &str, c: Check| DiagnosticsReport {
            plugins: vec![PluginReport {
                id: "system".into(),
                summary: Some(summary.into()),
                checks: vec![c],
                ..Default::default()
            }],
            ..Default::default()
        };
        let a = report("s", check(Status::Ok, "0.1"));
        assert!(!differs(&a, &report("s", check(Status::Ok, "0.9"))));
        assert!(differs(&a, &report("s", check(Status::Warning, "0.1"))));
        assert!(differs(&a, &report("t", check(Status::Ok, "0.1"))));
    }
}
