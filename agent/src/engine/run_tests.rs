//! Engine semantics with test steps at the step seam.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rayefa_wire::{NodeFacts, NodeIdentity, NodeState, Role, SpanKind, StatusDocument, StepState};
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

use super::journal::PendingReboot;
use super::*;
use crate::config::{RebootPolicy, Settings};
use crate::facts::Ec2Lookup;
use crate::host::scripted::ScriptedRunner;
use crate::host::{ChildRegistry, CommandRunner, HostRoot};

type Behaviour = Box<dyn Fn(u32) -> BoxedRun + Send + Sync>;
type BoxedRun =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Outcome, StepError>> + Send>>;

/// A step whose run is a closure of the attempt number; counts checks and runs.
struct TestStep {
    name: &'static str,
    deps: Vec<&'static str>,
    done_on_check: bool,
    per_boot: bool,
    wanted: Wanted,
    behaviour: Behaviour,
    runs: Arc<AtomicUsize>,
    checks: Arc<AtomicUsize>,
    events: Arc<Mutex<Vec<String>>>,
}

impl TestStep {
    fn new(name: &'static str, deps: &[&'static str], events: &Arc<Mutex<Vec<String>>>) -> Self {
        Self {
            name,
            deps: deps.to_vec(),
            done_on_check: false,
            per_boot: false,
            wanted: Wanted::Yes,
            behaviour: Box::new(|_| Box::pin(async { Ok(Outcome::Done(None)) })),
            runs: Arc::default(),
            checks: Arc::default(),
            events: events.clone(),
        }
    }

    fn behaves(mut self, f: impl Fn(u32) -> BoxedRun + Send + Sync + 'static) -> Self {
        self.behaviour = Box::new(f);
        self
    }
}

#[async_trait]
impl Step for TestStep {
    fn name(&self) -> &str {
        self.name
    }

    fn depends_on(&self) -> &[&str] {
        &self.deps
    }

    fn once_per_boot(&self) -> bool {
        self.per_boot
    }

    async fn wanted(&self, _ctx: &StepContext) -> Wanted {
        self.wanted.clone()
    }

    async fn check(&self, _ctx: &StepContext) -> Result<Check, StepError> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        Ok(if self.done_on_check {
            Check::Done(None)
        } else {
            Check::NotDone
        })
    }

    async fn run(&self, _ctx: &StepContext) -> Result<Outcome, StepError> {
        let attempt =
            u32::try_from(self.runs.fetch_add(1, Ordering::SeqCst) + 1).unwrap_or(u32::MAX);
        self.events
            .lock()
            .expect("events")
            .push(format!("start {}", self.name));
        let result = (self.behaviour)(attempt).await;
        self.events
            .lock()
            .expect("events")
            .push(format!("end {}", self.name));
        result
    }
}

struct Harness {
    dir: tempfile::TempDir,
    settings: Settings,
    runner: Arc<dyn CommandRunner>,
}

impl Harness {
    fn new(extra_toml: &str) -> Self {
        Self::with_runner(extra_toml, Arc::new(ScriptedRunner::new()))
    }

    fn with_runner(extra_toml: &str, runner: Arc<dyn CommandRunner>) -> Self {
        let settings = Settings::for_tests(&format!(
            "[node]\ncluster_name = \"t\"\nrole = \"head\"\nnode_type = \"h\"\n{extra_toml}"
        ));
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            settings,
            runner,
        }
    }

    fn journal(&self) -> Journal {
        Journal::new(&self.dir.path().join("state"))
    }

    /// Runs `steps` as a fresh agent would: journal loaded, engine to the end.
    async fn run(&self, steps: Vec<Arc<dyn Step>>) -> (EngineEnd, StatusDocument) {
        self.run_until(steps, CancellationToken::new()).await
    }

    async fn run_until(
        &self,
        steps: Vec<Arc<dyn Step>>,
        stop: CancellationToken,
    ) -> (EngineEnd, StatusDocument) {
        let graph = StepGraph::new(steps).expect("graph");
        let journal = self.journal();
        let recorded = journal.load().expect("journal readable");
        let board = StatusBoard::new(StatusDocument {
            api: rayefa_wire::API_VERSION,
            node: NodeIdentity {
                cluster_name: "t".into(),
                role: Role::Head,
                node_type: "h".into(),
            },
            facts: NodeFacts::default(),
            state: NodeState::Starting,
            steps: Engine::initial_steps(
                &graph,
                recorded.as_ref(),
                &HostRoot::new(self.dir.path()),
            ),
            warnings: vec![],
            generated_at_ms: 0,
        });
        let engine = Engine {
            graph,
            settings: Arc::new(self.settings.clone()),
            root: HostRoot::new(self.dir.path()),
            runner: self.runner.clone(),
            children: ChildRegistry::default(),
            board: board.clone(),
            journal,
            log_dir: self.dir.path().join("state/logs"),
            ec2: Ec2Lookup::known(None),
            on_reboot: self.settings.efa.on_reboot,
        };
        let end = engine
            .run(recorded.and_then(|doc| doc.pending_reboot), stop)
            .await;
        (end, board.snapshot())
    }
}

