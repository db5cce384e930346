//! The command line: every command, its options and its help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Launches a Ray cluster from a Ray cluster-launcher YAML, without SSH: every node runs
/// rayefa-agent, which bootstraps it and reports its progress over HTTP.
///
/// Exit codes: 0 success; 1 a node failed; 2 bad input (cluster file, options); 3 provider or
/// cloud error; 4 timed out.
#[derive(Debug, Parser)]
#[command(name = "rayefa", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// How results are printed: `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub(crate) output: OutputFormat,
    /// More detail (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub(crate) verbose: u8,
    /// Only errors and the final result.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Tables and progress for a person.
    Table,
    /// One JSON document on stdout.
    Json,
    /// `export NAME='value'` lines a shell can `eval` (`rayefa env`; other commands print
    /// their table).
    Env,
}

/// The commands. The AWS engineer adds `env`, `instance-types` and `prepare` here.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Launch the cluster described by FILE (head first, then workers) and wait until every
    /// node's agent reports ready. Running it again on a running cluster changes nothing.
    ///
    /// The head is launched first; once its agent answers, the workers (each type's
    /// min_workers) get the head's address. Every agent is then polled until all are ready:
    /// a live line per node in a terminal, a line per change otherwise, a table at the end,
    /// and for a failed node its step, error and output. Nodes that stopped are started again;
    /// missing workers are launched.
    ///
    /// Exit codes: 0 every node ready; 1 a node failed; 2 bad cluster file; 3 provider error;
    /// 4 not ready within --timeout.
    Up(UpArgs),
    /// Show every node of the cluster with its state and current step.
    ///
    /// Asks the provider for the cluster's nodes and each node's agent for its status, once.
    /// Exit codes: 0 no node failed; 1 a node failed, is unreachable or stopped; 2 bad
    /// cluster file; 3 provider error.
    Status(StatusArgs),
    /// Stop and remove every node of the cluster.
    ///
    /// Local nodes get SIGTERM, then SIGKILL after rayefa.timeouts.stop_grace (or --timeout);
    /// each node's outcome is printed. Exit codes: 0 done; 2 bad cluster file; 3 provider error.
    Down(DownArgs),
    /// Check FILE without launching anything: syntax, Ray's schema, rayefa's additions,
    /// environment variables, keys that need SSH and setup commands that agent steps replace.
    ///
    /// Every finding is printed as FILE:LINE:COLUMN: severity: key: message, followed by what
    /// `up` would launch. With a cloud provider the account is checked too, unless --offline.
    /// Exit codes: 0 valid; 2 errors found; 3 the provider could not be asked.
    Validate(ValidateArgs),
    /// Print the configuration a node of the given type receives (the agent's TOML file).
    ///
    /// Workers get the head's address, known only once the head runs: --head-address sets it,
    /// otherwise a placeholder stands in. On EC2 the configuration travels inside user data.
    UserData(UserDataArgs),
    /// Find what a cluster file refers to in AWS: region, account, the VPC and private subnet
    /// by tag, the latest Amazon Linux 2023 AMIs (x86_64, arm64), the head and worker security
    /// groups by name. `--output env` prints `export` lines: `eval "$(rayefa env --output env)"`.
    Env(crate::aws::EnvArgs),
    /// List EC2 instance types with vCPUs, cores, memory, architecture, the most EFA
    /// interfaces and network cards, for example `--family 7i,8g,7a --efa`.
    InstanceTypes(crate::aws::InstanceTypesArgs),
    /// Create what EFA nodes of FILE need before they launch: the cluster placement groups
    /// their node_config names and the security groups' all-traffic rules to themselves, in
    /// and out. Running it again changes nothing and says "already present".
    Prepare(crate::aws::PrepareArgs),
}

/// The cluster file argument.
#[derive(Debug, Args)]
pub(crate) struct ClusterArg {
    /// A Ray cluster-launcher YAML; `${VAR}` and `$VAR` in its values are taken from the
    /// environment.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
}

/// `rayefa up`
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArg,
    /// How long to wait for every node to become ready (for example `900s`, `15m`); the
    /// cluster file's `rayefa.timeouts.ready` otherwise.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
}

/// `rayefa status`
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArg,
    /// How long to wait for the nodes' agents to answer.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
}

/// `rayefa down`
#[derive(Debug, Args)]
pub(crate) struct DownArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArg,
    /// How long to wait for the nodes to stop.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
}

/// `rayefa validate`
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArg,
    /// Check the file only: do not ask the provider (no cloud API calls, no credentials).
    #[arg(long)]
    pub(crate) offline: bool,
}

/// `rayefa user-data`
#[derive(Debug, Args)]
pub(crate) struct UserDataArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArg,
    /// The node type, a key of `available_node_types`.
    #[arg(long, value_name = "TYPE")]
    pub(crate) node_type: String,
    /// The head's address to put in a worker's configuration (known only once the head runs;
    /// a placeholder otherwise).
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) head_address: Option<String>,
}

/// Parses `90`, `90s`, `15m`, `2h` or `500ms`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let wrong =
        || format!("`{text}` is not a duration: use a number with ms, s, m or h (90s, 15m, 2h)");
    let value: f64 = number.parse().map_err(|_| wrong())?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(wrong()),
    };
    check_duration_secs(text, seconds)
}

/// The longest duration rayefa takes anywhere: longer ones are mistakes, and far longer ones
/// overflow the clock when added to the current time.
pub(crate) const MAX_DURATION_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// `seconds` (spelled `text` by the user) as a duration of at most [`MAX_DURATION_SECS`].
pub(crate) fn check_duration_secs(text: &str, seconds: f64) -> Result<Duration, String> {
    if seconds > MAX_DURATION_SECS {
        return Err(format!(
            "`{text}` is longer than 30 days (720h), the longest duration rayefa takes"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        format!("`{text}` is not a duration: use a number with ms, s, m or h (90s, 15m, 2h)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(
            parse_duration("720h"),
            Ok(Duration::from_secs(30 * 24 * 3600))
        );
        assert_eq!(
            parse_duration("18000000000000000000s"),
            Err(
                "`18000000000000000000s` is longer than 30 days (720h), the longest duration \
                 rayefa takes"
                    .to_owned()
            )
        );
    }
}
