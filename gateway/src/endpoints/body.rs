//! Reading and checking request bodies. Every problem becomes a 4xx that
//! names the field, so a client can fix its request without guessing.

// Untrusted bytes (client bodies, upstream answers): a malformed input
// must become an error, never a panic.
#![deny(clippy::indexing_slicing, clippy::string_slice, clippy::panic)]

use std::time::Duration;

use axum::body::Body;
use flywheel_api::openai::{ResponseFormat, Stop, StreamOptions};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;

use crate::error::GatewayError;

/// Longest client-chosen id or key (episode id, `user`, idempotency key):
/// each is kept in memory (the recent-inference index, the implicit
/// signals) and in every event, so its size is bounded where it comes in.
pub const MAX_ID_BYTES: usize = 256;
/// `metadata` (inference requests) and `tags` (feedback): at most this many
/// pairs, keys and values of at most these sizes (OpenAI's limits for
/// `metadata`); a value that is not a string counts as its JSON text.
pub const MAX_PAIRS: usize = 16;
pub const MAX_KEY_BYTES: usize = 64;
pub const MAX_VALUE_BYTES: usize = 512;

/// A 400 naming `param` when a client-chosen id is over [`MAX_ID_BYTES`].
pub fn check_id(id: &str, param: &str) -> Result<(), GatewayError> {
    if id.len() > MAX_ID_BYTES {
        return Err(GatewayError::invalid(
            format!(
                "`{param}` is {} bytes long; at most {MAX_ID_BYTES} are allowed",
                id.len()
            ),
            Some(param),
        ));
    }
    Ok(())
}

/// A 400 naming the field when key/value pairs (`metadata`, `tags`) are
/// over [`MAX_PAIRS`], [`MAX_KEY_BYTES`] or [`MAX_VALUE_BYTES`]; `pairs`
/// gives each key and its value's size.
pub fn check_pairs<'a>(
    param: &str,
    count: usize,
    pairs: impl IntoIterator<Item = (&'a str, usize)>,
) -> Result<(), GatewayError> {
    if count > MAX_PAIRS {
        return Err(GatewayError::invalid(
            format!("`{param}` has {count} entries; at most {MAX_PAIRS} are allowed"),
            Some(param),
        ));
    }
    for (key, value_bytes) in pairs {
        if key.len() > MAX_KEY_BYTES {
            return Err(GatewayError::invalid(
                format!("a key of `{param}` is longer than {MAX_KEY_BYTES} bytes"),
                Some(param),
            ));
        }
        if value_bytes > MAX_VALUE_BYTES {
            let field = format!("{param}.{key}");
            return Err(GatewayError::invalid(
                format!("`{field}` is longer than {MAX_VALUE_BYTES} bytes"),
                Some(&field),
            ));
        }
    }
    Ok(())
}

/// The client-chosen fields of an inference body that the gateway keeps
/// (`user`) or forwards and records (`metadata`), within their limits.
pub fn check_client_fields(body: &Value) -> Result<(), GatewayError> {
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        check_id(user, "user")?;
    }
    if let Some(metadata) = body.get("metadata").and_then(Value::as_object) {
        let size = |v: &Value| match v {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        };
        check_pairs(
            "metadata",
            metadata.len(),
            metadata.iter().map(|(k, v)| (k.as_str(), size(v))),
        )?;
    }
    Ok(())
}

/// Reads the whole body within `limit` bytes and `timeout`.
pub async fn read_json(body: Body, limit: usize, timeout: Duration) -> Result<Value, GatewayError> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| GatewayError::BodyTimeout)?;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(GatewayError::PayloadTooLarge { limit })
        }
        Err(e) => {
            return Err(GatewayError::invalid(
                format!("cannot read request body: {e}"),
                None,
            ))
        }
    };
    if bytes.is_empty() {
        return Err(GatewayError::invalid(
            "request body is empty; expected a JSON object",
            None,
        ));
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| GatewayError::invalid(format!("request body is not valid JSON: {e}"), None))?;
    if !value.is_object() {
        return Err(GatewayError::invalid(
            "request body must be a JSON object",
            None,
        ));
    }
    Ok(value)
}

