//! Finding and running external plugins: discovery rules, one process group per plugin,
//! clean environment, capped and drained output, and kills on every way out.

use std::format;
use std::prelude::rust_2024::*;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::document::{PluginReport, Status};
use crate::plugin_output;

use super::super::lock;
use super::{DiagnosticsConfig, MAX_STDERR, MAX_STDOUT, id_of, placeholder};

/// After a plugin exits or is killed, how long its output pipes may take to reach end of file
/// (a grandchild outside its process group may hold them open forever).
pub(super) const KILL_GRACE: Duration = Duration::from_millis(500);

/// A directory entry that is not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry.
    pub path: PathBuf,
    /// Why it is not run.
    pub reason: String,
}

/// One external plugin's run.
#[derive(Debug, Clone)]
pub struct PluginRun {
    /// The executable.
    pub path: PathBuf,
    /// What the operator sees.
    pub report: PluginReport,
    /// When it started.
    pub started_at: SystemTime,
    /// When it exited, was killed, or was given up on.
    pub finished_at: SystemTime,
    /// Its exit code (`None`: killed by a signal, timed out, or never started).
    pub exit_code: Option<i32>,
    /// Whether it was killed for running too long.
    pub timed_out: bool,
    /// Bytes it wrote to stdout (more than were kept when over [`MAX_STDOUT`]).
    pub stdout_bytes: u64,
    /// Its stderr (at most [`MAX_STDERR`] bytes, lossy UTF-8).
    pub stderr: String,
}

/// Whether `path` may be run as a plugin: a regular file (not a symlink), executable, owned
/// by root or by the agent's user, not writable by group or others.
pub fn vet(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err("a symbolic link, not a regular file".into());
    }
    if !kind.is_file() {
        return Err("not a regular file".into());
    }
    let mode = meta.mode();
    if mode & 0o111 == 0 {
        return Err(format!("not executable (mode {:04o})", mode & 0o7777));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "owned by uid {}, neither root nor the agent's user (uid {me})",
            meta.uid()
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "writable by group or others (mode {:04o})",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// The plugins of `dir` in path order, and the entries that are skipped with the reason.
/// Hidden files and editor backups (`.x`, `x~`) are left out silently.
pub fn discover(dir: &Path) -> (Vec<PathBuf>, Vec<Skipped>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(dir = %dir.display(), "no diagnostics plugin directory");
            return (Vec::new(), Vec::new());
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot read the diagnostics plugin directory: {e}");
            return (Vec::new(), Vec::new());
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            !name.starts_with('.') && !name.ends_with('~')
        })
        .collect();
    paths.sort();
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for path in paths {
        match vet(&path) {
            Ok(()) => run.push(path),
            Err(reason) => skipped.push(Skipped { path, reason }),
        }
    }
    (run, skipped)
}

/// What a pipe delivered: the kept bytes and how many there were in all.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    total: u64,
}

/// Reads `pipe` to its end, keeping the first `cap` bytes and discarding the rest.
async fn drain(mut pipe: impl AsyncRead + Unpin, cap: usize, into: Arc<Mutex<Captured>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut c = lock(&into);
                c.total += n as u64;
                let room = cap.saturating_sub(c.kept.len());
                let chunk = buf.get(..n.min(room)).unwrap_or(&[]);
                c.kept.extend_from_slice(chunk);
            }
        }
    }
}

