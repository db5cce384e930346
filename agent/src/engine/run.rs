//! Scheduling the graph: start what is ready, record every transition, stop cleanly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rayefa_wire::{NodeState, SpanKind, StepState, StepStatus};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::graph::StepGraph;
use super::journal::{Journal, JournalDoc, PendingReboot};
use super::lock::{PackageLock, StepPackageLock};
use super::log::StepLog;
use super::report::StatusBoard;
use super::step::{Check, Outcome, Step, StepContext, StepError, Wanted};
use super::transition::{IllegalTransition, Transitions};
use crate::config::{RebootPolicy, Settings};
use crate::facts::Ec2Lookup;
use crate::host::{ChildRegistry, CommandRunner, CommandSpec, HostRoot};

/// How a run of the engine ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EngineEnd {
    Ready,
    Failed {
        step: String,
    },
    /// A reboot was asked for; the agent resumes after the boot.
    Rebooting {
        step: String,
    },
    /// The agent was told to stop; the journal holds where it was.
    Stopped,
}

/// Everything the engine needs from the agent around it.
pub(crate) struct Engine {
    pub(crate) graph: StepGraph,
    pub(crate) settings: Arc<Settings>,
    pub(crate) root: HostRoot,
    pub(crate) runner: Arc<dyn CommandRunner>,
    pub(crate) children: ChildRegistry,
    pub(crate) board: StatusBoard,
    pub(crate) journal: Journal,
    pub(crate) log_dir: PathBuf,
    pub(crate) ec2: Ec2Lookup,
    pub(crate) on_reboot: RebootPolicy,
}

/// How often a journal that could not be written (a full disk) is tried again once the
/// bootstrap is over and no transition will write it.
const JOURNAL_RETRY: Duration = Duration::from_secs(5);

/// Applies transitions to the status document and writes the journal.
///
/// Step tasks write in the background and a write covers every change made before it began,
/// so a burst of transitions from parallel steps costs one or two writes rather than one
/// each; a bootstrap's critical path never waits for an fsync. Whatever the journal holds is
/// a snapshot of the whole document, so it is always consistent, at worst a few changes
/// behind: a step whose end was not yet written is checked again after a crash, as if the
/// agent had died a moment earlier.
#[derive(Clone)]
struct Recorder {
    board: StatusBoard,
    journal: Journal,
    pending_reboot: Arc<Mutex<Option<PendingReboot>>>,
    boot_id: String,
    /// Counts requests to write; a write covers every request counted before its snapshot.
    requested: Arc<AtomicU64>,
    /// Serialises writes.
    write: Arc<Mutex<WriteState>>,
    /// Writes running on the blocking pool; the run waits for them before it ends, so that
    /// none lands after the run's last.
    background: Arc<Mutex<JoinSet<()>>>,
}

#[derive(Default)]
struct WriteState {
    /// The last request the journal on disk covers.
    covered: u64,
    /// The warning of the last write, when it failed.
    failed: Option<String>,
}

impl Recorder {
    fn new(board: StatusBoard, journal: Journal, boot_id: String) -> Self {
        Self {
            board,
            journal,
            pending_reboot: Arc::new(Mutex::new(None)),
            boot_id,
            requested: Arc::new(AtomicU64::new(0)),
            write: Arc::new(Mutex::new(WriteState::default())),
            background: Arc::new(Mutex::new(JoinSet::new())),
        }
    }

    /// Applies a transition to the status document and writes the journal in the background.
    fn transition(
        &self,
        index: usize,
        change: impl FnOnce(&mut StepStatus) -> Result<(), IllegalTransition>,
    ) -> Result<(), IllegalTransition> {
        let result = self.apply(index, change);
        self.persist_in_background();
        result
    }

    /// Applies a transition to the status document only; the next write takes it along.
    fn apply(
        &self,
        index: usize,
        change: impl FnOnce(&mut StepStatus) -> Result<(), IllegalTransition>,
    ) -> Result<(), IllegalTransition> {
        let mut result = Ok(());
        self.board.update(|doc| {
            if let Some(step) = doc.steps.get_mut(index) {
                result = change(step);
            }
        });
        result
    }

