//! Turning merged layers into [`Settings`], or the first mistake with its file and line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rayefa_wire::{
    AgentConfigFile, DEFAULT_PYTHON_PACKAGES, Role, StepName, StepSection, is_env_name,
};

use super::load::{ConfigError, ConfigSource, merge};
use super::{
    AgentSettings, CommandSettings, EfaMode, EfaSettings, NodeSettings, PackageManagerChoice,
    PackageSettings, RebootPolicy, Settings, StepPolicy, default_start_commands,
};

pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:8700";
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/rayefa";
/// The shortest control secret accepted: the orchestrator generates 64 hexadecimal digits.
const MIN_CONTROL_SECRET: usize = 32;
pub(crate) const DEFAULT_VIRTUALENV: &str = "/opt/rayefa/venv";
pub(crate) const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
pub(crate) const DEFAULT_EFA_VERSION: &str = "1.45.1";
pub(crate) const DEFAULT_EFA_URL: &str =
    "https://efa-installer.amazonaws.com/aws-efa-installer-1.45.1.tar.gz";
/// SHA-256 of the 1.45.1 tarball as AWS publishes it.
pub(crate) const DEFAULT_EFA_SHA256: &str =
    "9aeb20c645135b6039cc08986d8f14e63280f7839e882a74df5e83627ffeaa17";
/// The fingerprint of AWS's EFA installer signing key.
pub(crate) const DEFAULT_EFA_FINGERPRINT: &str = "4E9091BCBB97A96B26B15E59A05480B1DD2D3CCC";
pub(crate) const DEFAULT_EFA_KEY: &str = "/etc/rayefa/aws-efa-installer.key";

/// Where a value came from: the last file that sets it.
struct Origin<'a> {
    sources: &'a [ConfigSource],
}

impl Origin<'_> {
    fn invalid(&self, table: &str, key: &str, message: impl Into<String>) -> ConfigError {
        let found = self.sources.iter().rev().find_map(|s| {
            s.line_of(table, key)
                .map(|line| (s.path.clone(), Some(line)))
        });
        let (path, line) = found.unwrap_or_else(|| {
            (
                self.sources
                    .last()
                    .map(|s| s.path.clone())
                    .unwrap_or_default(),
                None,
            )
        });
        let dotted = if table.is_empty() {
            key.to_owned()
        } else {
            format!("{table}.{key}")
        };
        ConfigError::Invalid {
            path,
            line,
            key: dotted,
            message: message.into(),
        }
    }

    fn missing(&self, key: &str, why: &str) -> ConfigError {
        ConfigError::Missing {
            key: key.to_owned(),
            why: why.to_owned(),
            files: self.sources.iter().map(|s| s.path.clone()).collect(),
        }
    }
}

