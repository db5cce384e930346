//! `rayefa.aws`: how the AWS provider launches and removes instances.

use std::time::Duration;

use serde::Deserialize;

use crate::cluster::rayefa::DurationValue;

/// RunInstances attempts per launch when EC2 has no capacity, throttles or fails.
const DEFAULT_LAUNCH_ATTEMPTS: u32 = 4;
/// The wait before the second attempt.
const DEFAULT_LAUNCH_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between two attempts.
const MAX_LAUNCH_BACKOFF: Duration = Duration::from_secs(60);
/// How long `down` waits for instances to reach `terminated`.
const DEFAULT_TERMINATE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `up` waits for the head's private address.
const DEFAULT_ADDRESS_TIMEOUT: Duration = Duration::from_secs(120);

/// `rayefa.aws` as written; every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AwsSection {
    /// RunInstances attempts per launch for capacity, throttling and server errors
    /// (default 4).
    pub(crate) launch_attempts: Option<u32>,
    /// The wait before the second attempt, doubled for each further one (default 5s).
    pub(crate) launch_backoff: Option<DurationValue>,
    /// How long `down` waits for the instances to be terminated (default 10m).
    pub(crate) terminate_timeout: Option<DurationValue>,
    /// How long `up` waits for a launched instance's private address (default 2m).
    pub(crate) address_timeout: Option<DurationValue>,
}

/// `rayefa.aws`, checked, with the defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AwsSettings {
    /// At least 1.
    pub(crate) launch_attempts: u32,
    /// The wait before the second attempt.
    pub(crate) launch_backoff: Duration,
    /// How long `down` waits.
    pub(crate) terminate_timeout: Duration,
    /// How long a launch waits for a private address.
    pub(crate) address_timeout: Duration,
}

/// A `rayefa.aws` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub(crate) struct SettingError {
    /// The key, e.g. `rayefa.aws.launch_backoff`.
    pub(crate) key: String,
    /// What is wrong with its value.
    pub(crate) message: String,
}

impl AwsSettings {
    /// The settings of `section` (absent: all defaults); the error names the key.
    pub(crate) fn from_section(section: Option<&AwsSection>) -> Result<AwsSettings, SettingError> {
        let section = section.cloned().unwrap_or_default();
        let duration = |value: Option<&DurationValue>, key: &str, default: Duration| {
            value
                .map(|v| {
                    v.to_duration().map_err(|e| SettingError {
                        key: format!("rayefa.aws.{key}"),
                        message: e,
                    })
                })
                .transpose()
                .map(|d| d.unwrap_or(default))
        };
        Ok(AwsSettings {
            launch_attempts: section
                .launch_attempts
                .unwrap_or(DEFAULT_LAUNCH_ATTEMPTS)
                .max(1),
            launch_backoff: duration(
                section.launch_backoff.as_ref(),
                "launch_backoff",
                DEFAULT_LAUNCH_BACKOFF,
            )?,
            terminate_timeout: duration(
                section.terminate_timeout.as_ref(),
                "terminate_timeout",
                DEFAULT_TERMINATE_TIMEOUT,
            )?,
            address_timeout: duration(
                section.address_timeout.as_ref(),
                "address_timeout",
                DEFAULT_ADDRESS_TIMEOUT,
            )?,
        })
    }

    /// The wait after failed attempt `attempt` (1-based): doubled each time, capped, with up
    /// to a quarter of jitter so that parallel launches do not retry in step.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self
            .launch_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = doubled.min(MAX_LAUNCH_BACKOFF.max(self.launch_backoff));
        capped.mul_f64(1.0 + fastrand::f64() * 0.25)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_an_absent_section() {
        let settings = AwsSettings::from_section(None).expect("defaults");
        assert_eq!(settings.launch_attempts, DEFAULT_LAUNCH_ATTEMPTS);
        assert_eq!(settings.launch_backoff, DEFAULT_LAUNCH_BACKOFF);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let settings = AwsSettings::from_section(None).expect("defaults");
        let first = settings.backoff(1);
        assert!(first >= Duration::from_secs(5) && first <= Duration::from_millis(6250));
        let second = settings.backoff(2);
        assert!(second >= Duration::from_secs(10) && second <= Duration::from_millis(12500));
        let late = settings.backoff(30);
        assert!(late >= MAX_LAUNCH_BACKOFF && late <= MAX_LAUNCH_BACKOFF.mul_f64(1.25));
    }

    #[test]
    fn a_bad_duration_names_its_key() {
        let section: AwsSection =
            serde_saphyr::from_str("launch_backoff: soon\n").expect("parses as text");
        let error = AwsSettings::from_section(Some(&section)).expect_err("not a duration");
        assert_eq!(error.key, "rayefa.aws.launch_backoff", "{error}");
    }
}
