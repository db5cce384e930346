//! The node agent's acceptance, end to end: the real `rayefa-agent run` on a scratch root that
//! is a real XFS partition on a loop device. It grows the partition and the file system with
//! the real growpart and xfs_growfs, makes a real virtualenv with a package from PyPI, runs
//! the setup and start commands, answers `/readyz`, survives a SIGKILL in the middle of `pip
//! install`, and does not redo finished work when started again.
//!
//! The scratch root is the partition's mount point, so the journal, the logs and the
//! virtualenv live on the disk being grown. Inside it the test lays out what grow-root reads on
//! a node: `proc/self/mountinfo` saying the loop partition is mounted at `/`, and `sys` leading
//! to the machine's `/sys`, where the loop device really is. EFA cannot exist here (off), and the
//! instance metadata service is never asked.

mod support;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use libc::{SIGKILL, SIGSTOP, SIGTERM};
use serde_json::Value;

use rayefa_test_support::loopdev::{LoopDisk, MIB, df_bytes, xfs_data_bytes};
use rayefa_test_support::procs::wait_for_process;
use support::{Node, get, kill, procs, wait_exit};

/// The image as made, and as enlarged before the agent starts (an EBS volume grown by 200 MiB).
const IMAGE_BYTES: u64 = 400 * MIB;
const ENLARGED_BYTES: u64 = 600 * MIB;

/// pip reaches PyPI; a slow mirror must not fail the test.
const READY_WITHIN: Duration = Duration::from_secs(300);

/// A scratch node whose root is a mounted loop partition, and its agent. Dropping it stops the
/// agent and everything it started, unmounts, detaches the loop device and removes the image,
/// whatever the test did.
struct DiskNode {
    agent: Option<Child>,
    /// Dropped before `node`, whose folder holds the image and the mount point.
    disk: LoopDisk,
    node: Node,
}

impl DiskNode {
    /// A node whose root is a fresh XFS partition of [`IMAGE_BYTES`], with the node's view of
    /// it laid out, and the configuration `config` (with `{listen}` and `{marks}` filled in).
    fn new(config: &str) -> Self {
        let node = Node::new("");
        let root = node.path("root");
        std::fs::create_dir(&root).expect("mount point");
        let disk = LoopDisk::xfs(&node.path("disk.img"), IMAGE_BYTES, &root);
        node.write_config(
            &config
                .replace("{listen}", &node.address.to_string())
                .replace("{marks}", &node.path("marks").display().to_string()),
        );
        let this = Self {
            agent: None,
            disk,
            node,
        };
        this.lay_out_node_view();
        this
    }

    fn root(&self) -> PathBuf {
        self.node.path("root")
    }

    /// What grow-root reads on a node, in node terms: `/` is the loop partition (its real
    /// device number), sysfs is the machine's own, and `/proc/self/status` and the boot id are
    /// the reading process's and the machine's.
    fn lay_out_node_view(&self) {
        let root = self.root();
        std::fs::create_dir_all(root.join("proc/self")).expect("proc");
        let mountinfo = format!(
            "21 1 {number} / / rw,relatime shared:1 - xfs {partition} rw,attr2,inode64,noquota\n\
             22 21 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw\n\
             23 21 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw\n",
            number = self.disk.partition_number(),
            partition = self.disk.partition(),
        );
        std::fs::write(root.join("proc/self/mountinfo"), mountinfo).expect("mountinfo");
        for (link, target) in [
            ("proc/self/status", "/proc/self/status"),
            ("proc/sys", "/proc/sys"),
            ("sys", "/sys"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).expect("symlink");
        }
    }

    /// Starts `rayefa-agent run`, tagged, its stderr appended to `agent.log`.
    fn spawn(&mut self) {
        assert!(self.agent.is_none(), "an agent is already running");
        self.agent = Some(self.node.spawn_tagged());
    }

    /// SIGTERM, and the agent must exit 0.
    fn stop(&mut self) {
        let mut agent = self.agent.take().expect("an agent");
        kill(&mut agent, SIGTERM);
        let exit = wait_exit(&mut agent, Duration::from_secs(15)).expect("exits on SIGTERM");
        assert_eq!(exit.code(), Some(0), "{}", self.node.log());
    }

    /// SIGKILL, as a crash or the OOM killer would; then, as systemd does when it restarts a
    /// unit, the processes the agent left behind are killed too.
    fn crash(&mut self) {
        let mut agent = self.agent.take().expect("an agent");
        kill(&mut agent, SIGKILL);
        wait_exit(&mut agent, Duration::from_secs(10)).expect("killed");
        procs::kill_tagged(self.node.dir.path());
    }

