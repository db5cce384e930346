//! Publishes the node's state as tags on its own EC2 instance, for an orchestrator that
//! cannot reach the agent's private address: `rayefa-state`, `rayefa-step`, `rayefa-error`
//! and `rayefa-updated`, the keys the orchestrator's `aws::tags` reads.
//!
//! The EC2 Query API is called directly (SigV4 over reqwest, with the instance role's
//! credentials from the metadata service) so that the agent does not carry the AWS SDK.
//! Tags are a courtesy: a failure to write them is a warning and never stops the bootstrap.
//! The final state (`ready`, `failed`) is the exception: an orchestrator that reads only tags
//! waits for it, so it is retried, with a backoff that stops growing at
//! [`PublishConfig::max_backoff`], until EC2 accepts it or a newer state replaces it.

mod credentials;
mod request;
#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayefa_wire::{Ec2Facts, NodeState, StatusDocument};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::facts::Ec2Lookup;
use crate::host::Imds;
use credentials::{CredentialsError, RoleCredentialSource};
use request::{SignError, create_tags_body, sign_create_tags};

/// The least time between two calls to EC2, so that a thousand nodes stay well under the
/// account's API rate.
const WINDOW: Duration = Duration::from_secs(5);
/// Calls made for one publication of a passing state before giving it up.
const ATTEMPTS: u32 = 4;
/// The longest wait between two calls for the final state.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Tag values may hold 256 characters.
const TAG_VALUE_MAX: usize = 256;

/// Where and how often to publish.
#[derive(Debug, Clone)]
pub(crate) struct PublishConfig {
    /// Base URL of the instance metadata service, for the role's credentials.
    pub(crate) imds_endpoint: String,
    /// The EC2 API endpoint; `None` means the region's public endpoint.
    pub(crate) ec2_endpoint: Option<String>,
    /// The least time between two calls.
    pub(crate) window: Duration,
    /// The longest wait between two tries of the same state.
    pub(crate) max_backoff: Duration,
}

impl PublishConfig {
    /// The production pacing, with the configured endpoints.
    pub(crate) fn new(imds_endpoint: String, ec2_endpoint: Option<String>) -> Self {
        Self {
            imds_endpoint,
            ec2_endpoint,
            window: WINDOW,
            max_backoff: MAX_BACKOFF,
        }
    }
}

/// What the tags say: a publication is due when this changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Published {
    state: &'static str,
    step: String,
    error: String,
}

impl Published {
    fn of(doc: &StatusDocument) -> Self {
        let state = match &doc.state {
            NodeState::Starting => "starting",
            NodeState::Bootstrapping => "bootstrapping",
            NodeState::Ready => "ready",
            NodeState::Failed { .. } => "failed",
            NodeState::Rebooting { .. } => "rebooting",
        };
        // The orchestrator takes the failed step from the text before the colon.
        let step = match &doc.state {
            NodeState::Failed { step, .. } => format!("{step}:failed"),
            NodeState::Rebooting { step } => format!("{step}:rebooting"),
            _ => doc
                .current_step()
                .or_else(|| doc.steps.iter().max_by_key(|s| s.finished_at_ms))
                .map(|s| format!("{}:{}", s.name, s.state.label()))
                .unwrap_or_default(),
        };
        // Written empty when there is none, so a failure from before a restart does not stay.
        let error = match &doc.state {
            NodeState::Failed { reason, .. } => truncate(reason, TAG_VALUE_MAX),
            _ => String::new(),
        };
        Self { state, step, error }
    }

    /// Whether nothing follows this state unless the agent starts again: the state an
    /// orchestrator waits for.
    fn is_final(&self) -> bool {
        matches!(self.state, "ready" | "failed")
    }

