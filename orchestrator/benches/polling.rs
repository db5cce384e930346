//! Polling at scale: the orchestrator's real poller against real `rayefa-agent` processes on
//! loopback, each on its own 127.77.x.y address. Prints one full round's wall and CPU time,
//! the orchestrator's peak RSS, and how long after the last node turned ready the poller
//! reported it; asserts nothing.
//!
//!     cargo build --release -p rayefa-agent
//!     cargo bench -p rayefa-orchestrator --bench polling [-- --nodes 96,1000 --interval-ms 1000]
//!
//! Every agent runs its real bootstrap with the host-changing steps off; its start command
//! waits on a shared lock that this process holds, so that every node is mid-bootstrap while
//! rounds are measured and all turn ready at one known moment when the lock is let go.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rayefa_orchestrator::harness::bench_poll::{Poller, Round};

const PORT: u16 = 18_977;
/// Room left for everything else on the machine when deciding whether the agents fit.
const MEMORY_HEADROOM_MIB: u64 = 3 * 1024;
/// An agent's idle RSS plus the `flock` its start command waits in, rounded up.
const PER_NODE_MIB: u64 = 10;

fn main() {
    let mut sizes = vec![96usize, 1000];
    let mut interval = Duration::from_secs(1);
    let mut rounds = 5usize;
    let mut agent = std::env::var_os("RAYEFA_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/rayefa-agent")
        });
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--nodes" => {
                sizes = args
                    .next()
                    .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
                    .unwrap_or(sizes)
            }
            "--interval-ms" => {
                interval = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .map_or(interval, Duration::from_millis)
            }
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(rounds),
            "--agent" => agent = args.next().map_or(agent, PathBuf::from),
            _ => {}
        }
    }
    let agent = agent.canonicalize().unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with `cargo build --release -p rayefa-agent`",
            agent.display()
        )
    });
    raise_open_files();
    println!(
        "polling: real poller, real agents ({}), {} cores, load {}",
        agent.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for nodes in sizes {
        let available = mem_available_mib();
        let needed = nodes as u64 * PER_NODE_MIB + MEMORY_HEADROOM_MIB;
        if available < needed {
            println!(
                "\n== {nodes} nodes: skipped: {available} MiB available, {needed} MiB needed for real agents"
            );
            continue;
        }
        bench(&agent, nodes, interval, rounds);
    }
}

fn bench(agent: &Path, nodes: usize, interval: Duration, rounds: usize) {
    let work = std::env::temp_dir().join(format!("rayefa-polling-{}-{nodes}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work directory");
    let gate_path = work.join("gate");
    let gate = Flock::lock(
        File::create(&gate_path).expect("gate"),
        FlockArg::LockExclusive,
    )
    .map_err(|(_, e)| e)
    .expect("hold the gate");

    let started = Instant::now();
    let mut fleet = Fleet::default();
    let mut addresses = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let ip = Ipv4Addr::from(
            u32::from(Ipv4Addr::new(127, 77, 0, 1)) + u32::try_from(i).expect("index"),
        );
        let address = SocketAddr::from((ip, PORT));
        fleet.0.push(spawn(
            agent,
            &work.join(format!("node-{i}")),
            address,
            &gate_path,
        ));
        addresses.push(address);
    }
    let mut poller = Poller::new(&addresses, interval).expect("poller");
    let mut answering = 0;
    while answering < nodes && started.elapsed() < Duration::from_secs(180) {
        answering = poller.round().answered;
        if answering < nodes {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("\n== {nodes} nodes");
    println!(
        "agents started and answering: {answering}/{nodes} after {:.1} s; agents' RSS: {:.1} MiB in all, {:.2} MiB median",
        started.elapsed().as_secs_f64(),
        fleet.rss_kib().iter().sum::<u64>() as f64 / 1024.0,
        median_u64(fleet.rss_kib()) as f64 / 1024.0,
    );
    let measured: Vec<Round> = (0..rounds).map(|_| poller.round()).collect();
    for (i, round) in measured.iter().enumerate() {
        println!(
            "round {}: wall {:7.1} ms, orchestrator CPU {:7.1} ms, answered {}/{nodes}",
            i + 1,
            round.wall.as_secs_f64() * 1000.0,
            round.cpu.as_secs_f64() * 1000.0,
            round.answered
        );
    }
    let mut walls: Vec<Duration> = measured.iter().map(|r| r.wall).collect();
    walls.sort();
    let mut cpus: Vec<Duration> = measured.iter().map(|r| r.cpu).collect();
    cpus.sort();
    println!(
        "full round: median {:.1} ms, max {:.1} ms (target <= 1000 ms); orchestrator CPU per round median {:.1} ms",
        walls[walls.len() / 2].as_secs_f64() * 1000.0,
        walls[walls.len() - 1].as_secs_f64() * 1000.0,
        cpus[cpus.len() / 2].as_secs_f64() * 1000.0,
    );

    // Let every node finish at once; wait as `rayefa up` does.
    drop(gate);
    let report = poller.until_ready(Duration::from_secs(120));
    let last = report.nodes.iter().max_by_key(|n| n.ready_unix_ms);
    let lags: Vec<i64> = report
        .nodes
        .iter()
        .filter_map(|n| {
            n.ready_unix_ms
                .map(|r| n.reported_unix_ms as i64 - r as i64)
        })
        .collect();
    println!(
        "wait: {} after {} rounds; {} nodes reported ready",
        report.outcome,
        report.rounds,
        report.nodes.len()
    );
    if let Some(last) = last {
        let lag = last
            .ready_unix_ms
            .map_or(-1, |r| last.reported_unix_ms as i64 - r as i64);
        println!(
            "last node to turn ready ({}): reported {lag} ms after it was ready (target <= {} ms); worst lag over all nodes {} ms",
            last.agent,
            interval.as_millis() + 200,
            lags.iter().max().copied().unwrap_or(-1)
        );
    }
    println!(
        "orchestrator peak RSS so far: {:.1} MiB",
        status_kib(std::process::id(), "VmHWM:").unwrap_or(0) as f64 / 1024.0
    );
    drop(fleet);
    let _ = std::fs::remove_dir_all(&work);
}

fn spawn(agent: &Path, dir: &Path, address: SocketAddr, gate: &Path) -> Child {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).expect("node directory");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"[node]
cluster_name = "polling"
role = "worker"
node_type = "worker"
head_address = "127.0.0.1"
[agent]
listen = "{address}"
imds = false
[steps.grow-root]
enabled = false
[steps.install-efa]
enabled = false
[steps.probe-efa]
enabled = false
[steps.install-ray]
enabled = false
[commands]
setup = ["true"]
start = ["exec flock --shared {} true"]
"#,
            gate.display()
        ),
    )
    .expect("agent configuration");
    Command::new(agent)
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(&root)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .spawn()
        .expect("start an agent")
}

/// The agents, stopped with SIGTERM (then waited for) when dropped.
#[derive(Default)]
struct Fleet(Vec<Child>);

impl Fleet {
    fn rss_kib(&self) -> Vec<u64> {
        self.0
            .iter()
            .filter_map(|c| status_kib(c.id(), "VmRSS:"))
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &self.0 {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn mem_available_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn median_u64(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// As `rayefa` does at start: a thousand connections need more than the usual 1024 files.
fn raise_open_files() {
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
