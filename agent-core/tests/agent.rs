//! The agent runtime against a fake relay, real local targets, a proxy and TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "agent/support.rs"]
mod support;

#[path = "agent/commands.rs"]
mod commands;
#[path = "agent/connect.rs"]
mod connect;
#[path = "agent/lifecycle.rs"]
mod lifecycle;
#[path = "agent/proxy.rs"]
mod proxy;
#[path = "agent/tls.rs"]
mod tls;
