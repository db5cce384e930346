//! Fetching the installer over HTTP(S): timeouts, retries with backoff for what another try
//! can fix, and resumption of a partial file with an HTTP `Range` request where the server
//! allows it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use tokio::io::AsyncWriteExt;

/// The largest signature file accepted; real ones are a few hundred bytes.
pub(crate) const MAX_SIGNATURE_BYTES: u64 = 64 * 1024;

/// How downloads behave; the defaults suit a node, tests shorten the waits.
#[derive(Debug, Clone)]
pub(crate) struct DownloadPolicy {
    /// Tries per file, at least 1.
    pub(crate) attempts: u32,
    /// The wait after the first failed try; doubled after each further one.
    pub(crate) backoff: Duration,
    pub(crate) connect_timeout: Duration,
    /// The longest silence while reading a response.
    pub(crate) read_timeout: Duration,
    /// Whether the `HTTPS_PROXY`/`NO_PROXY` environment applies.
    pub(crate) system_proxy: bool,
}

impl Default for DownloadPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            system_proxy: true,
        }
    }
}

impl DownloadPolicy {
    /// An HTTP client with this policy's timeouts.
    pub(crate) fn client(&self) -> Result<reqwest::Client, DownloadError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .user_agent(concat!("rayefa-agent/", env!("CARGO_PKG_VERSION")));
        if !self.system_proxy {
            builder = builder.no_proxy();
        }
        builder
            .build()
            .map_err(|e| DownloadError::Client(error_chain(&e)))
    }

    fn wait_after(&self, attempt: u32) -> Duration {
        self.backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(Duration::from_secs(120))
    }
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DownloadError {
    #[error("cannot make an HTTP client: {0}")]
    Client(String),
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("GET {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("GET {url}: the body ended after {got} of {expected} bytes")]
    Truncated {
        url: String,
        got: u64,
        expected: u64,
    },
    #[error(
        "GET {url}: asked for bytes from {asked}, the server answered `Content-Range: {answered}`"
    )]
    BadRange {
        url: String,
        asked: u64,
        answered: String,
    },
    #[error("GET {url}: more than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

