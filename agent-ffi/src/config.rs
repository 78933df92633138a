//! `tether_config_builder`, `tether_config` and `tether_services`.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_core::agent::diagnostics::Provider;
use agent_core::agent::{AgentConfig, ProxySettings, parse_relay_pin};
use agent_core::document::ServiceInfo;
use agent_core::policy;
use agent_core::services::parse_static_services;

use crate::diagnostics::{self, tether_diagnostics_callback};
use crate::log::{LogSink, tether_log_callback, tether_log_level};
use crate::{UserData, boundary, handle, handle_mut, out_arg, str_arg, tether_result};

/// Called with every [`crate::agent::tether_event`], on a library thread.
pub type tether_event_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, event: *const crate::agent::tether_event)>;

/// Collects the settings of an agent; consumed by `tether_config_builder_build`.
pub struct tether_config_builder {
    config: Config,
}

/// An immutable agent configuration; any number of agents may start from it.
pub struct tether_config {
    pub(crate) config: Config,
}

/// A list of services the host serves itself (name, target, label).
#[derive(Default)]
pub struct tether_services {
    pub(crate) services: BTreeMap<String, ServiceInfo>,
}

#[derive(Clone)]
pub(crate) struct Config {
    pub agent: AgentConfig,
    pub services: BTreeMap<String, ServiceInfo>,
    pub events: Option<(
        unsafe extern "C" fn(*mut c_void, *const crate::agent::tether_event),
        UserData,
    )>,
    pub log: Option<Arc<LogSink>>,
}

/// A new builder with the agent's defaults (proxies from the environment, diagnostics plugins
/// from `/usr/share/tether/diagnostics.d`); free it with `tether_config_builder_free` unless
/// it is built.
///
/// # Safety
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_new(
    out: *mut *mut tether_config_builder,
) -> tether_result {
    boundary(|| {
        out_arg(out)?;
        let builder = Box::new(tether_config_builder {
            config: Config {
                agent: AgentConfig::new("", "", ""),
                services: BTreeMap::new(),
                events: None,
                log: None,
            },
        });
        // SAFETY: checked not NULL; the caller promises it is writable.
        unsafe { out.write(Box::into_raw(builder)) };
        Ok(())
    })
}

/// Frees a builder that was not built; NULL is allowed and does nothing.
///
/// # Safety
/// `builder` is NULL or a builder from `tether_config_builder_new` not yet freed or built.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_free(
    builder: *mut tether_config_builder,
) -> tether_result {
    boundary(|| {
        if !builder.is_null() {
            // SAFETY: the caller gives back ownership of a builder made by Box::into_raw.
            drop(unsafe { Box::from_raw(builder) });
        }
        Ok(())
    })
}

/// Applies `f` to the builder's settings after the NULL checks.
///
/// # Safety
/// `builder` is NULL or a live builder; `value` is NULL or a NUL-terminated string.
unsafe fn set(
    builder: *mut tether_config_builder,
    value: *const c_char,
    f: impl FnOnce(&mut Config, &str) -> Result<(), tether_result>,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let builder = unsafe { handle_mut(builder) }?;
        // SAFETY: the caller's contract.
        let value = unsafe { str_arg(value) }?;
        f(&mut builder.config, value)
    })
}

/// The relay's tunnel URL, `wss://host/support/api/tunnel` (`ws://` for development).
///
/// # Safety
/// `builder` is a live builder, `url` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_url(
    builder: *mut tether_config_builder,
    url: *const c_char,
) -> tether_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        set(builder, url, |c, v| {
            c.agent.url = v.to_owned();
            Ok(())
        })
    }
}

/// The system key.
///
/// # Safety
/// `builder` is a live builder, `key` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_key(
    builder: *mut tether_config_builder,
    key: *const c_char,
) -> tether_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        set(builder, key, |c, v| {
            c.agent.key = v.to_owned();
            Ok(())
        })
    }
}

