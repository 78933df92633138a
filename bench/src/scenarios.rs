//! `run`: every scenario of the benchmark, each figure measured beside its baseline in the same
//! run (direct access to the same target, and rathole in --full when installed), alternating
//! the order of the contenders from one run to the next.
//!
//! (a) bulk download, (b) small-request latency and rate, (c) many streams on one tunnel,
//! (d) relay memory per idle agent, (e) agent memory, (f) connect-to-ready, (g) binary sizes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http::StatusCode;

use crate::BinArgs;
use crate::fleet::READY_LINE;
use crate::load::{self, Endpoint};
use crate::procs::{self, Proc, Relay, START_DEADLINE, clean_command, eventually, log_file};
use crate::report::{self, Figure, Results, Stats};
use crate::svg::BarChart;
use crate::target::LISTEN_LINE;

/// Flags of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Seconds, not minutes: one run of each figure, 200 load agents (what CI runs).
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// Several runs of each figure, 1,000 and 10,000 load agents, rathole when installed.
    #[arg(long)]
    pub full: bool,
    /// Directory for results.json, results.md, README.md and the charts.
    #[arg(long)]
    pub out: PathBuf,
    /// Runs of each figure (overrides the mode's).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Fleet sizes for the relay memory figure, comma-separated (overrides the mode's).
    #[arg(long, value_delimiter = ',')]
    pub fleet: Vec<usize>,
    /// Keep the processes' logs (a temporary directory) after a successful run.
    #[arg(long)]
    pub keep_logs: bool,
    #[command(flatten)]
    pub bins: BinArgs,
}

/// How much of everything a mode does.
struct Plan {
    mode: &'static str,
    runs: usize,
    bulk_one: u64,
    bulk_each8: u64,
    bulk_each64: u64,
    latency_for: Duration,
    burst: usize,
    burst_delay_ms: u64,
    fleet: Vec<usize>,
    ready_runs: usize,
    settle: Duration,
    rathole: bool,
}

const MIB: u64 = 1024 * 1024;

impl Plan {
    fn new(args: &RunArgs) -> Plan {
        let mut plan = if args.full {
            Plan {
                mode: "full",
                runs: 5,
                bulk_one: 256 * MIB,
                bulk_each8: 64 * MIB,
                bulk_each64: 4 * MIB,
                latency_for: Duration::from_secs(2),
                burst: 1000,
                burst_delay_ms: 500,
                fleet: vec![1000, 10_000],
                ready_runs: 10,
                settle: Duration::from_secs(3),
                rathole: true,
            }
        } else {
            Plan {
                mode: "quick",
                runs: 1,
                bulk_one: 16 * MIB,
                bulk_each8: 4 * MIB,
                bulk_each64: MIB / 2,
                latency_for: Duration::from_millis(300),
                burst: 1000,
                burst_delay_ms: 300,
                fleet: vec![200],
                ready_runs: 2,
                settle: Duration::from_millis(500),
                rathole: false,
            }
        };
        if let Some(r) = args.runs {
            plan.runs = r.max(1);
        }
        if !args.fleet.is_empty() {
            plan.fleet = args.fleet.clone();
        }
        plan
    }
}

/// The contenders of a comparative figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Tether,
    Direct,
    Rathole,
}

/// The contenders in the order of run `run`: rotated so none is always first.
fn order(run: usize, with_rathole: bool) -> Vec<Via> {
    let mut v = vec![Via::Direct, Via::Tether];
    if with_rathole {
        v.push(Via::Rathole);
    }
    let n = v.len();
    v.rotate_left(run % n);
    v
}

/// Per-contender samples of one figure.
#[derive(Default)]
struct Samples {
    tether: Vec<f64>,
    direct: Vec<f64>,
    rathole: Vec<f64>,
}

impl Samples {
    fn push(&mut self, via: Via, v: f64) {
        match via {
            Via::Tether => self.tether.push(v),
            Via::Direct => self.direct.push(v),
            Via::Rathole => self.rathole.push(v),
        }
    }

    fn figure(&self, id: &str, scenario: char, name: &str, unit: &str) -> Figure {
        Figure::new(id, scenario, name, unit)
            .tether(Stats::of(&self.tether))
            .direct(Stats::of(&self.direct))
            .rathole(Stats::of(&self.rathole))
    }
}

/// Everything running during the comparative scenarios.
struct Bed {
    dir: PathBuf,
    bins: BinArgs,
    target: SocketAddr,
    relay: Relay,
    agent: Proc,
    session: String,
    tether: Endpoint,
    direct: Endpoint,
    rathole: Option<(Endpoint, Vec<Proc>)>,
    _target_proc: Proc,
}

impl Bed {
    fn endpoint(&self, via: Via) -> Option<&Endpoint> {
        match via {
            Via::Tether => Some(&self.tether),
            Via::Direct => Some(&self.direct),
            Via::Rathole => self.rathole.as_ref().map(|(e, _)| e),
        }
    }
}

