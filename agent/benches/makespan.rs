//! Makespan of the bootstrap: the real engine over the real step graph (names, edges, the
//! package-manager lock), each step replaced by phases of known durations. Prints the time to
//! ready beside the graph's critical path and the sequential sum; asserts nothing.
//!
//!     cargo bench -p rayefa-agent --bench makespan [-- --unit-ms 10 --runs 5]
//!
//! Durations are in units (the figures: grow 1, EFA download 20 + install 40 under the
//! lock, OS packages 5 under the lock, pip 40, start 2). Where each real step takes the lock:
//! install-efa downloads, verifies and unpacks without it and holds it only around
//! `efa_installer.sh` (steps/install_efa/installer.rs); install-ray holds it only around the
//! OS packages and runs pip without it (steps/install_ray/mod.rs); probe-efa, setup-commands
//! and start-ray never take it.

use std::collections::BTreeMap;
use std::time::Duration;

use rayefa_agent::harness::bench_makespan::{Makespan, Phase, bootstrap_edges, run_bootstrap};

/// One step's phases as (label, units, under the lock).
type Plan = Vec<(&'static str, Vec<(&'static str, f64, bool)>)>;

/// The durations; `efa_fetch` is what install-efa does before it asks for the lock
/// (download, SHA-256, signature, unpack).
fn nominal(efa_fetch: (&'static str, f64)) -> Plan {
    vec![
        ("grow-root", vec![("grow", 1.0, false)]),
        (
            "install-efa",
            vec![(efa_fetch.0, efa_fetch.1, false), ("install", 40.0, true)],
        ),
        ("probe-efa", vec![("probe", 0.0, false)]),
        (
            "install-ray",
            vec![("os-packages", 5.0, true), ("pip", 40.0, false)],
        ),
        ("setup-commands", vec![("commands", 0.0, false)]),
        ("start-ray", vec![("start", 2.0, false)]),
    ]
}

fn units_of(plan: &Plan) -> BTreeMap<String, f64> {
    plan.iter()
        .map(|(name, phases)| ((*name).to_owned(), phases.iter().map(|p| p.1).sum()))
        .collect()
}

/// The longest path through the graph, each step weighing the sum of its phases.
fn critical_path(
    edges: &[(String, Vec<String>)],
    weight: &BTreeMap<String, f64>,
) -> (f64, Vec<String>) {
    let mut finish: BTreeMap<&str, (f64, Vec<String>)> = BTreeMap::new();
    // `edges` is in graph order: every step after its dependencies.
    for (name, deps) in edges {
        let (start, mut path) = deps
            .iter()
            .filter_map(|d| finish.get(d.as_str()))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .cloned()
            .unwrap_or((0.0, Vec::new()));
        path.push(name.clone());
        finish.insert(
            name,
            (start + weight.get(name).copied().unwrap_or(0.0), path),
        );
    }
    finish
        .into_values()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((0.0, Vec::new()))
}

fn run(plan: &Plan, unit: Duration) -> Makespan {
    let phases: BTreeMap<String, Vec<Phase>> = plan
        .iter()
        .map(|(name, phases)| {
            let phases = phases
                .iter()
                .map(|(label, units, under_lock)| Phase {
                    label: (*label).to_owned(),
                    duration: unit.mul_f64(*units),
                    under_lock: *under_lock,
                })
                .collect();
            ((*name).to_owned(), phases)
        })
        .collect();
    run_bootstrap(&phases).expect("the engine runs")
}

fn scenario(title: &str, plan: &Plan, unit: Duration, runs: usize) {
    let edges = bootstrap_edges().expect("bootstrap graph");
    let weights = units_of(plan);
    let (critical, path) = critical_path(&edges, &weights);
    let sequential: f64 = weights.values().sum();
    let unit_ms = unit.as_secs_f64() * 1000.0;
    let mut results: Vec<Makespan> = (0..runs).map(|_| run(plan, unit)).collect();
    assert!(results.iter().all(|r| r.ready), "every run ends ready");
    results.sort_by_key(|r| r.time_to_ready);
    let median = &results[results.len() / 2];
    let ready_units = median.time_to_ready.as_secs_f64() * 1000.0 / unit_ms;
    println!("== {title}");
    println!(
        "critical path       {critical:6.1} units {:8.1} ms  ({})",
        critical * unit_ms,
        path.join(" -> ")
    );
    println!(
        "time to ready       {ready_units:6.1} units {:8.1} ms  (median of {runs}; min {:.1} ms, max {:.1} ms)",
        median.time_to_ready.as_secs_f64() * 1000.0,
        results[0].time_to_ready.as_secs_f64() * 1000.0,
        results[results.len() - 1].time_to_ready.as_secs_f64() * 1000.0,
    );
    println!(
        "ready / critical    {:6.3}  (target <= 1.05)",
        ready_units / critical
    );
    println!(
        "sequential sum      {sequential:6.1} units {:8.1} ms  (setup_commands one after another, as `ray up` runs them)",
        sequential * unit_ms
    );
    println!("schedule of the median run (units from the engine's start):");
    for span in &median.spans {
        let u = |d: Duration| d.as_secs_f64() * 1000.0 / unit_ms;
        let waited = u(span.start) - u(span.asked);
        println!(
            "  {:15} {:12} {:6.1} .. {:6.1}{}",
            span.step,
            span.phase,
            u(span.start),
            u(span.end),
            if waited >= 0.5 {
                format!("  (waited {waited:.1} for the package lock)")
            } else {
                String::new()
            }
        );
    }
    println!();
}

fn main() {
    let mut unit_ms = 10.0;
    let mut runs = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--unit-ms" => unit_ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(unit_ms),
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            // cargo bench passes --bench; other harness flags mean nothing here.
            _ => {}
        }
    }
    let unit = Duration::from_secs_f64(unit_ms / 1000.0);
    println!(
        "makespan: real engine, real graph and package lock, test steps; 1 unit = {unit_ms} ms\n"
    );
    scenario(
        "the issue's durations (EFA download 20 units)",
        &nominal(("download", 20.0)),
        unit,
        runs,
    );
    // The tarball kept from an earlier attempt: only the SHA-256, signature and unpacking
    // (1 unit) come before the lock, so both lock users ask for it at about the same time and
    // the lock, not the graph, sets the pace: 45 units of locked work after grow-root.
    scenario(
        "EFA tarball already on disk (kept from an earlier attempt): verify + unpack 1 unit",
        &nominal(("verify", 1.0)),
        unit,
        runs,
    );
}
