//! One closed set of error codes, mapped in one place to HTTP status and the
//! JSON body `{"error": {"code", "message"}}`. Internals go to the log only.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custard_core::llm::LlmErrorCode;
use custard_core::{AskError, ExecError, ExecErrorCode};
use serde::Serialize;
use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// Declares [`ErrorCode`] and its one table: each code's variant, its stable
/// name on the wire, its HTTP status and its doc comment (also shown in the
/// OpenAPI document), so no list of codes can drift from the table.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident => $code:literal, $status:ident;)+) => {
        /// Every error the API answers with.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The code's name, HTTP status and doc lines.
            fn parts(self) -> (&'static str, StatusCode, &'static [&'static str]) {
                match self {
                    $(ErrorCode::$variant => ($code, StatusCode::$status, &[$($doc),+]),)+
                }
            }
        }
    };
}

error_codes! {
    /// The body is not valid JSON or not the expected shape.
    InvalidJson => "invalid_json", BAD_REQUEST;
    /// A field is missing or has a value the API does not accept.
    Validation => "validation_error", UNPROCESSABLE_ENTITY;
    /// No valid credentials or token.
    Unauthorized => "unauthorized", UNAUTHORIZED;
    /// A one-time token (verification, reset, invitation) is unknown, used or expired.
    InvalidToken => "invalid_token", BAD_REQUEST;
    /// The account's email is not verified yet.
    EmailNotVerified => "email_not_verified", FORBIDDEN;
    /// Authenticated, but not allowed.
    Forbidden => "forbidden", FORBIDDEN;
    /// Nothing here, or not in the caller's organisation.
    NotFound => "not_found", NOT_FOUND;
    /// The path exists but does not take this method.
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED;
    /// The resource already exists (an email already registered).
    Conflict => "conflict", CONFLICT;
    /// Another connection of the organisation already has this name
    /// (compared trimmed and case-insensitively).
    NameTaken => "name_taken", CONFLICT;
    /// The body is larger than the API accepts.
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE;
    /// The request's headers or body did not arrive in time.
    RequestTimeout => "request_timeout", REQUEST_TIMEOUT;
    /// The server, or the caller's address, has as many open connections as it accepts.
    TooManyConnections => "too_many_connections", SERVICE_UNAVAILABLE;
    /// Too many attempts or questions; try again after `Retry-After` seconds.
    RateLimited => "rate_limited", TOO_MANY_REQUESTS;
    /// The organisation has as many questions in flight as it may
    /// (`CUSTARD_QUESTIONS_IN_FLIGHT_PER_ORG`); try again after `Retry-After` seconds.
    TooManyQuestions => "too_many_questions", TOO_MANY_REQUESTS;
    /// The server is checking as many passwords as it has cores and more are
    /// waiting; try again after `Retry-After` seconds.
    ServerBusy => "server_busy", SERVICE_UNAVAILABLE;
    /// No agent is connected for the connection.
    AgentOffline => "agent_offline", SERVICE_UNAVAILABLE;
    /// Every agent of the connection is busy.
    AgentBusy => "agent_busy", SERVICE_UNAVAILABLE;
    /// The agent went away while answering.
    AgentDisconnected => "agent_disconnected", BAD_GATEWAY;
    /// The query ran past its deadline.
    QueryTimeout => "query_timeout", GATEWAY_TIMEOUT;
    /// The engine could not answer from this database (the offline engine abstains this way).
    CannotAnswer => "cannot_answer", UNPROCESSABLE_ENTITY;
    /// Every SQL the model wrote was refused by the guard or the database.
    NoValidQuery => "no_valid_query", UNPROCESSABLE_ENTITY;
    /// The agent's own guard or policy refused the SQL.
    QueryRejected => "query_rejected", UNPROCESSABLE_ENTITY;
    /// The database refused or failed the query.
    QueryFailed => "query_failed", UNPROCESSABLE_ENTITY;
    /// The agent cannot reach its database.
    DatabaseUnavailable => "database_unavailable", SERVICE_UNAVAILABLE;
    /// The language model could not be used (down, timeout, bad key, bad reply).
    LlmUnavailable => "llm_unavailable", BAD_GATEWAY;
    /// The connection has no schema yet (no agent has reported one).
    SchemaUnavailable => "schema_unavailable", CONFLICT;
    /// The server could not reach a dependency (store, email).
    Unavailable => "unavailable", SERVICE_UNAVAILABLE;
    /// A bug; the details are in the server log.
    Internal => "internal", INTERNAL_SERVER_ERROR;
}

impl ErrorCode {
    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        self.parts().0
    }

    /// The code whose stable name is `code` (as stored in the history).
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code)
    }

    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        self.parts().1
    }

    /// What the code means, from its doc comment.
    fn meaning(self) -> String {
        self.parts().2.iter().map(|line| line.trim()).collect::<Vec<_>>().join(" ")
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl PartialSchema for ErrorCode {
    /// A string enum of every code, with its status and meaning in the description.
    fn schema() -> RefOr<Schema> {
        let table: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| format!("- `{}` ({}): {}", c.as_str(), c.status().as_u16(), c.meaning()))
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some(format!(
                "What went wrong; the HTTP status follows from the code.\n\n{}",
                table.join("\n")
            )))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// An error's code and message.
#[derive(Debug, Serialize, ToSchema)]
struct ErrorDetail {
    code: ErrorCode,
    /// A sentence fit to show; never internals.
    message: String,
}

/// An error answered to a client: a code and a message fit to show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct AppError {
    /// What kind of error.
    pub code: ErrorCode,
    /// A sentence for the client; never internals.
    pub message: String,
    /// Whole seconds for the `Retry-After` header (limits and busy answers).
    pub retry_after: Option<u64>,
}

