//! What the orchestrator knows about one node while it waits: the last status document, how
//! long the node has been silent, and the verdict.

use std::time::{Duration, Instant};

use rayefa_wire::{NodeState, StatusDocument};

use super::client::PollError;
use crate::provider::{Lifecycle, NodeRecord, Published};

/// Where a node stands from the orchestrator's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not final yet.
    Waiting,
    /// Its agent reports every step satisfied.
    Ready,
    /// Its agent reports a failed step.
    Failed {
        /// The step that failed.
        step: String,
        /// Its error.
        reason: String,
    },
    /// It answered before, then stayed silent longer than the grace period.
    Unreachable {
        /// How long it has been silent.
        silent_for: Duration,
        /// The last error.
        error: String,
    },
    /// The provider says the node no longer runs.
    Gone {
        /// How the provider knows.
        why: String,
    },
}

impl Verdict {
    /// True once waiting longer cannot change it.
    pub(crate) fn is_final(&self) -> bool {
        !matches!(self, Verdict::Waiting)
    }

    /// True for the verdicts that make `up` exit 1.
    pub(crate) fn is_failure(&self) -> bool {
        matches!(
            self,
            Verdict::Failed { .. } | Verdict::Unreachable { .. } | Verdict::Gone { .. }
        )
    }
}

/// One node under watch.
#[derive(Debug, Clone)]
pub(crate) struct NodeWatch {
    /// The provider's view of the node.
    pub(crate) record: NodeRecord,
    /// The latest status document, if the agent ever answered.
    pub(crate) document: Option<StatusDocument>,
    /// The latest request's error, if it failed.
    pub(crate) last_error: Option<PollError>,
    /// What the node published through the provider (EC2 tags) while its agent could not be
    /// reached over the network; the verdict follows it then.
    pub(crate) published: Option<Published>,
    /// Where the node stands.
    pub(crate) verdict: Verdict,
    /// Time from launch to ready, once ready.
    pub(crate) ready_after: Option<Duration>,
    /// When watching began.
    pub(crate) watched_since: Instant,
    silent_since: Option<Instant>,
    /// Whether a provider listing has shown the node. EC2 is eventually consistent: an
    /// instance RunInstances just returned may be missing from DescribeInstances for a while.
    listed: bool,
    /// Since when listings have not shown a node that was never listed.
    unlisted_since: Option<Instant>,
    answered: bool,
    failures: u32,
    pub(crate) next_poll: Instant,
}

impl NodeWatch {
    /// Starts watching `record`, a node the provider listed.
    pub(crate) fn new(record: NodeRecord, now: Instant) -> Self {
        Self::watch(record, now, true)
    }

    /// Starts watching a node the provider has just launched and may not list yet.
    pub(crate) fn launched(record: NodeRecord, now: Instant) -> Self {
        Self::watch(record, now, false)
    }

    fn watch(record: NodeRecord, now: Instant, listed: bool) -> Self {
        let verdict = match &record.lifecycle {
            Lifecycle::Stopped { why } => Verdict::Gone { why: why.clone() },
            Lifecycle::Pending | Lifecycle::Running => Verdict::Waiting,
        };
        Self {
            record,
            document: None,
            last_error: None,
            published: None,
            verdict,
            ready_after: None,
            watched_since: now,
            silent_since: None,
            listed,
            unlisted_since: None,
            answered: false,
            failures: 0,
            next_poll: now,
        }
    }

    /// Takes in an answer (or the lack of one) to a status request made at `now`.
    pub(crate) fn observe(
        &mut self,
        answer: Result<StatusDocument, PollError>,
        now: Instant,
        grace: Duration,
        interval: Duration,
    ) {
        match answer {
            Ok(document) => {
                self.answered = true;
                self.silent_since = None;
                self.failures = 0;
                self.last_error = None;
                self.next_poll = now + interval;
                self.verdict = match &document.state {
                    NodeState::Ready => {
                        self.ready_after = Some(self.time_to_ready(&document, now));
                        Verdict::Ready
                    }
                    NodeState::Failed { step, reason } => Verdict::Failed {
                        step: step.clone(),
                        reason: reason.clone(),
                    },
                    NodeState::Starting
                    | NodeState::Bootstrapping
                    | NodeState::Rebooting { .. } => Verdict::Waiting,
                };
                self.document = Some(document);
            }
            Err(error) => {
                self.failures = self.failures.saturating_add(1);
                let silent_since = *self.silent_since.get_or_insert(now);
                // A node that never answered is still booting: only the overall timeout
                // limits it. One that answered and went quiet gets the grace period.
                let rebooting = self
                    .document
                    .as_ref()
                    .is_some_and(|d| matches!(d.state, NodeState::Rebooting { .. }));
                if self.answered && !rebooting && now.duration_since(silent_since) > grace {
                    self.verdict = Verdict::Unreachable {
                        silent_for: now.duration_since(silent_since),
                        error: error.to_string(),
                    };
                }
                self.last_error = Some(error);
                self.next_poll = now + backoff(interval, self.failures);
            }
        }
    }

