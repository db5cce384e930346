//! The seam between the orchestrator and whatever runs the nodes.
//!
//! A provider type ([`ProviderType`], chosen from `provider.type` in [`of_type`], the one
//! place that knows them all) checks what only it reads in a cluster file, checks the file
//! against its account, renders what a node boots with, and opens a [`Provider`]. A provider
//! launches nodes of one type with a rendered agent configuration, lists the cluster's nodes
//! (with the address their agent answers on) and terminates them. The commands only talk to
//! these two traits, so the local provider (processes on this machine) and the AWS provider
//! (EC2 instances) behave the same to a user.

pub(crate) mod aws;
pub(crate) mod control_secret;
pub(crate) mod local;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rayefa_cluster::schema::ClusterSpec;
use rayefa_cluster::{Cluster, ClusterError, Finding};
use rayefa_wire::{AgentConfigFile, Role};

/// A node the provider knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeRecord {
    /// The provider's id for the node (a local node's directory name, an EC2 instance id).
    pub(crate) id: String,
    /// The key of the node's entry in `available_node_types`.
    pub(crate) node_type: String,
    /// Head or worker.
    pub(crate) role: Role,
    /// Where the node's agent answers HTTP; absent while the provider does not know yet
    /// (an instance without a private address).
    pub(crate) agent_address: Option<SocketAddr>,
    /// The address other nodes reach this one at (what workers get as the head's address).
    pub(crate) private_address: Option<String>,
    /// Whether the node exists and runs.
    pub(crate) lifecycle: Lifecycle,
    /// Milliseconds since the Unix epoch when the node was launched, if known.
    pub(crate) launched_at_ms: Option<u64>,
}

/// Whether a node is running, from the provider's point of view (not the agent's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Launched, not yet running (an EC2 instance in `pending`).
    Pending,
    /// Running; its agent may or may not answer yet.
    Running,
    /// Gone or stopped; `why` says how the provider knows (exit status, instance state).
    Stopped {
        /// In words, for a person.
        why: String,
    },
}

impl Lifecycle {
    /// True for nodes that count as part of the cluster.
    pub(crate) fn is_alive(&self) -> bool {
        matches!(self, Lifecycle::Pending | Lifecycle::Running)
    }
}

/// What `launch` is asked to start.
#[derive(Debug, Clone)]
pub(crate) struct LaunchRequest<'a> {
    /// The node type's key in `available_node_types`.
    pub(crate) node_type: &'a str,
    /// Head or worker.
    pub(crate) role: Role,
    /// How many nodes.
    pub(crate) count: usize,
    /// The rendered agent configuration of this node type and role; a provider adds what
    /// differs per node (the local provider's listen address).
    pub(crate) config: &'a AgentConfigFile,
    /// Tags to keep with each node from its launch on: Ray's own (`ray-node-status`,
    /// `ray-launch-config`, ...) and [`AUTOSCALED_TAG`] for nodes Ray's autoscaler asked for.
    /// Only a provider whose [`Provider::keeps_tags`] is true is given any.
    pub(crate) tags: &'a BTreeMap<String, String>,
}

/// The tag that marks a node launched for Ray's autoscaler (`rayefa nodes launch`), whose
/// value is `true`.
pub(crate) const AUTOSCALED_TAG: &str = "rayefa-autoscaled";

/// Whether `tags` mark a node launched for Ray's autoscaler.
pub(crate) fn is_autoscaled(tags: Option<&BTreeMap<String, String>>) -> bool {
    tags.and_then(|t| t.get(AUTOSCALED_TAG))
        .is_some_and(|v| v == "true")
}

/// How one node ended under `terminate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Termination {
    /// The node's id.
    pub(crate) id: String,
    /// What happened, in words ("stopped after SIGTERM in 0.2 s", "already stopped").
    pub(crate) outcome: String,
}

/// A provider failed; the message says what it was doing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProviderError {
    /// The provider in the cluster file is not one this build knows.
    #[error("provider type `{0}` is not supported (supported: {SUPPORTED})")]
    Unsupported(String),
    /// The agent binary the local provider starts is missing.
    #[error("{0}")]
    AgentBinary(String),
    /// A file or directory of the local provider could not be used.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The provider refused or failed for another reason.
    #[error("{0}")]
    Failed(String),
}

/// The provider types this build can run, as [`of_type`] knows them.
const SUPPORTED: &str = "local, aws";

