//! The fabric ping-pong between two nodes: what `rayefa-agent pingpong listen` and
//! `rayefa-agent pingpong ping` print ([`ListenerReady`], [`PingReport`]), and what the agent's
//! control surface answers with them.

use serde::{Deserialize, Serialize};

/// A listener's first line: where peers reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerReady {
    /// The endpoint's fabric address (`fi_getname`), in lower-case hexadecimal.
    pub address: String,
    /// Which endpoint answers there.
    pub endpoint: FabricEndpoint,
    /// The largest message the listener receives, in bytes; pings are cut to it.
    pub max_message: u64,
}

/// The libfabric endpoint a ping-pong ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricEndpoint {
    /// `fi_info->fabric_attr->prov_name` (`tcp;ofi_rxm`, `efa`).
    pub provider: String,
    /// The fabric's name.
    pub fabric: String,
    /// The domain's name (`rdmap0s31-rdm`).
    pub domain: String,
}

/// What one ping of a peer measured, or why it measured nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingReport {
    /// The peer's fabric address, as given.
    pub peer: String,
    /// The local endpoint, once it was opened.
    pub endpoint: Option<FabricEndpoint>,
    /// One entry per message size, in the order asked.
    #[serde(default)]
    pub results: Vec<SizeResult>,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: PingOutcome,
}

/// The figures for one message size, defined as libfabric's `fi_pingpong` defines them, so
/// that the two compare: latency is half a round trip, bandwidth counts the bytes that crossed
/// in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeResult {
    /// Bytes per message.
    pub size: u64,
    /// Round trips timed (after a few untimed ones).
    pub iterations: u64,
    /// Half the mean round trip, in microseconds (`fi_pingpong`'s `usec/xfer`).
    pub latency_us: f64,
    /// Bytes moved both ways per second, in megabytes (10^6) per second (`fi_pingpong`'s
    /// `MB/sec`).
    pub bandwidth_mb_s: f64,
}

/// How a ping ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PingOutcome {
    /// Every size was measured.
    Passed,
    /// The peer did not answer in time: nothing came back, or it stopped answering.
    NoAnswer {
        /// What was being waited for, and for how long.
        message: String,
    },
    /// A completion came back with an error (a refused connection, a truncated message).
    Refused {
        /// The negative fi_errno, when libfabric gave one.
        code: Option<i32>,
        /// libfabric's words.
        message: String,
    },
    /// The local fabric could not be used: libfabric missing, no such provider, a bad address.
    LocalFailure {
        /// The negative fi_errno, when libfabric gave one.
        code: Option<i32>,
        /// What went wrong.
        message: String,
    },
}

impl PingOutcome {
    /// The child process's exit code: 0 passed, 1 the peer failed the test, 2 this side could
    /// not run it.
    pub fn exit_code(&self) -> i32 {
        match self {
            PingOutcome::Passed => 0,
            PingOutcome::NoAnswer { .. } | PingOutcome::Refused { .. } => 1,
            PingOutcome::LocalFailure { .. } => 2,
        }
    }

    /// The message of a failure.
    pub fn message(&self) -> Option<&str> {
        match self {
            PingOutcome::Passed => None,
            PingOutcome::NoAnswer { message }
            | PingOutcome::Refused { message, .. }
            | PingOutcome::LocalFailure { message, .. } => Some(message),
        }
    }
}

/// The body of the agent's `POST /v1/control/pingpong/listen`: start a listener child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenRequest {
    /// The libfabric provider (`efa`, `tcp`).
    pub provider: String,
    /// Listen on the interface of this local address (IP providers such as `tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How long the listener serves, in seconds (1 to 3600; default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_for_secs: Option<u64>,
    /// The largest message it receives, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message: Option<u64>,
    /// It stops once this many pingers said `bye`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u64>,
}

/// The body of the agent's `POST /v1/control/pingpong/ping`: ping a listener's address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingRequest {
    /// The libfabric provider (`efa`, `tcp`).
    pub provider: String,
    /// The listener's fabric address, as its [`ListenerReady`] gave it.
    pub address: String,
    /// Send from the interface of this local address (IP providers such as `tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Message sizes in bytes (default 64 and 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizes: Option<Vec<u64>>,
    /// Timed round trips per small size (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// How long to wait for any one completion, in seconds (0.1 to 60; default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_is_flattened_beside_the_results() {
        let report = PingReport {
            peer: "0200".into(),
            endpoint: None,
            results: Vec::new(),
            outcome: PingOutcome::NoAnswer {
                message: "no answer in 5 s".into(),
            },
        };
        let text = serde_json::to_string(&report).expect("serialises");
        assert!(
            text.contains(r#""outcome":"no_answer","message":"no answer in 5 s""#),
            "{text}"
        );
        let back: PingReport = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, report);
        assert_eq!(back.outcome.exit_code(), 1);
    }
}
