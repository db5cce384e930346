//! Durations as the cluster file and the command line write them: seconds (`90`) or a number
//! with a unit (`90s`, `15m`, `2h`, `500ms`), at most 30 days.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// Parses `90`, `90s`, `15m`, `2h` or `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let wrong =
        || format!("`{text}` is not a duration: use a number with ms, s, m or h (90s, 15m, 2h)");
    let value: f64 = number.parse().map_err(|_| wrong())?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(wrong()),
    };
    check_duration_secs(text, seconds)
}

/// The longest duration rayefa takes anywhere: longer ones are mistakes, and far longer ones
/// overflow the clock when added to the current time.
pub const MAX_DURATION_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// `seconds` (spelled `text` by the user) as a duration of at most [`MAX_DURATION_SECS`].
pub fn check_duration_secs(text: &str, seconds: f64) -> Result<Duration, String> {
    if seconds > MAX_DURATION_SECS {
        return Err(format!(
            "`{text}` is longer than 30 days (720h), the longest duration rayefa takes"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        format!("`{text}` is not a duration: use a number with ms, s, m or h (90s, 15m, 2h)")
    })
}

/// A duration written as seconds (`90`) or with a unit (`90s`, `15m`, `2h`, `500ms`).
#[derive(Debug, Clone)]
pub enum DurationValue {
    /// Seconds.
    Seconds(f64),
    /// Text with a unit.
    Text(String),
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds, or a number with ms, s, m or h (`90s`, `15m`)")
            }
            fn visit_u64<E: de::Error>(self, secs: u64) -> Result<DurationValue, E> {
                Ok(DurationValue::Seconds(secs as f64))
            }
            fn visit_i64<E: de::Error>(self, secs: i64) -> Result<DurationValue, E> {
                Ok(DurationValue::Seconds(secs as f64))
            }
            fn visit_f64<E: de::Error>(self, secs: f64) -> Result<DurationValue, E> {
                Ok(DurationValue::Seconds(secs))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<DurationValue, E> {
                Ok(DurationValue::Text(text.to_owned()))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

impl DurationValue {
    /// The duration, or why the text is not one.
    pub fn to_duration(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Seconds(secs) => check_duration_secs(&secs.to_string(), *secs),
            DurationValue::Text(text) => parse_duration(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(
            parse_duration("720h"),
            Ok(Duration::from_secs(30 * 24 * 3600))
        );
        assert_eq!(
            parse_duration("18000000000000000000s"),
            Err(
                "`18000000000000000000s` is longer than 30 days (720h), the longest duration \
                 rayefa takes"
                    .to_owned()
            )
        );
    }
}
