//! The second local example with real Ray: `examples/local-ray-cluster.yaml` brought up by the
//! real `rayefa` with real agents, which install Ray from PyPI and start it; the head's Ray
//! then lists three nodes, and `down` leaves no Ray process behind.
//!
//! Needs PyPI and a Python with venv, so it runs with the suites (`--ignored`), not with the
//! unit tests. The agent binary must be built first, as for `local_cluster`.

#[allow(dead_code)]
mod support {
    pub mod local_cluster;
}

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;
use support::local_cluster::processes_of;

fn rayefa(file: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rayefa"))
        .args(args)
        .arg(file)
        .env_remove("RAYEFA_AGENT")
        .output()
        .expect("rayefa runs")
}

#[test]
#[ignore = "installs Ray from PyPI; run with the suites"]
fn the_local_ray_example_brings_up_a_three_node_ray_cluster() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/local-ray-cluster.yaml");
    let text = std::fs::read_to_string(&example).expect("the example");
    let scratch = tempfile::tempdir().expect("scratch");
    let cluster_dir = scratch
        .path()
        .canonicalize()
        .expect("canonical")
        .join("cluster");
    let setting = "cluster_dir: ../target/ray-local-real";
    assert!(text.contains(setting), "the example moved its cluster_dir");
    let file = scratch.path().join("local-ray-cluster.yaml");
    std::fs::write(
        &file,
        text.replace(setting, &format!("cluster_dir: {}", cluster_dir.display())),
    )
    .expect("cluster file");

    let started = Instant::now();
    let up = rayefa(&file, &["up", "--output", "json"]);
    let up_took = started.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap_or_else(|e| {
        panic!(
            "up printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr)
        )
    });
    let down_anyway = scopeguard(&file);
    assert_eq!(up.status.code(), Some(0), "{report:#}");
    let head = report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["role"] == "head")
        .expect("a head");
    let address = head["address"].as_str().expect("address");

    let ray = cluster_dir.join("nodes/head-0/root/opt/rayefa/venv/bin/ray");
    let active_nodes = || {
        let status = Command::new(&ray)
            .args(["status", "--address", &format!("{address}:6379")])
            .output()
            .expect("ray status runs");
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        assert!(
            status.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let active = text
            .split("Active:")
            .nth(1)
            .and_then(|rest| rest.split("Pending:").next())
            .expect("an Active section")
            .matches(" node_")
            .count();
        (active, text)
    };
    // `ray start` returns before the autoscaler's report, which `ray status` reads, has
    // caught up with the last node: give it the few seconds of one report period.
    let asked = Instant::now();
    let (mut active, mut text) = active_nodes();
    while active < 3 && asked.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_secs(1));
        (active, text) = active_nodes();
    }
    assert_eq!(active, 3, "{text}");
    assert!(text.contains("0.0/2.0 CPU"), "{text}");
    eprintln!("up to three Ray nodes: {:.1} s", up_took.as_secs_f64());

    drop(down_anyway);
    let left = processes_of(&cluster_dir);
    assert!(left.is_empty(), "still running after down: {left:#?}");
}

/// Takes the cluster down when dropped, whether the test passed or not.
fn scopeguard(file: &Path) -> impl Drop + '_ {
    struct Down<'a>(&'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let down = rayefa(self.0, &["down"]);
            assert!(
                down.status.success() || std::thread::panicking(),
                "down: {}",
                String::from_utf8_lossy(&down.stdout)
            );
        }
    }
    Down(file)
}
