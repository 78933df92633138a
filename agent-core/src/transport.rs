//! The tunnel transport shared by agent and relay: a WebSocket carried as one byte stream
//! ([`WsIo`]) and a yamux connection driven continuously by its own task ([`spawn_mux`]).
//!
//! Why a dedicated driver task: reference (Go) peers ping once per round trip and drop the
//! session when a pong is more than 10 s late, and they tear the whole session down when a
//! stream they opened is not ACKed within 75 s. The rust `yamux` crate only answers pings and
//! reads frames while its `Connection` is polled, so the driver polls it at all times, hands
//! inbound streams out through an unbounded channel (yamux caps their number) and ACKs every
//! inbound stream immediately, whatever the application is doing.
//!
//! Rule for users of [`MuxStream`]: finish a stream with `shutdown()` (a FIN that also carries
//! the ACK if nothing was written yet) before dropping it; a bare drop resets it.

use std::format;
use std::prelude::rust_2024::*;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{AsyncRead, AsyncWrite, Sink, Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::coding::CloseCode;

pub use yamux::Mode;

/// Close code the relay sends when it ends a session on purpose; the agent stops for good.
pub const CLOSE_SESSION_CLOSED: u16 = 4000;
/// Reason text that goes with [`CLOSE_SESSION_CLOSED`].
pub const CLOSE_SESSION_CLOSED_REASON: &str = "session_closed";
/// Largest WebSocket message we send: yamux frames are coalesced up to this size per message
/// (one [`MAX_FRAME_BODY`] frame with its header fits in one message).
pub const MAX_OUT_MESSAGE: usize = 128 * 1024;
/// Largest yamux data frame we send (yamux's default is 16 KiB): fewer, larger frames mean
/// fewer WebSocket messages and system calls per MB. hashicorp peers accept any frame within
/// the stream window (256 KiB).
pub const MAX_FRAME_BODY: usize = 64 * 1024;
/// Bytes read from the socket under the WebSocket at a time while data flows (see
/// [`ReadAhead`]).
pub const READ_AHEAD: usize = 64 * 1024;
/// Largest WebSocket message we accept. Go peers write one yamux header or one body (at most
/// the 256 KiB stream window) per message; our own peers write at most [`MAX_OUT_MESSAGE`].
pub const MAX_IN_MESSAGE: usize = 512 * 1024;
/// Most streams the agent side of a tunnel may have open at once. rust-yamux ends the whole
/// connection when a peer opens one stream too many, while hashicorp peers (the reference
/// relay) have no stream cap, so the agent's limit is far above any relay's per-tunnel cap.
pub const MAX_STREAMS_AGENT: usize = 4096;
/// Most streams the relay side of a tunnel may have open at once (its proxy streams plus the
/// agent's control streams); it bounds what one agent can make the relay buffer.
pub const MAX_STREAMS_RELAY: usize = 1024;

/// A yamux stream as a tokio `AsyncRead + AsyncWrite`.
pub type MuxStream = Compat<yamux::Stream>;

/// The WebSocket's read buffer, which every tunnel holds for its whole life (tungstenite keeps
/// it allocated): small, because idle tunnels must stay cheap. Bulk transfers do not suffer,
/// as reads are served from [`ReadAhead`]'s chunk, not the socket.
pub const WS_READ_BUFFER: usize = 1024;

/// WebSocket settings for tunnels: small buffers, because idle tunnels must stay cheap.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * MAX_IN_MESSAGE)
        .max_message_size(Some(MAX_IN_MESSAGE))
        .max_frame_size(Some(MAX_IN_MESSAGE))
}

/// yamux settings for tunnels (hashicorp v0.1.2 compatible; 256 KiB initial windows).
pub fn yamux_config(mode: Mode) -> yamux::Config {
    let streams = match mode {
        Mode::Client => MAX_STREAMS_AGENT,
        Mode::Server => MAX_STREAMS_RELAY,
    };
    let mut cfg = yamux::Config::default();
    // 256 KiB per stream at the very least (yamux requires it); auto-tuning may grow busy
    // streams within that total.
    cfg.set_max_connection_receive_window(Some(streams * 256 * 1024));
    cfg.set_max_num_streams(streams);
    cfg.set_split_send_size(MAX_FRAME_BODY);
    cfg
}

/// A socket read in [`READ_AHEAD`] chunks during bulk transfers, for the WebSocket above it,
/// whose small read buffer ([`ws_config`], kept small for idle tunnels) would otherwise cost one
/// system call per 4 KiB. Reads go straight to the socket until one fills the caller's buffer
/// (more is waiting: a transfer is under way); the chunk is then allocated, and freed again
/// once the socket runs dry after a small read, so small exchanges and idle tunnels pay
/// nothing.
pub struct ReadAhead<S> {
    inner: S,
    buf: Option<Box<[u8]>>,
    pos: usize,
    filled: usize,
}

