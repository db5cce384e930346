//! The local provider end to end: the real `rayefa` binary starts real `rayefa-agent`
//! processes on loopback addresses and polls them over HTTP.
//!
//! The agent binary must be built first (`cargo build -p rayefa-agent`, which CI's script
//! does); `rayefa` finds it next to itself in `target/<profile>/`. Every test has its own
//! cluster directory and its own range of loopback addresses, so the tests run concurrently.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

#[allow(dead_code)]
mod support {
    pub mod local_cluster;
}

use support::local_cluster::LocalCluster;

/// A cluster whose nodes start at `127.0.<octet>.1` with the given commands.
fn local_cluster(name: &str, octet: u8, workers: u32, extra: &str) -> LocalCluster {
    let text = format!(
        r#"cluster_name: {name}
provider: {{type: local}}
setup_commands:
    - echo "set up $(basename "$PWD")" > setup.log
available_node_types:
    head:
        resources: {{"CPU": 0}}
        node_config: {{}}
    worker:
        resources: {{"CPU": 1}}
        node_config: {{}}
        min_workers: {workers}
head_node_type: head
{extra}
rayefa:
    agent_port: 18700
    steps: {{install-ray: false, start-ray: false}}
    poll: {{interval: 100ms, request_timeout: 1s, unreachable_grace: 1s}}
    timeouts: {{ready: 60s, head_agent: 20s, stop_grace: 5s}}
    local:
        cluster_dir: state
        first_address: 127.0.{octet}.1
"#
    );
    LocalCluster::write(&text)
}

/// Sends `signal` to one of this test's agents.
fn signal(pid: i32, signal: Signal) {
    nix::sys::signal::kill(Pid::from_raw(pid), signal).expect("signal the agent");
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie has exited; only its parent has not collected it yet.
    !stat.is_empty() && !stat.contains(") Z ")
}

/// Waits (up to 20 s) until `rayefa up` has launched the first worker.
fn wait_for_worker_launch(cluster: &LocalCluster) {
    let started = Instant::now();
    while !cluster.node_dir("worker-0").join("node.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the worker was never launched"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ids(doc: &serde_json::Value, key: &str) -> Vec<String> {
    doc[key]
        .as_array()
        .expect("array")
        .iter()
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other["id"].as_str().expect("id").to_owned(),
        })
        .collect()
}

