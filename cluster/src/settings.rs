//! The orchestrator's own settings from the `rayefa:` section, defaults filled in and checked.

use std::time::Duration;

use rayefa_wire::{StepName, is_env_name};
use serde_saphyr::{Location, Spanned};

use super::finding::Finding;
use super::rayefa::{AgentStore, DurationValue, EfaMode, RayefaSection, StepSetting, StepTuning};

/// The port agents serve on unless `rayefa.agent_port` says otherwise.
pub const DEFAULT_AGENT_PORT: u16 = 8700;

/// Settings the orchestrator acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The TCP port of every agent's status server.
    pub agent_port: u16,
    /// How agents are polled.
    pub poll: PollPolicy,
    /// How long `up` waits for every node to be ready.
    pub ready_timeout: Duration,
    /// How long `up` waits for the head's agent to answer before launching workers.
    pub head_agent_timeout: Duration,
    /// How long `down` gives a node between the polite and the forced stop.
    pub stop_grace: Duration,
    /// `down --timeout`: how long `down` waits for the nodes to stop, over the provider's own
    /// setting (`rayefa.timeouts.stop_grace`, `rayefa.aws.terminate_timeout`). Never from the
    /// file.
    pub down_timeout: Option<Duration>,
    /// Whether setup commands that a step replaces are dropped.
    pub replace_setup_commands: bool,
    /// `rayefa.efa.mode`, for node types without EFA interfaces.
    pub efa_mode: Option<EfaMode>,
    /// `rayefa.check`: whether `up` ends with a check of the fabric between the nodes.
    pub check: bool,
}

/// How the orchestrator polls agents.
#[derive(Debug, Clone, PartialEq)]
pub struct PollPolicy {
    /// Between two rounds.
    pub interval: Duration,
    /// One request's limit.
    pub request_timeout: Duration,
    /// How long a node that answered before may be silent.
    pub unreachable_grace: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            unreachable_grace: Duration::from_secs(60),
            concurrency: 256,
        }
    }
}

/// Settings from `section`, with a finding for every value that is wrong (its default is used
/// in its place so that checking can go on).
pub fn resolve(section: Option<&RayefaSection>, out: &mut Vec<Finding>) -> Settings {
    let empty = RayefaSection::default();
    let section = section.unwrap_or(&empty);
    let poll = section.poll.clone().unwrap_or_default();
    let timeouts = section.timeouts.clone().unwrap_or_default();
    let defaults = PollPolicy::default();

    let agent_port = match &section.agent_port {
        Some(port) if port.value == 0 => {
            out.push(Finding::error(
                port.referenced,
                "rayefa.agent_port",
                "0 is not a port agents can serve on",
            ));
            DEFAULT_AGENT_PORT
        }
        Some(port) => port.value,
        None => DEFAULT_AGENT_PORT,
    };
    let concurrency = at_least_one(
        poll.concurrency.as_ref(),
        "rayefa.poll.concurrency",
        defaults.concurrency,
        out,
    );
    let mut duration = |value: &Option<Spanned<DurationValue>>, key: &str, default: Duration| {
        positive_duration(value.as_ref(), key, default, out)
    };
    let poll = PollPolicy {
        interval: duration(&poll.interval, "rayefa.poll.interval", defaults.interval),
        request_timeout: duration(
            &poll.request_timeout,
            "rayefa.poll.request_timeout",
            defaults.request_timeout,
        ),
        unreachable_grace: duration(
            &poll.unreachable_grace,
            "rayefa.poll.unreachable_grace",
            defaults.unreachable_grace,
        ),
        concurrency,
    };
    let ready_timeout = duration(
        &timeouts.ready,
        "rayefa.timeouts.ready",
        Duration::from_secs(30 * 60),
    );
    let head_agent_timeout = duration(
        &timeouts.head_agent,
        "rayefa.timeouts.head_agent",
        Duration::from_secs(10 * 60),
    );
    let stop_grace = duration(
        &timeouts.stop_grace,
        "rayefa.timeouts.stop_grace",
        Duration::from_secs(20),
    );

    Settings {
        agent_port,
        poll,
        ready_timeout,
        head_agent_timeout,
        stop_grace,
        down_timeout: None,
        replace_setup_commands: section.replace_setup_commands.unwrap_or(true),
        efa_mode: section
            .efa
            .as_ref()
            .and_then(|e| e.mode.as_ref())
            .map(|m| m.value),
        check: section.check.as_ref().is_some_and(|c| c.value),
    }
}

/// A count of at least 1, or a finding and `default`; `default` when absent.
pub fn at_least_one<T: Copy + PartialEq + From<u8>>(
    value: Option<&Spanned<T>>,
    key: &str,
    default: T,
    out: &mut Vec<Finding>,
) -> T {
    match value {
        Some(count) if count.value == T::from(0) => {
            out.push(Finding::error(count.referenced, key, "must be at least 1"));
            default
        }
        Some(count) => count.value,
        None => default,
    }
}

/// A positive duration, or a finding and `default`; `default` when absent. Every duration of
/// the `rayefa:` section, a provider's included, goes through here.
pub fn positive_duration(
    value: Option<&Spanned<DurationValue>>,
    key: &str,
    default: Duration,
    out: &mut Vec<Finding>,
) -> Duration {
    let Some(value) = value else {
        return default;
    };
    match value.value.to_duration() {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            out.push(Finding::error(
                value.referenced,
                key,
                "must be more than zero",
            ));
            default
        }
        Err(message) => {
            out.push(Finding::error(value.referenced, key, message));
            default
        }
    }
}

