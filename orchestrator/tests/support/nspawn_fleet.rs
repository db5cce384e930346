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
//! systemd). Dropping the fleet shuts every node down and removes all of the above.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Instance, InstanceStateName};
use base64::Engine;

use super::aws_world::sdk_config;

/// The host bridge.
pub const BRIDGE: &str = "br-fleet";
/// The host's address on the bridge, where its services listen.
pub const HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 100, 1);
/// The bridge's prefix length.
const PREFIX_LEN: u8 = 24;
/// Every node's name (machine, hostname, network namespace) starts with this.
pub const NAME_PREFIX: &str = "rayefa-fleet-";
/// The host ends of the nodes' veth pairs start with this (interface names have 15 bytes).
pub const VETH_PREFIX: &str = "rfv-";
/// Where the nodes' disks and seeds live.
pub const STATE_ROOT: &str = "/var/tmp/rayefa-fleet";
/// nspawn's exit status when the container asked for a reboot.
const REBOOT_EXIT: i32 = 133;
/// How long a node gets to shut down before its container is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// How long nspawn gets to start the container's systemd.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

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
fn run_quietly(program: &str, args: &[&str]) {
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

/// What the nodes boot from.
#[derive(Debug, Clone)]
pub struct Image {
    /// The fleet rootfs (`tests/fleet/rootfs`), never written.
    pub rootfs: PathBuf,
    /// Files laid over the rootfs on every node, as a site's image adds its own.
    pub site: PathBuf,
    /// Host folders bound into every node: (host path, node path).
    pub binds: Vec<(PathBuf, String)>,
}

/// How a node's container is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Booting or running.
    On,
    /// Shut down (its instance was terminated, or the fleet is going away).
    Off,
}

/// One instance's container.
#[derive(Debug)]
pub struct Node {
    /// The instance id.
    pub instance_id: String,
    /// Machine name, hostname and network namespace.
    pub name: String,
    /// The instance's private address.
    pub address: Ipv4Addr,
    /// The `ray-user-node-type` tag.
    pub node_type: String,
    /// The user data it booted with.
    pub user_data: String,
    dir: PathBuf,
    veth: String,
    leader: Mutex<Option<u32>>,
    nspawn: Mutex<Option<u32>>,
    boots: AtomicU32,
    stopping: AtomicBool,
    power: Mutex<Power>,
    exits: Mutex<Vec<i32>>,
    supervisor: Mutex<Option<std::thread::JoinHandle<()>>>,
    torn_down: AtomicBool,
}

impl Node {
    /// The container's systemd, as a host pid, while it runs.
    pub fn leader(&self) -> Option<u32> {
        *self.leader.lock().expect("leader lock")
    }

    /// How many times the container has booted.
    pub fn boots(&self) -> u32 {
        self.boots.load(Ordering::SeqCst)
    }

    /// Whether it is on.
    pub fn power(&self) -> Power {
        *self.power.lock().expect("power lock")
    }

    /// nspawn's exit statuses so far, one per boot that ended.
    pub fn exits(&self) -> Vec<i32> {
        self.exits.lock().expect("exits lock").clone()
    }

