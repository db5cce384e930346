//! Errors of AWS calls, classified by what a caller can do about them.

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What kind of failure an AWS call met; callers retry, skip or stop on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// EC2 has no capacity for the request right now (`InsufficientInstanceCapacity` and
    /// relatives): retrying later, elsewhere or smaller can help.
    Capacity,
    /// The account's request rate was exceeded (`RequestLimitExceeded`).
    Throttled,
    /// A server error, a timeout or a broken connection: the request may or may not have
    /// taken effect, so only idempotent requests are repeated.
    Transient,
    /// The thing to create exists already (`*.Duplicate`).
    Duplicate,
    /// The thing named does not exist (`*.NotFound`, `*.Unknown`, `NoSuchEntity`,
    /// `InvalidInstanceType`).
    NotFound,
    /// Anything else: a wrong argument, missing permissions. Retrying does not help.
    Other,
}

impl ErrorKind {
    /// True when the same request may succeed if sent again after a while.
    pub(crate) fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Capacity | ErrorKind::Throttled | ErrorKind::Transient
        )
    }
}

/// An AWS call failed.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {detail}")]
pub(crate) struct ApiError {
    /// What rayefa was doing, for example "describing VPCs tagged Name=RayVPC".
    pub(crate) doing: String,
    /// The classification.
    pub(crate) kind: ErrorKind,
    /// The AWS error code, when the service answered with one.
    pub(crate) code: Option<String>,
    /// The code and message, or the transport error with its causes.
    pub(crate) detail: String,
}

impl ApiError {
    /// Classifies an SDK error; `doing` says what the call was for.
    pub(crate) fn from_sdk<E>(
        doing: impl Into<String>,
        error: SdkError<E, HttpResponse>,
    ) -> ApiError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = match &error {
            SdkError::ServiceError(_) | SdkError::ResponseError(_) => None,
            _ => Some(ErrorKind::Transient),
        };
        let code = error.code().map(str::to_owned);
        let detail = match (error.code(), error.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => DisplayErrorContext(&error).to_string(),
        };
        let http_status = match &error {
            SdkError::ServiceError(service) => Some(service.raw().status().as_u16()),
            _ => None,
        };
        let kind = status.unwrap_or_else(|| classify(code.as_deref(), http_status));
        ApiError {
            doing: doing.into(),
            kind,
            code,
            detail,
        }
    }
}

/// The kind of an error from its AWS code and HTTP status.
pub(crate) fn classify(code: Option<&str>, http_status: Option<u16>) -> ErrorKind {
    match code {
        Some(
            "InsufficientInstanceCapacity"
            | "InsufficientCapacity"
            | "InsufficientHostCapacity"
            | "InsufficientReservedInstanceCapacity"
            | "InsufficientCapacityOnOutpost",
        ) => ErrorKind::Capacity,
        Some(
            "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "SlowDown",
        ) => ErrorKind::Throttled,
        Some("InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable") => {
            ErrorKind::Transient
        }
        Some(code) if code.ends_with(".Duplicate") || code == "EntityAlreadyExists" => {
            ErrorKind::Duplicate
        }
        Some(code)
            if code.ends_with(".NotFound")
                || code.ends_with(".Unknown")
                || code == "NoSuchEntity"
                || code == "ParameterNotFound"
                || code == "InvalidInstanceType" =>
        {
            ErrorKind::NotFound
        }
        _ if http_status.is_some_and(|s| s >= 500) => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_and_throttling_codes_are_retryable_others_are_not() {
        let capacity = classify(Some("InsufficientInstanceCapacity"), Some(500));
        assert_eq!(capacity, ErrorKind::Capacity);
        assert!(capacity.is_retryable());
        assert_eq!(
            classify(Some("RequestLimitExceeded"), Some(503)),
            ErrorKind::Throttled
        );
        assert_eq!(classify(None, Some(502)), ErrorKind::Transient);
        let bad = classify(Some("InvalidParameterValue"), Some(400));
        assert_eq!(bad, ErrorKind::Other);
        assert!(!bad.is_retryable());
    }

    #[test]
    fn duplicates_and_missing_things_are_told_apart() {
        assert_eq!(
            classify(Some("InvalidPermission.Duplicate"), Some(400)),
            ErrorKind::Duplicate
        );
        assert_eq!(
            classify(Some("InvalidPlacementGroup.Unknown"), Some(400)),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify(Some("InvalidGroup.NotFound"), Some(400)),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify(Some("NoSuchEntity"), Some(404)),
            ErrorKind::NotFound
        );
    }
}
