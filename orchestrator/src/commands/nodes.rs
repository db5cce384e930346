//! `rayefa nodes launch|list|set-tags|terminate FILE ...`: the machine interface that Ray's
//! autoscaler drives through rayefa's node provider on the head. Always JSON on stdout.
//!
//! `launch` goes through [`super::up::launch_nodes`], so a node Ray asks for boots exactly as
//! `up`'s (same agent configuration, same provider, same tags, preflight and placement on
//! EC2); it carries the `rayefa-autoscaled` tag and Ray's own tags, kept by the provider.
//! `list` reads each agent's state with the same polling `status` uses, with a short timeout.
//!
//! One node in the output:
//!
//! ```json
//! {"id": "worker-1", "node_type": "worker", "role": "worker", "private_address": "127.0.0.3",
//!  "agent_address": "127.0.0.3:8700", "lifecycle": "running", "agent_state": "ready",
//!  "agent_step": null, "agent_error": null, "autoscaled": true,
//!  "tags": {"ray-node-type": "worker", "ray-user-node-type": "worker", ...}}
//! ```
//!
//! `lifecycle` is `pending`, `running` or `stopped`; `agent_state` is what `rayefa status`
//! shows (`no-answer`, `bootstrapping`, `ready`, `failed`, `unreachable`, `stopped`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rayefa_wire::Role;
use serde::Serialize;

use super::agent_client;
use super::up::{Launch, launch_nodes};
use crate::cli::{
    NodesCommand, NodesLaunchArgs, NodesListArgs, NodesSetTagsArgs, NodesTerminateArgs,
};
use crate::exit::{Error, ExitCode};
use crate::provider::{self, AUTOSCALED_TAG, Lifecycle, NodeRecord, Provider, is_autoscaled};
use crate::view::Output;
use crate::view::report::NodeSummary;
use crate::wait;
use crate::wait::node::NodeWatch;

/// How long `list` waits for each agent by default: Ray's autoscaler lists every few seconds.
const LIST_AGENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs a `nodes` subcommand.
pub(crate) async fn run(command: &NodesCommand, output: Output) -> Result<ExitCode, Error> {
    match command {
        NodesCommand::Launch(args) => launch(args, output).await,
        NodesCommand::List(args) => list(args, output).await,
        NodesCommand::SetTags(args) => set_tags(args, output).await,
        NodesCommand::Terminate(args) => terminate(args, output).await,
    }
}

/// One node as the `nodes` commands print it.
#[derive(Debug, Serialize)]
struct NodeJson {
    id: String,
    node_type: String,
    role: &'static str,
    private_address: Option<String>,
    agent_address: Option<String>,
    lifecycle: &'static str,
    agent_state: &'static str,
    agent_step: Option<String>,
    agent_error: Option<String>,
    autoscaled: bool,
    tags: BTreeMap<String, String>,
}

