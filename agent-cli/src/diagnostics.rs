//! The diagnostics flags of the agent, and the two local commands:
//! `tether-agent diagnostics [--json]` (collect the health report here and print it) and
//! `tether-agent plugin check <file>` (validate a vendor plugin). The subcommands are picked
//! out before the agent's own parser, so `tether-agent --url ... --key ...` is untouched.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use agent_core::agent::diagnostics::{
    self, Collection, DEFAULT_DIR, DiagnosticsConfig, PluginRun, Thresholds,
};
use agent_core::agent::parse_go_duration;
use agent_core::document::PluginReport;
use agent_core::plugin_output;
use clap::{Parser, Subcommand};

/// Health report settings (the reference's flags, now implemented).
#[derive(clap::Args, Debug, Clone)]
pub struct DiagnosticsFlags {
    /// Directory of diagnostics plugins
    #[arg(long, env = "DIAGNOSTICS_DIR", value_name = "DIR", default_value = DEFAULT_DIR)]
    pub diagnostics_dir: PathBuf,
    /// Time one plugin may run before its process group is killed (Go duration)
    #[arg(
        long,
        env = "DIAGNOSTICS_PLUGIN_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s"
    )]
    pub diagnostics_plugin_timeout: String,
    /// Time the whole report may take; late plugins are reported as timeout (Go duration)
    #[arg(
        long,
        env = "DIAGNOSTICS_TOTAL_TIMEOUT",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub diagnostics_total_timeout: String,
    /// How often the report is collected again while connected; a changed one is sent (0: only on connect)
    #[arg(
        long,
        env = "DIAGNOSTICS_INTERVAL",
        value_name = "DURATION",
        default_value = "5m"
    )]
    pub diagnostics_interval: String,
    /// Limits of the system plugin, warning:critical: ram=85:95,disk=85:95,load=1:2 (load per CPU)
    #[arg(
        long,
        env = "DIAGNOSTICS_THRESHOLDS",
        value_name = "LIST",
        default_value = ""
    )]
    pub diagnostics_thresholds: String,
}

impl DiagnosticsFlags {
    /// The runtime settings; `Err((flag, message))` names the bad flag.
    pub fn to_config(&self) -> Result<DiagnosticsConfig, (&'static str, String)> {
        let duration = |flag: &'static str, text: &str| {
            parse_go_duration(text).map_err(|e| (flag, e.to_string()))
        };
        let positive = |flag: &'static str, text: &str| {
            let d = duration(flag, text)?;
            if d.is_zero() {
                return Err((flag, "must be greater than zero".to_owned()));
            }
            Ok(d)
        };
        Ok(DiagnosticsConfig {
            dir: Some(self.diagnostics_dir.clone()).filter(|d| !d.as_os_str().is_empty()),
            plugin_timeout: positive(
                "--diagnostics-plugin-timeout",
                &self.diagnostics_plugin_timeout,
            )?,
            total_timeout: positive(
                "--diagnostics-total-timeout",
                &self.diagnostics_total_timeout,
            )?,
            interval: duration("--diagnostics-interval", &self.diagnostics_interval)?,
            thresholds: Thresholds::parse(&self.diagnostics_thresholds)
                .map_err(|e| ("--diagnostics-thresholds", e))?,
            ..DiagnosticsConfig::default()
        })
    }
}

/// The local commands.
#[derive(Parser, Debug)]
#[command(name = "tether-agent", version)]
struct Tool {
    #[command(subcommand)]
    command: ToolCommand,
}

#[derive(Subcommand, Debug)]
enum ToolCommand {
    /// Collect the health report on this machine and print it
    Diagnostics {
        /// Print the report as the JSON the relay receives
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        flags: DiagnosticsFlags,
    },
    /// Vendor plugin tools
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Validate a plugin: ownership and mode, run it under the timeouts, parse its output,
    /// show what the operator will see; exits 1 with the reasons when it is malformed
    Check {
        /// The plugin executable
        file: PathBuf,
        #[command(flatten)]
        flags: DiagnosticsFlags,
    },
}

