//! What rayefa's test suites share, so that each helper is written once: the runner of the
//! bad-input catalogues, process helpers (tagging, finding and killing what a test's agents
//! started), a real XFS disk on a loop device, a GnuPG signer for test installers, the
//! fault-injecting HTTP server that stands in for every server a test needs, and small file
//! helpers.
//!
//! Test code only (`publish = false`). It depends on no rayefa crate, so that the agent's and
//! the orchestrator's unit tests inside `src/` can use it as a dev-dependency too.

pub mod catalogue;
pub mod fault_http;
pub mod files;
pub mod loopdev;
pub mod procs;
pub mod signing;

pub use signing::{Gpg, sha256_hex};
