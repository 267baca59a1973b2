//! The gateway's error type, mapped once to OpenAI-style JSON errors.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

use crate::metering::AttemptSummary;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("missing or invalid API key")]
    Unauthorized,
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
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Upstream { status, .. } | Self::UpstreamRejected { status, .. } => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::InvalidRequest { .. } => ("invalid_request_error", None),
            Self::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            Self::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            Self::NotFound(_) => ("invalid_request_error", Some("not_found")),
            Self::RateLimited { .. } => ("rate_limit_error", Some("rate_limit_exceeded")),
            Self::BodyTimeout => ("invalid_request_error", Some("request_timeout")),
            Self::Upstream { .. } | Self::UpstreamRejected { .. } => {
                ("upstream_error", Some("upstream_failed"))
            }
            Self::Internal(_) => ("internal_error", None),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    attempts: &'a [AttemptSummary],
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
            Self::Upstream { attempts, .. } => (None, attempts.as_slice()),
            _ => (None, &[][..]),
        };
        let body = ErrorBody {
            error: ErrorObject {
                message: self.to_string(),
                kind,
                param,
                code,
                attempts,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Self::RateLimited { retry_after_s } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        response
    }
}
