//! The OpenAI error envelope, `{"error": {"message", "type", "param", "code"}}`,
//! written by the gateway, the engine and the mock provider, and read by
//! clients that only know OpenAI's shape.
//!
//! One definition so that the services cannot drift apart: a strict client
//! parses every Flywheel error the same way whichever service sent it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The body of an error response (and of an SSE error event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// What went wrong. `param` and `code` are always present (null when
/// unknown), as OpenAI sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`,
    /// `upstream_error`, `server_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Service-specific fields next to OpenAI's (the gateway's `attempts`).
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl ErrorBody {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorObject {
                message: message.into(),
                kind: kind.into(),
                param: None,
                code: None,
                extra: Map::new(),
            },
        }
    }

    pub fn param(mut self, param: Option<impl Into<String>>) -> Self {
        self.error.param = param.map(Into::into);
        self
    }

    pub fn code(mut self, code: Option<impl Into<String>>) -> Self {
        self.error.code = code.map(Into::into);
        self
    }

    /// Adds a service-specific field (skipped if it does not serialise).
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        if let Ok(value) = serde_json::to_value(value) {
            self.error.extra.insert(key.to_owned(), value);
        }
        self
    }

    /// The JSON bytes of the body.
    pub fn to_vec(&self) -> Vec<u8> {
        // Strings and JSON values only: serialisation cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The body as one SSE event (`data: {...}\n\n`): how a stream that
    /// already started reports an error.
    pub fn to_sse_event(&self) -> Vec<u8> {
        let mut out = b"data: ".to_vec();
        out.extend_from_slice(&self.to_vec());
        out.extend_from_slice(b"\n\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_openai_with_nulls_and_extras() {
        let body = ErrorBody::new("invalid_request_error", "bad")
            .param(Some("messages"))
            .with("attempts", [1, 2]);
        let v: Value = serde_json::from_slice(&body.to_vec()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "bad", "type": "invalid_request_error",
                "param": "messages", "code": null, "attempts": [1, 2]}})
        );
        let back: ErrorBody = serde_json::from_value(v).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn sse_event_is_one_data_line() {
        let event = ErrorBody::new("upstream_error", "cut").to_sse_event();
        let text = String::from_utf8(event).unwrap();
        assert!(text.starts_with("data: {\"error\":"), "{text}");
        assert!(
            text.ends_with("}\n\n") && text.matches('\n').count() == 2,
            "{text}"
        );
    }
}
