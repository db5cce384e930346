//! The hostile HTTP suite: the real agent daemon under slowloris, 1 MiB headers, 2,000 idle
//! connections, random bytes and every method on every path. During each attack a separate
//! client asks `/healthz` on a fresh connection every 20 ms; its median (a request that got no
//! 200 counts as slower than any answer) must stay under 100 ms, and the agent's memory must
//! stay bounded. The figures are printed: median, p99 and failures of the probes, the agent's
//! peak RSS (`VmHWM`) and open descriptors after each attack.
//!
//! Run: `cargo test -p rayefa-agent --test hostile_http -- --ignored --nocapture`

mod support;

#[path = "support/attack.rs"]
mod attack;

use std::process::Child;
use std::time::{Duration, Instant};

use attack::{Prober, Probes, Tally};
use support::{Node, kill, procs, request, wait_exit};

/// How long each attack lasts: longer than the agent's 5 s limit on a request head, so that
/// the connections it cuts are seen being replaced.
const ATTACK: Duration = Duration::from_secs(8);
/// The bound on the median `/healthz` answer during an attack.
const MEDIAN_BOUND: Duration = Duration::from_millis(100);
/// A generous bound on the agent's peak resident memory over the whole suite.
const PEAK_RSS_BOUND_KIB: u64 = 64 * 1024;

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND",
    "MKCOL", "LOCK", "BREW",
];
const KNOWN_PATHS: &[&str] = &["/healthz", "/readyz", "/v1/status", "/metrics"];
const OTHER_PATHS: &[&str] = &["/", "/nothing", "/v1/status/x", "/v1", "/healthz/", "/.env"];

/// The answer the agent owes `method path`.
fn expected(method: &str, path: &str) -> u16 {
    let bare = path.split('?').next().unwrap_or(path);
    if !KNOWN_PATHS.contains(&bare) {
        404
    } else if method == "GET" || method == "HEAD" {
        200
    } else {
        405
    }
}

fn paths() -> Vec<String> {
    KNOWN_PATHS
        .iter()
        .chain(OTHER_PATHS)
        .map(|p| (*p).to_owned())
        .chain(KNOWN_PATHS.iter().map(|p| format!("{p}?x=1")))
        .collect()
}

/// The status code and headers of `method path` with a small body.
fn ask(node: &Node, method: &str, path: &str) -> Result<(u16, String), String> {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let mut stream = std::net::TcpStream::connect_timeout(&node.address, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut stream, raw.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut answer).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    Ok((code, head))
}

/// One attack's figures.
struct Figures {
    attack: &'static str,
    probes: Probes,
    peak_kib: u64,
    rss_kib: u64,
    fds: usize,
    detail: String,
}

impl Figures {
    fn row(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
        };
        format!(
            "| {} | {} | {} | {} | {}/{} | {:.1} | {:.1} | {} | {} |",
            self.attack,
            ms(self.probes.median()),
            ms(self.probes.quantile(0.99)),
            ms(self.probes.answered.iter().max().copied()),
            self.probes.failed,
            self.probes.failed + self.probes.answered.len(),
            self.peak_kib as f64 / 1024.0,
            self.rss_kib as f64 / 1024.0,
            self.fds,
            self.detail
        )
    }
}

/// The agent under test, with the descriptor limit the unit gives it.
struct Target {
    node: Node,
    agent: Child,
}

impl Target {
    fn start() -> Self {
        raise_nofile();
        let node = Node::new("[commands]\nstart = [\"true\"]\n");
        let agent = node.spawn();
        let (code, body) = node.wait_ready(Duration::from_secs(20));
        assert_eq!(code, 200, "not ready: {body}\n{}", node.log());
        Self { node, agent }
    }

    fn pid(&self) -> u32 {
        self.agent.id()
    }

    /// Runs `attack` while probing `/healthz`; waits for the agent to let go of the attack's
    /// connections before answering, so that attacks do not add up.
    fn under(&self, name: &'static str, attack: impl FnOnce() -> String) -> Figures {
        let prober = Prober::start(self.node.address, Duration::from_millis(20));
        let detail = attack();
        let probes = prober.finish();
        let peak_kib = procs::status_kib(self.pid(), "VmHWM").expect("agent alive");
        let rss_kib = procs::status_kib(self.pid(), "VmRSS").expect("agent alive");
        let fds = procs::open_fds(self.pid());
        let figures = Figures {
            attack: name,
            probes,
            peak_kib,
            rss_kib,
            fds,
            detail,
        };
        eprintln!("{}", figures.row());
        let settle = Instant::now();
        while procs::open_fds(self.pid()) > 64 && settle.elapsed() < Duration::from_secs(70) {
            std::thread::sleep(Duration::from_millis(100));
        }
        figures
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        kill(&mut self.agent, libc::SIGTERM);
        let _ = wait_exit(&mut self.agent, Duration::from_secs(10));
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// The unit sets `LimitNOFILE=65536:1048576`; here the soft limit is raised to the hard one
/// (the agent inherits it), and the test needs it for its own 2,000 connections.
fn raise_nofile() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

#[test]
#[ignore = "five 8-second attacks on the real agent; run by tests/run"]
fn the_agent_keeps_answering_healthz_under_hostile_clients() {
    let target = Target::start();
    let address = target.node.address;
    let baseline_kib = procs::status_kib(target.pid(), "VmHWM").expect("agent alive");
    eprintln!(
        "hostile HTTP: agent pid {}, peak RSS before the attacks {:.1} MiB, {} descriptors",
        target.pid(),
        baseline_kib as f64 / 1024.0,
        procs::open_fds(target.pid())
    );
    eprintln!(
        "| attack | median ms | p99 ms | max ms | failed/probes | peak RSS MiB | RSS MiB | fds | attack detail |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|");

    let mut figures = vec![target.under("none (baseline)", || {
        std::thread::sleep(Duration::from_secs(2));
        String::new()
    })];

    figures.push(target.under("slowloris, 1,000 connections", || {
        let tally = Tally::default();
        attack::slowloris(address, 1000, Duration::from_secs(1), ATTACK, &tally);
        tally.summary()
    }));

    figures.push(target.under("1 MiB headers, 4 clients", || {
        let tally = Tally::default();
        let codes: Vec<Vec<u16>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| attack::huge_headers(address, 1 << 20, ATTACK, &tally)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .collect()
        });
        let codes: Vec<u16> = codes.into_iter().flatten().collect();
        let served = codes.iter().filter(|c| **c == 200).count();
        assert_eq!(served, 0, "a request with a 1 MiB head was served");
        let answered_431 = codes.iter().filter(|c| **c == 431).count();
        format!(
            "{}; {} answered 431, {} cut off",
            tally.summary(),
            answered_431,
            codes.len() - answered_431
        )
    }));

