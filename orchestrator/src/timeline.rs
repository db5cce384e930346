//! A picture of a bootstrap: one SVG with a row per node and a lane per step, built from the
//! agents' status documents.
//!
//! Every bar carries its numbers as `data-*` attributes (node, step, state, start and end in
//! milliseconds since the Unix epoch) and a `<title>` tooltip, so that the picture can be
//! checked against `/v1/status` and read without a legend.

use std::fmt::Write as _;

use rayefa_wire::{NodeState, Role, SpanKind, StatusDocument, StepState, StepStatus};

/// A node as the picture shows it: what the provider knows, and its agent's document or why
/// there is none.
#[derive(Debug)]
pub(crate) struct NodeTimeline {
    /// The provider's id for the node.
    pub(crate) id: String,
    /// The node's type in the cluster file.
    pub(crate) node_type: String,
    /// Head or worker.
    pub(crate) role: Role,
    /// The agent's status document, or why it could not be had.
    pub(crate) status: Result<StatusDocument, String>,
}

const LABEL_WIDTH: f64 = 250.0;
const CHART_WIDTH: f64 = 900.0;
const NOTE_WIDTH: f64 = 230.0;
const TOP: f64 = 86.0;
const NODE_HEADER: f64 = 24.0;
const LANE: f64 = 18.0;
const BAR: f64 = 12.0;
const NODE_GAP: f64 = 10.0;
/// The shortest time span drawn, so that a cluster that came up in a blink is not a division
/// by zero or a single pixel.
const SHORTEST_SPAN_MS: u64 = 1_000;

