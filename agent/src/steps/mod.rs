//! The bootstrap's steps, one per file, and the graph they form.

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
    let steps: Vec<Arc<dyn Step>> = vec![];
    StepGraph::new(steps)
}