/// Merges `sources` in order and checks the result.
pub(crate) fn validate(sources: &[ConfigSource]) -> Result<Settings, ConfigError> {
    let merged = sources
        .iter()
        .map(|s| s.layer.clone())
        .fold(AgentConfigFile::default(), merge);
    let origin = Origin { sources };

    let node = merged.node.unwrap_or_default();
    let cluster_name = node
        .cluster_name
        .ok_or_else(|| origin.missing("node.cluster_name", "the cluster this node belongs to"))?;
    if cluster_name.is_empty()
        || !cluster_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(origin.invalid(
            "node",
            "cluster_name",
            format!("`{cluster_name}` is not a cluster name (letters, digits, `_` and `-`)"),
        ));
    }
    let role = node
        .role
        .ok_or_else(|| origin.missing("node.role", "`head` or `worker`"))?;
    let node_type = node.node_type.ok_or_else(|| {
        origin.missing("node.node_type", "the node type's name in the cluster file")
    })?;
    let head_address = node.head_address.filter(|a| !a.trim().is_empty());
    if role == Role::Worker && head_address.is_none() {
        return Err(origin.missing("node.head_address", "a worker must know its head"));
    }

    let agent = merged.agent.unwrap_or_default();
    let listen_text = agent.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        origin.invalid(
            "agent",
            "listen",
            format!("`{listen_text}` is not an address and port such as {DEFAULT_LISTEN}"),
        )
    })?;
    let state_dir = absolute(
        &origin,
        "agent",
        "state_dir",
        agent.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR),
    )?;
    let control_secret = agent.control_secret.clone();
    if control_secret
        .as_ref()
        .is_some_and(|s| s.chars().count() < MIN_CONTROL_SECRET)
    {
        return Err(origin.invalid(
            "agent",
            "control_secret",
            format!("must be at least {MIN_CONTROL_SECRET} characters"),
        ));
    }
    let max_connections = agent.max_connections.unwrap_or(4096);
    if max_connections == 0 {
        return Err(origin.invalid("agent", "max_connections", "must be at least 1"));
    }
    let imds_endpoint = agent
        .imds_endpoint
        .or_else(|| std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").ok())
        .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_owned());
    let ec2_endpoint = agent
        .ec2_endpoint
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_EC2").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|e| !e.trim().is_empty());

    let environment = merged.environment.unwrap_or_default();
    if let Some(bad) = environment.keys().find(|k| !is_env_name(k)) {
        return Err(origin.invalid(
            "environment",
            bad,
            format!("`{bad}` is not an environment variable name"),
        ));
    }

    let steps = merged.steps.unwrap_or_default();
    let mut policies = BTreeMap::new();
    for name in StepName::ALL {
        let section = steps.get(name).cloned().unwrap_or_default();
        let policy = step_policy(&origin, name, section)?;
        policies.insert(name.as_str().to_owned(), policy);
    }

    let packages = merged.packages.unwrap_or_default();
    let manager = match packages.manager.as_deref().unwrap_or("auto") {
        "auto" => PackageManagerChoice::Auto,
        "dnf" => PackageManagerChoice::Dnf,
        "apt" => PackageManagerChoice::Apt,
        other => {
            return Err(origin.invalid(
                "packages",
                "manager",
                format!("`{other}` is not one of auto, dnf, apt"),
            ));
        }
    };
    let virtualenv = absolute(
        &origin,
        "packages",
        "virtualenv",
        packages.virtualenv.as_deref().unwrap_or(DEFAULT_VIRTUALENV),
    )?;

    let commands = merged.commands.unwrap_or_default();
    let user = match commands.user {
        Some(name) if is_user_name(&name) => Some(name),
        Some(name) => {
            return Err(origin.invalid(
                "commands",
                "user",
                format!(
                    "`{name}` is not a user name (letters, digits, `_`, `-`, `.`; not first `-`)"
                ),
            ));
        }
        None => None,
    };
    let start = commands
        .start
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| default_start_commands(role));

    let efa = efa_settings(&origin, merged.efa.unwrap_or_default())?;
    let autoscaling = autoscaling(&origin, role, merged.autoscaling.and_then(|a| a.ray_config))?;

    Ok(Settings {
        node: NodeSettings {
            cluster_name,
            role,
            node_type,
            head_address,
            resources: node.resources.unwrap_or_default(),
            labels: node.labels.unwrap_or_default(),
        },
        agent: AgentSettings {
            listen,
            state_dir,
            imds: agent.imds.unwrap_or(true),
            imds_endpoint,
            stop_grace: Duration::from_secs(agent.stop_grace_secs.unwrap_or(10)),
            max_connections,
            publish_tags: agent.publish_tags.unwrap_or(true),
            ec2_endpoint,
            control_secret,
        },
        environment,
        steps: policies,
        packages: PackageSettings {
            manager,
            os: packages.os,
            python: packages.python.unwrap_or_else(|| {
                DEFAULT_PYTHON_PACKAGES
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect()
            }),
            virtualenv,
            python_interpreter: packages.python_interpreter,
            pip_args: packages.pip_args.unwrap_or_default(),
        },
        commands: CommandSettings {
            initialization: commands.initialization.unwrap_or_default(),
            setup: commands.setup.unwrap_or_default(),
            start,
            user,
        },
        efa,
        autoscaling,
    })
}