impl NodeJson {
    fn of(watch: &NodeWatch, tags: Option<&BTreeMap<String, String>>) -> Self {
        let record = &watch.record;
        let summary = NodeSummary::of(watch);
        Self {
            id: record.id.clone(),
            node_type: record.node_type.clone(),
            role: record.role.as_str(),
            private_address: record.private_address.clone(),
            agent_address: record.agent_address.map(|a| a.to_string()),
            lifecycle: match record.lifecycle {
                Lifecycle::Pending => "pending",
                Lifecycle::Running => "running",
                Lifecycle::Stopped { .. } => "stopped",
            },
            agent_state: summary.state,
            agent_step: summary.step,
            agent_error: summary.error,
            autoscaled: is_autoscaled(tags),
            tags: tags.cloned().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Nodes {
    cluster: String,
    nodes: Vec<NodeJson>,
}

async fn open(
    file: &std::path::Path,
) -> Result<(rayefa_cluster::Cluster, Box<dyn Provider>), Error> {
    let cluster = provider::load_cluster(file)?;
    let provider = provider::for_cluster(&cluster).await?;
    if !provider.keeps_tags() {
        return Err(Error::Usage(format!(
            "{}: the {} provider does not keep tags per node yet, which Ray's autoscaler needs",
            cluster.display_path(),
            cluster.provider_type()
        )));
    }
    Ok((cluster, provider))
}

async fn launch(args: &NodesLaunchArgs, output: Output) -> Result<ExitCode, Error> {
    let (cluster, provider) = open(&args.file).await?;
    super::known_node_type(&cluster, &args.node_type)?;
    let mut tags: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in &args.tag {
        if key.starts_with("rayefa-") {
            return Err(Error::Usage(format!(
                "--tag {key}: tags starting with `rayefa-` are rayefa's own"
            )));
        }
        tags.insert(key.clone(), value.clone());
    }
    tags.insert(AUTOSCALED_TAG.to_owned(), "true".to_owned());
    let head = provider
        .list()
        .await?
        .into_iter()
        .find(|n| n.role == Role::Head && n.lifecycle.is_alive())
        .ok_or_else(|| {
            Error::Usage(format!(
                "cluster {} has no running head: `rayefa up {}` starts it",
                cluster.name(),
                args.file.display()
            ))
        })?;
    let head_address = head
        .private_address
        .clone()
        .ok_or_else(|| Error::Usage(format!("the head {} has no private address yet", head.id)))?;
    let launched = launch_nodes(
        &cluster,
        provider.as_ref(),
        &Launch {
            node_type: &args.node_type,
            role: Role::Worker,
            count: usize::from(args.count),
            head_address: Some(&head_address),
            tags: &tags,
        },
    )
    .await?;
    let now = Instant::now();
    let nodes = launched
        .into_iter()
        .map(|record| NodeJson::of(&NodeWatch::launched(record, now), Some(&tags)))
        .collect();
    output.print_json(&Nodes {
        cluster: cluster.name().to_owned(),
        nodes,
    });
    Ok(ExitCode::Success)
}

async fn list(args: &NodesListArgs, output: Output) -> Result<ExitCode, Error> {
    let (cluster, provider) = open(&args.file).await?;
    let mut policy = cluster.settings.poll.clone();
    policy.request_timeout = args.timeout.unwrap_or(LIST_AGENT_TIMEOUT);
    let client = agent_client(&policy)?;
    let records: Vec<NodeRecord> = provider.list().await?;
    let tags = provider.tags(&records).await?;
    let now = Instant::now();
    let mut watches: Vec<NodeWatch> = records
        .into_iter()
        .map(|n| NodeWatch::new(n, now))
        .collect();
    wait::once(&client, &mut watches, &policy).await;
    wait::read_published(provider.as_ref(), &mut watches).await;
    output.print_json(&Nodes {
        cluster: cluster.name().to_owned(),
        nodes: watches
            .iter()
            .map(|w| NodeJson::of(w, tags.get(&w.record.id)))
            .collect(),
    });
    Ok(ExitCode::Success)
}

async fn set_tags(args: &NodesSetTagsArgs, output: Output) -> Result<ExitCode, Error> {
    let (_, provider) = open(&args.file).await?;
    let tags: BTreeMap<String, String> = args.tag.iter().cloned().collect();
    if let Some(key) = tags.keys().find(|k| k.starts_with("rayefa-")) {
        return Err(Error::Usage(format!(
            "--tag {key}: tags starting with `rayefa-` are rayefa's own"
        )));
    }
    provider.set_tags(&args.id, &tags).await?;
    output.print_json(&serde_json::json!({ "id": args.id, "tags": tags }));
    Ok(ExitCode::Success)
}

async fn terminate(args: &NodesTerminateArgs, output: Output) -> Result<ExitCode, Error> {
    let (cluster, provider) = open(&args.file).await?;
    let listed = provider.list().await?;
    let mut chosen = Vec::new();
    let mut absent = Vec::new();
    for id in &args.ids {
        match listed.iter().find(|n| &n.id == id) {
            Some(node) if node.role == Role::Head => {
                return Err(Error::Usage(format!(
                    "{id} is the head of cluster {}: `rayefa down` removes it",
                    cluster.name()
                )));
            }
            Some(node) => chosen.push(node.clone()),
            None => absent.push(serde_json::json!({
                "id": id,
                "outcome": "not found: already terminated",
            })),
        }
    }
    let ended = provider.terminate(&chosen).await?;
    let mut terminated: Vec<serde_json::Value> = ended
        .iter()
        .map(|t| serde_json::json!({ "id": t.id, "outcome": t.outcome }))
        .collect();
    terminated.extend(absent);
    output.print_json(&serde_json::json!({
        "cluster": cluster.name(),
        "terminated": terminated,
    }));
    Ok(ExitCode::Success)
}
