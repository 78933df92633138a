use super::*;

use std::time::Duration;

const BASE: [&str; 7] = [
    "tether-agent",
    "-u",
    "wss://relay.example/support/api/tunnel",
    "-k",
    "NETH-KEY",
    "-s",
    "my_pub.secret",
];

fn parse(extra: &[&str]) -> Cli {
    let args: Vec<&str> = BASE.iter().chain(extra).copied().collect();
    Cli::try_parse_from(args).unwrap()
}

fn config(extra: &[&str]) -> Result<AgentConfig, FlagError> {
    build_config(&parse(extra), None, ProxySettings::none())
}

fn config_of(extra: &[&str]) -> AgentConfig {
    config(extra).unwrap()
}

#[test]
fn short_flags_fill_url_key_secret_and_node_id() {
    let config = config(&["-n", "3"]).unwrap();
    assert_eq!(config.url, "wss://relay.example/support/api/tunnel");
    assert_eq!(config.key, "NETH-KEY");
    assert_eq!(config.secret.expose(), "my_pub.secret");
    assert_eq!(config.node_id.as_deref(), Some("3"));
    // the defaults of the reference
    assert_eq!(config.reconnect_delay, Duration::from_secs(5));
    assert_eq!(config.max_reconnect_delay, Duration::from_secs(300));
    assert!(!config.tls_insecure);
    // the secret never shows in debug output
    assert!(!format!("{config:?}").contains("my_pub.secret"));
    assert!(!format!("{:?}", parse(&[])).contains("my_pub.secret"));
}

#[test]
fn long_flags_with_equals_are_accepted() {
    let cli = Cli::try_parse_from([
        "tether-agent",
        "--url=ws://127.0.0.1:8080/api/tunnel",
        "--key=K",
        "--secret=S",
        "--node-id=12",
        "--static-services=ui=127.0.0.1:9090,phone=192.168.1.100:443:host=phone.lan:tls",
        "--exclude=*_loki,*-janus",
    ])
    .unwrap();
    let config = build_config(&cli, None, ProxySettings::none()).unwrap();
    assert_eq!(config.node_id.as_deref(), Some("12"));
    let phone = &config.static_services["phone"];
    assert_eq!(phone.target, "192.168.1.100:443");
    assert_eq!(phone.host, "phone.lan");
    assert!(phone.tls);
    assert!(config.exclude.is_excluded("metrics1_loki"));
    assert!(!config.exclude.is_excluded("ui"));
}

#[test]
fn go_durations_are_parsed() {
    let config = config(&[
        "--reconnect-delay",
        "300ms",
        "--max-reconnect-delay",
        "1m30s",
    ])
    .unwrap();
    assert_eq!(config.reconnect_delay, Duration::from_millis(300));
    assert_eq!(config.max_reconnect_delay, Duration::from_secs(90));
    let fractional = config_of(&["--reconnect-delay=1.5s", "--max-reconnect-delay=1h"]);
    assert_eq!(fractional.reconnect_delay, Duration::from_millis(1500));
    assert_eq!(fractional.max_reconnect_delay, Duration::from_secs(3600));
}

#[test]
fn bad_values_name_their_flag() {
    let e = config(&["--reconnect-delay", "5 seconds"]).unwrap_err();
    assert_eq!(e.flag, "--reconnect-delay");
    let e = config(&["--static-services", "x"]).unwrap_err();
    assert!(
        e.to_string().starts_with("--static-services: ") && e.to_string().contains("\"x\""),
        "{e}"
    );
    let e = config(&["--exclude", "[abc"]).unwrap_err();
    assert_eq!(e.flag, "--exclude");
    let e = config(&["-n", "node-1"]).unwrap_err();
    assert_eq!(e.flag, "--node-id");
    let e = config(&["--relay-pin", "abcd"]).unwrap_err();
    assert_eq!(e.flag, "--relay-pin");
    let e = config(&["--reconnect-delay", "10m", "--max-reconnect-delay", "5m"]).unwrap_err();
    assert_eq!(e.flag, "--max-reconnect-delay");
    let cli = Cli::try_parse_from([
        "tether-agent",
        "-u",
        "https://relay/x",
        "-k",
        "K",
        "-s",
        "S",
    ])
    .unwrap();
    let e = build_config(&cli, None, ProxySettings::none()).unwrap_err();
    assert_eq!(e.flag, "--url");
}

