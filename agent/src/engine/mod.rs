//! The step engine: runs the bootstrap graph with the package-manager lock, timeouts, retries
//! and a journal that survives crashes and reboots.

mod graph;
mod journal;
mod lock;
mod log;
mod report;
mod run;
#[cfg(test)]
mod run_tests;
mod step;
mod transition;

pub(crate) use graph::{GraphError, StepGraph};
pub(crate) use journal::{Journal, JournalError};
#[cfg(test)]
pub(crate) use lock::{PackageLock, StepPackageLock};
#[cfg(test)]
pub(crate) use log::StepLog;
pub(crate) use report::StatusBoard;
pub(crate) use run::{Engine, EngineEnd};
pub(crate) use step::{Check, Outcome, Retry, Step, StepContext, StepError, Wanted, tail_of};
