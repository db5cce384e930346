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
    render_table(nodes, false)
}

/// The table of nodes with what `-v` adds: the Ray version each node installed.
pub(crate) fn node_table_verbose(nodes: &[NodeWatch]) -> String {
    render_table(nodes, true)
}

fn render_table(nodes: &[NodeWatch], verbose: bool) -> String {
    let mut header = vec![
        "NODE",
        "TYPE",
        "ROLE",
        "ADDRESS",
        "VIA",
        "STATE",
        "STEP",
        "READY AFTER",
    ];
    if verbose {
        header.push("RAY");
    }
    let mut table = super::table(&header);
    table.set_content_arrangement(ContentArrangement::Dynamic);
    for node in nodes {
        let summary = NodeSummary::of(node);
        let mut row = vec![
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
        ];
        if verbose {
            row.push(summary.ray_version.unwrap_or_default());
        }
        table.add_row(row);
    }
    table.to_string()
}

/// A warning when the nodes that report a Ray version do not all report the same one (a Ray
/// cluster needs one version everywhere; a node type with another Python or image gets
/// another Ray), naming the nodes of each version. `None` when they agree.
pub(crate) fn ray_version_warning(nodes: &[NodeWatch]) -> Option<String> {
    let mut by_version: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for node in nodes {
        if let Some(version) = node.document.as_ref().and_then(|d| d.ray_version()) {
            by_version
                .entry(version)
                .or_default()
                .push(node.record.id.clone());
        }
    }
    if by_version.len() < 2 {
        return None;
    }
    let groups: Vec<String> = by_version
        .iter()
        .map(|(version, ids)| format!("Ray {version} on {}", ids.join(", ")))
        .collect();
    Some(format!(
        "warning: the nodes installed different Ray versions ({}); Ray needs the same version \
         on every node of a cluster: pin it in rayefa.packages.python (ray==X.Y.Z)",
        groups.join("; ")
    ))
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
    /// The Ray version install-ray installed, once it has.
    pub(crate) ray_version: Option<String>,
    /// Whether the node was launched for Ray's autoscaler (its `rayefa-autoscaled` tag).
    /// `status` reads the nodes' tags and always says; `up` launched its nodes itself and
    /// leaves it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) autoscaled: Option<bool>,
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
            ray_version: document.and_then(|d| d.ray_version()),
            autoscaled: None,
        }
    }

    /// The summary, saying whether Ray's autoscaler asked for the node.
    pub(crate) fn with_autoscaled(self, autoscaled: bool) -> Self {
        Self {
            autoscaled: Some(autoscaled),
            ..self
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rayefa_wire::{NodeFacts, NodeIdentity, NodeState, Role, StatusDocument, StepStatus};

    use super::*;
    use crate::provider::{Lifecycle, NodeRecord};

    /// A ready node `id` whose install-ray reported `ray` (or nothing).
    fn node(id: &str, ray: Option<&str>) -> NodeWatch {
        let mut watch = NodeWatch::new(
            NodeRecord {
                id: id.into(),
                node_type: "w".into(),
                role: Role::Worker,
                agent_address: None,
                private_address: Some("127.0.0.1".into()),
                lifecycle: Lifecycle::Running,
                launched_at_ms: None,
            },
            Instant::now(),
        );
        let mut step = StepStatus::pending("install-ray", vec![]);
        step.detail = ray.map(|v| serde_json::json!({ "ray_version": v }));
        watch.document = Some(StatusDocument {
            api: rayefa_wire::API_VERSION,
            node: NodeIdentity {
                cluster_name: "c".into(),
                role: Role::Worker,
                node_type: "w".into(),
            },
            facts: NodeFacts::default(),
            state: NodeState::Ready,
            steps: vec![step],
            warnings: vec![],
            generated_at_ms: 0,
        });
        watch.verdict = Verdict::Ready;
        watch
    }

    #[test]
    fn verbose_shows_each_node_s_ray_version() {
        let nodes = [node("i-1", Some("2.60.0")), node("i-2", None)];
        let plain = node_table(&nodes);
        assert!(
            !plain.contains("RAY") && !plain.contains("2.60.0"),
            "{plain}"
        );
        let verbose = node_table_verbose(&nodes);
        assert!(verbose.contains("RAY"), "{verbose}");
        let row = verbose
            .lines()
            .find(|l| l.contains("i-1"))
            .expect("a row for i-1");
        assert!(row.contains("2.60.0"), "{verbose}");
        assert_eq!(
            NodeSummary::of(&nodes[0]).ray_version.as_deref(),
            Some("2.60.0")
        );
    }

    #[test]
    fn different_ray_versions_are_a_warning_naming_the_nodes() {
        let same = [
            node("i-1", Some("2.60.0")),
            node("i-2", Some("2.60.0")),
            node("i-3", None),
        ];
        assert_eq!(ray_version_warning(&same), None);
        let mixed = [
            node("i-1", Some("2.60.0")),
            node("i-2", Some("2.51.2")),
            node("i-3", Some("2.60.0")),
        ];
        let warning = ray_version_warning(&mixed).expect("a warning");
        assert!(
            warning.contains("Ray 2.51.2 on i-2") && warning.contains("Ray 2.60.0 on i-1, i-3"),
            "{warning}"
        );
    }
}
