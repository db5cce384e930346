//! What a step is, as the engine sees it.

use std::sync::Arc;

use async_trait::async_trait;
use rayefa_wire::Ec2Facts;
use serde_json::Value;

use super::lock::StepPackageLock;
use super::log::StepLog;
use super::report::StepReporter;
use crate::config::Settings;
use crate::facts::Ec2Lookup;
use crate::host::{CommandOutcome, CommandRunner, CommandSpec, HostRoot};

/// One node of the bootstrap graph. A step answers three questions: is it wanted here, is it
/// already done, and how to do it. The engine knows no step by name.
#[async_trait]
pub(crate) trait Step: Send + Sync {
    /// The step's name, as in configuration and status (`grow-root`).
    fn name(&self) -> &str;

    /// Steps that must be satisfied before this one starts.
    fn depends_on(&self) -> &[&str];

    /// True for work a reboot undoes (a started daemon): the step runs again in every boot,
    /// while other completed steps stay done.
    fn once_per_boot(&self) -> bool {
        false
    }

    /// What the step would do with `settings`, in a line or a few, for `rayefa-agent plan`.
    fn plan(&self, _settings: &Settings) -> Vec<String> {
        Vec::new()
    }

    /// Whether the step should run on this node. Configuration that turns a step off is
    /// handled by the engine before this is asked.
    async fn wanted(&self, _ctx: &StepContext) -> Wanted {
        Wanted::Yes
    }

    /// The idempotency check: is the work already done (by an earlier run, the AMI, a person)?
    async fn check(&self, ctx: &StepContext) -> Result<Check, StepError>;

    /// Does the work.
    async fn run(&self, ctx: &StepContext) -> Result<Outcome, StepError>;
}

/// The answer of [`Step::wanted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wanted {
    Yes,
    /// Not wanted here; the reason is shown in status.
    Skip(String),
}

/// The answer of [`Step::check`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Check {
    /// Nothing to do; the detail is shown in status.
    Done(Option<Value>),
    NotDone,
}

/// How a successful [`Step::run`] ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The work is done.
    Done(Option<Value>),
    /// The work needs a reboot to take effect; after the boot the step is checked again.
    RebootRequired {
        /// Why, in words.
        reason: String,
        detail: Option<Value>,
    },
}

/// Why an attempt failed. The engine retries only what [`StepError::is_retryable`] allows.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    /// A command ran and failed.
    #[error("`{command}` {status}{}", tail_suffix(.output_tail))]
    Command {
        command: String,
        status: String,
        exit_code: Option<i32>,
        output_tail: String,
        retryable: bool,
    },
    /// A process could not be started, a file could not be read.
    #[error("{0}")]
    Io(String),
    /// The attempt ran out of time.
    #[error("timed out after {0} s")]
    TimedOut(u64),
    /// Something that another attempt may fix (a network error, a busy lock).
    #[error("{0}")]
    Transient(String),
    /// Something no retry fixes (bad configuration, a checksum mismatch).
    #[error("{0}")]
    Fatal(String),
}

fn tail_suffix(tail: &str) -> String {
    let tail = tail.trim();
    if tail.is_empty() {
        String::new()
    } else {
        let last_lines: Vec<&str> = tail.lines().rev().take(3).collect();
        let shown: Vec<&str> = last_lines.into_iter().rev().collect();
        format!(": {}", shown.join(" | "))
    }
}

impl StepError {
    /// Whether another attempt may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            StepError::Command { retryable, .. } => *retryable,
            StepError::Io(_) | StepError::Fatal(_) => false,
            StepError::TimedOut(_) | StepError::Transient(_) => true,
        }
    }

    /// The exit code of the failed command, if a command failed.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        match self {
            StepError::Command { exit_code, .. } => *exit_code,
            _ => None,
        }
    }

    /// A failed command, with the end of its output in the message.
    pub(crate) fn command(spec: &CommandSpec, outcome: &CommandOutcome, retryable: bool) -> Self {
        StepError::Command {
            command: spec.to_string(),
            status: outcome.describe(),
            exit_code: outcome.code,
            output_tail: tail_of(&outcome.output, 1024),
            retryable,
        }
    }

    /// A file or process error, with what was being done.
    pub(crate) fn io(doing: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        StepError::Io(format!("{doing}: {err}"))
    }
}

/// Whether another attempt may get past a failed command: the verdict
/// [`StepContext::run_checked`] puts in the [`StepError::Command`] it returns.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Retry {
    /// No: what failed stays failed (a missing module, a bad argument).
    Never,
    /// The command's output (stdout and stderr) decides: true when it shows a cause that may
    /// pass, such as the network.
    IfOutput(fn(&str) -> bool),
}

impl Retry {
    /// `outcome` when `spec` succeeded, else the failure with this verdict.
    pub(crate) fn check(
        self,
        spec: &CommandSpec,
        outcome: CommandOutcome,
    ) -> Result<CommandOutcome, StepError> {
        if outcome.success() {
            return Ok(outcome);
        }
        let retryable = match self {
            Retry::Never => false,
            Retry::IfOutput(transient) => transient(&outcome.output),
        };
        Err(StepError::command(spec, &outcome, retryable))
    }
}

/// How much of a command line the step log shows; an inline script is summarised.
const COMMAND_LINE_IN_LOG: usize = 240;

/// `text`, or its first `max` bytes and how much was left out.
fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub(crate) fn tail_of(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// What a step may use: the host seams, the settings, the package-manager lock, its log and
/// its line in the status document.
#[derive(Clone)]
pub(crate) struct StepContext {
    pub(crate) root: HostRoot,
    pub(crate) runner: Arc<dyn CommandRunner>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) package_lock: StepPackageLock,
    pub(crate) log: StepLog,
    pub(crate) report: StepReporter,
    pub(crate) ec2: Ec2Lookup,
}

impl StepContext {
    /// Runs a command with the configured environment, its output going to the step's log.
    pub(crate) async fn run(&self, spec: CommandSpec) -> Result<CommandOutcome, StepError> {
        let spec = CommandSpec {
            env: self
                .settings
                .environment
                .iter()
                .chain(spec.env.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..spec
        };
        self.log.note(&format!(
            "$ {}",
            shorten(&spec.to_string(), COMMAND_LINE_IN_LOG)
        ));
        self.runner
            .run(&spec, &self.log)
            .await
            .map_err(|e| StepError::Io(e.to_string()))
    }

    /// Runs a command and turns a non-zero exit into a [`StepError::Command`], retryable as
    /// `retry` judges it.
    pub(crate) async fn run_checked(
        &self,
        spec: CommandSpec,
        retry: Retry,
    ) -> Result<CommandOutcome, StepError> {
        let outcome = self.run(spec.clone()).await?;
        retry.check(&spec, outcome)
    }

    /// Says what the step is doing now (status, `STATUS=` line, log).
    pub(crate) fn activity(&self, what: impl Into<String>) {
        let what = what.into();
        self.log.note(&format!("# {what}"));
        self.report.activity(what);
    }

    /// The EC2 facts, waiting for the metadata lookup to end; `None` off EC2.
    pub(crate) async fn ec2_facts(&self) -> Option<Ec2Facts> {
        self.ec2.wait().await
    }
}