impl<S> ReadAhead<S> {
    /// Wraps a socket.
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: None,
            pos: 0,
            filled: 0,
        }
    }

    /// Whether a read-ahead chunk is held now.
    pub fn is_buffering(&self) -> bool {
        self.buf.is_some()
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let Some(buf) = this.buf.as_mut() else {
                let before = out.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                let n = out.filled().len() - before;
                if n > 0 && out.remaining() == 0 && n < READ_AHEAD {
                    this.buf = Some(vec![0; READ_AHEAD].into_boxed_slice());
                    this.pos = 0;
                    this.filled = 0;
                }
                return Poll::Ready(Ok(()));
            };
            if this.pos < this.filled {
                let n = out.remaining().min(this.filled - this.pos);
                out.put_slice(&buf[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            let mut rb = tokio::io::ReadBuf::new(buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Dry after a small read: the transfer is over, give the memory back.
                    if this.filled < READ_AHEAD / 4 {
                        this.buf = None;
                    }
                    return Poll::Pending;
                }
            }
            this.filled = rb.filled().len();
            this.pos = 0;
            if this.filled == 0 {
                this.buf = None;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Liveness settings of the WebSocket under a tunnel.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// How often a WebSocket ping is sent.
    pub interval: Duration,
    /// How long the peer may stay silent (no message, no pong) before the tunnel is dead.
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(60),
        }
    }
}

/// What ended a tunnel connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MuxEnd {
    /// The close code of the peer's WebSocket close frame, if it sent one.
    pub close_code: Option<u16>,
    /// The reason text of that close frame.
    pub close_reason: String,
    /// A transport or yamux error, if the connection did not end cleanly.
    pub error: Option<String>,
}

impl MuxEnd {
    /// Whether the relay ended the session on purpose (close code 4000).
    pub fn is_session_closed(&self) -> bool {
        self.close_code == Some(CLOSE_SESSION_CLOSED)
    }
}

#[derive(Debug, Default)]
struct CloseState {
    /// Close frame to send when the connection is closed locally.
    send: Option<(u16, String)>,
    /// Close frame received from the peer.
    received: Option<(u16, String)>,
}

/// A WebSocket seen as one byte stream: every message (binary or text) is a chunk of the
/// stream, message boundaries mean nothing. Writes are coalesced until flush, and a flush is
/// put off to the driver's next pass (see [`Passes`]), so the frames that many streams queue
/// at once travel in one message and one system call instead of one each.
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    read_buf: Bytes,
    write_buf: Vec<u8>,
    passes: Passes,
    /// The driver pass in which a flush of `write_buf` was put off.
    flush_put_off: Option<u32>,
    close: Arc<Mutex<CloseState>>,
    keepalive: Option<(Interval, Duration)>,
    last_rx: Instant,
    eof: bool,
    /// A close frame went out: later writes (yamux's own GO_AWAY) are discarded.
    close_sent: bool,
}

impl<S> WsIo<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn new(ws: WebSocketStream<S>, keepalive: Option<Keepalive>, passes: Passes) -> Self {
        let keepalive = keepalive.map(|k| {
            let mut iv = tokio::time::interval_at(Instant::now() + k.interval, k.interval);
            iv.set_missed_tick_behavior(MissedTickBehavior::Delay);
            (iv, k.timeout)
        });
        WsIo {
            ws,
            read_buf: Bytes::new(),
            write_buf: Vec::new(),
            passes,
            flush_put_off: None,
            close: Arc::default(),
            keepalive,
            last_rx: Instant::now(),
            eof: false,
            close_sent: false,
        }
    }

    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some((iv, timeout)) = self.keepalive.as_mut() else {
            return Ok(());
        };
        while iv.poll_tick(cx).is_ready() {
            if self.last_rx.elapsed() > *timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "peer silent for more than {} s (no data, no pong)",
                        timeout.as_secs()
                    ),
                ));
            }
            // Best effort: if the sink is busy, data is flowing and the next tick retries.
            let mut ws = Pin::new(&mut self.ws);
            if let Poll::Ready(Ok(())) = ws.as_mut().poll_ready(cx) {
                ws.as_mut()
                    .start_send(Message::Ping(Bytes::new()))
                    .map_err(ws_err)?;
                let _ = ws.as_mut().poll_flush(cx).map_err(ws_err)?;
            }
        }
        Ok(())
    }

    /// Send the requested close frame (if any) before anything else goes out, so the peer
    /// reads the close code before it sees the byte stream end.
    fn poll_send_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.close_sent || lock(&self.close).send.is_none() {
            return Poll::Ready(Ok(()));
        }
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(ws_err)?;
        if let Some((code, reason)) = lock(&self.close).send.take() {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            ws.as_mut()
                .start_send(Message::Close(Some(frame)))
                .map_err(ws_err)?;
        }
        self.close_sent = true;
        self.write_buf.clear();
        Poll::Ready(Ok(()))
    }

    fn poll_send_buffered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_buf.is_empty() || self.close_sent {
            return Poll::Ready(Ok(()));
        }
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(ws_err)?;
        // Hand the buffer over (no copy); an idle tunnel then holds no write buffer at all.
        let msg = std::mem::take(&mut self.write_buf);
        ws.start_send(Message::Binary(Bytes::from(msg)))
            .map_err(ws_err)?;
        Poll::Ready(Ok(()))
    }
}

