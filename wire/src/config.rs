//! The agent's configuration file, `/etc/rayefa/agent.toml` and its drop-ins.
//!
//! Every field is optional here: a file is one layer, and the agent merges the layers before
//! it validates the result into settings that cannot be wrong. The orchestrator builds one of
//! these per node and serialises it to TOML. Unknown keys are refused, so a typo names its line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Role, StepName};

/// One layer of the agent's configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfigFile {
    /// Which node this is.
    pub node: Option<NodeSection>,
    /// The agent process itself.
    pub agent: Option<AgentSection>,
    /// Environment for every command the steps run; merged key by key across layers.
    pub environment: Option<BTreeMap<String, String>>,
    /// Per-step switches and limits.
    pub steps: Option<StepsSection>,
    /// OS and Python packages for the install-ray step.
    pub packages: Option<PackagesSection>,
    /// The cluster file's command lists.
    pub commands: Option<CommandsSection>,
    /// EFA installation and probing.
    pub efa: Option<EfaSection>,
    /// Ray's autoscaler, on a head whose cluster scales.
    pub autoscaling: Option<AutoscalingSection>,
}

/// `[node]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The cluster file's `cluster_name`.
    pub cluster_name: Option<String>,
    /// `head` or `worker`.
    pub role: Option<Role>,
    /// The node type's key in `available_node_types`.
    pub node_type: Option<String>,
    /// The head's address; required for workers.
    pub head_address: Option<String>,
    /// Ray resources of the node type (`RAY_OVERRIDE_RESOURCES`); merged key by key.
    pub resources: Option<BTreeMap<String, f64>>,
    /// Ray labels of the node type (`RAY_OVERRIDE_LABELS`); merged key by key.
    pub labels: Option<BTreeMap<String, String>>,
}

/// `[agent]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Address and port of the status server, for example `0.0.0.0:8700`.
    pub listen: Option<String>,
    /// Where the journal and step logs live (under the root).
    pub state_dir: Option<String>,
    /// Whether to ask the EC2 instance metadata service for the instance's facts.
    pub imds: Option<bool>,
    /// Base URL of the instance metadata service (default `http://169.254.169.254`).
    pub imds_endpoint: Option<String>,
    /// Seconds children get between SIGTERM and SIGKILL when the agent stops.
    pub stop_grace_secs: Option<u64>,
    /// The most connections the status server holds open at once; when full, the oldest is
    /// closed to make room for a new one.
    pub max_connections: Option<usize>,
    /// Whether to publish the node's state as tags on its own EC2 instance (default: yes when
    /// the metadata service names an instance); `false` turns it off.
    pub publish_tags: Option<bool>,
    /// The EC2 API endpoint for those tags (default `AWS_ENDPOINT_URL_EC2`, then
    /// `AWS_ENDPOINT_URL`, then the region's public endpoint).
    pub ec2_endpoint: Option<String>,
    /// The cluster's secret for the agent's control requests (`POST /v1/control/...`, which
    /// start fabric listeners and pings), at least 32 characters; without it they are refused.
    pub control_secret: Option<String>,
}

/// `[steps]`: one table per step, by the step's name ([`StepName`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StepsSection {
    /// Growing the root partition and file system.
    pub grow_root: Option<StepSection>,
    /// Downloading, verifying and running the EFA installer.
    pub install_efa: Option<StepSection>,
    /// Probing libfabric for the EFA provider.
    pub probe_efa: Option<StepSection>,
    /// OS packages, the virtualenv and Python packages.
    pub install_ray: Option<StepSection>,
    /// The cluster file's initialization and setup commands.
    pub setup_commands: Option<StepSection>,
    /// Starting Ray.
    pub start_ray: Option<StepSection>,
}