fn events() -> Arc<Mutex<Vec<String>>> {
    Arc::default()
}

fn states(doc: &StatusDocument) -> BTreeMap<String, StepState> {
    doc.steps
        .iter()
        .map(|s| (s.name.clone(), s.state.clone()))
        .collect()
}

#[tokio::test]
async fn dependencies_finish_before_dependents_start() {
    let log = events();
    let harness = Harness::new("");
    let (end, doc) = harness
        .run(vec![
            Arc::new(TestStep::new("c", &["b"], &log)),
            Arc::new(TestStep::new("b", &["a"], &log)),
            Arc::new(TestStep::new("a", &[], &log)),
        ])
        .await;
    assert_eq!(end, EngineEnd::Ready);
    assert_eq!(doc.state, NodeState::Ready);
    assert_eq!(
        *log.lock().expect("events"),
        ["start a", "end a", "start b", "end b", "start c", "end c"]
    );
    let order: Vec<_> = doc.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["a", "b", "c"], "status lists steps in graph order");
}

#[tokio::test]
async fn independent_branches_run_at_the_same_time() {
    let log = events();
    // Each branch waits at a two-party barrier: unless both run at once, neither finishes and
    // the step timeout fails them.
    let barrier = Arc::new(Barrier::new(2));
    let meet = |barrier: Arc<Barrier>| {
        move |_| -> BoxedRun {
            let barrier = barrier.clone();
            Box::pin(async move {
                barrier.wait().await;
                Ok(Outcome::Done(None))
            })
        }
    };
    let harness = Harness::new(
        "[steps.grow-root]\ntimeout_secs = 5\n[steps.install-ray]\ntimeout_secs = 5\n",
    );
    let (end, _) = harness
        .run(vec![
            Arc::new(TestStep::new("grow-root", &[], &log).behaves(meet(barrier.clone()))),
            Arc::new(TestStep::new("install-ray", &[], &log).behaves(meet(barrier))),
        ])
        .await;
    assert_eq!(end, EngineEnd::Ready);
}

#[tokio::test]
async fn the_package_lock_admits_one_step_at_a_time() {
    let log = events();
    let holders = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));

    struct Locking {
        inner: TestStep,
        holders: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }
    #[async_trait]
    impl Step for Locking {
        fn name(&self) -> &str {
            self.inner.name
        }
        fn depends_on(&self) -> &[&str] {
            &self.inner.deps
        }
        async fn check(&self, _ctx: &StepContext) -> Result<Check, StepError> {
            Ok(Check::NotDone)
        }
        async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
            for _ in 0..3 {
                let _guard = ctx.package_lock.acquire().await;
                let now = self.holders.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                self.holders.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(Outcome::Done(None))
        }
    }
    let steps: Vec<Arc<dyn Step>> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            Arc::new(Locking {
                inner: TestStep::new(name, &[], &log),
                holders: holders.clone(),
                most: most.clone(),
            }) as Arc<dyn Step>
        })
        .collect();
    let (end, doc) = Harness::new("").run(steps).await;
    assert_eq!(end, EngineEnd::Ready);
    assert_eq!(most.load(Ordering::SeqCst), 1);
    // Three steps taking turns nine times must have waited, and every wait is a closed span
    // inside its step's attempt.
    let waits: Vec<&rayefa_wire::StepSpan> = doc
        .steps
        .iter()
        .flat_map(|s| &s.spans)
        .filter(|s| s.kind == SpanKind::PackageLockWait)
        .collect();
    assert!(!waits.is_empty(), "{:#?}", doc.steps);
    for step in &doc.steps {
        let attempt = step
            .spans
            .iter()
            .find(|s| s.kind == SpanKind::Attempt)
            .expect("an attempt span");
        for wait in step
            .spans
            .iter()
            .filter(|s| s.kind == SpanKind::PackageLockWait)
        {
            let end = wait.finished_at_ms.expect("the wait ended");
            assert!(
                wait.started_at_ms >= attempt.started_at_ms
                    && end <= step.finished_at_ms.expect("finished")
            );
        }
    }
}

