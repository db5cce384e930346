//! Ray's autoscaler on a local cluster, with real Ray from PyPI: `examples/local-autoscale.yaml`
//! brought up by the real `rayefa` (a head only), then `request_resources` from the head's
//! virtualenv makes Ray's autoscaler launch two workers through rayefa's node provider
//! (`rayefa nodes launch`, agents as processes); they bootstrap, join Ray and are marked as
//! autoscaled. With the demand withdrawn they are terminated once idle. A scaled-out node
//! whose agent fails is reported to Ray as `update-failed`, which the monitor's log shows.
//!
//! Prints the time from the request to the nodes joined in Ray and from the withdrawal to the
//! nodes terminated (docs/performance.md). Needs PyPI; the agent binary must be built first.

#[allow(dead_code)]
mod support {
    pub mod local_cluster;
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::local_cluster::processes_of;

fn rayefa(args: &[&str], file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rayefa"))
        .args(args)
        .arg(file)
        .env_remove("RAYEFA_AGENT")
        .output()
        .expect("rayefa runs")
}

fn json_of(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The workers `rayefa nodes list` shows.
fn workers(file: &Path) -> Vec<serde_json::Value> {
    let listed = rayefa(&["nodes", "list"], file);
    assert!(listed.status.success(), "{listed:?}");
    json_of(&listed)["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["role"] == "worker")
        .cloned()
        .collect()
}

/// Waits up to `limit` for `done`, checking every half second; the last value either way.
fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let value = probe();
        if done(&value) || Instant::now() >= deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The head's Ray, driven from its own virtualenv.
struct HeadRay {
    bin: PathBuf,
    address: String,
}

impl HeadRay {
    /// `request_resources(num_cpus=N)` from a driver on the head's node.
    fn request_cpus(&self, cpus: u32) {
        let script = format!(
            "import ray\nfrom ray.autoscaler.sdk import request_resources\n\
             ray.init(address='{a}:6379', _node_ip_address='{a}', logging_level='ERROR')\n\
             request_resources(num_cpus={cpus})\nray.shutdown()\n",
            a = self.address
        );
        let run = Command::new(self.bin.join("python"))
            .args(["-c", &script])
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .output()
            .expect("python runs");
        assert!(
            run.status.success(),
            "request_resources({cpus}): {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }

    /// How many nodes `ray status` lists as active, and its text.
    fn active_nodes(&self) -> (usize, String) {
        let status = Command::new(self.bin.join("ray"))
            .args(["status", "--address", &format!("{}:6379", self.address)])
            .output()
            .expect("ray status runs");
        let text = String::from_utf8_lossy(&status.stdout).into_owned();
        let active = text
            .split("Active:")
            .nth(1)
            .and_then(|rest| rest.split("Pending:").next())
            .map_or(0, |section| {
                // `ray status` lists active nodes by id (`1 node_...`) or, for nodes it
                // launched, by type (`2 worker`): the leading numbers add up either way.
                section
                    .lines()
                    .filter_map(|l| l.split_whitespace().next()?.parse::<usize>().ok())
                    .sum()
            });
        (active, text)
    }
}

/// The lines of Ray's monitor logs on this machine that mention `needle`.
fn monitor_lines(needle: &str) -> Vec<String> {
    let Ok(sessions) = std::fs::read_dir("/tmp/ray") else {
        return Vec::new();
    };
    sessions
        .filter_map(Result::ok)
        .filter(|s| s.file_name().to_string_lossy().starts_with("session_2"))
        .flat_map(|s| {
            ["monitor.log", "monitor.err", "monitor.out"]
                .map(|name| s.path().join("logs").join(name))
        })
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.contains(needle))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
#[ignore = "installs Ray from PyPI and runs Ray's autoscaler; run with the suites"]
fn rays_autoscaler_scales_a_local_cluster_out_and_in_through_rayefa() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/local-autoscale.yaml");
    let text = std::fs::read_to_string(&example).expect("the example");
    let scratch = tempfile::tempdir().expect("scratch");
    let root = scratch.path().canonicalize().expect("canonical");
    let cluster_dir = root.join("cluster");
    let marker = root.join("fail-new-workers");
    let setting = "cluster_dir: ../target/ray-local-autoscale";
    let environment = "        RAY_USAGE_STATS_ENABLED: \"0\"\n";
    assert!(text.contains(setting) && text.contains(environment));
    // Workers launched after the marker exists fail their setup commands: the head, and the
    // workers of the first scale-out, are not touched by it.
    let text = text
        .replace(setting, &format!("cluster_dir: {}", cluster_dir.display()))
        .replace(
            environment,
            // A raylet gives its dashboard agent 10 s to start by default, which a loaded
            // 2-core machine (parallel builds) can miss: the raylet then aborts.
            &format!(
                "{environment}        FAIL_MARKER: \"{}\"\n        \
                 RAY_agent_register_timeout_ms: \"120000\"\n",
                marker.display()
            ),
        )
        + "\nworker_setup_commands:\n    - '! test -e \"$FAIL_MARKER\"'\n";
    let file = root.join("local-autoscale.yaml");
    std::fs::write(&file, text).expect("cluster file");

    let up = rayefa(&["up", "--output", "json"], &file);
    let _down = DownOnDrop(&file, &cluster_dir);
    let report = json_of(&up);
    assert_eq!(up.status.code(), Some(0), "{report:#}");
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "min_workers 0: the head only: {report:#}");
    let head = HeadRay {
        bin: cluster_dir.join("nodes/head-0/root/opt/rayefa/venv/bin"),
        address: nodes[0]["address"].as_str().expect("address").to_owned(),
    };

    // Scale out.
    let asked = Instant::now();
    head.request_cpus(2);
    let (active, status) = wait_for(
        Duration::from_secs(150),
        || head.active_nodes(),
        |(active, _)| *active >= 3,
    );
    let joined_after = asked.elapsed();
    assert_eq!(active, 3, "{status}");
    let scaled = workers(&file);
    assert_eq!(scaled.len(), 2, "{scaled:#?}");
    for worker in &scaled {
        assert_eq!(worker["autoscaled"], true, "{worker:#}");
        assert_eq!(worker["agent_state"], "ready", "{worker:#}");
        assert_eq!(worker["tags"]["ray-node-type"], "worker", "{worker:#}");
        assert_eq!(worker["tags"]["ray-user-node-type"], "worker", "{worker:#}");
    }
    let status = rayefa(&["status"], &file);
    let status_text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status_text.contains("launched by Ray's autoscaler: worker-0, worker-1"),
        "{status_text}"
    );

    // Scale in.
    let withdrawn = Instant::now();
    head.request_cpus(0);
    let left = wait_for(Duration::from_secs(150), || workers(&file), Vec::is_empty);
    let terminated_after = withdrawn.elapsed();
    assert!(left.is_empty(), "still there: {left:#?}");
    for id in ["worker-0", "worker-1"] {
        let running = processes_of(&cluster_dir.join("nodes").join(id));
        assert!(running.is_empty(), "{id} still runs: {running:#?}");
    }

    // A scaled-out node whose agent fails.
    std::fs::write(&marker, "").expect("marker");
    head.request_cpus(1);
    let failed = wait_for(
        Duration::from_secs(120),
        || workers(&file),
        |w| w.iter().any(|n| n["agent_state"] == "failed"),
    );
    let failed = failed
        .iter()
        .find(|n| n["agent_state"] == "failed")
        .unwrap_or_else(|| panic!("no worker failed: {failed:#?}"));
    let id = failed["id"].as_str().expect("id");
    let needle = format!("rayefa: node {id} (");
    let logged = wait_for(
        Duration::from_secs(30),
        || monitor_lines(&needle),
        |lines| {
            lines
                .iter()
                .any(|l| l.contains(&file.display().to_string()))
        },
    );
    assert!(
        logged.iter().any(|l| l.contains("update-failed")),
        "Ray's monitor log does not show {id} failed: {logged:#?}"
    );
    head.request_cpus(0);

    eprintln!(
        "request_resources(num_cpus=2) to 2 nodes joined in Ray: {:.1} s",
        joined_after.as_secs_f64()
    );
    eprintln!(
        "request_resources(num_cpus=0) to both terminated (idle_timeout_minutes 0.5): {:.1} s",
        terminated_after.as_secs_f64()
    );
}

/// Takes the cluster down when dropped, whether the test passed or not, and checks that no
/// process of any node (the autoscaled ones included) is left.
struct DownOnDrop<'a>(&'a Path, &'a Path);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let down = rayefa(&["down"], self.0);
        if std::thread::panicking() {
            return;
        }
        assert!(
            down.status.success(),
            "down: {}",
            String::from_utf8_lossy(&down.stdout)
        );
        let left = processes_of(self.1);
        assert!(left.is_empty(), "still running after down: {left:#?}");
    }
}
