//! The status document served on `/v1/status`.

use serde::{Deserialize, Serialize};

/// Everything an agent says about its node and its bootstrap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    /// Always [`crate::API_VERSION`] for documents of this shape.
    pub api: u32,
    /// Which cluster and node type this node belongs to.
    pub node: NodeIdentity,
    /// What the agent found out about the machine.
    pub facts: NodeFacts,
    /// The bootstrap as a whole (`"state": "failed", "step": ..., "reason": ...`).
    #[serde(flatten)]
    pub state: NodeState,
    /// Every step of the bootstrap, in the order of the step graph.
    pub steps: Vec<StepStatus>,
    /// Things a person should know that did not stop the bootstrap (a journal set aside, a
    /// metadata service that did not answer).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// When this document was made, in milliseconds since the Unix epoch.
    pub generated_at_ms: u64,
}

impl StatusDocument {
    /// The step called `name`, if the graph has it.
    pub fn step(&self, name: &str) -> Option<&StepStatus> {
        self.steps.iter().find(|step| step.name == name)
    }

    /// The Ray version install-ray installed in the virtualenv, once it has: what `status -v`
    /// shows and what `up` compares across nodes.
    pub fn ray_version(&self) -> Option<String> {
        let detail = self
            .step(crate::StepName::InstallRay.as_str())?
            .detail
            .clone()?;
        serde_json::from_value::<PythonInstallDetail>(detail)
            .ok()?
            .ray_version
    }

    /// The step a person watching the node most wants to see: the first running one, else the
    /// first failed one, else the first pending one.
    pub fn current_step(&self) -> Option<&StepStatus> {
        let first = |pred: fn(&StepState) -> bool| self.steps.iter().find(|s| pred(&s.state));
        first(|s| matches!(s, StepState::Running))
            .or_else(|| first(|s| matches!(s, StepState::Failed { .. })))
            .or_else(|| first(|s| matches!(s, StepState::Pending)))
    }
}

/// What install-ray's detail says about the Python side, for readers other than the agent (the
/// detail has more: OS packages, each requirement's version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonInstallDetail {
    /// The installed `ray` distribution's version; absent when Ray is not in the virtualenv.
    #[serde(default)]
    pub ray_version: Option<String>,
    /// The interpreter that made the virtualenv (`python3.12`).
    #[serde(default)]
    pub python_interpreter: Option<String>,
    /// What installed the requirements: `uv 0.13.9`, or `pip (not uv: why)`; absent when
    /// nothing needed installing.
    #[serde(default)]
    pub python_installer: Option<String>,
}

/// The place of a node in its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The cluster file's `cluster_name`.
    pub cluster_name: String,
    /// Head or worker.
    pub role: Role,
    /// The key of the node's entry in the cluster file's `available_node_types`.
    pub node_type: String,
}

/// Whether a node runs Ray's head or a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The node that runs Ray's GCS and dashboard.
    Head,
    /// A node that joins the head.
    Worker,
}

impl Role {
    /// The word used in configuration, tags and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Head => "head",
            Role::Worker => "worker",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Facts about the machine, gathered once at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// The agent's own version.
    pub agent_version: String,
    /// The host name.
    pub hostname: Option<String>,
    /// The operating system's pretty name (from os-release).
    pub os: Option<String>,
    /// The running kernel's release.
    pub kernel: Option<String>,
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Size of the file system mounted at `/`, in bytes.
    pub root_disk_bytes: Option<u64>,
    /// What the EC2 instance metadata service said; absent off EC2 or while it is still being
    /// asked.
    pub ec2: Option<Ec2Facts>,
}

/// The instance as the EC2 instance metadata service (IMDSv2) describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ec2Facts {
    /// `i-...`
    pub instance_id: String,
    /// For example `i7i.24xlarge`.
    pub instance_type: String,
    /// For example `ap-northeast-1a`, or `us-west-2-lax-1a` in a Local Zone.
    pub availability_zone: String,
    /// The region, from `placement/region` (a Local Zone's name is no guide to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The partition (`aws`, `aws-cn`, `aws-us-gov`), from `services/partition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The partition's domain for endpoints (`amazonaws.com`, `amazonaws.com.cn`), from
    /// `services/domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The primary private IPv4 address.
    pub private_ip: Option<String>,
    /// The interface type of each attached network interface (`interface`, `efa`,
    /// `efa-only`), by MAC address order.
    #[serde(default)]
    pub interface_types: Vec<String>,
}