    fn tags(&self, now_secs: u64) -> [(&'static str, String); 4] {
        [
            ("rayefa-state", self.state.to_owned()),
            ("rayefa-step", truncate(&self.step, TAG_VALUE_MAX)),
            ("rayefa-error", self.error.clone()),
            ("rayefa-updated", now_secs.to_string()),
        ]
    }
}

/// The first `max` characters of `text`.
fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The EC2 endpoint and the signing region for the instance: the region from the metadata
/// service's `placement/region` and the partition's domain from `services/domain` (else from
/// `services/partition`). Only a metadata service without `placement/region` (a stand-in)
/// leaves the region to the zone's name, which is wrong for Local and Wavelength Zones.
fn ec2_endpoint(facts: &Ec2Facts) -> Option<(String, String)> {
    let region = facts
        .region
        .clone()
        .or_else(|| region_of(&facts.availability_zone).map(str::to_owned))?;
    let domain = facts.domain.clone().unwrap_or_else(|| {
        match facts.partition.as_deref() {
            Some("aws-cn") => "amazonaws.com.cn",
            _ => "amazonaws.com",
        }
        .to_owned()
    });
    Some((format!("https://ec2.{region}.{domain}/"), region))
}

/// The region of an ordinary availability zone: `us-east-1a` is in `us-east-1`.
fn region_of(availability_zone: &str) -> Option<&str> {
    let region = availability_zone.strip_suffix(|c: char| c.is_ascii_lowercase())?;
    region
        .ends_with(|c: char| c.is_ascii_digit())
        .then_some(region)
}

/// Why one publication failed.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("{0}")]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("EC2 did not answer: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("EC2 answered {status}: {body}")]
    Refused {
        status: reqwest::StatusCode,
        body: String,
    },
}

impl PublishError {
    /// Throttling, server errors, expired credentials and lost connections may pass.
    fn retryable(&self) -> bool {
        match self {
            PublishError::Credentials(CredentialsError::NoRole) | PublishError::Sign(_) => false,
            PublishError::Credentials(_) | PublishError::Transport(_) => true,
            PublishError::Refused { status, body } => {
                status.is_server_error()
                    || [
                        "RequestLimitExceeded",
                        "Throttling",
                        "ExpiredToken",
                        "AuthFailure",
                    ]
                    .iter()
                    .any(|code| body.contains(code))
            }
        }
    }
}

/// Writes tags on one instance.
#[derive(Debug)]
struct TagWriter {
    client: reqwest::Client,
    credentials: RoleCredentialSource,
    url: String,
    region: String,
    instance_id: String,
}

