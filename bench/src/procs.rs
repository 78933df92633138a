//! The processes a run starts: the relay (with its admin commands), agents, the target, the
//! load-agent fleet and rathole. Each is killed when its handle is dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::load::{self, Endpoint};

/// How long a process may take to print the line the harness waits for.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// A child process, killed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Proc> {
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        status_kib(self.pid(), "VmRSS:")
    }

    /// Anonymous resident memory now (heap, stacks: what the process itself allocated), in KiB.
    pub fn rss_anon_kib(&self) -> anyhow::Result<u64> {
        status_kib(self.pid(), "RssAnon:")
    }

    /// CPU time used so far (user + system), in seconds; assumes 100 clock ticks per second.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name, which may itself hold spaces: state is the first.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("/proc stat")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok((ticks(11) + ticks(12)) as f64 / 100.0)
    }

    /// Wait for a stdout line starting with `prefix` and return the rest; later lines are
    /// drained on a thread (stdout must have been piped).
    pub fn wait_line(&mut self, prefix: &str, deadline: Duration) -> anyhow::Result<String> {
        let out = self.child.stdout.take().context("stdout was not piped")?;
        let (tx, rx) = mpsc::channel();
        let wanted = prefix.to_owned();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.strip_prefix(&wanted) {
                    let _ = tx.send(rest.to_owned());
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(deadline) {
            Ok(rest) => Ok(rest),
            Err(_) => {
                let exited = self.child.try_wait().ok().flatten();
                bail!(
                    "{} did not print {prefix:?} within {deadline:?} (exit status: {exited:?})",
                    self.name
                )
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// A log file in `dir` for a child's stderr (and stdout when not piped).
pub fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?)
}

/// A command with no inherited logging or proxy settings.
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "RUST_LOG",
        "TETHER_LOG",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "https_proxy",
        "http_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A relay on its own SQLite database in `dir`, with an admin token.
pub struct Relay {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub database: String,
    pub token: String,
    bin: PathBuf,
}

/// A system's credentials.
#[derive(Debug, Clone)]
pub struct System {
    pub key: String,
    pub secret: String,
}

impl Relay {
    /// Create the operator and token, start `serve` on 127.0.0.1:0 with `extra` flags.
    pub fn start(bin: &Path, dir: &Path, name: &str, extra: &[&str]) -> anyhow::Result<Relay> {
        let database = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
        admin(
            bin,
            &database,
            &["operator", "create", "bench", "--role", "admin", "--json"],
        )?;
        let tok = admin(bin, &database, &["token", "create", "bench", "--json"])?;
        let token = tok["token"]
            .as_str()
            .context("token create printed no token")?
            .to_owned();
        let mut cmd = clean_command(bin);
        cmd.args(["--database", &database, "serve", "--listen", "127.0.0.1:0"])
            .args(["--rate-limit-per-ip", "0", "--rate-limit-per-key", "0"])
            .args([
                "--recordings-dir",
                &dir.join(format!("{name}-rec")).display().to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log_file(dir, name)?);
        let mut proc = Proc::spawn(name, &mut cmd)?;
        let addr = proc
            .wait_line("tether-relay listening on http://", START_DEADLINE)?
            .trim()
            .parse()
            .context("relay listen address")?;
        Ok(Relay {
            proc,
            addr,
            database,
            token,
            bin: bin.to_owned(),
        })
    }

    pub fn create_system(&self, name: &str) -> anyhow::Result<System> {
        let v = admin(
            &self.bin,
            &self.database,
            &["system", "create", name, "--json"],
        )?;
        Ok(System {
            key: v["key"].as_str().context("system key")?.to_owned(),
            secret: v["secret"].as_str().context("system secret")?.to_owned(),
        })
    }

    /// The operator API, authenticated.
    pub fn api(&self) -> Endpoint {
        Endpoint {
            addr: self.addr,
            prefix: String::new(),
            bearer: Some(self.token.clone()),
        }
    }

    /// The proxy path of `service` in session `id` as an endpoint.
    pub fn proxy(&self, session: &str, service: &str) -> Endpoint {
        Endpoint {
            addr: self.addr,
            prefix: format!("/api/v1/sessions/{session}/proxy/{service}"),
            bearer: Some(self.token.clone()),
        }
    }

    /// The connected sessions (id, node id, connected_at) now.
    pub async fn connected_sessions(
        &self,
    ) -> anyhow::Result<Vec<(String, Option<String>, String)>> {
        let v = load::get_json(&self.api(), "/api/v1/sessions?status=active").await?;
        let mut out = vec![];
        for s in v["sessions"].as_array().into_iter().flatten() {
            if s["connected"] == true {
                out.push((
                    s["id"].as_str().unwrap_or_default().to_owned(),
                    s["node_id"].as_str().map(str::to_owned),
                    s["connected_at"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        Ok(out)
    }

    /// A counter or gauge of `/metrics` (the first sample of that name).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (_, body) = load::get_body(&self.api(), "/metrics").await?;
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == name).then(|| v.parse().ok()).flatten()
            })
            .with_context(|| format!("no metric {name}"))
    }
}

/// Run an admin command on a database and parse its `--json` output.
pub fn admin(bin: &Path, database: &str, args: &[&str]) -> anyhow::Result<Value> {
    let out = clean_command(bin)
        .args(["--database", database])
        .args(args)
        .output()
        .with_context(|| format!("run {} {args:?}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "tether-relay {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

/// Start `tether-agent` for `system`, publishing `services`.
pub fn start_agent(
    bin: &Path,
    dir: &Path,
    name: &str,
    relay: SocketAddr,
    system: &System,
    services: &str,
    node: Option<usize>,
) -> anyhow::Result<Proc> {
    let mut cmd = clean_command(bin);
    cmd.args(["--url", &format!("ws://{relay}/api/tunnel")])
        .args(["--key", &system.key, "--secret", &system.secret])
        .args(["--static-services", services])
        .args([
            "--reconnect-delay",
            "100ms",
            "--max-reconnect-delay",
            "500ms",
        ]);
    if let Some(n) = node {
        cmd.args(["--node-id", &n.to_string()]);
    }
    cmd.stdout(log_file(dir, name)?)
        .stderr(log_file(dir, name)?);
    Proc::spawn(name, &mut cmd)
}

/// Poll `f` until it yields `Some`, or fail naming `what` after `deadline`.
pub async fn eventually<T, F, Fut>(
    what: &str,
    deadline: Duration,
    pause: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let end = Instant::now() + deadline;
    let mut last_error = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > end {
            match last_error {
                Some(e) => bail!("timed out waiting for {what} (last error: {e:#})"),
                None => bail!("timed out waiting for {what}"),
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// A free loopback port (for rathole, which cannot report a port 0 binding).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
