//! The API's errors, typed, and their one mapping to an HTTP status and the
//! OpenAI envelope (`{"error": {"message", "type", "param", "code"}}`), the
//! shape every Flywheel service answers errors in.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use flywheel_api::error::ErrorBody;
use flywheel_canary_controller::{experiment::ExperimentError, ops::OpError};

use crate::queries::QueryError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing bearer token: send `Authorization: Bearer <API key or admin token>`")]
    MissingToken,
    #[error("unknown token")]
    UnknownToken,
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A feature whose flag was not given (`--gateway-url`, …).
    #[error("{0}")]
    NotConfigured(String),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Canary(#[from] OpError),
    #[error("tuner journal: {0}")]
    Journal(#[from] flywheel_tuner::service::journal::JournalError),
    #[error("gateway: {0}")]
    Gateway(#[from] reqwest::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad(message: impl Into<String>, param: &'static str) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: Some(param),
        }
    }

    /// Status, OpenAI `type` and `code`.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use flywheel_canary_controller::{controller::Error as C, store::Error as S};
        match self {
            Self::MissingToken => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "missing_token",
            ),
            Self::UnknownToken => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_token",
            ),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "permission_error", "forbidden"),
            Self::BadRequest { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found_error", "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
            Self::NotConfigured(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "not_configured",
            ),
            Self::Query(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "clickhouse",
            ),
            Self::Canary(e) => match e {
                OpError::Controller(C::Store(S::NotFound(_))) => {
                    (StatusCode::NOT_FOUND, "not_found_error", "not_found")
                }
                OpError::Controller(C::Store(S::Ambiguous(..))) => (
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "ambiguous_id",
                ),
                OpError::Controller(C::Experiment(
                    ExperimentError::NotAllowed { .. } | ExperimentError::GraceOver { .. },
                ))
                | OpError::Controller(C::Store(S::Experiment(
                    ExperimentError::NotAllowed { .. } | ExperimentError::GraceOver { .. },
                )))
                | OpError::Busy { .. }
                | OpError::Superseded { .. } => {
                    (StatusCode::CONFLICT, "invalid_request_error", "conflict")
                }
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "canary"),
            },
            Self::Journal(flywheel_tuner::service::journal::JournalError::NoSuchRun(_)) => {
                (StatusCode::NOT_FOUND, "not_found_error", "not_found")
            }
            Self::Journal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "tuner_journal",
            ),
            Self::Gateway(_) => (StatusCode::BAD_GATEWAY, "upstream_error", "gateway"),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal",
            ),
        }
    }
}

/// An error body with its status, as the envelope.
pub fn envelope(status: StatusCode, body: &ErrorBody) -> Response {
    let mut resp = (status, body.to_vec()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, code) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "api error");
        }
        let param = match &self {
            Self::BadRequest { param, .. } => *param,
            _ => None,
        };
        let body = ErrorBody::new(kind, self.to_string())
            .param(param)
            .code(Some(code));
        let mut resp = envelope(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    #[tokio::test]
    async fn maps_to_the_openai_envelope() {
        let resp = ApiError::bad("no", "from_ms").into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "no", "type": "invalid_request_error",
                "param": "from_ms", "code": "invalid_request"}})
        );
        let resp = ApiError::MissingToken.into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(
            ApiError::Forbidden("x".into()).into_response().status(),
            StatusCode::FORBIDDEN
        );
    }
}
