//! The one package-manager lock of the node.

use std::sync::Arc;

use rayefa_wire::SpanKind;
use tokio::sync::{Mutex, MutexGuard};

use super::report::StepReporter;

/// Serialises every use of dnf, apt and the EFA installer across steps, so that two steps
/// never fight over the package database while work that needs no lock (pip downloading,
/// growing the disk) goes on beside them.
#[derive(Debug, Clone, Default)]
pub(crate) struct PackageLock(Arc<Mutex<()>>);

impl PackageLock {
    /// Waits for the lock; holding the guard is holding the lock.
    pub(crate) async fn acquire(&self) -> MutexGuard<'_, ()> {
        self.0.lock().await
    }
}

/// The package lock as one step holds it: a wait for another step's hold is recorded in the
/// step's spans, so a picture of the bootstrap shows where the lock cost time.
#[derive(Debug, Clone)]
pub(crate) struct StepPackageLock {
    lock: PackageLock,
    report: StepReporter,
}

impl StepPackageLock {
    pub(crate) fn new(lock: PackageLock, report: StepReporter) -> Self {
        Self { lock, report }
    }

    /// Waits for the lock; holding the guard is holding the lock.
    pub(crate) async fn acquire(&self) -> MutexGuard<'_, ()> {
        if let Ok(free) = self.lock.0.try_lock() {
            return free;
        }
        self.report.open_span(SpanKind::PackageLockWait);
        let guard = self.lock.acquire().await;
        self.report.close_span(SpanKind::PackageLockWait);
        guard
    }
}
