//! The polling benchmark's entry points: the orchestrator's real poller (`wait::once` for a
//! full round, `wait::until_ready` for waiting, the shared HTTP client, the default poll
//! policy) over agents the benchmark started. `benches/polling.rs` prints the figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rayefa_wire::Role;

use crate::provider::{LaunchRequest, Lifecycle, NodeRecord, Provider, ProviderError, Termination};
use crate::wait::Progress;
use crate::wait::client::AgentClient;
use crate::wait::node::{NodeWatch, Verdict};
use crate::wait::{self, WaitOutcome};
use rayefa_cluster::settings::PollPolicy;

/// One full round over every agent.
#[derive(Debug, Clone)]
pub struct Round {
    /// From the first request to the last answer.
    pub wall: Duration,
    /// User and system CPU time of this process during the round.
    pub cpu: Duration,
    /// Agents that answered with a status document.
    pub answered: usize,
}

/// When one node's readiness was seen.
#[derive(Debug, Clone)]
pub struct NodeReady {
    /// The agent's address.
    pub agent: SocketAddr,
    /// When the poller reported the node ready, in ms since the Unix epoch.
    pub reported_unix_ms: u64,
    /// When the node's last step finished by its own status document, in ms since the epoch.
    pub ready_unix_ms: Option<u64>,
}

/// How a wait until every node is ready went.
#[derive(Debug, Clone)]
pub struct ReadyReport {
    /// `ready`, `failed` or `timed out`.
    pub outcome: String,
    /// Every node reported ready, in the order they were.
    pub nodes: Vec<NodeReady>,
    /// Rounds the poller made.
    pub rounds: u32,
}

/// The orchestrator's poller over a fixed set of agents, on a runtime like `rayefa`'s own.
#[derive(Debug)]
pub struct Poller {
    runtime: tokio::runtime::Runtime,
    client: AgentClient,
    watches: Vec<NodeWatch>,
    policy: PollPolicy,
}

impl Poller {
    /// A poller of `agents` with the default poll policy, rounds every `interval`.
    pub fn new(agents: &[SocketAddr], interval: Duration) -> Result<Self, String> {
        let policy = PollPolicy {
            interval,
            ..PollPolicy::default()
        };
        // As `rayefa`'s main: a multi-threaded runtime with one worker per core.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("async runtime: {e}"))?;
        let client = AgentClient::new(policy.request_timeout)?;
        let now = Instant::now();
        let watches = agents
            .iter()
            .enumerate()
            .map(|(i, agent)| NodeWatch::new(record(i, *agent), now))
            .collect();
        Ok(Self {
            runtime,
            client,
            watches,
            policy,
        })
    }

    /// Polls every agent once, as `rayefa status` does.
    pub fn round(&mut self) -> Round {
        let cpu_before = cpu_time();
        let started = Instant::now();
        self.runtime
            .block_on(wait::once(&self.client, &mut self.watches, &self.policy));
        let wall = started.elapsed();
        Round {
            wall,
            cpu: cpu_time().saturating_sub(cpu_before),
            answered: self
                .watches
                .iter()
                .filter(|w| w.last_error.is_none() && w.document.is_some())
                .count(),
        }
    }

    /// Waits as `rayefa up` does until every agent is ready, one fails, or `timeout`.
    pub fn until_ready(&mut self, timeout: Duration) -> ReadyReport {
        let provider = Known(self.watches.iter().map(|w| w.record.clone()).collect());
        let mut seen = Seen::default();
        let deadline = Instant::now() + timeout;
        let outcome = self.runtime.block_on(wait::until_ready(
            &provider,
            &self.client,
            &mut self.watches,
            &self.policy,
            deadline,
            &mut seen,
        ));
        let mut nodes: Vec<NodeReady> = seen.ready.into_values().collect();
        nodes.sort_by_key(|n| n.reported_unix_ms);
        ReadyReport {
            outcome: match outcome {
                WaitOutcome::Ready => "ready",
                WaitOutcome::Failed => "failed",
                WaitOutcome::TimedOut => "timed out",
            }
            .to_owned(),
            nodes,
            rounds: seen.rounds,
        }
    }
}

fn record(index: usize, agent: SocketAddr) -> NodeRecord {
    NodeRecord {
        id: format!("bench-{index}"),
        node_type: "worker".to_owned(),
        role: Role::Worker,
        agent_address: Some(agent),
        private_address: Some(agent.ip().to_string()),
        lifecycle: Lifecycle::Running,
        launched_at_ms: Some(unix_ms()),
    }
}

/// The provider's part in waiting is to say whether silent nodes still exist; the benchmark's
/// agents all exist, as this answers. It launches and terminates nothing.
struct Known(Vec<NodeRecord>);

#[async_trait]
impl Provider for Known {
    async fn launch(&self, _request: LaunchRequest<'_>) -> Result<Vec<NodeRecord>, ProviderError> {
        Err(ProviderError::Failed(
            "the benchmark's agents are started by the benchmark".to_owned(),
        ))
    }

    async fn list(&self) -> Result<Vec<NodeRecord>, ProviderError> {
        Ok(self.0.clone())
    }

    async fn terminate(&self, _nodes: &[NodeRecord]) -> Result<Vec<Termination>, ProviderError> {
        Err(ProviderError::Failed(
            "the benchmark's agents are stopped by the benchmark".to_owned(),
        ))
    }
}

/// A progress view that notes when each node is first reported ready, and counts rounds.
#[derive(Default)]
struct Seen {
    ready: BTreeMap<String, NodeReady>,
    rounds: u32,
}

impl Progress for Seen {
    fn update(&mut self, node: &NodeWatch) {
        if node.verdict != Verdict::Ready || self.ready.contains_key(&node.record.id) {
            return;
        }
        let Some(agent) = node.record.agent_address else {
            return;
        };
        let ready_unix_ms = node
            .document
            .as_ref()
            .and_then(|d| d.steps.iter().filter_map(|s| s.finished_at_ms).max());
        self.ready.insert(
            node.record.id.clone(),
            NodeReady {
                agent,
                reported_unix_ms: unix_ms(),
                ready_unix_ms,
            },
        );
    }

    fn message(&mut self, _text: &str) {}

    fn tick(&mut self) {
        self.rounds += 1;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// User and system CPU time of this process so far.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |usage| {
        let micros = |t: nix::sys::time::TimeVal| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                + u64::try_from(t.tv_usec()).unwrap_or(0)
        };
        Duration::from_micros(micros(usage.user_time()) + micros(usage.system_time()))
    })
}