/// `autoscaling.ray_config`: a JSON object with what Ray's autoscaler cannot start without,
/// on a head only (a worker runs no autoscaler).
fn autoscaling(
    origin: &Origin<'_>,
    role: Role,
    text: Option<String>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ConfigError> {
    let Some(text) = text else {
        return Ok(None);
    };
    if role != Role::Head {
        return Err(origin.invalid(
            "autoscaling",
            "ray_config",
            "only a head runs Ray's autoscaler; this node is a worker",
        ));
    }
    let invalid = |why: String| origin.invalid("autoscaling", "ray_config", why);
    let config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not a JSON object: {e}")))?;
    for key in [
        "cluster_name",
        "provider",
        "available_node_types",
        "head_node_type",
    ] {
        if !config.contains_key(key) {
            return Err(invalid(format!("has no `{key}`")));
        }
    }
    if !config["provider"]
        .get("type")
        .is_some_and(|t| t.is_string())
    {
        return Err(invalid("`provider` has no `type`".to_owned()));
    }
    Ok(Some(config))
}

fn step_policy(
    origin: &Origin<'_>,
    name: StepName,
    section: StepSection,
) -> Result<StepPolicy, ConfigError> {
    let defaults = StepPolicy::default_for(name.as_str());
    let table = format!("steps.{name}");
    if section.timeout_secs == Some(0) {
        return Err(origin.invalid(&table, "timeout_secs", "must be at least 1"));
    }
    if section.attempts == Some(0) {
        return Err(origin.invalid(&table, "attempts", "must be at least 1"));
    }
    let backoff = match section.backoff_secs {
        Some(secs) if !(0.0..=3600.0).contains(&secs) => {
            return Err(origin.invalid(&table, "backoff_secs", "must be between 0 and 3600"));
        }
        Some(secs) => Duration::from_secs_f64(secs),
        None => defaults.backoff,
    };
    Ok(StepPolicy {
        enabled: section.enabled.unwrap_or(defaults.enabled),
        timeout: section
            .timeout_secs
            .map_or(defaults.timeout, Duration::from_secs),
        attempts: section.attempts.unwrap_or(defaults.attempts),
        backoff,
    })
}

fn efa_settings(
    origin: &Origin<'_>,
    efa: rayefa_wire::EfaSection,
) -> Result<EfaSettings, ConfigError> {
    let mode = match efa.mode.as_deref().unwrap_or("auto") {
        "required" => EfaMode::Required,
        "auto" => EfaMode::Auto,
        "off" => EfaMode::Off,
        other => {
            return Err(origin.invalid(
                "efa",
                "mode",
                format!("`{other}` is not one of required, auto, off"),
            ));
        }
    };
    let on_reboot = match efa.on_reboot.as_deref().unwrap_or("reboot") {
        "reboot" => RebootPolicy::Reboot,
        "fail" => RebootPolicy::Fail,
        other => {
            return Err(origin.invalid(
                "efa",
                "on_reboot",
                format!("`{other}` is not one of reboot, fail"),
            ));
        }
    };
    let sha256 = efa
        .installer_sha256
        .unwrap_or_else(|| DEFAULT_EFA_SHA256.to_owned())
        .to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(origin.invalid("efa", "installer_sha256", "must be 64 hexadecimal digits"));
    }
    let fingerprint: String = efa
        .fingerprint
        .unwrap_or_else(|| DEFAULT_EFA_FINGERPRINT.to_owned())
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    if fingerprint.len() != 40 || !fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(origin.invalid(
            "efa",
            "fingerprint",
            "must be 40 hexadecimal digits (spaces allowed)",
        ));
    }
    let installer_url = efa
        .installer_url
        .unwrap_or_else(|| DEFAULT_EFA_URL.to_owned());
    if !(installer_url.starts_with("https://") || installer_url.starts_with("http://")) {
        return Err(origin.invalid("efa", "installer_url", "must be an http or https URL"));
    }
    let signature_url = efa
        .signature_url
        .unwrap_or_else(|| format!("{installer_url}.sig"));
    let public_key = absolute(
        origin,
        "efa",
        "public_key",
        efa.public_key.as_deref().unwrap_or(DEFAULT_EFA_KEY),
    )?;
    let libfabric = efa
        .libfabric
        .as_deref()
        .map(|path| absolute(origin, "efa", "libfabric", path))
        .transpose()?;
    Ok(EfaSettings {
        mode,
        installer_url,
        installer_sha256: sha256,
        signature_url,
        public_key,
        fingerprint,
        installer_flags: efa.installer_flags.unwrap_or_else(|| vec!["-y".to_owned()]),
        installer_version: efa
            .installer_version
            .unwrap_or_else(|| DEFAULT_EFA_VERSION.to_owned()),
        on_reboot,
        expected_interfaces: efa.expected_interfaces,
        libfabric,
    })
}

fn absolute(
    origin: &Origin<'_>,
    table: &str,
    key: &str,
    path: &str,
) -> Result<PathBuf, ConfigError> {
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(origin.invalid(table, key, format!("`{path}` is not an absolute path")))
    }
}

/// A name `useradd` accepts and that cannot be read as an option: what `runuser -u` is given.
fn is_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