/// Run the benchmarks and write the results into `args.out`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = Plan::new(&args);
    for (what, p) in [("relay", &args.bins.relay), ("agent", &args.bins.agent)] {
        if !p.exists() {
            bail!(
                "the {what} binary {} is missing (scripts/bench builds it)",
                p.display()
            );
        }
    }
    let work = tempfile::Builder::new().prefix("tether-bench-").tempdir()?;
    let dir = work.path().to_owned();
    eprintln!(
        "tether-bench: {} mode, {} run(s) per figure, logs in {}",
        plan.mode,
        plan.runs,
        dir.display()
    );
    match measure(&plan, &args.bins, &dir).await {
        Ok((figures, notes, charts)) => {
            if args.keep_logs {
                let kept = work.keep();
                eprintln!("tether-bench: logs kept in {}", kept.display());
            }
            let results = Results {
                mode: plan.mode.to_owned(),
                runs: plan.runs,
                machine: machine(),
                seconds: started.elapsed().as_secs_f64(),
                figures,
                notes,
            };
            let mut chart_files = vec![];
            std::fs::create_dir_all(&args.out)?;
            for (file, chart) in charts {
                std::fs::write(args.out.join(&file), chart.render())?;
                chart_files.push((file, chart.title));
            }
            report::write_all(&args.out, &results, &chart_files)?;
            println!("{}", report::markdown_table(&results));
            let short = results
                .figures
                .iter()
                .filter(|f| f.verdict == report::Verdict::Short)
                .count();
            println!(
                "tether-bench: {} figures ({short} short of target) in {:.0} s, written to {}",
                results.figures.len(),
                results.seconds,
                args.out.display()
            );
            Ok(())
        }
        Err(e) => {
            let kept = work.keep();
            eprintln!("tether-bench: failed; logs kept in {}", kept.display());
            Err(e)
        }
    }
}

type Measured = (Vec<Figure>, Vec<String>, Vec<(String, BarChart)>);

async fn measure(plan: &Plan, bins: &BinArgs, dir: &Path) -> anyhow::Result<Measured> {
    let mut figs = vec![];
    let mut notes = vec![];
    let bed = start_bed(plan, bins, dir, &mut notes).await?;
    step("(e) agent idle memory");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let agent_idle = (
        bed.agent.rss_kib()? as f64 / 1024.0,
        bed.agent.rss_anon_kib()? as f64 / 1024.0,
    );
    warm_up(&bed).await?;

    step("(a) bulk download");
    let (bulk_figs, agent_peak) = bulk_figures(plan, &bed).await?;
    figs.extend(bulk_figs);
    step("(b) small requests");
    figs.extend(latency_figures(plan, &bed).await?);
    step("(c) many streams on one tunnel");
    figs.extend(stream_figures(plan, &bed).await?);
    step("(f) connect-to-ready");
    figs.extend(ready_figures(plan, &bed).await?);
    figs.extend(agent_memory_figures(&bed, agent_idle, agent_peak).await?);
    drop(bed);
    step("(d) relay memory per idle agent");
    figs.extend(fleet_figures(plan, bins, dir, &mut notes).await?);
    step("(g) binary sizes");
    figs.extend(size_figures(bins, dir, &mut notes)?);
    let charts = charts(&figs);
    Ok((figs, notes, charts))
}

fn step(what: &str) {
    eprintln!("tether-bench: {what}");
}

async fn start_bed(
    plan: &Plan,
    bins: &BinArgs,
    dir: &Path,
    notes: &mut Vec<String>,
) -> anyhow::Result<Bed> {
    let exe = std::env::current_exe()?;
    let mut cmd = clean_command(&exe);
    cmd.arg("target")
        .stdout(Stdio::piped())
        .stderr(log_file(dir, "target")?);
    let mut target_proc = Proc::spawn("target", &mut cmd)?;
    let target: SocketAddr = target_proc
        .wait_line(LISTEN_LINE, START_DEADLINE)?
        .trim()
        .parse()?;
    let relay = Relay::start(
        &bins.relay,
        dir,
        "relay",
        &["--max-streams-per-tunnel", "1000", "--max-tunnels", "20000"],
    )?;
    let system = relay.create_system("bench")?;
    let agent = procs::start_agent(
        &bins.agent,
        dir,
        "agent",
        relay.addr,
        &system,
        &format!("web={target}"),
        None,
    )?;
    let session = wait_session(&relay, None).await?;
    let tether = relay.proxy(&session, "web");
    wait_ok(&tether, "the proxy").await?;
    let rathole = if !plan.rathole {
        None
    } else if let Some(bin) = &bins.rathole {
        Some(start_rathole(bin, dir, target).await?)
    } else {
        let note = "rathole is not installed (`cargo install rathole`): its column is empty";
        eprintln!("tether-bench: {note}");
        notes.push(note.into());
        None
    };
    Ok(Bed {
        dir: dir.to_owned(),
        bins: bins.clone(),
        target,
        relay,
        agent,
        session,
        tether,
        direct: Endpoint::direct(target),
        rathole,
        _target_proc: target_proc,
    })
}

