//! Telling systemd where the node is: `READY=1` once serving, a `STATUS=` line on every
//! change, `STOPPING=1` on the way out. Outside systemd (no `NOTIFY_SOCKET`) these do nothing.

use rayefa_wire::{NodeState, StatusDocument, StepState};
use sd_notify::NotifyState;
use std::sync::{Mutex, OnceLock, mpsc};

use tokio::sync::watch;

/// A message for systemd.
enum Note {
    Ready,
    Stopping,
    Status(String),
}

/// The messages go through one thread of their own: sending to the notification socket blocks
/// when the service manager is slow to read it, and that must never stall the runtime that
/// serves status and stops the agent.
fn send(note: Note) {
    static NOTIFIER: OnceLock<Option<Mutex<mpsc::Sender<Note>>>> = OnceLock::new();
    let notifier = NOTIFIER.get_or_init(|| {
        std::env::var_os("NOTIFY_SOCKET")?;
        let (tx, rx) = mpsc::channel::<Note>();
        let spawned = std::thread::Builder::new()
            .name("sd-notify".to_owned())
            .spawn(move || {
                for note in rx {
                    let result = match &note {
                        Note::Ready => sd_notify::notify(false, &[NotifyState::Ready]),
                        Note::Stopping => sd_notify::notify(false, &[NotifyState::Stopping]),
                        Note::Status(line) => {
                            sd_notify::notify(false, &[NotifyState::Status(line)])
                        }
                    };
                    if let Err(err) = result {
                        tracing::warn!("cannot notify systemd: {err}");
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Mutex::new(tx)),
            Err(err) => {
                tracing::warn!("cannot start the systemd notifier: {err}");
                None
            }
        }
    });
    if let Some(tx) = notifier {
        let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(note);
    }
}

/// The daemon is configured and its listener is bound.
pub(crate) fn ready() {
    send(Note::Ready);
}

/// The daemon is stopping.
pub(crate) fn stopping() {
    send(Note::Stopping);
}

/// Sends a `STATUS=` line whenever the text it would say changes, until the board goes away.
pub(crate) async fn forward_status(mut updates: watch::Receiver<StatusDocument>) {
    let mut last = String::new();
    loop {
        let line = status_line(&updates.borrow_and_update());
        if line != last {
            send(Note::Status(line.clone()));
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
