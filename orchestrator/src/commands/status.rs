//! `rayefa status FILE`: every node of the cluster with its state and current step.

use std::time::Instant;

use super::agent_client;
use crate::cli::StatusArgs;
use crate::exit::{Error, ExitCode};
use crate::provider;
use crate::view::Output;
use crate::view::report::{
    ClusterSummary, NodeSummary, failure_details, node_table, node_table_verbose,
    ray_version_warning,
};
use crate::wait;
use crate::wait::node::{NodeWatch, Verdict};

/// Runs `status`: exit 0 when no node failed, 1 when one did.
pub(crate) async fn run(args: &StatusArgs, output: Output) -> Result<ExitCode, Error> {
    let cluster = provider::load_cluster(&args.cluster.file)?;
    output.findings(&cluster);
    let provider = provider::for_cluster(&cluster).await?;
    let mut policy = cluster.settings.poll.clone();
    if let Some(timeout) = args.timeout {
        policy.request_timeout = timeout;
    }
    let client = agent_client(&policy)?;
    let now = Instant::now();
    let mut watches: Vec<NodeWatch> = provider
        .list()
        .await?
        .into_iter()
        .map(|n| NodeWatch::new(n, now))
        .collect();
    wait::once(&client, &mut watches, &policy).await;
    wait::read_published(provider.as_ref(), &mut watches).await;
    let records: Vec<_> = watches.iter().map(|w| w.record.clone()).collect();
    let tags = provider.tags(&records).await?;
    let is_autoscaled = |w: &NodeWatch| provider::is_autoscaled(tags.get(&w.record.id));
    let autoscaled: Vec<&str> = watches
        .iter()
        .filter(|w| is_autoscaled(w))
        .map(|w| w.record.id.as_str())
        .collect();
    let failed = watches.iter().any(|w| w.verdict.is_failure());
    let all_ready = !watches.is_empty() && watches.iter().all(|w| w.verdict == Verdict::Ready);
    let outcome = if failed {
        "failed"
    } else if all_ready {
        "ready"
    } else if watches.is_empty() {
        "absent"
    } else {
        "bootstrapping"
    };
    if output.json() {
        output.print_json(&ClusterSummary {
            cluster: cluster.name(),
            provider: cluster.provider_type(),
            outcome,
            launched: Vec::new(),
            nodes: watches
                .iter()
                .map(|w| NodeSummary::of(w).with_autoscaled(is_autoscaled(w)))
                .collect(),
            findings: &cluster.findings,
        });
    } else if watches.is_empty() {
        println!("cluster {} has no nodes", cluster.name());
    } else {
        let table = if output.verbose > 0 {
            node_table_verbose(&watches)
        } else {
            node_table(&watches)
        };
        println!("{table}");
        if !autoscaled.is_empty() {
            println!("launched by Ray's autoscaler: {}", autoscaled.join(", "));
        }
        print!("{}", failure_details(&watches));
        if let Some(warning) = ray_version_warning(&watches) {
            output.say(&warning);
        }
        println!("cluster {}: {outcome}", cluster.name());
    }
    Ok(if failed {
        ExitCode::NodeFailed
    } else {
        ExitCode::Success
    })
}
