//! Running one helper command (`runagent`, `python3`): secrets on stdin, never on the command
//! line; its own process group, killed on timeout and on every way out; output capped.

use std::format;
use std::prelude::rust_2024::*;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::plugin_output::clip;

/// Most stdout kept per command; the rest is read and discarded.
pub const MAX_STDOUT: usize = 256 * 1024;
/// Most stderr kept per command.
pub const MAX_STDERR: usize = 16 * 1024;
/// Longest command output quoted in an error (the reference's 200 characters).
pub const MAX_ERROR_TEXT: usize = 200;
/// After a command exits or is killed, how long its pipes may take to reach end of file.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Why a helper command did not succeed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The program could not be started (missing, not executable).
    #[error("{step}: cannot start {program}")]
    Spawn {
        step: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The command ran longer than its timeout and was killed.
    #[error("{step}: no answer within {}s, killed", timeout.as_secs_f32())]
    Timeout { step: String, timeout: Duration },
    /// The command ran and reported a failure.
    #[error("{step}: {status}: {output}")]
    Failed {
        step: String,
        status: String,
        /// Its output, secrets masked, at most [`MAX_ERROR_TEXT`] bytes.
        output: String,
    },
    /// The command succeeded but printed something else than the expected JSON.
    #[error("{step}: unexpected output")]
    BadOutput {
        step: String,
        #[source]
        source: serde_json::Error,
    },
    /// Waiting for the command failed.
    #[error("{step}: lost the process")]
    Wait {
        step: String,
        #[source]
        source: std::io::Error,
    },
}

impl StepError {
    /// True when the command ran to its end and said no: the object it was about is taken as
    /// absent (deleting what does not exist fails that way). False when the command could not
    /// be run or did not finish, so nothing is known.
    pub fn ran(&self) -> bool {
        matches!(self, StepError::Failed { .. } | StepError::BadOutput { .. })
    }
}

/// Runs helper commands with one timeout.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub timeout: Duration,
}

impl Runner {
    /// Runs `program args...` with `stdin` written to it; its stdout on exit status 0.
    /// `secrets` are masked in any error text.
    pub async fn run(
        &self,
        step: &str,
        program: &Path,
        args: &[&str],
        stdin: &[u8],
        secrets: &[&str],
    ) -> Result<Vec<u8>, StepError> {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| StepError::Spawn {
            step: step.to_owned(),
            program: program.display().to_string(),
            source,
        })?;
        let group = Group(child.id());
        let mut input = child.stdin.take();
        let stdin = stdin.to_vec();
        let writer = tokio::spawn(async move {
            if let Some(pipe) = &mut input {
                // A helper that does not read its input fails on its own; nothing to add.
                let _ = pipe.write_all(&stdin).await;
                let _ = pipe.shutdown().await;
            }
        });
        let stdout = child
            .stdout
            .take()
            .map(|p| tokio::spawn(drain(p, MAX_STDOUT)));
        let stderr = child
            .stderr
            .take()
            .map(|p| tokio::spawn(drain(p, MAX_STDERR)));
        let waited = tokio::time::timeout(self.timeout, child.wait()).await;
        drop(group);
        writer.abort();
        let status = match waited {
            Ok(Ok(status)) => status,
            Ok(Err(source)) => {
                return Err(StepError::Wait {
                    step: step.to_owned(),
                    source,
                });
            }
            Err(_) => {
                let _ = tokio::time::timeout(DRAIN_GRACE, child.wait()).await;
                return Err(StepError::Timeout {
                    step: step.to_owned(),
                    timeout: self.timeout,
                });
            }
        };
        let out = collect(stdout).await;
        let err = collect(stderr).await;
        if status.success() {
            return Ok(out);
        }
        let status = match status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_owned(),
        };
        // The reference reports combined output; stderr carries the task error.
        let mut text = String::from_utf8_lossy(&err).trim().to_owned();
        if text.is_empty() {
            text = String::from_utf8_lossy(&out).trim().to_owned();
        }
        Err(StepError::Failed {
            step: step.to_owned(),
            status,
            output: error_text(&text, secrets),
        })
    }
}

/// `text` with every secret replaced by `***`, cut to [`MAX_ERROR_TEXT`] bytes.
pub(crate) fn error_text(text: &str, secrets: &[&str]) -> String {
    let mut masked = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        masked = masked.replace(secret, "***");
    }
    let clipped = clip(&masked, MAX_ERROR_TEXT);
    if clipped.len() < masked.len() {
        format!("{clipped}...")
    } else {
        clipped
    }
}

/// Kills the command's process group when dropped (ESRCH after a clean exit is expected).
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Reads `pipe` to its end, keeping the first `cap` bytes.
async fn drain(mut pipe: impl AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(buf.get(..n.min(room)).unwrap_or(&[]));
            }
        }
    }
}

/// What a drained pipe kept; a grandchild holding the pipe open is not waited for.
async fn collect(task: Option<tokio::task::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    let Some(mut task) = task else {
        return Vec::new();
    };
    match tokio::time::timeout(DRAIN_GRACE, &mut task).await {
        Ok(Ok(kept)) => kept,
        _ => {
            task.abort();
            Vec::new()
        }
    }
}

/// The programs the helpers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programs {
    /// NS8 `runagent` (runs a command in the cluster agent's environment).
    pub runagent: PathBuf,
    /// `python3` (NethSecurity's `nethsec` helpers).
    pub python3: PathBuf,
}

impl Default for Programs {
    fn default() -> Self {
        Programs {
            runagent: PathBuf::from("runagent"),
            python3: PathBuf::from("python3"),
        }
    }
}
