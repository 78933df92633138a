//! Wire codecs: header and reply lines, stream classification, terminal frames
//! (PROTOCOL sections 3, 4 and 7; REFERENCE 1.6, 1.7 and 1.9).

use alloc::string::String;
use alloc::vec::Vec;
use alloc::{format, vec};

use crate::policy;

/// Longest header or reply line, including the `\n`.
pub const MAX_LINE: usize = 1024;
/// Largest terminal frame (type + payload) the agent accepts from the relay.
pub const MAX_TERMINAL_FRAME_AGENT: usize = 1 << 20;
/// Largest terminal frame (type + payload) the relay accepts from the agent.
pub const MAX_TERMINAL_FRAME_RELAY: usize = 64 * 1024;
/// Bytes of the big-endian length prefix of a terminal frame on the yamux leg.
pub const FRAME_LENGTH_BYTES: usize = 4;

/// Reserved `CONNECT` name that opens a terminal instead of a service.
pub const TERMINAL_SERVICE: &str = "terminal";
/// Upgrade-request header with which an agent offers protocol version 2; a relay that speaks
/// it answers 101 with the same header (PROTOCOL section 9).
pub const PROTOCOL_HEADER: &str = "x-tether-protocol";
/// The value of [`PROTOCOL_HEADER`] for version 2.
pub const PROTOCOL_V2: &str = "2";
/// Longest operator name a v2 relay may append to `CONNECT terminal` (the relay's name rule).
pub const MAX_OPERATOR_NAME: usize = 64;
/// The only `COMMAND` version this crate speaks.
pub const COMMAND_VERSION: &str = "1";

/// Terminal frame types (PROTOCOL section 7).
const FRAME_DATA: u8 = 0;
const FRAME_RESIZE: u8 = 1;
const FRAME_ERROR: u8 = 3;

/// What was wrong with bytes read from a stream.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// No `\n` within [`MAX_LINE`] bytes.
    #[error("line longer than {MAX_LINE} bytes without a newline")]
    LineTooLong,
    /// A header or reply line that is not UTF-8.
    #[error("line is not valid utf-8")]
    NotUtf8,
    /// A stream header this side does not know.
    #[error("unknown stream header {0:?}")]
    UnknownStream(String),
    /// A `CONNECT` header with a name outside the service-name grammar.
    #[error("invalid service name {0:?} in connect header")]
    BadServiceName(String),
    /// A `COMMAND` header with a version other than 1.
    #[error("unsupported command version {0:?}")]
    UnsupportedCommandVersion(String),
    /// A reply line that is neither `OK` nor `ERROR <text>`.
    #[error("reply {0:?} is neither OK nor ERROR")]
    BadReply(String),
    /// A terminal frame longer than the receiver accepts.
    #[error("terminal frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
}

/// Ok(Some(n)): `buf[..n]` is one complete line including its `\n`; Ok(None): need more bytes;
/// Err(LineTooLong) when there is no `\n` within [`MAX_LINE`] bytes.
pub fn find_line(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let window = buf.get(..MAX_LINE).unwrap_or(buf);
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => Ok(Some(i + 1)),
        None if buf.len() >= MAX_LINE => Err(WireError::LineTooLong),
        None => Ok(None),
    }
}

/// The text of a line: strips the `\n` (and one tolerated `\r` before it).
pub fn line_text(line: &[u8]) -> Result<&str, WireError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    core::str::from_utf8(line).map_err(|_| WireError::NotUtf8)
}

/// Untrusted text kept in an error, cut to 64 bytes at a character boundary.
pub(crate) fn shown(s: &str) -> String {
    const SHOWN: usize = 64;
    let mut end = s.len().min(SHOWN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    String::from(s.get(..end).unwrap_or(""))
}

/// The answer to a `CONNECT` or `COMMAND` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK`
    Ok,
    /// `ERROR <text>`
    Error(String),
}

impl Reply {
    /// Parses the text of a reply line: `OK`, `ERROR <text>` or a bare `ERROR`.
    pub fn parse(line: &str) -> Result<Reply, WireError> {
        if line == "OK" {
            return Ok(Reply::Ok);
        }
        if line == "ERROR" {
            return Ok(Reply::Error(String::new()));
        }
        match line.strip_prefix("ERROR ") {
            Some(text) => Ok(Reply::Error(String::from(text))),
            None => Err(WireError::BadReply(shown(line))),
        }
    }

