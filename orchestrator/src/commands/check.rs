//! `rayefa check FILE`: the fabric between the cluster's nodes, pair by pair (docs/check.md).
//!
//! The nodes come from the provider; the tests run through each agent's control surface with
//! the cluster's control secret, read from where the provider keeps it. `up` runs the same
//! check at its end when the cluster file says `rayefa.check: true`.

use std::time::{Duration, Instant};

use comfy_table::{CellAlignment, ContentArrangement};
use serde::Serialize;

use crate::check::schedule::PairMode;
use crate::check::{self, CheckNode, PairReport, Plan};
use crate::cli::CheckArgs;
use crate::exit::{Error, ExitCode};
use crate::provider::control_secret::ControlSecret;
use crate::provider::{self, Lifecycle, NodeRecord, Provider};
use crate::view::{Output, table};
use rayefa_cluster::{Cluster, efa_interfaces};

/// The message sizes tested unless told otherwise: a small one for latency, a large one for
/// bandwidth.
pub(crate) const DEFAULT_SIZES: [u64; 2] = [64, 1 << 20];

/// The smallest message: the ping-pong's header.
pub(crate) const MIN_SIZE: u64 = 16;

/// What to check, as the command line or `up` asks.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The libfabric provider; `None` picks it from the cluster ([`default_provider`]).
    pub(crate) provider: Option<String>,
    /// Which pairs.
    pub(crate) mode: PairMode,
    /// Message sizes in bytes.
    pub(crate) sizes: Vec<u64>,
    /// Timed round trips per small size; the agent's default (1000) when absent.
    pub(crate) iterations: Option<u64>,
    /// How long a ping waits for any one completion.
    pub(crate) timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            provider: None,
            mode: PairMode::Ring,
            sizes: DEFAULT_SIZES.to_vec(),
            iterations: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A check's result: what was tested and how every pair ended.
#[derive(Debug, Serialize)]
pub(crate) struct CheckSummary {
    /// The cluster's name.
    pub(crate) cluster: String,
    /// The libfabric provider tested.
    pub(crate) provider: String,
    /// `ring` or `all`.
    pub(crate) mode: &'static str,
    /// Message sizes in bytes.
    pub(crate) sizes: Vec<u64>,
    /// The ping's completion timeout, in seconds.
    pub(crate) timeout_secs: f64,
    /// `passed` when every pair passed, `failed` otherwise.
    pub(crate) outcome: &'static str,
    /// The nodes tested.
    pub(crate) nodes: Vec<String>,
    /// Rounds run.
    pub(crate) rounds: usize,
    /// How long the whole check took.
    pub(crate) seconds: f64,
    /// Every pair.
    pub(crate) pairs: Vec<PairReport>,
}

impl CheckSummary {
    /// True when every pair passed.
    pub(crate) fn passed(&self) -> bool {
        self.pairs.iter().all(|p| p.outcome.passed())
    }
}

/// Runs `check`: exit 0 when every pair passed, 1 when one failed.
pub(crate) async fn run(args: &CheckArgs, output: Output) -> Result<ExitCode, Error> {
    let cluster = provider::load_cluster(&args.cluster.file)?;
    output.findings(&cluster);
    if args.sizes.iter().any(|&s| s < MIN_SIZE) {
        return Err(Error::Usage(format!(
            "--sizes: every size must be at least {MIN_SIZE} bytes (the ping-pong's header)"
        )));
    }
    if !(0.1..=60.0).contains(&args.timeout.as_secs_f64()) {
        return Err(Error::Usage(
            "--timeout must be between 100ms and 60s".to_owned(),
        ));
    }
    let options = Options {
        provider: args.provider.clone(),
        mode: args.pairs,
        sizes: args.sizes.clone(),
        iterations: args.iterations,
        timeout: args.timeout,
    };
    let provider = provider::for_cluster(&cluster).await?;
    let summary = match check(&cluster, provider.as_ref(), &options, &output).await? {
        Checked::Ran(summary) => summary,
        Checked::TooFewNodes(why) => return Err(Error::Usage(why)),
    };
    if output.json() {
        output.print_json(&summary);
    } else {
        print_summary(&summary, &output);
    }
    Ok(if summary.passed() {
        ExitCode::Success
    } else {
        ExitCode::NodeFailed
    })
}

