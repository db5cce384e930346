//! The documents exchanged between rayefa's node agent and its orchestrator.
//!
//! Two documents cross the boundary: the agent's configuration file (written by the
//! orchestrator, read by the agent) and the status document (served by the agent on
//! `/v1/status`, read by the orchestrator). Both are plain serde types so that either side can
//! be written in any language; the status document carries [`API_VERSION`].

pub mod config;
pub mod decode;
pub mod efa;
pub mod pingpong;
pub mod status;
pub mod step;

pub use config::*;
pub use decode::*;
pub use efa::*;
pub use pingpong::*;
pub use status::*;
pub use step::*;

/// The version of the status document's shape. A reader refuses documents of a newer version
/// than it knows.
pub const API_VERSION: u32 = 1;
