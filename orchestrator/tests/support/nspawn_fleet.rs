//! A simulated VPC of real systemd nodes: a host bridge on `169.254.100.1/24`, and for every
//! instance moto launches in the subnet `169.254.100.0/24`, a container booted with systemd as
//! PID 1 from the fleet image, at the instance's private address, with the instance's user data
//! in cloud-init's NoCloud seed. The user data then does on the node what it does on EC2:
//! downloads the agent package from the host, installs it with apt, writes the configuration and
//! starts the unit.
//!
//! Per node, all named after the instance (`rayefa-fleet-<last 8 of the id>`), so that a later
//! run can find and remove what a killed run left behind:
//! - a network namespace with a veth pair whose host end is on the bridge and whose node end,
//!   `host0`, has the instance's address before the node boots (as EC2's network is there before
//!   cloud-init runs), and keeps it across reboots; the container gets no CAP_NET_ADMIN, so it
//!   cannot change it;
//! - a root file system that is an overlay of the image (plus a "site" layer the test adds, such
//!   as a signing key) under a writable layer of its own in [`STATE_ROOT`], so that the node's
//!   disk survives a reboot;
//! - cgroups `nspawn-<name>` in the `systemd` and `unified` hierarchies, which nspawn runs the
//!   container in (`--keep-unit --register=no`: there is no systemd on the host).
//!
//! A node that reboots (`systemctl reboot` inside: nspawn exits 133) is booted again from the
//! same disk. A node whose instance moto reports terminated is shut down (`SIGRTMIN+4` to its
//! systemd). Dropping the fleet shuts every node down and removes all of the above. One node's
//! life is in [`super::nspawn_node`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::InstanceStateName;

use super::aws_world::{describe_instances, sdk_config, user_data};
use super::nspawn_node::{Image, Node};

/// The host bridge.
pub const BRIDGE: &str = "br-fleet";
/// The host's address on the bridge, where its services listen.
pub const HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 100, 1);
/// The bridge's prefix length.
pub const PREFIX_LEN: u8 = 24;
/// Every node's name (machine, hostname, network namespace) starts with this.
pub const NAME_PREFIX: &str = "rayefa-fleet-";
/// The host ends of the nodes' veth pairs start with this (interface names have 15 bytes).
pub const VETH_PREFIX: &str = "rfv-";
/// Where the nodes' disks and seeds live.
pub const STATE_ROOT: &str = "/var/tmp/rayefa-fleet";

/// Runs `program args`, panicking with its output unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed ({}): {}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `program args` and ignores how it ends (cleanup of what may already be gone).
pub fn run_quietly(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Polls `probe` every 100 ms until it answers, panicking with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The host bridge; removed when dropped.
#[derive(Debug)]
pub struct Bridge;

impl Bridge {
    /// Creates `br-fleet` with the host's address, replacing one a failed run left.
    pub fn create() -> Bridge {
        run_quietly("ip", &["link", "del", BRIDGE]);
        run("ip", &["link", "add", BRIDGE, "type", "bridge"]);
        let bridge = Bridge;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{HOST_ADDRESS}/{PREFIX_LEN}"),
                "dev",
                BRIDGE,
            ],
        );
        run("ip", &["link", "set", BRIDGE, "up"]);
        bridge
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        run_quietly("ip", &["link", "del", BRIDGE]);
    }
}

/// Boots a node for every instance moto launches in the bridge's subnet, until dropped.
pub struct NspawnFleet {
    stop: Arc<AtomicBool>,
    nodes: Arc<Mutex<BTreeMap<String, Arc<Node>>>>,
    errors: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NspawnFleet {
    /// Watches moto at `moto_endpoint` and boots nodes from `image`.
    pub fn start(moto_endpoint: &str, image: Image) -> NspawnFleet {
        let stop = Arc::new(AtomicBool::new(false));
        let nodes: Arc<Mutex<BTreeMap<String, Arc<Node>>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let endpoint = moto_endpoint.to_owned();
        let thread = {
            let (stop, nodes, errors) =
                (Arc::clone(&stop), Arc::clone(&nodes), Arc::clone(&errors));
            std::thread::spawn(move || watch(&endpoint, &image, &stop, &nodes, &errors))
        };
        NspawnFleet {
            stop,
            nodes,
            errors,
            thread: Some(thread),
        }
    }

    /// The nodes booted so far, by instance id.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes
            .lock()
            .expect("nodes lock")
            .values()
            .cloned()
            .collect()
    }

