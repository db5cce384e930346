//! The ping-pong between two nodes over an RDM [`Endpoint`]: a listener that answers any
//! number of pingers, and a pinger that measures latency and bandwidth per message size.
//!
//! Every message starts with a 16-byte header (magic, kind, session). A pinger opens a session
//! with `hello` carrying its own fabric address, which the listener inserts into its address
//! vector and answers with `welcome` (carrying the largest message it receives); each `ping`
//! comes back as a `pong` of the same length, sent from the buffer it arrived in; `bye` ends
//! the session. The listener alternates its two buffers so that a receive is always posted
//! before it answers.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rayefa_wire::{ListenerReady, PingOutcome, PingReport, SizeResult};

use super::FabricError;
use super::endpoint::{Buffer, Completion, Endpoint, Peer};
use super::library::Libfabric;

/// "RFPP", the first four bytes of every message.
const MAGIC: u32 = 0x5246_5050;

/// Bytes of header in every message: magic, kind (u32 each), session (u64).
pub(crate) const HEADER: usize = 16;

/// Round trips before the timed ones, so that connection set-up is not measured.
const WARMUP: u64 = 10;

/// A size moves at most this many bytes each way, so large sizes take fewer round trips.
const BYTES_PER_SIZE: u64 = 256 << 20;

/// The fewest timed round trips per size.
const MIN_ITERATIONS: u64 = 10;

/// How long the listener waits for its answer to leave.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hello = 1,
    Welcome = 2,
    Ping = 3,
    Pong = 4,
    Bye = 5,
}

impl Kind {
    fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Ping,
            4 => Kind::Pong,
            5 => Kind::Bye,
            _ => return None,
        })
    }
}

fn write_header(buffer: &mut [u8], kind: Kind, session: u64) {
    buffer[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buffer[4..8].copy_from_slice(&(kind as u32).to_le_bytes());
    buffer[8..16].copy_from_slice(&session.to_le_bytes());
}

/// The kind and session of a message, `None` for anything that is not one of ours.
fn read_header(message: &[u8]) -> Option<(Kind, u64)> {
    let magic = u32::from_le_bytes(message.get(0..4)?.try_into().ok()?);
    let kind = u32::from_le_bytes(message.get(4..8)?.try_into().ok()?);
    let session = u64::from_le_bytes(message.get(8..16)?.try_into().ok()?);
    (magic == MAGIC).then_some(())?;
    Some((Kind::from_u32(kind)?, session))
}

/// What a listener is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ListenOptions {
    /// The libfabric provider (`efa`, `tcp`).
    pub(crate) provider: String,
    /// The local address to listen on (`fi_getinfo`'s node with `FI_SOURCE`); the
    /// provider's first interface when `None`.
    pub(crate) source: Option<String>,
    /// The largest message to receive.
    pub(crate) max_message: usize,
    /// How long to serve before returning.
    pub(crate) serve_for: Duration,
    /// Return after this many sessions ended with `bye`.
    pub(crate) sessions: Option<u64>,
}

/// How a listener ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenSummary {
    /// Sessions that said `bye`.
    pub(crate) sessions: u64,
    /// Pings answered.
    pub(crate) pings: u64,
}