/// The connected session of node `node` (None: the single-node one).
async fn wait_session(relay: &Relay, node: Option<usize>) -> anyhow::Result<String> {
    let want = node.map(|n| n.to_string());
    eventually(
        "the agent's session",
        START_DEADLINE,
        Duration::from_millis(1),
        || async {
            let sessions = relay.connected_sessions().await?;
            Ok(sessions
                .into_iter()
                .find(|(_, n, _)| *n == want)
                .map(|(id, _, _)| id))
        },
    )
    .await
}

async fn wait_ok(ep: &Endpoint, what: &str) -> anyhow::Result<()> {
    eventually(
        &format!("a 200 from /small through {what}"),
        START_DEADLINE,
        Duration::from_millis(1),
        || async {
            let (status, _) = load::get_body(ep, "/small").await?;
            Ok((status == StatusCode::OK).then_some(()))
        },
    )
    .await
}

async fn start_rathole(
    bin: &Path,
    dir: &Path,
    target: SocketAddr,
) -> anyhow::Result<(Endpoint, Vec<Proc>)> {
    let control = procs::free_port()?;
    let service = procs::free_port()?;
    let server = format!(
        "[server]\nbind_addr = \"127.0.0.1:{control}\"\n\n[server.services.web]\ntoken = \"tether-bench\"\nbind_addr = \"127.0.0.1:{service}\"\n"
    );
    let client = format!(
        "[client]\nremote_addr = \"127.0.0.1:{control}\"\n\n[client.services.web]\ntoken = \"tether-bench\"\nlocal_addr = \"{target}\"\n"
    );
    std::fs::write(dir.join("rathole-server.toml"), server)?;
    std::fs::write(dir.join("rathole-client.toml"), client)?;
    let mut procs = vec![];
    for side in ["server", "client"] {
        let mut cmd = clean_command(bin);
        cmd.arg(format!("--{side}"))
            .arg(dir.join(format!("rathole-{side}.toml")))
            .stdout(log_file(dir, &format!("rathole-{side}"))?)
            .stderr(log_file(dir, &format!("rathole-{side}"))?);
        procs.push(Proc::spawn(&format!("rathole {side}"), &mut cmd)?);
    }
    let ep = Endpoint::direct(SocketAddr::from(([127, 0, 0, 1], service)));
    wait_ok(&ep, "rathole").await?;
    Ok((ep, procs))
}

async fn warm_up(bed: &Bed) -> anyhow::Result<()> {
    for via in order(0, bed.rathole.is_some()) {
        if let Some(ep) = bed.endpoint(via) {
            load::latency(ep, "/small", 4, Duration::from_millis(200)).await?;
            load::bulk(ep, 8 * MIB, 1).await?;
        }
    }
    Ok(())
}

/// Samples a process's RSS every 10 ms on a thread; `stop` gives the largest, in KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    m.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler { stop, max, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.max.load(Ordering::Relaxed)
    }
}

/// (a): 1 and 8 streams. Also the agent's peak RSS during the 8-stream Tether runs (MiB).
async fn bulk_figures(plan: &Plan, bed: &Bed) -> anyhow::Result<(Vec<Figure>, f64)> {
    let mut figs = vec![];
    let mut agent_peak = 0u64;
    for (streams, each) in [(1usize, plan.bulk_one), (8, plan.bulk_each8)] {
        let mut s = Samples::default();
        let (mut relay_cpu, mut agent_cpu) = (vec![], vec![]);
        for run in 0..plan.runs {
            for via in order(run, bed.rathole.is_some()) {
                let Some(ep) = bed.endpoint(via) else {
                    continue;
                };
                let sampler = (via == Via::Tether).then(|| RssSampler::start(bed.agent.pid()));
                let cpu0 = (bed.relay.proc.cpu_seconds()?, bed.agent.cpu_seconds()?);
                let mbps = load::bulk(ep, each, streams).await?;
                if let Some(sampler) = sampler {
                    agent_peak = agent_peak.max(sampler.stop());
                    let mb = (each * streams as u64) as f64 / 1e6;
                    relay_cpu.push((bed.relay.proc.cpu_seconds()? - cpu0.0) / mb * 1e3);
                    agent_cpu.push((bed.agent.cpu_seconds()? - cpu0.1) / mb * 1e3);
                }
                s.push(via, mbps);
            }
        }
        let name = if streams == 1 {
            format!("bulk download, 1 stream ({} MiB)", each / MIB)
        } else {
            format!(
                "bulk download, {streams} parallel streams ({} MiB each)",
                each / MIB
            )
        };
        let f = s.figure(&format!("bulk_{streams}"), 'a', &name, "MB/s");
        let pass = f.ratio.map(|r| r >= 0.25);
        figs.push(f.target("≥ 25 % of direct", pass));
        if streams == 1 {
            for (id, who, v) in [
                ("cpu_relay_mb", "relay", &relay_cpu),
                ("cpu_agent_mb", "agent", &agent_cpu),
            ] {
                figs.push(
                    Figure::new(
                        id,
                        'a',
                        &format!("{who} CPU per MB, 1-stream bulk"),
                        "ms/MB",
                    )
                    .tether(Stats::of(v)),
                );
            }
        }
    }
    Ok((figs, agent_peak as f64 / 1024.0))
}

