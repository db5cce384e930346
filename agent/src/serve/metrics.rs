//! The status document in Prometheus' text exposition format.

use std::fmt::Write;

use rayefa_wire::{NodeState, StatusDocument};

use crate::clock::now_ms;

const STEP_STATES: [&str; 7] = [
    "pending",
    "running",
    "succeeded",
    "already-done",
    "skipped",
    "failed",
    "blocked",
];

pub(super) fn render_metrics(doc: &StatusDocument) -> String {
    let mut out = String::new();
    let ready = u8::from(doc.state == NodeState::Ready);
    let failed = u8::from(matches!(doc.state, NodeState::Failed { .. }));
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP rayefa_node_ready 1 when every step succeeded, was already done or was skipped."
    );
    let _ = writeln!(out, "# TYPE rayefa_node_ready gauge");
    let _ = writeln!(out, "rayefa_node_ready {ready}");
    let _ = writeln!(out, "# HELP rayefa_node_failed 1 when a step failed.");
    let _ = writeln!(out, "# TYPE rayefa_node_failed gauge");
    let _ = writeln!(out, "rayefa_node_failed {failed}");
    let _ = writeln!(
        out,
        "# HELP rayefa_agent_info The agent's version and node."
    );
    let _ = writeln!(out, "# TYPE rayefa_agent_info gauge");
    let _ = writeln!(
        out,
        "rayefa_agent_info{{version=\"{}\",cluster=\"{}\",node_type=\"{}\",role=\"{}\"}} 1",
        escape(&doc.facts.agent_version),
        escape(&doc.node.cluster_name),
        escape(&doc.node.node_type),
        doc.node.role
    );
    let _ = writeln!(
        out,
        "# HELP rayefa_step_state 1 for the state each step is in, 0 for the others."
    );
    let _ = writeln!(out, "# TYPE rayefa_step_state gauge");
    for step in &doc.steps {
        for state in STEP_STATES {
            let value = u8::from(step.state.label() == state);
            let _ = writeln!(
                out,
                "rayefa_step_state{{step=\"{}\",state=\"{state}\"}} {value}",
                escape(&step.name)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP rayefa_step_duration_seconds How long the step's latest attempt took, or has taken so far."
    );
    let _ = writeln!(out, "# TYPE rayefa_step_duration_seconds gauge");
    let now = now_ms();
    for step in &doc.steps {
        if let Some(ms) = step.elapsed_ms(now) {
            let _ = writeln!(
                out,
                "rayefa_step_duration_seconds{{step=\"{}\"}} {:.3}",
                escape(&step.name),
                ms as f64 / 1000.0
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP rayefa_step_attempts_total Attempts made at the step, across restarts."
    );
    let _ = writeln!(out, "# TYPE rayefa_step_attempts_total counter");
    for step in &doc.steps {
        let _ = writeln!(
            out,
            "rayefa_step_attempts_total{{step=\"{}\"}} {}",
            escape(&step.name),
            step.attempts
        );
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}
