//! Rendering a node's agent configuration from the cluster file and the node's role.
//!
//! One function turns (cluster file, node type, role, head address) into the
//! [`AgentConfigFile`] the node's agent reads. The local provider writes it to the node's
//! directory; EC2 user data carries the same document. Ray's rules for which command lists a
//! node runs are followed here, once:
//!
//! - initialization: the node type's `initialization_commands` if it has them, else the
//!   top-level list;
//! - setup: the head runs `setup_commands` + `head_setup_commands`; a worker runs the node
//!   type's `worker_setup_commands` if it has them (they replace both lists, as in Ray), else
//!   `setup_commands` + `worker_setup_commands`;
//! - start: `head_start_ray_commands` or `worker_start_ray_commands`; absent lists leave Ray's
//!   defaults to the agent.
//!
//! Commands that an agent step replaces are dropped (see [`crate::replaced`]) and
//! the packages they installed are handed to the install-ray step instead.

pub(crate) mod packages;

use std::collections::BTreeMap;

use rayefa_wire::{
    AgentConfigFile, AgentSection, CommandsSection, EfaSection, NodeSection, Role, StepName,
    StepSection, StepsSection,
};
use serde_saphyr::Spanned;

use crate::rayefa::{EfaMode, StepSetting};
use crate::replaced::{Recognition, recognise};
use crate::{Cluster, efa_interfaces};

/// The agent configuration a node of `node_type` in `role` receives. Workers get the head's
/// address. The local provider and EC2 user data both start from this.
pub fn render_agent_config(
    cluster: &Cluster,
    node_type: &str,
    role: Role,
    head_address: Option<&str>,
) -> AgentConfigFile {
    let spec = &cluster.spec;
    let this_type = cluster.node_type(node_type);
    let section = cluster.rayefa();
    let replace = cluster.settings.replace_setup_commands;

    let initialization = this_type
        .and_then(|t| t.initialization_commands.as_ref())
        .or(spec.initialization_commands.as_ref());
    let setup: Vec<&Spanned<String>> = match role {
        Role::Head => chain(&spec.setup_commands, &spec.head_setup_commands),
        Role::Worker => match this_type.and_then(|t| t.worker_setup_commands.as_ref()) {
            Some(own) => own.iter().collect(),
            None => chain(&spec.setup_commands, &spec.worker_setup_commands),
        },
    };
    let start = match role {
        Role::Head => spec.head_start_ray_commands.as_ref(),
        Role::Worker => spec.worker_start_ray_commands.as_ref(),
    };

    let mut dropped = Vec::new();
    let mut keep = |commands: Vec<&Spanned<String>>| -> Vec<String> {
        commands
            .into_iter()
            .filter_map(|c| match recognise(&c.value) {
                Recognition::Replaceable(work) if replace => {
                    dropped.extend(work);
                    None
                }
                _ => Some(c.value.clone()),
            })
            .collect()
    };
    let initialization = keep(initialization.iter().flat_map(|l| l.iter()).collect());
    let setup = keep(setup);

    let interfaces = this_type.map_or(0, |t| efa_interfaces(&t.node_config.value));
    let efa_mode = if interfaces > 0 {
        EfaMode::Required
    } else {
        cluster.settings.efa_mode.unwrap_or(EfaMode::Auto)
    };
    let efa_settings = section.and_then(|s| s.efa.as_ref());

    AgentConfigFile {
        node: Some(NodeSection {
            cluster_name: Some(cluster.name().to_owned()),
            role: Some(role),
            node_type: Some(node_type.to_owned()),
            head_address: match role {
                Role::Head => None,
                Role::Worker => head_address.map(str::to_owned),
            },
            resources: this_type
                .and_then(|t| t.resources.as_ref())
                .map(|resources| {
                    resources
                        .value
                        .iter()
                        .map(|(k, v)| (k.clone(), v.value))
                        .collect::<BTreeMap<_, _>>()
                })
                .filter(|r| !r.is_empty()),
            labels: this_type
                .and_then(|t| t.labels.clone())
                .filter(|l| !l.is_empty()),
        }),
        agent: Some(AgentSection {
            listen: Some(format!("0.0.0.0:{}", cluster.settings.agent_port)),
            ..AgentSection::default()
        }),
        environment: section
            .and_then(|s| s.environment.as_ref())
            .map(|e| e.value.clone())
            .filter(|e| !e.is_empty()),
        steps: steps(section.and_then(|s| s.steps.as_ref()).map(|s| &s.value)),
        packages: packages::render(section.and_then(|s| s.packages.as_ref()), &dropped),
        commands: Some(CommandsSection {
            initialization: Some(initialization).filter(|c| !c.is_empty()),
            setup: Some(setup).filter(|c| !c.is_empty()),
            start: start.map(|list| list.iter().map(|c| c.value.clone()).collect()),
            user: spec
                .auth
                .as_ref()
                .and_then(|a| a.value.ssh_user.as_ref())
                .map(|u| u.value.clone()),
        }),
        efa: Some(EfaSection {
            mode: Some(efa_mode.as_str().to_owned()),
            installer_url: efa_settings
                .and_then(|e| e.installer_url.as_ref())
                .map(|u| u.value.clone()),
            installer_sha256: efa_settings
                .and_then(|e| e.installer_sha256.as_ref())
                .map(|s| s.value.clone()),
            fingerprint: efa_settings
                .and_then(|e| e.fingerprint.as_ref())
                .map(|f| f.value.clone()),
            installer_version: efa_settings.and_then(|e| e.installer_version.clone()),
            installer_flags: efa_settings.and_then(|e| e.installer_flags.clone()),
            expected_interfaces: (interfaces > 0).then_some(interfaces),
            ..EfaSection::default()
        }),
        // The head's provider adds it: only it knows where rayefa lives on the head.
        autoscaling: None,
    }
}

/// Two optional command lists, one after the other.
fn chain<'a>(
    first: &'a Option<Vec<Spanned<String>>>,
    second: &'a Option<Vec<Spanned<String>>>,
) -> Vec<&'a Spanned<String>> {
    first.iter().chain(second.iter()).flatten().collect()
}

/// `rayefa.steps` as the agent's `[steps]` tables.
fn steps(settings: Option<&BTreeMap<String, StepSetting>>) -> Option<StepsSection> {
    let settings = settings?;
    let section = |name: StepName| {
        settings.get(name.as_str()).map(|setting| match setting {
            StepSetting::Enabled(on) => StepSection {
                enabled: Some(*on),
                ..StepSection::default()
            },
            StepSetting::Tuned(t) => StepSection {
                enabled: t.enabled,
                timeout_secs: t.timeout_secs,
                attempts: t.attempts,
                backoff_secs: t.backoff_secs,
            },
        })
    };
    Some(StepsSection {
        grow_root: section(StepName::GrowRoot),
        install_efa: section(StepName::InstallEfa),
        probe_efa: section(StepName::ProbeEfa),
        install_ray: section(StepName::InstallRay),
        setup_commands: section(StepName::SetupCommands),
        start_ray: section(StepName::StartRay),
    })
}

/// The document as the TOML text a node's agent reads.
pub fn to_toml(config: &AgentConfigFile) -> Result<String, toml::ser::Error> {
    toml::to_string(config)
}

#[cfg(test)]
mod tests;
