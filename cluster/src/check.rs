//! Checks of a parsed cluster file beyond its shape: names, the head type, worker counts,
//! resources, deprecated keys, start commands and setup commands that steps replace.

use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use super::finding::Finding;
use super::rayefa::EfaMode;
use super::replaced::{Recognition, Work, recognise};
use super::schema::{ClusterSpec, NodeTypeSpec};
use super::settings::Settings;
use super::ssh_only::is_empty;

/// The head's node type when `head_node_type` is not given and a type of this name exists,
/// as Ray fills it in.
pub const DEFAULT_HEAD_NODE_TYPE: &str = "ray.head.default";

/// The EFA installer version the agent installs unless `rayefa.efa` names another.
pub const DEFAULT_EFA_VERSION: &str = "1.45.1";

/// Adds a finding for everything wrong or noteworthy in `spec`.
pub fn check(spec: &ClusterSpec, settings: &Settings, out: &mut Vec<Finding>) {
    cluster_name(&spec.cluster_name, out);
    provider_keys(spec, out);
    agent_package(spec, out);
    node_types(spec, out);
    deprecated(spec, out);
    autoscaler(spec, out);
    start_commands(spec, out);
    efa_modes(spec, settings, out);
    fabric_check(spec, out);
    for (key, command) in all_setup_commands(spec) {
        replaced_command(spec, settings, &key, command, out);
    }
}

