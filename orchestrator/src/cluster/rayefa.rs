//! The optional `rayefa:` section: what Ray's format has no place for.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::Spanned;

/// `rayefa:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RayefaSection {
    /// The agent package nodes install from user data (EC2 providers).
    pub(crate) agent_package: Option<AgentPackage>,
    /// The TCP port every agent serves its status on (default 8700).
    pub(crate) agent_port: Option<Spanned<u16>>,
    /// EFA settings for node types whose `node_config` has no EFA interface, and the
    /// installer to use everywhere.
    pub(crate) efa: Option<EfaSettings>,
    /// Steps by name (`grow-root`, `install-efa`, `probe-efa`, `install-ray`,
    /// `setup-commands`, `start-ray`): `false` turns one off, a table tunes it.
    pub(crate) steps: Option<Spanned<BTreeMap<String, StepSetting>>>,
    /// OS and Python packages for the install-ray step.
    pub(crate) packages: Option<Packages>,
    /// Environment for every command the agents run.
    pub(crate) environment: Option<Spanned<BTreeMap<String, String>>>,
    /// Whether setup commands that an agent step does better are dropped (default true).
    pub(crate) replace_setup_commands: Option<bool>,
    /// How the orchestrator polls the agents.
    pub(crate) poll: Option<PollSettings>,
    /// How long the orchestrator waits.
    pub(crate) timeouts: Option<Timeouts>,
    /// Settings of the `local` provider.
    pub(crate) local: Option<LocalSettings>,
    /// Settings of the `aws` provider.
    pub(crate) aws: Option<crate::aws::AwsSection>,
}

/// `rayefa.agent_package`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentPackage {
    /// Where nodes download the package (RPM or .deb).
    pub(crate) url: Spanned<String>,
    /// Its SHA-256, hex; nodes refuse a package that does not match.
    pub(crate) sha256: Spanned<String>,
}

/// `rayefa.efa`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EfaSettings {
    /// `required`, `auto` or `off`, for node types without EFA interfaces in `node_config`.
    pub(crate) mode: Option<Spanned<EfaMode>>,
    /// URL of the EFA installer tarball.
    pub(crate) installer_url: Option<Spanned<String>>,
    /// Its pinned SHA-256.
    pub(crate) installer_sha256: Option<Spanned<String>>,
    /// The installer version the manifest must report.
    pub(crate) installer_version: Option<String>,
    /// Flags for `efa_installer.sh`.
    pub(crate) installer_flags: Option<Vec<String>>,
}

/// Whether EFA must work on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum EfaMode {
    /// Install and probe; failure fails the node.
    Required,
    /// Only where the node has an EFA interface.
    Auto,
    /// Never.
    Off,
}

impl EfaMode {
    /// The word the agent's configuration uses.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EfaMode::Required => "required",
            EfaMode::Auto => "auto",
            EfaMode::Off => "off",
        }
    }
}

/// `rayefa.steps.<name>`: `false`/`true`, or a table.
#[derive(Debug, Clone)]
pub(crate) enum StepSetting {
    /// On or off.
    Enabled(bool),
    /// On/off and limits.
    Tuned(StepTuning),
}

impl StepSetting {
    /// Whether the step runs (a table without `enabled` leaves it on).
    pub(crate) fn enabled(&self) -> bool {
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
pub(crate) struct StepTuning {
    /// False turns the step off.
    pub(crate) enabled: Option<bool>,
    /// Seconds one attempt may take.
    pub(crate) timeout_secs: Option<u64>,
    /// Attempts in all.
    pub(crate) attempts: Option<u32>,
    /// Seconds before the second attempt.
    pub(crate) backoff_secs: Option<f64>,
}

/// `rayefa.packages`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Packages {
    /// `auto`, `dnf` or `apt`.
    pub(crate) manager: Option<Spanned<String>>,
    /// OS packages.
    pub(crate) os: Option<Vec<String>>,
    /// Python requirement specifiers.
    pub(crate) python: Option<Vec<String>>,
    /// Absolute path of the virtualenv.
    pub(crate) virtualenv: Option<Spanned<String>>,
    /// The interpreter that creates the virtualenv.
    pub(crate) python_interpreter: Option<String>,
    /// Extra `pip install` arguments.
    pub(crate) pip_args: Option<Vec<String>>,
}

/// `rayefa.poll`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollSettings {
    /// Time between two rounds of polling.
    pub(crate) interval: Option<Spanned<DurationValue>>,
    /// How long one request may take.
    pub(crate) request_timeout: Option<Spanned<DurationValue>>,
    /// How long a node that answered before may stay silent before it is reported
    /// unreachable.
    pub(crate) unreachable_grace: Option<Spanned<DurationValue>>,
    /// The most requests in flight at once.
    pub(crate) concurrency: Option<Spanned<usize>>,
}

/// `rayefa.timeouts`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Timeouts {
    /// How long `up` waits for every node to be ready.
    pub(crate) ready: Option<Spanned<DurationValue>>,
    /// How long `up` waits for the head's agent to answer before it launches workers.
    pub(crate) head_agent: Option<Spanned<DurationValue>>,
    /// How long `down` waits for a node to stop before it kills it.
    pub(crate) stop_grace: Option<Spanned<DurationValue>>,
}

/// `rayefa.local`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalSettings {
    /// Where the cluster's node directories live.
    pub(crate) cluster_dir: Option<PathBuf>,
    /// The loopback address of the first node; the next nodes take the following ones.
    pub(crate) first_address: Option<Spanned<String>>,
    /// The `rayefa-agent` binary to run.
    pub(crate) agent_binary: Option<PathBuf>,
}

/// A duration written as seconds (`90`) or with a unit (`90s`, `15m`, `2h`, `500ms`).
#[derive(Debug, Clone)]
pub(crate) enum DurationValue {
    /// Seconds.
    Seconds(f64),
    /// Text with a unit.
    Text(String),
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds, or a number with ms, s, m or h (`90s`, `15m`)")
            }
            fn visit_u64<E: de::Error>(self, secs: u64) -> Result<DurationValue, E> {
                Ok(DurationValue::Seconds(secs as f64))
            }
            fn visit_i64<E: de::Error>(self, secs: i64) -> Result<DurationValue, E> {
                Ok(DurationValue::Seconds(secs as f64))
            }
            fn visit_f64<E: de::Error>(self, secs: f64) -> Result<DurationValue, E> {
                Ok(DurationValue::Seconds(secs))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<DurationValue, E> {
                Ok(DurationValue::Text(text.to_owned()))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

impl DurationValue {
    /// The duration, or why the text is not one.
    pub(crate) fn to_duration(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Seconds(secs) => {
                crate::cli::check_duration_secs(&secs.to_string(), *secs)
            }
            DurationValue::Text(text) => crate::cli::parse_duration(text),
        }
    }
}
