//! Orchestrator-side faults not covered elsewhere: an agent that accepts connections and never
//! answers. The local provider starts a stand-in agent (through `RAYEFA_AGENT`) that listens
//! on the address its configuration names, takes every connection and says nothing; `up`
//! must give up at the head-agent deadline, launch no worker, exit 4 and say why (the node
//! `no-answer`, its error `no answer within <request timeout>`).
//!
//! (EC2 throttling and InsufficientInstanceCapacity are in `aws_launch.rs`; an agent that
//! answered and then went silent is in `local_cluster.rs`.)
//!
//! Run: `cargo test -p rayefa-orchestrator --test faults`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rayefa_test_support::files::write_executable;

/// Listens where the agent would and never answers: reads the `listen` line of the
/// configuration it is given (`run --config FILE --root DIR`).
const SILENT_AGENT: &str = r#"#!/usr/bin/python3
import re, socket, sys, time
config = open(sys.argv[sys.argv.index("--config") + 1]).read()
host, port = re.search(r'listen\s*=\s*"([^"]+):(\d+)"', config).groups()
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, int(port)))
server.listen(64)
held = []
while True:
    connection, _ = server.accept()
    held.append(connection)
"#;

#[test]
fn a_head_agent_that_never_answers_times_out_without_launching_workers() {
    let dir = tempfile::tempdir().expect("scratch");
    let agent = dir.path().join("silent-agent");
    write_executable(&agent, SILENT_AGENT);
    let file = dir.path().join("cluster.yaml");
    std::fs::write(
        &file,
        r#"cluster_name: e2e_never_answers
provider: {type: local}
available_node_types:
    head:
        resources: {"CPU": 0}
        node_config: {}
    worker:
        resources: {"CPU": 1}
        node_config: {}
        min_workers: 1
head_node_type: head
rayefa:
    agent_port: 18700
    steps: {install-ray: false, start-ray: false}
    poll: {interval: 100ms, request_timeout: 500ms, unreachable_grace: 1s}
    timeouts: {ready: 30s, head_agent: 3s, stop_grace: 2s}
    local:
        cluster_dir: state
        first_address: 127.0.77.1
"#,
    )
    .expect("cluster file");
    let rayefa = |args: &[&str], agent: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rayefa"));
        command.args(args).arg(&file);
        match agent {
            Some(agent) => command.env("RAYEFA_AGENT", agent),
            None => command.env_remove("RAYEFA_AGENT"),
        };
        command.output().expect("rayefa runs")
    };

    let started = Instant::now();
    let up = rayefa(&["up", "--output", "json"], Some(&agent));
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&up.stderr);
    let stdout = String::from_utf8_lossy(&up.stdout);
    let down = rayefa(&["down", "-q"], None);
    assert_eq!(
        down.status.code(),
        Some(0),
        "down: {}\n{}\nup: {stdout}\n{stderr}",
        String::from_utf8_lossy(&down.stdout),
        String::from_utf8_lossy(&down.stderr)
    );

    assert_eq!(up.status.code(), Some(4), "{stdout}\n{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(doc["outcome"], "timed-out", "{doc:#}\n{stderr}");
    assert_eq!(
        doc["launched"],
        serde_json::json!(["head-0"]),
        "a worker was launched"
    );
    let nodes = doc["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{doc:#}");
    assert_eq!(nodes[0]["state"], "no-answer", "{doc:#}");
    assert_eq!(nodes[0]["via"], "-", "{doc:#}");
    assert_eq!(nodes[0]["error"], "no answer within 500ms", "{doc:#}");
    assert!(
        took < Duration::from_secs(15),
        "gave up after {took:?}, the head-agent deadline is 3 s"
    );
    eprintln!(
        "never-answering head agent: `rayefa up` exit 4 after {:.1} s",
        took.as_secs_f64()
    );
}