#[test]
fn missing_url_key_secret_is_a_usage_error_naming_them() {
    let e = Cli::try_parse_from(["tether-agent"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    assert_eq!(e.exit_code(), 2);
    let text = e.to_string();
    for flag in ["--url", "--key", "--secret"] {
        assert!(text.contains(flag), "{text}");
    }
}

#[test]
fn reference_flags_not_implemented_yet_are_accepted() {
    let cli = parse(&[
        "-r",
        "127.0.0.1:6379",
        "--discovery-interval",
        "5m",
        "--diagnostics-dir",
        "/usr/share/my/diagnostics.d",
        "--diagnostics-plugin-timeout",
        "10s",
        "--diagnostics-total-timeout=30s",
        "--users-dir",
        "/usr/share/my/users.d",
        "--users-plugin-timeout",
        "15s",
        "--users-total-timeout",
        "60s",
        "--users-state-file",
        "/var/run/my-support-users.json",
    ]);
    // users.d plugins are the only reference feature left out.
    assert_eq!(
        cli.later.given(),
        vec![
            "--users-dir",
            "--users-plugin-timeout",
            "--users-total-timeout"
        ]
    );
    assert_eq!(cli.discovery.redis_addr, "127.0.0.1:6379");
    assert!(config(&["--redis-addr", "127.0.0.1:6379"]).is_ok());
}

#[test]
fn tls_insecure_as_flag_with_value_or_from_env() {
    assert!(config(&["--tls-insecure"]).unwrap().tls_insecure);
    assert!(config(&["--tls-insecure=true"]).unwrap().tls_insecure);
    assert!(!config(&["--tls-insecure=false"]).unwrap().tls_insecure);
    assert_eq!(
        config(&["--tls-insecure=maybe"]).unwrap_err().flag,
        "--tls-insecure"
    );
    let cli = parse(&[]);
    let with_env = |v| build_config(&cli, Some(v), ProxySettings::none()).unwrap();
    assert!(with_env("true").tls_insecure);
    // the reference only honours the exact value "true"
    assert!(!with_env("1").tls_insecure);
    assert!(!with_env("TRUE").tls_insecure);
}

#[test]
fn relay_pin_in_hex_or_base64() {
    let hex_pin = "ab".repeat(32);
    let config_hex = config(&["--relay-pin", &hex_pin]).unwrap();
    assert_eq!(config_hex.relay_pin, Some([0xab; 32]));
    let b64 = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=";
    let config_b64 = config(&["--relay-pin", b64]).unwrap();
    assert_eq!(config_b64.relay_pin, Some([0xab; 32]));
}

/// Name of the environment marker for [`env_child`].
const CHILD_MARKER: &str = "TETHER_AGENT_CLI_TEST_CHILD";

#[test]
fn env_fallbacks_fill_every_setting() {
    // Setting variables in this process would race with the other tests: run the check in
    // a child process of this test binary instead.
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new(exe)
        .args([
            "--exact",
            "tests::env_child",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD_MARKER, "1")
        .env("SUPPORT_URL", "wss://env.example/support/api/tunnel")
        .env("SYSTEM_KEY", "ENV-KEY")
        .env("SYSTEM_SECRET", "env-secret")
        .env("NODE_ID", "7")
        .env("STATIC_SERVICES", "ui=127.0.0.1:9090")
        .env("EXCLUDE_PATTERNS", "*_loki")
        .env("RECONNECT_DELAY", "250ms")
        .env("MAX_RECONNECT_DELAY", "2m")
        .env("TLS_INSECURE", "true")
        .env("REDIS_ADDR", "10.0.0.1:6379")
        .env("DISCOVERY_INTERVAL", "90s")
        .env("TETHER_PLATFORM", "openwrt")
        .env("TETHER_NO_SUPPORT_USERS", "true")
        .env("USERS_STATE_FILE", "/var/run/x.json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "run by env_fallbacks_fill_every_setting in a child process"]
fn env_child() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let cli = Cli::try_parse_from(["tether-agent"]).unwrap();
    let tls_env = std::env::var("TLS_INSECURE").ok();
    let config = build_config(&cli, tls_env.as_deref(), ProxySettings::none()).unwrap();
    assert_eq!(config.url, "wss://env.example/support/api/tunnel");
    assert_eq!(config.key, "ENV-KEY");
    assert_eq!(config.secret.expose(), "env-secret");
    assert_eq!(config.node_id.as_deref(), Some("7"));
    assert!(config.static_services.contains_key("ui"));
    assert!(config.exclude.is_excluded("x_loki"));
    assert_eq!(config.reconnect_delay, Duration::from_millis(250));
    assert_eq!(config.max_reconnect_delay, Duration::from_secs(120));
    assert!(config.tls_insecure);
    assert!(cli.later.given().is_empty());
    assert_eq!(cli.discovery.redis_addr, "10.0.0.1:6379");
    assert_eq!(cli.discovery.discovery_interval, "90s");
    assert_eq!(cli.discovery.platform, "openwrt");
    assert_eq!(
        cli.users.users_state_file,
        std::path::Path::new("/var/run/x.json")
    );
    assert!(cli.users.no_support_users);
    // a flag wins over its variable
    let cli = Cli::try_parse_from(["tether-agent", "-k", "FLAG-KEY"]).unwrap();
    assert_eq!(cli.key, "FLAG-KEY");
}

#[cfg(feature = "pty")]
#[test]
fn terminal_flags_switch_it_off_or_name_its_user() {
    let on = config_of(&[]);
    assert!(on.terminal.enabled);
    assert_eq!(on.terminal.user, None);
    let off = config_of(&["--no-terminal", "--terminal-user", "no-such-user-here"]);
    assert!(!off.terminal.enabled, "a disabled terminal needs no user");
    let e = config(&["--terminal-user", "no-such-user-here"]).unwrap_err();
    assert_eq!(e.flag, "--terminal-user");
    assert!(e.message.contains("unknown user"), "{e}");
}

#[cfg(not(feature = "pty"))]
#[test]
fn a_build_without_pty_refuses_terminals_and_still_starts() {
    let c = config_of(&["--terminal-user", "no-such-user-here"]);
    assert!(!c.terminal.enabled);
}

#[test]
fn diagnostics_flags_become_the_runtime_settings() {
    let c = config_of(&[
        "--diagnostics-dir",
        "/usr/share/my/diagnostics.d",
        "--diagnostics-plugin-timeout",
        "2s",
        "--diagnostics-total-timeout=7s",
        "--diagnostics-interval",
        "0",
        "--diagnostics-thresholds",
        "ram=80:90",
    ]);
    let d = &c.diagnostics;
    assert_eq!(
        d.dir.as_deref(),
        Some(std::path::Path::new("/usr/share/my/diagnostics.d"))
    );
    assert_eq!(d.plugin_timeout, Duration::from_secs(2));
    assert_eq!(d.total_timeout, Duration::from_secs(7));
    assert!(d.interval.is_zero());
    assert_eq!(d.thresholds.ram_critical, 90.0);
    let defaults = config_of(&[]).diagnostics;
    assert_eq!(
        defaults.dir.as_deref(),
        Some(std::path::Path::new("/usr/share/tether/diagnostics.d"))
    );
    assert_eq!(defaults.interval, Duration::from_secs(300));
    let e = config(&["--diagnostics-plugin-timeout", "0"]).unwrap_err();
    assert_eq!(e.flag, "--diagnostics-plugin-timeout");
    let e = config(&["--diagnostics-thresholds", "ram=99:1"]).unwrap_err();
    assert_eq!(e.flag, "--diagnostics-thresholds");
}

#[test]
fn rust_log_sets_the_default_level_and_per_target_levels() {
    use tracing::Level;
    let unset = log_filter(None);
    assert!(unset.would_enable("agent_core::agent", &Level::INFO));
    assert!(!unset.would_enable("agent_core::agent", &Level::DEBUG));
    assert!(log_filter(Some("debug")).would_enable("rustls::client", &Level::DEBUG));
    let mixed = log_filter(Some("warn,agent_core::agent=trace"));
    assert!(mixed.would_enable("agent_core::agent::dial", &Level::TRACE));
    assert!(!mixed.would_enable("agent_core::transport", &Level::INFO));
    assert!(mixed.would_enable("yamux", &Level::WARN));
    assert!(!log_filter(Some("off")).would_enable("tether_agent", &Level::ERROR));
}

#[test]
fn empty_or_unreadable_rust_log_means_info() {
    use tracing::Level;
    for value in ["", " ", "agent_core=loud"] {
        let filter = log_filter(Some(value));
        assert!(
            filter.would_enable("tether_agent", &Level::INFO),
            "{value:?}"
        );
        assert!(
            !filter.would_enable("tether_agent", &Level::DEBUG),
            "{value:?}"
        );
    }
}
