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
    /// The agent package nodes install from user data (EC2 providers): one, or one per
    /// architecture.
    pub agent_package: Option<AgentPackages>,
    /// Where `rayefa publish` put the agent packages (`s3://bucket/prefix`): each launch hands
    /// every node a presigned URL of its architecture's package instead. Not together with
    /// `agent_package`.
    pub agent_store: Option<Spanned<String>>,
    /// True when the nodes' image already carries rayefa-agent, so that no
    /// `agent_package` is needed (without either, `validate` warns).
    pub agent_on_image: Option<bool>,
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
    /// Whether `up` ends by checking the fabric between the nodes (`rayefa check` with its
    /// defaults); default false.
    pub check: Option<Spanned<bool>>,
    /// How the orchestrator polls the agents.
    pub poll: Option<PollSettings>,
    /// How long the orchestrator waits.
    pub timeouts: Option<Timeouts>,
    /// Settings of the `local` provider.
    pub local: Option<LocalSettings>,
    /// Settings of the `aws` provider.
    pub aws: Option<AwsSection>,
}

/// `rayefa.agent_package`: one package for every node (`{url, sha256}`), or one per
/// architecture (`{x86_64: {url, sha256}, aarch64: {url, sha256}}`, named as `uname -m`
/// names them).
#[derive(Debug, Clone)]
pub enum AgentPackages {
    /// Every node installs this package (a one-architecture cluster).
    One(AgentPackage),
    /// Each node installs the package of its architecture.
    PerArchitecture(BTreeMap<String, AgentPackage>),
}

impl AgentPackages {
    /// The architecture keys the per-architecture form takes.
    pub const ARCHITECTURES: [&'static str; 2] = ["x86_64", "aarch64"];

    /// Every package with its architecture key (`None` in the single form).
    pub fn each(&self) -> Vec<(Option<&str>, &AgentPackage)> {
        match self {
            AgentPackages::One(package) => vec![(None, package)],
            AgentPackages::PerArchitecture(by_arch) => by_arch
                .iter()
                .map(|(arch, package)| (Some(arch.as_str()), package))
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for AgentPackages {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PackagesVisitor;
        impl<'de> Visitor<'de> for PackagesVisitor {
            type Value = AgentPackages;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{url, sha256}, or {x86_64: {url, sha256}, aarch64: {url, sha256}}")
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AgentPackages, A::Error> {
                const KEYS: &[&str] = &["url", "sha256", "x86_64", "aarch64"];
                let (mut url, mut sha256) = (None, None);
                let mut by_arch = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "url" => url = Some(map.next_value()?),
                        "sha256" => sha256 = Some(map.next_value()?),
                        arch if AgentPackages::ARCHITECTURES.contains(&arch) => {
                            by_arch.insert(key, map.next_value::<AgentPackage>()?);
                        }
                        _ => return Err(de::Error::unknown_field(&key, KEYS)),
                    }
                }
                match (url, sha256, by_arch.is_empty()) {
                    (Some(url), Some(sha256), true) => {
                        Ok(AgentPackages::One(AgentPackage { url, sha256 }))
                    }
                    (None, None, false) => Ok(AgentPackages::PerArchitecture(by_arch)),
                    (None, None, true) => Err(de::Error::custom(
                        "needs url and sha256, or a package per architecture (x86_64, aarch64)",
                    )),
                    (_, _, false) => Err(de::Error::custom(
                        "give url and sha256 for every node, or a package per architecture, \
                         not both",
                    )),
                    (None, _, true) => Err(de::Error::missing_field("url")),
                    (_, None, true) => Err(de::Error::missing_field("sha256")),
                }
            }
        }
        deserializer.deserialize_map(PackagesVisitor)
    }
}

/// `rayefa.agent_store`, parsed: the bucket and the key prefix the packages are published
/// under (no leading or trailing `/`; empty for the bucket's top).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStore {
    /// The S3 bucket.
    pub bucket: String,
    /// The key prefix.
    pub prefix: String,
}

impl AgentStore {
    /// Parses `s3://bucket[/prefix]`, with S3's rules for general purpose bucket names and
    /// its "safe characters" (letters, digits, `!-_.*'()`) in the prefix's segments.
    pub fn parse(text: &str) -> Result<AgentStore, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or("must be an S3 location, s3://BUCKET/PREFIX")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        bucket_name(bucket)?;
        if !prefix.is_empty() {
            for segment in prefix.split('/') {
                if segment.is_empty() || segment == "." || segment == ".." {
                    return Err(format!(
                        "the prefix `{prefix}` has an empty, `.` or `..` segment"
                    ));
                }
                if let Some(c) = segment
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c)))
                {
                    return Err(format!(
                        "the prefix `{prefix}` has `{c}`: use letters, digits and !-_.*'() \
                         between the slashes"
                    ));
                }
            }
        }
        Ok(AgentStore {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The key of `name` under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

impl fmt::Display for AgentStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// S3's naming rules for general purpose buckets.
fn bucket_name(bucket: &str) -> Result<(), String> {
    let why = if !(3..=63).contains(&bucket.len()) {
        "must be 3 to 63 characters long"
    } else if !bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        "may hold only lowercase letters, digits, `.` and `-`"
    } else if !bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        "must begin and end with a letter or a digit"
    } else if bucket.contains("..") {
        "must not have two dots in a row"
    } else if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
        "must not look like an IP address"
    } else if ["xn--", "sthree-", "amzn-s3-demo-"]
        .iter()
        .any(|p| bucket.starts_with(p))
        || ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"]
            .iter()
            .any(|s| bucket.ends_with(s))
    {
        "uses a prefix or suffix S3 reserves"
    } else {
        return Ok(());
    };
    Err(format!("the bucket name `{bucket}` {why}"))
}

/// One agent package.
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
    /// The fingerprint of the key that must have signed it (AWS's by default); the agent
    /// fetches the key from beside the installer and trusts it only with this fingerprint.
    pub fingerprint: Option<Spanned<String>>,
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

#[cfg(test)]
mod agent_store_tests {
    use super::AgentStore;

    #[test]
    fn a_location_is_a_bucket_and_a_prefix() {
        let store = AgentStore::parse("s3://my-bucket.example/rayefa/agent/").expect("valid");
        assert_eq!(store.bucket, "my-bucket.example");
        assert_eq!(store.prefix, "rayefa/agent");
        assert_eq!(store.key("manifest.json"), "rayefa/agent/manifest.json");
        let top = AgentStore::parse("s3://abc").expect("no prefix");
        assert_eq!(top.key("manifest.json"), "manifest.json");
    }

    #[test]
    fn s3s_bucket_rules_and_odd_prefixes_are_refused() {
        for (text, words) in [
            ("https://abc/x", "s3://BUCKET/PREFIX"),
            ("s3://ab/x", "3 to 63"),
            ("s3://My-Bucket/x", "lowercase"),
            ("s3://-abc/x", "begin and end"),
            ("s3://a..b/x", "two dots"),
            ("s3://192.168.1.1/x", "IP address"),
            ("s3://xn--abc/x", "reserves"),
            ("s3://abc-s3alias/x", "reserves"),
            ("s3://abc/a//b", "empty"),
            ("s3://abc/a/../b", "`..`"),
            ("s3://abc/a b", "has ` `"),
        ] {
            let error = AgentStore::parse(text).expect_err(text);
            assert!(error.contains(words), "`{words}` in {error}");
        }
    }
}