/// The system secret (never logged).
///
/// # Safety
/// `builder` is a live builder, `secret` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_secret(
    builder: *mut tether_config_builder,
    secret: *const c_char,
) -> tether_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        set(builder, secret, |c, v| {
            c.agent.secret = v.into();
            Ok(())
        })
    }
}

/// The cluster node id (1 to 10 digits).
///
/// # Safety
/// `builder` is a live builder, `node_id` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_node_id(
    builder: *mut tether_config_builder,
    node_id: *const c_char,
) -> tether_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        set(builder, node_id, |c, v| {
            policy::validate_node_id(v).map_err(|_| tether_result::InvalidArgument)?;
            c.agent.node_id = Some(v.to_owned());
            Ok(())
        })
    }
}

/// A PEM file of extra trusted roots for the relay certificate.
///
/// # Safety
/// `builder` is a live builder, `path` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_ca_file(
    builder: *mut tether_config_builder,
    path: *const c_char,
) -> tether_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        set(builder, path, |c, v| {
            c.agent.ca_file = Some(PathBuf::from(v));
            Ok(())
        })
    }
}

/// The SHA-256 of the relay certificate's public key (64 hex digits or base64, optionally
/// `sha256/`-prefixed); when set the chain need not verify but the key must match.
///
/// # Safety
/// `builder` is a live builder, `pin` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_relay_pin(
    builder: *mut tether_config_builder,
    pin: *const c_char,
) -> tether_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        set(builder, pin, |c, v| {
            c.agent.relay_pin =
                Some(parse_relay_pin(v).map_err(|_| tether_result::InvalidArgument)?);
            Ok(())
        })
    }
}

/// Static services in the agent's syntax, `name=host:port[:host=vhost][:tls],...`.
///
/// # Safety
/// `builder` is a live builder, `spec` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_static_services(
    builder: *mut tether_config_builder,
    spec: *const c_char,
) -> tether_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        set(builder, spec, |c, v| {
            c.agent.static_services =
                parse_static_services(v).map_err(|_| tether_result::InvalidArgument)?;
            Ok(())
        })
    }
}

/// The directory of diagnostics plugins; `""` runs only the built-in checks and the host's
/// providers.
///
/// # Safety
/// `builder` is a live builder, `dir` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_diagnostics_dir(
    builder: *mut tether_config_builder,
    dir: *const c_char,
) -> tether_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        set(builder, dir, |c, v| {
            c.agent.diagnostics.dir = (!v.is_empty()).then(|| PathBuf::from(v));
            Ok(())
        })
    }
}

/// An HTTP CONNECT proxy for the tunnel, `http://[user:pass@]host[:port]` (both `ws://` and
/// `wss://` relays); `""` means none. The default is the environment's `HTTPS_PROXY` and
/// `HTTP_PROXY`.
///
/// # Safety
/// `builder` is a live builder, `proxy` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_proxy(
    builder: *mut tether_config_builder,
    proxy: *const c_char,
) -> tether_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        set(builder, proxy, |c, v| {
            let proxy = (!v.is_empty()).then(|| v.to_owned());
            c.agent.proxy = ProxySettings {
                https_proxy: proxy.clone(),
                http_proxy: proxy,
                no_proxy: c.agent.proxy.no_proxy.take(),
            };
            Ok(())
        })
    }
}

/// Hosts reached without the proxy (`NO_PROXY` syntax); `""` means none.
///
/// # Safety
/// `builder` is a live builder, `hosts` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_no_proxy(
    builder: *mut tether_config_builder,
    hosts: *const c_char,
) -> tether_result {
    // SAFETY: forwarded caller contract.
    unsafe {
        set(builder, hosts, |c, v| {
            c.agent.proxy.no_proxy = (!v.is_empty()).then(|| v.to_owned());
            Ok(())
        })
    }
}