    /// Writes the journal on the blocking pool, off the runtime's workers.
    fn persist_in_background(&self) {
        let recorder = self.clone();
        let mut background = self.background.lock().unwrap_or_else(|p| p.into_inner());
        while background.try_join_next().is_some() {}
        background.spawn_blocking(move || {
            recorder.persist();
        });
    }

    /// Waits for the writes in the background, then writes what the document holds now.
    async fn settle(&self) -> bool {
        let mut background =
            std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        while background.join_next().await.is_some() {}
        let recorder = self.clone();
        tokio::task::spawn_blocking(move || recorder.persist())
            .await
            .unwrap_or(false)
    }

    /// Writes the journal with everything the document holds now, unless a write that began
    /// after this call already did; false when it could not be written (the status then says
    /// why).
    fn persist(&self) -> bool {
        let request = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut state = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if state.covered >= request && state.failed.is_none() {
            return true;
        }
        // Read before the snapshot: every request counted so far changed the document first.
        let covers = self.requested.load(Ordering::SeqCst);
        let doc = JournalDoc {
            version: 0,
            steps: self.board.snapshot().steps,
            boot_id: self.boot_id.clone(),
            pending_reboot: self
                .pending_reboot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        };
        match self.journal.save(&doc) {
            Ok(()) => {
                state.covered = covers;
                if let Some(resolved) = state.failed.take() {
                    tracing::info!("journal written again");
                    self.board
                        .update(|doc| doc.warnings.retain(|w| *w != resolved));
                }
                true
            }
            Err(err) => {
                let warning = err.to_string();
                // Once per distinct failure: the retries after the bootstrap would repeat it.
                if state.failed.as_deref() != Some(warning.as_str()) {
                    tracing::error!("{err}");
                }
                self.board.update(|doc| {
                    if let Some(earlier) = &state.failed {
                        doc.warnings.retain(|w| w != earlier);
                    }
                    if !doc.warnings.contains(&warning) {
                        doc.warnings.push(warning.clone());
                    }
                });
                state.failed = Some(warning);
                false
            }
        }
    }

    /// Keeps trying to write a journal the last write could not, until one succeeds: after
    /// the bootstrap no transition would write it, and a restart would redo finished steps.
    fn keep_saving_if_unsaved(&self) {
        let unsaved = self
            .write
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed
            .is_some();
        if !unsaved {
            return;
        }
        let recorder = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(JOURNAL_RETRY).await;
                if recorder.persist() {
                    return;
                }
            }
        });
    }

    fn node_state(&self, state: NodeState) {
        self.board.update(|doc| doc.state = state);
    }
}

impl Engine {
    /// The status document's step list for this graph, from the journal where it has a record.
    /// Steps done once per boot start again when the journal was written in another boot.
    pub(crate) fn initial_steps(
        graph: &StepGraph,
        journal: Option<&JournalDoc>,
        root: &HostRoot,
    ) -> Vec<StepStatus> {
        let rebooted = journal.is_some_and(|j| j.boot_id != current_boot_id(root));
        graph
            .steps()
            .iter()
            .map(|step| {
                let depends_on = step.depends_on().iter().map(|d| (*d).to_owned()).collect();
                let recorded = journal.and_then(|j| j.steps.iter().find(|s| s.name == step.name()));
                match recorded {
                    Some(record) => {
                        let mut record = record.clone();
                        record.depends_on = depends_on;
                        record.resume();
                        if rebooted && step.once_per_boot() {
                            record.state = StepState::Pending;
                        }
                        record
                    }
                    None => StepStatus::pending(step.name(), depends_on),
                }
            })
            .collect()
    }

