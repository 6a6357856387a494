//! Engine errors. Each kind maps to the HTTP status dockerd uses for it; the message is Docker's wording.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    NotModified(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            Self::NotModified(_) => StatusCode::NOT_MODIFIED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    pub fn invalid(e: impl std::fmt::Display) -> Self {
        Self::InvalidParameter(e.to_string())
    }

    pub fn no_such_image(name: &str) -> Self {
        Self::NotFound(format!("No such image: {name}"))
    }
}

impl From<sqlx::Error> for EngineError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(format!("store: {e}"))
    }
}

impl From<std::io::Error> for EngineError {
    fn from(e: std::io::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<serde_json::Error> for EngineError {
    fn from(e: serde_json::Error) -> Self {
        Self::Internal(format!("json: {e}"))
    }
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::NOT_MODIFIED {
            return status.into_response();
        }
        if status.is_server_error() {
            tracing::error!(%status, error = %self, "request failed");
        } else {
            tracing::debug!(%status, error = %self, "request refused");
        }
        let body = serde_json::json!({ "message": self.to_string() });
        (status, axum::Json(body)).into_response()
    }
}