#[test]
fn up_status_up_again_and_down() {
    let cluster = local_cluster("e2e_up", 61, 2, "");
    let (code, up) = cluster.json(&["up"]);
    assert_eq!(code, Some(0), "{up:#}");
    assert_eq!(up["outcome"], "ready");
    assert_eq!(ids(&up, "launched"), ["head-0", "worker-0", "worker-1"]);
    for node in up["nodes"].as_array().expect("nodes") {
        assert_eq!(node["state"], "ready", "{node:#}");
    }
    let worker = &up["nodes"][1];
    assert_eq!(worker["address"], "127.0.61.2");
    // The setup command ran on the node, in its directory.
    let log =
        std::fs::read_to_string(cluster.node_dir("worker-0").join("setup.log")).expect("setup.log");
    assert_eq!(log.trim(), "set up worker-0");

    let (code, status) = cluster.json(&["status"]);
    assert_eq!(code, Some(0), "{status:#}");
    assert_eq!(status["outcome"], "ready");
    assert_eq!(ids(&status, "nodes"), ["head-0", "worker-0", "worker-1"]);

    let pids: Vec<i32> = ["head-0", "worker-0", "worker-1"]
        .map(|id| cluster.pid(id))
        .to_vec();
    let again = cluster.rayefa(&["up"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("already up: 3 nodes running, nothing launched"),
        "{stderr}"
    );
    assert_eq!(
        ["head-0", "worker-0", "worker-1"]
            .map(|id| cluster.pid(id))
            .to_vec(),
        pids,
        "the same agents"
    );

    let down = cluster.rayefa(&["down"]);
    let stdout = String::from_utf8_lossy(&down.stdout);
    assert_eq!(down.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("node worker-1: stopped after SIGTERM"),
        "{stdout}"
    );
    assert!(stdout.contains("3 nodes stopped and removed"), "{stdout}");
    for pid in pids {
        assert!(!alive(pid), "agent {pid} still runs");
    }
    assert!(!cluster.node_dir("head-0").exists());
    let (code, status) = cluster.json(&["status"]);
    assert_eq!(
        (code, status["outcome"].as_str()),
        (Some(0), Some("absent"))
    );
}

#[test]
fn a_failing_setup_command_fails_up_with_the_node_and_step() {
    let cluster = local_cluster(
        "e2e_fail",
        62,
        1,
        "worker_setup_commands:\n    - echo 'disk is full' >&2; exit 3\n",
    );
    let output = cluster.rayefa(&["up"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("node worker-0 (worker) failed at step setup-commands"),
        "{stdout}"
    );
    assert!(
        stdout.contains("disk is full"),
        "the output tail is shown: {stdout}"
    );

    let (code, status) = cluster.json(&["status"]);
    assert_eq!(code, Some(1), "{status:#}");
    let worker = &status["nodes"][1];
    assert_eq!(
        (worker["state"].as_str(), worker["step"].as_str()),
        (Some("failed"), Some("setup-commands"))
    );
    assert_eq!(
        status["nodes"][0]["state"], "ready",
        "the head has no failing command"
    );
}

#[test]
fn an_orchestrator_killed_while_waiting_finds_the_same_nodes_again() {
    // The head's setup takes a while, so `up` is still waiting when it is killed.
    let cluster = local_cluster(
        "e2e_restart",
        63,
        1,
        "head_setup_commands:\n    - sleep 2\n",
    );
    let mut first = Command::new(env!("CARGO_BIN_EXE_rayefa"))
        .arg("up")
        .arg(&cluster.file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rayefa up");
    wait_for_worker_launch(&cluster);
    first.kill().expect("kill rayefa");
    first.wait().expect("reap rayefa");
    let pids = [cluster.pid("head-0"), cluster.pid("worker-0")];
    assert!(
        pids.iter().all(|pid| alive(*pid)),
        "agents outlive the orchestrator"
    );

    let (code, up) = cluster.json(&["up"]);
    assert_eq!(code, Some(0), "{up:#}");
    assert_eq!(ids(&up, "launched"), Vec::<String>::new(), "nothing new");
    assert_eq!(ids(&up, "nodes"), ["head-0", "worker-0"]);
    assert_eq!([cluster.pid("head-0"), cluster.pid("worker-0")], pids);
}

#[test]
fn a_stopped_agent_is_reported_and_started_again_by_up() {
    let cluster = local_cluster("e2e_stopped", 64, 1, "");
    let (code, _) = cluster.json(&["up"]);
    assert_eq!(code, Some(0));
    let pid = cluster.pid("worker-0");
    // The way a crash would end it.
    signal(pid, Signal::SIGKILL);
    let gone = Instant::now();
    while alive(pid) {
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "agent {pid} did not die"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (code, status) = cluster.json(&["status"]);
    assert_eq!(code, Some(1), "{status:#}");
    assert_eq!(status["nodes"][1]["state"], "stopped");
    assert!(
        status["nodes"][1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("agent process {pid}")),
        "{status:#}"
    );

    let (code, up) = cluster.json(&["up"]);
    assert_eq!(code, Some(0), "{up:#}");
    assert_eq!(ids(&up, "launched"), ["worker-0"]);
    assert_ne!(cluster.pid("worker-0"), pid);
}

#[test]
fn status_json_says_which_nodes_ray_s_autoscaler_launched() {
    let cluster = local_cluster("e2e_autoscaled", 69, 1, "");
    let (code, up) = cluster.json(&["up"]);
    assert_eq!(code, Some(0), "{up:#}");
    // `up` launched every node itself: its summary has no autoscaled field.
    assert!(
        up["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|n| n.get("autoscaled").is_none()),
        "{up:#}"
    );
    // The way Ray's autoscaler asks for a node.
    let launch = cluster.rayefa(&["nodes", "launch", "--node-type", "worker"]);
    assert_eq!(
        launch.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&launch.stderr)
    );

    let (code, status) = cluster.json(&["status"]);
    assert_eq!(code, Some(0), "{status:#}");
    let autoscaled: Vec<(String, serde_json::Value)> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["id"].as_str().expect("id").to_owned(),
                n["autoscaled"].clone(),
            )
        })
        .collect();
    assert_eq!(
        autoscaled,
        [
            ("head-0".to_owned(), serde_json::Value::Bool(false)),
            ("worker-0".to_owned(), serde_json::Value::Bool(false)),
            ("worker-1".to_owned(), serde_json::Value::Bool(true)),
        ],
        "{status:#}"
    );
    let text = cluster.rayefa(&["status"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("launched by Ray's autoscaler: worker-1\n"),
        "{stdout}"
    );
    let down = cluster.rayefa(&["down"]);
    assert_eq!(
        down.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&down.stdout)
    );
}

#[test]
fn a_missing_agent_binary_is_a_provider_error() {
    let cluster = local_cluster("e2e_noagent", 65, 0, "");
    let output = Command::new(env!("CARGO_BIN_EXE_rayefa"))
        .arg("up")
        .arg(&cluster.file)
        .env("RAYEFA_AGENT", cluster.dir.path().join("no-such-agent"))
        .output()
        .expect("rayefa runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("RAYEFA_AGENT:") && stderr.contains("is not an executable file"),
        "{stderr}"
    );
}

#[test]
fn an_agent_that_stops_answering_is_reported_unreachable() {
    let cluster = local_cluster(
        "e2e_silent",
        66,
        1,
        "worker_setup_commands:\n    - sleep 5\n",
    );
    let up = Command::new(env!("CARGO_BIN_EXE_rayefa"))
        .args(["up", "--output", "json"])
        .arg(&cluster.file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rayefa up");
    wait_for_worker_launch(&cluster);
    // Let the orchestrator hear from the worker once, then freeze its agent: the process
    // exists, but nothing answers.
    std::thread::sleep(Duration::from_millis(800));
    let pid = cluster.pid("worker-0");
    signal(pid, Signal::SIGSTOP);
    let output = up.wait_with_output().expect("rayefa up ends");
    signal(pid, Signal::SIGCONT);

    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(output.status.code(), Some(1), "{doc:#}");
    let worker = &doc["nodes"][1];
    assert_eq!(worker["state"], "unreachable", "{doc:#}");
    assert!(
        worker["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("no answer for"),
        "{doc:#}"
    );
}

/// `GET /v1/status` from one agent, over plain HTTP/1.1.
fn agent_status(address: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((address, 18700)).expect("the agent answers");
    write!(
        stream,
        "GET /v1/status HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).expect("a status document")
}

#[test]
fn timeline_draws_every_node_and_step_as_the_agents_report_them() {
    let cluster = local_cluster(
        "e2e_timeline",
        67,
        2,
        "head_start_ray_commands: [\"sleep 0.3\"]\nworker_start_ray_commands: [\"sleep 0.2\"]",
    );
    let (code, up) = cluster.json(&["up"]);
    assert_eq!(code, Some(0), "{up:#}");
    let out = cluster.dir.path().join("bootstrap.svg");
    let drawn = cluster.rayefa(&["timeline", "--out", out.to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&drawn.stdout);
    assert_eq!(drawn.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("wrote {} (3 node(s), 3 answered)", out.display())),
        "{stdout}"
    );
    let svg = std::fs::read_to_string(&out).expect("the picture");
    let picture = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let bars: Vec<_> = picture
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("class") == Some("step"))
        .collect();
    for node in up["nodes"].as_array().expect("nodes") {
        let id = node["id"].as_str().expect("id");
        let status = agent_status(node["address"].as_str().expect("address"));
        let steps = status["steps"].as_array().expect("steps");
        assert!(!steps.is_empty());
        for step in steps {
            let name = step["name"].as_str().expect("name");
            assert!(
                svg.contains(&format!(">{name}</text>")),
                "{id}/{name} has no lane"
            );
            let bar = bars.iter().find(|b| {
                b.attribute("data-node") == Some(id) && b.attribute("data-step") == Some(name)
            });
            match (step["started_at_ms"].as_u64(), bar) {
                (Some(start), Some(bar)) => {
                    assert_eq!(bar.attribute("data-start-ms"), Some(&*start.to_string()));
                    let end = step["finished_at_ms"].as_u64().expect("finished");
                    assert_eq!(bar.attribute("data-end-ms"), Some(&*end.to_string()));
                    assert_eq!(bar.attribute("data-state"), step["state"].as_str());
                }
                (None, None) => {
                    assert_eq!(step["state"], "skipped", "{id}/{name}");
                }
                (start, bar) => panic!("{id}/{name}: started {start:?}, bar {bar:?}"),
            }
        }
    }
}

#[test]
fn timeline_of_a_cluster_with_no_nodes_is_bad_input() {
    let cluster = local_cluster("e2e_timeline_none", 68, 0, "");
    let drawn = cluster.rayefa(&["timeline"]);
    let stderr = String::from_utf8_lossy(&drawn.stderr);
    assert_eq!(drawn.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has no nodes to draw"), "{stderr}");
}