/// Kills everything left in process group `pgid`.
fn kill_group(pgid: Option<u32>) {
    if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // ESRCH (nothing left) is the usual outcome after a clean exit.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Runs one plugin until it exits, its own timeout passes or `deadline` (the total one).
pub(super) async fn run(path: &Path, config: &DiagnosticsConfig, deadline: Instant) -> PluginRun {
    run_captured(path, config, deadline).await.0
}

/// [`run`], also returning the stdout that was kept.
pub(super) async fn run_captured(
    path: &Path,
    config: &DiagnosticsConfig,
    deadline: Instant,
) -> (PluginRun, Vec<u8>) {
    let id = id_of(path);
    let started_at = SystemTime::now();
    let started = Instant::now();
    let own_deadline = started + config.plugin_timeout;
    let plugin_deadline = own_deadline.min(deadline);
    // The working directory changes to the plugin's: a relative path would not resolve.
    let program = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut command = tokio::process::Command::new(&program);
    command
        .env_clear()
        .env("PATH", &config.path)
        .envs(config.context.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("TETHER_PLUGIN_ID", &id)
        .env(
            "TETHER_PLUGIN_TIMEOUT",
            config.plugin_timeout.as_secs().max(1).to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = program.parent() {
        command.current_dir(dir);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let run = PluginRun {
                path: path.to_owned(),
                report: placeholder(&id, Status::Error, format!("cannot start: {e}")),
                started_at,
                finished_at: SystemTime::now(),
                exit_code: None,
                timed_out: false,
                stdout_bytes: 0,
                stderr: String::new(),
            };
            return (run, Vec::new());
        }
    };
    let pgid = child.id();
    let out = Arc::new(Mutex::new(Captured::default()));
    let err = Arc::new(Mutex::new(Captured::default()));
    let mut readers = tokio::task::JoinSet::new();
    if let Some(stdout) = child.stdout.take() {
        readers.spawn(drain(stdout, MAX_STDOUT, out.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.spawn(drain(stderr, MAX_STDERR, err.clone()));
    }
    let waited = tokio::time::timeout_at(plugin_deadline, child.wait()).await;
    // Whatever the plugin left behind in its group goes with it.
    kill_group(pgid);
    let (exit_code, timed_out) = match waited {
        Ok(Ok(status)) => (status.code(), false),
        Ok(Err(e)) => {
            tracing::warn!(plugin = %id, "cannot wait for the plugin: {e}");
            (None, false)
        }
        Err(_) => {
            let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
            (None, true)
        }
    };
    let finished_at = SystemTime::now();
    // The pipes end once the group is gone; a process that left the group is not waited for.
    let _ = tokio::time::timeout(KILL_GRACE, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    readers.abort_all();
    let (stdout, stdout_bytes) = {
        let c = lock(&out);
        (c.kept.clone(), c.total)
    };
    let stderr = String::from_utf8_lossy(&lock(&err).kept).into_owned();
    let report = if timed_out {
        let limit = if own_deadline <= deadline {
            format!(
                "the plugin timeout of {}s",
                config.plugin_timeout.as_secs_f32()
            )
        } else {
            format!(
                "the total timeout of {}s",
                config.total_timeout.as_secs_f32()
            )
        };
        let mut report = placeholder(
            &id,
            Status::Timeout,
            format!("did not finish within {limit}"),
        );
        // Whatever it printed before it was killed may still say something.
        let partial = plugin_output::parse(&id, &stdout, Some(3));
        report.checks = partial.checks;
        report
    } else {
        let mut report = plugin_output::parse(&id, &stdout, exit_code);
        if report.summary.is_none() && !stderr.trim().is_empty() {
            report.summary = Some(plugin_output::clip(
                stderr.trim(),
                plugin_output::MAX_TEXT_LEN,
            ));
        }
        report
    };
    if stdout_bytes > MAX_STDOUT as u64 {
        tracing::warn!(plugin = %id, bytes = stdout_bytes, "plugin output over {MAX_STDOUT} bytes discarded");
    }
    let run = PluginRun {
        path: path.to_owned(),
        report,
        started_at,
        finished_at,
        exit_code,
        timed_out,
        stdout_bytes,
        stderr,
    };
    (run, stdout)
}

/// The run of a plugin whose task never reported back (it is marked `timeout`).
pub(super) fn lost(path: &Path, started_at: SystemTime, config: &DiagnosticsConfig) -> PluginRun {
    let id = id_of(path);
    PluginRun {
        path: path.to_owned(),
        report: placeholder(
            &id,
            Status::Timeout,
            format!(
                "did not finish within the total timeout of {}s",
                config.total_timeout.as_secs_f32()
            ),
        ),
        started_at,
        finished_at: SystemTime::now(),
        exit_code: None,
        timed_out: true,
        stdout_bytes: 0,
        stderr: String::new(),
    }
}
