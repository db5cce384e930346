//! The bootstrap's steps, one per file, and the graph they form.

mod cluster_commands;
mod efa_presence;
mod grow_root;
pub(crate) mod install_efa;
mod install_ray;
mod probe_efa;
mod setup_commands;
mod start_ray;
#[cfg(test)]
mod testing;
mod venv;

use std::sync::Arc;

use crate::engine::{GraphError, Step, StepGraph};

pub(crate) const GROW_ROOT: &str = "grow-root";
pub(crate) const INSTALL_EFA: &str = "install-efa";
pub(crate) const PROBE_EFA: &str = "probe-efa";
pub(crate) const INSTALL_RAY: &str = "install-ray";
pub(crate) const SETUP_COMMANDS: &str = "setup-commands";
pub(crate) const START_RAY: &str = "start-ray";

/// The node's bootstrap graph.
pub(crate) fn bootstrap_graph() -> Result<StepGraph, GraphError> {
    let steps: Vec<Arc<dyn Step>> = vec![
        Arc::new(grow_root::GrowRoot::default()),
        Arc::new(install_efa::InstallEfa::new()),
        Arc::new(probe_efa::ProbeEfa::new()),
        Arc::new(install_ray::InstallRay),
        Arc::new(setup_commands::SetupCommands),
        Arc::new(start_ray::StartRay),
    ];
    StepGraph::new(steps)
}
