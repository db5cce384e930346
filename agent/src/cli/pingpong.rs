//! `rayefa-agent pingpong listen|ping`: the fabric between two nodes, through the agent's own
//! libfabric bindings, in a fresh process (the agent's control surface and `rayefa check` run
//! it as a child, so libfabric is never loaded into the daemon).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use rayefa_wire::{PingOutcome, PingReport};

use crate::fabric::pingpong::{self, HEADER, ListenOptions, PingOptions};

/// Measure the fabric between two nodes: `listen` on one, `ping` its address from the other.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PingpongArgs {
    #[command(subcommand)]
    pub(crate) mode: Mode,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum Mode {
    /// Open an RDM endpoint, print one JSON line with its fabric address (hexadecimal), then
    /// answer pings until --serve-for has passed or --sessions pingers said goodbye.
    /// Exit 0 when it served its time, 2 when the fabric could not be opened.
    Listen(ListenArgs),
    /// Ping a listener's address: latency of small messages and bandwidth of large ones, as
    /// fi_pingpong measures them. Exit 0 passed, 1 the peer did not answer or refused, 2 the
    /// local fabric could not be used.
    Ping(PingArgs),
}

/// Flags both modes take.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FabricArgs {
    /// The libfabric provider (`efa`; `tcp` where there is no EFA).
    #[arg(long, short = 'p', value_name = "NAME", default_value = "efa")]
    pub(crate) provider: String,
    /// Load this libfabric and nothing else (default: as probe-efa).
    #[arg(long, value_name = "PATH")]
    pub(crate) lib: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    pub(crate) fabric: FabricArgs,
    /// Listen on the interface of this local address (as `fi_pingpong -s`); default: the
    /// provider's first interface.
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) source: Option<String>,
    /// The largest message to receive, in bytes (cut to the provider's limit).
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub(crate) max_message: usize,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = parse_seconds)]
    pub(crate) serve_for: Duration,
    /// Stop after this many pingers said goodbye.
    #[arg(long, value_name = "N")]
    pub(crate) sessions: Option<u64>,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PingArgs {
    /// The listener's fabric address, as its first line printed it (hexadecimal).
    #[arg(value_name = "ADDRESS")]
    pub(crate) address: String,
    #[command(flatten)]
    pub(crate) fabric: FabricArgs,
    /// Send from the interface of this local address; default: the provider's first.
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) source: Option<String>,
    /// Message sizes in bytes, comma-separated; the smallest gives the latency, the largest
    /// the bandwidth.
    #[arg(long, value_name = "BYTES,...", value_delimiter = ',', default_value = "64,1048576",
          value_parser = parse_size)]
    pub(crate) sizes: Vec<usize>,
    /// Timed round trips per size (fewer for large sizes: at most 256 MiB each way).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) iterations: u64,
    /// Seconds any exchange may take before the peer counts as not answering.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_seconds)]
    pub(crate) timeout: Duration,
    /// Print one JSON document (one line) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is not a duration"))
}

fn parse_size(text: &str) -> Result<usize, String> {
    let size: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of bytes"))?;
    if size < HEADER {
        return Err(format!(
            "{size} bytes is smaller than the {HEADER}-byte header every message carries"
        ));
    }
    Ok(size)
}

/// Runs the mode; returns the exit code.
pub(crate) fn pingpong(args: &PingpongArgs) -> i32 {
    match &args.mode {
        Mode::Listen(args) => listen(args),
        Mode::Ping(args) => ping(args),
    }
}

fn listen(args: &ListenArgs) -> i32 {
    let options = ListenOptions {
        provider: args.fabric.provider.clone(),
        source: args.source.clone(),
        max_message: args.max_message,
        serve_for: args.serve_for,
        sessions: args.sessions,
    };
    let ended = pingpong::listen(args.fabric.lib.as_deref(), &options, |ready| {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, ready)?;
        writeln!(out)?;
        out.flush()
    });
    match ended {
        Ok(summary) => {
            eprintln!(
                "rayefa-agent pingpong listen: {} sessions, {} pings answered",
                summary.sessions, summary.pings
            );
            0
        }
        Err(err) => {
            eprintln!("rayefa-agent pingpong listen: {err}");
            2
        }
    }
}

fn ping(args: &PingArgs) -> i32 {
    let options = PingOptions {
        provider: args.fabric.provider.clone(),
        peer: args.address.clone(),
        source: args.source.clone(),
        sizes: args.sizes.clone(),
        iterations: args.iterations,
        timeout: args.timeout,
    };
    let report = pingpong::ping(args.fabric.lib.as_deref(), &options);
    let printed = if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
            .and_then(|()| out.flush())
    } else {
        print_table(&report)
    };
    match printed {
        Ok(()) => report.outcome.exit_code(),
        Err(_) => 2,
    }
}

fn print_table(report: &PingReport) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if let Some(endpoint) = &report.endpoint {
        writeln!(
            out,
            "{} on {} ({})",
            endpoint.provider, endpoint.domain, endpoint.fabric
        )?;
    }
    if !report.results.is_empty() {
        writeln!(out, "{}", results_table(report))?;
    }
    if let Some(message) = report.outcome.message() {
        let what = match report.outcome {
            PingOutcome::NoAnswer { .. } => "no answer",
            PingOutcome::Refused { .. } => "refused",
            PingOutcome::LocalFailure { .. } | PingOutcome::Passed => "failed",
        };
        eprintln!("rayefa-agent pingpong ping: {what}: {message}");
    }
    out.flush()
}

fn results_table(report: &PingReport) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header([
        "BYTES",
        "ROUND TRIPS",
        "LATENCY µs",
        "BANDWIDTH MB/s",
    ]);
    for result in &report.results {
        table.add_row([
            result.size.to_string(),
            result.iterations.to_string(),
            format!("{:.2}", result.latency_us),
            format!("{:.1}", result.bandwidth_mb_s),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use rayefa_wire::SizeResult;

    use super::*;

    #[test]
    fn sizes_below_the_header_are_refused() {
        assert_eq!(parse_size("64"), Ok(64));
        assert!(parse_size("8").expect_err("too small").contains("header"));
        assert!(parse_size("x").is_err());
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_seconds("-1").is_err());
    }

    #[test]
    fn the_table_has_a_row_per_size() {
        let report = PingReport {
            peer: "02".into(),
            endpoint: None,
            results: vec![SizeResult {
                size: 64,
                iterations: 1000,
                latency_us: 12.345,
                bandwidth_mb_s: 10.37,
            }],
            outcome: PingOutcome::Passed,
        };
        let text = results_table(&report).to_string();
        assert!(text.contains("12.35") && text.contains("10.4"), "{text}");
    }
}
