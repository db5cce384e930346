//! The four S3 calls the agent store needs (GetObject, HeadObject, PutObject and a presigned
//! GetObject URL), signed with SigV4 by the `aws-sigv4` crate and sent with reqwest. Both are
//! already in the build (the AWS SDK signs with aws-sigv4), so the store adds no crate; the
//! SDK's S3 crate would add a large one for four calls.
//!
//! Credentials and region come from the same aws-config chain as the EC2 client. The endpoint
//! is `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL` (or the profile's `endpoint_url`), both
//! with path-style addressing (`ENDPOINT/BUCKET/KEY`), as stand-ins such as moto need; else
//! S3's regional endpoint with virtual-hosted addressing (path-style for a bucket name with a
//! dot, which the wildcard certificate does not cover).

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_ec2::config::Region;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
    SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use reqwest::StatusCode;

/// SigV4's limit on a presigned URL's lifetime: seven days.
pub(crate) const PRESIGN_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why an S3 call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum S3Error {
    /// The credential chain gave no credentials.
    #[error("no AWS credentials for S3: {0}")]
    Credentials(String),
    /// Neither the command line, the environment nor a profile names a region.
    #[error("no AWS region to sign S3 requests for: set provider.region or AWS_REGION")]
    NoRegion,
    /// The request could not be signed.
    #[error("signing the S3 request: {0}")]
    Sign(String),
    /// The bucket does not exist.
    #[error("{doing}: the bucket {bucket} does not exist")]
    NoBucket {
        /// What was being done.
        doing: String,
        /// The bucket.
        bucket: String,
    },
    /// The bucket is in another region than the one the request was signed for.
    #[error(
        "{doing}: the bucket is in {actual}, but the request was signed for {signed}; run with \
         AWS_REGION={actual} or keep the bucket in the cluster's region"
    )]
    WrongRegion {
        /// What was being done.
        doing: String,
        /// The bucket's region.
        actual: String,
        /// The region signed for.
        signed: String,
    },
    /// S3 refused or failed.
    #[error("{doing}: S3 answered {status}{code}{message}", code = prefixed(": ", .code), message = prefixed(": ", .message))]
    Status {
        /// What was being done.
        doing: String,
        /// The HTTP status.
        status: StatusCode,
        /// S3's error code, for example `AccessDenied`.
        code: String,
        /// S3's message.
        message: String,
    },
    /// S3 could not be reached.
    #[error("{doing}: {source}")]
    Http {
        /// What was being done.
        doing: String,
        /// The transport error.
        source: reqwest::Error,
    },
}

fn prefixed(prefix: &str, text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("{prefix}{text}")
    }
}

/// Where requests go.
#[derive(Debug, Clone)]
enum Endpoint {
    /// A configured endpoint, path-style: `BASE/BUCKET/KEY`.
    Custom(String),
    /// S3's own, in the region's partition.
    Aws {
        /// `amazonaws.com`, or `amazonaws.com.cn` in the China regions.
        suffix: &'static str,
    },
}

/// An object's state, from HeadObject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Head {
    /// No object has the key.
    Missing,
    /// The object, with the SHA-256 it was stored with (`x-amz-meta-sha256`), if any.
    Present {
        /// The stored SHA-256.
        sha256: Option<String>,
    },
}

/// A client for one region.
#[derive(Debug, Clone)]
pub(crate) struct S3 {
    http: reqwest::Client,
    endpoint: Endpoint,
    region: String,
    credentials: SharedCredentialsProvider,
}

