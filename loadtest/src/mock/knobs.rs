//! Fault and behaviour knobs: the process defaults from the CLI, overridden per
//! request by `x-mock-*` headers.

use std::sync::Arc;

use http::{HeaderMap, StatusCode};

/// Output text when neither `--text` nor `x-mock-text` is given.
pub const DEFAULT_TEXT: &str = "Hello! This is the mock provider answering your request.";

const HEADER_PREFIX: &str = "x-mock-";

/// A knob header or flag that could not be understood. Reported to the client
/// as a 400 so a typo in a test fails loudly instead of silently testing the
/// wrong thing.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KnobError {
    #[error("unknown mock header {0}")]
    Unknown(String),
    #[error("invalid value {value:?} for {name}: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: &'static str,
    },
}

#[derive(Clone, Debug)]
pub struct Knobs {
    pub latency_ms: u64,
    pub ttft_ms: u64,
    pub tokens_per_s: f64,
    /// `None` means the default text, and lets JSON mode pick JSON output.
    pub text: Option<Arc<str>>,
    pub json_valid_ratio: f64,
    pub error_rate: f64,
    pub error_status: StatusCode,
    pub fail_first: u64,
    pub retry_after: Option<u64>,
    pub scenario: String,
    pub cut_after: Option<u64>,
    pub stall_after: Option<u64>,
    pub stall_ms: u64,
    pub malformed_after: Option<u64>,
    pub fault_times: Option<u64>,
    pub no_usage: bool,
    pub embedding_dim: usize,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            ttft_ms: 0,
            tokens_per_s: 0.0,
            text: None,
            json_valid_ratio: 1.0,
            error_rate: 0.0,
            error_status: StatusCode::INTERNAL_SERVER_ERROR,
            fail_first: 0,
            retry_after: None,
            scenario: String::new(),
            cut_after: None,
            stall_after: None,
            stall_ms: 60_000,
            malformed_after: None,
            fault_times: None,
            no_usage: false,
            embedding_dim: 8,
        }
    }
}

impl Knobs {
    /// Applies every `x-mock-*` header of a request on top of these knobs.
    pub fn apply_headers(&mut self, headers: &HeaderMap) -> Result<(), KnobError> {
        for (name, value) in headers {
            let name = name.as_str();
            if !name.starts_with(HEADER_PREFIX) {
                continue;
            }
            let value = value.to_str().map_err(|_| KnobError::Invalid {
                name: name.to_string(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                reason: "header value must be visible ASCII",
            })?;
            self.set(name, value)?;
        }
        Ok(())
    }

    /// Sets one knob by its header name (lower case).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), KnobError> {
        let invalid = |reason| KnobError::Invalid {
            name: name.to_string(),
            value: value.to_string(),
            reason,
        };
        let int = || {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid("expected a non-negative integer"))
        };
        let ratio = || {
            value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| invalid("expected a number in [0, 1]"))
        };
        match &name[HEADER_PREFIX.len().min(name.len())..] {
            "latency-ms" => self.latency_ms = int()?,
            "ttft-ms" => self.ttft_ms = int()?,
            "tokens-per-s" => {
                self.tokens_per_s = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r >= 0.0)
                    .ok_or_else(|| invalid("expected a non-negative number"))?
            }
            "text" => self.text = Some(value.into()),
            "json-valid-ratio" => self.json_valid_ratio = ratio()?,
            "error-rate" => self.error_rate = ratio()?,
            "error-status" => {
                self.error_status = value
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .filter(|s| s.as_u16() >= 200)
                    .ok_or_else(|| invalid("expected an HTTP status code 200..=999"))?
            }
            "fail-first" => self.fail_first = int()?,
            "retry-after" => self.retry_after = Some(int()?),
            "scenario" => self.scenario = value.to_string(),
            "cut-after" => self.cut_after = Some(int()?),
            "stall-after" => self.stall_after = Some(int()?),
            "stall-ms" => self.stall_ms = int()?,
            "malformed-after" => self.malformed_after = Some(int()?),
            "fault-times" => self.fault_times = Some(int()?),
            "no-usage" => {
                self.no_usage = match value.trim() {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => return Err(invalid("expected 1 or 0")),
                }
            }
            "embedding-dim" => {
                self.embedding_dim = int()?
                    .try_into()
                    .ok()
                    .filter(|d| (1..=65_536).contains(d))
                    .ok_or_else(|| invalid("expected 1..=65536"))?
            }
            _ => return Err(KnobError::Unknown(name.to_string())),
        }
        Ok(())
    }

    /// Whether any mid-stream fault is configured (before the fault budget).
    pub fn has_stream_faults(&self) -> bool {
        self.cut_after.is_some() || self.stall_after.is_some() || self.malformed_after.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_override_defaults() {
        let mut k = Knobs::default();
        let mut h = HeaderMap::new();
        h.insert("x-mock-fail-first", "2".parse().unwrap());
        h.insert("x-mock-text", "Hi there".parse().unwrap());
        h.insert("x-mock-no-usage", "1".parse().unwrap());
        h.insert("x-mock-error-status", "429".parse().unwrap());
        h.insert("authorization", "Bearer x".parse().unwrap());
        k.apply_headers(&h).unwrap();
        assert_eq!(k.fail_first, 2);
        assert_eq!(k.text.as_deref(), Some("Hi there"));
        assert!(k.no_usage);
        assert_eq!(k.error_status, StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn rejects_bad_values_and_unknown_headers() {
        let mut k = Knobs::default();
        assert!(matches!(
            k.set("x-mock-error-rate", "1.5"),
            Err(KnobError::Invalid { .. })
        ));
        assert!(matches!(
            k.set("x-mock-fail-first", "-1"),
            Err(KnobError::Invalid { .. })
        ));
        assert!(matches!(
            k.set("x-mock-cut-aftr", "1"),
            Err(KnobError::Unknown(_))
        ));
    }
}
