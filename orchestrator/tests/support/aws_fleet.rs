//! Machines for the instances moto launches. moto gives instances of the 127.0.0.0/16 VPC
//! loopback "private" addresses, so each instance can have a real process listening at exactly
//! its address, where the orchestrator polls it.
//!
//! A booted instance is either a real `rayefa-agent` (its user data executed in a scratch root
//! with systemctl and the package manager as recording stand-ins, then a drop-in that pins the
//! listen address to the instance's and turns off the steps that would change this machine,
//! then `rayefa-agent run --root`), or a small status server that answers `/healthz` and a
//! ready `/v1/status` of the real document shape. Terminated instances lose their process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::Instance;
use rayefa_test_support::fault_http::Server;
use rayefa_test_support::files::write_executable;
use rayefa_wire::{
    NodeFacts, NodeIdentity, NodeState, Role, StatusDocument, StepState, StepStatus,
};

use super::aws_world::{describe_instances, live_filter, sdk_config, user_data};

/// What runs on a booted instance.
#[derive(Debug, Clone)]
pub enum Machine {
    /// A status server that reports ready at once.
    StatusServer,
    /// The real agent binary at this path.
    Agent(PathBuf),
    /// Nothing listens at the address (the orchestrator is outside the VPC); the node
    /// publishes `bootstrapping` on its instance's tags at once, then `state` (with `step`
    /// and `error`) a moment later, as the agent's tag reporter does.
    Publisher {
        /// The final `rayefa-state`.
        state: &'static str,
        /// The final `rayefa-step`.
        step: &'static str,
        /// The final `rayefa-error`, if any.
        error: Option<&'static str>,
    },
}

/// One booted instance.
#[derive(Debug, Clone)]
pub struct Booted {
    /// The instance id.
    pub instance_id: String,
    /// Its private address.
    pub address: String,
    /// The user data it booted with, decoded.
    pub user_data: String,
    /// What the user data's stand-ins were asked to do.
    pub calls: Vec<String>,
    /// The user data script's exit code.
    pub user_data_exit: Option<i32>,
}