#[tokio::test]
async fn retryable_errors_are_retried_with_backoff() {
    let log = events();
    let harness = Harness::new("[steps.install-ray]\nattempts = 3\nbackoff_secs = 0.01\n");
    let flaky = TestStep::new("install-ray", &[], &log).behaves(|attempt| {
        Box::pin(async move {
            if attempt < 3 {
                Err(StepError::Transient(format!("mirror busy ({attempt})")))
            } else {
                Ok(Outcome::Done(None))
            }
        })
    });
    let runs = flaky.runs.clone();
    let (end, doc) = harness.run(vec![Arc::new(flaky)]).await;
    assert_eq!(end, EngineEnd::Ready);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(doc.steps[0].attempts, 3);
    let kinds: Vec<SpanKind> = doc.steps[0].spans.iter().map(|s| s.kind).collect();
    use SpanKind::{Attempt, RetryBackoff};
    assert_eq!(
        kinds,
        [Attempt, RetryBackoff, Attempt, RetryBackoff, Attempt]
    );
    let spans = &doc.steps[0].spans;
    for pair in spans.windows(2) {
        let end = pair[0].finished_at_ms.expect("every span closed");
        assert!(end <= pair[1].started_at_ms, "{spans:#?}");
    }
    assert_eq!(
        spans.last().expect("spans").finished_at_ms,
        doc.steps[0].finished_at_ms
    );
    let log_text = std::fs::read_to_string(harness.dir.path().join("state/logs/install-ray.log"))
        .expect("log");
    assert!(
        log_text.contains("attempt 1 failed: mirror busy (1)"),
        "{log_text}"
    );
}

#[tokio::test]
async fn fatal_errors_are_not_retried() {
    let log = events();
    let harness = Harness::new("[steps.install-ray]\nattempts = 3\nbackoff_secs = 0.01\n");
    let broken = TestStep::new("install-ray", &[], &log)
        .behaves(|_| Box::pin(async { Err(StepError::Fatal("checksum mismatch".into())) }));
    let runs = broken.runs.clone();
    let (end, doc) = harness.run(vec![Arc::new(broken)]).await;
    assert_eq!(
        end,
        EngineEnd::Failed {
            step: "install-ray".into()
        }
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(doc.steps[0].state, StepState::Failed { retryable: false });
    assert_eq!(doc.steps[0].error.as_deref(), Some("checksum mismatch"));
}

#[tokio::test]
async fn a_failure_blocks_every_dependent_and_fails_the_node() {
    let log = events();
    let harness = Harness::new("");
    let (end, doc) = harness
        .run(vec![
            Arc::new(
                TestStep::new("a", &[], &log)
                    .behaves(|_| Box::pin(async { Err(StepError::Fatal("boom".into())) })),
            ),
            Arc::new(TestStep::new("b", &["a"], &log)),
            Arc::new(TestStep::new("c", &["b"], &log)),
            Arc::new(TestStep::new("independent", &[], &log)),
        ])
        .await;
    assert_eq!(end, EngineEnd::Failed { step: "a".into() });
    let states = states(&doc);
    assert_eq!(states["b"], StepState::Blocked { by: "a".into() });
    assert_eq!(states["c"], StepState::Blocked { by: "a".into() });
    assert_eq!(states["independent"], StepState::Succeeded);
    assert_eq!(
        doc.state,
        NodeState::Failed {
            step: "a".into(),
            reason: "boom".into()
        }
    );
}

#[tokio::test]
async fn an_attempt_that_runs_out_of_time_is_a_retryable_failure() {
    let log = events();
    let harness = Harness::new("[steps.start-ray]\ntimeout_secs = 1\nattempts = 1\n");
    let (end, doc) = harness
        .run(vec![Arc::new(
            TestStep::new("start-ray", &[], &log).behaves(|_| {
                Box::pin(async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(Outcome::Done(None))
                })
            }),
        )])
        .await;
    assert_eq!(
        end,
        EngineEnd::Failed {
            step: "start-ray".into()
        }
    );
    assert_eq!(doc.steps[0].state, StepState::Failed { retryable: true });
    assert_eq!(doc.steps[0].error.as_deref(), Some("timed out after 1 s"));
}

