//! `rayefa-agent`: bootstraps a Ray node with EFA and serves its readiness.
//!
//! A library so that benchmarks and fuzz targets can reach the engine and the parsers; the
//! binary is `src/main.rs`, which only calls [`main`]. Everything stays `pub(crate)` except
//! [`main`] and the narrow [`harness`] surface.

mod cli;
mod clock;
mod config;
mod control;
mod engine;
mod fabric;
mod facts;
pub mod harness;
mod host;
mod logging;
mod publish_tags;
mod serve;
mod steps;
mod systemd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::{CliError, Global};

/// rayefa's node agent. Runs the node's bootstrap (grow the root disk, install and verify EFA,
/// install Ray, run the cluster's setup commands, start Ray) as a graph of steps that survives
/// crashes and reboots, and serves the node's readiness over HTTP.
///
/// Exit codes: 0 success (status: ready), 1 failed, 2 bad configuration or usage,
/// 3 environment (cannot listen, cannot write the state directory, no status available),
/// 4 status: still bootstrapping.
#[derive(Debug, Parser)]
#[command(name = "rayefa-agent", version, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: the bootstrap, then keep serving /healthz, /readyz, /v1/status and
    /// /metrics until SIGTERM. Completed steps are not run again after a restart.
    Run,
    /// Show every step with its state and timings, from the running daemon or, when it is
    /// down, from its journal.
    Status(cli::status::StatusArgs),
    /// Show the step graph and what each step would do with this configuration, without
    /// doing it.
    Plan(cli::plan::PlanArgs),
    /// Ask libfabric which fabrics it reaches, like `fi_info -p efa`, in this fresh process
    /// (the probe-efa step runs it as a child). Exit 0 entries found, 1 the provider is
    /// absent, 2 libfabric missing or failing.
    ProbeEfa(cli::probe_efa::ProbeEfaArgs),
    /// Measure the fabric to another node through libfabric, in this fresh process: `listen`
    /// prints an address and answers, `ping ADDRESS` measures latency and bandwidth (what
    /// `rayefa check` runs on each pair).
    Pingpong(cli::pingpong::PingpongArgs),
}

/// The `rayefa-agent` command line: parses the arguments, runs the command, and maps its
/// outcome to the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run => cli::run::run(&cli.global),
        Command::Status(args) => cli::status::status(&cli.global, args),
        Command::Plan(args) => cli::plan::plan(&cli.global, args),
        Command::ProbeEfa(args) => {
            return ExitCode::from(u8::try_from(cli::probe_efa::probe_efa(args)).unwrap_or(2));
        }
        Command::Pingpong(args) => {
            return ExitCode::from(u8::try_from(cli::pingpong::pingpong(args)).unwrap_or(2));
        }
    };
    match result {
        Ok(exit) => exit.into(),
        Err(CliError { exit, error }) => {
            eprintln!("rayefa-agent: {error:#}");
            exit.into()
        }
    }
}
