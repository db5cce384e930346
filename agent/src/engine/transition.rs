//! The only ways a step's state may change. Each transition names the states it may leave, so
//! that a scheduling mistake is an error instead of a silently wrong status.

use rayefa_wire::{SpanKind, StepState, StepStatus};
use serde_json::Value;

use super::step::StepError;
use crate::clock::now_ms;

#[derive(Debug, thiserror::Error)]
#[error("step `{step}` cannot go from {from} to {to}")]
pub(crate) struct IllegalTransition {
    step: String,
    from: &'static str,
    to: &'static str,
}

pub(crate) trait Transitions {
    /// Pending → Running: the engine picked the step.
    fn start(&mut self) -> Result<(), IllegalTransition>;
    /// Running → Running: a new attempt of the work begins.
    fn begin_attempt(&mut self) -> Result<(), IllegalTransition>;
    /// Running → Succeeded.
    fn succeed(&mut self, detail: Option<Value>) -> Result<(), IllegalTransition>;
    /// Running → AlreadyDone.
    fn already_done(&mut self, detail: Option<Value>) -> Result<(), IllegalTransition>;
    /// Pending or Running → Skipped.
    fn skip(&mut self, reason: String) -> Result<(), IllegalTransition>;
    /// Running → Failed.
    fn fail(&mut self, error: &StepError) -> Result<(), IllegalTransition>;
    /// Pending → Blocked.
    fn block(&mut self, by: &str) -> Result<(), IllegalTransition>;
    /// Any state → the state a fresh run of the agent starts the step in: work that was done
    /// stays done; everything else is tried again (after a re-check).
    fn resume(&mut self);
}

fn guard(
    step: &StepStatus,
    allowed: fn(&StepState) -> bool,
    to: &'static str,
) -> Result<(), IllegalTransition> {
    if allowed(&step.state) {
        Ok(())
    } else {
        Err(IllegalTransition {
            step: step.name.clone(),
            from: step.state.label(),
            to,
        })
    }
}

fn running(state: &StepState) -> bool {
    matches!(state, StepState::Running)
}

fn pending(state: &StepState) -> bool {
    matches!(state, StepState::Pending)
}

impl Transitions for StepStatus {
    fn start(&mut self) -> Result<(), IllegalTransition> {
        guard(self, pending, "running")?;
        self.state = StepState::Running;
        self.started_at_ms = Some(now_ms());
        self.finished_at_ms = None;
        self.error = None;
        self.exit_code = None;
        Ok(())
    }

    fn begin_attempt(&mut self) -> Result<(), IllegalTransition> {
        guard(self, running, "running")?;
        self.attempts += 1;
        self.activity = None;
        self.open_span(SpanKind::Attempt, now_ms());
        Ok(())
    }

    fn succeed(&mut self, detail: Option<Value>) -> Result<(), IllegalTransition> {
        guard(self, running, "succeeded")?;
        self.finish(StepState::Succeeded, detail);
        Ok(())
    }

    fn already_done(&mut self, detail: Option<Value>) -> Result<(), IllegalTransition> {
        guard(self, running, "already-done")?;
        self.finish(StepState::AlreadyDone, detail);
        Ok(())
    }

    fn skip(&mut self, reason: String) -> Result<(), IllegalTransition> {
        guard(self, |s| pending(s) || running(s), "skipped")?;
        self.finish(StepState::Skipped { reason }, None);
        Ok(())
    }

    fn fail(&mut self, error: &StepError) -> Result<(), IllegalTransition> {
        guard(self, running, "failed")?;
        self.error = Some(error.to_string());
        self.exit_code = error.exit_code();
        let detail = self.detail.take();
        self.finish(
            StepState::Failed {
                retryable: error.is_retryable(),
            },
            detail,
        );
        Ok(())
    }

    fn block(&mut self, by: &str) -> Result<(), IllegalTransition> {
        guard(self, pending, "blocked")?;
        self.state = StepState::Blocked { by: by.to_owned() };
        self.activity = None;
        Ok(())
    }

    fn resume(&mut self) {
        if !matches!(self.state, StepState::Succeeded | StepState::AlreadyDone) {
            self.state = StepState::Pending;
            self.activity = None;
        }
    }
}

trait Finish {
    fn finish(&mut self, state: StepState, detail: Option<Value>);
}

impl Finish for StepStatus {
    fn finish(&mut self, state: StepState, detail: Option<Value>) {
        let now = now_ms();
        self.state = state;
        self.finished_at_ms = Some(now);
        self.activity = None;
        for span in self.spans.iter_mut().filter(|s| s.finished_at_ms.is_none()) {
            span.finished_at_ms = Some(now);
        }
        if detail.is_some() {
            self.detail = detail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending_step() -> StepStatus {
        StepStatus::pending("s", vec![])
    }

    #[test]
    fn a_pending_step_cannot_succeed_without_running() {
        let mut step = pending_step();
        let err = step.succeed(None).expect_err("illegal");
        assert_eq!(
            err.to_string(),
            "step `s` cannot go from pending to succeeded"
        );
        step.start().expect("start");
        step.begin_attempt().expect("attempt");
        step.succeed(None).expect("succeed");
        assert_eq!(step.attempts, 1);
        assert!(
            step.start().is_err(),
            "a finished step does not start again"
        );
    }

    #[test]
    fn resume_keeps_done_work_and_retries_the_rest() {
        let mut done = pending_step();
        done.start().expect("start");
        done.already_done(None).expect("done");
        done.resume();
        assert_eq!(done.state, StepState::AlreadyDone);

        let mut interrupted = pending_step();
        interrupted.start().expect("start");
        interrupted.resume();
        assert_eq!(interrupted.state, StepState::Pending);
        assert!(interrupted.start().is_ok());
    }
}