/// What [`check`] did.
#[derive(Debug)]
pub(crate) enum Checked {
    /// Every pair was tested.
    Ran(CheckSummary),
    /// Fewer than two nodes take part: nothing to test (the reason, in words).
    TooFewNodes(String),
}

/// Tests the pairs `options` asks for between the nodes `provider` lists for `cluster`,
/// with a progress line per round on stderr.
pub(crate) async fn check(
    cluster: &Cluster,
    provider: &dyn Provider,
    options: &Options,
    output: &Output,
) -> Result<Checked, Error> {
    let fabric = options
        .provider
        .clone()
        .unwrap_or_else(|| default_provider(cluster).to_owned());
    let listed = provider.list().await?;
    let nodes = participants(cluster, &fabric, &listed);
    if nodes.len() < 2 {
        return Ok(Checked::TooFewNodes(format!(
            "cluster {} has {} node{} to check with provider `{fabric}`: a check needs two",
            cluster.name(),
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" }
        )));
    }
    let secret_file = provider.control_secret_file()?;
    let secret = ControlSecret::load(&secret_file)
        .map_err(provider::ProviderError::from)?
        .ok_or_else(|| {
            Error::Usage(
                provider::control_secret::SecretError::Missing {
                    path: secret_file.display().to_string(),
                }
                .to_string(),
            )
        })?;
    let plan = Plan {
        provider: fabric,
        mode: options.mode,
        sizes: options.sizes.clone(),
        iterations: options.iterations,
        timeout: options.timeout,
    };
    output.say(&format!(
        "checking the fabric ({}) between {} nodes: {} pairs",
        plan.provider,
        nodes.len(),
        plan.mode.as_str()
    ));
    let started = Instant::now();
    let pairs = check::run(&nodes, &plan, secret.expose(), |round, rounds, ended| {
        let passed = ended.iter().filter(|p| p.outcome.passed()).count();
        output.say(&format!(
            "  round {round} of {rounds}: {passed} of {} pair{} passed",
            ended.len(),
            if ended.len() == 1 { "" } else { "s" }
        ));
    })
    .await
    .map_err(Error::Internal)?;
    let rounds = pairs.iter().map(|p| p.round).max().unwrap_or(0);
    let summary = CheckSummary {
        cluster: cluster.name().to_owned(),
        provider: plan.provider,
        mode: plan.mode.as_str(),
        sizes: plan.sizes,
        timeout_secs: plan.timeout.as_secs_f64(),
        outcome: if pairs.iter().all(|p| p.outcome.passed()) {
            "passed"
        } else {
            "failed"
        },
        nodes: nodes.into_iter().map(|n| n.name).collect(),
        rounds,
        seconds: started.elapsed().as_secs_f64(),
        pairs,
    };
    Ok(Checked::Ran(summary))
}

/// `efa` when the cluster runs on EC2 and some node type asks for EFA interfaces; `tcp`
/// (libfabric's sockets over IP, which every node has) otherwise.
pub(crate) fn default_provider(cluster: &Cluster) -> &'static str {
    if cluster.provider_type() == "aws" && has_efa_types(cluster) {
        "efa"
    } else {
        "tcp"
    }
}

fn has_efa_types(cluster: &Cluster) -> bool {
    cluster
        .node_type_names()
        .iter()
        .any(|name| node_type_has_efa(cluster, name))
}

fn node_type_has_efa(cluster: &Cluster, name: &str) -> bool {
    cluster
        .node_type(name)
        .is_some_and(|t| efa_interfaces(&t.node_config.value) > 0)
}