impl DownloadError {
    /// Whether another try may succeed: network trouble, truncation, server errors, throttling.
    /// A missing file (404), a refused request or a local file error will not mend.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            DownloadError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
            DownloadError::Network { .. }
            | DownloadError::Truncated { .. }
            | DownloadError::BadRange { .. } => true,
            DownloadError::Client(_)
            | DownloadError::TooLarge { .. }
            | DownloadError::File { .. } => false,
        }
    }

    fn network(url: &str, err: &reqwest::Error) -> Self {
        DownloadError::Network {
            url: url.to_owned(),
            reason: error_chain(err),
        }
    }

    fn file(path: &Path, source: std::io::Error) -> Self {
        DownloadError::File {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Told how a download goes, to show it.
pub(crate) trait Progress: Send + Sync {
    /// `bytes` of `total` (when known) are on disk.
    fn bytes(&self, bytes: u64, total: Option<u64>);
    /// A try failed and another follows after `wait`.
    fn retrying(&self, error: &DownloadError, wait: Duration);
}

/// A file on disk, whole as far as the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetched {
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
    /// Where the bytes of the last request began when it continued a partial file.
    pub(crate) resumed_from: Option<u64>,
    /// The file was already complete from an earlier run; nothing was fetched.
    pub(crate) reused: bool,
    /// HTTP requests made.
    pub(crate) requests: u32,
}

/// The file beside `dest` that holds a download in progress.
pub(crate) fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Downloads `url` to `dest`, through `dest.part`, which survives failed tries and restarts
/// so that the next try asks only for the rest. An existing `dest` is taken as complete
/// (the caller verifies it).
pub(crate) async fn download_file(
    client: &reqwest::Client,
    policy: &DownloadPolicy,
    url: &str,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<Fetched, DownloadError> {
    if let Ok(meta) = tokio::fs::metadata(dest).await
        && meta.is_file()
    {
        return Ok(Fetched {
            path: dest.to_owned(),
            bytes: meta.len(),
            resumed_from: None,
            reused: true,
            requests: 0,
        });
    }
    if let Some(dir) = dest.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| DownloadError::file(dir, e))?;
    }
    let partial = partial_path(dest);
    let mut attempt = 1;
    loop {
        let have = file_len(&partial).await;
        match fetch_once(client, url, &partial, have, progress).await {
            Ok((start, bytes)) => {
                tokio::fs::rename(&partial, dest)
                    .await
                    .map_err(|e| DownloadError::file(dest, e))?;
                return Ok(Fetched {
                    path: dest.to_owned(),
                    bytes,
                    resumed_from: (start > 0).then_some(start),
                    reused: false,
                    requests: attempt,
                });
            }
            Err(err) if err.is_retryable() && attempt < policy.attempts => {
                let wait = policy.wait_after(attempt);
                progress.retrying(&err, wait);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

async fn file_len(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map_or(0, |m| m.len())
}

/// One request: appends to `partial` from byte `have` (or rewrites it when the server sends
/// the whole file); answers where the bytes received began and the complete length.
async fn fetch_once(
    client: &reqwest::Client,
    url: &str,
    partial: &Path,
    have: u64,
    progress: &dyn Progress,
) -> Result<(u64, u64), DownloadError> {
    let mut request = client.get(url);
    if have > 0 {
        request = request.header(RANGE, format!("bytes={have}-"));
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| DownloadError::network(url, &e))?;
    let status = response.status();
    let content_range = response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (start, total) = match status {
        StatusCode::PARTIAL_CONTENT => {
            let answered = content_range.unwrap_or_default();
            match ContentRange::parse(&answered) {
                Some(ContentRange::Bytes { first, total }) if first == have => (have, total),
                _ => {
                    // Not the part asked for: start over rather than splice bytes together.
                    remove_if_present(partial).await?;
                    return Err(DownloadError::BadRange {
                        url: url.to_owned(),
                        asked: have,
                        answered,
                    });
                }
            }
        }
        StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
            let answered = content_range.unwrap_or_default();
            if let Some(ContentRange::Unsatisfied { total }) = ContentRange::parse(&answered)
                && total == have
            {
                return Ok((have, have));
            }
            remove_if_present(partial).await?;
            return Err(DownloadError::BadRange {
                url: url.to_owned(),
                asked: have,
                answered,
            });
        }
        // A server that ignores `Range` sends the whole file again.
        StatusCode::OK => (0, response.content_length()),
        _ => {
            return Err(DownloadError::Status {
                url: url.to_owned(),
                status,
            });
        }
    };

    let mut file = if start == 0 {
        tokio::fs::File::create(partial).await
    } else {
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(partial)
            .await
    }
    .map_err(|e| DownloadError::file(partial, e))?;
    let mut written = start;
    progress.bytes(written, total);
    let streamed = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if let Err(e) = file.write_all(&chunk).await {
                    break Err(DownloadError::file(partial, e));
                }
                written += chunk.len() as u64;
                progress.bytes(written, total);
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(DownloadError::network(url, &e)),
        }
    };
    // What arrived before a failure is kept for the next try to resume from.
    file.flush()
        .await
        .map_err(|e| DownloadError::file(partial, e))?;
    file.sync_all()
        .await
        .map_err(|e| DownloadError::file(partial, e))?;
    streamed?;
    match total {
        Some(expected) if written != expected => Err(DownloadError::Truncated {
            url: url.to_owned(),
            got: written,
            expected,
        }),
        _ => Ok((start, written)),
    }
}

async fn remove_if_present(path: &Path) -> Result<(), DownloadError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DownloadError::file(path, e)),
    }
}