    /// Runs the graph until every step is final, a reboot is needed, or `stop` is cancelled.
    pub(crate) async fn run(
        self,
        pending_reboot: Option<PendingReboot>,
        stop: CancellationToken,
    ) -> EngineEnd {
        let recorder = Recorder::new(
            self.board.clone(),
            self.journal.clone(),
            current_boot_id(&self.root),
        );
        if let Some(pending) = pending_reboot {
            if pending.boot_id == current_boot_id(&self.root) {
                // The reboot was asked for but has not happened (the agent was restarted
                // first): ask again rather than carry on with a half-installed driver.
                return self.reboot(&recorder, pending.step).await;
            }
            tracing::info!(
                step = pending.step,
                "resuming after the reboot the step asked for"
            );
        }
        recorder.node_state(NodeState::Bootstrapping);
        // The first step need not wait for this: the journal on disk already holds every
        // finished step, and a crash now loses nothing but this boot's id.
        recorder.persist_in_background();

        let package_lock = PackageLock::default();
        let mut tasks: JoinSet<(usize, TaskEnd)> = JoinSet::new();
        let mut reboot_for = None;
        loop {
            if reboot_for.is_none() {
                // Skipping a step turned off in configuration can make its dependents ready.
                while self.start_ready_steps(&recorder, &package_lock, &mut tasks) {}
            }
            if tasks.is_empty() {
                break;
            }
            let joined = tokio::select! {
                joined = tasks.join_next() => joined,
                () = stop.cancelled() => {
                    self.children.stop_all(self.settings.agent.stop_grace).await;
                    tasks.shutdown().await;
                    recorder.settle().await;
                    return EngineEnd::Stopped;
                }
            };
            match joined {
                Some(Ok((index, TaskEnd::Finished))) => {
                    self.block_dependents_if_failed(&recorder, index)
                }
                Some(Ok((_, TaskEnd::RebootRequired { step }))) => reboot_for = Some(step),
                Some(Err(join_error)) => {
                    tracing::error!("a step task ended abnormally: {join_error}");
                }
                None => break,
            }
        }
        if let Some(step) = reboot_for {
            return self.reboot(&recorder, step).await;
        }
        let end = self.finish(&recorder).await;
        recorder.keep_saving_if_unsaved();
        end
    }

    /// Starts every pending step whose dependencies are satisfied; true when a step was
    /// skipped on the spot, so that its dependents should be looked at again.
    fn start_ready_steps(
        &self,
        recorder: &Recorder,
        lock: &PackageLock,
        tasks: &mut JoinSet<(usize, TaskEnd)>,
    ) -> bool {
        let doc = self.board.snapshot();
        let mut skipped = false;
        for (index, step) in self.graph.steps().iter().enumerate() {
            let Some(status) = doc.steps.get(index) else {
                continue;
            };
            if status.state != StepState::Pending {
                continue;
            }
            let deps_satisfied = step
                .depends_on()
                .iter()
                .all(|dep| doc.step(dep).is_some_and(|d| d.state.is_satisfied()));
            if !deps_satisfied {
                continue;
            }
            let policy = self.settings.policy(step.name());
            if !policy.enabled {
                tracing::info!(
                    step = step.name(),
                    "{}: skipped: turned off in configuration",
                    step.name()
                );
                if let Err(err) =
                    recorder.transition(index, |s| s.skip("turned off in configuration".to_owned()))
                {
                    tracing::error!("{err}");
                }
                skipped = true;
                continue;
            }
            // Written with the first attempt, which follows at once.
            if let Err(err) = recorder.apply(index, Transitions::start) {
                tracing::error!("{err}");
                continue;
            }
            let report = self.board.reporter(index);
            let log = StepLog::open(
                &self.log_dir.join(format!("{}.log", step.name())),
                report.clone(),
            );
            let ctx = StepContext {
                root: self.root.clone(),
                runner: self.runner.clone(),
                settings: self.settings.clone(),
                package_lock: StepPackageLock::new(lock.clone(), report.clone()),
                log,
                report,
                ec2: self.ec2.clone(),
            };
            let task = StepTask {
                index,
                step: step.clone(),
                ctx,
                recorder: recorder.clone(),
                timeout: policy.timeout,
                attempts: policy.attempts,
                backoff: policy.backoff,
            };
            let span = tracing::info_span!("step", step = step.name());
            tasks.spawn(async move { (index, task.drive().await) }.instrument(span));
        }
        skipped
    }