/// The nodes that take part, in the provider's order: for `efa`, the nodes of node types with
/// EFA interfaces when the file has such types (a head without EFA is left out); every node
/// otherwise. Nodes the provider knows stopped stay in, so that their pairs fail and say so.
fn participants(cluster: &Cluster, fabric: &str, listed: &[NodeRecord]) -> Vec<CheckNode> {
    let only_efa_types = fabric == "efa" && has_efa_types(cluster);
    listed
        .iter()
        .filter(|n| !only_efa_types || node_type_has_efa(cluster, &n.node_type))
        .map(|node| CheckNode {
            name: node.id.clone(),
            agent: node.agent_address,
            // EFA addresses are not IP addresses; IP providers bind to the node's own.
            fabric_source: (fabric != "efa")
                .then(|| node.private_address.clone())
                .flatten(),
            down: match &node.lifecycle {
                Lifecycle::Running => None,
                Lifecycle::Pending => Some("the provider says it is still starting".to_owned()),
                // The first line: the local provider adds the agent log's tail after it.
                Lifecycle::Stopped { why } => Some(format!(
                    "the provider says it stopped: {}",
                    why.lines().next().unwrap_or_default().trim_end_matches(';')
                )),
            },
        })
        .collect()
}

/// Prints the table of pairs, the outliers and the causes of failed pairs, then a summary
/// line.
pub(crate) fn print_summary(summary: &CheckSummary, output: &Output) {
    let mut header = vec!["FROM".to_owned(), "TO".to_owned(), "OUTCOME".to_owned()];
    for &size in &summary.sizes {
        header.push(format!("{} µs", size_label(size)));
        header.push(format!("{} MB/s", size_label(size)));
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut rows = table(&header);
    rows.set_content_arrangement(ContentArrangement::Dynamic);
    for pair in &summary.pairs {
        let mut row = vec![
            pair.from.clone(),
            pair.to.clone(),
            pair.outcome.label().to_owned(),
        ];
        for (i, &size) in summary.sizes.iter().enumerate() {
            // The agent cuts sizes to what the listener takes; such a result is matched by order.
            let figures = pair
                .results
                .iter()
                .find(|f| f.measured.size == size)
                .or_else(|| pair.results.get(i));
            match figures {
                Some(f) => {
                    let mark = if f.outlier.is_some() { " !" } else { "" };
                    row.push(format!("{:.1}{mark}", f.measured.latency_us));
                    row.push(format!("{:.1}{mark}", f.measured.bandwidth_mb_s));
                }
                None => row.extend(["-".to_owned(), "-".to_owned()]),
            }
        }
        rows.add_row(row);
    }
    for column in 3..header.len() {
        if let Some(c) = rows.column_mut(column) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    if !output.quiet {
        println!("{rows}");
    }
    for pair in &summary.pairs {
        for figures in &pair.results {
            if let Some(why) = &figures.outlier {
                println!(
                    "outlier: {} to {}, {}: {why}",
                    pair.from,
                    pair.to,
                    size_label(figures.measured.size)
                );
            }
        }
    }
    for cause in summary.pairs.iter().filter_map(|p| p.cause.as_deref()) {
        println!("failed: {cause}");
    }
    let passed = summary.pairs.iter().filter(|p| p.outcome.passed()).count();
    println!(
        "fabric check of cluster {} ({}, {} pairs): {passed} of {} pair{} passed in {:.1} s",
        summary.cluster,
        summary.provider,
        summary.mode,
        summary.pairs.len(),
        if summary.pairs.len() == 1 { "" } else { "s" },
        summary.seconds
    );
}

/// `64 B`, `64 KiB`, `1 MiB`.
fn size_label(size: u64) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size_label(64), "64 B");
        assert_eq!(size_label(65536), "64 KiB");
        assert_eq!(size_label(1 << 20), "1 MiB");
        assert_eq!(size_label(1_000_000), "1000000 B");
    }
}
