//! One module per command; each returns the exit code its outcome means.

pub(crate) mod down;
pub(crate) mod status;
pub(crate) mod up;
pub(crate) mod user_data;
pub(crate) mod validate;

use crate::cluster::settings::PollPolicy;
use crate::exit::Error;
use crate::wait::client::AgentClient;

/// The HTTP client for polling agents with `policy`.
pub(crate) fn agent_client(policy: &PollPolicy) -> Result<AgentClient, Error> {
    AgentClient::new(policy.request_timeout).map_err(Error::Internal)
}