/// (b): concurrency 1 and 64.
async fn latency_figures(plan: &Plan, bed: &Bed) -> anyhow::Result<Vec<Figure>> {
    let mut figs = vec![];
    for conc in [1usize, 64] {
        let (mut rps, mut p50, mut p99, mut added) = (
            Samples::default(),
            Samples::default(),
            Samples::default(),
            Samples::default(),
        );
        let (mut relay_cpu, mut agent_cpu) = (vec![], vec![]);
        for run in 0..plan.runs {
            let mut direct_p50 = None;
            let mut this_run = vec![];
            for via in order(run, bed.rathole.is_some()) {
                let Some(ep) = bed.endpoint(via) else {
                    continue;
                };
                let cpu0 = (bed.relay.proc.cpu_seconds()?, bed.agent.cpu_seconds()?);
                let l = load::latency(ep, "/small", conc, plan.latency_for).await?;
                if via == Via::Tether {
                    let n = l.rps * plan.latency_for.as_secs_f64();
                    relay_cpu.push((bed.relay.proc.cpu_seconds()? - cpu0.0) / n * 1e6);
                    agent_cpu.push((bed.agent.cpu_seconds()? - cpu0.1) / n * 1e6);
                }
                if l.errors > 0 {
                    eprintln!(
                        "tether-bench: {via:?} c={conc}: {} failed requests",
                        l.errors
                    );
                }
                rps.push(via, l.rps);
                p50.push(via, l.p50_us);
                p99.push(via, l.p99_us);
                if via == Via::Direct {
                    direct_p50 = Some(l.p50_us);
                }
                this_run.push((via, l.p50_us));
            }
            if let Some(d) = direct_p50 {
                for (via, v) in this_run {
                    if via != Via::Direct {
                        added.push(via, v - d);
                    }
                }
            }
        }
        let f = rps.figure(
            &format!("rps_c{conc}"),
            'b',
            &format!("requests/s, concurrency {conc}"),
            "req/s",
        );
        figs.push(if conc == 64 {
            let pass = f.ratio.map(|r| r >= 0.5);
            f.target("≥ 50 % of direct", pass)
        } else {
            f
        });
        if conc == 64 {
            for (id, who, v) in [
                ("cpu_relay_req", "relay", &relay_cpu),
                ("cpu_agent_req", "agent", &agent_cpu),
            ] {
                figs.push(
                    Figure::new(
                        id,
                        'b',
                        &format!("{who} CPU per proxied request, concurrency 64"),
                        "µs",
                    )
                    .tether(Stats::of(v))
                    .note("user + system time over the run, 10 ms clock ticks"),
                );
            }
        }
        figs.push(p50.figure(
            &format!("p50_c{conc}"),
            'b',
            &format!("p50 latency, concurrency {conc}"),
            "µs",
        ));
        figs.push(p99.figure(
            &format!("p99_c{conc}"),
            'b',
            &format!("p99 latency, concurrency {conc}"),
            "µs",
        ));
        if conc == 1 {
            let f = added.figure(
                "p50_added_c1",
                'b',
                "p50 added latency over direct, concurrency 1",
                "µs",
            );
            let pass = f.tether.as_ref().map(|s| s.median <= 100.0);
            figs.push(f.target("≤ 100 µs", pass));
            // How much of that the relay's API path alone costs (token check, session lookup).
            let api = Endpoint {
                prefix: format!("/api/v1/sessions/{}", bed.session),
                ..bed.relay.api()
            };
            let mut p50 = vec![];
            for _ in 0..plan.runs {
                p50.push(load::latency(&api, "", 1, plan.latency_for).await?.p50_us);
            }
            figs.push(
                Figure::new(
                    "p50_api_c1",
                    'b',
                    "p50 of GET /api/v1/sessions/{id} (no tunnel), concurrency 1",
                    "µs",
                )
                .tether(Stats::of(&p50))
                .note("the relay's own share: token check and session lookup"),
            );
        }
    }
    Ok(figs)
}