/// Boots every instance moto launches, until dropped.
#[derive(Debug)]
pub struct Fleet {
    stop: Arc<AtomicBool>,
    booted: Arc<Mutex<Vec<Booted>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fleet {
    /// Watches moto at `endpoint`; booted machines listen on `port` at their address.
    pub fn start(endpoint: &str, port: u16, machine: Machine, scratch: PathBuf) -> Fleet {
        let stop = Arc::new(AtomicBool::new(false));
        let booted = Arc::new(Mutex::new(Vec::new()));
        let endpoint = endpoint.to_owned();
        let thread = {
            let stop = Arc::clone(&stop);
            let booted = Arc::clone(&booted);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fleet runtime");
                let config = runtime.block_on(sdk_config(&endpoint));
                let ec2 = aws_sdk_ec2::Client::new(&config);
                let mut running: BTreeMap<String, Running> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let instances = runtime
                        .block_on(describe_instances(&ec2, vec![live_filter()]))
                        .unwrap_or_default();
                    for instance in &instances {
                        let (Some(id), Some(ip)) =
                            (instance.instance_id(), instance.private_ip_address())
                        else {
                            continue;
                        };
                        if running.contains_key(id) {
                            continue;
                        }
                        let user_data = runtime.block_on(user_data(&ec2, id));
                        let dir = scratch.join(id);
                        let (process, record) = boot(
                            &machine, &endpoint, id, ip, port, &user_data, &dir, instance,
                        );
                        booted.lock().expect("fleet lock").push(record);
                        running.insert(id.to_owned(), process);
                    }
                    running.retain(|id, _| {
                        instances
                            .iter()
                            .any(|i| i.instance_id() == Some(id.as_str()))
                    });
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Fleet {
            stop,
            booted,
            thread: Some(thread),
        }
    }

    /// The instances booted so far.
    pub fn booted(&self) -> Vec<Booted> {
        self.booted.lock().expect("fleet lock").clone()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A process standing in for a machine; dropping it stops the machine.
enum Running {
    Server(Server),
    Agent(Child),
    Nothing,
}

impl Drop for Running {
    fn drop(&mut self) {
        match self {
            Running::Agent(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::Server(_) | Running::Nothing => {}
        }
    }
}

fn tag(instance: &Instance, key: &str) -> String {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .unwrap_or_default()
        .to_owned()
}

#[allow(clippy::too_many_arguments)]
fn boot(
    machine: &Machine,
    endpoint: &str,
    id: &str,
    ip: &str,
    port: u16,
    user_data: &str,
    dir: &std::path::Path,
    instance: &Instance,
) -> (Running, Booted) {
    let mut record = Booted {
        instance_id: id.to_owned(),
        address: ip.to_owned(),
        user_data: user_data.to_owned(),
        calls: Vec::new(),
        user_data_exit: None,
    };
    let address: SocketAddr = format!("{ip}:{port}").parse().expect("an instance address");
    match machine {
        Machine::StatusServer => {
            let role = if tag(instance, "ray-node-type") == "head" {
                Role::Head
            } else {
                Role::Worker
            };
            let document = ready_document(
                &tag(instance, "ray-cluster-name"),
                &tag(instance, "ray-user-node-type"),
                role,
            );
            (Running::Server(serve_status(address, &document)), record)
        }
        Machine::Publisher { state, step, error } => {
            let endpoint = endpoint.to_owned();
            let id = id.to_owned();
            let (state, step, error) = (*state, *step, *error);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("publisher runtime");
                let ec2 = aws_sdk_ec2::Client::new(&runtime.block_on(sdk_config(&endpoint)));
                runtime.block_on(publish(
                    &ec2,
                    &id,
                    "bootstrapping",
                    "install-efa:running",
                    None,
                ));
                std::thread::sleep(Duration::from_millis(800));
                runtime.block_on(publish(&ec2, &id, state, step, error));
            });
            (Running::Nothing, record)
        }
        Machine::Agent(binary) => {
            let (exit, calls) = run_user_data(user_data, dir, binary);
            record.user_data_exit = exit;
            record.calls = calls;
            if exit != Some(0) {
                return (Running::Nothing, record);
            }
            let drop_in = dir.join("root/etc/rayefa/agent.d");
            std::fs::create_dir_all(&drop_in).expect("drop-in directory");
            std::fs::write(
                drop_in.join("90-this-machine.toml"),
                format!(
                    "# This machine is not the instance: listen at the instance's address and\n\
                     # leave this machine's disks, packages and Ray alone.\n\
                     [agent]\nlisten = \"{address}\"\nimds = false\n\n\
                     [steps.grow-root]\nenabled = false\n[steps.install-efa]\nenabled = false\n\
                     [steps.probe-efa]\nenabled = false\n[steps.install-ray]\nenabled = false\n\
                     [steps.start-ray]\nenabled = false\n"
                ),
            )
            .expect("writing the drop-in");
            let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
            let child = Command::new(binary)
                .arg("run")
                .arg("--root")
                .arg(dir.join("root"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .expect("starting rayefa-agent");
            (Running::Agent(child), record)
        }
    }
}

/// Writes the state tags an agent publishes on its instance.
async fn publish(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    state: &str,
    step: &str,
    error: Option<&str>,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut tags = vec![
        ("rayefa-state", state.to_owned()),
        ("rayefa-step", step.to_owned()),
        ("rayefa-updated", now.to_string()),
    ];
    if let Some(error) = error {
        tags.push(("rayefa-error", error.to_owned()));
    }
    let mut request = ec2.create_tags().resources(id);
    for (key, value) in tags {
        request = request.tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(key)
                .value(value)
                .build(),
        );
    }
    request.send().await.expect("publishing state tags in moto");
}

/// Runs the user data in `dir/root` with recording stand-ins for systemctl and the package
/// managers, and the real agent on PATH as if the image had it.
fn run_user_data(
    script: &str,
    dir: &std::path::Path,
    agent: &std::path::Path,
) -> (Option<i32>, Vec<String>) {
    let root = dir.join("root");
    let bin = dir.join("bin");
    for path in [root.join("etc"), root.join("tmp"), bin.clone()] {
        std::fs::create_dir_all(path).expect("scratch directories");
    }
    std::fs::write(
        root.join("etc/os-release"),
        "NAME=\"Amazon Linux\"\nID=\"amzn\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"2023\"\n",
    )
    .expect("os-release");
    let log = dir.join("calls.log");
    for name in ["systemctl", "dnf", "apt-get"] {
        write_executable(
            &bin.join(name),
            format!("#!/bin/bash\necho \"{name} $*\" >> {}\n", log.display()),
        );
    }
    let linked = bin.join("rayefa-agent");
    if !linked.exists() {
        std::os::unix::fs::symlink(agent, &linked).expect("agent on PATH");
    }
    let out = run_as_user_data(script, dir, &root, &bin);
    std::fs::write(dir.join("user-data.log"), &out.stderr).expect("user data log");
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    (out.status.code(), calls)
}

/// Runs `script` (written to `dir/user-data`) with bash as a node runs its user data, with
/// `RAYEFA_ROOT` at `root`, `TMPDIR` inside it, and `bin` (the test's stand-ins) first on
/// `PATH`.
pub fn run_as_user_data(
    script: &str,
    dir: &std::path::Path,
    root: &std::path::Path,
    bin: &std::path::Path,
) -> std::process::Output {
    std::fs::create_dir_all(root.join("tmp")).expect("the node's tmp");
    let file = dir.join("user-data");
    std::fs::write(&file, script).expect("user data file");
    Command::new("bash")
        .arg(&file)
        .env("RAYEFA_ROOT", root)
        .env("TMPDIR", root.join("tmp"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("running the user data")
}

/// A status document of a node whose every step succeeded.
pub fn ready_document(cluster: &str, node_type: &str, role: Role) -> StatusDocument {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let steps = [
        "grow-root",
        "install-efa",
        "probe-efa",
        "install-ray",
        "setup-commands",
        "start-ray",
    ]
    .map(|name| StepStatus {
        name: name.to_owned(),
        state: StepState::Succeeded,
        depends_on: Vec::new(),
        activity: None,
        started_at_ms: Some(now_ms),
        finished_at_ms: Some(now_ms),
        attempts: 1,
        exit_code: Some(0),
        error: None,
        output_tail: String::new(),
        detail: None,
        spans: Vec::new(),
    })
    .to_vec();
    StatusDocument {
        api: rayefa_wire::API_VERSION,
        node: NodeIdentity {
            cluster_name: cluster.to_owned(),
            role,
            node_type: node_type.to_owned(),
        },
        facts: NodeFacts {
            agent_version: "test".to_owned(),
            cpus: 1,
            ..NodeFacts::default()
        },
        state: NodeState::Ready,
        steps,
        warnings: Vec::new(),
        generated_at_ms: now_ms,
    }
}

/// Serves `/healthz`, `/readyz` and `/v1/status` at `address` until dropped.
fn serve_status(address: SocketAddr, document: &StatusDocument) -> Server {
    let server = Server::start_at(address);
    server.route(
        "/v1/status",
        serde_json::to_vec(document).expect("status JSON"),
        &[],
    );
    for path in ["/healthz", "/readyz"] {
        server.route(path, "{}", &[]);
    }
    server
}