    /// The node of the instance with this `ray-user-node-type` tag (the first, by id).
    pub fn of_type(&self, node_type: &str) -> Vec<Arc<Node>> {
        self.nodes()
            .into_iter()
            .filter(|n| n.node_type == node_type)
            .collect()
    }

    /// Every node's diagnostics, for a failure message.
    pub fn diagnostics(&self) -> String {
        let mut text: String = self
            .errors
            .lock()
            .expect("errors lock")
            .iter()
            .map(|e| format!("=== {e}\n"))
            .collect();
        text.extend(self.nodes().iter().map(|n| n.diagnostics()));
        text
    }
}

impl Drop for NspawnFleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let nodes: Vec<Arc<Node>> = std::mem::take(&mut *self.nodes.lock().expect("nodes lock"))
            .into_values()
            .collect();
        let stopping: Vec<_> = nodes
            .iter()
            .map(|node| {
                let node = Arc::clone(node);
                std::thread::spawn(move || node.tear_down())
            })
            .collect();
        for handle in stopping {
            let _ = handle.join();
        }
    }
}

fn watch(
    endpoint: &str,
    image: &Image,
    stop: &AtomicBool,
    nodes: &Mutex<BTreeMap<String, Arc<Node>>>,
    errors: &Mutex<Vec<String>>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("fleet runtime");
    let ec2 = aws_sdk_ec2::Client::new(&runtime.block_on(sdk_config(endpoint)));
    while !stop.load(Ordering::SeqCst) {
        let instances = runtime
            .block_on(describe_instances(&ec2, Vec::new()))
            .unwrap_or_default();
        for instance in &instances {
            let Some(id) = instance.instance_id() else {
                continue;
            };
            let live = matches!(
                instance.state().and_then(|s| s.name()),
                Some(InstanceStateName::Pending | InstanceStateName::Running)
            );
            let known = nodes.lock().expect("nodes lock").get(id).cloned();
            match (known, live) {
                (None, true) => {
                    let Some(address) = instance
                        .private_ip_address()
                        .and_then(|a| a.parse::<Ipv4Addr>().ok())
                        .filter(|a| a.octets()[..3] == HOST_ADDRESS.octets()[..3])
                    else {
                        continue;
                    };
                    let user_data = runtime.block_on(user_data(&ec2, id));
                    let node = Arc::new(Node::new(instance, id, address, user_data));
                    // A node that cannot be set up is recorded (and torn down with the fleet)
                    // rather than ending the watch, so that the test fails saying why.
                    let set_up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        node.prepare(image);
                        node.start(image);
                    }));
                    if let Err(panic) = set_up {
                        let why = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        errors.lock().expect("errors lock").push(format!(
                            "{}: setting up the container failed: {why}",
                            node.name
                        ));
                        node.mark_stopping();
                    }
                    nodes
                        .lock()
                        .expect("nodes lock")
                        .insert(id.to_owned(), node);
                }
                (Some(node), false) if node.mark_stopping() => {
                    std::thread::spawn(move || node.shut_down());
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the fleet may leave on the host: anything named after it. Empty when all is clean.
pub fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in links.lines() {
        let name = line
            .split(':')
            .nth(1)
            .map(|n| n.trim().split('@').next().unwrap_or_default())
            .unwrap_or_default();
        if name == BRIDGE || name.starts_with(VETH_PREFIX) {
            found.push(format!("network link {name}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(NAME_PREFIX) {
                found.push(format!("network namespace {name}"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for hierarchy in entries.flatten() {
            if let Ok(groups) = std::fs::read_dir(hierarchy.path()) {
                for group in groups.flatten() {
                    let name = group.file_name().to_string_lossy().into_owned();
                    if name.starts_with(&format!("nspawn-{NAME_PREFIX}")) {
                        found.push(format!("cgroup {}", group.path().display()));
                    }
                }
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        if line.contains(STATE_ROOT) || line.contains(NAME_PREFIX) {
            found.push(format!("mount {line}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains("systemd-nspawn") && text.contains(NAME_PREFIX) {
                found.push(format!(
                    "process {} {text}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    if Path::new(STATE_ROOT).exists()
        && std::fs::read_dir(STATE_ROOT).is_ok_and(|mut d| d.next().is_some())
    {
        found.push(format!("files in {STATE_ROOT}"));
    }
    found
}
