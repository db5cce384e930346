//! Telling systemd where the node is: `READY=1` once serving, a `STATUS=` line on every
//! change, `STOPPING=1` on the way out. Outside systemd (no `NOTIFY_SOCKET`) these do nothing.

use rayefa_wire::{NodeState, StatusDocument, StepState};
use sd_notify::NotifyState;
use tokio::sync::watch;

/// The daemon is configured and its listener is bound.
pub(crate) fn ready() {
    notify(&[NotifyState::Ready]);
}

/// The daemon is stopping.
pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify systemd: {err}");
    }
}

/// Sends a `STATUS=` line whenever the text it would say changes, until the board goes away.
pub(crate) async fn forward_status(mut updates: watch::Receiver<StatusDocument>) {
    let mut last = String::new();
    loop {
        let line = status_line(&updates.borrow_and_update());
        if line != last {
            notify(&[NotifyState::Status(&line)]);
            last = line;
        }
        if updates.changed().await.is_err() {
            return;
        }
    }
}

/// `step k/n: <step> (<what it is doing>)` while bootstrapping, then `ready` or
/// `failed: <step>: <reason>`.
pub(crate) fn status_line(doc: &StatusDocument) -> String {
    match &doc.state {
        NodeState::Ready => "ready".to_owned(),
        NodeState::Failed { step, reason } => {
            let first_line = reason.lines().next().unwrap_or_default();
            format!("failed: {step}: {first_line}")
        }
        NodeState::Rebooting { step } => format!("rebooting to finish {step}"),
        NodeState::Starting => "starting".to_owned(),
        NodeState::Bootstrapping => {
            let total = doc.steps.len();
            let finished = doc.steps.iter().filter(|s| s.state.is_final()).count();
            let running: Vec<_> = doc
                .steps
                .iter()
                .filter(|s| s.state == StepState::Running)
                .collect();
            match running.split_first() {
                None => format!("{finished} of {total} steps done"),
                Some((first, others)) => {
                    let activity = first.activity.as_deref().unwrap_or("running");
                    let mut line =
                        format!("step {}/{total}: {} ({activity})", finished + 1, first.name);
                    for other in others {
                        line.push_str(&format!(
                            "; {} ({})",
                            other.name,
                            other.activity.as_deref().unwrap_or("running")
                        ));
                    }
                    line
                }
            }
        }
    }
}