/// Opens an endpoint, hands its address to `ready`, then answers pingers until `serve_for`
/// has passed or `sessions` sessions have ended.
pub(crate) fn listen(
    library: Option<&Path>,
    options: &ListenOptions,
    ready: impl FnOnce(&ListenerReady) -> std::io::Result<()>,
) -> Result<ListenSummary, ListenError> {
    let lib = Libfabric::load(library)?;
    let mut ep = Endpoint::open(
        &lib,
        &options.provider,
        options.source.as_deref(),
        options.max_message.max(HEADER),
    )?;
    let announce = ListenerReady {
        address: hex::encode(ep.name()?),
        endpoint: ep.describe().clone(),
        max_message: ep.max_message() as u64,
    };
    ready(&announce).map_err(ListenError::Announce)?;
    let deadline = Instant::now() + options.serve_for;
    let mut summary = ListenSummary {
        sessions: 0,
        pings: 0,
    };
    let mut sessions: HashMap<u64, Peer> = HashMap::new();
    let mut done = Vec::new();
    let mut current = Buffer::First;
    ep.post_receive(current, deadline, &mut done)?;
    loop {
        let received = ep.wait_for(
            |c| matches!(c, Completion::Received(b, _) if *b == current),
            "a message",
            deadline,
            &mut done,
        );
        let len = match received {
            Ok(Completion::Received(_, len)) => len,
            Ok(Completion::Sent(_)) => continue,
            Err(FabricError::Timeout { .. }) => return Ok(summary),
            Err(err @ FabricError::Completion { .. }) => {
                // A pinger's mistake (a message too long) or its departure: not the end of
                // the listener. The failed receive is reposted.
                tracing::warn!("a receive failed: {err}");
                ep.post_receive(current, deadline, &mut done)?;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let next = current.other();
        ep.post_receive(next, deadline, &mut done)?;
        let header = read_header(&ep.buffer(current)[..len]);
        let reply = match header {
            Some((Kind::Hello, session)) => {
                let address = ep.buffer(current)[HEADER..len].to_vec();
                match ep.insert(&address) {
                    Ok(peer) => {
                        sessions.insert(session, peer);
                        let max = ep.max_message() as u64;
                        let buffer = ep.buffer(current);
                        write_header(buffer, Kind::Welcome, session);
                        buffer[HEADER..HEADER + 8].copy_from_slice(&max.to_le_bytes());
                        Some((peer, HEADER + 8))
                    }
                    Err(err) => {
                        tracing::warn!("session {session:x}: {err}");
                        None
                    }
                }
            }
            Some((Kind::Ping, session)) => sessions.get(&session).map(|peer| {
                write_header(ep.buffer(current), Kind::Pong, session);
                summary.pings += 1;
                (*peer, len)
            }),
            Some((Kind::Bye, session)) => {
                if sessions.remove(&session).is_some() {
                    summary.sessions += 1;
                }
                None
            }
            Some((Kind::Welcome | Kind::Pong, _)) | None => None,
        };
        if let Some((peer, reply_len)) = reply {
            let reply_deadline = Instant::now() + REPLY_TIMEOUT;
            ep.post_send(current, peer, reply_len, reply_deadline, &mut done)?;
            match ep.wait_for(
                |c| *c == Completion::Sent(current),
                "an answer",
                reply_deadline,
                &mut done,
            ) {
                Ok(_) => {}
                Err(err @ FabricError::Completion { .. }) => {
                    tracing::warn!("an answer failed: {err}");
                }
                Err(err) => return Err(err.into()),
            }
        }
        if options.sessions.is_some_and(|n| summary.sessions >= n) {
            return Ok(summary);
        }
        current = next;
    }
}

/// Why a listener stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ListenError {
    #[error(transparent)]
    Fabric(#[from] FabricError),
    /// Its address could not be handed out (a closed pipe): no pinger can find it.
    #[error("announcing the address: {0}")]
    Announce(std::io::Error),
}

/// What a ping is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct PingOptions {
    /// The libfabric provider (`efa`, `tcp`).
    pub(crate) provider: String,
    /// The listener's address, in hexadecimal.
    pub(crate) peer: String,
    /// The local address to send from; the provider's first interface when `None`.
    pub(crate) source: Option<String>,
    /// Message sizes, each at least [`HEADER`] bytes.
    pub(crate) sizes: Vec<usize>,
    /// Timed round trips per size (fewer for large sizes).
    pub(crate) iterations: u64,
    /// How long any one exchange may take before the peer counts as not answering.
    pub(crate) timeout: Duration,
}

/// The timed round trips for `size`: `iterations`, or fewer so that a size moves at most
/// [`BYTES_PER_SIZE`] each way, but never fewer than [`MIN_ITERATIONS`].
pub(crate) fn iterations_for(size: usize, iterations: u64) -> u64 {
    let budget = BYTES_PER_SIZE / (size.max(1) as u64);
    iterations.min(budget.max(MIN_ITERATIONS)).max(1)
}

/// Pings the listener at `options.peer` with every size; every way it can end is in the
/// report.
pub(crate) fn ping(library: Option<&Path>, options: &PingOptions) -> PingReport {
    let mut report = PingReport {
        peer: options.peer.clone(),
        endpoint: None,
        results: Vec::new(),
        outcome: PingOutcome::Passed,
    };
    if let Err(failure) = run_ping(library, options, &mut report) {
        report.outcome = failure;
    }
    report
}

fn run_ping(
    library: Option<&Path>,
    options: &PingOptions,
    report: &mut PingReport,
) -> Result<(), PingOutcome> {
    let local = |err: FabricError| PingOutcome::LocalFailure {
        code: err.code(),
        message: err.to_string(),
    };
    let address = hex::decode(options.peer.trim()).map_err(|e| PingOutcome::LocalFailure {
        code: None,
        message: format!("the peer address is not hexadecimal: {e}"),
    })?;
    let lib = Libfabric::load(library).map_err(local)?;
    let largest = options.sizes.iter().copied().max().unwrap_or(HEADER);
    let mut ep = Endpoint::open(
        &lib,
        &options.provider,
        options.source.as_deref(),
        largest.max(HEADER + 256),
    )
    .map_err(local)?;
    report.endpoint = Some(ep.describe().clone());
    let own = ep.name().map_err(local)?;
    let peer = ep.insert(&address).map_err(local)?;
    let session = fastrand::u64(..);
    let mut done = Vec::new();
    let timeout = options.timeout;
    let peer_text = short(&options.peer);

    // hello, welcome
    let failed = |err: FabricError, doing: &str| match err {
        FabricError::Timeout { .. } => PingOutcome::NoAnswer {
            message: format!(
                "no completion in {} while {doing} {peer_text}",
                seconds(timeout)
            ),
        },
        FabricError::Completion { code, .. } => PingOutcome::Refused {
            code: Some(code),
            message: format!("{doing} {peer_text}: {err}"),
        },
        other => local(other),
    };
    let deadline = Instant::now() + timeout;
    let hello_len = HEADER + own.len();
    if hello_len > ep.max_message() {
        return Err(local(FabricError::Unsupported(
            "addresses longer than a message",
        )));
    }
    ep.post_receive(Buffer::Second, deadline, &mut done)
        .map_err(|e| failed(e, "waiting for"))?;
    let buffer = ep.buffer(Buffer::First);
    write_header(buffer, Kind::Hello, session);
    buffer[HEADER..hello_len].copy_from_slice(&own);
    exchange(&mut ep, peer, hello_len, deadline, &mut done).map_err(|e| failed(e, "greeting"))?;
    let welcome = ep.buffer(Buffer::Second);
    let peer_max = match read_header(welcome) {
        Some((Kind::Welcome, s)) if s == session => welcome
            .get(HEADER..HEADER + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0),
        _ => {
            return Err(PingOutcome::Refused {
                code: None,
                message: format!("{peer_text} answered the greeting with something else"),
            });
        }
    };
    let limit = ep
        .max_message()
        .min(usize::try_from(peer_max).unwrap_or(usize::MAX));

    for &requested in &options.sizes {
        let size = requested.clamp(HEADER, limit.max(HEADER));
        let iterations = iterations_for(size, options.iterations);
        let mut started = Instant::now();
        for round in 0..WARMUP + iterations {
            if round == WARMUP {
                started = Instant::now();
            }
            let deadline = Instant::now() + timeout;
            ep.post_receive(Buffer::Second, deadline, &mut done)
                .map_err(|e| failed(e, "waiting for"))?;
            write_header(ep.buffer(Buffer::First), Kind::Ping, session);
            let len = exchange(&mut ep, peer, size, deadline, &mut done)
                .map_err(|e| failed(e, &format!("{size}-byte ping {} of", round + 1)))?;
            match read_header(&ep.buffer(Buffer::Second)[..len.min(HEADER)]) {
                Some((Kind::Pong, s)) if s == session && len == size => {}
                _ => {
                    return Err(PingOutcome::Refused {
                        code: None,
                        message: format!(
                            "{peer_text} answered a {size}-byte ping with {len} bytes that are \
                             not its pong"
                        ),
                    });
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64() * 1e6;
        let rounds = iterations as f64;
        report.results.push(SizeResult {
            size: size as u64,
            iterations,
            latency_us: elapsed / rounds / 2.0,
            bandwidth_mb_s: 2.0 * size as f64 * rounds / elapsed,
        });
    }

    // A listener that misses the goodbye forgets the session when it stops: not a failure.
    write_header(ep.buffer(Buffer::First), Kind::Bye, session);
    let deadline = Instant::now() + timeout;
    if ep
        .post_send(Buffer::First, peer, HEADER, deadline, &mut done)
        .is_ok()
    {
        let _ = ep.wait_for(
            |c| *c == Completion::Sent(Buffer::First),
            "the goodbye",
            deadline,
            &mut done,
        );
    }
    Ok(())
}

/// Sends `len` bytes of the first buffer to `peer` and waits for the send and for the answer
/// in the second buffer (whose receive is already posted); the answer's length.
fn exchange(
    ep: &mut Endpoint<'_>,
    peer: Peer,
    len: usize,
    deadline: Instant,
    done: &mut Vec<Completion>,
) -> Result<usize, FabricError> {
    ep.post_send(Buffer::First, peer, len, deadline, done)?;
    ep.wait_for(
        |c| *c == Completion::Sent(Buffer::First),
        "a send",
        deadline,
        done,
    )?;
    match ep.wait_for(
        |c| matches!(c, Completion::Received(Buffer::Second, _)),
        "an answer",
        deadline,
        done,
    )? {
        Completion::Received(_, len) => Ok(len),
        Completion::Sent(_) => Err(FabricError::Busy),
    }
}

/// `5 s`, `2.5 s`.
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

/// An address short enough for a message: its first 16 hexadecimal digits.
fn short(address: &str) -> String {
    let address = address.trim();
    if address.chars().count() > 16 {
        format!("peer {}…", address.chars().take(16).collect::<String>())
    } else {
        format!("peer {address}")
    }
}

impl FabricError {
    /// The negative fi_errno behind the error, when there is one.
    pub(crate) fn code(&self) -> Option<i32> {
        match self {
            FabricError::Call { code, .. } | FabricError::Completion { code, .. } => Some(*code),
            FabricError::NoProvider { .. } => Some(-(rayefa_libfabric_sys::FI_ENODATA as i32)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
