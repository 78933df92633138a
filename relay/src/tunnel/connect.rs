//! A `CONNECT` stream whose reply is read lazily, so that it can be used before the agent has
//! answered (protocol v2 agents only, see [`Tunnel::connect`](super::Tunnel::connect)).
//!
//! The relay writes `CONNECT <service>\n` and the caller's first bytes (the HTTP request)
//! without waiting for `OK`, saving a tunnel round trip per proxied request. A Tether agent
//! keeps whatever follows the header line and hands it to the target once connected; a
//! reference (Go) agent may not, so v1 agents still get the wait-for-`OK` exchange.
//!
//! Reads first consume the agent's reply line: after `OK` the bytes that follow are the
//! service's; `ERROR <text>`, a bad line, an early end or no reply within the connect timeout
//! fail the stream, and [`Outcome::take`] then tells the caller why (for the one mapping of
//! connect failures to HTTP). Writes try to read the reply too, so a refusal is noticed while a
//! request body waits for the stream window.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use agent_core::transport::MuxStream;
use agent_core::wire::{self, MAX_LINE, Reply};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::TunnelError;

/// Room offered to the stream for a read, at first and again after a small read.
const MIN_READ: usize = 16 * 1024;
/// Room offered once reads keep filling it: a transfer is under way (one yamux frame's worth).
const MAX_READ: usize = 64 * 1024;

/// Why a `CONNECT` stream failed before the agent's `OK`, shared with the caller.
#[derive(Debug, Clone, Default)]
pub struct Outcome(Arc<Mutex<Option<TunnelError>>>);

impl Outcome {
    /// The refusal or timeout that ended the stream before `OK`, if that is what happened.
    pub fn take(&self) -> Option<TunnelError> {
        self.lock().take()
    }

    fn set(&self, e: TunnelError) {
        *self.lock() = Some(e);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<TunnelError>> {
        // A plain value; a panic elsewhere cannot leave it half-written.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

enum State {
    /// The reply line has not been read completely; `deadline` is the connect timeout.
    Pending { deadline: Pin<Box<Sleep>> },
    /// `OK` arrived; `buf[pos..]` are the service's first bytes.
    Accepted,
    /// The agent refused, or the reply never came.
    Failed,
}

/// A `CONNECT` stream whose header line is written and whose reply is read lazily.
pub struct ConnectStream<S = MuxStream> {
    inner: S,
    state: State,
    buf: Vec<u8>,
    pos: usize,
    outcome: Outcome,
    timeout_what: &'static str,
    /// Room the next read offers the stream: [`MIN_READ`] to [`MAX_READ`].
    room: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ConnectStream<S> {
    /// Wraps a stream on which the `CONNECT` header line was just written.
    pub(super) fn new(
        inner: S,
        deadline: Instant,
        timeout_what: &'static str,
    ) -> (ConnectStream<S>, Outcome) {
        let outcome = Outcome::default();
        let stream = ConnectStream {
            inner,
            state: State::Pending {
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
            },
            buf: Vec::new(),
            pos: 0,
            outcome: outcome.clone(),
            timeout_what,
            room: MIN_READ,
        };
        (stream, outcome)
    }

    fn fail(&mut self, e: TunnelError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.outcome.set(e);
        self.state = State::Failed;
        self.buf = Vec::new();
        err
    }

    /// Waits for the agent's reply: `Ok` after `OK`, the reason otherwise.
    pub(super) async fn accepted(&mut self) -> Result<(), TunnelError> {
        match std::future::poll_fn(|cx| self.poll_reply(cx)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self
                .outcome
                .take()
                .unwrap_or_else(|| TunnelError::Io(e.to_string()))),
        }
    }

    /// Reads until the reply line is complete (then `Ready(Ok)`), or fails the stream.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let deadline = match &mut self.state {
                State::Accepted => return Poll::Ready(Ok(())),
                State::Failed => return Poll::Ready(Err(refused())),
                State::Pending { deadline } => deadline,
            };
            match wire::find_line(&self.buf) {
                Ok(Some(len)) => return Poll::Ready(self.accept(len)),
                Ok(None) => {}
                Err(e) => {
                    let e = TunnelError::Io(format!("bad reply line: {e}"));
                    return Poll::Ready(Err(self.fail(e)));
                }
            }
            if deadline.as_mut().poll(cx).is_ready() {
                let e = TunnelError::Timeout(self.timeout_what);
                return Poll::Ready(Err(self.fail(e)));
            }
            let mut chunk = [0u8; MAX_LINE];
            let mut rb = ReadBuf::new(&mut chunk);
            if let Err(e) = ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb)) {
                return Poll::Ready(Err(self.fail(e.into())));
            }
            if rb.filled().is_empty() {
                let e = TunnelError::Io("the agent closed the stream before replying".into());
                return Poll::Ready(Err(self.fail(e)));
            }
            self.buf.extend_from_slice(rb.filled());
        }
    }

    /// The reply line is `buf[..len]`.
    fn accept(&mut self, len: usize) -> io::Result<()> {
        let reply = wire::line_text(&self.buf[..len])
            .map_err(|e| TunnelError::Io(format!("bad reply: {e}")))
            .and_then(|text| {
                Reply::parse(text).map_err(|e| TunnelError::Io(format!("bad reply: {e}")))
            });
        match reply {
            Ok(Reply::Ok) => {
                self.state = State::Accepted;
                self.pos = len;
                Ok(())
            }
            Ok(Reply::Error(text)) => Err(self.fail(TunnelError::Agent(text))),
            Err(e) => Err(self.fail(e)),
        }
    }
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        "the agent refused the stream",
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ConnectStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_reply(cx))?;
        if this.pos < this.buf.len() {
            let n = out.remaining().min(this.buf.len() - this.pos);
            out.put_slice(&this.buf[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.buf.len() {
                this.buf = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        // The yamux stream's tokio adapter zeroes all the room it is given on every read, and
        // hyper offers its whole (uninitialised) read buffer: offer 16 KiB, and up to 64 KiB
        // only while reads fill what they are offered (a download), so that small exchanges
        // do not pay for zeroing 64 KiB each and bulk ones take fewer, larger reads.
        let offered = out.remaining().min(this.room);
        let room = out.initialize_unfilled_to(offered);
        let mut rb = ReadBuf::new(room);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        out.advance(n);
        this.room = if n == offered {
            (this.room * 2).min(MAX_READ)
        } else if n < MIN_READ / 2 {
            MIN_READ
        } else {
            this.room
        };
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ConnectStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let State::Failed = this.state {
            return Poll::Ready(Err(refused()));
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, data);
        if written.is_pending() {
            // The agent does not read before it has connected: learn whether it refused.
            if let Poll::Ready(Err(e)) = this.poll_reply(cx) {
                return Poll::Ready(Err(e));
            }
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