impl S3 {
    /// The client aws-config's default chain describes; `region` wins over the environment.
    pub(crate) async fn load(region: Option<&str>) -> Result<S3, S3Error> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = region {
            loader = loader.region(Region::new(region.to_owned()));
        }
        let shared = loader.load().await;
        let region = shared.region().ok_or(S3Error::NoRegion)?.to_string();
        let credentials = shared
            .credentials_provider()
            .ok_or_else(|| S3Error::Credentials("the credential chain is empty".into()))?;
        let configured = std::env::var("AWS_ENDPOINT_URL_S3")
            .ok()
            .filter(|url| !url.is_empty())
            .or_else(|| shared.endpoint_url().map(str::to_owned));
        let endpoint = match configured {
            Some(url) => Endpoint::Custom(url.trim_end_matches('/').to_owned()),
            None => Endpoint::Aws {
                suffix: if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                },
            },
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| S3Error::Http {
                doing: "starting the HTTP client".into(),
                source,
            })?;
        Ok(S3 {
            http,
            endpoint,
            region,
            credentials,
        })
    }

    /// The URL of `key` in `bucket`.
    pub(crate) fn object_url(&self, bucket: &str, key: &str) -> String {
        let key = uri_encode(key, false);
        match &self.endpoint {
            Endpoint::Custom(base) => format!("{base}/{bucket}/{key}"),
            Endpoint::Aws { suffix } if bucket.contains('.') => {
                format!("https://s3.{}.{suffix}/{bucket}/{key}", self.region)
            }
            Endpoint::Aws { suffix } => {
                format!("https://{bucket}.s3.{}.{suffix}/{key}", self.region)
            }
        }
    }

    /// The credentials to sign with now.
    pub(crate) async fn credentials(&self) -> Result<Credentials, S3Error> {
        self.credentials
            .provide_credentials()
            .await
            .map_err(|e| S3Error::Credentials(e.to_string()))
    }

    /// The object, or `None` when the bucket has no such key.
    pub(crate) async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, S3Error> {
        let doing = format!("reading s3://{bucket}/{key}");
        let response = self.send("GET", bucket, key, None, &[], &doing).await?;
        match response.status() {
            StatusCode::OK => {
                let body = response
                    .bytes()
                    .await
                    .map_err(|source| S3Error::Http { doing, source })?;
                Ok(Some(body.to_vec()))
            }
            _ => match self.failure(response, doing, bucket).await {
                S3Error::Status { code, .. } if code == "NoSuchKey" => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Whether `key` exists, and the SHA-256 it was stored with.
    pub(crate) async fn head(&self, bucket: &str, key: &str) -> Result<Head, S3Error> {
        let doing = format!("looking at s3://{bucket}/{key}");
        let response = self.send("HEAD", bucket, key, None, &[], &doing).await?;
        match response.status() {
            StatusCode::OK => Ok(Head::Present {
                sha256: response
                    .headers()
                    .get("x-amz-meta-sha256")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            }),
            // A HEAD answer has no body to tell a missing key from a missing bucket: the
            // store reads its manifest first, which does.
            StatusCode::NOT_FOUND => Ok(Head::Missing),
            _ => Err(self.failure(response, doing, bucket).await),
        }
    }

    /// Stores `body` at `key` with its SHA-256 as the object's `sha256` metadata.
    pub(crate) async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        sha256: &str,
        content_type: &str,
    ) -> Result<(), S3Error> {
        let doing = format!("uploading s3://{bucket}/{key}");
        let headers = [
            ("content-type", content_type),
            ("x-amz-meta-sha256", sha256),
        ];
        let response = self
            .send("PUT", bucket, key, Some((body, sha256)), &headers, &doing)
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.failure(response, doing, bucket).await)
        }
    }

    /// A URL anyone holding it can GET `key` with, for `expires` from `time`, signed with
    /// `credentials` (which must outlive it: a URL signed with temporary credentials stops
    /// working when their session ends).
    pub(crate) fn presign_get(
        &self,
        bucket: &str,
        key: &str,
        expires: Duration,
        credentials: &Credentials,
        time: SystemTime,
    ) -> Result<String, S3Error> {
        if expires > PRESIGN_LIMIT || expires.is_zero() {
            return Err(S3Error::Sign(format!(
                "a presigned URL lives at most {} s, not {} s",
                PRESIGN_LIMIT.as_secs(),
                expires.as_secs()
            )));
        }
        let url = self.object_url(bucket, key);
        let host = host_of(&url);
        let signed = self.sign(
            "GET",
            &url,
            &[("host", host)],
            SignableBody::UnsignedPayload,
            credentials,
            time,
            Some(expires),
        )?;
        let query: Vec<String> = signed
            .params
            .iter()
            .map(|(name, value)| format!("{name}={}", uri_encode(value, true)))
            .collect();
        Ok(format!("{url}?{}", query.join("&")))
    }

    /// Sends one request signed in its headers.
    async fn send(
        &self,
        method: &str,
        bucket: &str,
        key: &str,
        body: Option<(Vec<u8>, &str)>,
        headers: &[(&str, &str)],
        doing: &str,
    ) -> Result<reqwest::Response, S3Error> {
        let credentials = self.credentials().await?;
        let url = self.object_url(bucket, key);
        let (payload, sha256) = match &body {
            Some((_, sha256)) => (SignableBody::Precomputed((*sha256).to_owned()), *sha256),
            None => (SignableBody::Bytes(&[]), EMPTY_SHA256),
        };
        let signed = self.sign(
            method,
            &url,
            headers,
            payload,
            &credentials,
            SystemTime::now(),
            None,
        )?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| S3Error::Sign(e.to_string()))?;
        let mut request = self.http.request(method, &url);
        for (name, value) in headers
            .iter()
            .copied()
            .chain(signed.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        {
            request = request.header(name, value);
        }
        if !signed
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("x-amz-content-sha256"))
        {
            request = request.header("x-amz-content-sha256", sha256);
        }
        if let Some((bytes, _)) = body {
            request = request.body(bytes);
        }
        request.send().await.map_err(|source| S3Error::Http {
            doing: doing.to_owned(),
            source,
        })
    }

    /// The error a failed answer means.
    async fn failure(&self, response: reqwest::Response, doing: String, bucket: &str) -> S3Error {
        let status = response.status();
        let region = response
            .headers()
            .get("x-amz-bucket-region")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        let code = xml_text(&body, "Code").unwrap_or_default();
        let message = xml_text(&body, "Message").unwrap_or_default();
        if code == "NoSuchBucket" {
            return S3Error::NoBucket {
                doing,
                bucket: bucket.to_owned(),
            };
        }
        if let Some(actual) = region
            && matches!(status.as_u16(), 301 | 400)
            && (code.is_empty() || code == "PermanentRedirect" || code.contains("Region"))
        {
            return S3Error::WrongRegion {
                doing,
                actual,
                signed: self.region.clone(),
            };
        }
        S3Error::Status {
            doing,
            status,
            code,
            message,
        }
    }

    /// Signs a request for S3: the URL as given (S3 takes it encoded once), no path
    /// normalisation, the payload's SHA-256 in `x-amz-content-sha256` (header signing) or
    /// `UNSIGNED-PAYLOAD` (presigning).
    #[allow(clippy::too_many_arguments)]
    fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: SignableBody<'_>,
        credentials: &Credentials,
        time: SystemTime,
        presign: Option<Duration>,
    ) -> Result<Signed, S3Error> {
        let identity: Identity = credentials.clone().into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        match presign {
            Some(expires) => {
                settings.signature_location = SignatureLocation::QueryParams;
                settings.expires_in = Some(expires);
            }
            None => settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256,
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| S3Error::Sign(e.to_string()))?
            .into();
        let signable = SignableRequest::new(method, url, headers.iter().copied(), body)
            .map_err(|e| S3Error::Sign(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| S3Error::Sign(e.to_string()))?
            .into_parts();
        let (headers, params) = instructions.into_parts();
        Ok(Signed {
            headers: headers
                .iter()
                .map(|h| (h.name().to_owned(), h.value().to_owned()))
                .collect(),
            params: params
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.into_owned()))
                .collect(),
        })
    }
}

