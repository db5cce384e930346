//! The one package-manager lock of the node.

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

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
