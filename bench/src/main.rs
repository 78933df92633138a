//! `tether-bench`: the benchmark harness behind `scripts/bench`.
//!
//! `run` starts the real release binaries (relay, agent, optionally rathole) on loopback,
//! measures every figure against its baseline in the same run (direct access to the target,
//! alternating runs) and writes JSON, a Markdown table and SVG charts. `target` is the local
//! HTTP server the figures are measured against; `load-agents` opens many real, idle tunnels
//! from one process for the relay memory figure. Targets are reported, never asserted: `run`
//! fails only when the harness itself cannot do its job.

mod fleet;
mod load;
mod procs;
mod report;
mod scenarios;
mod svg;
mod target;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tether-bench",
    about = "Tether benchmark harness (see scripts/bench)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmarks and write results.json, results.md and charts into --out.
    Run(scenarios::RunArgs),
    /// Serve /small, /delay?ms=N and /bulk?bytes=N on 127.0.0.1:0 and print the address.
    Target,
    /// Open many idle tunnels (WebSocket, Basic auth, yamux, manifest) and hold them.
    LoadAgents(fleet::FleetArgs),
    /// Send GET requests back to back on keep-alive connections and print the figures: a
    /// steady load to profile the relay and agent under (`perf record -p ...`).
    Load(load::LoadArgs),
}

/// Where the harness finds the programs it starts.
#[derive(Debug, Clone, clap::Args)]
pub struct BinArgs {
    /// The `tether-relay` release binary.
    #[arg(long, default_value = "target/release/tether-relay")]
    pub relay: PathBuf,
    /// The `tether-agent` release binary.
    #[arg(long, default_value = "target/release/tether-agent")]
    pub agent: PathBuf,
    /// The agent built with the `min-size` profile, for the size and idle-memory figures
    /// (`scripts/bench` builds it static, for x86_64-unknown-linux-musl, as packages ship it).
    #[arg(long)]
    pub min_size_agent: Option<PathBuf>,
    /// `packaging/build.sh`'s output: when it holds `sizes.txt`, (g) lists every packaged
    /// target's binary.
    #[arg(long, default_value = "dist")]
    pub dist: PathBuf,
    /// `rathole`, the peer measured beside Tether in --full mode.
    #[arg(long)]
    pub rathole: Option<PathBuf>,
    /// The cargo profile `--relay` and `--agent` were built with; it only labels the figures
    /// (`scripts/bench` passes `dev` when CI runs the quick mode on debug binaries).
    #[arg(long, default_value = "release")]
    pub profile: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => rt.block_on(scenarios::run(args)),
        Command::Target => rt.block_on(target::serve_forever()),
        Command::LoadAgents(args) => rt.block_on(fleet::run(args)),
        Command::Load(args) => rt.block_on(load::run(args)),
    }
}
