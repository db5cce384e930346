//! `rayefa up FILE`: launch the head, then at once the workers with the head's private address
//! (which the launch itself returns), wait for the head's agent, then until every node is ready.
//! The workers boot while the head does: its boot and agent install are not on their path
//! (docs/performance.md); a worker's `ray start` waits for the head's Ray.
//!
//! Running it again on a running cluster launches nothing (and says so); nodes that stopped
//! are started again (their agents resume from their journals); worker types with fewer
//! nodes than `min_workers` get the missing ones.

use std::collections::BTreeMap;
use std::time::Instant;

use rayefa_wire::Role;

use super::agent_client;
use super::check::{self, CheckSummary, Checked, print_summary};
use crate::autoscaling;
use crate::cli::UpArgs;
use crate::exit::{Error, ExitCode};
use crate::provider::{self, LaunchRequest, NodeRecord, Provider, ProviderError};
use crate::view::Output;
use crate::view::report::{
    ClusterSummary, NodeSummary, failure_details, node_table, ray_version_warning,
};
use crate::wait::Progress;
use crate::wait::node::{NodeWatch, Verdict};
use crate::wait::{self, WaitOutcome};
use rayefa_cluster::Cluster;
use rayefa_cluster::render::render_agent_config;

/// Runs `up`.
pub(crate) async fn run(args: &UpArgs, output: Output) -> Result<ExitCode, Error> {
    let cluster = provider::load_cluster(&args.cluster.file)?;
    output.findings(&cluster);
    let provider = provider::for_cluster(&cluster).await?;
    let policy = cluster.settings.poll.clone();
    let client = agent_client(&policy)?;
    let started = Instant::now();
    let deadline = started + args.timeout.unwrap_or(cluster.settings.ready_timeout);
    let mut progress = output.progress();
    if let Some(location) = provider.location() {
        progress.message(&format!("cluster {} ({location})", cluster.name()));
    }

    let existing = provider.list().await?;
    let mut touched: Vec<String> = Vec::new();

    // What RunInstances returned: watched even while EC2's listings do not show it yet.
    let mut launched: Vec<NodeRecord> = Vec::new();

    let head = ensure_head(
        &cluster,
        provider.as_ref(),
        &existing,
        &mut touched,
        &mut launched,
        progress.as_mut(),
    )
    .await?;
    let head_address = head.private_address.clone().ok_or_else(|| {
        ProviderError::Failed(format!("the head {} has no private address", head.id))
    })?;

    for (node_type, wanted) in cluster.worker_counts() {
        let launched = ensure_workers(
            &cluster,
            provider.as_ref(),
            &existing,
            node_type,
            wanted,
            &head_address,
            &mut touched,
            &mut launched,
            progress.as_mut(),
        )
        .await;
        if let Err(error) = launched {
            progress.finish();
            output.say(&format!(
                "the nodes launched so far keep running ({}); `rayefa status` shows them, \
                 `rayefa down` removes them",
                touched.join(", ")
            ));
            return Err(error);
        }
    }

    let mut head_watch = if launched.iter().any(|n| n.id == head.id) {
        NodeWatch::launched(head.clone(), Instant::now())
    } else {
        NodeWatch::new(head.clone(), Instant::now())
    };
    progress.update(&head_watch);
    let head_deadline = (Instant::now() + cluster.settings.head_agent_timeout).min(deadline);
    let healthy = wait::until_healthy(
        provider.as_ref(),
        &client,
        &mut head_watch,
        &policy,
        head_deadline,
        progress.as_mut(),
    )
    .await;
    if healthy != WaitOutcome::Ready {
        progress.finish();
        if healthy == WaitOutcome::TimedOut {
            output.say(&format!(
                "the head's agent ({}) did not answer within {}s",
                head.id,
                head_deadline.saturating_duration_since(started).as_secs()
            ));
        }
        terminate_orphaned_workers(provider.as_ref(), &launched, &head.id, &output).await;
        return Ok(report(
            &output,
            &cluster,
            &[head_watch],
            &touched,
            healthy,
            None,
        ));
    }
    let listed = provider.list().await?;
    if touched.is_empty() {
        let running = listed.iter().filter(|n| n.lifecycle.is_alive()).count();
        progress.message(&format!(
            "cluster {} is already up: {running} node{} running, nothing launched",
            cluster.name(),
            if running == 1 { "" } else { "s" }
        ));
    }
    let now = Instant::now();
    let mut watches: Vec<NodeWatch> = listed
        .iter()
        .filter(|n| n.lifecycle.is_alive() || touched.contains(&n.id))
        .map(|n| NodeWatch::new(n.clone(), now))
        .collect();
    for node in launched
        .iter()
        .filter(|n| !listed.iter().any(|l| l.id == n.id))
    {
        progress.message(&format!(
            "{} is not listed by the provider yet; watching it as launched",
            node.id
        ));
        watches.push(NodeWatch::launched(node.clone(), now));
    }
    for watch in &watches {
        progress.update(watch);
    }
    let outcome = wait::until_ready(
        provider.as_ref(),
        &client,
        &mut watches,
        &policy,
        deadline,
        progress.as_mut(),
    )
    .await;
    progress.finish();
    if outcome == WaitOutcome::TimedOut {
        output.say(&format!(
            "timed out after {}s waiting for the nodes to be ready",
            started.elapsed().as_secs()
        ));
    }
    let missing = shortfall(&wanted_nodes(&cluster), &watches);
    let outcome = if outcome == WaitOutcome::Ready && !missing.is_empty() {
        output.say(&format!(
            "fewer nodes are ready than the cluster file asks for: {}",
            missing.join("; ")
        ));
        WaitOutcome::Failed
    } else {
        outcome
    };
    if let Some(warning) = ray_version_warning(&watches) {
        output.say(&warning);
    }
    let check = if outcome == WaitOutcome::Ready && cluster.settings.check {
        fabric_check(&cluster, provider.as_ref(), &output).await
    } else {
        None
    };
    Ok(report(
        &output,
        &cluster,
        &watches,
        &touched,
        outcome,
        check.as_ref(),
    ))
}

