//! Diagnostics providers: the host's own checks in the health report.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use agent_core::agent::diagnostics::Provider;
use agent_core::document::{Check, PluginReport, Status};

use crate::{UserData, boundary, handle_mut, str_arg, tether_result};

/// Status of a check or plugin, from least to most severe as operators read it.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tether_status {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
    Error = 4,
    Timeout = 5,
}

impl tether_status {
    fn from_u32(n: u32) -> Option<Status> {
        Some(match n {
            0 => Status::Ok,
            1 => Status::Warning,
            2 => Status::Critical,
            3 => Status::Unknown,
            4 => Status::Error,
            5 => Status::Timeout,
            _ => return None,
        })
    }
}

/// The report a diagnostics provider fills; valid only during its callback.
pub struct tether_diagnostics_plugin {
    report: PluginReport,
    status_set: bool,
}

/// Fills `plugin` with the host's checks; runs on a library thread.
pub type tether_diagnostics_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, plugin: *mut tether_diagnostics_plugin)>;

pub(crate) fn provider(
    id: String,
    name: String,
    callback: unsafe extern "C" fn(*mut c_void, *mut tether_diagnostics_plugin),
    userdata: UserData,
) -> Provider {
    let run_id = id.clone();
    Provider {
        id,
        run: Arc::new(move || {
            let mut plugin = tether_diagnostics_plugin {
                report: PluginReport {
                    id: run_id.clone(),
                    name: name.clone(),
                    status: Status::Ok,
                    summary: None,
                    checks: Vec::new(),
                },
                status_set: false,
            };
            // SAFETY: the host registered this callback for these arguments; `plugin` lives
            // until the call returns, which is all the documentation promises.
            unsafe { callback(userdata.get(), &mut plugin) };
            let mut report = plugin.report;
            if !plugin.status_set {
                report.status = Status::worst(report.checks.iter().map(|c| c.status));
            }
            report
        }),
    }
}

/// Adds a check `name` with `status` (a `tether_status` number) and `value` (`""`: none).
///
/// # Safety
/// `plugin` is the one passed to the running callback; `name` and `value` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_diagnostics_plugin_add_check(
    plugin: *mut tether_diagnostics_plugin,
    name: *const c_char,
    status: u32,
    value: *const c_char,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let plugin = unsafe { handle_mut(plugin) }?;
        // SAFETY: the caller's contract.
        let name = unsafe { str_arg(name) }?;
        // SAFETY: the caller's contract.
        let value = unsafe { str_arg(value) }?;
        let status = tether_status::from_u32(status).ok_or(tether_result::InvalidArgument)?;
        if name.is_empty() {
            return Err(tether_result::InvalidArgument);
        }
        plugin.report.checks.push(Check {
            name: name.to_owned(),
            status,
            value: (!value.is_empty()).then(|| value.to_owned()),
            details: None,
        });
        Ok(())
    })
}

/// The one-line summary operators see next to the plugin.
///
/// # Safety
/// `plugin` is the one passed to the running callback; `summary` NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_diagnostics_plugin_set_summary(
    plugin: *mut tether_diagnostics_plugin,
    summary: *const c_char,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let plugin = unsafe { handle_mut(plugin) }?;
        // SAFETY: the caller's contract.
        let summary = unsafe { str_arg(summary) }?;
        plugin.report.summary = (!summary.is_empty()).then(|| summary.to_owned());
        Ok(())
    })
}

/// The plugin's status (a `tether_status` number); by default the worst of its checks.
///
/// # Safety
/// `plugin` is the one passed to the running callback.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_diagnostics_plugin_set_status(
    plugin: *mut tether_diagnostics_plugin,
    status: u32,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let plugin = unsafe { handle_mut(plugin) }?;
        plugin.report.status =
            tether_status::from_u32(status).ok_or(tether_result::InvalidArgument)?;
        plugin.status_set = true;
        Ok(())
    })
}

#[cfg(test)]
pub(crate) fn plugin_for_test() -> tether_diagnostics_plugin {
    tether_diagnostics_plugin {
        report: PluginReport {
            id: "t".into(),
            name: "t".into(),
            status: Status::Ok,
            summary: None,
            checks: Vec::new(),
        },
        status_set: false,
    }
}
