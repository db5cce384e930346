//! The command line: every command, its options and its help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rayefa_cluster::duration::parse_duration;

use crate::check::schedule::PairMode;
use crate::provider::aws::TagFilter;
use crate::view::OutputFormat;

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

/// The commands.
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
    /// Draw the cluster's bootstrap as an SVG: a row per node, a bar per step (its start and
    /// duration, attempts, waits for the package lock and pauses before retries, a failed
    /// step in red), from each agent's status document; prints where it wrote it.
    ///
    /// Nodes whose agent does not answer get a row saying why. Exit codes: 0 written; 2 bad
    /// cluster file, no nodes, or the file cannot be written; 3 provider error.
    Timeline(TimelineArgs),
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
    Env(EnvArgs),
    /// List EC2 instance types with vCPUs, cores, memory, architecture, the most EFA
    /// interfaces and network cards, for example `--family 7i,8g,7a --efa`.
    InstanceTypes(InstanceTypesArgs),
    /// Create what EFA nodes of FILE need before they launch: the cluster placement groups
    /// their node_config names and the security groups' all-traffic rules to themselves, in
    /// and out. Running it again changes nothing and says "already present".
    Prepare(PrepareArgs),
    /// Test the fabric between the cluster's nodes, pair by pair: latency (µs) and bandwidth
    /// (MB/s) per pair and message size, through each node's agent and libfabric.
    ///
    /// Pairs run at once, no node in two pairs at a time; `--pairs ring` tests each node with
    /// the next (two or three rounds), `--pairs all` every pair (n-1 or n rounds). Figures more
    /// than 3x the median latency, or under a third of the median bandwidth, are marked as
    /// outliers; a failed pair gets its likely cause in words. The agents are asked with the
    /// cluster's control secret, which `up` made. Exit codes: 0 every pair passed; 1 a pair
    /// failed; 2 bad cluster file or options, fewer than two nodes, or no control secret;
    /// 3 provider error.
    Check(CheckArgs),
    /// Upload the agent packages (what packaging/build makes: .rpm and .deb, x86_64 and
    /// aarch64, the architecture read from the file name) to the cluster file's
    /// rayefa.agent_store (`s3://BUCKET/PREFIX`) and record them in its manifest.json.
    ///
    /// An object that already has the package's SHA-256 is skipped. `up` then hands every node
    /// a presigned URL (valid 3 h) of its architecture's package: nodes need no S3 permission
    /// and nothing is public. Exit codes: 0 published; 2 bad cluster file, no agent_store, or
    /// a file that is not a package; 3 S3 refused or failed (no bucket, no permission).
    Publish(PublishArgs),
    /// The machine interface Ray's autoscaler uses through rayefa's node provider on the head:
    /// launch, list, tag and terminate nodes, JSON on stdout (docs/autoscaling.md).
    #[command(hide = true, subcommand)]
    Nodes(NodesCommand),
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

/// `rayefa timeline`
#[derive(Debug, Args)]
pub(crate) struct TimelineArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArg,
    /// Where to write the SVG; `CLUSTER_NAME-timeline.svg` in the current directory otherwise.
    #[arg(long, value_name = "PATH")]
    pub(crate) out: Option<PathBuf>,
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

/// `rayefa env`
#[derive(Debug, Args)]
pub(crate) struct EnvArgs {
    /// The region to look in; otherwise AWS_REGION or the profile's.
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// The tag that marks the cluster's VPC.
    #[arg(long, value_name = "KEY=VALUE", default_value = "Name=RayVPC")]
    pub(crate) vpc_tag: TagFilter,
    /// The tag that marks the private subnet, in that VPC.
    #[arg(
        long,
        value_name = "KEY=VALUE",
        default_value = "Name=Ray-Private-Subnet"
    )]
    pub(crate) subnet_tag: TagFilter,
    /// The name of the head nodes' security group, in that VPC.
    #[arg(long, value_name = "NAME", default_value = "RayHeadSG")]
    pub(crate) head_sg: String,
    /// The name of the worker nodes' security group, in that VPC.
    #[arg(long, value_name = "NAME", default_value = "RayWorkerSG")]
    pub(crate) worker_sg: String,
}