    figures.push(target.under("2,000 idle connections", || {
        let tally = Tally::default();
        attack::idle_connections(address, 2000, Duration::from_millis(200), ATTACK, &tally);
        tally.summary()
    }));

    figures.push(target.under("random bytes, 4 clients", || {
        let tally = Tally::default();
        std::thread::scope(|scope| {
            for seed in 1..=4u64 {
                let tally = &tally;
                scope.spawn(move || attack::random_bytes(address, seed, ATTACK, tally));
            }
        });
        tally.summary()
    }));

    let paths = paths();
    figures.push(target.under("every method on every path, 2 clients", || {
        let until = Instant::now() + ATTACK;
        let asked: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        let mut asked = 0;
                        while Instant::now() < until {
                            for method in METHODS {
                                for path in &paths {
                                    let (code, head) = ask(&target.node, method, path)
                                        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                                    assert_eq!(
                                        code,
                                        expected(method, path),
                                        "{method} {path}:\n{head}"
                                    );
                                    if code == 405 {
                                        assert!(
                                            head.to_ascii_lowercase().contains("allow: get, head"),
                                            "{method} {path}: 405 without Allow:\n{head}"
                                        );
                                    }
                                    asked += 1;
                                }
                            }
                        }
                        asked
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("worker")).sum()
        });
        format!(
            "{asked} requests, {} methods x {} paths, every answer as expected",
            METHODS.len(),
            paths.len()
        )
    }));

    // Still serving, and read-only, after all of it.
    let (code, _) = request(
        address,
        b"GET /readyz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n",
    )
    .expect("answers after the attacks");
    assert_eq!(code, 200);

    let peak = figures.iter().map(|f| f.peak_kib).max().unwrap_or(0);
    eprintln!(
        "hostile HTTP: peak RSS over the suite {:.1} MiB (before: {:.1} MiB)",
        peak as f64 / 1024.0,
        baseline_kib as f64 / 1024.0
    );
    for f in &figures {
        assert!(
            f.probes
                .median()
                .is_some_and(|median| median < MEDIAN_BOUND),
            "{}: median /healthz {:?} (None: most probes failed; failures: {} of {}, e.g. {:?})",
            f.attack,
            f.probes.median(),
            f.probes.failed,
            f.probes.failed + f.probes.answered.len(),
            f.probes.failures
        );
    }
    assert!(
        peak < PEAK_RSS_BOUND_KIB,
        "peak RSS {peak} KiB over {PEAK_RSS_BOUND_KIB} KiB"
    );
}

#[test]
fn a_full_server_closes_its_oldest_connection_for_a_new_client() {
    raise_nofile();
    let node = Node::new("[commands]\nstart = [\"true\"]\n");
    let config = std::fs::read_to_string(node.config()).expect("config");
    node.write_config(&config.replace(
        "stop_grace_secs = 2",
        "stop_grace_secs = 2\nmax_connections = 8",
    ));
    let mut agent = node.spawn();
    node.wait_status(Duration::from_secs(10), |_| true);

    let tally = Tally::default();
    let mut hogs: Vec<std::net::TcpStream> = (0..8)
        .map(|_| attack::connect(node.address, &tally).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let (code, _) = request(
            node.address,
            b"GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n",
        )
        .expect("served while every slot is held");
        assert_eq!(code, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let closed: Vec<bool> = hogs.iter_mut().map(attack::closed).collect();
    // Each request that found every slot held closed the oldest silent connection; one that
    // came after its predecessor let go of its slot took that one.
    let made_room = closed.iter().take_while(|c| **c).count();
    assert!(
        (1..=3).contains(&made_room) && closed[made_room..].iter().all(|c| !c),
        "not the oldest first: {closed:?}"
    );
    kill(&mut agent, libc::SIGTERM);
    wait_exit(&mut agent, Duration::from_secs(10)).expect("exits");
}