impl StepsSection {
    /// The table of `step`, if this layer has one.
    pub fn get(&self, step: StepName) -> Option<&StepSection> {
        match step {
            StepName::GrowRoot => self.grow_root.as_ref(),
            StepName::InstallEfa => self.install_efa.as_ref(),
            StepName::ProbeEfa => self.probe_efa.as_ref(),
            StepName::InstallRay => self.install_ray.as_ref(),
            StepName::SetupCommands => self.setup_commands.as_ref(),
            StepName::StartRay => self.start_ray.as_ref(),
        }
    }
}

/// `[steps.<name>]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSection {
    /// False turns the step off; it then reports "skipped".
    pub enabled: Option<bool>,
    /// Seconds one attempt may take.
    pub timeout_secs: Option<u64>,
    /// Attempts in all, for errors that retrying can help.
    pub attempts: Option<u32>,
    /// Seconds before the second attempt; doubled each time, with jitter.
    pub backoff_secs: Option<f64>,
}

/// `[packages]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagesSection {
    /// `auto` (from os-release), `dnf` or `apt`.
    pub manager: Option<String>,
    /// OS packages to install.
    pub os: Option<Vec<String>>,
    /// Python requirement specifiers for pip.
    pub python: Option<Vec<String>>,
    /// Path of the virtualenv (under the root).
    pub virtualenv: Option<String>,
    /// The interpreter that creates the virtualenv.
    pub python_interpreter: Option<String>,
    /// Extra arguments for `pip install` (an index URL, `--no-cache-dir`).
    pub pip_args: Option<Vec<String>>,
}

/// The Python packages a node gets when `[packages] python` is absent: the seed guide's list.
/// The cluster-file renderer adds a replaced `pip install`'s requirements to these.
pub const DEFAULT_PYTHON_PACKAGES: [&str; 4] = ["ray[default,data]", "pandas", "pyarrow", "boto3"];

/// `[commands]`: the cluster file's command lists, run verbatim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsSection {
    /// `initialization_commands`, run first.
    pub initialization: Option<Vec<String>>,
    /// `setup_commands` followed by the role's own setup commands.
    pub setup: Option<Vec<String>>,
    /// The role's start commands; Ray's defaults when absent.
    pub start: Option<Vec<String>>,
    /// The user the commands run as (the cluster file's `auth.ssh_user`), in a login shell
    /// with that user's home; root (the agent's own user) when absent.
    pub user: Option<String>,
}

/// `[efa]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfaSection {
    /// `required`, `auto` or `off`.
    pub mode: Option<String>,
    /// URL of the installer tarball.
    pub installer_url: Option<String>,
    /// Pinned SHA-256 of the tarball, hex.
    pub installer_sha256: Option<String>,
    /// URL of the detached OpenPGP signature; default the tarball's URL plus `.sig`.
    pub signature_url: Option<String>,
    /// Path of the public key that signs the installer; used when the file exists, otherwise
    /// `aws-efa-installer.key` is fetched from beside the installer.
    pub public_key: Option<String>,
    /// The fingerprint that key, from the file or fetched, must have.
    pub fingerprint: Option<String>,
    /// Flags for `efa_installer.sh`.
    pub installer_flags: Option<Vec<String>>,
    /// The installer version the manifest must report for the step to count as done.
    pub installer_version: Option<String>,
    /// `reboot` or `fail` when the installer says a reboot is needed.
    pub on_reboot: Option<String>,
    /// EFA interfaces this node should have; default from the instance metadata.
    pub expected_interfaces: Option<u32>,
    /// An explicit libfabric to load.
    pub libfabric: Option<String>,
}

/// `[autoscaling]`: present only on the head of a cluster with a worker type whose
/// `max_workers` exceeds its `min_workers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalingSection {
    /// Ray's autoscaling configuration (what `ray start --head --autoscaling-config` reads),
    /// as JSON text: Ray reads it as YAML, of which JSON is a subset.
    pub ray_config: Option<String>,
}

/// Whether `name` may be a key of the `environment` table: a shell variable name (a letter or
/// `_`, then letters, digits and `_`). The agent refuses others; the orchestrator's checks of
/// a cluster file use the same rule, so that `validate` finds them first.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