/// Findings for `rayefa:` values the agent would refuse, so that `validate` catches them
/// before any node starts.
pub fn check_section(section: &RayefaSection, out: &mut Vec<Finding>) {
    if let Some(steps) = &section.steps {
        for (name, setting) in &steps.value {
            if name.parse::<StepName>().is_err() {
                out.push(Finding::error(
                    steps.referenced,
                    format!("rayefa.steps.{name}"),
                    format!(
                        "no step is called `{name}`; the steps are {}",
                        StepName::ALL.map(StepName::as_str).join(", ")
                    ),
                ));
            }
            if let StepSetting::Tuned(tuning) = setting {
                step_tuning(tuning, steps.referenced, name, out);
            }
        }
    }
    if let Some(environment) = &section.environment {
        for name in environment.value.keys() {
            if !is_env_name(name) {
                out.push(Finding::error(
                    environment.referenced,
                    format!("rayefa.environment.{name}"),
                    format!("`{name}` is not an environment variable name"),
                ));
            }
        }
    }
    for (arch, package) in section.agent_package.iter().flat_map(|p| p.each()) {
        let key = match arch {
            Some(arch) => format!("rayefa.agent_package.{arch}"),
            None => "rayefa.agent_package".to_owned(),
        };
        let url = &package.url;
        if !(url.value.starts_with("https://") || url.value.starts_with("http://")) {
            out.push(Finding::error(
                url.referenced,
                format!("{key}.url"),
                "must be an http or https URL",
            ));
        }
        let sha = &package.sha256;
        if sha.value.len() != 64 || !sha.value.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push(Finding::error(
                sha.referenced,
                format!("{key}.sha256"),
                "must be 64 hexadecimal digits",
            ));
        }
    }
    if let Some(store) = &section.agent_store {
        if let Err(message) = AgentStore::parse(&store.value) {
            out.push(Finding::error(
                store.referenced,
                "rayefa.agent_store",
                message,
            ));
        }
        if section.agent_package.is_some() {
            out.push(Finding::error(
                store.referenced,
                "rayefa.agent_store",
                "and rayefa.agent_package are both set: nodes install either the packages \
                 `rayefa publish` put in the store or the one at agent_package's URL; remove one",
            ));
        }
    }
    if let Some(packages) = &section.packages {
        if let Some(manager) = &packages.manager
            && !matches!(manager.value.as_str(), "auto" | "dnf" | "apt")
        {
            out.push(Finding::error(
                manager.referenced,
                "rayefa.packages.manager",
                format!("`{}` is not one of auto, dnf, apt", manager.value),
            ));
        }
        if let Some(venv) = &packages.virtualenv
            && !venv.value.starts_with('/')
        {
            out.push(Finding::error(
                venv.referenced,
                "rayefa.packages.virtualenv",
                format!("`{}` is not an absolute path", venv.value),
            ));
        }
    }
    if let Some(efa) = &section.efa {
        if let Some(url) = &efa.installer_url
            && !(url.value.starts_with("https://") || url.value.starts_with("http://"))
        {
            out.push(Finding::error(
                url.referenced,
                "rayefa.efa.installer_url",
                "must be an http or https URL",
            ));
        }
        if let Some(sha) = &efa.installer_sha256
            && (sha.value.len() != 64 || !sha.value.chars().all(|c| c.is_ascii_hexdigit()))
        {
            out.push(Finding::error(
                sha.referenced,
                "rayefa.efa.installer_sha256",
                "must be 64 hexadecimal digits",
            ));
        }
        if let Some(fingerprint) = &efa.fingerprint {
            let digits: Vec<char> = fingerprint
                .value
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            if digits.len() != 40 || !digits.iter().all(char::is_ascii_hexdigit) {
                out.push(Finding::error(
                    fingerprint.referenced,
                    "rayefa.efa.fingerprint",
                    "must be 40 hexadecimal digits (spaces allowed)",
                ));
            }
        }
        if let (Some(url), None) = (&efa.installer_url, &efa.installer_sha256) {
            out.push(Finding::error(
                url.referenced,
                "rayefa.efa.installer_url",
                "another installer needs its own rayefa.efa.installer_sha256: the default \
                 checksum belongs to the default installer",
            ));
        }
    }
}

/// The limits the agent puts on a step's tuning (its configuration's `[steps.<name>]`).
fn step_tuning(tuning: &StepTuning, at: Location, name: &str, out: &mut Vec<Finding>) {
    let key = |field: &str| format!("rayefa.steps.{name}.{field}");
    if tuning.timeout_secs == Some(0) {
        out.push(Finding::error(
            at,
            key("timeout_secs"),
            "must be at least 1",
        ));
    }
    if tuning.attempts == Some(0) {
        out.push(Finding::error(at, key("attempts"), "must be at least 1"));
    }
    if let Some(backoff) = tuning.backoff_secs
        && !(0.0..=3600.0).contains(&backoff)
    {
        out.push(Finding::error(
            at,
            key("backoff_secs"),
            "must be between 0 and 3600",
        ));
    }
}
