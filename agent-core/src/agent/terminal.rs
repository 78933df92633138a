//! `CONNECT terminal`: a login shell on a PTY for the operator's browser (PROTOCOL section 7,
//! REFERENCE 3.6), fixing S-1: the terminal can be switched off (`--no-terminal`), runs as a
//! chosen user, starts with a scrubbed environment, dies with its whole session when the stream
//! ends, and every terminal session is written to the device's own log (syslog/journal) with
//! the operator's name when the relay speaks protocol v2 (`CONNECT terminal <operator>`).
//!
//! Frames: the relay's frames (`[u32 len][type][payload]`, at most
//! [`MAX_TERMINAL_FRAME_AGENT`]) go to the PTY (data) or resize it; PTY output goes back as
//! data frames of at most [`OUTPUT_CHUNK`] bytes. The shell starts after the operator's first
//! resize frame (or [`FIRST_RESIZE_WAIT`]) so that it starts with the browser's size.

// Without the `pty` feature only the refusals remain.
#![cfg_attr(not(feature = "pty"), allow(unused_imports, dead_code))]

use std::borrow::ToOwned;
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::wire::Reply;

#[cfg(feature = "pty")]
pub(crate) mod pty;

/// Reply when the terminal is switched off; a relay that sees it hides the terminal.
pub const DISABLED_REPLY: &str = "terminal disabled on this agent";
/// Reply of an agent built without PTY support.
pub const UNSUPPORTED_REPLY: &str = "terminal is not available on this agent";
/// Upgrade-request header with which the agent tells a Tether relay, before any terminal is
/// asked for, that its terminal is switched off (a reference relay ignores it).
pub const TERMINAL_HEADER: &str = "x-tether-terminal";
/// Value of [`TERMINAL_HEADER`] for a switched-off terminal.
pub const TERMINAL_HEADER_DISABLED: &str = "disabled";
/// Largest PTY read sent as one data frame (the reference value).
pub const OUTPUT_CHUNK: usize = 4096;
/// How long the shell waits for the operator's first resize frame.
pub const FIRST_RESIZE_WAIT: Duration = Duration::from_secs(1);
/// How long output is still forwarded after the shell itself exited.
#[cfg(feature = "pty")]
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);
/// Where the device's syslog daemon (or journald) listens.
pub(crate) const SYSLOG_SOCKET: &str = "/dev/log";
/// `LOG_AUTHPRIV | LOG_NOTICE`: remote shells are access-control events.
const SYSLOG_PRIORITY: u8 = (10 << 3) | 5;

/// Whether the agent offers a terminal, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalSettings {
    /// `false` with `--no-terminal`: `CONNECT terminal` is refused with [`DISABLED_REPLY`].
    pub enabled: bool,
    /// `--terminal-user`: the shell's user; `None` is the agent's own user. Another user than
    /// the agent's own needs root.
    pub user: Option<String>,
}

// Derivable only in builds without the `pty` feature.
#[allow(clippy::derivable_impls)]
impl Default for TerminalSettings {
    fn default() -> Self {
        TerminalSettings {
            enabled: cfg!(feature = "pty"),
            user: None,
        }
    }
}

impl TerminalSettings {
    /// Checks that the terminal can start as configured (the user exists and may be switched
    /// to); `Ok` when it is switched off. The message names the problem.
    pub fn check(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        #[cfg(feature = "pty")]
        {
            pty::Target::resolve(self.user.as_deref())
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        #[cfg(not(feature = "pty"))]
        {
            Err(UNSUPPORTED_REPLY.into())
        }
    }
}

/// Writes the reply, then FIN.
async fn refuse<S: AsyncWrite + Unpin>(mut stream: S, text: &str) {
    if let Err(e) = stream.write_all(&Reply::Error(text.into()).encode()).await {
        tracing::debug!("terminal refusal not delivered: {e}");
    }
    let _ = stream.shutdown().await;
}

/// Serves one `CONNECT terminal` stream; `early` holds bytes that came after the header line,
/// `operator` the name a v2 relay sent.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    early: Vec<u8>,
    operator: Option<String>,
    settings: &TerminalSettings,
) {
    let who = operator.as_deref().unwrap_or("an unnamed operator");
    #[cfg(not(feature = "pty"))]
    {
        let _ = (early, settings);
        tracing::info!("terminal requested by {who}, but this agent has no terminal support");
        refuse(stream, UNSUPPORTED_REPLY).await;
    }
    #[cfg(feature = "pty")]
    if !settings.enabled {
        journal(&format!(
            "terminal requested by {who} refused: the terminal is disabled on this agent"
        ));
        refuse(stream, DISABLED_REPLY).await;
        return;
    }
    #[cfg(feature = "pty")]
    run(stream, early, who, settings).await;
}

