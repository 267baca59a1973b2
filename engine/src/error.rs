//! OpenAI-style errors with an HTTP status. The body is the shared envelope
//! [`flywheel_api::error::ErrorBody`] (`{"error": {"message", "type", "param", "code"}}`),
//! the one every Flywheel service answers with.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use flywheel_api::error::ErrorBody;

/// An error returned to an HTTP client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI `type`: `invalid_request_error`, `not_found_error`, `authentication_error`,
    /// `server_error`, ...
    pub kind: &'static str,
    /// OpenAI `code`, e.g. `model_not_found`.
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code: None,
            param: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn bad_param(param: &'static str, message: impl Into<String>) -> Self {
        let mut e = Self::bad_request(message);
        e.param = Some(param);
        e
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    pub fn model_not_found(name: &str) -> Self {
        let mut e = Self::not_found(format!(
            "The model `{name}` does not exist or is not loaded"
        ));
        e.code = Some("model_not_found");
        e.param = Some("model");
        e
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict_error", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
    }

    /// The OpenAI error envelope of this error (the HTTP body, or an SSE error event once a
    /// stream has started).
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.kind, self.message.as_str())
            .param(self.param)
            .code(self.code)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if unauthorized {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    async fn parts(e: ApiError) -> (StatusCode, Option<HeaderValue>, Value) {
        let resp = e.into_response();
        let status = resp.status();
        let auth = resp.headers().get(header::WWW_AUTHENTICATE).cloned();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, auth, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn responds_with_the_openai_envelope() {
        let (status, auth, v) = parts(ApiError::model_not_found("m")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(auth, None);
        assert_eq!(
            v,
            json!({"error": {"message": "The model `m` does not exist or is not loaded",
                "type": "not_found_error", "param": "model", "code": "model_not_found"}})
        );
        let (_, _, v) = parts(ApiError::internal("boom")).await;
        assert_eq!(
            v,
            json!({"error": {"message": "boom", "type": "server_error", "param": null,
                "code": null}})
        );
    }

    #[tokio::test]
    async fn unauthorized_asks_for_a_bearer_token() {
        let (status, auth, v) = parts(ApiError::unauthorized("missing bearer token")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(auth, Some(HeaderValue::from_static("Bearer")));
        assert_eq!(v["error"]["type"], "authentication_error");
    }
}