/// Runs, lists and stops a cluster's nodes.
#[async_trait::async_trait]
pub(crate) trait Provider: Send + Sync {
    /// Starts `request.count` nodes of one type and returns them as launched.
    async fn launch(&self, request: LaunchRequest<'_>) -> Result<Vec<NodeRecord>, ProviderError>;

    /// Every node of this cluster the provider knows, running or not.
    async fn list(&self) -> Result<Vec<NodeRecord>, ProviderError>;

    /// Stops and removes `nodes`.
    async fn terminate(&self, nodes: &[NodeRecord]) -> Result<Vec<Termination>, ProviderError>;

    /// Starts again a node that exists but stopped; its agent resumes from its journal.
    async fn restart(&self, node: &NodeRecord) -> Result<NodeRecord, ProviderError> {
        Err(ProviderError::Failed(format!(
            "node {} is stopped and this provider cannot start it again; `rayefa down` removes it",
            node.id
        )))
    }

    /// Where the provider keeps the cluster, for messages (a directory, a region).
    fn location(&self) -> Option<String> {
        None
    }

    /// Whether the provider keeps tags per node ([`LaunchRequest::tags`], [`Provider::tags`],
    /// [`Provider::set_tags`]): what Ray's autoscaler needs of it.
    fn keeps_tags(&self) -> bool {
        false
    }

    /// The tags kept with `nodes`, by node id; nodes without any are left out.
    async fn tags(
        &self,
        _nodes: &[NodeRecord],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, ProviderError> {
        Ok(BTreeMap::new())
    }

    /// Adds `tags` to those kept with node `id`, replacing a tag of the same key.
    async fn set_tags(
        &self,
        id: &str,
        _tags: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        Err(ProviderError::Failed(format!(
            "this provider keeps no tags per node, so node {id} cannot be tagged; Ray's \
             autoscaler needs them"
        )))
    }

    /// The file on this machine that keeps the cluster's control secret (made on its first
    /// launch, read by every later launch and by `check`; see [`control_secret`]).
    fn control_secret_file(&self) -> Result<PathBuf, ProviderError> {
        Err(ProviderError::Failed(
            "this provider keeps no control secret, so its nodes' fabric cannot be checked".into(),
        ))
    }

    /// What `nodes` last published about themselves through the provider (EC2 tags), by node
    /// id: the way to follow nodes whose agents cannot be reached over the network (the
    /// orchestrator outside the VPC). Providers without such a channel know nothing.
    async fn published(
        &self,
        _nodes: &[NodeRecord],
    ) -> Result<std::collections::BTreeMap<String, Published>, ProviderError> {
        Ok(std::collections::BTreeMap::new())
    }
}

/// The state an agent published through the provider instead of HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    /// The node state's label: `starting`, `bootstrapping`, `ready`, `failed`, `rebooting`.
    pub(crate) state: String,
    /// The current step and its state, `install-efa:running`, when the agent gave one.
    pub(crate) step: Option<String>,
    /// The first failure, shortened, when there was one.
    pub(crate) error: Option<String>,
    /// When the agent published it, in milliseconds since the Unix epoch.
    pub(crate) updated_at_ms: Option<u64>,
}

/// What rayefa knows of a provider type before any node runs.
#[async_trait::async_trait]
pub(crate) trait ProviderType: Sync {
    /// Adds findings about the parts of `spec` only this provider reads (an EC2
    /// `node_config`, its own settings): mistakes of the file, found by `validate --offline`.
    fn check_file(&self, spec: &ClusterSpec, out: &mut Vec<Finding>);

    /// Checks `cluster` against the provider's account (`validate` without `--offline`);
    /// `None` for a provider that has nothing to check.
    async fn preflight(&self, cluster: &Cluster) -> Result<Option<Preflight>, ProviderError>;

    /// What a node receives at boot, carrying its agent configuration `config`.
    fn user_data(
        &self,
        cluster: &Cluster,
        config: &AgentConfigFile,
    ) -> Result<String, ProviderError>;

    /// The provider that runs `cluster`'s nodes.
    async fn open(&self, cluster: &Cluster) -> Result<Box<dyn Provider>, ProviderError>;
}

/// What a provider's preflight found.
#[derive(Debug)]
pub(crate) struct Preflight {
    /// What the file was checked against, in words ("the AWS account in us-east-1").
    pub(crate) against: String,
    /// Errors and warnings about the file in that account.
    pub(crate) findings: Vec<Finding>,
}

/// The provider type called `name` (`provider.type`): the one place that picks a provider.
pub(crate) fn of_type(name: &str) -> Result<&'static dyn ProviderType, ProviderError> {
    match name {
        "local" => Ok(&local::Local),
        "aws" => Ok(&aws::Aws),
        other => Err(ProviderError::Unsupported(other.to_owned())),
    }
}

/// Adds the findings of the provider `spec` names; a type this build does not know is an
/// error of the file, so that `validate` refuses what `up` could not run.
pub(crate) fn check_file(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    match of_type(&spec.provider.value.kind) {
        Ok(provider_type) => provider_type.check_file(spec, out),
        Err(error) => out.push(Finding::error(
            spec.provider.referenced,
            "provider.type",
            error.to_string(),
        )),
    }
}

/// Reads and checks the cluster file at `path`, its provider's checks included.
pub(crate) fn load_cluster(path: &Path) -> Result<Cluster, ClusterError> {
    rayefa_cluster::load(path, &check_file)
}

/// The provider named by the cluster file's `provider.type`.
pub(crate) async fn for_cluster(cluster: &Cluster) -> Result<Box<dyn Provider>, ProviderError> {
    of_type(cluster.provider_type())?.open(cluster).await
}
