//! The shell behind `CONNECT terminal`: the target user (passwd), a scrubbed environment, a
//! login shell on a fresh PTY as the leader of its own session, and the kill of that whole
//! session when the terminal ends (REFERENCE 3.6, S-1).
//!
//! `pty-process` allocates the PTY and makes the child a session leader with the PTY as its
//! controlling terminal (the only `unsafe` it needs lives in that crate); `nix` looks users up
//! with `getpwuid_r`/`getpwnam_r` and sends the signals.

use std::prelude::rust_2024::*;
use std::{format, vec};

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, Uid, User};
use pty_process::{OwnedReadPty, OwnedWritePty, Size};
use tokio::process::Child;

/// Environment variables passed through from the agent to the shell; everything else (the
/// system secret, the relay URL, proxy credentials, whatever a unit file adds) stays behind.
const PASSED_THROUGH: &[&str] = &["PATH", "LANG", "LANGUAGE", "TZ"];
/// `PATH` when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Shells tried when the user's own shell is missing or refuses logins.
const FALLBACK_SHELLS: &[&str] = &["/bin/bash", "/bin/ash", "/bin/sh"];
/// The terminal type xterm.js emulates.
pub(crate) const TERM: &str = "xterm-256color";
/// Size until the operator's first resize frame.
pub(crate) const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// Why a shell cannot be started.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub(crate) enum PtyError {
    /// `--terminal-user` names no user.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// Another user than the agent's own needs root.
    #[error("cannot open a shell as {0:?}: the agent does not run as root")]
    NeedsRoot(String),
    /// The passwd lookup failed.
    #[error("user lookup failed: {0}")]
    Lookup(#[source] nix::Error),
    /// No usable shell on the device.
    #[error("no shell found (tried the user's shell and {})", FALLBACK_SHELLS.join(", "))]
    NoShell,
    /// Allocating the PTY or starting the shell failed.
    #[error("{0}")]
    Spawn(String),
}

/// Who the shell runs as, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
    /// Whether the shell runs as another user than the agent (uid and gid are set).
    pub switch: bool,
}

impl Target {
    /// `user`, or the agent's own (effective) user. Switching user needs root.
    pub fn resolve(user: Option<&str>) -> Result<Target, PtyError> {
        let me = Uid::effective();
        let found = match user {
            Some(name) => User::from_name(name)
                .map_err(PtyError::Lookup)?
                .ok_or_else(|| PtyError::UnknownUser(name.to_owned()))?,
            None => match User::from_uid(me).map_err(PtyError::Lookup)? {
                Some(u) => u,
                // A uid without a passwd entry (containers): run as it, in `/`.
                None => {
                    let shell = choose_shell(Path::new(""), exists)?;
                    return Ok(Target {
                        name: std::env::var("USER").unwrap_or_else(|_| me.to_string()),
                        uid: me.as_raw(),
                        gid: nix::unistd::Gid::effective().as_raw(),
                        home: PathBuf::from("/"),
                        shell,
                        switch: false,
                    });
                }
            },
        };
        let switch = found.uid != me;
        if switch && !me.is_root() {
            return Err(PtyError::NeedsRoot(found.name));
        }
        Ok(Target {
            shell: choose_shell(&found.shell, exists)?,
            name: found.name,
            uid: found.uid.as_raw(),
            gid: found.gid.as_raw(),
            home: found.dir,
            switch,
        })
    }

    /// The shell's whole environment: `TERM`, the user's `HOME`/`USER`/`LOGNAME`/`SHELL`, and
    /// only the harmless variables of `agent_env` (`PATH`, `LANG`, `LC_*`, `TZ`).
    pub fn environment(
        &self,
        agent_env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = agent_env
            .into_iter()
            .filter(|(k, _)| {
                k.to_str()
                    .is_some_and(|k| PASSED_THROUGH.contains(&k) || k.starts_with("LC_"))
            })
            .collect();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        env.push(("TERM".into(), TERM.into()));
        env.push(("HOME".into(), self.home.clone().into_os_string()));
        env.push(("USER".into(), self.name.clone().into()));
        env.push(("LOGNAME".into(), self.name.clone().into()));
        env.push(("SHELL".into(), self.shell.clone().into_os_string()));
        env
    }

