//! `rayefa check` end to end with the local provider: the real `rayefa` binary asks real
//! `rayefa-agent` processes on loopback addresses to ping each other through libfabric's tcp
//! provider (Debian's libfabric1, which tests/setup-machine installs).
//!
//! Build the agent first (`cargo build -p rayefa-agent`); `rayefa` finds it next to itself.
//! Every test has its own cluster directory and loopback range, so they run concurrently.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

#[allow(dead_code)]
mod support {
    pub mod local_cluster;
}

use support::local_cluster::LocalCluster;

/// A local cluster of a head and `workers` workers, taken down when the test ends.
fn local_cluster(name: &str, octet: u8, workers: u32, extra_rayefa: &str) -> LocalCluster {
    let text = format!(
        r#"cluster_name: {name}
provider: {{type: local}}
available_node_types:
    head:
        resources: {{"CPU": 0}}
        node_config: {{}}
    worker:
        resources: {{"CPU": 1}}
        node_config: {{}}
        min_workers: {workers}
head_node_type: head
rayefa:
    agent_port: 18700
    steps: {{install-ray: false, start-ray: false}}
    poll: {{interval: 100ms, request_timeout: 1s, unreachable_grace: 1s}}
    timeouts: {{ready: 60s, head_agent: 20s, stop_grace: 5s}}
    local:
        cluster_dir: state
        first_address: 127.0.{octet}.1
{extra_rayefa}"#
    );
    LocalCluster::write(&text)
}

