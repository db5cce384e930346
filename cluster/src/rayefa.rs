//! The optional `rayefa:` section: what Ray's format has no place for.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::Spanned;

pub use crate::duration::DurationValue;

/// `rayefa:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RayefaSection {
    /// The agent package nodes install from user data (EC2 providers).
    pub agent_package: Option<AgentPackage>,
    /// The TCP port every agent serves its status on (default 8700).
    pub agent_port: Option<Spanned<u16>>,
    /// EFA settings for node types whose `node_config` has no EFA interface, and the
    /// installer to use everywhere.
    pub efa: Option<EfaSettings>,
    /// Steps by name (`grow-root`, `install-efa`, `probe-efa`, `install-ray`,
    /// `setup-commands`, `start-ray`): `false` turns one off, a table tunes it.
    pub steps: Option<Spanned<BTreeMap<String, StepSetting>>>,
    /// OS and Python packages for the install-ray step.
    pub packages: Option<Packages>,
    /// Environment for every command the agents run.
    pub environment: Option<Spanned<BTreeMap<String, String>>>,
    /// Whether setup commands that an agent step does better are dropped (default true).
    pub replace_setup_commands: Option<bool>,
    /// How the orchestrator polls the agents.
    pub poll: Option<PollSettings>,
    /// How long the orchestrator waits.
    pub timeouts: Option<Timeouts>,
    /// Settings of the `local` provider.
    pub local: Option<LocalSettings>,
    /// Settings of the `aws` provider.
    pub aws: Option<AwsSection>,
}

/// `rayefa.agent_package`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPackage {
    /// Where nodes download the package (RPM or .deb).
    pub url: Spanned<String>,
    /// Its SHA-256, hex; nodes refuse a package that does not match.
    pub sha256: Spanned<String>,
}

/// `rayefa.efa`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfaSettings {
    /// `required`, `auto` or `off`, for node types without EFA interfaces in `node_config`.
    pub mode: Option<Spanned<EfaMode>>,
    /// URL of the EFA installer tarball.
    pub installer_url: Option<Spanned<String>>,
    /// Its pinned SHA-256.
    pub installer_sha256: Option<Spanned<String>>,
    /// The installer version the manifest must report.
    pub installer_version: Option<String>,
    /// Flags for `efa_installer.sh`.
    pub installer_flags: Option<Vec<String>>,
}

/// Whether EFA must work on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EfaMode {
    /// Install and probe; failure fails the node.
    Required,
    /// Only where the node has an EFA interface.
    Auto,
    /// Never.
    Off,
}

impl EfaMode {
    /// The word the agent's configuration uses.
    pub fn as_str(self) -> &'static str {
        match self {
            EfaMode::Required => "required",
            EfaMode::Auto => "auto",
            EfaMode::Off => "off",
        }
    }
}

/// `rayefa.steps.<name>`: `false`/`true`, or a table.
#[derive(Debug, Clone)]
pub enum StepSetting {
    /// On or off.
    Enabled(bool),
    /// On/off and limits.
    Tuned(StepTuning),
}

impl StepSetting {
    /// Whether the step runs (a table without `enabled` leaves it on).
    pub fn enabled(&self) -> bool {
        match self {
            StepSetting::Enabled(on) => *on,
            StepSetting::Tuned(tuning) => tuning.enabled.unwrap_or(true),
        }
    }
}

impl<'de> Deserialize<'de> for StepSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepVisitor;
        impl<'de> Visitor<'de> for StepVisitor {
            type Value = StepSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "true, false, or a table of enabled, timeout_secs, attempts, backoff_secs",
                )
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<StepSetting, E> {
                Ok(StepSetting::Enabled(on))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<StepSetting, A::Error> {
                StepTuning::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(StepSetting::Tuned)
            }
        }
        deserializer.deserialize_any(StepVisitor)
    }
}

/// The table form of a step setting.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTuning {
    /// False turns the step off.
    pub enabled: Option<bool>,
    /// Seconds one attempt may take.
    pub timeout_secs: Option<u64>,
    /// Attempts in all.
    pub attempts: Option<u32>,
    /// Seconds before the second attempt.
    pub backoff_secs: Option<f64>,
}

/// `rayefa.packages`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Packages {
    /// `auto`, `dnf` or `apt`.
    pub manager: Option<Spanned<String>>,
    /// OS packages.
    pub os: Option<Vec<String>>,
    /// Python requirement specifiers.
    pub python: Option<Vec<String>>,
    /// Absolute path of the virtualenv.
    pub virtualenv: Option<Spanned<String>>,
    /// The interpreter that creates the virtualenv.
    pub python_interpreter: Option<String>,
    /// Extra `pip install` arguments.
    pub pip_args: Option<Vec<String>>,
}

/// `rayefa.poll`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollSettings {
    /// Time between two rounds of polling.
    pub interval: Option<Spanned<DurationValue>>,
    /// How long one request may take.
    pub request_timeout: Option<Spanned<DurationValue>>,
    /// How long a node that answered before may stay silent before it is reported
    /// unreachable.
    pub unreachable_grace: Option<Spanned<DurationValue>>,
    /// The most requests in flight at once.
    pub concurrency: Option<Spanned<usize>>,
}

/// `rayefa.timeouts`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// How long `up` waits for every node to be ready.
    pub ready: Option<Spanned<DurationValue>>,
    /// How long `up` waits for the head's agent to answer before it launches workers.
    pub head_agent: Option<Spanned<DurationValue>>,
    /// How long `down` waits for a node to stop before it kills it.
    pub stop_grace: Option<Spanned<DurationValue>>,
}

/// `rayefa.local`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// Where the cluster's node directories live.
    pub cluster_dir: Option<PathBuf>,
    /// The loopback address of the first node; the next nodes take the following ones.
    pub first_address: Option<Spanned<String>>,
    /// The `rayefa-agent` binary to run.
    pub agent_binary: Option<PathBuf>,
}

/// `rayefa.aws`: how the AWS provider launches and removes instances; the provider fills in
/// the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    /// RunInstances attempts per launch for capacity, throttling and server errors
    /// (default 4).
    pub launch_attempts: Option<Spanned<u32>>,
    /// The wait before the second attempt, doubled for each further one (default 5s).
    pub launch_backoff: Option<Spanned<DurationValue>>,
    /// How long `down` waits for the instances to be terminated (default 10m).
    pub terminate_timeout: Option<Spanned<DurationValue>>,
    /// How long `up` waits for a launched instance's private address (default 2m).
    pub address_timeout: Option<Spanned<DurationValue>>,
}
