//! One signed EC2 `CreateTags` call, as the Query API takes it.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

/// The EC2 API version the Query API call names.
const EC2_API_VERSION: &str = "2016-11-15";
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// A `CreateTags` request, signed and ready to send.
#[derive(Debug, Clone)]
pub(crate) struct SignedRequest {
    /// Where to POST it.
    pub(crate) url: String,
    /// Every header, including the signature's.
    pub(crate) headers: Vec<(String, String)>,
    /// The form-encoded body.
    pub(crate) body: String,
}

/// The signature could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the CreateTags request: {0}")]
pub(crate) struct SignError(String);

/// The form body of `CreateTags` for one instance.
pub(crate) fn create_tags_body(instance_id: &str, tags: &[(&str, String)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", "CreateTags")
        .append_pair("Version", EC2_API_VERSION)
        .append_pair("ResourceId.1", instance_id);
    for (n, (key, value)) in tags.iter().enumerate() {
        form.append_pair(&format!("Tag.{}.Key", n + 1), key)
            .append_pair(&format!("Tag.{}.Value", n + 1), value);
    }
    form.finish()
}

/// Signs `body` for `url` with SigV4 for service `ec2` in `region` at `time`.
pub(crate) fn sign_create_tags(
    url: &str,
    region: &str,
    credentials: &Credentials,
    body: String,
    time: SystemTime,
) -> Result<SignedRequest, SignError> {
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("ec2")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();
    let headers = [("content-type", CONTENT_TYPE)];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| SignError(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| SignError(e.to_string()))?
        .into_parts();
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    all.extend(
        instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    Ok(SignedRequest {
        url: url.to_owned(),
        headers: all,
        body,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn header<'a>(request: &'a SignedRequest, name: &str) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn body_is_the_query_api_form() {
        let body = create_tags_body(
            "i-0abc",
            &[
                ("rayefa-state", "failed".to_owned()),
                ("rayefa-error", "exit 1: a&b=c".to_owned()),
            ],
        );
        assert_eq!(
            body,
            "Action=CreateTags&Version=2016-11-15&ResourceId.1=i-0abc\
             &Tag.1.Key=rayefa-state&Tag.1.Value=failed\
             &Tag.2.Key=rayefa-error&Tag.2.Value=exit+1%3A+a%26b%3Dc"
        );
    }

    #[test]
    fn signature_names_the_key_date_region_and_service() {
        let credentials = Credentials::new("ASIAEXAMPLE", "secret", Some("tok".into()), None, "t");
        // 2026-11-27T16:00:00Z
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_795_200);
        let body = create_tags_body("i-0abc", &[("rayefa-state", "ready".to_owned())]);
        let sign_at = |time| {
            sign_create_tags(
                "https://ec2.eu-west-1.amazonaws.com/",
                "eu-west-1",
                &credentials,
                body.clone(),
                time,
            )
            .expect("signs")
        };
        let request = sign_at(time);
        let authorization = header(&request, "authorization").expect("authorization header");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20261127/eu-west-1/ec2/aws4_request, \
                 SignedHeaders="
            ),
            "{authorization}"
        );
        let signed_headers = authorization
            .split("SignedHeaders=")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .expect("signed headers");
        for name in ["content-type", "host", "x-amz-date", "x-amz-security-token"] {
            assert!(
                signed_headers.split(';').any(|h| h == name),
                "{signed_headers}"
            );
        }
        assert_eq!(header(&request, "x-amz-date"), Some("20261127T160000Z"));
        assert_eq!(header(&request, "x-amz-security-token"), Some("tok"));
        assert_eq!(header(&request, "content-type"), Some(CONTENT_TYPE));
        assert_eq!(request.body, body);
        // The signature covers the time: the same request a second later signs differently.
        let later = sign_at(time + Duration::from_secs(1));
        assert_ne!(
            header(&later, "authorization"),
            Some(authorization),
            "signature must depend on the time"
        );
    }
}