#[cfg(feature = "pty")]
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    early: Vec<u8>,
    who: &str,
    settings: &TerminalSettings,
) {
    use tokio::io::AsyncReadExt;

    let target = match pty::Target::resolve(settings.user.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            journal(&format!("terminal requested by {who} refused: {e}"));
            refuse(stream, &format!("terminal not available: {e}")).await;
            return;
        }
    };
    if let Err(e) = stream.write_all(&Reply::Ok.encode()).await {
        tracing::debug!("relay stream gone before OK: {e}");
        return;
    }
    let (mut from_relay, mut to_relay) = tokio::io::split(stream);
    let mut frames = Frames::new(early);
    // Keystrokes that come before the first resize wait for the shell.
    let mut pending: Vec<Vec<u8>> = vec![];
    let size = first_size(&mut from_relay, &mut frames, &mut pending).await;
    let Some(size) = size else {
        tracing::debug!("terminal stream ended before the shell started");
        return;
    };
    let mut shell = match pty::spawn(&target, size) {
        Ok(s) => s,
        Err(e) => {
            journal(&format!("terminal for {who} failed to start: {e}"));
            let msg = format!("\r\ntether: cannot start the shell: {e}\r\n");
            let _ = to_relay.write_all(&data_frame(msg.as_bytes())).await;
            let _ = to_relay.shutdown().await;
            return;
        }
    };
    let started = Instant::now();
    let pid = shell.pid;
    journal(&format!(
        "terminal session opened by {who}: user {} shell {} pid {pid}",
        target.name,
        target.shell.display()
    ));
    let mut bytes_in: u64 = 0;
    let mut bytes_out: u64 = 0;
    let w = &mut shell.writer;
    let pty_out = &mut shell.reader;
    let inbound = async {
        for data in pending.drain(..) {
            bytes_in += data.len() as u64;
            w.write_all(&data).await?;
        }
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            while let Some(frame) = frames.next()? {
                match frame {
                    crate::wire::TerminalFrame::Data(data) => {
                        bytes_in += data.len() as u64;
                        w.write_all(&data).await?;
                    }
                    crate::wire::TerminalFrame::Resize { cols, rows } => {
                        if let Err(e) = pty::resize(w, cols, rows) {
                            tracing::debug!("terminal resize failed: {e}");
                        }
                    }
                    _ => {}
                }
            }
            let n = from_relay.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<&'static str, std::io::Error>("the relay closed the terminal");
            }
            frames.push(&chunk[..n]);
        }
    };
    let outbound = async {
        let mut buf = vec![0u8; OUTPUT_CHUNK];
        loop {
            // EIO once no process holds the PTY open any more.
            let n = match pty_out.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok::<(), std::io::Error>(()),
                Ok(n) => n,
            };
            bytes_out += n as u64;
            to_relay.write_all(&data_frame(&buf[..n])).await?;
        }
    };
    let ended = {
        tokio::pin!(inbound);
        tokio::pin!(outbound);
        tokio::select! {
            r = &mut inbound => match r {
                Ok(why) => why.to_owned(),
                Err(e) => format!("terminal stream failed: {e}"),
            },
            _ = &mut outbound => "the shell closed the terminal".to_owned(),
            _ = shell.child.wait() => {
                let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut outbound).await;
                "the shell exited".to_owned()
            }
        }
    };
    pty::kill_session(pid);
    let status = shell.child.wait().await;
    let _ = to_relay.shutdown().await;
    drop(shell);
    let status = match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("not known: {e}"),
    };
    journal(&format!(
        "terminal session of {who} closed after {}s: {ended}; shell {status}; {bytes_in} bytes in, {bytes_out} bytes out",
        started.elapsed().as_secs()
    ));
}

/// Reads frames until the first resize (its size) or [`FIRST_RESIZE_WAIT`] (the default
/// size); data frames read meanwhile go to `pending`. `None` when the stream ended.
#[cfg(feature = "pty")]
async fn first_size<R: AsyncRead + Unpin>(
    from_relay: &mut R,
    frames: &mut Frames,
    pending: &mut Vec<Vec<u8>>,
) -> Option<(u16, u16)> {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + FIRST_RESIZE_WAIT;
    let mut chunk = vec![0u8; 4096];
    loop {
        loop {
            match frames.next() {
                Ok(Some(crate::wire::TerminalFrame::Resize { cols, rows })) => {
                    return Some((cols, rows));
                }
                Ok(Some(crate::wire::TerminalFrame::Data(d))) => pending.push(d),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("terminal closed: {e}");
                    return None;
                }
            }
        }
        match tokio::time::timeout_at(deadline, from_relay.read(&mut chunk)).await {
            Err(_) => return Some(pty::DEFAULT_SIZE),
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => frames.push(&chunk[..n]),
        }
    }
}

/// A data frame of the yamux leg.
pub(crate) fn data_frame(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 5);
    crate::wire::TerminalFrame::Data(data.to_vec()).encode(&mut out);
    out
}

/// Reassembles the relay's frames from stream reads.
pub(crate) struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    pub(crate) fn new(early: Vec<u8>) -> Frames {
        Frames { buf: early }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame; an oversized frame is an error that ends the terminal.
    pub(crate) fn next(&mut self) -> Result<Option<crate::wire::TerminalFrame>, std::io::Error> {
        use crate::wire::{MAX_TERMINAL_FRAME_AGENT, TerminalFrame};
        match TerminalFrame::decode(&self.buf, MAX_TERMINAL_FRAME_AGENT) {
            Ok(Some((frame, used))) => {
                self.buf.drain(..used);
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
    }
}

/// Writes a terminal event to the agent's log and to the device's syslog (journald reads
/// `/dev/log` too); the tracing log alone when there is no syslog socket.
pub(crate) fn journal(message: &str) {
    tracing::info!(target: "tether_agent::terminal", "{message}");
    if let Err(e) = send_syslog(std::path::Path::new(SYSLOG_SOCKET), message) {
        tracing::debug!("not written to syslog ({SYSLOG_SOCKET}): {e}");
    }
}

/// One RFC 3164 datagram (`<pri>tether-agent[pid]: message`) to the socket at `path`; never
/// blocks.
pub(crate) fn send_syslog(path: &std::path::Path, message: &str) -> std::io::Result<()> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let line = syslog_line(std::process::id(), message);
    socket.send_to(line.as_bytes(), path)?;
    Ok(())
}

/// The datagram text; control characters in `message` become spaces.
pub(crate) fn syslog_line(pid: u32, message: &str) -> String {
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("<{SYSLOG_PRIORITY}>tether-agent[{pid}]: {clean}")
}

#[cfg(test)]
mod tests;