/// `rayefa.check: true`: the fabric check of `rayefa check` with its defaults, once every
/// node is ready. `None` when the cluster has fewer than two nodes to check (said on stderr).
async fn fabric_check(
    cluster: &Cluster,
    provider: &dyn Provider,
    output: &Output,
) -> Option<Result<CheckSummary, Error>> {
    match check::check(cluster, provider, &check::Options::default(), output).await {
        Ok(Checked::Ran(summary)) => Some(Ok(summary)),
        Ok(Checked::TooFewNodes(why)) => {
            output.say(&format!("rayefa.check: {why}; skipped"));
            None
        }
        Err(error) => Some(Err(error)),
    }
}

/// How many nodes of each type the cluster file asks for: one head, `min_workers` of each
/// worker type.
fn wanted_nodes(cluster: &Cluster) -> Vec<(String, usize)> {
    let mut wanted = vec![(cluster.head_type().to_owned(), 1)];
    wanted.extend(
        cluster
            .worker_counts()
            .into_iter()
            .map(|(node_type, count)| (node_type.to_owned(), count)),
    );
    wanted
}

/// The node types with fewer ready nodes than `wanted`, in words ("efa_worker_node: 0 of 1
/// ready"); empty when every type has its count.
fn shortfall(wanted: &[(String, usize)], watches: &[NodeWatch]) -> Vec<String> {
    wanted
        .iter()
        .filter_map(|(node_type, count)| {
            let ready = watches
                .iter()
                .filter(|w| &w.record.node_type == node_type && w.verdict == Verdict::Ready)
                .count();
            (ready < *count).then(|| format!("{node_type}: {ready} of {count} ready"))
        })
        .collect()
}

/// The head that runs: the one that already does, a stopped one started again, or a new one.
async fn ensure_head(
    cluster: &Cluster,
    provider: &dyn Provider,
    existing: &[NodeRecord],
    touched: &mut Vec<String>,
    launched: &mut Vec<NodeRecord>,
    progress: &mut dyn Progress,
) -> Result<NodeRecord, Error> {
    let heads: Vec<&NodeRecord> = existing.iter().filter(|n| n.role == Role::Head).collect();
    if let Some(head) = heads.iter().find(|n| n.lifecycle.is_alive()) {
        return Ok((*head).clone());
    }
    if let Some(stopped) = heads.first() {
        progress.message(&format!(
            "starting the head {} again (it had stopped)",
            stopped.id
        ));
        let head = provider.restart(stopped).await?;
        touched.push(head.id.clone());
        return Ok(head);
    }
    let head_type = cluster.head_type();
    progress.message(&format!("launching the head ({head_type})"));
    let head = launch_nodes(
        cluster,
        provider,
        &Launch {
            node_type: head_type,
            role: Role::Head,
            count: 1,
            head_address: None,
            tags: &BTreeMap::new(),
        },
    )
    .await?
    .pop()
    .ok_or_else(|| ProviderError::Failed("the provider launched no head".to_owned()))?;
    touched.push(head.id.clone());
    launched.push(head.clone());
    Ok(head)
}