    /// Waits for `/readyz` to answer 200; the status document then.
    fn wait_ready(&self) -> Value {
        let (code, body) = self.node.wait_ready(READY_WITHIN);
        assert_eq!(code, 200, "not ready: {body}\n{}", self.node.log());
        let readiness: Value = serde_json::from_str(&body).expect("readiness is JSON");
        assert_eq!(readiness["ready"], true, "{readiness}");
        let (code, body) = get(self.node.address, "/v1/status").expect("status");
        assert_eq!(code, 200);
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// The whole log of `step`.
    fn step_log(&self, step: &str) -> String {
        let path = self.root().join(format!("var/lib/rayefa/logs/{step}.log"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn attempt_headers(&self, step: &str) -> usize {
        self.step_log(step)
            .matches(&format!("=== {step}: attempt"))
            .count()
    }

    /// The journal's record of `step`, as the agent last wrote it.
    fn journalled(&self, step: &str) -> Value {
        let path = self.root().join("var/lib/rayefa/journal.json");
        let journal: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("journal"))
                .expect("journal is JSON");
        step_of(&journal, step)
    }
}

impl Drop for DiskNode {
    fn drop(&mut self) {
        procs::kill_agent_and_tagged(self.agent.take(), self.node.dir.path());
        // `disk` then unmounts and detaches, and `node` removes the folder.
    }
}

/// The pid of the agent's first `python -m pip install` under `root` once it exists: the
/// interpreter's pip installing uv into the agent's state (install-ray gets uv before it makes
/// the virtualenv), or the virtualenv's pip where uv cannot be had. Either is the slow part of
/// install-ray; a path under this test's own root tells it from any other pip on the host.
fn wait_for_pip(root: &Path, within: Duration, node: &Node) -> i32 {
    let root = root.display().to_string();
    wait_for_process(
        |argv| {
            argv.windows(3).any(|w| w == ["-m", "pip", "install"])
                && argv.iter().any(|arg| arg.starts_with(&root))
        },
        within,
        || format!("pip install never started; agent log:\n{}", node.log()),
    )
}

fn step_of(doc: &Value, name: &str) -> Value {
    doc["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {doc:#}"))
        .clone()
}

fn bytes(detail: &Value, key: &str, when: &str) -> u64 {
    detail[key][when]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}.{when} in {detail:#}"))
}

/// Sizes of the loop disk, the partition and the file system, measured by the test.
#[derive(Debug, Clone, Copy)]
struct Measured {
    disk: u64,
    partition: u64,
    xfs: u64,
    df: u64,
}

impl Measured {
    fn now(node: &DiskNode) -> Self {
        Self {
            disk: node.disk.disk_bytes(),
            partition: node.disk.partition_bytes(),
            xfs: xfs_data_bytes(&node.root()),
            df: df_bytes(&node.root()),
        }
    }
}

/// Checks grow-root's detail against what the test measured before and after.
fn assert_grown(detail: &Value, disk: &LoopDisk, before: Measured, after: Measured) {
    assert_eq!(detail["mount_point"], "/", "{detail:#}");
    assert_eq!(detail["fs_type"], "xfs");
    assert_eq!(detail["device"], disk.partition().as_str());
    assert_eq!(detail["disk"], disk.device());
    assert_eq!(detail["partition_number"], 1);
    assert_eq!(detail["partition"], "grown");
    assert_eq!(detail["file_system"], "grown");
    // The volume was enlarged before the agent looked: the disk is the same size throughout.
    assert_eq!(bytes(detail, "disk_bytes", "before"), ENLARGED_BYTES);
    assert_eq!(bytes(detail, "disk_bytes", "after"), ENLARGED_BYTES);
    assert_eq!(after.disk, ENLARGED_BYTES);
    assert_eq!(bytes(detail, "partition_bytes", "before"), before.partition);
    assert_eq!(bytes(detail, "partition_bytes", "after"), after.partition);
    assert_eq!(bytes(detail, "filesystem_bytes", "before"), before.xfs);
    assert_eq!(bytes(detail, "filesystem_bytes", "after"), after.xfs);

    assert!(before.partition < IMAGE_BYTES, "{before:?}");
    // The partition reaches the end of the disk (the label's first MiB aside).
    assert!(after.partition >= ENLARGED_BYTES - 2 * MIB, "{after:?}");
    // The file system fills the partition, give or take the tail xfs_growfs cannot use.
    assert!(before.xfs < IMAGE_BYTES, "{before:?}");
    assert!(
        after.xfs <= after.partition && after.partition - after.xfs < 16 * MIB,
        "{after:?}"
    );
    assert!(
        after.df > before.df + 190 * MIB,
        "df saw no growth: {before:?} → {after:?}"
    );
}

/// `rayefa-agent status` answers 0 (ready) with a row per step, and a duration on the row of
/// every step that ran.
fn assert_status_table(node: &Node, doc: &Value) {
    let status = node.output(&["status"]);
    let table = String::from_utf8_lossy(&status.stdout).into_owned();
    assert_eq!(status.status.code(), Some(0), "{table}");
    assert!(table.contains("ready"), "{table}");
    for step in doc["steps"].as_array().expect("steps") {
        let name = step["name"].as_str().expect("name");
        let row = table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        let state = step["state"].as_str().expect("state");
        assert!(row.contains(state), "{name} is not {state}: {row}");
        if state == "succeeded" {
            let has_duration = row.split_whitespace().any(|cell| {
                cell.strip_suffix('s')
                    .is_some_and(|secs| secs.parse::<f64>().is_ok())
            });
            assert!(has_duration, "{name} has no duration: {row}\n{table}");
        }
    }
}

/// Grow-root, a virtualenv with six, setup and start commands; EFA off, IMDS never asked.
const FULL_BOOTSTRAP: &str = r#"
[node]
cluster_name = "e2e"
role = "head"
node_type = "head_node"

[agent]
listen = "{listen}"
imds = false
stop_grace_secs = 2

[efa]
mode = "off"

[packages]
manager = "apt"
os = ["python3-venv"]
python = ["six"]
python_interpreter = "/usr/bin/python3"

[environment]
MARKS = "{marks}"

[commands]
setup = ["python -c 'import six, sys; print(sys.prefix, six.__version__)' >> $MARKS/setup"]
start = ["echo started >> $MARKS/start"]
"#;

#[test]
#[ignore = "needs root, loop devices and PyPI; run by tests/run"]
fn bootstraps_a_node_on_a_real_disk_and_resumes_after_a_sigkill() {
    let started = Instant::now();
    let mut node = DiskNode::new(FULL_BOOTSTRAP);
    let before = Measured::now(&node);
    node.disk.enlarge(ENLARGED_BYTES);
    // First boot: grow-root runs, then install-ray; the agent is killed in the middle of pip.
    node.spawn();
    let pip = wait_for_pip(&node.root(), READY_WITHIN, &node.node);
    // Frozen, so that the step cannot finish between here and the kill.
    // SAFETY: kill(2) on the pip process of this test's own agent, found by a
    // path inside this test's scratch root.
    let stopped = unsafe { libc::kill(pip, SIGSTOP) };
    assert_eq!(stopped, 0, "pip {pip} finished before it could be stopped");
    node.crash();

    assert_eq!(node.journalled("grow-root")["state"], "succeeded");
    assert_eq!(node.journalled("install-ray")["state"], "running");
    assert_eq!(node.node.marks("setup"), 0);
    let grown = Measured::now(&node);

    // Restarted: grow-root is not run again, install-ray is re-checked and finished.
    node.spawn();
    let doc = node.wait_ready();
    assert_eq!(doc["state"], "ready", "{doc:#}");
    assert!(doc["facts"]["ec2"].is_null(), "IMDS was asked: {doc:#}");
    // The restarted agent sees its root's disk at the grown size.
    assert_eq!(doc["facts"]["root_disk_bytes"], grown.df, "{doc:#}");

    let grow = step_of(&doc, "grow-root");
    assert_eq!(grow["state"], "succeeded", "{grow:#}");
    assert_eq!(grow["attempts"], 1);
    assert_grown(&grow["detail"], &node.disk, before, grown);
    assert_eq!(
        node.attempt_headers("grow-root"),
        1,
        "{}",
        node.step_log("grow-root")
    );
    assert_eq!(Measured::now(&node).xfs, grown.xfs, "grown twice");

    for efa in ["install-efa", "probe-efa"] {
        assert_eq!(step_of(&doc, efa)["state"], "skipped", "{doc:#}");
    }

    let ray = step_of(&doc, "install-ray");
    assert_eq!(ray["state"], "succeeded", "{ray:#}");
    assert_eq!(ray["attempts"], 2, "{ray:#}");
    assert_eq!(node.attempt_headers("install-ray"), 2);
    let detail = &ray["detail"];
    assert_eq!(detail["os_packages"]["manager"], "apt", "{detail:#}");
    assert_eq!(
        detail["os_packages"]["installed_now"],
        serde_json::json!([])
    );
    assert_eq!(detail["virtualenv"], "/opt/rayefa/venv");
    let six = detail["python_packages"]["six"]
        .as_str()
        .unwrap_or_else(|| panic!("six is not installed: {detail:#}"))
        .to_owned();

    // The setup command ran once, with the virtualenv first on PATH.
    assert_eq!(node.node.marks("setup"), 1);
    let setup = std::fs::read_to_string(node.node.path("marks/setup")).expect("setup mark");
    assert_eq!(
        setup.trim(),
        format!("{} {six}", node.root().join("opt/rayefa/venv").display())
    );
    assert_eq!(node.node.marks("start"), 1);
    for step in ["setup-commands", "start-ray"] {
        let status = step_of(&doc, step);
        assert_eq!(status["state"], "succeeded", "{status:#}");
        assert_eq!(status["attempts"], 1, "{status:#}");
    }
    for step in doc["steps"].as_array().expect("steps") {
        if step["state"] == "succeeded" {
            let (from, to) = (&step["started_at_ms"], &step["finished_at_ms"]);
            assert!(
                from.as_u64().is_some() && from.as_u64() <= to.as_u64(),
                "{step:#}"
            );
        }
    }
    assert_status_table(&node.node, &doc);

    node.stop();
    eprintln!(
        "bootstrap e2e: {:.1}s; partition {} → {} bytes, xfs {} → {} bytes, df {} → {} bytes",
        started.elapsed().as_secs_f64(),
        before.partition,
        grown.partition,
        before.xfs,
        grown.xfs,
        before.df,
        grown.df
    );
}

/// Grow-root and the cluster commands only: no PyPI.
const GROW_AND_COMMANDS: &str = r#"
[node]
cluster_name = "e2e"
role = "worker"
node_type = "worker_node"
head_address = "127.0.0.1"

[agent]
listen = "{listen}"
imds = false
stop_grace_secs = 2

[efa]
mode = "off"

[steps.install-ray]
enabled = false

[environment]
MARKS = "{marks}"

[commands]
setup = ["echo setup >> $MARKS/setup"]
start = ["echo \"$RAY_HEAD_IP\" >> $MARKS/start"]
"#;

#[test]
#[ignore = "needs root and loop devices; run by tests/run"]
fn a_second_run_on_a_ready_root_redoes_and_rechecks_nothing() {
    let mut node = DiskNode::new(GROW_AND_COMMANDS);
    let before = Measured::now(&node);
    node.disk.enlarge(ENLARGED_BYTES);

    node.spawn();
    let first = node.wait_ready();
    let grown = Measured::now(&node);
    assert_grown(
        &step_of(&first, "grow-root")["detail"],
        &node.disk,
        before,
        grown,
    );
    node.stop();
    let logs: Vec<(&str, String)> = ["grow-root", "setup-commands", "start-ray"]
        .into_iter()
        .map(|step| (step, node.step_log(step)))
        .collect();

    node.spawn();
    let second = node.wait_ready();
    assert_eq!(second["state"], "ready");
    for (step, log) in &logs {
        assert_eq!(
            &node.step_log(step),
            log,
            "{step} was checked or run again by the second agent"
        );
        let (was, is) = (step_of(&first, step), step_of(&second, step));
        assert_eq!(is["state"], "succeeded", "{is:#}");
        assert_eq!(is["attempts"], 1, "{is:#}");
        assert_eq!(is["finished_at_ms"], was["finished_at_ms"], "{step}");
    }
    assert_eq!(
        step_of(&second, "grow-root")["detail"],
        step_of(&first, "grow-root")["detail"]
    );
    assert_eq!(
        step_of(&second, "install-ray")["state"],
        "skipped",
        "{second:#}"
    );
    assert_eq!(node.node.marks("setup"), 1);
    assert_eq!(node.node.marks("start"), 1);
    assert_eq!(
        std::fs::read_to_string(node.node.path("marks/start"))
            .expect("start mark")
            .trim(),
        "127.0.0.1"
    );
    assert_eq!(Measured::now(&node).xfs, grown.xfs);
    assert_status_table(&node.node, &second);
    node.stop();
}