/// `rayefa instance-types`
#[derive(Debug, Args)]
pub(crate) struct InstanceTypesArgs {
    /// The region to look in; otherwise AWS_REGION or the profile's.
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// Families to show, comma-separated: `7i` matches every type whose name contains `7i`
    /// (m7i, c7i, u7i-6tb...); a value with `*` or `.` is a pattern of its own (`c7i.*`).
    #[arg(long, value_delimiter = ',', value_name = "FAMILY,...")]
    pub(crate) family: Vec<String>,
    /// Only types that support EFA.
    #[arg(long)]
    pub(crate) efa: bool,
}

/// `rayefa publish`
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The cluster file whose rayefa.agent_store to publish to.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The package files, for example target/packages/*.rpm target/packages/*.deb.
    #[arg(value_name = "PACKAGE", required = true)]
    pub(crate) packages: Vec<PathBuf>,
}

/// `rayefa check`
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArg,
    /// The libfabric provider to test (`efa`, `tcp`, ...). Default: `efa` on EC2 when a node
    /// type has EFA interfaces (then only the nodes of such types take part), `tcp` otherwise.
    #[arg(long, value_name = "NAME")]
    pub(crate) provider: Option<String>,
    /// Which pairs: `ring` (each node with the next) or `all` (every pair).
    #[arg(long, value_enum, default_value_t = PairMode::Ring)]
    pub(crate) pairs: PairMode,
    /// Message sizes in bytes, comma-separated: small ones measure latency, large ones
    /// bandwidth.
    #[arg(
        long,
        value_name = "BYTES,...",
        value_delimiter = ',',
        default_value = "64,1048576"
    )]
    pub(crate) sizes: Vec<u64>,
    /// Timed round trips per small size (large sizes take fewer); the agent's default, 1000.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) iterations: Option<u64>,
    /// How long a ping waits for any one completion before the pair counts as not answering
    /// (100ms to 60s).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) timeout: Duration,
}

/// `rayefa prepare`
#[derive(Debug, Args)]
pub(crate) struct PrepareArgs {
    /// The cluster file whose placement groups and EFA security groups to prepare.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
}

/// `rayefa nodes`
#[derive(Debug, Subcommand)]
pub(crate) enum NodesCommand {
    /// Launch COUNT workers of a node type exactly as `up` does, marked as autoscaled, with
    /// the given tags kept by the provider.
    Launch(NodesLaunchArgs),
    /// Every node of the cluster with its lifecycle, its agent's state and its tags.
    List(NodesListArgs),
    /// Add tags to a node (a tag of the same key is replaced).
    SetTags(NodesSetTagsArgs),
    /// Terminate workers by id; ids that no longer exist are reported, not refused.
    Terminate(NodesTerminateArgs),
}

/// `rayefa nodes launch`
#[derive(Debug, Args)]
pub(crate) struct NodesLaunchArgs {
    /// The cluster file.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The node type, a key of `available_node_types`.
    #[arg(long, value_name = "TYPE")]
    pub(crate) node_type: String,
    /// How many nodes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) count: u16,
    /// A tag to keep with each node (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub(crate) tag: Vec<(String, String)>,
}

/// `rayefa nodes list`
#[derive(Debug, Args)]
pub(crate) struct NodesListArgs {
    /// The cluster file.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// How long to wait for each agent's answer (default 2s).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
}

/// `rayefa nodes set-tags`
#[derive(Debug, Args)]
pub(crate) struct NodesSetTagsArgs {
    /// The cluster file.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The node's id.
    #[arg(value_name = "ID")]
    pub(crate) id: String,
    /// A tag to set (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_tag, required = true)]
    pub(crate) tag: Vec<(String, String)>,
}

/// `rayefa nodes terminate`
#[derive(Debug, Args)]
pub(crate) struct NodesTerminateArgs {
    /// The cluster file.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The nodes' ids.
    #[arg(value_name = "ID", required = true)]
    pub(crate) ids: Vec<String>,
}

/// `KEY=VALUE`, the key not empty.
fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}
