//! Orchestrator-side faults not covered elsewhere: an agent that accepts connections and never
//! answers. The local provider starts a stand-in agent (through `RAYEFA_AGENT`) that says which
//! configuration it was given and stays alive; the test then listens on the address that
//! configuration names with the fault server (`rayefa_test_support::fault_http`), which takes
//! every connection and says nothing. `up` must give up at the head-agent deadline, launch no
//! worker, exit 4 and say why (the node `no-answer`, its error `no answer within <request
//! timeout>`).
//!
//! (EC2 throttling and InsufficientInstanceCapacity are in `aws_launch.rs`; an agent that
//! answered and then went silent is in `local_cluster.rs`.)
//!
//! Run: `cargo test -p rayefa-orchestrator --test faults`

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rayefa_test_support::fault_http::{Reply, Server};
use rayefa_test_support::files::write_executable;

/// The stand-in agent (`run --config FILE --root DIR`): appends the whole path of its
/// configuration to `announce` as a line and stays alive until `rayefa down` stops it.
fn silent_agent(announce: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         while [ \"$#\" -gt 0 ] && [ \"$1\" != --config ]; do shift; done\n\
         readlink -f \"$2\" >> {announce}\n\
         while :; do sleep 1; done\n",
        announce = announce.display()
    )
}

/// Waits for the head's stand-in agent to say which configuration it was given (each one
/// appends a line; the workers are launched right after the head), then listens where that
/// configuration's `agent.listen` says, never answering; `None` when `up` ends first.
fn listen_silently_where_announced(announce: &Path, up: &mut Child) -> Option<Server> {
    let started = Instant::now();
    let config = loop {
        let head = std::fs::read_to_string(announce)
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|path| {
                let text = std::fs::read_to_string(path.trim()).expect("agent configuration");
                toml::from_str::<toml::Value>(&text).expect("agent configuration is TOML")
            })
            .find(|config| config["node"]["role"].as_str() == Some("head"));
        if let Some(config) = head {
            break config;
        }
        if up.try_wait().expect("rayefa up").is_some()
            || started.elapsed() > Duration::from_secs(20)
        {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let listen: SocketAddr = config["agent"]["listen"]
        .as_str()
        .and_then(|listen| listen.parse().ok())
        .expect("agent.listen is an address");
    let server = Server::start_at(listen);
    server.otherwise(Reply::Hang);
    Some(server)
}

#[test]
fn a_head_agent_that_never_answers_times_out_and_its_workers_are_terminated() {
    let dir = tempfile::tempdir().expect("scratch");
    let agent = dir.path().join("silent-agent");
    let announce = dir.path().join("announced");
    write_executable(&agent, silent_agent(&announce));
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
        command
    };

    let started = Instant::now();
    let mut up = rayefa(&["up", "--output", "json"], Some(&agent))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rayefa runs");
    let silent = listen_silently_where_announced(&announce, &mut up);
    let up = up.wait_with_output().expect("rayefa up ends");
    let took = started.elapsed();
    drop(silent);
    let stderr = String::from_utf8_lossy(&up.stderr);
    let stdout = String::from_utf8_lossy(&up.stdout);
    // The worker launched with the head could join nothing: `up` terminated it and kept the
    // head, whose state `status` shows.
    let status = rayefa(&["status", "--output", "json"], None)
        .output()
        .expect("rayefa runs");
    let listed: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| {
        panic!(
            "status JSON ({e}): {}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        )
    });
    let ids: Vec<&str> = listed["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["head-0"], "{listed:#}\nup: {stdout}\n{stderr}");
    let down = rayefa(&["down", "-q"], None).output().expect("rayefa runs");
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
    // The worker is launched with the head, not after its agent answers; `launched` names
    // it (and the text output says it was terminated).
    assert_eq!(
        doc["launched"],
        serde_json::json!(["head-0", "worker-0"]),
        "{doc:#}"
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
