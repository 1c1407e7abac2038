//! Keptn-shaped HTTP errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keelson_core::ports::StoreError;
use keelson_core::CoreError;
use keelson_shipyard::Error as ShipyardError;
use serde_json::json;

/// An HTTP error answered as `{"code": …, "message": …}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Status.
    pub status: StatusCode,
    /// Message.
    pub message: String,
}

impl ApiError {
    /// An error.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "request failed");
        }
        (
            self.status,
            Json(json!({"code": self.status.as_u16(), "message": self.message})),
        )
            .into_response()
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound(_) => ApiError::not_found(e.to_string()),
            StoreError::AlreadyExists(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            StoreError::Conflict | StoreError::AlreadyApplied => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            StoreError::Backend {
                transient: true, ..
            } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            StoreError::Backend { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

impl From<ShipyardError> for ApiError {
    fn from(e: ShipyardError) -> Self {
        match e {
            ShipyardError::Store(s) => s.into(),
            e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

/// Parses a JSON body into `T`, naming the problem in a 400.
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}
