//! Hostile HTTP clients against an agent on loopback, and a separate client that measures how
//! `/healthz` answers while they run.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the measuring client saw.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    /// Latency of every answered `/healthz` (HTTP 200), in request order.
    pub answered: Vec<Duration>,
    /// Requests that got no 200 (refused, reset, timed out, another status).
    pub failed: usize,
    /// The first few failures, for the report.
    pub failures: Vec<String>,
}

impl Probes {
    /// The median over every request, a failed one counting as slower than any answer:
    /// `None` when more than half failed (or nothing was asked).
    pub fn median(&self) -> Option<Duration> {
        let total = self.answered.len() + self.failed;
        let mut sorted = self.answered.clone();
        sorted.sort();
        sorted.get(total / 2).copied().filter(|_| total > 0)
    }

    /// The `q` quantile of the answered requests.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.answered.clone();
        sorted.sort();
        if sorted.is_empty() {
            return None;
        }
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted.get(index).copied()
    }
}

/// Asks `/healthz` on a fresh connection every `every` until stopped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Probes>,
}

impl Prober {
    pub fn start(address: SocketAddr, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut probes = Probes::default();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                match healthz(address) {
                    Ok(()) => probes.answered.push(started.elapsed()),
                    Err(err) => {
                        probes.failed += 1;
                        if probes.failures.len() < 5 {
                            probes.failures.push(err);
                        }
                    }
                }
                std::thread::sleep(every.saturating_sub(started.elapsed()));
            }
            probes
        });
        Self { stop, thread }
    }

    pub fn finish(self) -> Probes {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("prober")
    }
}

/// One `GET /healthz` with `Connection: close`, as an orchestrator or a load balancer asks.
fn healthz(address: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    if answer.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "answer: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        ))
    }
}

/// Counters an attack keeps.
#[derive(Debug, Default)]
pub struct Tally {
    /// Connections opened.
    pub connections: AtomicU64,
    /// Connections the agent closed or refused.
    pub closed_by_agent: AtomicU64,
    /// Bytes sent.
    pub bytes: AtomicU64,
}

impl Tally {
    pub fn summary(&self) -> String {
        format!(
            "{} connections, {} closed by the agent, {} bytes sent",
            self.connections.load(Ordering::Relaxed),
            self.closed_by_agent.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed)
        )
    }
}

/// Whether the agent has closed `stream` (without blocking).
pub fn closed(stream: &mut TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 512];
    let gone = loop {
        match stream.read(&mut byte) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(err) if err.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    let _ = stream.set_nonblocking(false);
    gone
}

/// Opens a connection, counting it.
pub fn connect(address: SocketAddr, tally: &Tally) -> Option<TcpStream> {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    tally.connections.fetch_add(1, Ordering::Relaxed);
    Some(stream)
}

/// Keeps `count` connections open and silent for `length`, looking every `sweep` for those
/// the agent closed and opening a new one for each, as an attacker holding the agent's slots
/// would.
pub fn idle_connections(
    address: SocketAddr,
    count: usize,
    sweep: Duration,
    length: Duration,
    tally: &Tally,
) {
    let until = Instant::now() + length;
    let mut streams: Vec<Option<TcpStream>> = Vec::with_capacity(count);
    while streams.len() < count && Instant::now() < until {
        streams.push(connect(address, tally));
    }
    while Instant::now() < until {
        for slot in &mut streams {
            let gone = slot.as_mut().is_none_or(closed);
            if gone {
                if slot.is_some() {
                    tally.closed_by_agent.fetch_add(1, Ordering::Relaxed);
                }
                *slot = connect(address, tally);
            }
        }
        std::thread::sleep(sweep);
    }
}

/// Slowloris: `count` connections each sending a request head one header line at a time,
/// one line per `pace`, never finishing it; closed ones are opened again.
pub fn slowloris(
    address: SocketAddr,
    count: usize,
    pace: Duration,
    length: Duration,
    tally: &Tally,
) {
    let until = Instant::now() + length;
    let open = |tally: &Tally| {
        let mut stream = connect(address, tally)?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n")
            .ok()?;
        tally.bytes.fetch_add(36, Ordering::Relaxed);
        Some(stream)
    };
    let mut streams: Vec<Option<TcpStream>> = (0..count).map(|_| open(tally)).collect();
    let mut line = 0u64;
    while Instant::now() < until {
        line += 1;
        for slot in &mut streams {
            let sent = slot.as_mut().is_some_and(|stream| {
                stream
                    .write_all(format!("X-Slow-{line}: {line}\r\n").as_bytes())
                    .is_ok()
            });
            if sent {
                tally.bytes.fetch_add(16, Ordering::Relaxed);
            } else {
                if slot.is_some() {
                    tally.closed_by_agent.fetch_add(1, Ordering::Relaxed);
                }
                *slot = open(tally);
            }
        }
        std::thread::sleep(pace);
    }
}

/// Requests whose head is `header_bytes` long (one header), sent as fast as the agent takes
/// them, until `length` has passed. Answers the status codes seen (0: none, the connection
/// was cut).
pub fn huge_headers(
    address: SocketAddr,
    header_bytes: usize,
    length: Duration,
    tally: &Tally,
) -> Vec<u16> {
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: agent\r\nX-Huge: {}\r\nConnection: close\r\n\r\n",
        "h".repeat(header_bytes)
    );
    let until = Instant::now() + length;
    let mut codes = Vec::new();
    while Instant::now() < until {
        let Some(mut stream) = connect(address, tally) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let mut sent = 0;
        for chunk in head.as_bytes().chunks(64 * 1024) {
            if stream.write_all(chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        tally.bytes.fetch_add(sent as u64, Ordering::Relaxed);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let code = answer
            .split(|b| *b == b' ')
            .nth(1)
            .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
            .unwrap_or(0);
        if sent < head.len() || code != 200 {
            tally.closed_by_agent.fetch_add(1, Ordering::Relaxed);
        }
        codes.push(code);
    }
    codes
}

/// Connections that send `rng`'s random bytes (a burst of up to 64 KiB), then read whatever
/// comes back, until `length` has passed.
pub fn random_bytes(address: SocketAddr, seed: u64, length: Duration, tally: &Tally) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let until = Instant::now() + length;
    while Instant::now() < until {
        let Some(mut stream) = connect(address, tally) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let size = rng.usize(1..=64 * 1024);
        let mut junk = vec![0u8; size];
        rng.fill(&mut junk);
        // Half the time the junk follows a plausible request line, to get past the first check.
        if rng.bool() {
            let prefix = b"GET /v1/status HTTP/1.1\r\n";
            let n = prefix.len().min(junk.len());
            junk[..n].copy_from_slice(&prefix[..n]);
        }
        if stream.write_all(&junk).is_ok() {
            tally.bytes.fetch_add(size as u64, Ordering::Relaxed);
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        tally.closed_by_agent.fetch_add(1, Ordering::Relaxed);
    }
}
