//! The gateway's error type, mapped once to OpenAI-style JSON errors (the
//! envelope shared with the engine and the mock, [`ErrorBody`]).

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flywheel_api::{error::ErrorBody, headers as fw};
use http::{header, HeaderValue, StatusCode};

use crate::{metering::AttemptSummary, router::UnknownVariant};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The request pins a variant (`x-flywheel-variant`) with a key that
    /// may not: pinning bypasses experiments and can pick the expensive
    /// fallback chain, so only keys with `pin_variants = true` may.
    #[error(
        "this API key may not pin a variant with the `{}` header (the key needs pin_variants = true)",
        fw::VARIANT
    )]
    PinForbidden,
    /// The pinned variant is not one of the route's.
    #[error(transparent)]
    UnknownVariant(#[from] UnknownVariant),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("route not found: {0}")]
    NotFound(String),
    #[error("rate limit exceeded for this API key; retry after {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("request timed out while reading the body")]
    BodyTimeout,
    /// All attempts failed. The status is 502 (bad answers), 503 (nothing
    /// reachable or every circuit open) or 504 (deadline).
    ///
    /// The client sees `message` and, per attempt, the provider, model,
    /// outcome and status, never the attempt's `reason`: a reason may quote
    /// an upstream's body (a provider's "incorrect API key" text) or a
    /// connect error naming an internal address. Reasons stay in the event
    /// and the log.
    #[error("{message}")]
    Upstream {
        status: StatusCode,
        message: String,
        attempts: Vec<AttemptSummary>,
    },
    /// An upstream rejected the request itself (400, 404, 422): the client's
    /// request is at fault, so its answer is returned as it came.
    #[error("upstream rejected the request with status {status}")]
    UpstreamRejected { status: StatusCode, body: Bytes },
    /// The event log refused a record (full, or its disk failing): the
    /// feedback was not kept, or (`capture.when_log_refuses = "refuse"`)
    /// the request was not served, so the client should send it again. The
    /// reason is in the gateway's log.
    #[error("the {0} could not be recorded right now; send it again later")]
    NotRecorded(&'static str),
    /// The gateway failed on its own (a panicked or cancelled task).
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::UnknownVariant(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PinForbidden => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Upstream { status, .. } | Self::UpstreamRejected { status, .. } => *status,
            Self::NotRecorded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error as the `data:` event that ends a stream the client has
    /// already started to read (OpenAI's form of a mid-stream error).
    pub fn sse_event(&self) -> Vec<u8> {
        let (kind, code) = self.kind();
        ErrorBody::new(kind, self.to_string())
            .code(code)
            .to_sse_event()
    }

    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::InvalidRequest { .. } => ("invalid_request_error", None),
            Self::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            Self::PinForbidden => ("invalid_request_error", Some("permission_denied")),
            Self::UnknownVariant(_) => ("invalid_request_error", Some("variant_not_found")),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            Self::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            Self::NotFound(_) => ("invalid_request_error", Some("not_found")),
            Self::RateLimited { .. } => ("rate_limit_error", Some("rate_limit_exceeded")),
            Self::BodyTimeout => ("invalid_request_error", Some("request_timeout")),
            Self::Upstream { .. } | Self::UpstreamRejected { .. } => {
                ("upstream_error", Some("upstream_failed"))
            }
            Self::NotRecorded(_) => ("api_error", Some("not_recorded")),
            Self::Internal(_) => ("internal_error", None),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::UpstreamRejected { body, .. } = self {
            let mut response = (status, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return response;
        }
        let (kind, code) = self.kind();
        let (param, attempts) = match &self {
            Self::InvalidRequest { param, .. } => (param.as_deref(), &[][..]),
            Self::ModelNotFound(_) => (Some("model"), &[][..]),
            Self::PinForbidden | Self::UnknownVariant(_) => (Some(fw::VARIANT), &[][..]),
            Self::Upstream { attempts, .. } => (None, attempts.as_slice()),
            _ => (None, &[][..]),
        };
        let mut body = ErrorBody::new(kind, self.to_string())
            .param(param)
            .code(code);
        if !attempts.is_empty() {
            let public: Vec<PublicAttempt<'_>> = attempts.iter().map(PublicAttempt::from).collect();
            body = body.with("attempts", public);
        }
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::RateLimited { retry_after_s } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        response
    }
}

/// What a client is told about one attempt: no `reason` (see
/// [`GatewayError::Upstream`]).
#[derive(serde::Serialize)]
struct PublicAttempt<'a> {
    provider: &'a str,
    model: &'a str,
    outcome: crate::metering::AttemptOutcome,
    status: Option<u16>,
}

impl<'a> From<&'a AttemptSummary> for PublicAttempt<'a> {
    fn from(a: &'a AttemptSummary) -> Self {
        Self {
            provider: &a.provider,
            model: &a.model,
            outcome: a.outcome,
            status: a.status,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::metering::AttemptOutcome;

    async fn body_of(e: GatewayError) -> (StatusCode, Value) {
        let response = e.into_response();
        let status = response.status();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_keep_openai_shape_with_nulls() {
        let (status, v) = body_of(GatewayError::invalid("bad", Some("messages"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            v,
            json!({"error": {"message": "bad", "type": "invalid_request_error",
                "param": "messages", "code": null}})
        );
        let (_, v) = body_of(GatewayError::Unauthorized).await;
        assert_eq!(
            v,
            json!({"error": {"message": "missing or invalid API key",
                "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
        );
    }

    #[tokio::test]
    async fn pinning_errors_are_a_403_and_a_400_naming_the_header() {
        let (status, v) = body_of(GatewayError::PinForbidden).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(v["error"]["param"], "x-flywheel-variant");
        assert_eq!(v["error"]["code"], "permission_denied");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("x-flywheel-variant") && message.contains("pin_variants"),
            "{message}"
        );
        let unknown = UnknownVariant {
            route: "chat".into(),
            variant: "nope".into(),
        };
        let (status, v) = body_of(unknown.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            v,
            json!({"error": {"message": "the route `chat` has no variant `nope`",
                "type": "invalid_request_error", "param": "x-flywheel-variant",
                "code": "variant_not_found"}})
        );
    }

    #[tokio::test]
    async fn upstream_errors_list_their_attempts_only_when_any() {
        let attempt = AttemptSummary {
            provider: "p".into(),
            model: "m".into(),
            outcome: AttemptOutcome::Timeout,
            status: None,
            reason: Some("slow".into()),
        };
        let (status, v) = body_of(GatewayError::Upstream {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: "deadline".into(),
            attempts: vec![attempt],
        })
        .await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            v,
            json!({"error": {"message": "deadline", "type": "upstream_error", "param": null,
                "code": "upstream_failed", "attempts": [{"provider": "p", "model": "m",
                "outcome": "timeout", "status": null}]}})
        );
        let (_, v) = body_of(GatewayError::Upstream {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "down".into(),
            attempts: Vec::new(),
        })
        .await;
        assert!(v["error"].get("attempts").is_none(), "{v}");
    }

    /// A reason quotes what an upstream said (a provider's 401 text) or where
    /// it is (a connect error's address): the client sees neither.
    #[tokio::test]
    async fn upstream_reasons_never_reach_the_client() {
        let attempt = |outcome, status, reason: &str| AttemptSummary {
            provider: "p".into(),
            model: "m".into(),
            outcome,
            status,
            reason: Some(reason.into()),
        };
        let (_, v) = body_of(GatewayError::Upstream {
            status: StatusCode::BAD_GATEWAY,
            message: "every upstream attempt failed".into(),
            attempts: vec![
                attempt(
                    AttemptOutcome::ErrorStatus,
                    Some(401),
                    "status 401: Incorrect API key provided: sk-abc",
                ),
                attempt(
                    AttemptOutcome::ConnectError,
                    None,
                    "tcp connect error: 10.1.2.3:8443 refused",
                ),
            ],
        })
        .await;
        let text = v.to_string();
        assert!(
            !text.contains("Incorrect API key") && !text.contains("10.1.2.3"),
            "{text}"
        );
        assert_eq!(v["error"]["attempts"][0]["status"], 401);
        assert_eq!(v["error"]["attempts"][1]["outcome"], "connect_error");
    }
}