/// What signing adds: headers, or query parameters for a presigned URL.
#[derive(Debug)]
struct Signed {
    headers: Vec<(String, String)>,
    params: Vec<(String, String)>,
}

/// The SHA-256 of nothing.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The text of the first `<NAME>` element of an S3 error document.
fn xml_text(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].to_owned())
}

/// `host[:port]` of an `http(s)://` URL.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// SigV4's URI encoding: every byte but the unreserved characters (and `/` in a path)
/// percent-encoded.
pub(crate) fn uri_encode(text: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(endpoint: Endpoint, region: &str) -> S3 {
        S3 {
            http: reqwest::Client::new(),
            endpoint,
            region: region.to_owned(),
            credentials: SharedCredentialsProvider::new(Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "test",
            )),
        }
    }

    #[test]
    fn addressing_is_virtual_hosted_on_aws_and_path_style_elsewhere() {
        let aws = client(
            Endpoint::Aws {
                suffix: "amazonaws.com",
            },
            "eu-west-1",
        );
        assert_eq!(
            aws.object_url("bucket", "a b/c+d.rpm"),
            "https://bucket.s3.eu-west-1.amazonaws.com/a%20b/c%2Bd.rpm"
        );
        assert_eq!(
            aws.object_url("my.bucket", "k"),
            "https://s3.eu-west-1.amazonaws.com/my.bucket/k"
        );
        let moto = client(Endpoint::Custom("http://127.0.0.1:5000".into()), "x");
        assert_eq!(
            moto.object_url("bucket", "p/k"),
            "http://127.0.0.1:5000/bucket/p/k"
        );
    }

    /// The URL botocore 1.43 (`generate_presigned_url('get_object', ..., ExpiresIn=10800)`)
    /// makes for the same credentials, time, region, bucket and key, path-style: a signature
    /// bug here would be a URL S3 refuses, which moto cannot show.
    #[test]
    fn the_presigned_url_is_the_one_botocore_makes() {
        let s3 = client(
            Endpoint::Aws {
                suffix: "amazonaws.com",
            },
            "ap-northeast-1",
        );
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("FwoGZXIvYXdzEXAMPLE+/token=".into()),
            None,
            "test",
        );
        // 2026-12-03T12:00:00Z
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_299_200);
        let url = s3
            .presign_get(
                "my.bucket",
                "rayefa/rayefa-agent-0.1.0-1.x86_64.rpm",
                Duration::from_secs(10_800),
                &credentials,
                time,
            )
            .expect("presigns");
        let sorted = |url: &str| {
            let (base, query) = url.split_once('?').expect("a query");
            let mut pairs: Vec<String> = query.split('&').map(str::to_owned).collect();
            pairs.sort();
            (base.to_owned(), pairs)
        };
        assert_eq!(sorted(&url), sorted(BOTOCORE_URL));
    }

    const BOTOCORE_URL: &str = "https://s3.ap-northeast-1.amazonaws.com/my.bucket/rayefa/\
        rayefa-agent-0.1.0-1.x86_64.rpm?X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=AKIDEXAMPLE%2F20261203%2Fap-northeast-1%2Fs3%2Faws4_request\
        &X-Amz-Date=20261203T120000Z&X-Amz-Expires=10800&X-Amz-SignedHeaders=host\
        &X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE%2B%2Ftoken%3D\
        &X-Amz-Signature=45c05e8e8587494e810a72ac6412ff2d59a880968415fadcd135489c3681968d";

    #[test]
    fn presigning_stays_within_sigv4s_seven_days() {
        let s3 = client(Endpoint::Custom("http://h".into()), "r");
        let credentials = Credentials::new("a", "b", None, None, "t");
        let error = s3
            .presign_get(
                "b",
                "k",
                PRESIGN_LIMIT + Duration::from_secs(1),
                &credentials,
                SystemTime::now(),
            )
            .expect_err("too long");
        assert!(error.to_string().contains("604800"), "{error}");
    }

    #[test]
    fn errors_are_read_from_s3s_error_document() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>\
                    <Message>The specified key does not exist.</Message></Error>";
        assert_eq!(xml_text(body, "Code").as_deref(), Some("NoSuchKey"));
        assert_eq!(
            xml_text(body, "Message").as_deref(),
            Some("The specified key does not exist.")
        );
        assert_eq!(xml_text(body, "Nothing"), None);
        assert_eq!(uri_encode("a/b c~", true), "a%2Fb%20c~");
    }
}
