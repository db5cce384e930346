use rayefa_wire::{NodeFacts, NodeIdentity, StepSpan};

use super::*;

fn step(name: &str, state: StepState, start: Option<u64>, end: Option<u64>) -> StepStatus {
    StepStatus {
        state,
        started_at_ms: start,
        finished_at_ms: end,
        attempts: u32::from(start.is_some()),
        ..StepStatus::pending(name, Vec::new())
    }
}

fn span(kind: SpanKind, start: u64, end: Option<u64>) -> StepSpan {
    StepSpan {
        kind,
        started_at_ms: start,
        finished_at_ms: end,
    }
}

fn document(state: NodeState, steps: Vec<StepStatus>) -> StatusDocument {
    StatusDocument {
        api: rayefa_wire::API_VERSION,
        node: NodeIdentity {
            cluster_name: "pics".into(),
            role: Role::Worker,
            node_type: "worker".into(),
        },
        facts: NodeFacts::default(),
        state,
        steps,
        warnings: Vec::new(),
        generated_at_ms: 0,
    }
}

/// A head that is ready, a worker whose install-ray failed after a retry and a lock wait, a
/// worker still running, and a worker whose agent never answered.
fn cluster() -> Vec<NodeTimeline> {
    let mut install = step(
        "install-ray",
        StepState::Failed { retryable: true },
        Some(12_000),
        Some(30_000),
    );
    install.attempts = 2;
    install.error = Some("pip exited 1: <no matching distribution> & more".into());
    install.spans = vec![
        span(SpanKind::Attempt, 12_000, Some(15_000)),
        span(SpanKind::PackageLockWait, 12_500, Some(14_000)),
        span(SpanKind::RetryBackoff, 15_000, Some(17_000)),
        span(SpanKind::Attempt, 17_000, Some(30_000)),
    ];
    let head = document(
        NodeState::Ready,
        vec![
            step(
                "grow-root",
                StepState::Succeeded,
                Some(10_000),
                Some(11_000),
            ),
            step(
                "install-efa",
                StepState::Skipped {
                    reason: "no EFA interface".into(),
                },
                None,
                None,
            ),
            step(
                "start-ray",
                StepState::AlreadyDone,
                Some(11_000),
                Some(11_200),
            ),
        ],
    );
    let failed = document(
        NodeState::Failed {
            step: "install-ray".into(),
            reason: "pip exited 1".into(),
        },
        vec![
            step(
                "grow-root",
                StepState::Succeeded,
                Some(10_500),
                Some(12_000),
            ),
            install,
            step(
                "start-ray",
                StepState::Blocked {
                    by: "install-ray".into(),
                },
                None,
                None,
            ),
        ],
    );
    let running = document(
        NodeState::Bootstrapping,
        vec![step("install-ray", StepState::Running, Some(20_000), None)],
    );
    let node = |id: &str, role, status| NodeTimeline {
        id: id.into(),
        node_type: if role == Role::Head { "head" } else { "worker" }.into(),
        role,
        status,
    };
    vec![
        node("head-0", Role::Head, Ok(head)),
        node("worker-0", Role::Worker, Ok(failed)),
        node("worker-1", Role::Worker, Ok(running)),
        node(
            "worker-2",
            Role::Worker,
            Err("connection refused".to_owned()),
        ),
    ]
}

const NOW_MS: u64 = 40_000;

fn rects<'a>(doc: &'a roxmltree::Document<'a>, class: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some(class))
        .collect()
}

fn number(node: &roxmltree::Node, attribute: &str) -> f64 {
    node.attribute(attribute)
        .unwrap_or_else(|| panic!("{attribute} missing"))
        .parse()
        .expect("a number")
}

#[test]
fn the_picture_is_well_formed_and_names_every_node_and_step() {
    let nodes = cluster();
    let svg = render_svg("pics", &nodes, NOW_MS);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let text: String = doc
        .descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n");
    for node in &nodes {
        assert!(text.contains(&node.id), "{} missing", node.id);
        if let Ok(status) = &node.status {
            for step in &status.steps {
                assert!(text.contains(&step.name), "{} missing", step.name);
            }
        }
    }
    assert!(text.contains("no status: connection refused"));
    assert!(text.contains("skipped: no EFA interface"));
    assert!(text.contains("blocked by install-ray"));
    // The error's markup survives as text.
    assert!(text.contains("<no matching distribution> & more"));
}

