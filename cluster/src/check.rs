//! Checks of a parsed cluster file beyond its shape: names, the head type, worker counts,
//! resources, deprecated keys, start commands and setup commands that steps replace.

use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use super::finding::Finding;
use super::rayefa::EfaMode;
use super::replaced::{Recognition, Work, recognise};
use super::schema::{ClusterSpec, NodeTypeSpec};
use super::settings::Settings;

/// The EFA installer version the agent installs unless `rayefa.efa` names another.
pub const DEFAULT_EFA_VERSION: &str = "1.45.1";

/// Adds a finding for everything wrong or noteworthy in `spec`.
pub fn check(spec: &ClusterSpec, settings: &Settings, out: &mut Vec<Finding>) {
    cluster_name(&spec.cluster_name, out);
    node_types(spec, out);
    deprecated(spec, out);
    autoscaler(spec, out);
    start_commands(spec, out);
    efa_modes(spec, settings, out);
    for (key, command) in all_setup_commands(spec) {
        replaced_command(spec, settings, &key, command, out);
    }
}

/// Ray's schema only says "string"; rayefa's agent (and EC2 tag values and directory names)
/// take letters, digits, `-` and `_`. The seed's `${CLUSTER_NAME}-efa` has a hyphen.
fn cluster_name(name: &Spanned<String>, out: &mut Vec<Finding>) {
    let valid = !name.value.is_empty()
        && name.value.len() <= 64
        && name
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        out.push(Finding::error(
            name.referenced,
            "cluster_name",
            format!(
                "`{}` is not a cluster name: use 1 to 64 letters, digits, `-` and `_`",
                name.value
            ),
        ));
    }
}

fn node_types(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    let Some(types) = &spec.available_node_types else {
        let message = if spec.head_node.is_some() || spec.worker_nodes.is_some() {
            "is missing: Ray's legacy head_node/worker_nodes are not supported, describe the \
             nodes in available_node_types"
        } else {
            "is missing: rayefa launches the node types it lists"
        };
        out.push(Finding::error(
            Location::UNKNOWN,
            "available_node_types",
            message,
        ));
        return;
    };
    if types.value.is_empty() {
        out.push(Finding::error(
            types.referenced,
            "available_node_types",
            "lists no node type",
        ));
        return;
    }
    let names = || types.value.keys().cloned().collect::<Vec<_>>().join(", ");
    let head = match &spec.head_node_type {
        None => {
            out.push(Finding::error(
                Location::UNKNOWN,
                "head_node_type",
                format!("is missing: name the head's node type (one of {})", names()),
            ));
            None
        }
        Some(head) if !types.value.contains_key(&head.value) => {
            out.push(Finding::error(
                head.referenced,
                "head_node_type",
                format!(
                    "`{}` is not in available_node_types (which has {})",
                    head.value,
                    names()
                ),
            ));
            None
        }
        Some(head) => Some(head.value.as_str()),
    };

    let mut total_min = 0u64;
    for (name, node_type) in &types.value {
        let key = format!("available_node_types.{name}");
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            out.push(Finding::error(
                node_type.node_config.referenced,
                key.clone(),
                format!("`{name}` is not a node type name: use letters, digits, `-`, `_` and `.`"),
            ));
        }
        resources(node_type, &key, out);
        if !node_type.node_config.value.is_object() {
            out.push(Finding::error(
                node_type.node_config.referenced,
                format!("{key}.node_config"),
                "must be a mapping (the provider's launch arguments)",
            ));
        }
        let min = node_type.min_workers.as_ref().map_or(0, |m| m.value);
        if let (Some(min_spanned), Some(max)) = (&node_type.min_workers, &node_type.max_workers)
            && min_spanned.value > max.value
        {
            out.push(Finding::error(
                min_spanned.referenced,
                format!("{key}.min_workers"),
                format!(
                    "{} is more than max_workers ({})",
                    min_spanned.value, max.value
                ),
            ));
        }
        if Some(name.as_str()) == head {
            if let Some(first) = node_type.worker_setup_commands.iter().flatten().next() {
                out.push(Finding::warning(
                    first.referenced,
                    format!("{key}.worker_setup_commands"),
                    "ignored: this is the head's type, and the head runs head_setup_commands \
                     (as in Ray)",
                ));
            }
        } else {
            total_min += u64::from(min);
        }
    }
    if let Some(max) = &spec.max_workers
        && total_min > u64::from(max.value)
    {
        out.push(Finding::error(
            max.referenced,
            "max_workers",
            format!(
                "the worker types' min_workers add up to {total_min}, more than max_workers ({})",
                max.value
            ),
        ));
    }
}