/// The bootstrap as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum NodeState {
    /// The agent is reading its journal and has not scheduled anything yet.
    Starting,
    /// Steps are running or waiting.
    Bootstrapping,
    /// Every step succeeded, was already done, or was skipped.
    Ready,
    /// A step failed; its dependents are blocked.
    Failed {
        /// The step that failed first.
        step: String,
        /// Its error.
        reason: String,
    },
    /// The node is rebooting to finish a step and will resume after the boot.
    Rebooting {
        /// The step that asked for the reboot.
        step: String,
    },
}

impl NodeState {
    /// True once the bootstrap can no longer change without a restart of the agent.
    pub fn is_final(&self) -> bool {
        matches!(self, NodeState::Ready | NodeState::Failed { .. })
    }
}

/// One step of the bootstrap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStatus {
    /// The step's name, for example `grow-root` (one of [`crate::StepName`]).
    pub name: String,
    /// Where the step is.
    #[serde(flatten)]
    pub state: StepState,
    /// The steps that must be satisfied before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// What the step is doing right now, in a few words.
    pub activity: Option<String>,
    /// Start of the latest attempt, in milliseconds since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// End of the latest attempt, in milliseconds since the Unix epoch.
    pub finished_at_ms: Option<u64>,
    /// Attempts made, across restarts of the agent.
    pub attempts: u32,
    /// Exit code of the command that decided the outcome, when there was one.
    pub exit_code: Option<i32>,
    /// The error of the latest failed attempt.
    pub error: Option<String>,
    /// The last few KiB of the step's output; the whole log is in the agent's state directory.
    #[serde(default)]
    pub output_tail: String,
    /// Step-specific results (sizes before and after growing, the EFA probe's findings).
    pub detail: Option<serde_json::Value>,
    /// Where the step's time went: each attempt, each wait for the package-manager lock and
    /// each pause before a retry, oldest first, across restarts of the agent (at most
    /// [`MAX_STEP_SPANS`]; the oldest are dropped first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<StepSpan>,
}

/// The most spans a step keeps, so that a step retried for hours keeps a bounded document.
pub const MAX_STEP_SPANS: usize = 48;

/// One stretch of a step's time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpan {
    /// What the step was doing.
    pub kind: SpanKind,
    /// Start, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// End, in milliseconds since the Unix epoch; absent while it lasts (or when the agent
    /// stopped during it).
    pub finished_at_ms: Option<u64>,
}

/// What a step spent a [`StepSpan`] on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpanKind {
    /// One attempt at the step's check and work.
    Attempt,
    /// Waiting for another step to release the package-manager lock.
    PackageLockWait,
    /// The pause before the next attempt.
    RetryBackoff,
}

impl SpanKind {
    /// The word used in pictures and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Attempt => "attempt",
            SpanKind::PackageLockWait => "package-lock-wait",
            SpanKind::RetryBackoff => "retry-backoff",
        }
    }
}

impl StepStatus {
    /// A step that has not started.
    pub fn pending(name: impl Into<String>, depends_on: Vec<String>) -> Self {
        Self {
            name: name.into(),
            state: StepState::Pending,
            depends_on,
            activity: None,
            started_at_ms: None,
            finished_at_ms: None,
            attempts: 0,
            exit_code: None,
            error: None,
            output_tail: String::new(),
            detail: None,
            spans: Vec::new(),
        }
    }

    /// Opens a span of `kind` at `now_ms`, dropping the oldest beyond [`MAX_STEP_SPANS`].
    pub fn open_span(&mut self, kind: SpanKind, now_ms: u64) {
        if self.spans.len() >= MAX_STEP_SPANS {
            self.spans.remove(0);
        }
        self.spans.push(StepSpan {
            kind,
            started_at_ms: now_ms,
            finished_at_ms: None,
        });
    }

