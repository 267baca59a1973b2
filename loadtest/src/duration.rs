//! Human-friendly durations for CLI flags ("10s", "500ms", "2m", "1.5").

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error(
        "invalid duration {0:?}: expected a number with an optional unit ms, s, m or h (e.g. 10s, 500ms)"
    )]
    Invalid(String),
}

/// Parses a non-negative duration. A bare number means seconds.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let err = || DurationError::Invalid(s.to_string());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert!(parse("ten").is_err());
        assert!(parse("5 parsecs").is_err());
        assert!(parse("").is_err());
    }
}
