//! The makespan benchmark's entry points: the real bootstrap graph's edges, and a run of the
//! real engine over that graph in which every step is replaced by phases of known durations
//! (some under the real package-manager lock). `benches/makespan.rs` prints the figures.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rayefa_wire::{API_VERSION, NodeFacts, NodeIdentity, NodeState, StatusDocument};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Settings};
use crate::engine::{
    Check, Engine, EngineEnd, Journal, Outcome, StatusBoard, Step, StepContext, StepError,
    StepGraph,
};
use crate::facts::Ec2Lookup;
use crate::host::{ChildRegistry, HostRoot, SystemRunner};
use crate::steps;

/// One stretch of a step's work.
#[derive(Debug, Clone)]
pub struct Phase {
    /// What it stands for (`download`, `install`).
    pub label: String,
    /// How long it takes.
    pub duration: Duration,
    /// Whether it runs holding the package-manager lock.
    pub under_lock: bool,
}

/// When one phase ran, measured from the start of the engine's run.
#[derive(Debug, Clone)]
pub struct Span {
    /// The step's name.
    pub step: String,
    /// The phase's label.
    pub phase: String,
    /// When the phase asked for the lock (the same as `start` for phases without it).
    pub asked: Duration,
    /// When the phase's work began.
    pub start: Duration,
    /// When it ended.
    pub end: Duration,
}

/// What one run of the engine measured.
#[derive(Debug, Clone)]
pub struct Makespan {
    /// Whether the engine ended with the node ready.
    pub ready: bool,
    /// From the start of the engine's run to its end.
    pub time_to_ready: Duration,
    /// Every phase, in the order they began.
    pub spans: Vec<Span>,
}

/// The real bootstrap graph's steps with the steps each depends on, in graph order.
pub fn bootstrap_edges() -> Result<Vec<(String, Vec<String>)>, String> {
    let graph = steps::bootstrap_graph().map_err(|e| e.to_string())?;
    Ok(graph
        .steps()
        .iter()
        .map(|s| {
            let deps = s.depends_on().iter().map(|d| (*d).to_owned()).collect();
            (s.name().to_owned(), deps)
        })
        .collect())
}

/// Runs the real engine over the real bootstrap graph (its names and edges), each step doing
/// `phases[name]` instead of its work. Every step of the graph needs an entry and every entry
/// a step, so that a renamed or added step cannot go unmeasured.
pub fn run_bootstrap(phases: &BTreeMap<String, Vec<Phase>>) -> Result<Makespan, String> {
    let real = steps::bootstrap_graph().map_err(|e| e.to_string())?;
    if let Some(extra) = phases.keys().find(|n| real.index_of(n).is_none()) {
        return Err(format!("`{extra}` is not a step of the bootstrap graph"));
    }
    let origin = Arc::new(Mutex::new(None::<Instant>));
    let spans = Arc::new(Mutex::new(Vec::new()));
    let mut timed: Vec<Arc<dyn Step>> = Vec::new();
    for step in real.steps() {
        let Some(work) = phases.get(step.name()) else {
            return Err(format!("no phases given for the step `{}`", step.name()));
        };
        timed.push(Arc::new(TimedStep {
            real: step.clone(),
            phases: work.clone(),
            origin: origin.clone(),
            spans: spans.clone(),
        }));
    }
    let graph = StepGraph::new(timed).map_err(|e| e.to_string())?;
    let scratch = Scratch::new()?;
    let settings = settings(&scratch.0)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("async runtime: {e}"))?;
    let (end, elapsed) = runtime.block_on(async {
        let engine = engine(graph, settings, &scratch.0);
        let started = Instant::now();
        *origin.lock().unwrap_or_else(|p| p.into_inner()) = Some(started);
        let end = engine.run(None, CancellationToken::new()).await;
        (end, started.elapsed())
    });
    let mut spans = spans.lock().unwrap_or_else(|p| p.into_inner()).clone();
    spans.sort_by_key(|s| s.start);
    Ok(Makespan {
        ready: end == EngineEnd::Ready,
        time_to_ready: elapsed,
        spans,
    })
}

/// A fresh directory for one run's root, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Result<Self, String> {
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("rayefa-makespan-{}-{run}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Settings of a node with every step on and the state directory under `root`.
fn settings(root: &Path) -> Result<Settings, String> {
    let file = root.join("agent.toml");
    std::fs::write(
        &file,
        "[node]\ncluster_name = \"makespan\"\nrole = \"head\"\nnode_type = \"head\"\n\
         [agent]\nimds = false\n",
    )
    .map_err(|e| format!("{}: {e}", file.display()))?;
    config::load(&HostRoot::new(root), Some(&file))
        .map(|(settings, _)| settings)
        .map_err(|e| e.to_string())
}

/// The engine as `rayefa-agent run` builds it, over `root`.
fn engine(graph: StepGraph, settings: Settings, root: &Path) -> Engine {
    let host = HostRoot::new(root);
    let state_dir = host.path(&settings.agent.state_dir);
    let board = StatusBoard::new(StatusDocument {
        api: API_VERSION,
        node: NodeIdentity {
            cluster_name: settings.node.cluster_name.clone(),
            role: settings.node.role,
            node_type: settings.node.node_type.clone(),
        },
        facts: NodeFacts::default(),
        state: NodeState::Starting,
        steps: Engine::initial_steps(&graph, None, &host),
        warnings: Vec::new(),
        generated_at_ms: 0,
    });
    let children = ChildRegistry::default();
    Engine {
        graph,
        on_reboot: settings.efa.on_reboot,
        settings: Arc::new(settings),
        root: host,
        runner: Arc::new(SystemRunner::new(children.clone())),
        children,
        board,
        journal: Journal::new(&state_dir),
        log_dir: state_dir.join("logs"),
        ec2: Ec2Lookup::known(None),
    }
}

/// A real step's name and edges with timed phases in place of its work.
struct TimedStep {
    real: Arc<dyn Step>,
    phases: Vec<Phase>,
    origin: Arc<Mutex<Option<Instant>>>,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl TimedStep {
    fn since_origin(&self) -> Duration {
        self.origin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |o| o.elapsed())
    }
}

#[async_trait]
impl Step for TimedStep {
    fn name(&self) -> &str {
        self.real.name()
    }

    fn depends_on(&self) -> &[&str] {
        self.real.depends_on()
    }

    fn once_per_boot(&self) -> bool {
        self.real.once_per_boot()
    }

    async fn check(&self, _ctx: &StepContext) -> Result<Check, StepError> {
        Ok(Check::NotDone)
    }

    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError> {
        for phase in &self.phases {
            let asked = self.since_origin();
            // The guard lives to the end of the phase, as the real steps hold it.
            let _guard = if phase.under_lock {
                Some(ctx.package_lock.acquire().await)
            } else {
                None
            };
            let start = self.since_origin();
            tokio::time::sleep(phase.duration).await;
            let end = self.since_origin();
            self.spans
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Span {
                    step: self.name().to_owned(),
                    phase: phase.label.clone(),
                    asked,
                    start,
                    end,
                });
        }
        Ok(Outcome::Done(None))
    }
}