    /// `OK\n` or `ERROR <text>\n`: newlines become spaces and the text is cut at a character
    /// boundary so that the line never exceeds [`MAX_LINE`].
    pub fn encode(&self) -> Vec<u8> {
        const PREFIX: &[u8] = b"ERROR ";
        let text = match self {
            Reply::Ok => return b"OK\n".to_vec(),
            Reply::Error(text) if text.is_empty() => return b"ERROR\n".to_vec(),
            Reply::Error(text) => text,
        };
        let budget = MAX_LINE - PREFIX.len() - 1;
        let mut out = Vec::with_capacity(PREFIX.len() + text.len().min(budget) + 1);
        out.extend_from_slice(PREFIX);
        let mut used = 0;
        for c in text.chars() {
            let c = if matches!(c, '\n' | '\r') { ' ' } else { c };
            let mut utf8 = [0u8; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            used += bytes.len();
            if used > budget {
                break;
            }
            out.extend_from_slice(bytes);
        }
        out.push(b'\n');
        out
    }
}

/// Streams the relay opens towards the agent (PROTOCOL section 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayStream {
    /// `CONNECT <service>`: a byte stream to a published service.
    Connect(String),
    /// `CONNECT terminal`: a PTY shell.
    Terminal,
    /// `CONNECT terminal <operator>`: a PTY shell opened for a named operator (protocol v2
    /// only: a relay sends it only to agents that offered `X-Tether-Protocol: 2`).
    TerminalFor(String),
    /// `COMMAND 1`: one JSON command follows.
    Command,
}

impl RelayStream {
    /// Parses the text of the first line of a relay-opened stream.
    pub fn parse(line: &str) -> Result<RelayStream, WireError> {
        if let Some(name) = line.strip_prefix("CONNECT ") {
            if name == TERMINAL_SERVICE {
                return Ok(RelayStream::Terminal);
            }
            if let Some(operator) = name
                .strip_prefix(TERMINAL_SERVICE)
                .and_then(|rest| rest.strip_prefix(' '))
            {
                return if is_operator_name(operator) {
                    Ok(RelayStream::TerminalFor(String::from(operator)))
                } else {
                    Err(WireError::BadServiceName(shown(name)))
                };
            }
            return match policy::validate_connect_name(name) {
                Ok(()) => Ok(RelayStream::Connect(String::from(name))),
                Err(_) => Err(WireError::BadServiceName(shown(name))),
            };
        }
        if let Some(version) = line.strip_prefix("COMMAND ") {
            return if version == COMMAND_VERSION {
                Ok(RelayStream::Command)
            } else {
                Err(WireError::UnsupportedCommandVersion(shown(version)))
            };
        }
        Err(WireError::UnknownStream(shown(line)))
    }

    /// The header line, including its `\n`.
    pub fn header(&self) -> String {
        match self {
            RelayStream::Connect(name) => format!("CONNECT {name}\n"),
            RelayStream::Terminal => format!("CONNECT {TERMINAL_SERVICE}\n"),
            RelayStream::TerminalFor(operator) => {
                format!("CONNECT {TERMINAL_SERVICE} {operator}\n")
            }
            RelayStream::Command => format!("COMMAND {COMMAND_VERSION}\n"),
        }
    }
}

/// Whether `name` can travel as the operator of `CONNECT terminal <operator>`: 1 to
/// [`MAX_OPERATOR_NAME`] of `[A-Za-z0-9._-]`, the relay's rule for operator names.
pub fn is_operator_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_OPERATOR_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Streams the agent opens towards the relay (PROTOCOL section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStream {
    /// A raw JSON manifest, no header line.
    Manifest,
    /// `DIAGNOSTICS 1`
    Diagnostics,
    /// `USERS 1`
    Users,
    /// `USERS_FETCH 1`
    UsersFetch,
}

impl AgentStream {
    /// The header line including `\n`; empty for the manifest.
    pub fn header(self) -> &'static [u8] {
        match self {
            AgentStream::Manifest => b"",
            AgentStream::Diagnostics => b"DIAGNOSTICS 1\n",
            AgentStream::Users => b"USERS 1\n",
            AgentStream::UsersFetch => b"USERS_FETCH 1\n",
        }
    }

    /// Classifies an agent-opened stream by its first bytes, like the reference relay.
    ///
    /// Ok(None): need more bytes. Ok(Some((kind, header_len))): `header_len` bytes of header line
    /// to skip (0 for the manifest, whose first byte is already the JSON).
    pub fn classify(buf: &[u8]) -> Result<Option<(AgentStream, usize)>, WireError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        match first {
            b'{' | b' ' | b'\t' | b'\n' | b'\r' => Ok(Some((AgentStream::Manifest, 0))),
            b'U' | b'D' => {
                let Some(len) = find_line(buf)? else {
                    return Ok(None);
                };
                let text = line_text(buf.get(..len).unwrap_or(buf))?;
                let mut fields = text.split_ascii_whitespace();
                let kind = match (fields.next(), fields.next(), fields.next()) {
                    (Some("USERS"), Some("1"), None) => AgentStream::Users,
                    (Some("USERS_FETCH"), Some("1"), None) => AgentStream::UsersFetch,
                    (Some("DIAGNOSTICS"), Some("1"), None) => AgentStream::Diagnostics,
                    _ => return Err(WireError::UnknownStream(shown(text))),
                };
                Ok(Some((kind, len)))
            }
            other => Err(WireError::UnknownStream(format!(
                "stream starting with byte 0x{other:02x}"
            ))),
        }
    }
}

