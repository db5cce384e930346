//! Checking the fabric between a cluster's nodes, pair by pair, through their agents'
//! control surfaces (docs/check.md). Provider-neutral: the nodes come in as [`CheckNode`]s.
//!
//! Each pair runs in its round ([`schedule`]): the listening node's agent starts a listener
//! for one session and answers its fabric address; the pinging node's agent pings it and
//! answers the figures. The pairs of a round run at once; a round starts when the last pair
//! of the one before has ended. Figures that stand out are marked ([`outliers`]); a failed
//! pair gets its likely cause in words ([`cause`]).

pub(crate) mod cause;
mod control;
pub(crate) mod outliers;
pub(crate) mod schedule;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rayefa_wire::{FabricEndpoint, ListenRequest, PingOutcome, PingRequest, SizeResult};
use serde::Serialize;

use self::cause::PairOutcome;
use self::control::{ControlClient, ControlError};
use self::schedule::{Pair, PairMode};

/// The largest message a listener takes unless asked for more (the agent's default).
const LISTENER_DEFAULT_MAX: u64 = 4 << 20;

/// A node as the check sees it.
#[derive(Debug, Clone)]
pub(crate) struct CheckNode {
    /// How it is named in the report (the provider's node id).
    pub(crate) name: String,
    /// Where its agent answers HTTP.
    pub(crate) agent: Option<SocketAddr>,
    /// The local address its fabric endpoints bind to (IP providers such as `tcp`); `None`
    /// lets the provider choose (EFA).
    pub(crate) fabric_source: Option<String>,
    /// Why it cannot take part, when the provider already knows (stopped, pending).
    pub(crate) down: Option<String>,
}

/// What to test.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The libfabric provider (`efa`, `tcp`).
    pub(crate) provider: String,
    /// Which pairs.
    pub(crate) mode: PairMode,
    /// Message sizes in bytes.
    pub(crate) sizes: Vec<u64>,
    /// Timed round trips for small sizes (the agent's default when absent).
    pub(crate) iterations: Option<u64>,
    /// How long a ping waits for any one completion.
    pub(crate) timeout: Duration,
}

impl Plan {
    /// The most a whole ping may take: the agent's own limit for its child (four timeouts and
    /// 300 s) and a margin, so that the agent's answer arrives before our give-up.
    fn ping_limit(&self) -> Duration {
        self.timeout * 4 + Duration::from_secs(310)
    }
}

/// One pair's result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PairReport {
    /// The pinging node.
    pub(crate) from: String,
    /// The listening node.
    pub(crate) to: String,
    /// The round it ran in, from 1.
    pub(crate) round: usize,
    /// How it ended.
    #[serde(flatten)]
    pub(crate) outcome: PairOutcome,
    /// For a failed pair, its likely cause in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cause: Option<String>,
    /// The pinging side's endpoint, once it was opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) endpoint: Option<FabricEndpoint>,
    /// The figures, one entry per size.
    pub(crate) results: Vec<Figures>,
    /// How long the pair took, listener start included.
    pub(crate) seconds: f64,
}

/// The figures of one size, and why they stand out if they do.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figures {
    /// Size, iterations, latency and bandwidth, as the ping measured them.
    #[serde(flatten)]
    pub(crate) measured: SizeResult,
    /// Why this pair's figure of this size is an outlier (see [`outliers`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) outlier: Option<String>,
}

/// Tests every pair of `nodes` that `plan` asks for, authenticating with `secret`; calls
/// `after_round` with each round's number, the number of rounds and its pairs as they end.
pub(crate) async fn run(
    nodes: &[CheckNode],
    plan: &Plan,
    secret: &str,
    mut after_round: impl FnMut(usize, usize, &[PairReport]),
) -> Result<Vec<PairReport>, String> {
    let client = ControlClient::new(secret, plan.timeout.max(Duration::from_secs(1)))?;
    let rounds = schedule::rounds(nodes.len(), plan.mode);
    let total = rounds.len();
    let mut reports = Vec::new();
    for (index, round) in rounds.into_iter().enumerate() {
        let mut running = tokio::task::JoinSet::new();
        for pair in round {
            let (client, plan) = (client.clone(), plan.clone());
            let (from, to) = (nodes[pair.from].clone(), nodes[pair.to].clone());
            running.spawn(async move { test_pair(&client, &plan, &from, &to, pair).await });
        }
        let mut ended = Vec::new();
        while let Some(done) = running.join_next().await {
            let (pair, mut report) = done.map_err(|e| format!("a pair's test failed: {e}"))?;
            report.round = index + 1;
            ended.push((pair, report));
        }
        ended.sort_by_key(|(pair, _)| *pair);
        let ended: Vec<PairReport> = ended.into_iter().map(|(_, r)| r).collect();
        after_round(index + 1, total, &ended);
        reports.extend(ended);
    }
    mark_outliers(&mut reports);
    Ok(reports)
}

