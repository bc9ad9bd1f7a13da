//! One closed set of error codes, mapped in one place to HTTP status and the
//! JSON body `{"error": {"code", "message"}}`. Internals go to the log only.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every error the API answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not valid JSON or not the expected shape.
    InvalidJson,
    /// A field is missing or has a value the API does not accept.
    Validation,
    /// No valid credentials or token.
    Unauthorized,
    /// A one-time token (verification, reset, invitation) is unknown, used or expired.
    InvalidToken,
    /// The account's email is not verified yet.
    EmailNotVerified,
    /// Authenticated, but not allowed.
    Forbidden,
    /// Nothing here, or not in the caller's organisation.
    NotFound,
    /// The resource already exists (an email already registered).
    Conflict,
    /// The body is larger than the API accepts.
    PayloadTooLarge,
    /// Too many attempts; try again later.
    RateLimited,
    /// The server could not reach a dependency (store, email).
    Unavailable,
    /// A bug; the details are in the server log.
    Internal,
}

impl ErrorCode {
    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        self.parts().0
    }

    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        self.parts().1
    }

    /// The one table of codes and statuses.
    fn parts(self) -> (&'static str, StatusCode) {
        match self {
            ErrorCode::InvalidJson => ("invalid_json", StatusCode::BAD_REQUEST),
            ErrorCode::Validation => ("validation_error", StatusCode::UNPROCESSABLE_ENTITY),
            ErrorCode::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED),
            ErrorCode::InvalidToken => ("invalid_token", StatusCode::BAD_REQUEST),
            ErrorCode::EmailNotVerified => ("email_not_verified", StatusCode::FORBIDDEN),
            ErrorCode::Forbidden => ("forbidden", StatusCode::FORBIDDEN),
            ErrorCode::NotFound => ("not_found", StatusCode::NOT_FOUND),
            ErrorCode::Conflict => ("conflict", StatusCode::CONFLICT),
            ErrorCode::PayloadTooLarge => ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
            ErrorCode::RateLimited => ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
            ErrorCode::Unavailable => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ErrorCode::Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

/// An error answered to a client: a code and a message fit to show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct AppError {
    /// What kind of error.
    pub code: ErrorCode,
    /// A sentence for the client; never internals.
    pub message: String,
}

impl AppError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError { code, message: message.into() }
    }

    /// An internal error: the cause goes to the log, the client sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        AppError::new(ErrorCode::Internal, "something went wrong on our side")
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        (self.code.status(), Json(body)).into_response()
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonDataError(_) => ErrorCode::Validation,
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ErrorCode::PayloadTooLarge
            }
            _ => ErrorCode::InvalidJson,
        };
        AppError::new(code, rejection.body_text())
    }
}