fn ws_err(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")
        }
        other => io::Error::other(other),
    }
}

fn lock(close: &Mutex<CloseState>) -> std::sync::MutexGuard<'_, CloseState> {
    // The state is plain data; a panic elsewhere cannot leave it inconsistent.
    close.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S> AsyncRead for WsIo<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.poll_keepalive(cx)?;
        loop {
            if !this.read_buf.is_empty() {
                let n = buf.len().min(this.read_buf.len());
                let chunk = this.read_buf.split_to(n);
                buf[..n].copy_from_slice(&chunk);
                return Poll::Ready(Ok(n));
            }
            if this.eof {
                return Poll::Ready(Ok(0));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None => {
                    this.eof = true;
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_err(e))),
                Some(Ok(msg)) => {
                    this.last_rx = Instant::now();
                    match msg {
                        Message::Binary(b) => this.read_buf = b,
                        Message::Text(t) => this.read_buf = Bytes::from(t),
                        Message::Close(frame) => {
                            if let Some(f) = frame {
                                lock(&this.close).received =
                                    Some((u16::from(f.code), f.reason.as_str().to_owned()));
                            }
                            this.eof = true;
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
            }
        }
    }
}

impl<S> AsyncWrite for WsIo<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_send_close(cx))?;
        if this.close_sent {
            return Poll::Ready(Ok(buf.len()));
        }
        if this.write_buf.len() >= MAX_OUT_MESSAGE {
            ready!(this.poll_send_buffered(cx))?;
        }
        let n = buf.len().min(MAX_OUT_MESSAGE - this.write_buf.len());
        this.write_buf.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send_close(cx))?;
        if !this.write_buf.is_empty() && !this.close_sent {
            // yamux flushes after every frame. The first flush of a pass is put off (with a
            // wake-up, so the driver passes again once the tasks woken meanwhile have queued
            // their frames); the next pass sends everything written until then.
            let pass = this.passes.current();
            match this.flush_put_off {
                Some(p) if p != pass => this.flush_put_off = None,
                Some(_) => return Poll::Pending,
                None => {
                    this.flush_put_off = Some(pass);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        this.flush_put_off = None;
        ready!(this.poll_send_buffered(cx))?;
        match ready!(Pin::new(&mut this.ws).poll_flush(cx)) {
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)
                if this.close_sent =>
            {
                Poll::Ready(Ok(()))
            }
            other => Poll::Ready(other.map_err(ws_err)),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send_buffered(cx))?;
        ready!(this.poll_send_close(cx))?;
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(ws_err(e))),
        }
    }
}

/// Counts the passes of a tunnel's driver task over its connection, for [`WsIo`] to tell
/// whether a flush is asked for in the same pass as the one it put off. 32 bits (MIPS32 has no
/// 64-bit atomics); only equality of neighbouring passes matters, so wrapping is harmless.
#[derive(Clone, Default)]
struct Passes(Arc<AtomicU32>);

