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

use rayefa_wire::StepName;

use crate::engine::{GraphError, Step, StepGraph};

// The names as the `Step` trait hands them to the engine, which knows no step by name.
pub(crate) const GROW_ROOT: &str = StepName::GrowRoot.as_str();
pub(crate) const INSTALL_EFA: &str = StepName::InstallEfa.as_str();
pub(crate) const PROBE_EFA: &str = StepName::ProbeEfa.as_str();
pub(crate) const INSTALL_RAY: &str = StepName::InstallRay.as_str();
pub(crate) const SETUP_COMMANDS: &str = StepName::SetupCommands.as_str();
pub(crate) const START_RAY: &str = StepName::StartRay.as_str();

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

#[cfg(test)]
mod graph_tests {
    use super::*;

    #[test]
    fn the_graph_has_every_named_step_and_each_follows_its_dependencies() {
        let graph = bootstrap_graph().expect("the bootstrap graph is sound");
        let mut in_graph: Vec<&str> = graph.steps().iter().map(|s| s.name()).collect();
        in_graph.sort_unstable();
        let mut named = StepName::ALL.map(StepName::as_str);
        named.sort_unstable();
        assert_eq!(in_graph, named);
        for step in graph.steps() {
            let position = |name: &str| StepName::ALL.iter().position(|s| s.as_str() == name);
            for dependency in step.depends_on() {
                assert!(
                    position(dependency) < position(step.name()),
                    "{} comes before its dependency {dependency} in StepName::ALL",
                    step.name()
                );
            }
        }
    }
}