/// (c): 64 parallel downloads on the tunnel; a burst of concurrent requests without a reset.
async fn stream_figures(plan: &Plan, bed: &Bed) -> anyhow::Result<Vec<Figure>> {
    let mut figs = vec![];
    let mut s = Samples::default();
    let mut failure = None;
    for run in 0..plan.runs {
        for via in order(run, false) {
            let Some(ep) = bed.endpoint(via) else {
                continue;
            };
            match load::bulk(ep, plan.bulk_each64, 64).await {
                Ok(v) => s.push(via, v),
                Err(e) if via == Via::Tether => failure = Some(format!("{e:#}")),
                Err(e) => return Err(e),
            }
        }
    }
    let name = format!(
        "64 parallel downloads on one tunnel ({} KiB each)",
        plan.bulk_each64 / 1024
    );
    let mut f = s.figure("streams_64", 'c', &name, "MB/s");
    f = f.target("all 64 complete", Some(failure.is_none()));
    if let Some(e) = failure {
        f = f.note(format!("failed: {e}"));
    }
    figs.push(f);

    // Within yamux's stream limit of the transport (512), then the 1000.
    for n in [BURST_WITHIN_YAMUX, plan.burst] {
        figs.push(burst_figure(plan, bed, n).await?);
        // A reset tunnel comes back on its own; later figures need it.
        wait_session(&bed.relay, None).await?;
    }
    Ok(figs)
}

/// A burst small enough for the transport's 512 yamux streams per tunnel.
const BURST_WITHIN_YAMUX: usize = 500;

/// `n` concurrent requests held open `burst_delay_ms` by the target; Tether and direct.
async fn burst_figure(plan: &Plan, bed: &Bed, n: usize) -> anyhow::Result<Figure> {
    let before = tunnel_identity(bed).await?;
    let path = format!("/delay?ms={}", plan.burst_delay_ms);
    let t = load::burst(&bed.tether, &path, n).await?;
    let d = load::burst(&bed.direct, &path, n).await?;
    // A reset would show as a new connected_at, a new tunnel or another session.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = tunnel_identity(bed).await?;
    let same = before == after;
    let mut note = format!(
        "{} ms per request; tunnel {}",
        plan.burst_delay_ms,
        if same {
            "kept (same session, connected_at and connect count)"
        } else {
            "RESET"
        }
    );
    if !t.failures.is_empty() {
        note.push_str(&format!("; Tether failures by status: {:?}", t.failures));
    }
    if !d.failures.is_empty() {
        note.push_str(&format!("; direct failures: {:?}", d.failures));
    }
    Ok(Figure::new(
        &format!("burst_{n}"),
        'c',
        &format!("{n} concurrent requests in a burst"),
        "answered",
    )
    .tether(Some(Stats::one(t.ok as f64)))
    .direct(Some(Stats::one(d.ok as f64)))
    .target(
        &format!("{n} of {n}, no tunnel reset"),
        Some(t.ok == n as u64 && same),
    )
    .note(note))
}

/// What identifies the bench agent's tunnel: session, connect time, tunnels accepted so far.
async fn tunnel_identity(
    bed: &Bed,
) -> anyhow::Result<(Vec<(String, Option<String>, String)>, f64)> {
    let mut sessions = bed.relay.connected_sessions().await?;
    sessions.retain(|(_, node, _)| node.is_none());
    let connects = bed.relay.metric("tether_tunnel_connects_total").await?;
    Ok((sessions, connects))
}

/// (f): agent process start → session connected → first proxied response, new node each run.
async fn ready_figures(plan: &Plan, bed: &Bed) -> anyhow::Result<Vec<Figure>> {
    let system = bed.relay.create_system("ready")?;
    let (mut active, mut first) = (vec![], vec![]);
    for run in 0..plan.ready_runs {
        let node = run + 1;
        let start = Instant::now();
        let mut agent = procs::start_agent(
            &bed.bins.agent,
            &bed.dir,
            &format!("ready-{node}"),
            bed.relay.addr,
            &system,
            &format!("web={}", bed.target),
            Some(node),
        )?;
        let session = wait_session(&bed.relay, Some(node)).await?;
        active.push(start.elapsed().as_secs_f64() * 1000.0);
        wait_ok(&bed.relay.proxy(&session, "web"), "the new agent").await?;
        first.push(start.elapsed().as_secs_f64() * 1000.0);
        agent.kill();
    }
    Ok(vec![
        Figure::new("ready_active", 'f', "agent start → session connected", "ms")
            .tether(Stats::of(&active)),
        {
            let f = Figure::new(
                "ready_first",
                'f',
                "agent start → first proxied response",
                "ms",
            )
            .tether(Stats::of(&first));
            let pass = f.tether.as_ref().map(|s| s.median < 50.0);
            f.target("< 50 ms", pass)
        },
    ])
}

