//! The agent's configuration: files are read and merged in `load`, checked once in `validate`
//! into [`Settings`], which the rest of the agent trusts.

mod load;
#[cfg(test)]
mod testing;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rayefa_wire::{Role, StepName};

pub(crate) use load::{ConfigError, load};

/// The default main configuration file, under the root.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/rayefa/agent.toml";

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) node: NodeSettings,
    pub(crate) agent: AgentSettings,
    /// Environment for every command a step runs.
    pub(crate) environment: BTreeMap<String, String>,
    pub(crate) steps: BTreeMap<String, StepPolicy>,
    pub(crate) packages: PackageSettings,
    pub(crate) commands: CommandSettings,
    pub(crate) efa: EfaSettings,
    /// Ray's autoscaling configuration (a JSON object) on a head whose cluster scales.
    pub(crate) autoscaling: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Settings {
    /// The policy of the step called `name`; steps without one get the general default.
    pub(crate) fn policy(&self, name: &str) -> StepPolicy {
        self.steps
            .get(name)
            .cloned()
            .unwrap_or_else(|| StepPolicy::default_for(name))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeSettings {
    pub(crate) cluster_name: String,
    pub(crate) role: Role,
    pub(crate) node_type: String,
    /// The head's address; always present for workers.
    pub(crate) head_address: Option<String>,
    pub(crate) resources: BTreeMap<String, f64>,
    pub(crate) labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AgentSettings {
    pub(crate) listen: SocketAddr,
    /// A host path; resolve it through the root.
    pub(crate) state_dir: PathBuf,
    pub(crate) imds: bool,
    pub(crate) imds_endpoint: String,
    pub(crate) stop_grace: Duration,
    pub(crate) max_connections: usize,
    /// Publish the node's state as EC2 tags when the metadata service names an instance.
    pub(crate) publish_tags: bool,
    /// The EC2 API endpoint override; `None` means the region's public endpoint.
    pub(crate) ec2_endpoint: Option<String>,
    /// The cluster's secret for control requests; `None` refuses them all.
    pub(crate) control_secret: Option<String>,
}

/// How the engine treats one step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepPolicy {
    pub(crate) enabled: bool,
    pub(crate) timeout: Duration,
    /// Attempts in all, at least 1.
    pub(crate) attempts: u32,
    /// The wait before the second attempt; doubled for each further one.
    pub(crate) backoff: Duration,
}

impl StepPolicy {
    /// Defaults sized for each step's work on a large instance.
    pub(crate) fn default_for(name: &str) -> Self {
        let (timeout_secs, attempts) = match name.parse() {
            Ok(StepName::GrowRoot) => (300, 1),
            Ok(StepName::InstallEfa) => (1800, 2),
            Ok(StepName::ProbeEfa) => (120, 2),
            Ok(StepName::InstallRay) => (3600, 3),
            Ok(StepName::SetupCommands) => (3600, 1),
            Ok(StepName::StartRay) => (600, 2),
            Err(_) => (600, 1),
        };
        Self {
            enabled: true,
            timeout: Duration::from_secs(timeout_secs),
            attempts,
            backoff: Duration::from_secs(5),
        }
    }
}

/// Which package manager installs OS packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackageManagerChoice {
    /// From `/etc/os-release`.
    Auto,
    Dnf,
    Apt,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PackageSettings {
    pub(crate) manager: PackageManagerChoice,
    /// `None`: the defaults of the package manager in use.
    pub(crate) os: Option<Vec<String>>,
    pub(crate) python: Vec<String>,
    /// A host path; resolve it through the root.
    pub(crate) virtualenv: PathBuf,
    /// The interpreter that makes the virtualenv; `None`: the node's default (`python3.12` on
    /// Amazon Linux 2023, whose `python3` is 3.9; `python3` elsewhere).
    pub(crate) python_interpreter: Option<String>,
    pub(crate) pip_args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CommandSettings {
    pub(crate) initialization: Vec<String>,
    pub(crate) setup: Vec<String>,
    /// The role's start commands, Ray's defaults filled in.
    pub(crate) start: Vec<String>,
    /// The user the commands run as, in a login shell; the agent's own user when `None`.
    pub(crate) user: Option<String>,
}

/// Whether EFA must work on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EfaMode {
    /// EFA must be installed and probed successfully.
    Required,
    /// EFA steps run only on nodes that have an EFA interface; others skip them.
    Auto,
    /// EFA steps are skipped.
    Off,
}

/// What install-efa does when the installer asks for a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RebootPolicy {
    Reboot,
    Fail,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EfaSettings {
    pub(crate) mode: EfaMode,
    pub(crate) installer_url: String,
    /// Lower-case hex.
    pub(crate) installer_sha256: String,
    pub(crate) signature_url: String,
    /// A host path of the public key, used when it exists (otherwise the key is fetched from
    /// beside the installer); resolve it through the root.
    pub(crate) public_key: PathBuf,
    /// Upper-case hex without spaces.
    pub(crate) fingerprint: String,
    pub(crate) installer_flags: Vec<String>,
    pub(crate) installer_version: String,
    pub(crate) on_reboot: RebootPolicy,
    pub(crate) expected_interfaces: Option<u32>,
    /// A host path; resolve it through the root.
    pub(crate) libfabric: Option<PathBuf>,
}

/// Ray's default start commands for a role (Ray's AWS defaults, without the autoscaler's
/// config file, which rayefa does not write because it launches nodes itself).
pub(crate) fn default_start_commands(role: Role) -> Vec<String> {
    let start = match role {
        Role::Head => {
            "ulimit -n 65536; ray start --head --port=6379 --object-manager-port=8076 --dashboard-host=0.0.0.0"
        }
        Role::Worker => {
            "ulimit -n 65536; ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076"
        }
    };
    vec!["ray stop".to_owned(), start.to_owned()]
}