    /// Closes the latest open span of `kind` at `now_ms`; nothing when none is open.
    pub fn close_span(&mut self, kind: SpanKind, now_ms: u64) {
        if let Some(span) = self
            .spans
            .iter_mut()
            .rev()
            .find(|s| s.kind == kind && s.finished_at_ms.is_none())
        {
            span.finished_at_ms = Some(now_ms);
        }
    }

    /// How long the latest attempt took, or has taken so far given `now_ms`.
    pub fn elapsed_ms(&self, now_ms: u64) -> Option<u64> {
        let start = self.started_at_ms?;
        Some(self.finished_at_ms.unwrap_or(now_ms).saturating_sub(start))
    }
}

/// Where a step is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum StepState {
    /// Waiting for its dependencies.
    Pending,
    /// An attempt is under way.
    Running,
    /// The step did its work.
    Succeeded,
    /// The step's check found nothing to do.
    AlreadyDone,
    /// The step is not wanted on this node.
    Skipped {
        /// Why, in words (configuration, or a host fact such as "no EFA interface").
        reason: String,
    },
    /// The step failed and will not be tried again by this run of the agent.
    Failed {
        /// Whether the last error was of a kind that retrying could help.
        retryable: bool,
    },
    /// A step this one depends on failed.
    Blocked {
        /// The failed step.
        by: String,
    },
}

impl StepState {
    /// Satisfied steps let their dependents run.
    pub fn is_satisfied(&self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::AlreadyDone | StepState::Skipped { .. }
        )
    }

    /// True for the states a step ends this run of the agent in.
    pub fn is_final(&self) -> bool {
        !matches!(self, StepState::Pending | StepState::Running)
    }

    /// The word used in tables, metrics and `STATUS=` lines.
    pub fn label(&self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::AlreadyDone => "already-done",
            StepState::Skipped { .. } => "skipped",
            StepState::Failed { .. } => "failed",
            StepState::Blocked { .. } => "blocked",
        }
    }
}

/// The body of a `/readyz` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// True when every step is satisfied.
    pub ready: bool,
    /// The node's state.
    #[serde(flatten)]
    pub state: NodeState,
    /// Why the node is not ready, in words; absent when it is.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ray_version_is_read_from_install_ray_s_detail() {
        let mut step = StepStatus::pending("install-ray", vec![]);
        let mut doc = StatusDocument {
            api: crate::API_VERSION,
            node: NodeIdentity {
                cluster_name: "c".into(),
                role: Role::Head,
                node_type: "h".into(),
            },
            facts: NodeFacts::default(),
            state: NodeState::Starting,
            steps: vec![step.clone()],
            warnings: vec![],
            generated_at_ms: 0,
        };
        assert_eq!(doc.ray_version(), None, "no detail yet");
        step.detail = Some(serde_json::json!({
            "ray_version": "2.60.0",
            "python_interpreter": "python3.12",
            "python_installer": "uv 0.13.9",
            "os_packages": null,
        }));
        doc.steps = vec![step];
        assert_eq!(doc.ray_version().as_deref(), Some("2.60.0"));
    }

    #[test]
    fn step_state_is_flattened_into_the_step() {
        let step = StepStatus {
            state: StepState::Skipped {
                reason: "turned off".into(),
            },
            ..StepStatus::pending("grow-root", vec![])
        };
        let json = serde_json::to_value(&step).expect("serialises");
        assert_eq!(json["state"], "skipped");
        assert_eq!(json["reason"], "turned off");
        let back: StepStatus = serde_json::from_value(json).expect("parses");
        assert_eq!(back, step);
    }

    #[test]
    fn failed_node_state_names_the_step() {
        let state = NodeState::Failed {
            step: "install-ray".into(),
            reason: "pip exited 1".into(),
        };
        let json = serde_json::to_string(&state).expect("serialises");
        assert_eq!(
            json,
            r#"{"state":"failed","step":"install-ray","reason":"pip exited 1"}"#
        );
    }
}
