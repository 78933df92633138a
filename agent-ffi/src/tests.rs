#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)]
//! Every exported function: NULL parameters and the panic boundary.

use std::ffi::{CStr, c_void};
use std::ptr::{null, null_mut};

use crate::agent::*;
use crate::config::*;
use crate::diagnostics::*;
use crate::test_hooks::FORCE_PANIC;
use crate::*;

const NULL: tether_result = tether_result::NullParameter;

fn panicking<T>(f: impl FnOnce() -> T) -> T {
    FORCE_PANIC.with(|p| p.set(true));
    let r = f();
    FORCE_PANIC.with(|p| p.set(false));
    r
}

unsafe extern "C" fn on_event(_: *mut c_void, _: *const tether_event) {}
unsafe extern "C" fn on_log(_: *mut c_void, _: crate::log::tether_log_level, _: *const i8) {}
unsafe extern "C" fn on_check(_: *mut c_void, _: *mut tether_diagnostics_plugin) {}

fn builder() -> *mut tether_config_builder {
    let mut b = null_mut();
    assert_eq!(
        unsafe { tether_config_builder_new(&mut b) },
        tether_result::Ok
    );
    b
}

fn config() -> *const tether_config {
    let b = builder();
    unsafe {
        tether_config_builder_set_url(b, c"ws://127.0.0.1:9/api/tunnel".as_ptr());
        tether_config_builder_set_key(b, c"key".as_ptr());
        tether_config_builder_set_secret(b, c"secret".as_ptr());
        tether_config_builder_set_diagnostics_dir(b, c"".as_ptr());
        tether_config_builder_set_proxy(b, c"".as_ptr());
    }
    let mut c = null();
    assert_eq!(
        unsafe { tether_config_builder_build(b, &mut c) },
        tether_result::Ok
    );
    c
}

fn services() -> *mut tether_services {
    let mut s = null_mut();
    assert_eq!(unsafe { tether_services_new(&mut s) }, tether_result::Ok);
    s
}

/// Every function taking a builder and something else, applied to `b`.
fn builder_calls(
    b: *mut tether_config_builder,
    svc: *const tether_services,
) -> Vec<(&'static str, tether_result)> {
    let s = c"x".as_ptr();
    unsafe {
        vec![
            ("set_url", tether_config_builder_set_url(b, s)),
            ("set_key", tether_config_builder_set_key(b, s)),
            ("set_secret", tether_config_builder_set_secret(b, s)),
            (
                "set_node_id",
                tether_config_builder_set_node_id(b, c"1".as_ptr()),
            ),
            ("set_ca_file", tether_config_builder_set_ca_file(b, s)),
            (
                "set_relay_pin",
                tether_config_builder_set_relay_pin(b, c"00".as_ptr()),
            ),
            (
                "set_static",
                tether_config_builder_set_static_services(b, c"".as_ptr()),
            ),
            (
                "set_diag_dir",
                tether_config_builder_set_diagnostics_dir(b, s),
            ),
            (
                "set_proxy",
                tether_config_builder_set_proxy(b, c"".as_ptr()),
            ),
            ("set_no_proxy", tether_config_builder_set_no_proxy(b, s)),
            ("set_terminal", tether_config_builder_set_terminal(b, false)),
            (
                "set_reconnect",
                tether_config_builder_set_reconnect_delay(b, 1, 2),
            ),
            ("set_services", tether_config_builder_set_services(b, svc)),
            (
                "set_event_cb",
                tether_config_builder_set_event_callback(b, Some(on_event), null_mut()),
            ),
            (
                "set_log_cb",
                tether_config_builder_set_log_callback(b, Some(on_log), null_mut(), 3),
            ),
            (
                "add_provider",
                tether_config_builder_add_diagnostics_provider(b, s, s, Some(on_check), null_mut()),
            ),
        ]
    }
}