    fn block_dependents_if_failed(&self, recorder: &Recorder, index: usize) {
        let doc = self.board.snapshot();
        let Some(status) = doc.steps.get(index) else {
            return;
        };
        if !matches!(status.state, StepState::Failed { .. }) {
            return;
        }
        for dependent in self.graph.dependents_of(&status.name) {
            let name = status.name.clone();
            let _ = recorder.transition(dependent, |s| s.block(&name));
        }
    }

    async fn finish(&self, recorder: &Recorder) -> EngineEnd {
        let doc = self.board.snapshot();
        let failed = doc
            .steps
            .iter()
            .find(|s| matches!(s.state, StepState::Failed { .. }));
        let unfinished = doc.steps.iter().find(|s| !s.state.is_final());
        let end = match (failed, unfinished) {
            (Some(step), _) => {
                recorder.node_state(NodeState::Failed {
                    step: step.name.clone(),
                    reason: step.error.clone().unwrap_or_default(),
                });
                EngineEnd::Failed {
                    step: step.name.clone(),
                }
            }
            (None, Some(step)) => {
                // Only a step task that died abnormally leaves a step neither final nor
                // startable; never call that node ready.
                recorder.node_state(NodeState::Failed {
                    step: step.name.clone(),
                    reason: format!("the step ended abnormally while {}", step.state.label()),
                });
                EngineEnd::Failed {
                    step: step.name.clone(),
                }
            }
            (None, None) => {
                recorder.node_state(NodeState::Ready);
                EngineEnd::Ready
            }
        };
        recorder.settle().await;
        end
    }

    async fn reboot(&self, recorder: &Recorder, step: String) -> EngineEnd {
        let Some(index) = self.graph.index_of(&step) else {
            return EngineEnd::Failed { step };
        };
        if self.on_reboot == RebootPolicy::Fail {
            let err = StepError::Fatal(
                "the EFA installer needs a reboot and the configuration says not to reboot (efa.on_reboot = \"fail\")"
                    .to_owned(),
            );
            recorder.board.update(|doc| {
                if let Some(s) = doc.steps.get_mut(index) {
                    if s.state != StepState::Running {
                        s.state = StepState::Running;
                    }
                    let _ = s.fail(&err);
                }
            });
            self.block_dependents_if_failed(recorder, index);
            return self.finish(recorder).await;
        }
        *recorder
            .pending_reboot
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(PendingReboot {
            step: step.clone(),
            boot_id: current_boot_id(&self.root),
        });
        recorder.node_state(NodeState::Rebooting { step: step.clone() });
        recorder.settle().await;
        let spec = CommandSpec::new("systemctl").arg("reboot");
        let log = StepLog::open(
            &self.log_dir.join(format!("{step}.log")),
            self.board.reporter(index),
        );
        log.note(&format!("$ {spec}"));
        match self.runner.run(&spec, &log).await {
            Ok(outcome) if outcome.success() => EngineEnd::Rebooting { step },
            Ok(outcome) => {
                tracing::error!("`{spec}` {}", outcome.describe());
                self.reboot_failed(recorder, index, &StepError::command(&spec, &outcome, false))
                    .await
            }
            Err(err) => {
                self.reboot_failed(recorder, index, &StepError::io(&spec, err))
                    .await
            }
        }
    }

    async fn reboot_failed(&self, recorder: &Recorder, index: usize, err: &StepError) -> EngineEnd {
        *recorder
            .pending_reboot
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        recorder.board.update(|doc| {
            if let Some(s) = doc.steps.get_mut(index) {
                s.state = StepState::Running;
                let _ = s.fail(err);
            }
        });
        self.block_dependents_if_failed(recorder, index);
        self.finish(recorder).await
    }
}

