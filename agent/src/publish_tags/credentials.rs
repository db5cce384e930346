//! The instance role's temporary credentials, from the metadata service (IMDSv2).

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_smithy_types::date_time::{DateTime, Format};
use serde::Deserialize;

use crate::host::Imds;

/// Credentials this close to their expiry are fetched again before use.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Why the role's credentials could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CredentialsError {
    /// The metadata service did not answer, or answered with an error status.
    #[error("instance metadata service: {0}")]
    Http(#[from] reqwest::Error),
    /// The instance has no IAM role attached.
    #[error("the instance has no IAM role (no instance profile)")]
    NoRole,
    /// The credentials document is not what IMDS serves.
    #[error("unreadable role credentials: {0}")]
    Document(String),
}

/// The JSON document IMDS serves under `iam/security-credentials/<role>`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    code: Option<String>,
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

/// Fetches the role's credentials and keeps them until shortly before they expire.
#[derive(Debug)]
pub(crate) struct RoleCredentialSource {
    imds: Imds,
    cached: Option<(Credentials, SystemTime)>,
}

impl RoleCredentialSource {
    /// A source that asks the metadata service through `imds`.
    pub(crate) fn new(imds: Imds) -> Self {
        Self { imds, cached: None }
    }

    /// Valid credentials, fetched again when the cached ones are near their expiry.
    pub(crate) async fn get(&mut self) -> Result<Credentials, CredentialsError> {
        if let Some((credentials, expires)) = &self.cached
            && SystemTime::now() + REFRESH_BEFORE_EXPIRY < *expires
        {
            return Ok(credentials.clone());
        }
        let (credentials, expires) = self.fetch().await?;
        self.cached = Some((credentials.clone(), expires));
        Ok(credentials)
    }

    /// Forgets the cached credentials, after EC2 said they expired or are not valid.
    pub(crate) fn invalidate(&mut self) {
        self.cached = None;
    }

    async fn fetch(&self) -> Result<(Credentials, SystemTime), CredentialsError> {
        let session = self.imds.session().await?;
        let roles = match session.get("iam/security-credentials/").await {
            Ok(roles) => roles,
            Err(err) if err.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                return Err(CredentialsError::NoRole);
            }
            Err(err) => return Err(err.into()),
        };
        let role = roles
            .lines()
            .map(str::trim)
            .find(|r| !r.is_empty())
            .ok_or(CredentialsError::NoRole)?;
        let document = session
            .get(&format!("iam/security-credentials/{role}"))
            .await?;
        parse(&document)
    }
}

/// Reads the credentials document; the expiry is an RFC 3339 time.
fn parse(document: &str) -> Result<(Credentials, SystemTime), CredentialsError> {
    let role: RoleCredentials =
        serde_json::from_str(document).map_err(|e| CredentialsError::Document(e.to_string()))?;
    if let Some(code) = role.code.as_deref().filter(|c| *c != "Success") {
        return Err(CredentialsError::Document(format!("code {code}")));
    }
    let expires = DateTime::from_str(&role.expiration, Format::DateTime)
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
        .ok_or_else(|| {
            CredentialsError::Document(format!("expiration `{}` is not a time", role.expiration))
        })?;
    let credentials = Credentials::new(
        role.access_key_id,
        role.secret_access_key,
        Some(role.token),
        Some(expires),
        "imds-role",
    );
    Ok((credentials, expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_imds_document() {
        let (credentials, expires) = parse(
            r#"{"Code":"Success","LastUpdated":"2026-11-27T16:00:00Z","Type":"AWS-HMAC",
                "AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"secret","Token":"tok",
                "Expiration":"2026-11-27T22:00:00Z"}"#,
        )
        .expect("parses");
        assert_eq!(credentials.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(credentials.session_token(), Some("tok"));
        let secs = expires
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs();
        assert_eq!(secs, 1_795_816_800);
    }

    #[test]
    fn refuses_a_failed_document() {
        let err = parse(
            r#"{"Code":"Failed","AccessKeyId":"a","SecretAccessKey":"s","Token":"t",
                "Expiration":"2026-11-27T22:00:00Z"}"#,
        )
        .expect_err("a failed code is refused");
        assert!(err.to_string().contains("Failed"), "{err}");
    }
}
