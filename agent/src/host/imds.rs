//! The EC2 instance metadata service (IMDSv2): a session token first, then reads that carry
//! it. The one client for the instance's facts and for its role's credentials.

#[cfg(test)]
mod tests;

use std::time::Duration;

/// How long the metadata service gets to accept a connection. On EC2 it is a link-local
/// address that answers at once; off EC2 nothing does, and the caller decides it is not on EC2.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one request may take in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The life of a session token, in seconds. A session serves one lookup (a few reads of at
/// most [`REQUEST_TIMEOUT`] each) and is not kept, so five minutes is ample; a longer life
/// would only widen the window in which a leaked token is good.
const TOKEN_TTL_SECS: &str = "300";

/// A client of the metadata service at one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Imds {
    client: reqwest::Client,
    base: String,
}

impl Imds {
    /// A client of the service at `endpoint` (`http://169.254.169.254`, or a stand-in). Never
    /// through a proxy: the service answers only the instance itself.
    pub(crate) fn new(endpoint: &str) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Self {
            client,
            base: endpoint.trim_end_matches('/').to_owned(),
        })
    }

    /// Asks for a session token; the session's reads carry it.
    pub(crate) async fn session(&self) -> Result<ImdsSession, reqwest::Error> {
        let token = self
            .client
            .put(format!("{}/latest/api/token", self.base))
            .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECS)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(ImdsSession {
            imds: self.clone(),
            token: token.trim().to_owned(),
        })
    }
}

/// A session token and the client it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct ImdsSession {
    imds: Imds,
    token: String,
}

impl ImdsSession {
    /// The answer under `latest/meta-data/<path>`, without surrounding whitespace: a value, a
    /// list of one item per line or a JSON document, none of which whitespace at either end
    /// belongs to (a stand-in or proxy may add a final newline). An error status is an error
    /// that carries it, so that a caller can tell 404 (nothing there) from a failure.
    pub(crate) async fn get(&self, path: &str) -> Result<String, reqwest::Error> {
        let text = self
            .imds
            .client
            .get(format!("{}/latest/meta-data/{path}", self.imds.base))
            .header("X-aws-ec2-metadata-token", &self.token)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text.trim().to_owned())
    }
}