/// The picture of `nodes`, where running steps and open spans end at `now_ms`.
pub(crate) fn render_svg(cluster_name: &str, nodes: &[NodeTimeline], now_ms: u64) -> String {
    let scale = Scale::of(nodes, now_ms);
    let height = TOP + nodes.iter().map(|n| node_height(n) + NODE_GAP).sum::<f64>() + 10.0;
    let width = LABEL_WIDTH + CHART_WIDTH + NOTE_WIDTH;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">
<style>
.lock {{ fill: #ffb300; }}
.backoff {{ fill: #fb8c00; fill-opacity: 0.55; }}
.earlier {{ fill: #ef9a9a; }}
.lane-label {{ fill: #333; }}
.note {{ fill: #555; }}
.grid {{ stroke: #e0e0e0; }}
</style>
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="15" font-weight="bold">{title}</text>
"#,
        title = escape(&format!(
            "rayefa timeline: cluster {cluster_name}, {} node(s), {} in all",
            nodes.len(),
            seconds(scale.span_ms)
        )),
    );
    legend(&mut svg);
    axis(&mut svg, &scale, height);
    let mut y = TOP;
    for node in nodes {
        node_row(&mut svg, node, &scale, y, now_ms);
        y += node_height(node) + NODE_GAP;
    }
    svg.push_str("</svg>\n");
    svg
}

/// Milliseconds to x positions, from the earliest start to the latest end seen.
struct Scale {
    origin_ms: u64,
    span_ms: u64,
}

impl Scale {
    fn of(nodes: &[NodeTimeline], now_ms: u64) -> Self {
        let steps = || {
            nodes
                .iter()
                .filter_map(|n| n.status.as_ref().ok())
                .flat_map(|d| &d.steps)
        };
        let starts = steps().flat_map(|s| {
            s.started_at_ms
                .into_iter()
                .chain(s.spans.iter().map(|span| span.started_at_ms))
        });
        let Some(origin_ms) = starts.min() else {
            return Self {
                origin_ms: now_ms,
                span_ms: SHORTEST_SPAN_MS,
            };
        };
        let ends = steps().filter_map(|s| bar_end(s, now_ms));
        let end_ms = ends.max().unwrap_or(origin_ms);
        Self {
            origin_ms,
            span_ms: end_ms.saturating_sub(origin_ms).max(SHORTEST_SPAN_MS),
        }
    }

    fn x(&self, at_ms: u64) -> f64 {
        let offset = at_ms.saturating_sub(self.origin_ms) as f64;
        LABEL_WIDTH + offset * CHART_WIDTH / self.span_ms as f64
    }
}

/// Where a step's bar ends: its finish, or now while it runs.
fn bar_end(step: &StepStatus, now_ms: u64) -> Option<u64> {
    step.started_at_ms?;
    match step.state {
        StepState::Running => Some(now_ms),
        _ => step.finished_at_ms,
    }
}

fn node_height(node: &NodeTimeline) -> f64 {
    NODE_HEADER + LANE * node.status.as_ref().map_or(1, |d| d.steps.len().max(1)) as f64
}

/// Fill colour and label of a step's state.
fn state_style(state: &StepState) -> (&'static str, &'static str) {
    match state {
        StepState::Succeeded => ("#43a047", "succeeded"),
        StepState::AlreadyDone => ("#9e9e9e", "already done"),
        StepState::Running => ("#1e88e5", "running"),
        StepState::Failed { .. } => ("#d32f2f", "failed"),
        StepState::Skipped { .. } => ("none", "skipped"),
        StepState::Blocked { .. } => ("none", "blocked"),
        StepState::Pending => ("none", "pending"),
    }
}

fn legend(svg: &mut String) {
    let items: [(&str, &str); 7] = [
        ("fill=\"#43a047\"", "succeeded"),
        ("fill=\"#9e9e9e\"", "already done"),
        ("fill=\"#1e88e5\"", "running"),
        ("fill=\"#d32f2f\"", "failed"),
        ("class=\"earlier legend\"", "an earlier run's attempt"),
        ("class=\"lock legend\"", "waiting for the package lock"),
        ("class=\"backoff legend\"", "pause before a retry"),
    ];
    let mut x = 10.0;
    for (paint, label) in items {
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="32" width="12" height="10" {paint}/><text x="{}" y="41">{label}</text>"#,
            x + 16.0
        );
        x += 24.0 + 6.2 * label.len() as f64;
    }
}

fn axis(svg: &mut String, scale: &Scale, height: f64) {
    let tick_ms = tick_interval(scale.span_ms);
    let mut at = 0;
    while at <= scale.span_ms {
        let x = scale.x(scale.origin_ms + at);
        let _ = writeln!(
            svg,
            r#"<line class="grid" x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}"/><text x="{x:.1}" y="{label_y}" text-anchor="middle">{label}</text>"#,
            top = TOP - 8.0,
            bottom = height - 10.0,
            label_y = TOP - 12.0,
            label = seconds(at),
        );
        at += tick_ms;
    }
}

/// A round tick interval giving at most ten ticks over `span_ms`.
fn tick_interval(span_ms: u64) -> u64 {
    const ROUND_SECONDS: [u64; 14] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
    ];
    ROUND_SECONDS
        .iter()
        .map(|s| s * 1000)
        .find(|&ms| span_ms / ms <= 10)
        .unwrap_or_else(|| span_ms.div_ceil(10))
}

fn node_row(svg: &mut String, node: &NodeTimeline, scale: &Scale, top: f64, now_ms: u64) {
    let state = match &node.status {
        Ok(doc) => node_state_words(&doc.state),
        Err(why) => format!("no status: {why}"),
    };
    let _ = writeln!(
        svg,
        r##"<g class="node" data-node="{id}"><rect x="4" y="{top}" width="{w}" height="{h}" fill="#f5f5f5"/><text x="10" y="{ty}" font-weight="bold">{header}</text>"##,
        id = escape(&node.id),
        w = LABEL_WIDTH + CHART_WIDTH + NOTE_WIDTH - 8.0,
        h = node_height(node),
        ty = top + 16.0,
        header = escape(&format!(
            "{} · {} {} · {state}",
            node.id, node.role, node.node_type
        )),
    );
    if let Ok(doc) = &node.status {
        for (lane, step) in doc.steps.iter().enumerate() {
            let y = top + NODE_HEADER + LANE * lane as f64;
            step_lane(svg, &node.id, step, scale, y, now_ms);
        }
    }
    svg.push_str("</g>\n");
}

fn node_state_words(state: &NodeState) -> String {
    match state {
        NodeState::Starting => "starting".to_owned(),
        NodeState::Bootstrapping => "bootstrapping".to_owned(),
        NodeState::Ready => "ready".to_owned(),
        NodeState::Failed { step, .. } => format!("failed at {step}"),
        NodeState::Rebooting { step } => format!("rebooting for {step}"),
    }
}

fn step_lane(svg: &mut String, node: &str, step: &StepStatus, scale: &Scale, y: f64, now_ms: u64) {
    let _ = writeln!(
        svg,
        r#"<text class="lane-label" x="22" y="{}">{}</text>"#,
        y + BAR - 1.0,
        escape(&step.name)
    );
    let (fill, label) = state_style(&step.state);
    let bar_top = y + (LANE - BAR) / 2.0;
    let run_start = step.started_at_ms;
    // Attempts before the latest run (an agent restart or a reboot) lie before its start.
    for span in &step.spans {
        if span.kind != SpanKind::Attempt || run_start.is_none_or(|s| span.started_at_ms >= s) {
            continue;
        }
        let Some(end) = span.finished_at_ms else {
            continue;
        };
        span_rect(
            svg,
            "earlier",
            span.kind,
            span.started_at_ms,
            end,
            scale,
            bar_top,
        );
    }
    let note = match (run_start, bar_end(step, now_ms)) {
        (Some(start), Some(end)) => {
            let x = scale.x(start);
            let width = (scale.x(end) - x).max(1.0);
            let _ = writeln!(
                svg,
                r#"<rect class="step" data-node="{node}" data-step="{name}" data-state="{state}" data-start-ms="{start}" data-end-ms="{end}" x="{x:.1}" y="{bar_top:.1}" width="{width:.1}" height="{BAR}" fill="{fill}"><title>{title}</title></rect>"#,
                node = escape(node),
                name = escape(&step.name),
                state = step.state.label(),
                title = escape(&tooltip(step, label, end - start)),
            );
            for span in &step.spans {
                if span.kind == SpanKind::Attempt || span.started_at_ms < start {
                    continue;
                }
                let span_end = span.finished_at_ms.unwrap_or(end);
                let class = match span.kind {
                    SpanKind::PackageLockWait => "lock",
                    _ => "backoff",
                };
                span_rect(
                    svg,
                    class,
                    span.kind,
                    span.started_at_ms,
                    span_end,
                    scale,
                    bar_top,
                );
            }
            let attempts = match step.attempts {
                0 | 1 => String::new(),
                n => format!(", {n} attempts"),
            };
            format!("{}{attempts}", seconds(end - start))
        }
        _ => match &step.state {
            StepState::Skipped { reason } => format!("skipped: {reason}"),
            StepState::Blocked { by } => format!("blocked by {by}"),
            other => other.label().to_owned(),
        },
    };
    let _ = writeln!(
        svg,
        r#"<text class="note" x="{}" y="{}">{}</text>"#,
        LABEL_WIDTH + CHART_WIDTH + 6.0,
        y + BAR - 1.0,
        escape(&shorten(&note, 40))
    );
}

fn span_rect(
    svg: &mut String,
    class: &str,
    kind: SpanKind,
    start: u64,
    end: u64,
    scale: &Scale,
    bar_top: f64,
) {
    let x = scale.x(start);
    let width = (scale.x(end) - x).max(1.0);
    let _ = writeln!(
        svg,
        r#"<rect class="{class}" data-kind="{kind}" data-start-ms="{start}" data-end-ms="{end}" x="{x:.1}" y="{bar_top:.1}" width="{width:.1}" height="{BAR}"><title>{title}</title></rect>"#,
        kind = kind.as_str(),
        title = escape(&format!(
            "{}: {}",
            kind.as_str(),
            seconds(end.saturating_sub(start))
        )),
    );
}

fn tooltip(step: &StepStatus, label: &str, elapsed_ms: u64) -> String {
    let mut text = format!("{}: {label} in {}", step.name, seconds(elapsed_ms));
    if step.attempts > 1 {
        let _ = write!(text, " after {} attempts", step.attempts);
    }
    let waited: u64 = step
        .spans
        .iter()
        .filter(|s| s.kind == SpanKind::PackageLockWait)
        .filter_map(|s| Some(s.finished_at_ms?.saturating_sub(s.started_at_ms)))
        .sum();
    if waited > 0 {
        let _ = write!(text, "; waited {} for the package lock", seconds(waited));
    }
    if let Some(error) = &step.error {
        let _ = write!(text, "\n{error}");
    }
    text
}

/// `12.3 s`, or `2 min 5 s` from a minute on.
fn seconds(ms: u64) -> String {
    if ms < 60_000 {
        let s = ms as f64 / 1000.0;
        if ms.is_multiple_of(1000) {
            format!("{s:.0} s")
        } else {
            format!("{s:.1} s")
        }
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max_chars - 1).collect();
    short.push('…');
    short
}

/// `text` safe inside an XML element or a double-quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no way to write most control characters, even escaped.
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
