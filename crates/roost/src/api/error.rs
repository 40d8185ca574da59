//! The API's one error type: every failure becomes a status and a JSON message, in one place.
//! Internal errors are logged with their detail and answered without it (no SQL, no paths).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("log in first: the session cookie or an `Authorization: Bearer` token is missing, wrong or expired")]
    Unauthorized,
    /// `POST /api/login` with a user name or password that does not match.
    #[error("wrong user name or password")]
    WrongCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooLarge(String),
    /// The request clashes with what is there (a name taken, a rule of the config file).
    #[error("{0}")]
    Conflict(String),
    #[error("database error")]
    Store(#[from] crate::store::StoreError),
    /// A method the address does not take (the `Allow` header lists those it takes).
    #[error("this address does not take this method: the Allow header lists the ones it takes")]
    MethodNotAllowed,
    /// Too many logins at once: this one waited too long for its password check.
    #[error("too many logins at once: try again in a moment")]
    Busy,
    /// A failure inside the server (logged with its detail where it happens).
    #[error("internal error")]
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized | ApiError::WrongCredentials => {
                let body = Json(serde_json::json!({ "error": self.to_string() }));
                return (StatusCode::UNAUTHORIZED, [(axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"roost\"")], body)
                    .into_response();
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Store(e) => {
                tracing::error!(error = %e, "API request failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Busy => {
                let body = Json(serde_json::json!({ "error": self.to_string() }));
                return (StatusCode::SERVICE_UNAVAILABLE, [(axum::http::header::RETRY_AFTER, "1")], body).into_response();
            }
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}