/// Ray's schema: every resource is a whole number, at least 0.
fn resources(node_type: &NodeTypeSpec, key: &str, out: &mut Vec<Finding>) {
    let Some(resources) = &node_type.resources else {
        return;
    };
    for (resource, amount) in &resources.value {
        if amount.value < 0.0 || amount.value.fract() != 0.0 || !amount.value.is_finite() {
            out.push(Finding::error(
                amount.referenced,
                format!("{key}.resources.{resource}"),
                format!(
                    "{} is not a whole number of at least 0 (Ray's schema)",
                    amount.value
                ),
            ));
        }
    }
}

fn deprecated(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    let keys: [(&str, &Option<Spanned<Value>>, &str); 8] = [
        (
            "min_workers",
            &spec.min_workers,
            "available_node_types.<type>.min_workers replaces it",
        ),
        (
            "initial_workers",
            &spec.initial_workers,
            "deprecated by Ray",
        ),
        (
            "autoscaling_mode",
            &spec.autoscaling_mode,
            "deprecated by Ray",
        ),
        (
            "target_utilization_fraction",
            &spec.target_utilization_fraction,
            "deprecated by Ray",
        ),
        (
            "worker_default_node_type",
            &spec.worker_default_node_type,
            "deprecated by Ray",
        ),
        (
            "head_node",
            &spec.head_node,
            "Ray's legacy format; available_node_types replaces it",
        ),
        (
            "worker_nodes",
            &spec.worker_nodes,
            "Ray's legacy format; available_node_types replaces it",
        ),
        (
            "no_restart",
            &spec.no_restart,
            "only `ray up --no-restart` sets it",
        ),
    ];
    for (key, value, why) in keys {
        if let Some(value) = value {
            out.push(Finding::warning(
                value.referenced,
                key,
                format!("ignored: {why}"),
            ));
        }
    }
}

fn autoscaler(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    if let Some(speed) = &spec.upscaling_speed {
        out.push(Finding::note(
            speed.referenced,
            "upscaling_speed",
            "not used: rayefa launches each worker type's min_workers and does not autoscale",
        ));
    }
    if let Some(idle) = &spec.idle_timeout_minutes {
        out.push(Finding::note(
            idle.referenced,
            "idle_timeout_minutes",
            "not used: rayefa does not autoscale, so it stops no idle node",
        ));
    }
}

/// Ray's launcher writes `~/ray_bootstrap_config.yaml` on the head over SSH; rayefa does not,
/// so a start command that points Ray's autoscaler at it starts an autoscaler without its file.
fn start_commands(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    for command in spec.head_start_ray_commands.iter().flatten() {
        if command.value.contains("ray_bootstrap_config.yaml") {
            out.push(Finding::warning(
                command.referenced,
                "head_start_ray_commands",
                "rayefa does not write ~/ray_bootstrap_config.yaml (Ray's launcher copies it \
                 over SSH), so Ray's autoscaler will not find it; remove --autoscaling-config",
            ));
        }
    }
}

/// `rayefa.efa.mode` does not apply to node types whose `node_config` asks for EFA.
fn efa_modes(spec: &ClusterSpec, settings: &Settings, out: &mut Vec<Finding>) {
    let Some(EfaMode::Off) = settings.efa_mode else {
        return;
    };
    let Some(types) = &spec.available_node_types else {
        return;
    };
    for (name, node_type) in &types.value {
        if super::efa_interfaces(&node_type.node_config.value) > 0 {
            out.push(Finding::warning(
                node_type.node_config.referenced,
                format!("available_node_types.{name}.node_config"),
                "has EFA interfaces, so EFA is required on these nodes whatever rayefa.efa.mode says",
            ));
        }
    }
}

