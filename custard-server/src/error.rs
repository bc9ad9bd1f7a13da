//! One closed set of error codes, mapped in one place to HTTP status and the
//! JSON body `{"error": {"code", "message"}}`. Internals go to the log only.
//!
//! The core's codes ([`custard_core::Code`]) are mapped here too
//! (`From<Code> for ErrorCode`): a failure the core reports keeps its code over
//! HTTP, so the API, the wire, Python and the web UI name it alike
//! (`docs/errors.md` is the table).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use custard_core::llm::LlmErrorCode;
use custard_core::wire::WireErrorCode;
use custard_core::{AskError, AskErrorCode, Code, ExecError, ExecErrorCode};
use serde::Serialize;
use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::store::{ConflictKind, StoreError};

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
    /// The question is empty or too long.
    InvalidQuestion => "invalid_question", UNPROCESSABLE_ENTITY;
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
    /// The query was cancelled before it finished (the agent stopped while running it).
    Canceled => "canceled", BAD_GATEWAY;
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
    /// The agent's database role lacks a privilege the query needs.
    PermissionDenied => "permission_denied", UNPROCESSABLE_ENTITY;
    /// The agent cannot reach its database.
    DatabaseUnavailable => "database_unavailable", SERVICE_UNAVAILABLE;
    /// The agent refuses to run queries until its database role is fixed (it is
    /// privileged, or can read what the agent's policy keeps out); its log has the SQL.
    PrivilegedRole => "privileged_role", SERVICE_UNAVAILABLE;
    /// The language model's service failed (5xx, connection refused), after retries.
    LlmUnavailable => "llm_unavailable", BAD_GATEWAY;
    /// The language model did not answer in time, after retries.
    LlmTimeout => "llm_timeout", GATEWAY_TIMEOUT;
    /// The language model's service kept refusing with 429, after retries.
    LlmRateLimited => "llm_rate_limited", SERVICE_UNAVAILABLE;
    /// The language model's service refused the server's API key.
    LlmUnauthorized => "llm_unauthorized", BAD_GATEWAY;
    /// The language model answered something that is not a usable reply.
    LlmBadResponse => "llm_bad_response", BAD_GATEWAY;
    /// The server's language model settings are incomplete or wrong.
    LlmMisconfigured => "llm_misconfigured", BAD_GATEWAY;
    /// The connection has no schema yet (no agent has reported one).
    SchemaUnavailable => "schema_unavailable", CONFLICT;
    /// The server's store (its database) cannot be reached, is overloaded or
    /// took too long; try again after `Retry-After` seconds.
    StoreUnavailable => "store_unavailable", SERVICE_UNAVAILABLE;
    /// The server is shutting down (this replica; others may answer); try
    /// again after `Retry-After` seconds.
    ShuttingDown => "shutting_down", SERVICE_UNAVAILABLE;
    /// This replica cannot reach the other replicas (NATS is unreachable);
    /// try again after `Retry-After` seconds.
    RoutingUnavailable => "routing_unavailable", SERVICE_UNAVAILABLE;
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

    /// Whether answers with this code carry `Retry-After` (the refusals of a
    /// limit, and a store that may answer again soon): one second when the
    /// refusal did not say how long.
    pub(crate) fn waits(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::TooManyQuestions
                | ErrorCode::ServerBusy
                | ErrorCode::StoreUnavailable
                | ErrorCode::ShuttingDown
                | ErrorCode::RoutingUnavailable
        )
    }

    /// What the code means, from its doc comment (also the OpenAPI text).
    pub(crate) fn meaning(self) -> String {
        self.parts().2.iter().map(|line| line.trim()).collect::<Vec<_>>().join(" ")
    }
}

impl From<Code> for ErrorCode {
    /// The core's code as the API reports it: under the same name, except for
    /// the families in `ErrorCode::from_family`.
    fn from(code: Code) -> Self {
        ErrorCode::from_family(code)
            .or_else(|| ErrorCode::parse(code.as_str()))
            .unwrap_or(ErrorCode::Internal)
    }
}

