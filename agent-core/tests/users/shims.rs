//! Shims of `runagent` and `python3` in a temporary directory: each call is appended to
//! `calls.log` (`<program> <step> <stdin JSON>`), the whole argv to `argv.log`; a file
//! `fail.<step>` makes a step fail, `hang.<step>` makes it hang (its pid in `hung.pid`).
//! `cluster/list-user-domains` answers with `domains.json`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_core::agent::users::{Platform, Programs, UsersConfig};
use serde_json::Value;

/// Two internal domains with providers (the first one's first provider is used), an external
/// one and one without providers (both skipped).
pub const DOMAINS: &str = r#"{"domains":[
 {"name":"ad.example.org","location":"internal","schema":"ad","providers":[{"id":"samba1"},{"id":"samba2"}]},
 {"name":"corp.example.com","location":"external","schema":"ad","providers":[{"id":"ldapproxy1"}]},
 {"name":"empty.example.org","location":"internal","schema":"rfc2307","providers":[]},
 {"name":"dir.example.org","location":"internal","schema":"rfc2307","providers":[{"id":"openldap1"}]}
]}"#;

const RUNAGENT: &str = r#"#!/bin/sh
D='@DIR@'
if [ "$1" != python3 ] || [ "$2" != -c ] || [ $# -ne 5 ]; then
    echo "unexpected argv: $*" >&2
    exit 2
fi
printf '%s\n' "$*" >> "$D/argv.log"
data=$(cat)
printf 'runagent %s/%s %s\n' "$4" "$5" "$data" >> "$D/calls.log"
key=$(printf '%s/%s' "$4" "$5" | tr / _)
if [ -e "$D/hang.$key" ]; then
    echo $$ > "$D/hung.pid"
    exec sleep 60
fi
if [ -e "$D/fail.$key" ]; then
    echo "\"task $4/$5 failed\"" >&2
    exit 1
fi
case "$4/$5" in
    cluster/list-user-domains) cat "$D/domains.json" ;;
    *) echo null ;;
esac
"#;

const PYTHON3: &str = r#"#!/bin/sh
D='@DIR@'
if [ "$1" != -c ] || [ $# -ne 3 ]; then
    echo "unexpected argv: $*" >&2
    exit 2
fi
printf '%s\n' "$*" >> "$D/argv.log"
data=$(cat)
printf 'python3 %s %s\n' "$3" "$data" >> "$D/calls.log"
if [ -e "$D/hang.$3" ]; then
    echo $$ > "$D/hung.pid"
    exec sleep 60
fi
if [ -e "$D/fail.$3" ]; then
    echo "Traceback: ValidationError $3" >&2
    exit 1
fi
"#;

/// One recorded call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `runagent` or `python3`.
    pub program: String,
    /// `cluster/add-user`, `module/samba1/remove-user`, `set_admin` ...
    pub step: String,
    /// What the helper got on stdin.
    pub data: Value,
}

pub struct Shims {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Shims {
    /// Shims in a fresh temporary directory.
    pub fn new() -> Shims {
        let tmp = tempfile::tempdir().unwrap();
        let mut shims = Shims::write(tmp.path());
        shims._tmp = Some(tmp);
        shims
    }

    /// Writes the shims into `dir`.
    pub fn write(dir: &Path) -> Shims {
        let dir = dir.canonicalize().unwrap();
        for (name, body) in [("runagent", RUNAGENT), ("python3", PYTHON3)] {
            let path = dir.join(name);
            std::fs::write(&path, body.replace("@DIR@", &dir.display().to_string())).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.join("domains.json"), DOMAINS).unwrap();
        Shims { dir, _tmp: None }
    }

    /// Shims written earlier into `dir` (by another process).
    pub fn at(dir: &Path) -> Shims {
        Shims {
            dir: dir.to_owned(),
            _tmp: None,
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("run/tether-users.json")
    }

    /// A users config running these shims, with short timeouts and fetch delays.
    pub fn config(&self, platform: Platform) -> UsersConfig {
        let mut config = UsersConfig::new(platform);
        config.state_file = self.state_file();
        config.programs = Programs {
            runagent: self.dir.join("runagent"),
            python3: self.dir.join("python3"),
        };
        config.command_timeout = Duration::from_secs(10);
        config.cleanup_timeout = Duration::from_secs(15);
        config.fetch_delay = Duration::from_millis(10);
        config
    }

    fn marker(&self, kind: &str, step: &str) -> PathBuf {
        self.dir.join(format!("{kind}.{}", step.replace('/', "_")))
    }

    /// Makes `step` fail from now on.
    pub fn fail(&self, step: &str) {
        std::fs::write(self.marker("fail", step), "").unwrap();
    }

    /// Makes `step` hang from now on.
    pub fn hang(&self, step: &str) {
        std::fs::write(self.marker("hang", step), "").unwrap();
    }

    /// Lets `step` answer again.
    pub fn heal(&self, step: &str) {
        for kind in ["fail", "hang"] {
            let _ = std::fs::remove_file(self.marker(kind, step));
        }
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        let log = std::fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default();
        log.lines()
            .map(|line| {
                let mut parts = line.splitn(3, ' ');
                let program = parts.next().unwrap().to_owned();
                let step = parts.next().unwrap().to_owned();
                let data = serde_json::from_str(parts.next().unwrap_or("null")).unwrap();
                Call {
                    program,
                    step,
                    data,
                }
            })
            .collect()
    }

    /// `program step` of every call so far.
    pub fn steps(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {}", c.program, c.step))
            .collect()
    }

    /// Forgets the calls so far.
    pub fn clear(&self) {
        let _ = std::fs::remove_file(self.dir.join("calls.log"));
    }

    /// Every argv the helpers got, scripts included.
    pub fn argv_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("argv.log")).unwrap_or_default()
    }
}

/// Polls `cond` every 10 ms until it holds, or panics after the test deadline naming `what`.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