/// Whether operators may open a terminal (a login shell of the library's user). Enabling it in
/// a build without the `terminal` feature is INVALID_ARGUMENT.
///
/// # Safety
/// `builder` is a live builder.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_terminal(
    builder: *mut tether_config_builder,
    enabled: bool,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let builder = unsafe { handle_mut(builder) }?;
        if enabled && !cfg!(feature = "terminal") {
            return Err(tether_result::InvalidArgument);
        }
        builder.config.agent.terminal.enabled = enabled;
        Ok(())
    })
}

/// The first reconnect delay and its cap, in milliseconds (defaults 5000 and 300000).
///
/// # Safety
/// `builder` is a live builder.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_reconnect_delay(
    builder: *mut tether_config_builder,
    first_ms: u64,
    max_ms: u64,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let builder = unsafe { handle_mut(builder) }?;
        if first_ms == 0 || max_ms < first_ms {
            return Err(tether_result::InvalidArgument);
        }
        builder.config.agent.reconnect_delay = Duration::from_millis(first_ms);
        builder.config.agent.max_reconnect_delay = Duration::from_millis(max_ms);
        Ok(())
    })
}

/// The services the host serves itself, published from the first connection on (a copy is
/// taken; `tether_agent_set_services` replaces them later).
///
/// # Safety
/// `builder` is a live builder, `services` a live service list.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_services(
    builder: *mut tether_config_builder,
    services: *const tether_services,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let builder = unsafe { handle_mut(builder) }?;
        // SAFETY: the caller's contract.
        let services = unsafe { handle(services) }?;
        builder.config.services = services.services.clone();
        Ok(())
    })
}

/// Calls `callback(userdata, event)` on every state change and operator action, on a library
/// thread; `event` and its strings live only during the call.
///
/// # Safety
/// `builder` is a live builder; `userdata` may be used from any thread until every agent
/// started from this configuration is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_event_callback(
    builder: *mut tether_config_builder,
    callback: tether_event_callback,
    userdata: *mut c_void,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let builder = unsafe { handle_mut(builder) }?;
        let callback = callback.ok_or(tether_result::NullParameter)?;
        builder.config.events = Some((callback, UserData(userdata)));
        Ok(())
    })
}

/// Calls `callback(userdata, level, line)` with every log line of the agent at `max_level`
/// or more severe (a `tether_log_level` number), on a library thread; `line` lives only
/// during the call. Without it the agent logs nothing.
///
/// # Safety
/// `builder` is a live builder; `userdata` may be used from any thread until every agent
/// started from this configuration is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_set_log_callback(
    builder: *mut tether_config_builder,
    callback: tether_log_callback,
    userdata: *mut c_void,
    max_level: u32,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let builder = unsafe { handle_mut(builder) }?;
        let callback = callback.ok_or(tether_result::NullParameter)?;
        let level = tether_log_level::from_u32(max_level).ok_or(tether_result::InvalidArgument)?;
        builder.config.log = Some(Arc::new(LogSink {
            callback,
            userdata: UserData(userdata),
            max_level: level,
        }));
        Ok(())
    })
}

/// Adds a check of the host's own to every health report: at each collection `callback` is
/// called on a library thread with a `tether_diagnostics_plugin` (id `id`, shown as `name`)
/// to fill, within the plugin timeout (10 s).
///
/// # Safety
/// `builder` is a live builder, `id` and `name` NUL-terminated strings; `userdata` may be used
/// from any thread until every agent started from this configuration is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_add_diagnostics_provider(
    builder: *mut tether_config_builder,
    id: *const c_char,
    name: *const c_char,
    callback: tether_diagnostics_callback,
    userdata: *mut c_void,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let builder = unsafe { handle_mut(builder) }?;
        // SAFETY: the caller's contract.
        let id = unsafe { str_arg(id) }?;
        // SAFETY: the caller's contract.
        let name = unsafe { str_arg(name) }?;
        let callback = callback.ok_or(tether_result::NullParameter)?;
        if id.is_empty() {
            return Err(tether_result::InvalidArgument);
        }
        let provider: Provider =
            diagnostics::provider(id.to_owned(), name.to_owned(), callback, UserData(userdata));
        builder.config.agent.diagnostics_providers.push(provider);
        Ok(())
    })
}