impl Passes {
    fn current(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    fn next(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

enum Cmd {
    Open(oneshot::Sender<Result<MuxStream, MuxError>>),
    Close(Option<(u16, String)>),
}

/// Why a stream could not be opened.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum MuxError {
    /// The tunnel is gone.
    #[error("tunnel closed")]
    Closed,
    /// yamux refused the stream (too many streams, protocol error).
    #[error("cannot open stream: {0}")]
    Open(String),
}

/// A cloneable handle on a running tunnel connection.
#[derive(Clone)]
pub struct MuxHandle {
    // futures' channels rather than tokio's: tokio allocates a block of 32 slots up front, a
    // few KiB per idle tunnel on the relay for this channel and the incoming one.
    cmd: mpsc::UnboundedSender<Cmd>,
    ended: watch::Receiver<Option<MuxEnd>>,
}

impl MuxHandle {
    /// Open a stream towards the peer.
    pub async fn open(&self) -> Result<MuxStream, MuxError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .unbounded_send(Cmd::Open(tx))
            .map_err(|_| MuxError::Closed)?;
        rx.await.map_err(|_| MuxError::Closed)?
    }

    /// Close the connection, optionally with a WebSocket close code and reason.
    pub fn close(&self, code: Option<(u16, &str)>) {
        let _ = self
            .cmd
            .unbounded_send(Cmd::Close(code.map(|(c, r)| (c, r.to_owned()))));
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.ended.borrow().is_some()
    }

    /// Wait until the connection has ended, and say why.
    pub async fn closed(&self) -> MuxEnd {
        let mut rx = self.ended.clone();
        loop {
            if let Some(end) = rx.borrow_and_update().clone() {
                return end;
            }
            if rx.changed().await.is_err() {
                return MuxEnd {
                    error: Some("tunnel driver stopped".into()),
                    ..MuxEnd::default()
                };
            }
        }
    }
}

/// Streams the peer opened, already ACKed.
pub struct Incoming(mpsc::UnboundedReceiver<MuxStream>);

impl Incoming {
    /// The next stream the peer opened; `None` once the connection has ended. Cancel-safe.
    pub async fn recv(&mut self) -> Option<MuxStream> {
        self.0.next().await
    }

    /// A stream the peer opened that is waiting now, if any.
    pub fn try_recv(&mut self) -> Result<MuxStream, mpsc::TryRecvError> {
        self.0.try_recv()
    }
}

/// Start the yamux connection over a WebSocket on its own task.
///
/// `mode` is [`Mode::Client`] on the agent (odd stream ids) and [`Mode::Server`] on the relay.
pub fn spawn_mux<S>(
    ws: WebSocketStream<S>,
    mode: Mode,
    keepalive: Option<Keepalive>,
) -> (MuxHandle, Incoming)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let passes = Passes::default();
    let io = WsIo::new(ws, keepalive, passes.clone());
    let close = io.close.clone();
    let conn = yamux::Connection::new(io, yamux_config(mode), mode);
    let (cmd_tx, cmd_rx) = mpsc::unbounded();
    let (in_tx, in_rx) = mpsc::unbounded();
    let (end_tx, end_rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut end = drive(conn, cmd_rx, in_tx, close.clone(), passes).await;
        if let Some((code, reason)) = lock(&close).received.take() {
            end.close_code = Some(code);
            end.close_reason = reason;
        }
        let _ = end_tx.send(Some(end));
    });
    (
        MuxHandle {
            cmd: cmd_tx,
            ended: end_rx,
        },
        Incoming(in_rx),
    )
}

async fn drive<T>(
    mut conn: yamux::Connection<T>,
    mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    in_tx: mpsc::UnboundedSender<MuxStream>,
    close: Arc<Mutex<CloseState>>,
    passes: Passes,
) -> MuxEnd
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut pending_opens: VecDeque<oneshot::Sender<Result<MuxStream, MuxError>>> = VecDeque::new();
    let mut closing = false;
    let mut cmds_open = true;
    let result: Result<(), String> = poll_fn(|cx| {
        passes.next();
        while cmds_open && !closing {
            match cmd_rx.poll_next_unpin(cx) {
                Poll::Ready(Some(Cmd::Open(tx))) => pending_opens.push_back(tx),
                Poll::Ready(Some(Cmd::Close(code))) => {
                    lock(&close).send = code;
                    closing = true;
                }
                // Every handle is gone: nobody can use this tunnel any more.
                Poll::Ready(None) => {
                    cmds_open = false;
                    closing = true;
                }
                Poll::Pending => break,
            }
        }
        if closing {
            for tx in pending_opens.drain(..) {
                let _ = tx.send(Err(MuxError::Closed));
            }
            return conn.poll_close(cx).map_err(|e| e.to_string());
        }
        while !pending_opens.is_empty() {
            match conn.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    if let Some(tx) = pending_opens.pop_front() {
                        let _ = tx.send(Ok(stream.compat()));
                    }
                }
                Poll::Ready(Err(e)) => {
                    if let Some(tx) = pending_opens.pop_front() {
                        let _ = tx.send(Err(MuxError::Open(e.to_string())));
                    }
                }
                Poll::Pending => break,
            }
        }
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    let in_tx = in_tx.clone();
                    // ACK at once, like hashicorp's Accept(): an empty data frame carrying ACK.
                    tokio::spawn(async move {
                        let mut stream = stream.compat();
                        if stream.write(&[]).await.is_ok() {
                            let _ = in_tx.unbounded_send(stream);
                        }
                    });
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.to_string())),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    for tx in pending_opens.drain(..) {
        let _ = tx.send(Err(MuxError::Closed));
    }
    MuxEnd {
        close_code: None,
        close_reason: String::new(),
        error: result.err(),
    }
}

#[cfg(test)]
mod tests;