    /// Takes in what a node whose agent cannot be reached published through the provider.
    /// An answer over HTTP, when one comes, wins over it.
    pub(crate) fn observe_published(&mut self, published: Published) {
        if self.verdict.is_final() || self.document.is_some() {
            return;
        }
        self.verdict = match published.state.as_str() {
            "ready" => Verdict::Ready,
            "failed" => Verdict::Failed {
                step: published
                    .step
                    .as_deref()
                    .map(|s| s.split(':').next().unwrap_or(s).to_owned())
                    .unwrap_or_default(),
                reason: published.error.clone().unwrap_or_default(),
            },
            _ => Verdict::Waiting,
        };
        self.published = Some(published);
    }

    /// How the orchestrator hears from the node: `agent` (HTTP), `tags` (published through
    /// the provider) or `-` (not yet).
    pub(crate) fn via(&self) -> &'static str {
        match (&self.document, &self.published) {
            (Some(_), _) => "agent",
            (None, Some(_)) => "tags",
            (None, None) => "-",
        }
    }

    /// A provider listing showed the node.
    pub(crate) fn seen_listed(&mut self) {
        self.listed = true;
        self.unlisted_since = None;
    }

    /// A provider listing at `now` did not show the node. A node listed before is gone; one
    /// never listed (just launched) is gone only once listings have missed it for `grace`.
    pub(crate) fn missing_from_listing(&mut self, now: Instant, grace: Duration) {
        if self.listed {
            self.gone("the provider no longer lists it".to_owned());
            return;
        }
        let since = *self.unlisted_since.get_or_insert(now);
        let missing_for = now.duration_since(since);
        if missing_for >= grace {
            self.gone(format!(
                "the provider has not listed it in the {}s since it was launched",
                missing_for.as_secs()
            ));
        }
    }

    /// The provider says the node stopped.
    pub(crate) fn gone(&mut self, why: String) {
        if !self.verdict.is_failure() {
            self.verdict = Verdict::Gone { why };
        }
    }

    /// Launch to the last step's end by the agent's clock, or to now by ours.
    fn time_to_ready(&self, document: &StatusDocument, now: Instant) -> Duration {
        let finished = document.steps.iter().filter_map(|s| s.finished_at_ms).max();
        match (self.record.launched_at_ms, finished) {
            (Some(launched), Some(finished)) if finished >= launched => {
                Duration::from_millis(finished - launched)
            }
            _ => now.duration_since(self.watched_since),
        }
    }

    /// The current step's name and state, or what is known without a document.
    pub(crate) fn activity(&self) -> String {
        match (&self.verdict, &self.document) {
            (Verdict::Ready, _) => "ready".to_owned(),
            (Verdict::Failed { step, .. }, _) => format!("{step}: failed"),
            (Verdict::Unreachable { silent_for, .. }, _) => {
                format!("unreachable for {}s", silent_for.as_secs())
            }
            (Verdict::Gone { .. }, _) => "stopped".to_owned(),
            (Verdict::Waiting, Some(document)) => match document.current_step() {
                Some(step) => match &step.activity {
                    Some(activity) => format!("{}: {}", step.name, activity),
                    None => format!("{}: {}", step.name, step.state.label()),
                },
                None => "starting".to_owned(),
            },
            (Verdict::Waiting, None) => match &self.published {
                Some(published) => published
                    .step
                    .clone()
                    .unwrap_or_else(|| published.state.clone()),
                None => "waiting for the agent".to_owned(),
            },
        }
    }
}