/// Runs a local command when the first argument names one; `None` for the agent itself.
pub fn dispatch(args: &[OsString]) -> Option<ExitCode> {
    let first = args.get(1)?.to_str()?;
    if !matches!(first, "diagnostics" | "plugin") {
        return None;
    }
    let tool = Tool::parse_from(args);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    let runtime = match crate::runtime(builder) {
        Ok(rt) => rt,
        Err(code) => return Some(code),
    };
    let config = |flags: &DiagnosticsFlags| {
        flags.to_config().map_err(|(flag, e)| {
            eprintln!("tether-agent: {flag}: {e}");
            ExitCode::from(1)
        })
    };
    Some(match tool.command {
        ToolCommand::Diagnostics { json, flags } => match config(&flags) {
            Ok(config) => {
                let collection = runtime.block_on(diagnostics::collect(&config));
                if json {
                    print!(
                        "{}",
                        String::from_utf8_lossy(&agent_core::document::to_json_line(
                            &collection.report
                        ))
                    );
                } else {
                    print!("{}", table(&collection));
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        ToolCommand::Plugin {
            command: PluginCommand::Check { file, flags },
        } => match config(&flags) {
            Ok(config) => check(&runtime, &file, &config),
            Err(code) => code,
        },
    })
}

/// One plugin's lines of the table: status, id, summary, then its checks indented.
fn plugin_lines(out: &mut String, p: &PluginReport) {
    out.push_str(&format!(
        "{:<9} {:<24} {}\n",
        p.status.as_str().to_uppercase(),
        p.id,
        p.summary.as_deref().unwrap_or("")
    ));
    for c in &p.checks {
        out.push_str(&format!(
            "{:<9}   {:<22} {}\n",
            c.status.as_str(),
            c.name,
            c.value.as_deref().unwrap_or("")
        ));
    }
}

/// The report as a table people read.
pub fn table(c: &Collection) -> String {
    let mut out = format!(
        "overall: {}  (collected {}, {} ms)\n\n",
        c.report.overall_status.as_str().to_uppercase(),
        c.report.collected_at,
        c.report.duration_ms
    );
    for p in &c.report.plugins {
        plugin_lines(&mut out, p);
    }
    for s in &c.skipped {
        out.push_str(&format!("\nskipped {}: {}", s.path.display(), s.reason));
    }
    if !c.skipped.is_empty() {
        out.push('\n');
    }
    out
}

/// What is wrong with a plugin run, beyond its output.
fn run_problems(run: &PluginRun, stdout: &[u8]) -> Vec<String> {
    if run.timed_out {
        return vec![format!(
            "did not finish in time: {}",
            run.report.summary.as_deref().unwrap_or("")
        )];
    }
    let mut problems = plugin_output::problems(stdout, run.exit_code);
    if run.stdout_bytes > diagnostics::MAX_STDOUT as u64 {
        problems.push(format!(
            "printed {} bytes; only the first {} are read",
            run.stdout_bytes,
            diagnostics::MAX_STDOUT
        ));
    }
    problems
}

fn check(
    runtime: &tokio::runtime::Runtime,
    file: &std::path::Path,
    config: &DiagnosticsConfig,
) -> ExitCode {
    if let Err(reason) = diagnostics::vet(file) {
        println!("{}: the agent would skip it: {reason}", file.display());
        return ExitCode::from(1);
    }
    println!(
        "{}: ok to run (regular file, executable, owner and mode safe)",
        file.display()
    );
    let (run, stdout) = runtime.block_on(diagnostics::run_one(file, config));
    let took = run
        .finished_at
        .duration_since(run.started_at)
        .unwrap_or_default();
    println!(
        "ran in {} ms, exit code {}, {} bytes of output",
        took.as_millis(),
        run.exit_code
            .map_or_else(|| "none (killed)".to_owned(), |c| c.to_string()),
        run.stdout_bytes
    );
    if !run.stderr.trim().is_empty() {
        println!("stderr: {}", run.stderr.trim());
    }
    println!("\nthe operator will see:");
    let mut shown = String::new();
    plugin_lines(&mut shown, &run.report);
    print!("{shown}");
    let problems = run_problems(&run, &stdout);
    if problems.is_empty() {
        println!("\nthe plugin is well-formed");
        return ExitCode::SUCCESS;
    }
    println!("\nthe plugin is malformed:");
    for p in &problems {
        println!("  - {p}");
    }
    ExitCode::from(1)
}
