//! Asking an agent's control surface to listen or ping (`POST /v1/control/pingpong/...`),
//! with the cluster's secret.

use std::net::SocketAddr;
use std::time::Duration;

use rayefa_wire::{ListenRequest, ListenerReady, PingReport, PingRequest};
use reqwest::StatusCode;

/// The largest answer read from an agent (a report is a few hundred bytes per size).
const MAX_ANSWER: usize = 256 * 1024;

/// How long an agent gets to start a listener and answer its address: the agent's own limit
/// (30 s) and a margin, so that its error arrives before ours.
const LISTEN_ANSWER: Duration = Duration::from_secs(40);

/// Why an agent did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ControlError {
    /// No connection, or no answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// 403 "disabled": the agent has no control secret at all.
    #[error("the agent has no control secret")]
    Disabled,
    /// 401 or 403: the agent's secret is not the one sent.
    #[error("the agent refused the control secret")]
    SecretRefused,
    /// 404: an agent without the control surface.
    #[error("the agent has no control surface (HTTP 404): an older rayefa-agent")]
    NoControl,
    /// The listener child could not start (no libfabric, no such provider).
    #[error("{0}")]
    ListenerFailed(String),
    /// Another refusal or an answer that is not one.
    #[error("{0}")]
    Agent(String),
}

/// One HTTP client for every control request of a check.
#[derive(Debug, Clone)]
pub(crate) struct ControlClient {
    client: reqwest::Client,
    authorization: String,
}

impl ControlClient {
    /// A client that authenticates with `secret` and gives up connecting after
    /// `connect_timeout`.
    pub(crate) fn new(secret: &str, connect_timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            // Agents are on private or loopback addresses: a proxy would only get in the way.
            .no_proxy()
            // A pooled connection the agent has closed meanwhile fails the next request
            // ("connection closed before message completed"); requests are few and long, so a
            // connection each costs nothing.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            client,
            authorization: format!("Bearer {secret}"),
        })
    }

    /// Starts a listener on `agent`.
    pub(crate) async fn listen(
        &self,
        agent: SocketAddr,
        request: &ListenRequest,
    ) -> Result<ListenerReady, ControlError> {
        let body = self
            .post(agent, "listen", request, LISTEN_ANSWER)
            .await
            .map_err(|error| match error {
                // The agent answers 500 when its listener child gave no address.
                ControlError::Agent(message) if message.starts_with("HTTP 500") => {
                    ControlError::ListenerFailed(message)
                }
                other => other,
            })?;
        serde_json::from_slice(&body)
            .map_err(|e| ControlError::Agent(format!("not a listener's address: {e}")))
    }

    /// Pings from `agent`; `limit` bounds the whole request.
    pub(crate) async fn ping(
        &self,
        agent: SocketAddr,
        request: &PingRequest,
        limit: Duration,
    ) -> Result<PingReport, ControlError> {
        let body = self.post(agent, "ping", request, limit).await?;
        serde_json::from_slice(&body)
            .map_err(|e| ControlError::Agent(format!("not a ping report: {e}")))
    }

    async fn post(
        &self,
        agent: SocketAddr,
        what: &str,
        body: &impl serde::Serialize,
        limit: Duration,
    ) -> Result<Vec<u8>, ControlError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ControlError::Agent(format!("serialising the request: {e}")))?;
        let response = self
            .client
            .post(format!("http://{agent}/v1/control/pingpong/{what}"))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(limit)
            .send()
            .await
            .map_err(|e| unreachable(&e, limit))?;
        let status = response.status();
        let mut response = response;
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(&e, limit))? {
            if answer.len() + chunk.len() > MAX_ANSWER {
                return Err(ControlError::Agent(format!(
                    "the answer exceeds {MAX_ANSWER} bytes"
                )));
            }
            answer.extend_from_slice(&chunk);
        }
        let text = || String::from_utf8_lossy(&answer).trim().to_owned();
        match status {
            StatusCode::OK => Ok(answer),
            StatusCode::FORBIDDEN if text().contains("disabled") => Err(ControlError::Disabled),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Err(ControlError::SecretRefused),
            StatusCode::NOT_FOUND => Err(ControlError::NoControl),
            other => Err(ControlError::Agent(format!(
                "HTTP {}: {}",
                other.as_u16(),
                text()
            ))),
        }
    }
}

/// A transport failure in words: the innermost cause says it best ("Connection refused").
fn unreachable(error: &reqwest::Error, limit: Duration) -> ControlError {
    if error.is_timeout() && !error.is_connect() {
        return ControlError::Unreachable(format!("no answer within {} s", limit.as_secs_f64()));
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    ControlError::Unreachable(cause.to_string())
}