    /// Runs `args` inside the node (all its namespaces), without checking how it ends.
    pub fn exec(&self, args: &[&str]) -> Output {
        let leader = self
            .leader()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        Command::new("nsenter")
            .args(["-t", &leader.to_string(), "-a", "--"])
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null())
            .output()
            .expect("running nsenter")
    }

    /// Runs `args` inside the node and answers its standard output, panicking unless it
    /// succeeds.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{}: `{}` failed ({}): {}{}",
            self.name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Standard output and error of `args` inside the node, whatever the exit status.
    pub fn exec_text(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// A file of the node's disk, read from the host (works while the node is off too).
    pub fn read_file(&self, path: &str) -> Option<String> {
        let merged = self.dir.join("root").join(path.trim_start_matches('/'));
        let upper = self.dir.join("upper").join(path.trim_start_matches('/'));
        std::fs::read_to_string(merged)
            .or_else(|_| std::fs::read_to_string(upper))
            .ok()
    }

    /// What a person debugging this node would look at first.
    pub fn diagnostics(&self) -> String {
        let mut text = format!(
            "=== node {} ({}, {}, {}): boots {}, nspawn exits {:?}\n",
            self.name,
            self.instance_id,
            self.node_type,
            self.address,
            self.boots(),
            self.exits()
        );
        if self.leader().is_some() {
            for args in [
                &["systemctl", "status", "--no-pager", "rayefa-agent"][..],
                &["journalctl", "--no-pager", "-u", "rayefa-agent"],
                &["rayefa-agent", "status"],
                &["systemctl", "--no-pager", "--failed"],
            ] {
                text.push_str(&format!(
                    "--- {}\n{}\n",
                    args.join(" "),
                    self.exec_text(args)
                ));
            }
        } else {
            text.push_str("--- the container is not running\n");
        }
        text.push_str(&format!(
            "--- /var/log/cloud-init-output.log\n{}\n",
            self.read_file("/var/log/cloud-init-output.log")
                .unwrap_or_else(|| "(absent)".to_owned())
        ));
        text
    }

    /// Asks the node to reboot, as `systemctl reboot` inside does.
    pub fn reboot(&self) {
        let out = self.exec(&["systemctl", "reboot"]);
        assert!(
            out.status.success(),
            "{}: systemctl reboot: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn prepare(&self, image: &Image) {
        for sub in ["upper", "work", "root", "seed"] {
            std::fs::create_dir_all(self.dir.join(sub)).expect("node directories");
        }
        std::fs::write(
            self.dir.join("seed/meta-data"),
            format!(
                "instance-id: {}\nlocal-hostname: {}\n",
                self.instance_id, self.name
            ),
        )
        .expect("seed meta-data");
        std::fs::write(self.dir.join("seed/user-data"), &self.user_data).expect("seed user-data");
        let options = format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            image.site.display(),
            image.rootfs.display(),
            self.dir.join("upper").display(),
            self.dir.join("work").display()
        );
        let root = self.dir.join("root");
        run(
            "mount",
            &[
                "-t",
                "overlay",
                &self.name,
                "-o",
                &options,
                root.to_str().expect("UTF-8 path"),
            ],
        );
        run("ip", &["netns", "add", &self.name]);
        run(
            "ip",
            &[
                "link", "add", &self.veth, "type", "veth", "peer", "name", "host0", "netns",
                &self.name,
            ],
        );
        run("ip", &["link", "set", &self.veth, "master", BRIDGE, "up"]);
        let address = format!("{}/{PREFIX_LEN}", self.address);
        for args in [
            &["addr", "add", address.as_str(), "dev", "host0"][..],
            &["link", "set", "host0", "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["-n", self.name.as_str()];
            all.extend_from_slice(args);
            run("ip", &all);
        }
    }

    /// Boots the container and supervises it: a reboot boots it again, anything else ends it.
    fn start(self: &Arc<Self>, image: &Image) {
        let node = Arc::clone(self);
        let image = image.clone();
        let handle = std::thread::spawn(move || {
            loop {
                let exit = node.boot_once(&image);
                node.exits.lock().expect("exits lock").push(exit);
                if exit != REBOOT_EXIT || node.stopping.load(Ordering::SeqCst) {
                    break;
                }
            }
            *node.power.lock().expect("power lock") = Power::Off;
        });
        *self.supervisor.lock().expect("supervisor lock") = Some(handle);
    }

    /// One boot: nspawn from start to exit; its exit status.
    fn boot_once(&self, image: &Image) -> i32 {
        let cgroups = cgroup_dirs(&self.name);
        remove_cgroups(&cgroups);
        let root = self.dir.join("root");
        let seed = format!(
            "--bind-ro={}:/var/lib/cloud/seed/nocloud",
            self.dir.join("seed").display()
        );
        let mut args = vec![
            "-q".to_owned(),
            "-D".to_owned(),
            root.display().to_string(),
            "-b".to_owned(),
            "--register=no".to_owned(),
            "--keep-unit".to_owned(),
            "-M".to_owned(),
            self.name.clone(),
            format!("--uuid={}", machine_uuid(&self.instance_id)),
            format!("--network-namespace-path=/run/netns/{}", self.name),
            "--drop-capability=CAP_NET_ADMIN".to_owned(),
            seed,
        ];
        for (host, inside) in &image.binds {
            args.push(format!("--bind={}:{inside}", host.display()));
        }
        // nspawn runs the container in the cgroup it starts in: a shell joins the node's own
        // cgroups first, then becomes nspawn.
        let join = cgroups
            .iter()
            .map(|dir| format!("mkdir -p {0} && echo $$ > {0}/cgroup.procs", dir.display()))
            .collect::<Vec<_>>()
            .join(" && ");
        let console = std::fs::File::create(self.dir.join(format!("console-{}.log", self.boots())))
            .expect("console log");
        let mut child: Child = Command::new("sh")
            .arg("-c")
            .arg(format!("{join} && exec systemd-nspawn \"$@\""))
            .arg("sh")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("console handle"))
            .stderr(console)
            .spawn()
            .expect("starting systemd-nspawn");
        *self.nspawn.lock().expect("nspawn lock") = Some(child.id());
        self.boots.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + LEADER_TIMEOUT;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if let Some(leader) = container_systemd(child.id()) {
                *self.leader.lock().expect("leader lock") = Some(leader);
                break None;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let status = match status {
            Some(status) => status,
            None => child.wait().expect("waiting for systemd-nspawn"),
        };
        *self.leader.lock().expect("leader lock") = None;
        *self.nspawn.lock().expect("nspawn lock") = None;
        remove_cgroups(&cgroups);
        status.code().unwrap_or(-1)
    }

    /// Shuts the container down (SIGRTMIN+4 to its systemd, as `machinectl poweroff` does) and
    /// waits for nspawn to exit; kills it after [`SHUTDOWN_GRACE`].
    pub fn shut_down(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut asked = None;
        while self.power() == Power::On {
            match (self.leader(), asked) {
                (Some(leader), last) if last != Some(leader) => {
                    run_quietly("kill", &["-RTMIN+4", &leader.to_string()]);
                    asked = Some(leader);
                }
                _ => {}
            }
            if Instant::now() > deadline {
                if let Some(pid) = *self.nspawn.lock().expect("nspawn lock") {
                    run_quietly("kill", &["-KILL", &pid.to_string()]);
                }
            }
            if self.supervisor.lock().expect("supervisor lock").is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(handle) = self.supervisor.lock().expect("supervisor lock").take() {
            let _ = handle.join();
        }
    }

    /// Shuts down and removes everything the node had on the host.
    fn tear_down(&self) {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shut_down();
        remove_cgroups(&cgroup_dirs(&self.name));
        run_quietly(
            "umount",
            &[self.dir.join("root").to_str().unwrap_or_default()],
        );
        run_quietly("ip", &["netns", "del", &self.name]);
        run_quietly("ip", &["link", "del", &self.veth]);
        for dir in ["unix-export", "propagate", "incoming"] {
            let _ = std::fs::remove_dir_all(
                Path::new("/run/systemd/nspawn").join(dir).join(&self.name),
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.tear_down();
    }
}

/// nspawn's `--uuid` for an instance: the machine id stays the same across reboots, so the
/// node's persistent journal is one journal.
fn machine_uuid(instance_id: &str) -> String {
    let hex: String = instance_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    format!("{hex:0>32}")
}

/// The node's cgroups, in the hierarchies nspawn uses on this hybrid layout.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    ["systemd", "unified"]
        .iter()
        .map(|h| {
            Path::new("/sys/fs/cgroup")
                .join(h)
                .join(format!("nspawn-{name}"))
        })
        .collect()
}

/// Removes cgroup directories, children first (a cgroup with children cannot be removed).
pub fn remove_cgroups(dirs: &[PathBuf]) {
    fn remove(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for dir in dirs {
        remove(dir);
    }
}

/// The child of nspawn that is the container's systemd (nspawn's first, short-lived child is
/// not).
fn container_systemd(nspawn: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == nspawn && comm == "systemd").then_some(pid)
        })
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
        let instances = runtime.block_on(all_instances(&ec2));
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
                    let node = Arc::new(new_node(instance, id, address, user_data));
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
                        node.stopping.store(true, Ordering::SeqCst);
                    }
                    nodes
                        .lock()
                        .expect("nodes lock")
                        .insert(id.to_owned(), node);
                }
                (Some(node), false) if !node.stopping.load(Ordering::SeqCst) => {
                    node.stopping.store(true, Ordering::SeqCst);
                    std::thread::spawn(move || node.shut_down());
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn new_node(instance: &Instance, id: &str, address: Ipv4Addr, user_data: String) -> Node {
    let suffix: String = id
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let name = format!("{NAME_PREFIX}{suffix}");
    let node_type = instance
        .tags()
        .iter()
        .find(|t| t.key() == Some("ray-user-node-type"))
        .and_then(|t| t.value())
        .unwrap_or_default()
        .to_owned();
    Node {
        instance_id: id.to_owned(),
        dir: Path::new(STATE_ROOT).join(&name),
        veth: format!("{VETH_PREFIX}{suffix}"),
        name,
        address,
        node_type,
        user_data,
        leader: Mutex::new(None),
        nspawn: Mutex::new(None),
        boots: AtomicU32::new(0),
        stopping: AtomicBool::new(false),
        power: Mutex::new(Power::On),
        exits: Mutex::new(Vec::new()),
        supervisor: Mutex::new(None),
        torn_down: AtomicBool::new(false),
    }
}

async fn all_instances(ec2: &aws_sdk_ec2::Client) -> Vec<Instance> {
    ec2.describe_instances()
        .send()
        .await
        .map(|o| {
            o.reservations()
                .iter()
                .flat_map(|r| r.instances().iter().cloned())
                .collect()
        })
        .unwrap_or_default()
}

async fn user_data(ec2: &aws_sdk_ec2::Client, id: &str) -> String {
    let out = ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .expect("reading user data from moto");
    let encoded = out
        .user_data()
        .and_then(|v| v.value())
        .unwrap_or_default()
        .to_owned();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("user data is base64");
    String::from_utf8(bytes).expect("user data is UTF-8")
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
