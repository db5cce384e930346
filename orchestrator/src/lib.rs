//! `rayefa`: launches a Ray cluster from a Ray cluster-launcher YAML and waits until every
//! node's agent reports ready. No SSH: nodes report themselves over HTTP.
//!
//! Layers, each using only those below it: the cluster file (the `rayefa-cluster` crate:
//! model, checks, agent configurations), `provider` (the seam to what runs nodes, chosen in
//! one place: `local` and `aws`), `wait` (polling agents), `check` (the fabric between nodes,
//! pair by pair), `view` (progress, tables, JSON), `commands` (one module per command), and on
//! top `cli` (every command and its arguments) and `exit` (exit codes).

mod autoscaling;
mod check;
mod cli;
mod commands;
mod exit;
pub mod harness;
mod provider;
mod timeline;
mod view;
mod wait;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::ExitCode;
use crate::view::Output;

/// The `rayefa` command line: parses the arguments, runs the command, and maps its outcome
/// to the exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose, cli.global.quiet);
    raise_open_file_limit();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| exit::Error::Internal(format!("starting the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(code) => code.into(),
        Err(error) => {
            eprintln!("{}", error_text(&error));
            ExitCode::from(&error).into()
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, exit::Error> {
    let output = Output::new(cli.global.output, cli.global.verbose, cli.global.quiet);
    match &cli.command {
        Command::Up(args) => commands::up::run(args, output).await,
        Command::Status(args) => commands::status::run(args, output).await,
        Command::Timeline(args) => commands::timeline::run(args, output).await,
        Command::Down(args) => commands::down::run(args, output).await,
        Command::Validate(args) => commands::validate::run(args, output).await,
        Command::UserData(args) => commands::user_data::run(args, output),
        Command::Env(args) => commands::env::run(args, output).await,
        Command::InstanceTypes(args) => commands::instance_types::run(args, output).await,
        Command::Prepare(args) => commands::prepare::run(args, output).await,
        Command::Check(args) => commands::check::run(args, output).await,
        Command::Publish(args) => commands::publish::run(args, output).await,
        Command::Nodes(command) => commands::nodes::run(command, output).await,
    }
}

/// Cluster file errors already read `FILE:LINE:COLUMN: error: ...`; others get `error:`.
fn error_text(error: &exit::Error) -> String {
    match error {
        exit::Error::Cluster(e) => e.to_string(),
        other => format!("error: {other}"),
    }
}

/// Polling a thousand agents holds a connection to each, and the usual soft limit of 1024
/// open files is below that: take the hard limit, which needs no privilege.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Diagnostics on stderr: warnings by default, more with `-v`, `RUST_LOG` wins.
fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