/// Terminal frames (PROTOCOL section 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalFrame {
    /// Type 0: keystrokes or PTY output.
    Data(Vec<u8>),
    /// Type 1: a window size, both dimensions non-zero.
    Resize { cols: u16, rows: u16 },
    /// Type 3: an error text for the browser (relay to browser only).
    Error(String),
    /// An empty frame, an unknown type or an unusable resize: receivers skip it.
    Ignored,
}

/// The JSON body of a resize frame; dimensions are Go `int`s on the wire.
#[derive(serde::Deserialize)]
struct ResizeBody {
    cols: i64,
    rows: i64,
}

impl TerminalFrame {
    /// Decodes one frame of the yamux leg: `[u32 BE length][type][payload]`, length counting
    /// type + payload. Ok(None): need more bytes; Ok(Some((frame, consumed))).
    pub fn decode(buf: &[u8], max: usize) -> Result<Option<(TerminalFrame, usize)>, WireError> {
        let Some((prefix, rest)) = buf.split_first_chunk::<FRAME_LENGTH_BYTES>() else {
            return Ok(None);
        };
        let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
        if len > max {
            return Err(WireError::FrameTooLarge { len, max });
        }
        let Some(body) = rest.get(..len) else {
            return Ok(None);
        };
        // len <= rest.len() here, so the sum cannot overflow.
        let consumed = FRAME_LENGTH_BYTES + len;
        Ok(Some((TerminalFrame::from_message(body), consumed)))
    }

    /// Appends the length-prefixed frame; [`TerminalFrame::Ignored`] appends nothing.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let Some((kind, payload)) = self.parts() else {
            return;
        };
        // Chunks keep every length within u32; data frames form a byte stream, so splitting
        // a (multi-gigabyte) data payload does not change its meaning.
        const MAX_PAYLOAD: usize = (u32::MAX - 1) as usize;
        let mut chunks = payload.chunks(MAX_PAYLOAD.max(1));
        let first = chunks.next().unwrap_or(&[]);
        for chunk in core::iter::once(first).chain(chunks) {
            let len = u32::try_from(chunk.len() + 1).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.push(kind);
            out.extend_from_slice(chunk);
            if kind != FRAME_DATA {
                break;
            }
        }
    }

    /// Decodes one browser-leg message: `[type][payload]`, no length prefix.
    pub fn from_message(msg: &[u8]) -> TerminalFrame {
        let Some((&kind, payload)) = msg.split_first() else {
            return TerminalFrame::Ignored;
        };
        match kind {
            FRAME_DATA => TerminalFrame::Data(payload.to_vec()),
            FRAME_RESIZE => match serde_json::from_slice::<ResizeBody>(payload) {
                Ok(ResizeBody { cols, rows }) => match (u16::try_from(cols), u16::try_from(rows)) {
                    (Ok(cols), Ok(rows)) if cols > 0 && rows > 0 => {
                        TerminalFrame::Resize { cols, rows }
                    }
                    _ => TerminalFrame::Ignored,
                },
                Err(_) => TerminalFrame::Ignored,
            },
            FRAME_ERROR => TerminalFrame::Error(String::from_utf8_lossy(payload).into_owned()),
            _ => TerminalFrame::Ignored,
        }
    }

    /// Encodes one browser-leg message; empty for [`TerminalFrame::Ignored`].
    pub fn to_message(&self) -> Vec<u8> {
        let Some((kind, payload)) = self.parts() else {
            return Vec::new();
        };
        let mut msg = vec![kind];
        msg.extend_from_slice(&payload);
        msg
    }

    /// Type byte and payload, or None for a frame that is never sent.
    fn parts(&self) -> Option<(u8, alloc::borrow::Cow<'_, [u8]>)> {
        use alloc::borrow::Cow;
        match self {
            TerminalFrame::Data(data) => Some((FRAME_DATA, Cow::Borrowed(data.as_slice()))),
            TerminalFrame::Resize { cols, rows } => Some((
                FRAME_RESIZE,
                Cow::Owned(format!("{{\"cols\":{cols},\"rows\":{rows}}}").into_bytes()),
            )),
            TerminalFrame::Error(text) => Some((FRAME_ERROR, Cow::Borrowed(text.as_bytes()))),
            TerminalFrame::Ignored => None,
        }
    }
}

#[cfg(test)]
mod tests;