#[tokio::test]
async fn steps_turned_off_or_unwanted_are_skipped_and_dependents_run() {
    let log = events();
    let harness = Harness::new("[steps.grow-root]\nenabled = false\n");
    let mut unwanted = TestStep::new("probe-efa", &[], &log);
    unwanted.wanted = Wanted::Skip("no EFA interface".into());
    let (end, doc) = harness
        .run(vec![
            Arc::new(TestStep::new("grow-root", &[], &log)),
            Arc::new(unwanted),
            Arc::new(TestStep::new(
                "start-ray",
                &["grow-root", "probe-efa"],
                &log,
            )),
        ])
        .await;
    assert_eq!(end, EngineEnd::Ready);
    let states = states(&doc);
    assert_eq!(
        states["grow-root"],
        StepState::Skipped {
            reason: "turned off in configuration".into()
        }
    );
    assert_eq!(
        states["probe-efa"],
        StepState::Skipped {
            reason: "no EFA interface".into()
        }
    );
    assert_eq!(states["start-ray"], StepState::Succeeded);
    assert_eq!(
        *log.lock().expect("events"),
        ["start start-ray", "end start-ray"]
    );
}

#[tokio::test]
async fn a_restart_does_not_rerun_completed_steps_and_rechecks_interrupted_ones() {
    let log = events();
    let harness = Harness::new("");
    let (end, _) = harness
        .run(vec![Arc::new(TestStep::new("a", &[], &log))])
        .await;
    assert_eq!(end, EngineEnd::Ready);

    // The journal now says `a` succeeded; pretend `b` was running when the agent died.
    let mut doc = harness
        .journal()
        .load()
        .expect("readable")
        .expect("present");
    let mut interrupted = doc.steps[0].clone();
    interrupted.name = "b".into();
    interrupted.state = StepState::Running;
    doc.steps.push(interrupted);
    harness.journal().save(&doc).expect("save");

    let a = TestStep::new("a", &[], &log);
    let mut b = TestStep::new("b", &["a"], &log);
    b.done_on_check = true;
    let (a_runs, b_runs, b_checks) = (a.runs.clone(), b.runs.clone(), b.checks.clone());
    let (end, doc) = harness.run(vec![Arc::new(a), Arc::new(b)]).await;
    assert_eq!(end, EngineEnd::Ready);
    assert_eq!(
        a_runs.load(Ordering::SeqCst),
        0,
        "a completed step ran again"
    );
    assert_eq!(
        b_checks.load(Ordering::SeqCst),
        1,
        "the interrupted step was not re-checked"
    );
    assert_eq!(b_runs.load(Ordering::SeqCst), 0);
    assert_eq!(states(&doc)["b"], StepState::AlreadyDone);
}

#[tokio::test]
async fn a_failed_step_is_tried_again_by_the_next_run_of_the_agent() {
    let log = events();
    let harness = Harness::new("");
    let fail_once = Arc::new(AtomicUsize::new(0));
    let make = |counter: Arc<AtomicUsize>| {
        TestStep::new("a", &[], &log).behaves(move |_| {
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if first {
                    Err(StepError::Fatal("first run fails".into()))
                } else {
                    Ok(Outcome::Done(None))
                }
            })
        })
    };
    let (end, _) = harness.run(vec![Arc::new(make(fail_once.clone()))]).await;
    assert_eq!(end, EngineEnd::Failed { step: "a".into() });
    let (end, doc) = harness.run(vec![Arc::new(make(fail_once))]).await;
    assert_eq!(end, EngineEnd::Ready);
    assert_eq!(
        doc.steps[0].attempts, 2,
        "attempts count across runs of the agent"
    );
}

#[tokio::test]
async fn stopping_leaves_a_running_step_to_be_resumed() {
    let log = events();
    let harness = Harness::new("");
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    let slow = TestStep::new("a", &[], &log).behaves(move |_| {
        let trigger = trigger.clone();
        Box::pin(async move {
            trigger.cancel();
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Outcome::Done(None))
        })
    });
    let (end, _) = harness.run_until(vec![Arc::new(slow)], stop).await;
    assert_eq!(end, EngineEnd::Stopped);
    let journal = harness
        .journal()
        .load()
        .expect("readable")
        .expect("present");
    assert_eq!(journal.steps[0].state, StepState::Running);
}

