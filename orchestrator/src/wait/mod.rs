//! Waiting for readiness: every node's agent is polled concurrently until all are ready, one
//! fails, or time runs out.
//!
//! One HTTP client serves every request (connections are kept between rounds), a semaphore
//! bounds the requests in flight, each request has its own timeout, and a node whose request
//! failed is asked again after a growing, jittered wait. The provider is asked again now and
//! then whether silent nodes still exist, so that a node that died is reported as such rather
//! than waited for until the timeout.

pub(crate) mod client;
pub(crate) mod node;
#[cfg(test)]
mod scale_tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use self::client::{AgentClient, PollError};
use self::node::{NodeWatch, Verdict};
use crate::provider::{Lifecycle, NodeRecord, Provider};
use rayefa_cluster::settings::PollPolicy;

/// Receives what happens while the orchestrator waits.
pub(crate) trait Progress {
    /// A node's state may have changed.
    fn update(&mut self, node: &NodeWatch);
    /// A line for the person watching ("launching 2 workers of type cpu").
    fn message(&mut self, text: &str);
    /// Called between rounds, for elapsed times.
    fn tick(&mut self) {}
    /// Waiting is over; clears the live view.
    fn finish(&mut self) {}
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// Every node is ready.
    Ready,
    /// A node failed (its step failed, it became unreachable or it stopped).
    Failed,
    /// The deadline came first.
    TimedOut,
}

/// How often silent nodes are looked up at the provider.
const RELIST_EVERY: Duration = Duration::from_secs(2);

/// How long a just-launched node may be missing from the provider's listings before it counts
/// as gone: EC2's DescribeInstances may leave out an instance RunInstances returned for a
/// while (eventual consistency; AWS documents no bound, minutes have been seen).
pub(crate) const LISTING_GRACE: Duration = Duration::from_secs(180);

/// Polls `nodes` until every one is ready, one fails, or `deadline`.
pub(crate) async fn until_ready(
    provider: &dyn Provider,
    client: &AgentClient,
    watches: &mut [NodeWatch],
    policy: &PollPolicy,
    deadline: Instant,
    progress: &mut dyn Progress,
) -> WaitOutcome {
    let semaphore = Arc::new(Semaphore::new(policy.concurrency));
    let mut last_relist = Instant::now();
    loop {
        let now = Instant::now();
        let due: Vec<usize> = watches
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.verdict.is_final() && w.next_poll <= now)
            .map(|(i, _)| i)
            .collect();
        let answers = poll(client, &semaphore, watches, &due).await;
        let answered_at = Instant::now();
        for (index, answer) in answers {
            let watch = &mut watches[index];
            watch.observe(
                answer,
                answered_at,
                policy.unreachable_grace,
                policy.interval,
            );
            progress.update(watch);
        }

        let silent = watches
            .iter()
            .any(|w| !w.verdict.is_final() && w.last_error.is_some());
        if silent && last_relist.elapsed() >= RELIST_EVERY {
            last_relist = Instant::now();
            mark_gone(provider, watches, progress).await;
            read_published(provider, watches).await;
            for watch in watches.iter().filter(|w| w.published.is_some()) {
                progress.update(watch);
            }
        }

        if watches.iter().any(|w| w.verdict.is_failure()) {
            return WaitOutcome::Failed;
        }
        if watches.iter().all(|w| w.verdict == Verdict::Ready) {
            return WaitOutcome::Ready;
        }
        let now = Instant::now();
        if now >= deadline {
            return WaitOutcome::TimedOut;
        }
        let next = watches
            .iter()
            .filter(|w| !w.verdict.is_final())
            .map(|w| w.next_poll)
            .min()
            .unwrap_or(now + policy.interval)
            .min(deadline)
            .max(now + Duration::from_millis(20));
        progress.tick();
        tokio::time::sleep_until(next.into()).await;
    }
}

/// Polls every node once (for `status`).
pub(crate) async fn once(client: &AgentClient, watches: &mut [NodeWatch], policy: &PollPolicy) {
    let semaphore = Arc::new(Semaphore::new(policy.concurrency));
    let due: Vec<usize> = watches
        .iter()
        .enumerate()
        .filter(|(_, w)| !w.verdict.is_final())
        .map(|(i, _)| i)
        .collect();
    for (index, answer) in poll(client, &semaphore, watches, &due).await {
        let now = Instant::now();
        watches[index].observe(answer, now, policy.unreachable_grace, policy.interval);
    }
}