impl AppError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError { code, message: message.into(), retry_after: None }
    }

    /// The same error, answered with `Retry-After: <wait>` (whole seconds,
    /// rounded up, at least one).
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The `Retry-After` header for this error, when it has one.
    pub(crate) fn retry_after_header(&self) -> Option<(axum::http::HeaderName, String)> {
        self.retry_after.map(|secs| (axum::http::header::RETRY_AFTER, secs.to_string()))
    }

    /// An internal error: the cause goes to the log, the client sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        AppError::new(ErrorCode::Internal, "something went wrong on our side")
    }
}

impl AppError {
    /// An executor (agent) failure as the API reports it.
    pub fn from_exec(e: ExecError) -> Self {
        let code = match e.code {
            ExecErrorCode::AgentOffline => ErrorCode::AgentOffline,
            ExecErrorCode::AgentBusy => ErrorCode::AgentBusy,
            ExecErrorCode::AgentDisconnected | ExecErrorCode::Canceled => {
                ErrorCode::AgentDisconnected
            }
            ExecErrorCode::Timeout => ErrorCode::QueryTimeout,
            ExecErrorCode::Rejected => ErrorCode::QueryRejected,
            ExecErrorCode::QueryFailed | ExecErrorCode::PermissionDenied => ErrorCode::QueryFailed,
            ExecErrorCode::DatabaseUnavailable => ErrorCode::DatabaseUnavailable,
            _ => return AppError::internal(e),
        };
        AppError::new(code, e.message)
    }

    /// Why a question got no answer, as the API reports it.
    pub fn from_ask(e: AskError) -> Self {
        match e {
            AskError::InvalidQuestion(message) => AppError::new(ErrorCode::Validation, message),
            AskError::Model(e) if e.code == LlmErrorCode::Abstained => {
                let message = e.message.trim_end_matches('.');
                let hint = if message.contains("LLM") {
                    "or rephrase the question with the table and column names you mean"
                } else {
                    "rephrase the question with the table and column names you mean, \
                     or configure a language model (CUSTARD_LLM_MODEL)"
                };
                AppError::new(ErrorCode::CannotAnswer, format!("{message}; {hint}."))
            }
            AskError::Model(e) => {
                // The upstream's words (its error body, the endpoint's address)
                // go to the log for the operator; the key was redacted by the client.
                tracing::warn!(code = %e.code, error = %e.message, "the language model failed");
                AppError::new(
                    ErrorCode::LlmUnavailable,
                    format!(
                        "the language model could not be used ({}); try again later, and if \
                         it keeps failing tell the server's operator, whose log has the details",
                        e.code
                    ),
                )
            }
            AskError::CannotAnswer { reason } => AppError::new(
                ErrorCode::CannotAnswer,
                format!("this database cannot answer that: {reason}"),
            ),
            e @ AskError::NoValidQuery { .. } => {
                AppError::new(ErrorCode::NoValidQuery, e.to_string())
            }
            AskError::Execution(e) => AppError::from_exec(e),
            other => AppError::internal(other),
        }
    }
}

impl AppError {
    /// The JSON body: `{"error": {"code", "message"}}`.
    pub fn body(&self) -> serde_json::Value {
        json!(self.wire())
    }

    fn wire(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code, message: self.message.clone() } }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = (self.code.status(), Json(self.wire())).into_response();
        if let Some((name, value)) = self.retry_after_header()
            && let Ok(value) = axum::http::HeaderValue::from_str(&value)
        {
            response.headers_mut().insert(name, value);
        }
        response
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_the_body_keeps_its_shape() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert_eq!(
            ErrorCode::Validation.meaning(),
            "A field is missing or has a value the API does not accept."
        );
        let body = AppError::new(ErrorCode::NotFound, "no such endpoint").body();
        assert_eq!(body, json!({"error": {"code": "not_found", "message": "no such endpoint"}}));
    }

    #[test]
    fn limits_answer_with_retry_after() {
        let cases = [
            (std::time::Duration::from_millis(1), "1"),
            (std::time::Duration::from_millis(1500), "2"),
            (std::time::Duration::from_secs(60), "60"),
        ];
        for (wait, header) in cases {
            let response = AppError::new(ErrorCode::RateLimited, "slow down")
                .retry_after(wait)
                .into_response();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()["retry-after"], header, "{wait:?}");
        }
        let plain = AppError::new(ErrorCode::NotFound, "no").into_response();
        assert!(!plain.headers().contains_key("retry-after"));
    }

    /// A model's failure reaches tenants as its code and a generic sentence:
    /// never the upstream's error body, nor the endpoint's address.
    #[test]
    fn model_errors_show_their_code_and_nothing_of_the_upstream() {
        use custard_core::llm::LlmError;
        let upstream = "the LLM service refused the request (HTTP 403) at \
                        http://10.1.2.3:8080/v1/chat/completions: {\"error\": \"quota of org-4711 \
                        exceeded, contact billing@provider.example\"}";
        let codes = [
            LlmErrorCode::Unauthorized,
            LlmErrorCode::RateLimited,
            LlmErrorCode::Timeout,
            LlmErrorCode::Unavailable,
            LlmErrorCode::BadResponse,
            LlmErrorCode::Misconfigured,
        ];
        for code in codes {
            let error = AppError::from_ask(AskError::Model(LlmError::new(code, upstream)));
            assert_eq!(error.code, ErrorCode::LlmUnavailable, "{code}");
            assert!(error.message.contains(code.as_str()), "{code}: {}", error.message);
            for secret in ["10.1.2.3", "http", "org-4711", "billing", "quota", "403"] {
                assert!(!error.message.contains(secret), "{code}: {}", error.message);
            }
        }
    }
}