/// (e): the release agent idle and at its peak during bulk, the min-size agent idle.
async fn agent_memory_figures(
    bed: &Bed,
    (idle, idle_anon): (f64, f64),
    peak: f64,
) -> anyhow::Result<Vec<Figure>> {
    let anon_note = |anon: f64| {
        format!(
            "of which {anon:.2} MiB anonymous (RssAnon); the rest is file-backed pages of the binary (and of libc when linked dynamically)"
        )
    };
    let mut figs = vec![
        Figure::new(
            "agent_idle",
            'e',
            &format!("agent RSS idle ({} build)", bed.bins.profile),
            "MiB",
        )
        .tether(Some(Stats::one(idle)))
        .target("≤ 4 MiB", Some(idle <= 4.0))
        .note(anon_note(idle_anon)),
    ];
    if let Some(bin) = &bed.bins.min_size_agent {
        let build = if is_static(bin) {
            "static min-size build, as packaged"
        } else {
            "min-size build"
        };
        let system = bed.relay.create_system("min-size")?;
        let node = 1;
        let agent = procs::start_agent(
            bin,
            &bed.dir,
            "agent-min-size",
            bed.relay.addr,
            &system,
            &format!("web={}", bed.target),
            Some(node),
        )?;
        let session = wait_session(&bed.relay, Some(node)).await?;
        wait_ok(&bed.relay.proxy(&session, "web"), "the min-size agent").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let v = agent.rss_kib()? as f64 / 1024.0;
        let anon = agent.rss_anon_kib()? as f64 / 1024.0;
        figs.push(
            Figure::new(
                "agent_idle_min_size",
                'e',
                &format!("agent RSS idle ({build})"),
                "MiB",
            )
            .tether(Some(Stats::one(v)))
            .target("≤ 4 MiB", Some(v <= 4.0))
            .note(anon_note(anon)),
        );
    }
    figs.push(
        Figure::new(
            "agent_bulk",
            'e',
            "agent RSS peak during the 8-stream bulk runs",
            "MiB",
        )
        .tether(Some(Stats::one(peak))),
    );
    Ok(figs)
}

