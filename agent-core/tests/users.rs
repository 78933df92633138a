//! Ephemeral support users: the provisioners against shims of `runagent` and `python3` that
//! record their calls, a crash half-way through, and the agent runtime against a fake relay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "agent/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "users/shims.rs"]
mod shims;

#[path = "users/crash.rs"]
mod crash;
#[path = "users/provision.rs"]
mod provision;
#[path = "users/runtime.rs"]
mod runtime;