fn up(cluster: &LocalCluster) {
    let output = cluster.rayefa(&["up", "-q"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "up: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Stops node `id`'s agent for good (SIGKILL), as a crash would.
fn kill(cluster: &LocalCluster, id: &str) {
    let pid = cluster.pid(id);
    nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill the agent");
    let gone = std::time::Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z "))
    {
        assert!(gone.elapsed().as_secs() < 10, "agent {pid} did not die");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Small sizes and few round trips keep each pair well under a second.
const QUICK: [&str; 7] = [
    "check",
    "--provider",
    "tcp",
    "--sizes",
    "64,65536",
    "--iterations",
    "50",
];

fn pairs(doc: &serde_json::Value) -> &Vec<serde_json::Value> {
    doc["pairs"].as_array().expect("pairs")
}

fn involves(pair: &serde_json::Value, node: &str) -> bool {
    pair["from"] == node || pair["to"] == node
}

fn assert_measured(pair: &serde_json::Value) {
    assert_eq!(pair["outcome"], "passed", "{pair:#}");
    let results = pair["results"].as_array().expect("results");
    let sizes: Vec<u64> = results
        .iter()
        .map(|r| r["size"].as_u64().expect("size"))
        .collect();
    assert_eq!(sizes, [64, 65536], "{pair:#}");
    for result in results {
        assert!(
            result["latency_us"].as_f64().expect("latency") > 0.0,
            "{pair:#}"
        );
        assert!(
            result["bandwidth_mb_s"].as_f64().expect("bandwidth") > 0.0,
            "{pair:#}"
        );
    }
}

#[test]
fn all_pairs_of_three_local_agents_pass_over_tcp() {
    let cluster = local_cluster("check_all", 121, 2, "");
    up(&cluster);
    // One secret for the cluster, private, in every node's configuration.
    let secret_file = cluster.dir.path().join("state/control-secret");
    let secret = std::fs::read_to_string(&secret_file).expect("the cluster's secret");
    let secret = secret.trim();
    assert_eq!(secret.len(), 64);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secret_file).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    for id in ["head-0", "worker-0", "worker-1"] {
        let config =
            std::fs::read_to_string(cluster.node_dir(id).join("agent.toml")).expect("config");
        assert!(
            config.contains(&format!("control_secret = \"{secret}\"")),
            "{id}: {config}"
        );
    }

    let mut args = QUICK.to_vec();
    args.extend(["--pairs", "all"]);
    let (code, doc) = cluster.json(&args);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["outcome"], "passed");
    assert_eq!(doc["provider"], "tcp");
    assert_eq!(doc["mode"], "all");
    let pairs = pairs(&doc);
    assert_eq!(pairs.len(), 3, "{doc:#}");
    let mut met: Vec<(String, String)> = pairs
        .iter()
        .map(|p| {
            let a = p["from"].as_str().expect("from");
            let b = p["to"].as_str().expect("to");
            (a.min(b).to_owned(), a.max(b).to_owned())
        })
        .collect();
    met.sort();
    met.dedup();
    assert_eq!(met.len(), 3, "every pair once: {met:?}");
    for pair in pairs {
        assert_measured(pair);
        assert!(pair.get("cause").is_none(), "{pair:#}");
    }

    // The table names the pairs and says how many passed.
    let output = cluster.rayefa(&QUICK);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("64 B µs") && text.contains("64 KiB MB/s"),
        "{text}"
    );
    assert!(text.contains("3 of 3 pairs passed"), "{text}");
}

#[test]
fn a_node_with_another_secret_fails_its_pairs_and_the_others_pass() {
    let cluster = local_cluster("check_secret", 122, 2, "");
    up(&cluster);
    // worker-1 comes back with another cluster's secret.
    let path = cluster.node_dir("worker-1").join("agent.toml");
    let config = std::fs::read_to_string(&path).expect("config");
    let secret = config
        .lines()
        .find_map(|l| l.strip_prefix("control_secret = "))
        .expect("a secret")
        .to_owned();
    std::fs::write(
        &path,
        config.replace(&secret, &format!("\"{}\"", "7".repeat(64))),
    )
    .expect("write");
    kill(&cluster, "worker-1");
    up(&cluster);

    let mut args = QUICK.to_vec();
    args.extend(["--pairs", "all"]);
    let (code, doc) = cluster.json(&args);
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(doc["outcome"], "failed");
    let pairs = pairs(&doc);
    assert_eq!(pairs.len(), 3, "{doc:#}");
    for pair in pairs {
        if involves(pair, "worker-1") {
            assert_eq!(pair["outcome"], "secret_refused", "{pair:#}");
            assert_eq!(pair["node"], "worker-1", "{pair:#}");
            let cause = pair["cause"].as_str().expect("a cause");
            assert!(
                cause.ends_with(
                    "worker-1 refused the control secret: the node's control secret differs \
                     from this cluster's: was it launched by another rayefa?"
                ),
                "{cause}"
            );
        } else {
            assert_measured(pair);
        }
    }
}

#[test]
fn a_node_whose_agent_died_fails_its_pairs_and_the_others_pass() {
    let cluster = local_cluster("check_dead", 123, 2, "");
    up(&cluster);
    kill(&cluster, "worker-0");

    let (code, doc) = cluster.json(&QUICK);
    assert_eq!(code, Some(1), "{doc:#}");
    let pairs = pairs(&doc);
    assert_eq!(
        pairs.len(),
        3,
        "a ring of three is all three pairs: {doc:#}"
    );
    for pair in pairs {
        if involves(pair, "worker-0") {
            assert_eq!(pair["outcome"], "agent_unreachable", "{pair:#}");
            let cause = pair["cause"].as_str().expect("a cause");
            assert!(
                cause.contains("worker-0's agent cannot be reached (the provider says it stopped"),
                "{cause}"
            );
        } else {
            assert_measured(pair);
        }
    }
    // The table says the same in words, and the exit code is 1.
    let output = cluster.rayefa(&QUICK);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("failed: ") && text.contains("1 of 3 pairs passed"),
        "{text}"
    );
}

#[test]
fn up_with_rayefa_check_runs_it_at_the_end() {
    let cluster = local_cluster("check_up", 124, 2, "    check: true\n");
    let (code, doc) = cluster.json(&["up"]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["outcome"], "ready", "{doc:#}");
    let check = &doc["check"];
    assert_eq!(check["outcome"], "passed", "{doc:#}");
    assert_eq!(check["provider"], "tcp", "tcp on the local provider");
    assert_eq!(check["mode"], "ring");
    assert_eq!(pairs(check).len(), 3, "{check:#}");

    // A node that refuses the secret fails `up` (exit 1), which says why.
    let path = cluster.node_dir("worker-1").join("agent.toml");
    let config = std::fs::read_to_string(&path).expect("config");
    let secret = config
        .lines()
        .find_map(|l| l.strip_prefix("control_secret = "))
        .expect("a secret")
        .to_owned();
    std::fs::write(
        &path,
        config.replace(&secret, &format!("\"{}\"", "7".repeat(64))),
    )
    .expect("write");
    kill(&cluster, "worker-1");
    let output = cluster.rayefa(&["up"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("3 nodes ready"), "{text}");
    assert!(
        text.contains("cluster check_up: the fabric check failed (rayefa.check)"),
        "{text}"
    );
    assert!(text.contains("refused the control secret"), "{text}");
}