/// Waits until the agent at `watch` answers `/healthz`, it stops, or `deadline`.
pub(crate) async fn until_healthy(
    provider: &dyn Provider,
    client: &AgentClient,
    watch: &mut NodeWatch,
    policy: &PollPolicy,
    deadline: Instant,
    progress: &mut dyn Progress,
) -> WaitOutcome {
    let Some(address) = watch.record.agent_address else {
        return WaitOutcome::TimedOut;
    };
    let mut failures = 0u32;
    loop {
        match client.healthz(address).await {
            Ok(()) => return WaitOutcome::Ready,
            Err(error) => watch.last_error = Some(error),
        }
        failures += 1;
        if failures.is_multiple_of(4) {
            mark_gone(provider, std::slice::from_mut(watch), progress).await;
            if watch.verdict.is_failure() {
                return WaitOutcome::Failed;
            }
            // An agent out of network reach that publishes its state runs all the same.
            read_published(provider, std::slice::from_mut(watch)).await;
            if watch.published.is_some() {
                progress.update(watch);
                return if watch.verdict.is_failure() {
                    WaitOutcome::Failed
                } else {
                    WaitOutcome::Ready
                };
            }
        }
        if Instant::now() >= deadline {
            return WaitOutcome::TimedOut;
        }
        progress.tick();
        tokio::time::sleep(policy.interval.min(Duration::from_millis(250))).await;
    }
}

/// Asks the nodes at `due` for their status, at most `semaphore`'s permits at once.
async fn poll(
    client: &AgentClient,
    semaphore: &Arc<Semaphore>,
    watches: &[NodeWatch],
    due: &[usize],
) -> Vec<(usize, Result<rayefa_wire::StatusDocument, PollError>)> {
    let mut requests = JoinSet::new();
    for &index in due {
        let client = client.clone();
        let semaphore = Arc::clone(semaphore);
        let address = watches[index].record.agent_address;
        requests.spawn(async move {
            let Some(address) = address else {
                return (
                    index,
                    Err(PollError::Connect("the node has no address yet".to_owned())),
                );
            };
            // The semaphore is never closed, so acquiring only waits.
            let _permit = semaphore.acquire_owned().await;
            (index, client.status(address).await)
        });
    }
    let mut answers = Vec::with_capacity(due.len());
    while let Some(joined) = requests.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
    }
    answers
}

/// Takes in what the nodes whose agents cannot be reached published through the provider
/// (EC2 tags): the orchestrator may run where the nodes' private addresses are out of reach.
pub(crate) async fn read_published(provider: &dyn Provider, watches: &mut [NodeWatch]) {
    let silent: Vec<NodeRecord> = watches
        .iter()
        .filter(|w| !w.verdict.is_final() && w.document.is_none() && w.last_error.is_some())
        .map(|w| w.record.clone())
        .collect();
    if silent.is_empty() {
        return;
    }
    let Ok(published) = provider.published(&silent).await else {
        return;
    };
    for watch in watches.iter_mut() {
        if let Some(state) = published.get(&watch.record.id) {
            watch.observe_published(state.clone());
        }
    }
}

/// Marks nodes the provider no longer runs.
async fn mark_gone(
    provider: &dyn Provider,
    watches: &mut [NodeWatch],
    progress: &mut dyn Progress,
) {
    let Ok(listed) = provider.list().await else {
        return;
    };
    let now = Instant::now();
    for watch in watches.iter_mut().filter(|w| !w.verdict.is_failure()) {
        let found: Option<&NodeRecord> = listed.iter().find(|n| n.id == watch.record.id);
        match found {
            Some(NodeRecord {
                lifecycle: Lifecycle::Stopped { why },
                ..
            }) => watch.gone(why.clone()),
            None => {
                watch.missing_from_listing(now, LISTING_GRACE);
                if !watch.verdict.is_failure() {
                    continue;
                }
            }
            Some(alive) => {
                watch.seen_listed();
                // A cloud node may have gained its address since it was launched.
                if watch.record.agent_address.is_none() {
                    watch.record = alive.clone();
                }
                continue;
            }
        }
        progress.update(watch);
    }
}