/// The soft limit on open files of this process (inherited by the relay it starts).
fn nofile_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// (d): a fresh relay per fleet size; RSS before and after N idle tunnels, divided by N.
async fn fleet_figures(
    plan: &Plan,
    bins: &BinArgs,
    dir: &Path,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Figure>> {
    let mut figs = vec![];
    let exe = std::env::current_exe()?;
    for &wanted in &plan.fleet {
        let limit = nofile_limit().unwrap_or(1024);
        let n = wanted.min(limit.saturating_sub(256));
        if n < wanted {
            let note = format!(
                "(d) the open-file limit ({limit}) allowed {n} of {wanted} agents: raise it with `ulimit -n`"
            );
            eprintln!("tether-bench: {note}");
            notes.push(note);
        }
        let max_tunnels = (n + 100).to_string();
        let relay = Relay::start(
            &bins.relay,
            dir,
            &format!("fleet-{wanted}"),
            &["--max-tunnels", &max_tunnels],
        )?;
        let system = relay.create_system("fleet")?;
        // One tunnel first, so that lazily created pools and tables are in the baseline.
        let mut warm = fleet(&exe, dir, &relay, &system, 1, n + 1, "fleet-warm")?;
        warm.wait_line(READY_LINE, START_DEADLINE)?;
        eventually(
            "the relay to register the first tunnel",
            START_DEADLINE,
            Duration::from_millis(50),
            || async { Ok((relay.metric("tether_tunnels_connected").await? >= 1.0).then_some(())) },
        )
        .await?;
        tokio::time::sleep(plan.settle).await;
        let before = relay.proc.rss_kib()?;
        let started = Instant::now();
        let mut agents = fleet(
            &exe,
            dir,
            &relay,
            &system,
            n,
            1,
            &format!("load-agents-{wanted}"),
        )?;
        let deadline = START_DEADLINE + Duration::from_millis(20 * n as u64);
        let ready = agents.wait_line(READY_LINE, deadline)?;
        let mut parts = ready.split_whitespace();
        let ok: usize = parts
            .next()
            .and_then(|v| v.parse().ok())
            .context("ready line")?;
        let failed: usize = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        // The upgrade is answered before the relay has registered the tunnel (session row,
        // manifest): wait until the relay counts every tunnel as connected.
        let want = (ok + 1) as f64;
        let counted = eventually(
            "the relay to register every tunnel",
            deadline,
            Duration::from_millis(200),
            || async {
                let c = relay.metric("tether_tunnels_connected").await?;
                Ok((c >= want).then_some(c))
            },
        )
        .await;
        let registered = started.elapsed().as_secs_f64();
        let connected = match counted {
            Ok(c) => c,
            Err(e) => {
                let note = format!("(d) {n} agents: {e:#}");
                eprintln!("tether-bench: {note}");
                notes.push(note);
                relay
                    .metric("tether_tunnels_connected")
                    .await
                    .unwrap_or(0.0)
            }
        };
        let idle = (connected - 1.0).max(1.0);
        tokio::time::sleep(plan.settle).await;
        let after = stable_rss(&relay.proc).await?;
        let per = after.saturating_sub(before) as f64 / idle;
        let fleet_per = agents.rss_kib()? as f64 / ok.max(1) as f64;
        let mut f = Figure::new(
            &format!("relay_per_agent_{wanted}"),
            'd',
            &format!("relay memory per idle agent, {} agents", report::num(n as f64)),
            "KiB",
        )
        .tether(Some(Stats::one(per)))
        .target(
            "≤ 16 KiB (goal 8)",
            Some(per <= 16.0 && failed == 0 && connected >= want),
        )
        .note(format!(
            "relay RSS {} → {} MiB over {idle:.0} connected tunnels, all registered {registered:.1} s after the start ({:.0}/s); load-agent process {fleet_per:.1} KiB per tunnel",
            report::num(before as f64 / 1024.0),
            report::num(after as f64 / 1024.0),
            idle / registered.max(1e-3),
        ));
        if failed > 0 {
            f = f.note(format!(
                "{failed} of {n} tunnels failed to open (see the load-agents log)"
            ));
        }
        figs.push(f);
        drop(agents);
        drop(warm);
    }
    Ok(figs)
}

fn fleet(
    exe: &Path,
    dir: &Path,
    relay: &Relay,
    system: &procs::System,
    count: usize,
    first_node: usize,
    name: &str,
) -> anyhow::Result<Proc> {
    let mut cmd = clean_command(exe);
    cmd.arg("load-agents")
        .args(["--relay", &relay.addr.to_string()])
        .args(["--key", &system.key, "--secret", &system.secret])
        .args([
            "--count",
            &count.to_string(),
            "--first-node",
            &first_node.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file(dir, name)?);
    Proc::spawn(name, &mut cmd)
}

/// The RSS once two readings 500 ms apart differ by less than 1 % (at most 10 s), in KiB.
async fn stable_rss(p: &Proc) -> anyhow::Result<u64> {
    let mut last = p.rss_kib()?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = p.rss_kib()?;
        if now.abs_diff(last) * 100 < last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// (g): stripped sizes of the binaries for the host target.
fn size_figures(
    bins: &BinArgs,
    dir: &Path,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Figure>> {
    let host = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        })
        .unwrap_or_else(|| "host".into());
    let mut figs = vec![];
    let mut sized = |id: &str, name: &str, path: &Path, strip: bool| -> anyhow::Result<()> {
        // `scripts/bench` builds the min-size agent for the musl target, not the host's.
        let target = if path
            .components()
            .any(|c| c.as_os_str() == "x86_64-unknown-linux-musl")
        {
            "x86_64-unknown-linux-musl"
        } else {
            host.as_str()
        };
        let mut size = std::fs::metadata(path)
            .with_context(|| format!("size of {}", path.display()))?
            .len();
        let mut how = "as built";
        if strip {
            let copy = dir.join(format!("{id}.stripped"));
            std::fs::copy(path, &copy)?;
            let stripped = std::process::Command::new("strip")
                .arg(&copy)
                .status()
                .is_ok_and(|s| s.success());
            if stripped {
                size = std::fs::metadata(&copy)?.len();
                how = "stripped";
            } else {
                how = "not stripped (no `strip` here)";
            }
        }
        figs.push(
            Figure::new(id, 'g', &format!("{name}, {target}"), "MiB")
                .tether(Some(Stats::one(size as f64 / MIB as f64)))
                .note(how),
        );
        Ok(())
    };
    sized(
        "size_agent_release",
        &format!("tether-agent, {}", bins.profile),
        &bins.agent,
        true,
    )?;
    if let Some(p) = &bins.min_size_agent {
        let name = if is_static(p) {
            "tether-agent, min-size profile, static"
        } else {
            "tether-agent, min-size profile"
        };
        sized("size_agent_min_size", name, p, false)?;
    }
    sized(
        "size_relay_release",
        &format!("tether-relay, {}", bins.profile),
        &bins.relay,
        true,
    )?;
    match packaged_sizes(&bins.dist) {
        Some(packaged) if !packaged.is_empty() => figs.extend(packaged),
        _ => notes.push(format!(
            "(g) sizes are for {host} only: `packaging/build.sh` writes every target's into {}/sizes.txt, which (g) then lists",
            bins.dist.display()
        )),
    }
    Ok(figs)
}

/// (g) for every binary `packaging/build.sh` built (its `sizes.txt`: name, size in bytes, ...).
fn packaged_sizes(dist: &Path) -> Option<Vec<Figure>> {
    let text = std::fs::read_to_string(dist.join("sizes.txt")).ok()?;
    let mut figs = vec![];
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(bytes)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(bytes) = bytes.parse::<u64>() else {
            continue;
        };
        let Some((bin, target)) = ["tether-agent", "tether-relay"]
            .iter()
            .find_map(|b| Some((*b, name.strip_prefix(b)?.strip_prefix('-')?)))
        else {
            continue;
        };
        figs.push(
            Figure::new(
                &format!("size_packaged_{name}"),
                'g',
                &format!("{bin}, as packaged, {target}"),
                "MiB",
            )
            .tether(Some(Stats::one(bytes as f64 / MIB as f64)))
            .note(if bin == "tether-agent" {
                "static musl, min-size profile, stripped (packaging/build.sh)"
            } else {
                "static musl, release profile, stripped (packaging/build.sh)"
            }),
        );
    }
    Some(figs)
}

/// Whether an ELF binary is statically linked (it has no `PT_INTERP` program header).
fn is_static(path: &Path) -> bool {
    std::process::Command::new("readelf")
        .args(["-l", "-W"])
        .arg(path)
        .output()
        .is_ok_and(|o| o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("INTERP"))
}

fn find<'a>(figs: &'a [Figure], id: &str) -> Option<&'a Figure> {
    figs.iter().find(|f| f.id == id)
}