#[test]
fn version_macros_match_the_crate_version() {
    let v = unsafe { CStr::from_ptr(tether_version()) }
        .to_str()
        .unwrap();
    assert_eq!(v, concat!("tether-agent-ffi/", env!("CARGO_PKG_VERSION")));
    let parts: Vec<u32> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        parts,
        [
            TETHER_VERSION_MAJOR,
            TETHER_VERSION_MINOR,
            TETHER_VERSION_PATCH
        ]
    );
}

#[test]
fn every_result_has_a_message_and_unknown_ones_say_so() {
    for n in 0..=8 {
        let m = unsafe { CStr::from_ptr(tether_error_message(n)) };
        assert_ne!(m.to_bytes(), b"unknown result code", "{n}");
    }
    let m = unsafe { CStr::from_ptr(tether_error_message(9999)) };
    assert_eq!(m.to_bytes(), b"unknown result code");
}

#[test]
fn static_string_functions_survive_a_panic() {
    let (v, m) = panicking(|| (tether_version(), tether_error_message(0)));
    assert_eq!(unsafe { CStr::from_ptr(v) }.to_bytes(), b"tether-agent-ffi");
    assert_eq!(
        unsafe { CStr::from_ptr(m) }.to_bytes(),
        b"panic while describing a result"
    );
}

#[test]
fn builder_functions_refuse_a_null_builder() {
    let svc = services();
    for (name, r) in builder_calls(null_mut(), svc) {
        assert_eq!(r, NULL, "{name}");
    }
    unsafe { tether_services_free(svc) };
    let mut c = null();
    assert_eq!(
        unsafe { tether_config_builder_build(null_mut(), &mut c) },
        NULL
    );
    assert!(c.is_null());
}

#[test]
fn builder_functions_refuse_null_arguments() {
    let b = builder();
    unsafe {
        assert_eq!(tether_config_builder_new(null_mut()), NULL);
        assert_eq!(tether_config_builder_set_url(b, null()), NULL);
        assert_eq!(tether_config_builder_set_key(b, null()), NULL);
        assert_eq!(tether_config_builder_set_secret(b, null()), NULL);
        assert_eq!(tether_config_builder_set_node_id(b, null()), NULL);
        assert_eq!(tether_config_builder_set_ca_file(b, null()), NULL);
        assert_eq!(tether_config_builder_set_relay_pin(b, null()), NULL);
        assert_eq!(tether_config_builder_set_static_services(b, null()), NULL);
        assert_eq!(tether_config_builder_set_diagnostics_dir(b, null()), NULL);
        assert_eq!(tether_config_builder_set_proxy(b, null()), NULL);
        assert_eq!(tether_config_builder_set_no_proxy(b, null()), NULL);
        assert_eq!(tether_config_builder_set_services(b, null()), NULL);
        assert_eq!(
            tether_config_builder_set_event_callback(b, None, null_mut()),
            NULL
        );
        assert_eq!(
            tether_config_builder_set_log_callback(b, None, null_mut(), 3),
            NULL
        );
        let s = c"x".as_ptr();
        for (id, name, cb) in [
            (null(), s, Some(on_check as _)),
            (s, null(), Some(on_check as _)),
            (s, s, None),
        ] {
            assert_eq!(
                tether_config_builder_add_diagnostics_provider(b, id, name, cb, null_mut()),
                NULL
            );
        }
        assert_eq!(tether_config_builder_build(b, null_mut()), NULL);
        // NULL is a no-op for the free functions
        assert_eq!(tether_config_builder_free(null_mut()), tether_result::Ok);
        assert_eq!(tether_config_free(null()), tether_result::Ok);
        assert_eq!(tether_services_free(null_mut()), tether_result::Ok);
        assert_eq!(tether_agent_free(null_mut()), tether_result::Ok);
        tether_config_builder_free(b);
    }
}

