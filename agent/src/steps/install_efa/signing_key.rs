//! Where the OpenPGP public key that must have signed the installer comes from. A key file on
//! the node wins (a site's image may carry its own key). Otherwise the key is fetched from
//! beside the installer tarball, as AWS publishes `aws-efa-installer.key` beside its tarballs;
//! a fetched key is trusted only because [`super::verify`] then finds the pinned fingerprint
//! on it.
//!
//! Fetching can fail three ways that mean different things to the operator: the key is not
//! there (an HTTP answer no retry changes), the server cannot be reached (worth another try),
//! or a key came but it is not the pinned one (a verdict of [`super::verify`]).

use std::path::Path;

use super::download::{self, DownloadError, DownloadPolicy, Progress};

/// The name AWS gives its signing key beside the installers.
pub(crate) const KEY_FILE_NAME: &str = "aws-efa-installer.key";

/// The largest key accepted; real keys are a few KiB.
const MAX_KEY_BYTES: u64 = 1 << 20;

/// A public key and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct PublicKey {
    pub(crate) bytes: Vec<u8>,
    pub(crate) source: KeySource,
}

/// Where a [`PublicKey`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// A file on the node (the host path).
    File(String),
    /// Downloaded from this URL.
    Fetched(String),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(path) => write!(f, "{path}"),
            KeySource::Fetched(url) => write!(f, "the key fetched from {url}"),
        }
    }
}

/// Why no key could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    /// The server answered, and the key is not there.
    #[error(
        "the EFA installer's signing key is missing: there is no {file} on the node and GET {url} answered HTTP {status} (put the key at {file}, or publish {KEY_FILE_NAME} beside the installer)"
    )]
    Missing {
        file: String,
        url: String,
        status: u16,
    },
    /// The server could not be reached, or failed (5xx, throttling) every try.
    #[error(
        "the EFA installer's signing key server is unreachable: there is no {file} on the node and {reason}"
    )]
    Unreachable { file: String, reason: String },
    /// Something came back that cannot be a key (too large), or the client failed.
    #[error("cannot fetch the EFA installer's signing key: {0}")]
    Unusable(DownloadError),
    /// The key file exists and cannot be read.
    #[error("cannot read the key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

impl KeyError {
    /// Only an unreachable server may answer differently next time.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, KeyError::Unreachable { .. })
    }
}

/// Where the key sits beside the installer at `installer_url`: the same scheme, host and
/// folder, named [`KEY_FILE_NAME`].
pub(crate) fn key_url(installer_url: &str) -> String {
    let without_query = installer_url
        .split(['?', '#'])
        .next()
        .unwrap_or(installer_url);
    let after_scheme = without_query.find("://").map_or(0, |i| i + 3);
    match without_query[after_scheme..].rfind('/') {
        Some(slash) => format!("{}/{KEY_FILE_NAME}", &without_query[..after_scheme + slash]),
        None => format!("{without_query}/{KEY_FILE_NAME}"),
    }
}

/// The key: the file at `file` (already under the root; `host_file` names it in messages) if
/// there is one, otherwise what `url` serves.
pub(crate) async fn obtain(
    file: &Path,
    host_file: &Path,
    url: &str,
    client: &reqwest::Client,
    policy: &DownloadPolicy,
    progress: &dyn Progress,
) -> Result<PublicKey, KeyError> {
    let host = host_file.display().to_string();
    match tokio::fs::read(file).await {
        Ok(bytes) => {
            return Ok(PublicKey {
                bytes,
                source: KeySource::File(host),
            });
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(KeyError::File { path: host, source }),
    }
    match download::fetch_small(client, policy, url, MAX_KEY_BYTES, progress).await {
        Ok(bytes) => Ok(PublicKey {
            bytes,
            source: KeySource::Fetched(url.to_owned()),
        }),
        Err(err) if err.is_retryable() => Err(KeyError::Unreachable {
            file: host,
            reason: err.to_string(),
        }),
        Err(DownloadError::Status { status, .. }) => Err(KeyError::Missing {
            file: host,
            url: url.to_owned(),
            status: status.as_u16(),
        }),
        Err(err) => Err(KeyError::Unusable(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_sits_beside_the_installer() {
        assert_eq!(
            key_url("https://efa-installer.amazonaws.com/aws-efa-installer-1.45.1.tar.gz"),
            "https://efa-installer.amazonaws.com/aws-efa-installer.key"
        );
        assert_eq!(
            key_url("http://169.254.100.1:8776/efa/aws-efa-installer-1.45.1.tar.gz?x=1#y"),
            "http://169.254.100.1:8776/efa/aws-efa-installer.key"
        );
        assert_eq!(
            key_url("http://mirror.example"),
            "http://mirror.example/aws-efa-installer.key"
        );
    }

    /// Counts the retries it is told about.
    #[derive(Default)]
    struct Retries(std::sync::Mutex<u32>);

    impl Progress for Retries {
        fn bytes(&self, _: u64, _: Option<u64>) {}
        fn retrying(&self, _: &DownloadError, _: std::time::Duration) {
            *self.0.lock().expect("count") += 1;
        }
    }

    #[tokio::test]
    async fn a_server_nobody_listens_on_is_unreachable_after_the_policy_s_tries() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/{KEY_FILE_NAME}",
            closed.local_addr().expect("address")
        );
        drop(closed);
        let root = tempfile::tempdir().expect("root");
        let policy = DownloadPolicy {
            attempts: 2,
            backoff: std::time::Duration::from_millis(5),
            system_proxy: false,
            ..DownloadPolicy::default()
        };
        let retries = Retries::default();
        let err = obtain(
            &root.path().join("absent.key"),
            Path::new("/etc/rayefa/aws-efa-installer.key"),
            &url,
            &policy.client().expect("client"),
            &policy,
            &retries,
        )
        .await
        .expect_err("nobody listens");
        assert!(matches!(err, KeyError::Unreachable { .. }), "{err}");
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("unreachable") && text.contains(&url),
            "{text}"
        );
        assert_eq!(*retries.0.lock().expect("count"), 1);
    }
}
