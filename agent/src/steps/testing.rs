//! What the steps' unit tests share: a step context over a root, a runner and settings, and a
//! runner that records what the real one ran.

use std::io;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rayefa_wire::{
    NodeFacts, NodeIdentity, NodeState, Role, StatusDocument, StepState, StepStatus,
};
use tempfile::TempDir;

use crate::config::Settings;
use crate::engine::{PackageLock, StatusBoard, StepContext, StepLog, StepPackageLock};
use crate::facts::Ec2Lookup;
use crate::host::{CommandOutcome, CommandRunner, CommandSpec, HostRoot, OutputSink};

/// A step context and what it needs to stay alive: the status board its step writes to and the
/// folder its log goes into.
pub(crate) struct TestContext {
    pub(crate) ctx: StepContext,
    pub(crate) board: StatusBoard,
    _logs: TempDir,
}

impl TestContext {
    /// The step's whole log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.ctx.log.path()).unwrap_or_default()
    }

    /// The activity the step reported last.
    pub(crate) fn activity(&self) -> Option<String> {
        self.board
            .snapshot()
            .steps
            .first()
            .and_then(|s| s.activity.clone())
    }
}

/// A context for the step `name` running under `root` with `runner` and `settings`.
pub(crate) fn context(
    name: &str,
    root: HostRoot,
    runner: Arc<dyn CommandRunner>,
    settings: Settings,
) -> TestContext {
    let logs = tempfile::tempdir().expect("log dir");
    let board = StatusBoard::new(StatusDocument {
        api: rayefa_wire::API_VERSION,
        node: NodeIdentity {
            cluster_name: settings.node.cluster_name.clone(),
            role: settings.node.role,
            node_type: settings.node.node_type.clone(),
        },
        facts: NodeFacts::default(),
        state: NodeState::Bootstrapping,
        steps: vec![StepStatus {
            state: StepState::Running,
            attempts: 1,
            ..StepStatus::pending(name, Vec::new())
        }],
        warnings: Vec::new(),
        generated_at_ms: 0,
    });
    let report = board.reporter(0);
    let log = StepLog::open(&logs.path().join(format!("{name}.log")), report.clone());
    let ctx = StepContext {
        root,
        runner,
        settings: Arc::new(settings),
        package_lock: StepPackageLock::new(PackageLock::default(), report.clone()),
        log,
        report,
        ec2: Ec2Lookup::known(None),
    };
    TestContext {
        ctx,
        board,
        _logs: logs,
    }
}

/// The smallest valid configuration for a node of `role`, with `extra` TOML appended.
pub(crate) fn settings(role: Role, extra: &str) -> Settings {
    let head = match role {
        Role::Head => "",
        Role::Worker => "head_address = \"127.0.0.2\"\n",
    };
    Settings::for_tests(&format!(
        "[node]\ncluster_name = \"test\"\nrole = \"{role}\"\nnode_type = \"{role}_type\"\n{head}\n{extra}"
    ))
}

/// Runs commands with another runner and remembers each one, so that a test on the real
/// machine can still say which commands ran.
#[derive(Debug)]
pub(crate) struct Recording<R> {
    inner: R,
    calls: Mutex<Vec<CommandSpec>>,
}

impl<R> Recording<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every command run so far, as display strings.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .expect("calls")
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

#[async_trait]
impl<R: CommandRunner> CommandRunner for Recording<R> {
    async fn run(&self, spec: &CommandSpec, sink: &dyn OutputSink) -> io::Result<CommandOutcome> {
        self.calls.lock().expect("calls").push(spec.clone());
        self.inner.run(spec, sink).await
    }
}