#[test]
fn builder_functions_turn_a_panic_into_a_result() {
    let b = builder();
    let svc = services();
    for (name, r) in panicking(|| builder_calls(b, svc)) {
        assert_eq!(r, tether_result::Panic, "{name}");
    }
    unsafe { tether_services_free(svc) };
    let mut out = null_mut();
    let mut c = null();
    panicking(|| unsafe {
        assert_eq!(tether_config_builder_new(&mut out), tether_result::Panic);
        assert_eq!(tether_config_builder_build(b, &mut c), tether_result::Panic);
        assert_eq!(tether_config_builder_free(b), tether_result::Panic);
        assert_eq!(tether_config_free(null()), tether_result::Panic);
    });
    assert!(
        out.is_null() && c.is_null(),
        "out-parameters written on a panic"
    );
    unsafe { tether_config_builder_free(b) };
}

#[test]
fn bad_values_are_invalid_arguments_and_leave_no_output() {
    let b = builder();
    let bad = tether_result::InvalidArgument;
    unsafe {
        assert_eq!(tether_config_builder_set_node_id(b, c"x1".as_ptr()), bad);
        assert_eq!(
            tether_config_builder_set_relay_pin(b, c"nope".as_ptr()),
            bad
        );
        assert_eq!(
            tether_config_builder_set_static_services(b, c"a".as_ptr()),
            bad
        );
        assert_eq!(tether_config_builder_set_reconnect_delay(b, 5, 1), bad);
        assert_eq!(
            tether_config_builder_set_log_callback(b, Some(on_log), null_mut(), 9),
            bad
        );
        let mut c = null();
        // no URL, key or secret: the builder is consumed and nothing written
        assert_eq!(
            tether_config_builder_build(b, &mut c),
            tether_result::InvalidConfig
        );
        assert!(c.is_null());
    }
}

#[test]
fn service_lists_check_names_targets_and_nulls() {
    let s = services();
    let (n, t, l) = (c"ui".as_ptr(), c"127.0.0.1:80".as_ptr(), c"".as_ptr());
    unsafe {
        assert_eq!(tether_services_new(null_mut()), NULL);
        assert_eq!(tether_services_add(null_mut(), n, t, l), NULL);
        assert_eq!(tether_services_add(s, null(), t, l), NULL);
        assert_eq!(tether_services_add(s, n, null(), l), NULL);
        assert_eq!(tether_services_add(s, n, t, null()), NULL);
        assert_eq!(tether_services_add(s, n, t, l), tether_result::Ok);
        assert_eq!(
            tether_services_add(s, n, t, l),
            tether_result::InvalidArgument
        );
        assert_eq!(
            tether_services_add(s, c"bad name".as_ptr(), t, l),
            tether_result::InvalidArgument
        );
        assert_eq!(
            tether_services_add(s, c"x".as_ptr(), c"nohost".as_ptr(), l),
            tether_result::InvalidArgument
        );
        assert_eq!((&(*s).services)["ui"].label, "ui");
        let mut out = null_mut();
        panicking(|| {
            assert_eq!(tether_services_new(&mut out), tether_result::Panic);
            assert_eq!(tether_services_add(s, n, t, l), tether_result::Panic);
            assert_eq!(tether_services_free(s), tether_result::Panic);
        });
        assert!(out.is_null());
        tether_services_free(s);
    }
}

#[test]
fn diagnostics_plugin_functions_check_nulls_panics_and_fill_the_report() {
    let mut plugin = tether_diagnostics_plugin_for_test();
    let p: *mut tether_diagnostics_plugin = &mut plugin;
    let s = c"x".as_ptr();
    unsafe {
        assert_eq!(
            tether_diagnostics_plugin_add_check(null_mut(), s, 0, s),
            NULL
        );
        assert_eq!(tether_diagnostics_plugin_add_check(p, null(), 0, s), NULL);
        assert_eq!(tether_diagnostics_plugin_add_check(p, s, 0, null()), NULL);
        assert_eq!(tether_diagnostics_plugin_set_summary(null_mut(), s), NULL);
        assert_eq!(tether_diagnostics_plugin_set_summary(p, null()), NULL);
        assert_eq!(tether_diagnostics_plugin_set_status(null_mut(), 0), NULL);
        assert_eq!(
            tether_diagnostics_plugin_add_check(p, s, 99, s),
            tether_result::InvalidArgument
        );
        panicking(|| {
            assert_eq!(
                tether_diagnostics_plugin_add_check(p, s, 0, s),
                tether_result::Panic
            );
            assert_eq!(
                tether_diagnostics_plugin_set_summary(p, s),
                tether_result::Panic
            );
            assert_eq!(
                tether_diagnostics_plugin_set_status(p, 0),
                tether_result::Panic
            );
        });
    }
    let report = run_provider(|p| unsafe {
        tether_diagnostics_plugin_add_check(p, c"a".as_ptr(), 0, c"".as_ptr());
        tether_diagnostics_plugin_add_check(p, c"b".as_ptr(), 1, c"7".as_ptr());
        tether_diagnostics_plugin_set_summary(p, c"sum".as_ptr());
    });
    assert_eq!(report.status, agent_core::document::Status::Warning);
    assert_eq!(report.summary.as_deref(), Some("sum"));
    assert_eq!(report.checks[1].value.as_deref(), Some("7"));
}