#[test]
fn bars_match_the_documents_and_share_one_time_scale() {
    let nodes = cluster();
    let svg = render_svg("pics", &nodes, NOW_MS);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let bars = rects(&doc, "step");
    // Steps that ran: 2 on the head, 2 on the failed worker, 1 running.
    assert_eq!(bars.len(), 5);
    let x_of = |ms: f64| LABEL_WIDTH + (ms - 10_000.0) * CHART_WIDTH / 30_000.0;
    for bar in &bars {
        let node = bar.attribute("data-node").expect("node");
        let name = bar.attribute("data-step").expect("step");
        let status = nodes
            .iter()
            .find(|n| n.id == node)
            .and_then(|n| n.status.as_ref().ok())
            .expect("the bar's node");
        let step = status.step(name).expect("the bar's step");
        let start = number(bar, "data-start-ms");
        let end = number(bar, "data-end-ms");
        assert_eq!(Some(start as u64), step.started_at_ms);
        assert_eq!(end as u64, step.finished_at_ms.unwrap_or(NOW_MS), "{name}");
        assert!((number(bar, "x") - x_of(start)).abs() < 0.1, "{name}");
        let width = number(bar, "width");
        assert!(
            (width - (x_of(end) - x_of(start)).max(1.0)).abs() < 0.2,
            "{name}"
        );
        assert_eq!(bar.attribute("data-state"), Some(step.state.label()));
        let fill = bar.attribute("fill").expect("fill");
        assert_eq!(fill == "#d32f2f", step.state.label() == "failed", "{name}");
    }
}

#[test]
fn lock_waits_and_retry_pauses_are_drawn_inside_their_step() {
    let svg = render_svg("pics", &cluster(), NOW_MS);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let lock = rects(&doc, "lock");
    let backoff = rects(&doc, "backoff");
    assert_eq!(lock.len(), 1);
    assert_eq!(backoff.len(), 1);
    assert_eq!(number(&lock[0], "data-start-ms"), 12_500.0);
    assert_eq!(number(&backoff[0], "data-end-ms"), 17_000.0);
    let tooltips: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    assert!(
        tooltips.iter().any(|t| t.starts_with(
            "install-ray: failed in 18 s after 2 attempts; waited 1.5 s for the package lock"
        )),
        "{tooltips:#?}"
    );
}

#[test]
fn attempts_of_an_earlier_run_are_drawn_before_the_latest_one() {
    let mut resumed = step(
        "install-efa",
        StepState::Succeeded,
        Some(50_000),
        Some(60_000),
    );
    resumed.spans = vec![
        span(SpanKind::Attempt, 10_000, Some(20_000)),
        // The agent died during this one: it never closed.
        span(SpanKind::Attempt, 30_000, None),
        span(SpanKind::Attempt, 50_000, Some(60_000)),
    ];
    let nodes = vec![NodeTimeline {
        id: "head-0".into(),
        node_type: "head".into(),
        role: Role::Head,
        status: Ok(document(NodeState::Ready, vec![resumed])),
    }];
    let svg = render_svg("pics", &nodes, NOW_MS);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let earlier = rects(&doc, "earlier");
    assert_eq!(earlier.len(), 1, "only the closed earlier attempt: {svg}");
    assert_eq!(number(&earlier[0], "x"), LABEL_WIDTH);
}

#[test]
fn a_cluster_with_no_times_yet_still_draws() {
    let nodes = vec![NodeTimeline {
        id: "head-0".into(),
        node_type: "head".into(),
        role: Role::Head,
        status: Ok(document(
            NodeState::Starting,
            vec![step("grow-root", StepState::Pending, None, None)],
        )),
    }];
    let svg = render_svg("pics", &nodes, NOW_MS);
    roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert!(svg.contains(">pending<"));
}

#[test]
fn ticks_are_round_and_at_most_ten() {
    assert_eq!(tick_interval(1_000), 1_000);
    assert_eq!(tick_interval(9_000), 1_000);
    assert_eq!(tick_interval(30_000), 5_000);
    assert_eq!(tick_interval(44_500), 5_000);
    assert_eq!(tick_interval(3_600_000), 600_000);
    assert_eq!(seconds(1_500), "1.5 s");
    assert_eq!(seconds(125_000), "2 min 5 s");
}