/// Brings the workers of `node_type` up to `wanted`: stopped ones first, then new ones.
#[allow(clippy::too_many_arguments)]
async fn ensure_workers(
    cluster: &Cluster,
    provider: &dyn Provider,
    existing: &[NodeRecord],
    node_type: &str,
    wanted: usize,
    head_address: &str,
    touched: &mut Vec<String>,
    launched: &mut Vec<NodeRecord>,
    progress: &mut dyn Progress,
) -> Result<(), Error> {
    let of_type: Vec<&NodeRecord> = existing
        .iter()
        .filter(|n| n.role == Role::Worker && n.node_type == node_type)
        .collect();
    let mut have = of_type.iter().filter(|n| n.lifecycle.is_alive()).count();
    for stopped in of_type.iter().filter(|n| !n.lifecycle.is_alive()) {
        if have >= wanted {
            break;
        }
        progress.message(&format!(
            "starting worker {} again (it had stopped)",
            stopped.id
        ));
        let node = provider.restart(stopped).await?;
        touched.push(node.id);
        have += 1;
    }
    if have >= wanted {
        return Ok(());
    }
    let count = wanted - have;
    progress.message(&format!(
        "launching {count} worker{} of type {node_type}",
        if count == 1 { "" } else { "s" }
    ));
    let started = launch_nodes(
        cluster,
        provider,
        &Launch {
            node_type,
            role: Role::Worker,
            count,
            head_address: Some(head_address),
            tags: &BTreeMap::new(),
        },
    )
    .await?;
    touched.extend(started.iter().map(|n| n.id.clone()));
    launched.extend(started);
    Ok(())
}

/// What [`launch_nodes`] starts.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    /// The node type's key in `available_node_types`.
    pub(crate) node_type: &'a str,
    /// Head or worker.
    pub(crate) role: Role,
    /// How many nodes.
    pub(crate) count: usize,
    /// The head's private address, for workers.
    pub(crate) head_address: Option<&'a str>,
    /// Tags kept with each node (see [`LaunchRequest::tags`]).
    pub(crate) tags: &'a BTreeMap<String, String>,
}

/// The workers this run launched beside a head that never became healthy: they cannot join
/// a cluster, and on a large cluster of expensive instances they would run until someone
/// noticed. They are terminated; workers that were already running are left alone, and the
/// head stays for `rayefa status` to show why.
async fn terminate_orphaned_workers(
    provider: &dyn Provider,
    launched: &[NodeRecord],
    head_id: &str,
    output: &Output,
) {
    let workers: Vec<NodeRecord> = launched
        .iter()
        .filter(|n| n.id != head_id)
        .cloned()
        .collect();
    if workers.is_empty() {
        return;
    }
    let ids: Vec<&str> = workers.iter().map(|n| n.id.as_str()).collect();
    match provider.terminate(&workers).await {
        Ok(_) => output.say(&format!(
            "terminated the workers launched with the head ({}): they cannot join a head that \
             is not up",
            ids.join(", ")
        )),
        Err(error) => output.say(&format!(
            "the workers launched with the head ({}) could not be terminated: {error}; \
             `rayefa down` removes them",
            ids.join(", ")
        )),
    }
}

/// Renders the agent configuration of a node type and role (a head's with Ray's autoscaler
/// when the cluster scales) and launches `launch.count` nodes with it: the one way nodes are
/// launched, by `up` and by `rayefa nodes launch` for Ray's autoscaler.
pub(crate) async fn launch_nodes(
    cluster: &Cluster,
    provider: &dyn Provider,
    launch: &Launch<'_>,
) -> Result<Vec<NodeRecord>, Error> {
    let mut config =
        render_agent_config(cluster, launch.node_type, launch.role, launch.head_address);
    if launch.role == Role::Head {
        config.autoscaling = autoscaling::head_section(cluster)?;
    }
    Ok(provider
        .launch(LaunchRequest {
            node_type: launch.node_type,
            role: launch.role,
            count: launch.count,
            config: &config,
            tags: launch.tags,
        })
        .await?)
}

