//! `tether-relay`: `serve` runs the relay; `system`, `operator` and `token` administer the same
//! database; `demo` starts a relay with a local agent and a demo web service.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tether_relay::admin::AdminCommand;
use tether_relay::config::ServeConfig;
use tether_relay::crypto::DataKey;
use tether_relay::store::Store;

#[derive(Parser)]
#[command(
    name = "tether-relay",
    version,
    about = "Tether relay: agent tunnels, sessions and the operator API"
)]
struct Cli {
    /// Database URL: sqlite://PATH (created if missing) or postgres://...
    #[arg(
        long,
        env = "TETHER_DATABASE",
        default_value = "sqlite://./tether.db",
        global = true
    )]
    database: String,
    /// File with the 32-byte key that encrypts stored credentials (created if missing).
    /// Default: beside an SQLite database, else ./tether-relay.key.
    #[arg(long, env = "TETHER_DATA_KEY_FILE", global = true)]
    data_key_file: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax), e.g. info or tether_relay=debug.
    #[arg(long, env = "TETHER_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay server.
    Serve(Box<ServeConfig>),
    /// Start a demo: relay on a fresh SQLite store plus a local agent and demo web service.
    Demo(tether_relay::demo::DemoArgs),
    #[command(flatten)]
    Admin(AdminCommand),
}

fn data_key_path(cli: &Cli) -> PathBuf {
    if let Some(p) = &cli.data_key_file {
        return p.clone();
    }
    let sqlite_path = cli
        .database
        .strip_prefix("sqlite://")
        .or_else(|| cli.database.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p))
        .filter(|p| !p.is_empty() && !p.contains(":memory:"));
    match sqlite_path {
        Some(p) => PathBuf::from(format!("{p}.key")),
        None => Path::new("tether-relay.key").to_path_buf(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Cmd::Demo(args) = cli.cmd {
        tether_relay::demo::run(args, shutdown_signal()).await?;
        return Ok(());
    }
    let key_path = data_key_path(&cli);
    let data_key = DataKey::load_or_create(&key_path)
        .with_context(|| format!("--data-key-file {}", key_path.display()))?;
    match cli.cmd {
        Cmd::Serve(config) => {
            tether_relay::serve(&cli.database, data_key, *config, shutdown_signal()).await?;
        }
        Cmd::Demo(_) => {}
        Cmd::Admin(cmd) => {
            let store = Store::connect(&cli.database, data_key)
                .await
                .with_context(|| "--database".to_string())?;
            let mut out = std::io::stdout().lock();
            tether_relay::admin::run(cmd, &store, &mut out).await?;
        }
    }
    Ok(())
}

/// glibc's malloc: at most this many arenas, unless `MALLOC_ARENA_MAX` says otherwise.
///
/// By default glibc gives each thread that contends its own arena, up to 8 per core; the
/// short-lived buffers of every tunnel handshake and request then scatter across them, and
/// the freed holes between long-lived tunnel state are never returned to the system. On this
/// relay's load (thousands of idle tunnels, a few busy threads) one arena keeps the resident
/// memory per idle tunnel ~4 KiB lower (docs/benchmarks); small allocations still go through
/// each thread's lock-free cache. musl builds have their own allocator and are unaffected.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: i32 = 1;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the relay's one unsafe call: a malloc setting, see above
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes a malloc parameter; it is called before any thread
        // but this one exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    limit_malloc_arenas();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether-relay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
