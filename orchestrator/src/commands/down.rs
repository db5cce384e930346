//! `rayefa down FILE`: stop and remove every node of the cluster.

use serde::Serialize;

use crate::cli::DownArgs;
use crate::exit::{Error, ExitCode};
use crate::provider::{self, Termination};
use crate::view::Output;

/// What `down --output json` prints.
#[derive(Debug, Serialize)]
struct DownSummary<'a> {
    cluster: &'a str,
    provider: &'a str,
    nodes: Vec<StoppedNode>,
}

#[derive(Debug, Serialize)]
struct StoppedNode {
    id: String,
    outcome: String,
}

/// Runs `down`.
pub(crate) async fn run(args: &DownArgs, output: Output) -> Result<ExitCode, Error> {
    let mut cluster = provider::load_cluster(&args.cluster.file)?;
    output.findings(&cluster);
    cluster.settings.down_timeout = args.timeout;
    let provider = provider::for_cluster(&cluster).await?;
    let nodes = provider.list().await?;
    let stopped: Vec<Termination> = if nodes.is_empty() {
        Vec::new()
    } else {
        output.say(&format!(
            "stopping {} node{} of cluster {}",
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" },
            cluster.name()
        ));
        provider.terminate(&nodes).await?
    };
    if output.json() {
        output.print_json(&DownSummary {
            cluster: cluster.name(),
            provider: cluster.provider_type(),
            nodes: stopped
                .into_iter()
                .map(|t| StoppedNode {
                    id: t.id,
                    outcome: t.outcome,
                })
                .collect(),
        });
        return Ok(ExitCode::Success);
    }
    for termination in &stopped {
        println!("node {}: {}", termination.id, termination.outcome);
    }
    if stopped.is_empty() {
        println!("cluster {} has no nodes: nothing to stop", cluster.name());
    } else {
        println!(
            "cluster {}: {} node{} stopped and removed",
            cluster.name(),
            stopped.len(),
            if stopped.len() == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::Success)
}