/// Fetches a small file (a signature) into memory, with the same retries.
pub(crate) async fn fetch_small(
    client: &reqwest::Client,
    policy: &DownloadPolicy,
    url: &str,
    limit: u64,
    progress: &dyn Progress,
) -> Result<Vec<u8>, DownloadError> {
    let mut attempt = 1;
    loop {
        match fetch_small_once(client, url, limit).await {
            Err(err) if err.is_retryable() && attempt < policy.attempts => {
                let wait = policy.wait_after(attempt);
                progress.retrying(&err, wait);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}

async fn fetch_small_once(
    client: &reqwest::Client,
    url: &str,
    limit: u64,
) -> Result<Vec<u8>, DownloadError> {
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| DownloadError::network(url, &e))?;
    if response.status() != StatusCode::OK {
        return Err(DownloadError::Status {
            url: url.to_owned(),
            status: response.status(),
        });
    }
    let too_large = || DownloadError::TooLarge {
        url: url.to_owned(),
        limit,
    };
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let expected = response.content_length();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| DownloadError::network(url, &e))?
    {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(too_large());
        }
    }
    match expected {
        Some(expected) if body.len() as u64 != expected => Err(DownloadError::Truncated {
            url: url.to_owned(),
            got: body.len() as u64,
            expected,
        }),
        _ => Ok(body),
    }
}

/// A `Content-Range` header value (RFC 9110 §14.4).
#[derive(Debug, Clone, PartialEq, Eq)]
enum ContentRange {
    /// `bytes first-last/total` (total may be `*`).
    Bytes { first: u64, total: Option<u64> },
    /// `bytes */total`, the answer to an unsatisfiable range.
    Unsatisfied { total: u64 },
}

impl ContentRange {
    fn parse(value: &str) -> Option<Self> {
        let rest = value.trim().strip_prefix("bytes")?.trim_start();
        let (range, total) = rest.split_once('/')?;
        let total = total.trim();
        if range.trim() == "*" {
            return total
                .parse()
                .ok()
                .map(|total| ContentRange::Unsatisfied { total });
        }
        let (first, last) = range.trim().split_once('-')?;
        let first: u64 = first.trim().parse().ok()?;
        let last: u64 = last.trim().parse().ok()?;
        if last < first {
            return None;
        }
        let total = if total == "*" {
            None
        } else {
            let total: u64 = total.parse().ok()?;
            if last >= total {
                return None;
            }
            Some(total)
        };
        Some(ContentRange::Bytes { first, total })
    }
}

/// An error with its causes, which reqwest keeps out of its own message.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(
            ContentRange::parse("bytes 100-199/200"),
            Some(ContentRange::Bytes {
                first: 100,
                total: Some(200)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 0-9/*"),
            Some(ContentRange::Bytes {
                first: 0,
                total: None
            })
        );
        assert_eq!(
            ContentRange::parse("bytes */200"),
            Some(ContentRange::Unsatisfied { total: 200 })
        );
        for bad in [
            "",
            "bytes",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes a-b/c",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn classifies_what_a_retry_can_fix() {
        let status = |code: u16| DownloadError::Status {
            url: "u".to_owned(),
            status: StatusCode::from_u16(code).expect("status"),
        };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!status(403).is_retryable());
        assert!(
            DownloadError::Truncated {
                url: "u".to_owned(),
                got: 1,
                expected: 2
            }
            .is_retryable()
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = DownloadPolicy {
            backoff: Duration::from_secs(2),
            ..DownloadPolicy::default()
        };
        assert_eq!(policy.wait_after(1), Duration::from_secs(2));
        assert_eq!(policy.wait_after(3), Duration::from_secs(8));
        assert_eq!(policy.wait_after(30), Duration::from_secs(120));
    }

    #[test]
    fn the_partial_file_sits_beside_the_destination() {
        assert_eq!(
            partial_path(Path::new("/var/lib/rayefa/downloads/x.tar.gz")),
            PathBuf::from("/var/lib/rayefa/downloads/x.tar.gz.part")
        );
    }
}