/// `up --output json`: the cluster's summary, and the fabric check's when `rayefa.check` ran
/// it.
#[derive(serde::Serialize)]
struct UpSummary<'a> {
    #[serde(flatten)]
    cluster: ClusterSummary<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<CheckReport<'a>>,
}

/// The fabric check in `up`'s JSON: its summary, or why it could not run.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum CheckReport<'a> {
    Ran(&'a CheckSummary),
    CouldNotRun {
        outcome: &'static str,
        error: String,
    },
}

/// Prints the outcome (and the fabric check's, when `rayefa.check` ran it) and returns its
/// exit code: a failed check fails `up` (1), a check that could not run gives its error's.
fn report(
    output: &Output,
    cluster: &Cluster,
    watches: &[NodeWatch],
    touched: &[String],
    outcome: WaitOutcome,
    check: Option<&Result<CheckSummary, Error>>,
) -> ExitCode {
    let (word, code) = match outcome {
        WaitOutcome::Ready => ("ready", ExitCode::Success),
        WaitOutcome::Failed => ("failed", ExitCode::NodeFailed),
        WaitOutcome::TimedOut => ("timed-out", ExitCode::TimedOut),
    };
    let code = match check {
        Some(Ok(summary)) if !summary.passed() => ExitCode::NodeFailed,
        Some(Err(error)) => ExitCode::from(error),
        _ => code,
    };
    if output.json() {
        output.print_json(&UpSummary {
            cluster: ClusterSummary {
                cluster: cluster.name(),
                provider: cluster.provider_type(),
                outcome: word,
                launched: touched.to_vec(),
                nodes: watches.iter().map(NodeSummary::of).collect(),
                findings: &cluster.findings,
            },
            check: check.map(|check| match check {
                Ok(summary) => CheckReport::Ran(summary),
                Err(error) => CheckReport::CouldNotRun {
                    outcome: "error",
                    error: error.to_string(),
                },
            }),
        });
        return code;
    }
    if !output.quiet {
        println!("{}", node_table(watches));
    }
    let details = failure_details(watches);
    if !details.is_empty() {
        print!("{details}");
    }
    match outcome {
        WaitOutcome::Ready => println!(
            "cluster {}: {} node{} ready",
            cluster.name(),
            watches.len(),
            if watches.len() == 1 { "" } else { "s" }
        ),
        WaitOutcome::Failed => println!("cluster {}: a node failed", cluster.name()),
        WaitOutcome::TimedOut => println!("cluster {}: not ready in time", cluster.name()),
    }
    match check {
        Some(Ok(summary)) => {
            print_summary(summary, output);
            if !summary.passed() {
                println!(
                    "cluster {}: the fabric check failed (rayefa.check)",
                    cluster.name()
                );
            }
        }
        Some(Err(error)) => println!(
            "cluster {}: the fabric check could not run (rayefa.check): {error}",
            cluster.name()
        ),
        None => {}
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Lifecycle;

    fn watch(id: &str, node_type: &str, ready: bool) -> NodeWatch {
        let mut watch = NodeWatch::launched(
            NodeRecord {
                id: id.into(),
                node_type: node_type.into(),
                role: Role::Worker,
                agent_address: None,
                private_address: None,
                lifecycle: Lifecycle::Running,
                launched_at_ms: None,
            },
            Instant::now(),
        );
        if ready {
            watch.verdict = Verdict::Ready;
        }
        watch
    }

    #[test]
    fn success_needs_every_node_the_file_asks_for() {
        let wanted = vec![("head".to_owned(), 1), ("efa".to_owned(), 2)];
        let all = [
            watch("h", "head", true),
            watch("w1", "efa", true),
            watch("w2", "efa", true),
        ];
        assert!(shortfall(&wanted, &all).is_empty());
        // Nothing watched at all (the listing was empty) is not success.
        assert_eq!(
            shortfall(&wanted, &[]),
            ["head: 0 of 1 ready", "efa: 0 of 2 ready"]
        );
        let one_short = [watch("h", "head", true), watch("w1", "efa", true)];
        assert_eq!(shortfall(&wanted, &one_short), ["efa: 1 of 2 ready"]);
        let not_ready = [
            watch("h", "head", true),
            watch("w1", "efa", true),
            watch("w2", "efa", false),
        ];
        assert_eq!(shortfall(&wanted, &not_ready), ["efa: 1 of 2 ready"]);
    }
}