/// Deserialises a typed view of the body, naming the offending field.
pub fn view<T: DeserializeOwned>(body: &Value) -> Result<T, GatewayError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde reports a missing field at its parent's path; name the field.
        let param = match inner.strip_prefix("missing field `") {
            Some(rest) => rest.trim_end_matches('`').to_owned(),
            None => path.clone(),
        };
        let message = if path == "." {
            inner
        } else {
            format!("invalid value for `{path}`: {inner}")
        };
        GatewayError::invalid(message, Some(&param))
    })
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
}

/// The fields of a chat request that the gateway reads or checks. Everything
/// else in the body (tools, logprobs, vendor extensions) passes through.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
}

impl ChatRequest {
    pub fn check(&self) -> Result<(), GatewayError> {
        if self.messages.is_empty() {
            return Err(GatewayError::invalid(
                "`messages` must contain at least one message",
                Some("messages"),
            ));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if !matches!(
                m.role.as_str(),
                "system" | "developer" | "user" | "assistant" | "tool" | "function"
            ) {
                return Err(GatewayError::invalid(
                    format!("invalid role `{}` in messages[{i}]", m.role),
                    Some(&format!("messages[{i}].role")),
                ));
            }
        }
        check_common(self.n, self.temperature, self.top_p)
    }
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Value,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
}

impl CompletionRequest {
    pub fn check(&self) -> Result<(), GatewayError> {
        let ok = match &self.prompt {
            Value::String(_) => true,
            Value::Array(items) => !items.is_empty(),
            _ => false,
        };
        if !ok {
            return Err(GatewayError::invalid(
                "`prompt` must be a string or a non-empty array",
                Some("prompt"),
            ));
        }
        check_common(self.n, self.temperature, self.top_p)
    }
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: Value,
    #[serde(default)]
    pub user: Option<String>,
}

fn check_common(
    n: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
) -> Result<(), GatewayError> {
    if let Some(n) = n {
        if !(1..=128).contains(&n) {
            return Err(GatewayError::invalid(
                "`n` must be between 1 and 128",
                Some("n"),
            ));
        }
    }
    if let Some(t) = temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(GatewayError::invalid(
                "`temperature` must be between 0 and 2",
                Some("temperature"),
            ));
        }
    }
    if let Some(p) = top_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(GatewayError::invalid(
                "`top_p` must be between 0 and 1",
                Some("top_p"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chat_err(v: Value) -> GatewayError {
        match view::<ChatRequest>(&v) {
            Err(e) => e,
            Ok(r) => r.check().unwrap_err(),
        }
    }

    #[test]
    fn names_wrong_type_field() {
        let e = chat_err(json!({"model": "m", "messages": [], "temperature": "hot"}));
        let GatewayError::InvalidRequest { message, param } = e else {
            panic!()
        };
        assert_eq!(param.as_deref(), Some("temperature"));
        assert!(message.contains("temperature"), "{message}");
    }

    #[test]
    fn names_missing_field() {
        let GatewayError::InvalidRequest { param, .. } = chat_err(json!({"model": "m"})) else {
            panic!()
        };
        assert_eq!(param.as_deref(), Some("messages"));
    }

    #[test]
    fn rejects_empty_messages_and_bad_role() {
        let GatewayError::InvalidRequest { param, .. } =
            chat_err(json!({"model": "m", "messages": []}))
        else {
            panic!()
        };
        assert_eq!(param.as_deref(), Some("messages"));
        let GatewayError::InvalidRequest { param, .. } =
            chat_err(json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}))
        else {
            panic!()
        };
        assert_eq!(param.as_deref(), Some("messages[0].role"));
    }

    #[test]
    fn accepts_json_schema_format() {
        let r: ChatRequest = view(&json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}}
        }))
        .unwrap();
        assert!(matches!(
            r.response_format,
            Some(ResponseFormat::JsonSchema { .. })
        ));
    }
}