/// The boot this machine is in; a reboot changes it.
fn current_boot_id(root: &HostRoot) -> String {
    std::fs::read_to_string(root.path("/proc/sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

enum TaskEnd {
    Finished,
    RebootRequired { step: String },
}

/// One step being driven through wanted → check → attempts.
struct StepTask {
    index: usize,
    step: Arc<dyn Step>,
    ctx: StepContext,
    recorder: Recorder,
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
}

impl StepTask {
    async fn drive(self) -> TaskEnd {
        let name = self.step.name().to_owned();
        if let Wanted::Skip(reason) = self.step.wanted(&self.ctx).await {
            tracing::info!("{name}: skipped: {reason}");
            self.record(|s| s.skip(reason));
            return TaskEnd::Finished;
        }
        for attempt in 1..=self.attempts {
            tracing::info!("{name}: attempt {attempt} of {}", self.attempts);
            self.record(Transitions::begin_attempt);
            self.ctx.log.clear_tail();
            self.ctx.log.note(&format!(
                "=== {name}: attempt {attempt} of {} ===",
                self.attempts
            ));
            let result = tokio::time::timeout(self.timeout, self.attempt())
                .await
                .unwrap_or(Err(StepError::TimedOut(self.timeout.as_secs())));
            match result {
                Ok(AttemptEnd::AlreadyDone(detail)) => {
                    tracing::info!("{name}: already done");
                    self.record(|s| s.already_done(detail));
                    return TaskEnd::Finished;
                }
                Ok(AttemptEnd::Done(detail)) => {
                    tracing::info!("{name}: succeeded");
                    self.record(|s| s.succeed(detail));
                    return TaskEnd::Finished;
                }
                Ok(AttemptEnd::RebootRequired(reason, detail)) => {
                    tracing::warn!("{name}: needs a reboot: {reason}");
                    self.ctx.log.note(&format!("# reboot needed: {reason}"));
                    if detail.is_some() {
                        self.recorder.board.update(|doc| {
                            if let Some(s) = doc.steps.get_mut(self.index) {
                                s.detail = detail;
                            }
                        });
                    }
                    self.ctx.report.close_span(SpanKind::Attempt);
                    return TaskEnd::RebootRequired { step: name };
                }
                Err(err) if err.is_retryable() && attempt < self.attempts => {
                    let wait = backoff_delay(self.backoff, attempt);
                    tracing::warn!("{name}: attempt {attempt} failed, retrying in {wait:?}: {err}");
                    self.ctx.log.note(&format!(
                        "# attempt {attempt} failed: {err}; retrying in {} ms",
                        wait.as_millis()
                    ));
                    self.ctx.report.activity(format!("retrying after: {err}"));
                    self.ctx.report.close_span(SpanKind::Attempt);
                    self.ctx.report.open_span(SpanKind::RetryBackoff);
                    tokio::time::sleep(wait).await;
                    self.ctx.report.close_span(SpanKind::RetryBackoff);
                }
                Err(err) => {
                    tracing::error!("{name}: failed: {err}");
                    self.ctx.log.note(&format!("# failed: {err}"));
                    self.record(|s| s.fail(&err));
                    return TaskEnd::Finished;
                }
            }
        }
        TaskEnd::Finished
    }

    async fn attempt(&self) -> Result<AttemptEnd, StepError> {
        self.ctx
            .activity("checking whether the work is already done");
        if let Check::Done(detail) = self.step.check(&self.ctx).await? {
            return Ok(AttemptEnd::AlreadyDone(detail));
        }
        match self.step.run(&self.ctx).await? {
            Outcome::Done(detail) => Ok(AttemptEnd::Done(detail)),
            Outcome::RebootRequired { reason, detail } => {
                Ok(AttemptEnd::RebootRequired(reason, detail))
            }
        }
    }

    fn record(&self, change: impl FnOnce(&mut StepStatus) -> Result<(), IllegalTransition>) {
        if let Err(err) = self.recorder.transition(self.index, change) {
            tracing::error!("{err}");
        }
    }
}

enum AttemptEnd {
    AlreadyDone(Option<serde_json::Value>),
    Done(Option<serde_json::Value>),
    RebootRequired(String, Option<serde_json::Value>),
}

/// `base × 2^(attempt-1)`, with ±25 % jitter so that a fleet does not retry in lock-step.
fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let jitter = 0.75 + fastrand::f64() * 0.5;
    exponential.mul_f64(jitter).min(Duration::from_secs(600))
}
