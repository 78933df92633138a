//! Integration tests of `tether-relay` with the real binaries on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "relay/harness.rs"]
mod harness;

#[path = "relay/demo.rs"]
mod demo;

#[path = "relay/e2e.rs"]
mod e2e;

#[path = "relay/diagnostics.rs"]
mod diagnostics;

#[path = "relay/reference_peer.rs"]
mod reference_peer;

#[path = "relay/terminal.rs"]
mod terminal;

#[path = "relay/embedding.rs"]
mod embedding;

#[path = "relay/services.rs"]
mod services;

#[path = "relay/console.rs"]
mod console;

#[path = "relay/console_terminal.rs"]
mod console_terminal;

#[path = "relay/origins.rs"]
mod origins;