impl ErrorCode {
    /// The core's codes that reach the API under another code: the guard's
    /// refusals are `query_rejected` (the guard's own code is in the
    /// message), a model abstaining is `cannot_answer`, a host's argument
    /// checks are `validation_error`, and the wire protocol's codes (between
    /// server and agent) and the executor's internal states are `internal`;
    /// but a refused agent key is `unauthorized` on both sides of the upgrade.
    fn from_family(code: Code) -> Option<ErrorCode> {
        Some(match code {
            Code::Guard(_) => ErrorCode::QueryRejected,
            Code::Input(_) => ErrorCode::Validation,
            Code::Wire(WireErrorCode::Unauthorized) => return None,
            Code::Wire(_) => ErrorCode::Internal,
            Code::Llm(LlmErrorCode::Abstained) => ErrorCode::CannotAnswer,
            Code::Ask(AskErrorCode::NoSql) => ErrorCode::NoValidQuery,
            Code::Exec(ExecErrorCode::ReceiverClosed | ExecErrorCode::InvalidUrl) => {
                ErrorCode::Internal
            }
            _ => return None,
        })
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
        let secs = match self.retry_after {
            Some(secs) => secs,
            None if self.code.waits() => 1,
            None => return None,
        };
        Some((axum::http::header::RETRY_AFTER, secs.to_string()))
    }

    /// An internal error: the cause goes to the log, the client sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        AppError::new(ErrorCode::Internal, "something went wrong on our side")
    }
}

impl AppError {
    /// An executor (agent) failure as the API reports it: under its own code
    /// (see [`ErrorCode::from`]); an internal one only in the log.
    pub fn from_exec(e: ExecError) -> Self {
        match ErrorCode::from(Code::from(e.code)) {
            ErrorCode::Internal => AppError::internal(e),
            code => AppError::new(code, e.message),
        }
    }

    /// Why a question got no answer, as the API reports it: under
    /// [`AskError::code`].
    pub fn from_ask(e: AskError) -> Self {
        match e {
            AskError::InvalidQuestion(message) => {
                AppError::new(ErrorCode::InvalidQuestion, message)
            }
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
                    ErrorCode::from(Code::from(e.code)),
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
            AskError::Rejected(r) => AppError::new(
                ErrorCode::QueryRejected,
                format!("the guard refused the SQL ({}): {}", r.code, r.message),
            ),
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

/// A store failure as the API reports it: what the caller can act on has
/// its code (`not_found`, `conflict`, ...), the rest is logged as internal.
impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AppError::new(ErrorCode::NotFound, "not found"),
            StoreError::Conflict(ConflictKind::ConnectionName) => AppError::new(
                ErrorCode::NameTaken,
                "another connection in this organisation already has that name",
            ),
            StoreError::Conflict(ConflictKind::PersonalTokenLimit) => AppError::new(
                ErrorCode::Conflict,
                "you already have as many personal access tokens in this organisation as allowed \
                 (50): revoke one first",
            ),
            StoreError::Conflict(_) => AppError::new(ErrorCode::Conflict, "it already exists"),
            StoreError::LastOwner => {
                AppError::new(ErrorCode::Validation, "an organisation must keep at least one owner")
            }
            StoreError::Stale => AppError::new(
                ErrorCode::Conflict,
                "something this depended on changed meanwhile (your password, session or \
                 role): reload the page, or sign in again, and retry",
            ),
            StoreError::Unavailable(reason) => {
                // The reason is for the operator (it names hosts); the caller gets the code.
                tracing::warn!(%reason, "the store is unavailable");
                AppError::new(ErrorCode::StoreUnavailable, "the store is unavailable; try again")
            }
            other => AppError::internal(other),
        }
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
        // Every refusal of a limit says how long to wait, as the API document promises.
        for code in ErrorCode::ALL.iter().copied() {
            let response = AppError::new(code, "no").into_response();
            assert_eq!(response.headers().contains_key("retry-after"), code.waits(), "{code:?}");
        }
    }