#[tokio::test]
async fn a_reboot_request_is_journalled_and_resumed_after_the_boot() {
    let log = events();
    let runner = Arc::new(ScriptedRunner::new().answer("systemctl reboot", 0, ""));
    let harness = Harness::with_runner("", runner.clone());
    std::fs::create_dir_all(harness.dir.path().join("proc/sys/kernel/random")).expect("mkdir");
    let boot_id = harness.dir.path().join("proc/sys/kernel/random/boot_id");
    std::fs::write(&boot_id, "boot-1\n").expect("boot id");

    let installer = || {
        let mut step = TestStep::new("install-efa", &[], &log).behaves(|_| {
            Box::pin(async {
                Ok(Outcome::RebootRequired {
                    reason: "Reboot is needed!".into(),
                    detail: None,
                })
            })
        });
        step.done_on_check = false;
        step
    };
    let (end, doc) = harness
        .run(vec![
            Arc::new(installer()),
            Arc::new(TestStep::new("probe-efa", &["install-efa"], &log)),
        ])
        .await;
    assert_eq!(
        end,
        EngineEnd::Rebooting {
            step: "install-efa".into()
        }
    );
    assert_eq!(
        doc.state,
        NodeState::Rebooting {
            step: "install-efa".into()
        }
    );
    assert_eq!(runner.calls(), ["systemctl reboot"]);
    let journal = harness
        .journal()
        .load()
        .expect("readable")
        .expect("present");
    assert_eq!(
        journal.pending_reboot,
        Some(PendingReboot {
            step: "install-efa".into(),
            boot_id: "boot-1".into()
        })
    );

    // Restarted in the same boot: the reboot has not happened, so it is asked for again.
    let (end, _) = harness
        .run(vec![
            Arc::new(installer()),
            Arc::new(TestStep::new("probe-efa", &["install-efa"], &log)),
        ])
        .await;
    assert_eq!(
        end,
        EngineEnd::Rebooting {
            step: "install-efa".into()
        }
    );
    assert_eq!(runner.calls().len(), 2);

    // After the boot the step is checked again and the graph goes on.
    std::fs::write(&boot_id, "boot-2\n").expect("boot id");
    let mut done = installer();
    done.done_on_check = true;
    let (end, doc) = harness
        .run(vec![
            Arc::new(done),
            Arc::new(TestStep::new("probe-efa", &["install-efa"], &log)),
        ])
        .await;
    assert_eq!(end, EngineEnd::Ready);
    assert_eq!(states(&doc)["install-efa"], StepState::AlreadyDone);
    let journal = harness
        .journal()
        .load()
        .expect("readable")
        .expect("present");
    assert_eq!(journal.pending_reboot, None);
}

#[tokio::test]
async fn with_reboots_refused_the_step_fails_with_the_reason() {
    let log = events();
    let harness = Harness::new("[efa]\non_reboot = \"fail\"\n");
    assert_eq!(harness.settings.efa.on_reboot, RebootPolicy::Fail);
    let (end, doc) = harness
        .run(vec![
            Arc::new(TestStep::new("install-efa", &[], &log).behaves(|_| {
                Box::pin(async {
                    Ok(Outcome::RebootRequired {
                        reason: "Reboot is needed!".into(),
                        detail: None,
                    })
                })
            })),
            Arc::new(TestStep::new("probe-efa", &["install-efa"], &log)),
        ])
        .await;
    assert_eq!(
        end,
        EngineEnd::Failed {
            step: "install-efa".into()
        }
    );
    let states = states(&doc);
    assert_eq!(
        states["probe-efa"],
        StepState::Blocked {
            by: "install-efa".into()
        }
    );
    assert!(
        doc.steps[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("on_reboot")
    );
}

#[tokio::test]
async fn work_a_reboot_undoes_is_done_again_in_the_next_boot() {
    let log = events();
    let harness = Harness::new("");
    std::fs::create_dir_all(harness.dir.path().join("proc/sys/kernel/random")).expect("mkdir");
    let boot_id = harness.dir.path().join("proc/sys/kernel/random/boot_id");
    std::fs::write(&boot_id, "boot-1\n").expect("boot id");
    let graph = |log: &Arc<Mutex<Vec<String>>>| -> Vec<Arc<dyn Step>> {
        let mut start = TestStep::new("start-ray", &["install-ray"], log);
        start.per_boot = true;
        vec![
            Arc::new(TestStep::new("install-ray", &[], log)),
            Arc::new(start),
        ]
    };
    assert_eq!(harness.run(graph(&log)).await.0, EngineEnd::Ready);
    // A restart of the agent in the same boot changes nothing.
    assert_eq!(harness.run(graph(&log)).await.0, EngineEnd::Ready);
    assert_eq!(log.lock().expect("events").len(), 4);

    std::fs::write(&boot_id, "boot-2\n").expect("boot id");
    let (end, _) = harness.run(graph(&log)).await;
    assert_eq!(end, EngineEnd::Ready);
    assert_eq!(
        log.lock().expect("events")[4..],
        ["start start-ray", "end start-ray"],
        "only the once-per-boot step runs after the reboot"
    );
}
