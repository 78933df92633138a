//! Tether agent core.
//!
//! Two layers in one crate:
//!
//! * the **protocol layer** (`#![no_std]` + `alloc`, always built): wire codecs for header
//!   lines, replies and terminal frames ([`wire`]), the JSON/postcard documents ([`document`]),
//!   service-name rules and the target policy ([`policy`]), redacted secrets ([`secret`]), the static-service syntax and the
//!   agent's service catalogue ([`services`]), exclude globs ([`exclude`]), diagnostics plugin output
//!   ([`plugin_output`]) and the reconnect backoff ([`backoff`]). No clock, no sockets: time and randomness come in as arguments.
//! * the **runtime layer**, behind features: `mux` is the WebSocket/yamux transport that the
//!   relay shares ([`transport`]); `runtime` is the tokio agent that dials the relay, proxies
//!   `CONNECT` streams and applies commands ([`agent`]).
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod backoff;
pub mod discovery;
pub mod document;
pub mod exclude;
pub mod plugin_output;
pub mod policy;
pub mod secret;
pub mod services;
pub mod wire;

#[cfg(feature = "mux")]
pub mod transport;

#[cfg(feature = "runtime")]
pub mod agent;