    /// A model's failure reaches tenants as its code and a generic sentence:
    /// never the upstream's error body, nor the endpoint's address. Each code
    /// is the core's own (once all of them were `llm_unavailable`).
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
            assert_eq!(error.code.as_str(), code.as_str(), "{code}");
            assert!(error.code.status().is_server_error(), "{code}");
            assert!(error.message.contains(code.as_str()), "{code}: {}", error.message);
            for secret in ["10.1.2.3", "http", "org-4711", "billing", "quota", "403"] {
                assert!(!error.message.contains(secret), "{code}: {}", error.message);
            }
        }
    }

    /// The vocabulary: every code of the core has a row in the table (its own,
    /// or its family's), so an HTTP status; only the families named in
    /// `from_family` are reported under another name.
    #[test]
    fn every_core_code_has_an_http_status() {
        for &code in Code::ALL {
            let api = ErrorCode::from(code);
            match ErrorCode::from_family(code) {
                Some(family) => assert_eq!(api, family, "{code}"),
                None => assert_eq!(api.as_str(), code.as_str(), "{code} has no row in the table"),
            }
            assert!(ErrorCode::ALL.contains(&api));
            // One name, one status: a core code named like a row is that row.
            if let Some(same) = ErrorCode::parse(code.as_str()) {
                assert_eq!(api, same, "`{code}` names two failures");
            }
            assert!(api.status().is_client_error() || api.status().is_server_error(), "{code}");
        }
        // The disagreements the shared vocabulary settled.
        let cases = [
            (Code::Ask(AskErrorCode::InvalidQuestion), "invalid_question", 422),
            (Code::Llm(LlmErrorCode::Timeout), "llm_timeout", 504),
            (Code::Exec(ExecErrorCode::Rejected), "query_rejected", 422),
            (Code::Exec(ExecErrorCode::PermissionDenied), "permission_denied", 422),
            (Code::Exec(ExecErrorCode::Canceled), "canceled", 502),
            (Code::Exec(ExecErrorCode::AgentBusy), "agent_busy", 503),
            (Code::Exec(ExecErrorCode::PrivilegedRole), "privileged_role", 503),
            (Code::Llm(LlmErrorCode::Abstained), "cannot_answer", 422),
            (Code::Guard(custard_core::RejectionCode::NotAQuery), "query_rejected", 422),
        ];
        for (code, name, status) in cases {
            let api = ErrorCode::from(code);
            assert_eq!((api.as_str(), api.status().as_u16()), (name, status), "{code}");
        }
    }

    /// An executor's failure keeps its code over HTTP; internal states are
    /// `internal`, with the cause in the log only.
    #[test]
    fn executor_errors_keep_their_code() {
        for &code in ExecErrorCode::ALL {
            let error = AppError::from_exec(ExecError::new(code, "the cause"));
            assert_eq!(error.code, ErrorCode::from(Code::from(code)), "{code}");
            if error.code == ErrorCode::Internal {
                assert!(!error.message.contains("the cause"), "{code}: {}", error.message);
            } else {
                assert_eq!(error.message, "the cause");
            }
        }
        let asked =
            AppError::from_ask(AskError::InvalidQuestion("question must not be empty".into()));
        assert_eq!((asked.code.as_str(), asked.code.status().as_u16()), ("invalid_question", 422));
    }

    /// `docs/errors.md` has a row for every code with its HTTP status, so the
    /// table people read cannot drift from this one.
    #[test]
    fn the_error_document_lists_every_code() {
        let doc = include_str!("../../docs/errors.md");
        let row = |name: &str| {
            let cell = format!("| `{name}` |");
            doc.lines().find(|line| line.starts_with(&cell)).map(str::to_owned)
        };
        for &code in ErrorCode::ALL {
            let line = row(code.as_str()).unwrap_or_else(|| panic!("no row for `{code:?}`"));
            let status = format!("| {} |", code.status().as_u16());
            assert!(line.contains(&status), "`{}` is not {status} in: {line}", code.as_str());
        }
        for &code in Code::ALL {
            let line = row(code.as_str()).unwrap_or_else(|| panic!("no row for `{code}`"));
            let api = ErrorCode::from(code);
            let status = format!("| {} |", api.status().as_u16());
            assert!(line.contains(&status), "`{code}` is not {status} in: {line}");
            if api.as_str() != code.as_str() {
                let shown = format!("`{}`", api.as_str());
                assert!(line.contains(&shown), "`{code}` is reported as {shown}: {line}");
            }
        }
    }
}