    /// `argv[0]` that makes the shell a login shell (`-bash`), as login(1) does.
    pub fn login_arg0(&self) -> String {
        let base = self
            .shell
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sh".into());
        format!("-{base}")
    }
}

fn exists(p: &Path) -> bool {
    p.is_file()
}

/// The user's shell unless it is missing or a "no login" placeholder, else the first fallback
/// that exists.
fn choose_shell(own: &Path, exists: impl Fn(&Path) -> bool) -> Result<PathBuf, PtyError> {
    let refuses = own
        .file_name()
        .is_some_and(|n| matches!(n.to_str(), Some("nologin" | "false")));
    if !own.as_os_str().is_empty() && !refuses && exists(own) {
        return Ok(own.to_path_buf());
    }
    FALLBACK_SHELLS
        .iter()
        .map(PathBuf::from)
        .find(|p| exists(p))
        .ok_or(PtyError::NoShell)
}

/// A running login shell on a PTY.
pub(crate) struct Shell {
    pub reader: OwnedReadPty,
    pub writer: OwnedWritePty,
    pub child: Child,
    /// The shell's pid: also its process group and session id.
    pub pid: i32,
}

/// Opens a PTY of `size` (cols, rows) and starts `target`'s login shell on it.
pub(crate) fn spawn(target: &Target, size: (u16, u16)) -> Result<Shell, PtyError> {
    let spawn_err = |e: pty_process::Error| PtyError::Spawn(e.to_string());
    let (pty, pts) = pty_process::open().map_err(spawn_err)?;
    pty.resize(Size::new(size.1, size.0)).map_err(spawn_err)?;
    let cwd = if target.home.is_dir() {
        target.home.clone()
    } else {
        PathBuf::from("/")
    };
    let mut cmd = pty_process::Command::new(&target.shell)
        .arg0(target.login_arg0())
        .env_clear()
        .envs(target.environment(std::env::vars_os()))
        .current_dir(cwd)
        .kill_on_drop(true);
    if target.switch {
        // std drops the supplementary groups of root before setuid.
        cmd = cmd.gid(target.gid).uid(target.uid);
    }
    let child = cmd.spawn(pts).map_err(spawn_err)?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| PtyError::Spawn("the shell exited at once".into()))?;
    let (reader, writer) = pty.into_split();
    Ok(Shell {
        reader,
        writer,
        child,
        pid,
    })
}

/// Applies a window size (cols, rows).
pub(crate) fn resize(writer: &OwnedWritePty, cols: u16, rows: u16) -> Result<(), PtyError> {
    writer
        .resize(Size::new(rows, cols))
        .map_err(|e| PtyError::Spawn(e.to_string()))
}

/// SIGKILLs the shell's process group and every process still in its session (background jobs
/// of an interactive shell get process groups of their own; only `setsid` escapes). Repeated
/// because a process may fork while it is being killed.
pub(crate) fn kill_session(leader: i32) {
    let leader_pid = Pid::from_raw(leader);
    for _ in 0..3 {
        let _ = killpg(leader_pid, Signal::SIGKILL);
        let members = session_members(leader);
        if members.is_empty() {
            return;
        }
        for pid in members {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Live (not zombie) processes whose process group or session is `leader`, read from /proc.
pub(crate) fn session_members(leader: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|s| s.state != 'Z' && (s.pgrp == leader || s.session == leader))
        })
        .collect()
}

/// The fields of `/proc/<pid>/stat` that matter here.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub state: char,
    pub pgrp: i32,
    pub session: i32,
}

/// Parses `/proc/<pid>/stat`: the command name may contain spaces and parentheses, so fields
/// are counted after its last `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(Stat {
        state,
        pgrp,
        session,
    })
}

#[cfg(test)]
pub(crate) fn choose_shell_for_test(
    own: &Path,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf, PtyError> {
    choose_shell(own, exists)
}