/// The wait after `failures` failed requests in a row: the poll interval doubled per
/// failure, at most 16 times the interval and 15 s, with ±20 % jitter so that a thousand
/// nodes launched together do not stay in step.
fn backoff(interval: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1)).min(16);
    let base = (interval * factor)
        .min(Duration::from_secs(15))
        .max(interval);
    base.mul_f64(0.8 + fastrand::f64() * 0.4)
}

#[cfg(test)]
mod tests {
    use rayefa_wire::{NodeFacts, NodeIdentity, Role};

    use super::*;

    fn record() -> NodeRecord {
        NodeRecord {
            id: "w-0".into(),
            node_type: "w".into(),
            role: Role::Worker,
            agent_address: Some("127.0.0.1:1".parse().expect("addr")),
            private_address: Some("127.0.0.1".into()),
            lifecycle: Lifecycle::Running,
            launched_at_ms: Some(1_000),
        }
    }

    fn document(state: NodeState) -> StatusDocument {
        StatusDocument {
            api: 1,
            node: NodeIdentity {
                cluster_name: "c".into(),
                role: Role::Worker,
                node_type: "w".into(),
            },
            facts: NodeFacts::default(),
            state,
            steps: vec![],
            warnings: vec![],
            generated_at_ms: 0,
        }
    }

    #[test]
    fn a_node_that_never_answered_waits_and_one_that_went_silent_is_unreachable() {
        let start = Instant::now();
        let grace = Duration::from_secs(10);
        let interval = Duration::from_secs(1);
        let refused = || Err(PollError::Connect("refused".into()));
        let mut node = NodeWatch::new(record(), start);
        node.observe(refused(), start + Duration::from_secs(100), grace, interval);
        assert_eq!(
            node.verdict,
            Verdict::Waiting,
            "booting nodes are not unreachable"
        );

        node.observe(
            Ok(document(NodeState::Bootstrapping)),
            start,
            grace,
            interval,
        );
        node.observe(refused(), start + Duration::from_secs(1), grace, interval);
        node.observe(refused(), start + Duration::from_secs(5), grace, interval);
        assert_eq!(node.verdict, Verdict::Waiting, "within the grace period");
        node.observe(refused(), start + Duration::from_secs(12), grace, interval);
        assert!(
            matches!(&node.verdict, Verdict::Unreachable { silent_for, .. } if *silent_for == Duration::from_secs(11)),
            "{:?}",
            node.verdict
        );
    }

    #[test]
    fn ready_and_failed_documents_are_final() {
        let now = Instant::now();
        let mut node = NodeWatch::new(record(), now);
        node.observe(
            Ok(document(NodeState::Failed {
                step: "setup-commands".into(),
                reason: "exit 1".into(),
            })),
            now,
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(node.verdict.is_failure());
        assert_eq!(node.activity(), "setup-commands: failed");
        let mut node = NodeWatch::new(record(), now);
        node.observe(
            Ok(document(NodeState::Ready)),
            now,
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert_eq!(node.verdict, Verdict::Ready);
        assert!(node.ready_after.is_some());
    }

    #[test]
    fn a_launched_node_missing_from_listings_is_gone_only_after_the_grace_period() {
        let start = Instant::now();
        let grace = Duration::from_secs(120);
        let mut launched = NodeWatch::launched(record(), start);
        launched.missing_from_listing(start, grace);
        launched.missing_from_listing(start + Duration::from_secs(119), grace);
        assert_eq!(
            launched.verdict,
            Verdict::Waiting,
            "EC2 may not list it yet"
        );
        launched.missing_from_listing(start + Duration::from_secs(120), grace);
        assert!(
            matches!(&launched.verdict, Verdict::Gone { why } if why.contains("120s")),
            "{:?}",
            launched.verdict
        );

        // Once listed, leaving the listing means gone at once.
        let mut shown = NodeWatch::launched(record(), start);
        shown.missing_from_listing(start, grace);
        shown.seen_listed();
        shown.missing_from_listing(start + Duration::from_secs(1), grace);
        assert!(matches!(shown.verdict, Verdict::Gone { .. }));
        let mut listed = NodeWatch::new(record(), start);
        listed.missing_from_listing(start, grace);
        assert!(matches!(listed.verdict, Verdict::Gone { .. }));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let interval = Duration::from_secs(1);
        assert!(backoff(interval, 1) <= Duration::from_millis(1200));
        assert!(backoff(interval, 3) >= Duration::from_millis(3200));
        assert!(backoff(interval, 30) <= Duration::from_secs(18));
    }
}
