//! What `up` and `status` print at the end: a table of nodes for a person, details of every
//! failed node, or one JSON document for a script.

use comfy_table::ContentArrangement;
use serde::Serialize;

use super::progress::format_elapsed;
use crate::wait::node::{NodeWatch, Verdict};
use rayefa_cluster::Finding;

/// The lines of a failed step's output shown under the table.
const TAIL_LINES: usize = 20;

/// The table of nodes.
pub(crate) fn node_table(nodes: &[NodeWatch]) -> String {
    let mut table = super::table(&[
        "NODE",
        "TYPE",
        "ROLE",
        "ADDRESS",
        "VIA",
        "STATE",
        "STEP",
        "READY AFTER",
    ]);
    table.set_content_arrangement(ContentArrangement::Dynamic);
    for node in nodes {
        let summary = NodeSummary::of(node);
        table.add_row([
            summary.id,
            summary.node_type,
            summary.role.to_owned(),
            summary.address.unwrap_or_default(),
            summary.via.to_owned(),
            summary.state.to_owned(),
            summary.step.unwrap_or_default(),
            summary
                .ready_after_secs
                .map(|s| format_elapsed(std::time::Duration::from_secs_f64(s)))
                .unwrap_or_default(),
        ]);
    }
    table.to_string()
}

/// For every failed node: the node, the step, the error and the end of the output.
pub(crate) fn failure_details(nodes: &[NodeWatch]) -> String {
    let mut text = String::new();
    for node in nodes.iter().filter(|n| n.verdict.is_failure()) {
        let summary = NodeSummary::of(node);
        text.push_str(&format!(
            "\nnode {} ({}) failed",
            summary.id, summary.node_type
        ));
        if let Some(step) = &summary.step {
            text.push_str(&format!(" at step {step}"));
        }
        text.push_str(&format!(
            ": {}\n",
            summary.error.as_deref().unwrap_or("unknown")
        ));
        if let Some(exit) = summary.exit_code {
            text.push_str(&format!("  exit code: {exit}\n"));
        }
        if let Some(tail) = summary
            .output_tail
            .as_deref()
            .filter(|t| !t.trim().is_empty())
        {
            let lines: Vec<&str> = tail.lines().collect();
            text.push_str("  output (last lines):\n");
            for line in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
                text.push_str(&format!("    {line}\n"));
            }
        }
    }
    text
}

/// One node in the JSON summary and the table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodeSummary {
    /// The provider's id.
    pub(crate) id: String,
    /// The node type.
    pub(crate) node_type: String,
    /// `head` or `worker`.
    pub(crate) role: &'static str,
    /// The node's private address.
    pub(crate) address: Option<String>,
    /// How the orchestrator hears from the node: `agent` (its HTTP endpoint), `tags` (the
    /// state it publishes on its instance, when its address cannot be reached) or `-`.
    pub(crate) via: &'static str,
    /// `ready`, `bootstrapping`, `failed`, `unreachable`, `stopped` or `no-answer`.
    pub(crate) state: &'static str,
    /// The current step, or the failed one.
    pub(crate) step: Option<String>,
    /// The failed step's error, or why the node is unreachable or stopped.
    pub(crate) error: Option<String>,
    /// The failed step's exit code.
    pub(crate) exit_code: Option<i32>,
    /// The end of the failed step's output.
    pub(crate) output_tail: Option<String>,
    /// Launch to ready, in seconds.
    pub(crate) ready_after_secs: Option<f64>,
}

impl NodeSummary {
    /// The summary of a watched node.
    pub(crate) fn of(node: &NodeWatch) -> Self {
        let document = node.document.as_ref();
        let current = document.and_then(|d| d.current_step());
        let (state, step, error, exit_code, output_tail) = match &node.verdict {
            Verdict::Ready => ("ready", None, None, None, None),
            Verdict::Failed { step, reason } => {
                let failed = document.and_then(|d| d.step(step));
                (
                    "failed",
                    Some(step.clone()),
                    Some(
                        failed
                            .and_then(|s| s.error.clone())
                            .unwrap_or_else(|| reason.clone()),
                    ),
                    failed.and_then(|s| s.exit_code),
                    failed.map(|s| s.output_tail.clone()),
                )
            }
            Verdict::Unreachable { silent_for, error } => (
                "unreachable",
                current.map(|s| s.name.clone()),
                Some(format!("no answer for {}s: {error}", silent_for.as_secs())),
                None,
                None,
            ),
            Verdict::Gone { why } => (
                "stopped",
                current.map(|s| s.name.clone()),
                Some(why.clone()),
                None,
                None,
            ),
            Verdict::Waiting => match (document, &node.last_error) {
                (None, _) if node.published.is_some() => (
                    "bootstrapping",
                    node.published.as_ref().and_then(|p| p.step.clone()),
                    None,
                    None,
                    None,
                ),
                (Some(_), _) => (
                    "bootstrapping",
                    current.map(|s| s.name.clone()),
                    None,
                    None,
                    None,
                ),
                (None, Some(error)) => ("no-answer", None, Some(error.to_string()), None, None),
                (None, None) => ("launched", None, None, None, None),
            },
        };
        Self {
            id: node.record.id.clone(),
            node_type: node.record.node_type.clone(),
            role: node.record.role.as_str(),
            address: node.record.private_address.clone(),
            via: node.via(),
            state,
            step,
            error,
            exit_code,
            output_tail,
            ready_after_secs: node.ready_after.map(|d| d.as_secs_f64()),
        }
    }
}

/// The JSON document `up` and `status` print with `--output json`.
#[derive(Debug, Serialize)]
pub(crate) struct ClusterSummary<'a> {
    /// `cluster_name`.
    pub(crate) cluster: &'a str,
    /// `provider.type`.
    pub(crate) provider: &'a str,
    /// `ready`, `failed`, `timed-out`, or for `status` also `bootstrapping`.
    pub(crate) outcome: &'static str,
    /// The ids of nodes this run launched or started again.
    pub(crate) launched: Vec<String>,
    /// Every node.
    pub(crate) nodes: Vec<NodeSummary>,
    /// Warnings and notes about the cluster file.
    pub(crate) findings: &'a [Finding],
}
