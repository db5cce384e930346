//! The live status document, shared between the engine, the server and the systemd notifier.

use rayefa_wire::{SpanKind, StatusDocument, StepStatus};
use serde_json::Value;
use tokio::sync::watch;

use crate::clock::now_ms;

/// Holds the current status document; every change wakes the readers.
#[derive(Debug, Clone)]
pub(crate) struct StatusBoard {
    tx: watch::Sender<StatusDocument>,
}

impl StatusBoard {
    pub(crate) fn new(doc: StatusDocument) -> Self {
        let (tx, _) = watch::channel(doc);
        Self { tx }
    }

    /// A copy of the document as it is now.
    pub(crate) fn snapshot(&self) -> StatusDocument {
        let mut doc = self.tx.borrow().clone();
        doc.generated_at_ms = now_ms();
        doc
    }

    /// Changes the document and wakes readers.
    pub(crate) fn update(&self, change: impl FnOnce(&mut StatusDocument)) {
        self.tx.send_modify(change);
    }

    /// A receiver that sees every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<StatusDocument> {
        self.tx.subscribe()
    }

    /// The reporter for the step at `index` in the document's step list.
    pub(crate) fn reporter(&self, index: usize) -> StepReporter {
        StepReporter {
            board: self.clone(),
            index,
        }
    }
}

/// One step's handle on the status document: what a running step may change about itself.
#[derive(Debug, Clone)]
pub(crate) struct StepReporter {
    board: StatusBoard,
    index: usize,
}

impl StepReporter {
    fn with_step(&self, change: impl FnOnce(&mut StepStatus)) {
        self.board.update(|doc| {
            if let Some(step) = doc.steps.get_mut(self.index) {
                change(step);
            }
        });
    }

    /// What the step is doing now, in a few words.
    pub(crate) fn activity(&self, what: String) {
        self.with_step(|step| step.activity = Some(what));
    }

    /// Step-specific progress or results (bytes downloaded, sizes).
    pub(crate) fn detail(&self, detail: Value) {
        self.with_step(|step| step.detail = Some(detail));
    }

    /// Marks the start of a stretch of the step's time (see [`rayefa_wire::StepSpan`]).
    pub(crate) fn open_span(&self, kind: SpanKind) {
        self.with_step(|step| step.open_span(kind, now_ms()));
    }

    /// Marks the end of the latest open stretch of `kind`.
    pub(crate) fn close_span(&self, kind: SpanKind) {
        self.with_step(|step| step.close_span(kind, now_ms()));
    }

    pub(crate) fn output_tail(&self, tail: String) {
        self.with_step(|step| step.output_tail = tail);
    }
}
