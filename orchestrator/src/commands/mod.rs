//! One module per command; each returns the exit code its outcome means.

pub(crate) mod check;
pub(crate) mod down;
pub(crate) mod env;
pub(crate) mod instance_types;
pub(crate) mod nodes;
pub(crate) mod prepare;
pub(crate) mod publish;
pub(crate) mod status;
pub(crate) mod timeline;
pub(crate) mod up;
pub(crate) mod user_data;
pub(crate) mod validate;

use rayefa_cluster::settings::PollPolicy;

use crate::exit::Error;
use crate::provider::ProviderError;
use crate::provider::aws::AwsError;
use crate::wait::client::AgentClient;

/// Refuses a node type the cluster file does not define (a usage error, naming the types it has).
pub(crate) fn known_node_type(cluster: &rayefa_cluster::Cluster, name: &str) -> Result<(), Error> {
    if cluster.node_type(name).is_some() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{}: node type `{name}` is not in available_node_types (which has {})",
        cluster.display_path(),
        cluster.node_type_names().join(", ")
    )))
}

/// The HTTP client for polling agents with `policy`.
pub(crate) fn agent_client(policy: &PollPolicy) -> Result<AgentClient, Error> {
    AgentClient::new(policy.request_timeout).map_err(Error::Internal)
}

/// An AWS command's failure: a provider error (exit code 3).
pub(crate) fn aws_failed(error: impl Into<AwsError>) -> Error {
    Error::Provider(ProviderError::from(error.into()))
}
