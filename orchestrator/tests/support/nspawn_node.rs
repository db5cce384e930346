//! One node of the fleet: an instance's container, from its disk, seed and network on the host
//! to the nspawn that boots it, the supervision that boots it again after a reboot, and its
//! shutdown and removal. See [`super::nspawn_fleet`] for the fleet around it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Instance;

use super::nspawn_fleet::{
    BRIDGE, NAME_PREFIX, PREFIX_LEN, STATE_ROOT, VETH_PREFIX, run, run_quietly,
};

/// nspawn's exit status when the container asked for a reboot.
const REBOOT_EXIT: i32 = 133;
/// How long a node gets to shut down before its container is killed: longer than
/// systemd-shutdown's own 90 s wait for processes that ignore its SIGTERM (Ray's do), so that
/// a node always gets to power off by itself.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(150);
/// How long the processes of a stopped container get to leave its cgroups.
const CGROUP_DRAIN: Duration = Duration::from_secs(15);
/// How long nspawn gets to start the container's systemd.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

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
    notes: Mutex<Vec<String>>,
    shutdown_asked: Mutex<Option<Instant>>,
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

    /// `args` inside the node (all its namespaces), ready to run.
    fn inside(&self, args: &[&str]) -> Command {
        let leader = self
            .leader()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let mut command = Command::new("nsenter");
        command
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
            .stdin(Stdio::null());
        command
    }

    /// Runs `args` inside the node (all its namespaces), without checking how it ends.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.inside(args).output().expect("running nsenter")
    }

    /// Starts `args` inside the node (all its namespaces) and returns at once, its output
    /// piped: for a server that another node's client talks to.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.inside(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting nsenter")
    }

    /// Runs the host's `args` in the node's network namespace only (`ip netns exec`), panicking
    /// unless it succeeds. The node has no CAP_NET_ADMIN, so its firewall is set from here, as
    /// a cloud's network rules are set from outside an instance.
    pub fn in_netns(&self, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
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
        for note in self.notes() {
            text.push_str(&format!("--- {note}\n"));
        }
        let console = self
            .dir
            .join(format!("console-{}.log", self.boots().saturating_sub(1)));
        if let Ok(log) = std::fs::read_to_string(&console) {
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            text.push_str(&format!("--- the end of {}\n{tail}\n", console.display()));
        }
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

    /// Makes the node's disk, seed and network on the host; [`Node::start`] boots it.
    pub fn prepare(&self, image: &Image) {
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
    pub fn start(self: &Arc<Self>, image: &Image) {
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
            if let Some(asked) = *node.shutdown_asked.lock().expect("shutdown lock") {
                node.note(format!(
                    "powered off {:.1} s after it was asked to",
                    asked.elapsed().as_secs_f64()
                ));
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
        let started = *self
            .shutdown_asked
            .lock()
            .expect("shutdown lock")
            .get_or_insert_with(Instant::now);
        let deadline = started + SHUTDOWN_GRACE;
        let mut asked = None;
        let mut killed = false;
        while self.power() == Power::On {
            match (self.leader(), asked) {
                (Some(leader), last) if last != Some(leader) => {
                    run_quietly("kill", &["-RTMIN+4", &leader.to_string()]);
                    asked = Some(leader);
                }
                _ => {}
            }
            // Its console (in the diagnostics) says which processes held it up.
            if !killed
                && Instant::now() > deadline
                && let Some(pid) = *self.nspawn.lock().expect("nspawn lock")
            {
                self.note(format!(
                    "still up {SHUTDOWN_GRACE:?} after SIGRTMIN+4: killed"
                ));
                // The container's init first: its death takes every process of the node's
                // PID namespace with it, which nspawn's death alone would not.
                if let Some(leader) = self.leader() {
                    run_quietly("kill", &["-KILL", &leader.to_string()]);
                }
                run_quietly("kill", &["-KILL", &pid.to_string()]);
                killed = true;
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

    /// Marks the node as going away (no more reboots); false when it already was.
    pub fn mark_stopping(&self) -> bool {
        !self.stopping.swap(true, Ordering::SeqCst)
    }

    /// Records something the test's failure message should show.
    fn note(&self, text: String) {
        self.notes.lock().expect("notes lock").push(text);
    }

    /// What the fleet noted about this node (shutdown times, what outlived a shutdown).
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("notes lock").clone()
    }

    /// Shuts down and removes everything the node had on the host.
    pub fn tear_down(&self) {
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
/// Processes of a container that was killed take a moment to die: a cgroup that still has
/// some is waited for, up to [`CGROUP_DRAIN`].
pub fn remove_cgroups(dirs: &[PathBuf]) {
    fn populated(dir: &Path) -> bool {
        let here = std::fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|procs| !procs.trim().is_empty());
        here || std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_type().is_ok_and(|t| t.is_dir()) && populated(&e.path()))
        })
    }
    let deadline = Instant::now() + CGROUP_DRAIN;
    while dirs.iter().any(|d| populated(d)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
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

impl Node {
    /// The node of a launched instance, at its private `address`, named after its id.
    pub fn new(instance: &Instance, id: &str, address: Ipv4Addr, user_data: String) -> Node {
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
            notes: Mutex::new(Vec::new()),
            shutdown_asked: Mutex::new(None),
            supervisor: Mutex::new(None),
            torn_down: AtomicBool::new(false),
        }
    }
}
