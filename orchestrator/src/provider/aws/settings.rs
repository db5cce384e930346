//! `rayefa.aws`: how the AWS provider launches and removes instances.

use std::time::Duration;

use rayefa_cluster::Finding;
use rayefa_cluster::rayefa::{AwsSection, DurationValue};
use rayefa_cluster::settings::{at_least_one, positive_duration};
use serde_saphyr::Spanned;

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

impl AwsSettings {
    /// The settings of `section` (absent: all defaults), with a finding for every value that
    /// cannot be used (its default stands in).
    pub(crate) fn from_section(section: Option<&AwsSection>, out: &mut Vec<Finding>) -> Self {
        let section = section.cloned().unwrap_or_default();
        let mut duration = |value: &Option<Spanned<DurationValue>>, key: &str, default| {
            positive_duration(value.as_ref(), &format!("rayefa.aws.{key}"), default, out)
        };
        let launch_backoff = duration(
            &section.launch_backoff,
            "launch_backoff",
            DEFAULT_LAUNCH_BACKOFF,
        );
        let terminate_timeout = duration(
            &section.terminate_timeout,
            "terminate_timeout",
            DEFAULT_TERMINATE_TIMEOUT,
        );
        let address_timeout = duration(
            &section.address_timeout,
            "address_timeout",
            DEFAULT_ADDRESS_TIMEOUT,
        );
        AwsSettings {
            launch_attempts: at_least_one(
                section.launch_attempts.as_ref(),
                "rayefa.aws.launch_attempts",
                DEFAULT_LAUNCH_ATTEMPTS,
                out,
            ),
            launch_backoff,
            terminate_timeout,
            address_timeout,
        }
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

    fn defaults() -> AwsSettings {
        let mut findings = Vec::new();
        let settings = AwsSettings::from_section(None, &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
        settings
    }

    #[test]
    fn defaults_apply_to_an_absent_section() {
        let settings = defaults();
        assert_eq!(settings.launch_attempts, DEFAULT_LAUNCH_ATTEMPTS);
        assert_eq!(settings.launch_backoff, DEFAULT_LAUNCH_BACKOFF);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let settings = defaults();
        let first = settings.backoff(1);
        assert!(first >= Duration::from_secs(5) && first <= Duration::from_millis(6250));
        let second = settings.backoff(2);
        assert!(second >= Duration::from_secs(10) && second <= Duration::from_millis(12500));
        let late = settings.backoff(30);
        assert!(late >= MAX_LAUNCH_BACKOFF && late <= MAX_LAUNCH_BACKOFF.mul_f64(1.25));
    }

    #[test]
    fn a_bad_value_names_its_key_and_line() {
        let section: AwsSection =
            serde_saphyr::from_str("launch_attempts: 0\nlaunch_backoff: soon\n")
                .expect("parses as text");
        let mut findings = Vec::new();
        let settings = AwsSettings::from_section(Some(&section), &mut findings);
        let found: Vec<String> = findings
            .iter()
            .map(|f| f.display("f").to_string())
            .collect();
        assert_eq!(
            found,
            [
                "f:2:17: error: rayefa.aws.launch_backoff: `soon` is not a duration: use a \
                 number with ms, s, m or h (90s, 15m, 2h)",
                "f:1:18: error: rayefa.aws.launch_attempts: must be at least 1"
            ]
        );
        assert_eq!(settings.launch_attempts, DEFAULT_LAUNCH_ATTEMPTS);
    }
}