/// Checks the settings and turns the builder into a configuration. The builder is consumed
/// whatever the result (unless `builder` or `out` is NULL); `*out` is written on success.
///
/// # Safety
/// `builder` is a live builder, `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_builder_build(
    builder: *mut tether_config_builder,
    out: *mut *const tether_config,
) -> tether_result {
    boundary(|| {
        if builder.is_null() {
            return Err(tether_result::NullParameter);
        }
        out_arg(out)?;
        // SAFETY: not NULL; the caller gives back ownership of a builder from Box::into_raw.
        let builder = unsafe { Box::from_raw(builder) };
        builder
            .config
            .agent
            .validate()
            .map_err(|_| tether_result::InvalidConfig)?;
        let config = Box::new(tether_config {
            config: builder.config,
        });
        // SAFETY: checked not NULL; the caller promises it is writable.
        unsafe { out.write(Box::into_raw(config)) };
        Ok(())
    })
}

/// Frees a configuration; agents started from it keep running. NULL does nothing.
///
/// # Safety
/// `config` is NULL or a configuration from `tether_config_builder_build` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_config_free(config: *const tether_config) -> tether_result {
    boundary(|| {
        if !config.is_null() {
            // SAFETY: the caller gives back ownership of a configuration from Box::into_raw.
            drop(unsafe { Box::from_raw(config.cast_mut()) });
        }
        Ok(())
    })
}

/// A new, empty service list.
///
/// # Safety
/// `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_services_new(out: *mut *mut tether_services) -> tether_result {
    boundary(|| {
        out_arg(out)?;
        let services = Box::<tether_services>::default();
        // SAFETY: checked not NULL; the caller promises it is writable.
        unsafe { out.write(Box::into_raw(services)) };
        Ok(())
    })
}

/// Adds service `name` (letters, digits, `-_.`) reached at `target` (`host:port`), shown to
/// operators as `label` (`""`: the name). A name already in the list is INVALID_ARGUMENT.
///
/// # Safety
/// `services` is a live list; `name`, `target` and `label` NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_services_add(
    services: *mut tether_services,
    name: *const c_char,
    target: *const c_char,
    label: *const c_char,
) -> tether_result {
    boundary(|| {
        // SAFETY: the caller's contract.
        let services = unsafe { handle_mut(services) }?;
        // SAFETY: the caller's contract.
        let name = unsafe { str_arg(name) }?;
        // SAFETY: the caller's contract.
        let target = unsafe { str_arg(target) }?;
        // SAFETY: the caller's contract.
        let label = unsafe { str_arg(label) }?;
        policy::validate_connect_name(name).map_err(|_| tether_result::InvalidArgument)?;
        policy::validate_target_syntax(target).map_err(|_| tether_result::InvalidArgument)?;
        if services.services.contains_key(name) {
            return Err(tether_result::InvalidArgument);
        }
        let info = ServiceInfo {
            target: target.to_owned(),
            label: if label.is_empty() { name } else { label }.to_owned(),
            ..ServiceInfo::default()
        };
        services.services.insert(name.to_owned(), info);
        Ok(())
    })
}

/// Frees a service list; NULL does nothing.
///
/// # Safety
/// `services` is NULL or a list from `tether_services_new` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tether_services_free(services: *mut tether_services) -> tether_result {
    boundary(|| {
        if !services.is_null() {
            // SAFETY: the caller gives back ownership of a list made by Box::into_raw.
            drop(unsafe { Box::from_raw(services) });
        }
        Ok(())
    })
}
