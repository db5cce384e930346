//! Asking one agent for its health and status over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use rayefa_wire::{API_VERSION, StatusDocument};

/// Why an agent gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PollError {
    /// Nothing listens, or the network did not carry the request.
    #[error("no connection: {0}")]
    Connect(String),
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An HTTP status other than the expected one.
    #[error("HTTP {0}")]
    Status(u16),
    /// The body is not a status document.
    #[error("not a status document: {0}")]
    Decode(String),
    /// The agent speaks a newer status document than this orchestrator knows.
    #[error("status document version {0} is newer than this rayefa understands ({API_VERSION})")]
    NewerApi(u32),
}

/// One HTTP client shared by every request, so that connections are reused across rounds.
#[derive(Debug, Clone)]
pub(crate) struct AgentClient {
    client: reqwest::Client,
    timeout: Duration,
}

impl AgentClient {
    /// A client whose every request gives up after `timeout`.
    pub(crate) fn new(timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Agents are on private or loopback addresses: a proxy from the environment
            // would only get in the way.
            .no_proxy()
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self { client, timeout })
    }

    /// `GET /v1/status`.
    pub(crate) async fn status(&self, agent: SocketAddr) -> Result<StatusDocument, PollError> {
        let response = self
            .client
            .get(format!("http://{agent}/v1/status"))
            .send()
            .await
            .map_err(|e| self.classify(&e))?;
        if !response.status().is_success() {
            return Err(PollError::Status(response.status().as_u16()));
        }
        let body = response.bytes().await.map_err(|e| self.classify(&e))?;
        let document: StatusDocument =
            serde_json::from_slice(&body).map_err(|e| PollError::Decode(e.to_string()))?;
        if document.api > API_VERSION {
            return Err(PollError::NewerApi(document.api));
        }
        Ok(document)
    }

    /// `GET /healthz`: the agent is up and serving.
    pub(crate) async fn healthz(&self, agent: SocketAddr) -> Result<(), PollError> {
        let response = self
            .client
            .get(format!("http://{agent}/healthz"))
            .send()
            .await
            .map_err(|e| self.classify(&e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(PollError::Status(response.status().as_u16()))
        }
    }

    fn classify(&self, error: &reqwest::Error) -> PollError {
        if error.is_timeout() {
            PollError::Timeout(self.timeout)
        } else {
            // The innermost cause says it best ("Connection refused (os error 111)").
            let mut cause: &dyn std::error::Error = error;
            while let Some(next) = cause.source() {
                cause = next;
            }
            PollError::Connect(cause.to_string())
        }
    }
}
