//! Sans-IO parts of service discovery: the configuration formats and command outputs the
//! platform adapters read ([`nginx`] `listen` directives, [`uci`] files, [`ns8`] routes), as
//! pure functions over bytes so they are tested with fixtures and fuzzed.

pub mod nginx;
pub mod ns8;
pub mod uci;