impl TagWriter {
    async fn write(&mut self, published: &Published) -> Result<(), PublishError> {
        let credentials = self.credentials.get().await?;
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let body = create_tags_body(&self.instance_id, &published.tags(secs));
        let signed = sign_create_tags(&self.url, &self.region, &credentials, body, now)?;
        let mut request = self.client.post(&signed.url).body(signed.body);
        for (name, value) in &signed.headers {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        if body.contains("ExpiredToken") || body.contains("AuthFailure") {
            self.credentials.invalidate();
        }
        Err(PublishError::Refused {
            status,
            body: truncate(body.trim(), 500),
        })
    }
}

/// Publishes the node's state from `status` until the board goes away. Does nothing off EC2
/// (the lookup found no instance).
pub(crate) async fn run(
    config: PublishConfig,
    ec2: Ec2Lookup,
    mut status: watch::Receiver<StatusDocument>,
) {
    let Some(facts) = ec2.wait().await else {
        tracing::debug!("not on EC2: the node's state is not published as tags");
        return;
    };
    let (url, region) = match (&config.ec2_endpoint, ec2_endpoint(&facts)) {
        (Some(endpoint), found) => (
            endpoint.clone(),
            // A stand-in may tell no usual region; sign for one all the same, as the SDKs do
            // with a configured region.
            found.map_or_else(|| "us-east-1".to_owned(), |(_, region)| region),
        ),
        (None, Some(found)) => found,
        (None, None) => {
            tracing::warn!(
                zone = facts.availability_zone,
                "cannot tell the region: the node's state is not published as tags"
            );
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::warn!("cannot make an HTTP client; state tags are not published: {err}");
            return;
        }
    };
    let imds = match Imds::new(&config.imds_endpoint) {
        Ok(imds) => imds,
        Err(err) => {
            tracing::warn!("cannot make an HTTP client; state tags are not published: {err}");
            return;
        }
    };
    let mut writer = TagWriter {
        client,
        credentials: RoleCredentialSource::new(imds),
        url,
        region,
        instance_id: facts.instance_id,
    };
    tracing::info!(
        instance = writer.instance_id,
        endpoint = writer.url,
        "publishing the node's state as instance tags"
    );

    let mut sent: Option<Published> = None;
    let mut last_call: Option<Instant> = None;
    loop {
        let board_open =
            publish_latest(&mut writer, &mut status, &config, &mut sent, &mut last_call).await;
        if !board_open || status.changed().await.is_err() {
            // The board is gone; whatever it said last is the final word.
            publish_latest(&mut writer, &mut status, &config, &mut sent, &mut last_call).await;
            return;
        }
    }
}

/// Publishes the board's latest state if it differs from what was sent, no sooner than a
/// window after the previous call; changes made while waiting are folded into that one call.
/// False once the board is gone.
async fn publish_latest(
    writer: &mut TagWriter,
    status: &mut watch::Receiver<StatusDocument>,
    config: &PublishConfig,
    sent: &mut Option<Published>,
    last_call: &mut Option<Instant>,
) -> bool {
    if sent.as_ref() == Some(&Published::of(&status.borrow())) {
        return status.has_changed().is_ok();
    }
    if let Some(last) = *last_call {
        tokio::time::sleep_until(last + config.window).await;
    }
    let mut published = Published::of(&status.borrow_and_update());
    if sent.as_ref() == Some(&published) {
        return status.has_changed().is_ok();
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        // A retry carries the latest state, not the one that failed.
        published = Published::of(&status.borrow_and_update());
        let result = writer.write(&published).await;
        // The window runs from the end of a call, so that EC2 sees the calls at least a
        // window apart however long each took.
        *last_call = Some(Instant::now());
        match result {
            Ok(()) => {
                tracing::debug!(
                    state = published.state,
                    step = published.step,
                    "state tags written"
                );
                break;
            }
            Err(err) if keep_trying(&published, err.retryable(), attempt) => {
                let wait = backoff(config, attempt);
                if attempt == ATTEMPTS {
                    tracing::warn!(
                        instance = writer.instance_id,
                        state = published.state,
                        "cannot write the node's final state tags, trying until EC2 accepts \
                         them: {err}"
                    );
                } else {
                    tracing::debug!(attempt, "writing state tags failed, retrying: {err}");
                }
                tokio::time::sleep(wait).await;
            }
            Err(err) => {
                tracing::warn!(
                    instance = writer.instance_id,
                    state = published.state,
                    "cannot write the node's state tags: {err}"
                );
                break;
            }
        }
    }
    // Given up or written, this state is done with; the next change gets its own call.
    *sent = Some(published);
    status.has_changed().is_ok()
}

/// Whether to call again after the `attempt`th call failed: a passing state gets [`ATTEMPTS`]
/// calls while the failure may pass; the final state gets as many as it takes, whatever the
/// failure (a role or permission fixed later makes even a refusal pass).
fn keep_trying(published: &Published, retryable: bool, attempt: u32) -> bool {
    published.is_final() || (retryable && attempt < ATTEMPTS)
}

/// The wait after the `attempt`th failed call: a window, doubled each time up to the
/// configured ceiling, plus up to a fifth more so that nodes that failed together spread out.
fn backoff(config: &PublishConfig, attempt: u32) -> Duration {
    let wait = config
        .window
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
        .min(config.max_backoff);
    wait + wait.mul_f64(fastrand::f64() * 0.2)
}