/// Fills in `head_node_type` as Ray does when the file leaves it out: `ray.head.default`, if
/// that node type exists (a note says so). Otherwise [`check`] reports it missing.
pub fn default_head_node_type(spec: &mut ClusterSpec, out: &mut Vec<Finding>) {
    if spec.head_node_type.is_some() {
        return;
    }
    let Some(types) = &spec.available_node_types else {
        return;
    };
    let Some((name, node_type)) = types.value.get_key_value(DEFAULT_HEAD_NODE_TYPE) else {
        return;
    };
    let at = node_type.node_config.referenced;
    out.push(Finding::note(
        at,
        "head_node_type",
        format!("not given: the head is `{name}`, as in Ray"),
    ));
    spec.head_node_type = Some(Spanned::new(name.clone(), at, at));
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

/// Keys of Ray's AWS provider that set up something rayefa does not: each gets a warning that
/// says what rayefa does instead. Empty values say nothing.
fn provider_keys(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    let provider = &spec.provider.value;
    let keys = [
        (
            "security_group",
            &provider.security_group,
            "ignored: rayefa creates no security group; nodes get the groups their node_config \
             names (SecurityGroupIds, or each NetworkInterfaces entry's Groups), and `rayefa \
             prepare` adds the rules EFA needs to them",
        ),
        (
            "cloudwatch",
            &provider.cloudwatch,
            "ignored: rayefa installs no CloudWatch agent and creates no dashboard or alarm; \
             install the agent in setup_commands or on the image (each node's own state is in \
             its agent's /v1/status and /metrics)",
        ),
        (
            "key_pair",
            &provider.key_pair,
            "ignored: rayefa creates no key pair and logs into no node; for your own logins \
             name an existing key pair in node_config.KeyName",
        ),
    ];
    for (key, value, what) in keys {
        if let Some(value) = value.as_ref().filter(|v| !is_empty(&v.value)) {
            out.push(Finding::warning(
                value.referenced,
                format!("provider.{key}"),
                what,
            ));
        }
    }
    if let Some(cache) = provider.cache_stopped_nodes.as_ref().filter(|c| c.value) {
        out.push(Finding::warning(
            cache.referenced,
            "provider.cache_stopped_nodes",
            "ignored: rayefa does not keep stopped nodes to reuse; `rayefa down` terminates \
             them and `rayefa up` launches new ones",
        ));
    }
}

/// The aws provider boots machine images, which need the agent: from `rayefa.agent_package`
/// or `rayefa.agent_store`, or already installed, which `rayefa.agent_on_image: true` states. Without either, user
/// data stops on a stock image and no node ever reports.
fn agent_package(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    if spec.provider.value.kind != "aws" {
        return;
    }
    let section = spec.rayefa.as_ref().map(|r| &r.value);
    let package = section.is_some_and(|s| s.agent_package.is_some() || s.agent_store.is_some());
    let on_image = section.and_then(|s| s.agent_on_image).unwrap_or(false);
    if !package && !on_image {
        out.push(Finding::warning(
            spec.provider.referenced,
            "rayefa.agent_package",
            "is not set, so nodes boot only on an image that already carries rayefa-agent; on \
             a stock image user data stops and no node ever reports. Set \
             rayefa.agent_package (the package's url and sha256), rayefa.agent_store (where \
             rayefa publishes it), or rayefa.agent_on_image: true if the image has the agent",
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
                types.referenced,
                "head_node_type",
                format!(
                    "is missing, and available_node_types has no `{DEFAULT_HEAD_NODE_TYPE}` \
                     (Ray's default): name the head's node type (one of {})",
                    names()
                ),
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
        if Some(name.as_str()) == head
            && min == 0
            && let Some(first) = node_type.worker_setup_commands.iter().flatten().next()
        {
            out.push(Finding::warning(
                first.referenced,
                format!("{key}.worker_setup_commands"),
                "ignored: this is the head's type, the head runs head_setup_commands (as in \
                 Ray), and its min_workers launches no worker of this type to run them",
            ));
        }
        // As in Ray, the head type's min_workers are workers of the head's type, launched
        // beside the head and counted against max_workers.
        total_min += u64::from(min);
    }
    if let Some(max) = &spec.max_workers
        && total_min > u64::from(max.value)
    {
        out.push(Finding::error(
            max.referenced,
            "max_workers",
            format!(
                "the node types' min_workers add up to {total_min} workers, more than \
                 max_workers ({})",
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

/// The autoscaler's keys. `upscaling_speed` and `idle_timeout_minutes` feed Ray's autoscaler
/// when the cluster autoscales and nothing otherwise. Ray 2.60's autoscaler (v1, the one that
/// `ray start --head --autoscaling-config` runs) reads neither a type's `idle_timeout_s` nor its
/// `priority`: only its v2 autoscaler (KubeRay's) does, so both are ignored either way.
fn autoscaler(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    for (name, node_type) in spec
        .available_node_types
        .iter()
        .flat_map(|types| types.value.iter())
    {
        if let Some(idle) = &node_type.idle_timeout_s {
            out.push(Finding::note(
                idle.referenced,
                format!("available_node_types.{name}.idle_timeout_s"),
                "ignored: Ray 2.60's autoscaler (v1, which `ray start --head` runs) removes idle \
                 workers after the top-level idle_timeout_minutes only; set that instead \
                 (fractions work: 0.5 is 30 s)",
            ));
        }
        if let Some(priority) = &node_type.priority {
            out.push(Finding::note(
                priority.referenced,
                format!("available_node_types.{name}.priority"),
                "ignored: Ray 2.60's autoscaler (v1, which `ray start --head` runs) picks the node \
                 type whose resources best fit the pending demand and does not read priority",
            ));
        }
    }
    if spec.autoscales() {
        return;
    }
    let why = "no worker type's max_workers exceeds its min_workers, so Ray's autoscaler \
               does not run: up launches each type's min_workers and nothing scales";
    if let Some(speed) = &spec.upscaling_speed {
        out.push(Finding::note(
            speed.referenced,
            "upscaling_speed",
            format!("not used: {why}"),
        ));
    }
    if let Some(idle) = &spec.idle_timeout_minutes {
        out.push(Finding::note(
            idle.referenced,
            "idle_timeout_minutes",
            format!("not used: {why}"),
        ));
    }
}

/// Ray's launcher writes `~/ray_bootstrap_config.yaml` on the head over SSH. rayefa's head
/// agent writes Ray's autoscaling configuration where `--autoscaling-config` points, but only
/// for a cluster that autoscales: otherwise a start command naming the file starts an
/// autoscaler without it.
fn start_commands(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    if spec.autoscales() {
        return;
    }
    for command in spec.head_start_ray_commands.iter().flatten() {
        if command.value.contains("ray_bootstrap_config.yaml") {
            out.push(Finding::warning(
                command.referenced,
                "head_start_ray_commands",
                "no worker type's max_workers exceeds its min_workers, so the cluster does not \
                 autoscale and rayefa writes no ~/ray_bootstrap_config.yaml (Ray's launcher \
                 copies it over SSH): Ray's autoscaler will not find it; remove \
                 --autoscaling-config",
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

/// `rayefa.check: true` needs two nodes to make a pair; on EC2 with EFA node types, the check
/// tests EFA between the nodes of those types only, so it counts those.
fn fabric_check(spec: &ClusterSpec, out: &mut Vec<Finding>) {
    let Some(check) = spec.rayefa.as_ref().and_then(|r| r.value.check.as_ref()) else {
        return;
    };
    let Some(types) = spec.available_node_types.as_ref().filter(|_| check.value) else {
        return;
    };
    let head = spec.head_node_type.as_ref().map(|h| h.value.as_str());
    let started = |name: &str, node_type: &NodeTypeSpec| {
        u64::from(node_type.min_workers.as_ref().map_or(0, |m| m.value))
            + u64::from(Some(name) == head)
    };
    let has_efa =
        |node_type: &NodeTypeSpec| super::efa_interfaces(&node_type.node_config.value) > 0;
    let efa_check = spec.provider.value.kind == "aws" && types.value.values().any(has_efa);
    let count: u64 = types
        .value
        .iter()
        .filter(|(_, t)| !efa_check || has_efa(t))
        .map(|(name, t)| started(name, t))
        .sum();
    if count < 2 {
        let of = if efa_check {
            " of node types with EFA interfaces"
        } else {
            ""
        };
        out.push(Finding::warning(
            check.referenced,
            "rayefa.check",
            format!(
                "`up` starts {count} node{}{of}, and a fabric check needs two to make a pair: \
                 it will be skipped (raise min_workers)",
                if count == 1 { "" } else { "s" }
            ),
        ));
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
                text.push_str(&format!(
                    ", which adds {} to its default Python packages ({}); set \
                     rayefa.packages.python for another list",
                    packages.join(" "),
                    crate::render::packages::DEFAULT_PYTHON_PACKAGES.join(" ")
                ));
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
                    ", which adds {} to its default OS packages under its package-manager lock",
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
