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

/// The HTTP client for polling agents with `policy`.
pub(crate) fn agent_client(policy: &PollPolicy) -> Result<AgentClient, Error> {
    AgentClient::new(policy.request_timeout).map_err(Error::Internal)
}

/// An AWS command's failure: a provider error (exit code 3).
pub(crate) fn aws_failed(error: impl Into<AwsError>) -> Error {
    Error::Provider(ProviderError::from(error.into()))
}