/// The charts: bulk, request rate, latency, relay memory, agent memory, connect-to-ready.
fn charts(figs: &[Figure]) -> Vec<(String, BarChart)> {
    let with_rathole = figs.iter().any(|f| f.rathole.is_some());
    let mut series = vec!["Tether".to_owned(), "direct".to_owned()];
    if with_rathole {
        series.push("rathole".to_owned());
    }
    let row = |id: &str, label: &str| -> Option<(String, Vec<Option<Stats>>)> {
        let f = find(figs, id)?;
        let mut v = vec![f.tether.clone(), f.direct.clone()];
        if with_rathole {
            v.push(f.rathole.clone());
        }
        Some((label.to_owned(), v))
    };
    let only = |id: &str, label: &str| -> Option<(String, Vec<Option<Stats>>)> {
        let f = find(figs, id)?;
        Some((label.to_owned(), vec![f.tether.clone()]))
    };
    let mut out = vec![];
    out.push((
        "bulk.svg".to_owned(),
        BarChart {
            title: "Bulk download, higher is better".into(),
            unit: "MB/s".into(),
            series: series.clone(),
            groups: [
                row("bulk_1", "1 stream"),
                row("bulk_8", "8 streams"),
                row("streams_64", "64 streams"),
            ]
            .into_iter()
            .flatten()
            .collect(),
            target: None,
        },
    ));
    out.push((
        "requests.svg".to_owned(),
        BarChart {
            title: "Small requests per second, higher is better".into(),
            unit: "req/s".into(),
            series: series.clone(),
            groups: [
                row("rps_c1", "concurrency 1"),
                row("rps_c64", "concurrency 64"),
            ]
            .into_iter()
            .flatten()
            .collect(),
            target: None,
        },
    ));
    out.push((
        "latency.svg".to_owned(),
        BarChart {
            title: "Small-request latency, lower is better".into(),
            unit: "µs".into(),
            series: series.clone(),
            groups: [
                row("p50_c1", "p50, concurrency 1"),
                row("p99_c1", "p99, concurrency 1"),
                row("p50_c64", "p50, concurrency 64"),
                row("p99_c64", "p99, concurrency 64"),
            ]
            .into_iter()
            .flatten()
            .collect(),
            target: None,
        },
    ));
    let fleet_rows: Vec<_> = figs
        .iter()
        .filter(|f| f.id.starts_with("relay_per_agent_"))
        .map(|f| {
            let n = f.id.trim_start_matches("relay_per_agent_");
            let n = report::num(n.parse().unwrap_or(0.0));
            (format!("{n} agents"), vec![f.tether.clone()])
        })
        .collect();
    out.push((
        "relay-memory.svg".to_owned(),
        BarChart {
            title: "Relay memory per idle agent, lower is better".into(),
            unit: "KiB".into(),
            series: vec!["Tether relay".into()],
            groups: fleet_rows,
            target: Some((16.0, "target 16 KiB".into())),
        },
    ));
    out.push((
        "agent-memory.svg".to_owned(),
        BarChart {
            title: "Agent resident memory, lower is better".into(),
            unit: "MiB".into(),
            series: vec!["tether-agent".into()],
            groups: [
                only("agent_idle", "idle, release"),
                only("agent_idle_min_size", "idle, min-size"),
                only("agent_bulk", "peak, 8-stream bulk"),
            ]
            .into_iter()
            .flatten()
            .collect(),
            target: Some((4.0, "idle target 4 MiB".into())),
        },
    ));
    out.push((
        "connect-to-ready.svg".to_owned(),
        BarChart {
            title: "Connect-to-ready on loopback, lower is better".into(),
            unit: "ms".into(),
            series: vec!["tether-agent".into()],
            groups: [
                only("ready_active", "session connected"),
                only("ready_first", "first proxied response"),
            ]
            .into_iter()
            .flatten()
            .collect(),
            target: Some((50.0, "target 50 ms".into())),
        },
    ));
    out
}

/// A description of this machine for the results.
fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    serde_json::json!({
        "cpu": cpu,
        "cores": cores,
        "memory_gib": (mem_gib * 10.0).round() / 10.0,
        "kernel": kernel,
        "rustc": rustc,
        "summary": format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {kernel}, {rustc}"),
    })
}