/// Listens on `to`, pings it from `from`.
async fn test_pair(
    client: &ControlClient,
    plan: &Plan,
    from: &CheckNode,
    to: &CheckNode,
    pair: Pair,
) -> (Pair, PairReport) {
    let started = Instant::now();
    let (outcome, endpoint, results) = exchange(client, plan, from, to).await;
    let report = PairReport {
        cause: cause::cause(&from.name, &to.name, &outcome, &plan.provider, plan.timeout),
        from: from.name.clone(),
        to: to.name.clone(),
        round: 0,
        outcome,
        endpoint,
        results: results
            .into_iter()
            .map(|measured| Figures {
                measured,
                outlier: None,
            })
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
    };
    (pair, report)
}

async fn exchange(
    client: &ControlClient,
    plan: &Plan,
    from: &CheckNode,
    to: &CheckNode,
) -> (PairOutcome, Option<FabricEndpoint>, Vec<SizeResult>) {
    let failed = |outcome| (outcome, None, Vec::new());
    let agent_of = |node: &CheckNode| match (&node.down, node.agent) {
        (Some(why), _) => Err(PairOutcome::AgentUnreachable {
            node: node.name.clone(),
            message: why.clone(),
        }),
        (None, None) => Err(PairOutcome::AgentUnreachable {
            node: node.name.clone(),
            message: "the provider knows no address for it yet".into(),
        }),
        (None, Some(agent)) => Ok(agent),
    };
    let (listener_agent, pinger_agent) = match (agent_of(to), agent_of(from)) {
        (Ok(l), Ok(p)) => (l, p),
        (Err(outcome), _) | (_, Err(outcome)) => return failed(outcome),
    };
    let largest = plan.sizes.iter().copied().max().unwrap_or(0);
    let listen = ListenRequest {
        provider: plan.provider.clone(),
        source: to.fabric_source.clone(),
        // A listener serves one pinger; one that is never greeted ends by itself then.
        serve_for_secs: Some(plan.ping_limit().as_secs().min(3600)),
        max_message: (largest > LISTENER_DEFAULT_MAX).then_some(largest),
        sessions: Some(1),
    };
    let ready = match client.listen(listener_agent, &listen).await {
        Ok(ready) => ready,
        Err(error) => return failed(control_outcome(error, &to.name)),
    };
    let ping = PingRequest {
        provider: plan.provider.clone(),
        address: ready.address,
        source: from.fabric_source.clone(),
        sizes: Some(plan.sizes.clone()),
        iterations: plan.iterations,
        timeout_secs: Some(plan.timeout.as_secs_f64()),
    };
    let report = match client.ping(pinger_agent, &ping, plan.ping_limit()).await {
        Ok(report) => report,
        Err(error) => return failed(control_outcome(error, &from.name)),
    };
    let outcome = match report.outcome {
        PingOutcome::Passed => PairOutcome::Passed,
        PingOutcome::NoAnswer { message } => PairOutcome::NoAnswer { message },
        PingOutcome::Refused { message, .. } => PairOutcome::Refused { message },
        PingOutcome::LocalFailure { message, .. } => PairOutcome::LocalFailure {
            node: from.name.clone(),
            message,
        },
    };
    (outcome, report.endpoint, report.results)
}

/// What a control request's failure at `node` means for the pair.
fn control_outcome(error: ControlError, node: &str) -> PairOutcome {
    let node = node.to_owned();
    match error {
        ControlError::Unreachable(message) => PairOutcome::AgentUnreachable { node, message },
        ControlError::Disabled => PairOutcome::ControlDisabled { node },
        ControlError::SecretRefused => PairOutcome::SecretRefused { node },
        ControlError::ListenerFailed(message) => PairOutcome::LocalFailure { node, message },
        error @ (ControlError::NoControl | ControlError::Agent(_)) => PairOutcome::AgentError {
            node,
            message: error.to_string(),
        },
    }
}

/// Marks the figures of passed pairs that stand out (see [`outliers`]).
fn mark_outliers(reports: &mut [PairReport]) {
    let mut places = Vec::new();
    let mut samples = Vec::new();
    for (r, report) in reports.iter().enumerate() {
        if !report.outcome.passed() {
            continue;
        }
        for (f, figures) in report.results.iter().enumerate() {
            places.push((r, f));
            samples.push(outliers::Sample {
                size: figures.measured.size,
                latency_us: figures.measured.latency_us,
                bandwidth_mb_s: figures.measured.bandwidth_mb_s,
            });
        }
    }
    for ((r, f), mark) in places.into_iter().zip(outliers::mark(&samples)) {
        reports[r].results[f].outlier = mark;
    }
}
