//! How a pair ended, and for a failed pair its likely cause in words.

use std::time::Duration;

use serde::Serialize;

/// How one pair's test ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum PairOutcome {
    /// Every size was measured.
    Passed,
    /// The ping got no completion in time: the traffic is dropped somewhere between them.
    NoAnswer {
        /// The ping's words.
        message: String,
    },
    /// A completion came back with an error, or an answer that is not the protocol's.
    Refused {
        /// The ping's words.
        message: String,
    },
    /// `node` could not use the fabric: no libfabric, no such provider.
    LocalFailure {
        /// The node whose fabric failed.
        node: String,
        /// What failed.
        message: String,
    },
    /// `node`'s agent could not be asked: not running, or not reachable from here.
    AgentUnreachable {
        /// The node.
        node: String,
        /// Why, as the connection or the provider says.
        message: String,
    },
    /// `node`'s agent has another control secret.
    SecretRefused {
        /// The node.
        node: String,
    },
    /// `node`'s agent has no control secret at all.
    ControlDisabled {
        /// The node.
        node: String,
    },
    /// `node`'s agent took the request and could not carry it out.
    AgentError {
        /// The node.
        node: String,
        /// The agent's words.
        message: String,
    },
}

impl PairOutcome {
    /// True for [`PairOutcome::Passed`].
    pub(crate) fn passed(&self) -> bool {
        *self == PairOutcome::Passed
    }

    /// The outcome's name, as the JSON spells it.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            PairOutcome::Passed => "passed",
            PairOutcome::NoAnswer { .. } => "no_answer",
            PairOutcome::Refused { .. } => "refused",
            PairOutcome::LocalFailure { .. } => "local_failure",
            PairOutcome::AgentUnreachable { .. } => "agent_unreachable",
            PairOutcome::SecretRefused { .. } => "secret_refused",
            PairOutcome::ControlDisabled { .. } => "control_disabled",
            PairOutcome::AgentError { .. } => "agent_error",
        }
    }
}

/// The likely cause of a failed pair, for a person: what happened between `from` (which
/// pinged) and `to` (which listened), and what to look at. `None` for a passed pair.
pub(crate) fn cause(
    from: &str,
    to: &str,
    outcome: &PairOutcome,
    provider: &str,
    timeout: Duration,
) -> Option<String> {
    let seconds = timeout.as_secs_f64();
    Some(match outcome {
        PairOutcome::Passed => return None,
        PairOutcome::NoAnswer { message } => format!(
            "{from} to {to}: no completion in {seconds} s; check the security group's \
             self-referencing rules (all traffic, inbound and outbound), the placement group, and \
             any firewall on the nodes ({message})"
        ),
        PairOutcome::Refused { message } => format!(
            "{from} to {to}: the fabric refused the exchange ({message}); check that both nodes \
             have the same libfabric and provider `{provider}`, and that nothing between them \
             resets connections"
        ),
        PairOutcome::LocalFailure { node, message } => format!(
            "{from} to {to}: {node} cannot use the fabric provider `{provider}` ({message}); is \
             libfabric installed with that provider (`fi_info -p {provider}`; the node's \
             probe-efa step reports it)?"
        ),
        PairOutcome::AgentUnreachable { node, message } => format!(
            "{from} to {to}: {node}'s agent cannot be reached ({message}); is the node running \
             and its agent's port open to this machine? `rayefa status` shows it"
        ),
        PairOutcome::SecretRefused { node } => format!(
            "{from} to {to}: {node} refused the control secret: the node's control secret \
             differs from this cluster's: was it launched by another rayefa?"
        ),
        PairOutcome::ControlDisabled { node } => format!(
            "{from} to {to}: {node}'s agent has no control secret, so it takes no test: it was \
             launched without one (by an older rayefa or another tool); replace the node"
        ),
        PairOutcome::AgentError { node, message } => {
            format!("{from} to {to}: {node}'s agent could not run the test ({message})")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Duration = Duration::from_secs(5);

    fn cause_of(outcome: &PairOutcome) -> String {
        cause("worker-3", "worker-7", outcome, "efa", FIVE).expect("a failure has a cause")
    }

    #[test]
    fn a_silent_peer_points_at_the_security_group_and_placement_group() {
        let text = cause_of(&PairOutcome::NoAnswer {
            message: "no answer to hello".into(),
        });
        assert!(
            text.starts_with(
                "worker-3 to worker-7: no completion in 5 s; check the security group's \
                 self-referencing rules"
            ),
            "{text}"
        );
        assert!(text.contains("the placement group"), "{text}");
    }

    #[test]
    fn each_failure_names_the_node_and_what_to_look_at() {
        let node = || "worker-7".to_owned();
        let cases = [
            (
                PairOutcome::Refused {
                    message: "Connection refused".into(),
                },
                "same libfabric and provider `efa`",
            ),
            (
                PairOutcome::LocalFailure {
                    node: node(),
                    message: "fi_getinfo: -61".into(),
                },
                "worker-7 cannot use the fabric provider `efa` (fi_getinfo: -61)",
            ),
            (
                PairOutcome::AgentUnreachable {
                    node: node(),
                    message: "Connection refused (os error 111)".into(),
                },
                "worker-7's agent cannot be reached (Connection refused (os error 111))",
            ),
            (
                PairOutcome::SecretRefused { node: node() },
                "the node's control secret differs from this cluster's: was it launched by \
                 another rayefa?",
            ),
            (
                PairOutcome::ControlDisabled { node: node() },
                "worker-7's agent has no control secret",
            ),
            (
                PairOutcome::AgentError {
                    node: node(),
                    message: "HTTP 400: bad request".into(),
                },
                "could not run the test (HTTP 400: bad request)",
            ),
        ];
        for (outcome, expected) in cases {
            let text = cause_of(&outcome);
            assert!(text.starts_with("worker-3 to worker-7: "), "{text}");
            assert!(text.contains(expected), "{}: {text}", outcome.label());
        }
        assert_eq!(cause("a", "b", &PairOutcome::Passed, "tcp", FIVE), None);
    }

    #[test]
    fn outcomes_serialise_with_their_label() {
        let outcome = PairOutcome::SecretRefused {
            node: "head-0".into(),
        };
        let json = serde_json::to_value(&outcome).expect("json");
        assert_eq!(json["outcome"], outcome.label());
        assert_eq!(json["node"], "head-0");
    }
}