fn tether_diagnostics_plugin_for_test() -> tether_diagnostics_plugin {
    crate::diagnostics::plugin_for_test()
}

/// Runs a provider whose callback calls `fill`.
fn run_provider(fill: fn(*mut tether_diagnostics_plugin)) -> agent_core::document::PluginReport {
    unsafe extern "C" fn trampoline(userdata: *mut c_void, p: *mut tether_diagnostics_plugin) {
        let fill: fn(*mut tether_diagnostics_plugin) = unsafe { std::mem::transmute(userdata) };
        fill(p);
    }
    let provider = crate::diagnostics::provider(
        "id".into(),
        "Name".into(),
        trampoline,
        UserData(fill as *mut c_void),
    );
    (provider.run)()
}

#[test]
fn agent_functions_refuse_nulls_and_turn_panics_into_results() {
    let config = config();
    let svc = services();
    let mut agent = null_mut();
    let mut state = tether_state::Failed;
    unsafe {
        assert_eq!(tether_agent_start(null(), &mut agent), NULL);
        assert_eq!(tether_agent_start(config, null_mut()), NULL);
        assert_eq!(tether_agent_state(null(), &mut state), NULL);
        assert_eq!(tether_agent_stop(null()), NULL);
        assert_eq!(tether_agent_set_services(null(), svc), NULL);
        assert_eq!(tether_agent_refresh_diagnostics(null()), NULL);
        panicking(|| {
            assert_eq!(tether_agent_start(config, &mut agent), tether_result::Panic);
        });
        assert!(agent.is_null());
        assert_eq!(tether_agent_start(config, &mut agent), tether_result::Ok);
        assert_eq!(tether_agent_state(agent, null_mut()), NULL);
        assert_eq!(tether_agent_set_services(agent, null()), NULL);
        panicking(|| {
            assert_eq!(tether_agent_state(agent, &mut state), tether_result::Panic);
            assert_eq!(tether_agent_stop(agent), tether_result::Panic);
            assert_eq!(tether_agent_set_services(agent, svc), tether_result::Panic);
            assert_eq!(
                tether_agent_refresh_diagnostics(agent),
                tether_result::Panic
            );
            assert_eq!(tether_agent_free(agent), tether_result::Panic);
        });
        assert_eq!(state, tether_state::Failed, "written on a panic");
        assert_eq!(tether_agent_set_services(agent, svc), tether_result::Ok);
        assert_eq!(tether_agent_refresh_diagnostics(agent), tether_result::Ok);
        assert_eq!(tether_agent_state(agent, &mut state), tether_result::Ok);
        assert!(matches!(
            state,
            tether_state::Connecting | tether_state::BackingOff
        ));
        assert_eq!(tether_agent_stop(agent), tether_result::Ok);
        assert_eq!(tether_agent_state(agent, &mut state), tether_result::Ok);
        assert_eq!(state, tether_state::Stopped);
        assert_eq!(tether_agent_free(agent), tether_result::Ok);
        tether_services_free(svc);
        tether_config_free(config);
    }
}