/// Every initialization and setup command in the file, with its list's key.
fn all_setup_commands(spec: &ClusterSpec) -> Vec<(String, &Spanned<String>)> {
    let mut all = Vec::new();
    let top = [
        ("initialization_commands", &spec.initialization_commands),
        ("setup_commands", &spec.setup_commands),
        ("head_setup_commands", &spec.head_setup_commands),
        ("worker_setup_commands", &spec.worker_setup_commands),
    ];
    for (key, list) in top {
        for (i, command) in list.iter().flatten().enumerate() {
            all.push((format!("{key}[{i}]"), command));
        }
    }
    if let Some(types) = &spec.available_node_types {
        for (name, node_type) in &types.value {
            let lists = [
                (
                    "initialization_commands",
                    &node_type.initialization_commands,
                ),
                ("worker_setup_commands", &node_type.worker_setup_commands),
            ];
            for (key, list) in lists {
                for (i, command) in list.iter().flatten().enumerate() {
                    all.push((format!("available_node_types.{name}.{key}[{i}]"), command));
                }
            }
        }
    }
    all
}

/// Tells the user what happens to a command that a step also does.
fn replaced_command(
    spec: &ClusterSpec,
    settings: &Settings,
    key: &str,
    command: &Spanned<String>,
    out: &mut Vec<Finding>,
) {
    let steps_named = |work: &[Work]| {
        let mut names: Vec<&str> = work.iter().map(|w| w.step().name()).collect();
        names.dedup();
        names.join(" and ")
    };
    match recognise(&command.value) {
        Recognition::Unrelated => {}
        Recognition::Overlaps(work) => out.push(Finding::warning(
            command.referenced,
            key,
            format!(
                "`{}` looks like work of step {}, but does more, so it is kept and runs as \
                 well; split it if the step should do that part",
                command.value,
                steps_named(&work)
            ),
        )),
        Recognition::Replaceable(work) if !settings.replace_setup_commands => {
            out.push(Finding::warning(
                command.referenced,
                key,
                format!(
                    "`{}` does what step {} does; it is kept because \
                     rayefa.replace_setup_commands is false, so the work is done twice",
                    command.value,
                    steps_named(&work)
                ),
            ));
        }
        Recognition::Replaceable(work) => {
            let mut message = format!(
                "`{}` is replaced by step {}",
                command.value,
                steps_named(&work)
            );
            for item in &work {
                message.push_str(&detail(spec, item));
            }
            message.push_str(
                " (the command is not run; set rayefa.replace_setup_commands: false to keep it)",
            );
            out.push(Finding::warning(command.referenced, key, message));
        }
    }
}

/// What the replacing step does differently, in a few words.
fn detail(spec: &ClusterSpec, work: &Work) -> String {
    let section = spec.rayefa.as_ref().map(|r| &r.value);
    let step_off = |name: &str| {
        section
            .and_then(|s| s.steps.as_ref())
            .and_then(|steps| steps.value.get(name))
            .is_some_and(|setting| !setting.enabled())
    };
    let mut text = String::new();
    match work {
        Work::GrowRoot => text.push_str(", which finds the root disk itself and reports errors"),
        Work::InstallEfa { version } => {
            let configured = section
                .and_then(|s| s.efa.as_ref())
                .and_then(|e| e.installer_version.clone())
                .unwrap_or_else(|| DEFAULT_EFA_VERSION.to_owned());
            text.push_str(", which verifies the installer's SHA-256 and signature");
            if let Some(version) = version.as_ref().filter(|v| **v != configured) {
                text.push_str(&format!(
                    "; note it installs {configured}, not {version} (set rayefa.efa.installer_url, \
                     installer_sha256 and installer_version for another)"
                ));
            }
        }
        Work::PythonPackages(packages) => {
            let configured = section
                .and_then(|s| s.packages.as_ref())
                .is_some_and(|p| p.python.is_some());
            if configured {
                text.push_str(&format!(
                    ", whose Python packages are rayefa.packages.python: {} are not installed \
                     unless listed there",
                    packages.join(" ")
                ));
            } else {
                text.push_str(&format!(", into its virtualenv: {}", packages.join(" ")));
            }
        }
        Work::OsPackages { packages, .. } => {
            let configured = section
                .and_then(|s| s.packages.as_ref())
                .is_some_and(|p| p.os.is_some());
            if configured {
                text.push_str(&format!(
                    ", whose OS packages are rayefa.packages.os: {} are not installed unless \
                     listed there",
                    packages.join(" ")
                ));
            } else {
                text.push_str(&format!(
                    ", under its package-manager lock: {}",
                    packages.join(" ")
                ));
            }
        }
    }
    if step_off(work.step().name()) {
        text.push_str(&format!(
            "; step {} is turned off in rayefa.steps, so nothing does this work",
            work.step().name()
        ));
    }
    text
}
