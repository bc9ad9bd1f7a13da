//! `/api/v1/query` and `/api/v1/queries/*`: asking (whole, or as
//! server-sent events), the history, feedback and CSV export. Each handler
//! parses the request, calls [`crate::questions`] and maps the result.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use custard_core::{Answer, AskStep};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use crate::auth::CurrentUser;
use crate::error::{AppError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::{DeclaredError, errors};
use crate::questions::{self, Answered, AskInput, CsvExport, ResultView, Timings};
use crate::state::AppState;
use crate::store::{
    Asker, ConnectionId, HistoryEntry, OutcomeFilter, QueryFilter, QueryRecord, QuerySource, UserId,
};

/// The most questions one page of the history lists.
const MAX_PAGE: u32 = 200;

/// A question about one connection's database.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AskBody {
    /// The connection to ask.
    pub(crate) connection_id: String,
    /// The question, in plain language.
    #[schema(example = "How many orders were placed last month?")]
    pub(crate) question: String,
    /// Continues a conversation: earlier questions give context. 1 to 64
    /// letters, digits, `-` or `_`; a new one is started when absent.
    #[serde(default)]
    pub(crate) conversation_id: Option<String>,
}

impl From<AskBody> for AskInput {
    fn from(body: AskBody) -> Self {
        AskInput {
            connection_id: body.connection_id,
            question: body.question,
            conversation_id: body.conversation_id,
        }
    }
}

/// The database's and the agent's guard's refusals (`query_failed`,
/// `permission_denied`, `query_rejected`) are fed back to the model, and end
/// as `no_valid_query`; the agent's other codes end the question.
const ASK_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    Unauthorized,
    Forbidden: "a session cookie without the page's CSRF token",
    NotFound: "no such connection in the organisation",
    SchemaUnavailable,
    PayloadTooLarge,
    InvalidQuestion,
    Validation: "a bad `conversation_id`, a missing or unknown field",
    CannotAnswer,
    NoValidQuery,
    RateLimited: "the caller asked `CUSTARD_QUESTIONS_PER_MINUTE` questions in the last minute; \
        such a question is not recorded",
    TooManyQuestions: "such a question is not recorded",
    LlmUnavailable,
    LlmUnauthorized,
    LlmBadResponse,
    LlmMisconfigured,
    AgentDisconnected,
    Canceled,
    AgentOffline,
    AgentBusy,
    DatabaseUnavailable,
    PrivilegedRole,
    LlmRateLimited,
    StoreUnavailable: "the store",
    QueryTimeout,
    LlmTimeout,
    Internal,
];

/// Ask a question
///
/// Writes SQL for the question, checks it with the guard, runs it through the
/// connection's agent and answers with the rows, a sentence and a chart. Every
/// question is recorded in the history, whatever its outcome.
#[utoipa::path(
    post,
    path = "/api/v1/query",
    tag = "queries",
    security(("access_token" = [])),
    request_body = AskBody,
    responses(
        (status = 200, description = "The answer", body = AnswerView),
    ),
    extensions(("x-errors" = json!(ASK_ERRORS))),
)]
pub(crate) async fn ask(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<AskBody>,
) -> Result<Json<AnswerView<'static>>, AppError> {
    let permit = questions::admit(&state, &current)?;
    let answered =
        questions::answer(&state, &current, permit, QuerySource::Api, body.into(), None).await;
    answered.map(|a| Json(AnswerView::from(a))).map_err(|f| f.error)
}

/// Only what is refused before the stream starts; the rest, as for
/// [`ASK_ERRORS`], comes as an `error` event.
const ASK_STREAM_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    Unauthorized,
    Forbidden: "a session cookie without the page's CSRF token",
    PayloadTooLarge,
    Validation: "a missing or unknown field",
    RateLimited: "as for `POST /api/v1/query`",
    TooManyQuestions,
    StoreUnavailable: "checking the token",
];

/// Ask a question, following its progress
///
/// The same as `POST /api/v1/query`, as server-sent events: `step` events
/// (`{"step": "retrieving"}`, then `generating`, `checking`, `running`,
/// `summarising`; the middle three repeat for each repair attempt), then one
/// `answer` event whose data is the `AnswerView` that `POST /api/v1/query`
/// returns, or one `error` event whose data is an `ErrorBody`. Only errors
/// found before the stream starts (the body, the token, the question limits)
/// are HTTP statuses.
#[utoipa::path(
    post,
    path = "/api/v1/query/stream",
    tag = "queries",
    security(("access_token" = [])),
    request_body = AskBody,
    responses(
        (status = 200, description = "A stream of `step` events and one `answer` or `error` event", content_type = "text/event-stream", body = String),
    ),
    extensions(("x-errors" = json!(ASK_STREAM_ERRORS))),
)]
pub(crate) async fn ask_stream(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<AskBody>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let permit = questions::admit(&state, &current)?;
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    tokio::spawn(async move {
        let steps = tx.clone();
        let progress = move |step: AskStep| {
            let _ = steps.send(
                Event::default().event("step").data(json!({"step": step.as_str()}).to_string()),
            );
        };
        let input = AskInput::from(body);
        let event = match questions::answer(
            &state,
            &current,
            permit,
            QuerySource::Api,
            input,
            Some(&progress),
        )
        .await
        {
            Ok(a) => {
                Event::default().event("answer").data(questions::json_text(&AnswerView::from(a)))
            }
            Err(f) => Event::default().event("error").data(f.error.body().to_string()),
        };
        let _ = tx.send(event);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

/// An answered question.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AnswerView<'a> {
    #[serde(flatten)]
    pub(crate) result: ResultView<'a>,
    /// The question's id in the history.
    pub(crate) id: String,
    /// A plain-language answer built from the whole result.
    pub(crate) answer: String,
    /// The SQL that ran, as checked by the guard.
    pub(crate) sql_query: String,
    /// Which engine wrote the SQL: `offline` or a model name.
    pub(crate) engine: String,
    /// SQL attempts, the answering one included.
    pub(crate) attempts: usize,
    pub(crate) timings: Timings,
    /// The conversation the question belongs to; send it with the next question to follow up.
    pub(crate) conversation_id: String,
    pub(crate) connection_id: String,
}

impl From<Answered> for AnswerView<'static> {
    /// The answer moved into its view: its rows are not copied.
    fn from(a: Answered) -> Self {
        let timings = a.timings();
        let Answer { text, sql, columns, rows, truncated, chart, engine, attempts, .. } = a.answer;
        AnswerView {
            result: ResultView::owned(columns, rows, truncated, chart),
            id: a.id.as_str().to_owned(),
            answer: text,
            sql_query: sql,
            engine,
            attempts: attempts.len(),
            timings,
            conversation_id: a.conversation_id.as_str().to_owned(),
            connection_id: a.connection_id.as_str().to_owned(),
        }
    }
}

/// A recorded question as the history shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueryView {
    pub(crate) id: String,
    pub(crate) connection_id: String,
    pub(crate) conversation_id: String,
    /// Who asked.
    pub(crate) user_id: String,
    pub(crate) question: String,
    /// The SQL that ran, or the last SQL tried when the question failed.
    #[schema(required)]
    pub(crate) sql_query: Option<String>,
    /// `ok`, or the error code the question ended with.
    #[schema(example = "ok")]
    pub(crate) outcome: String,
    /// The error message shown, when it failed.
    #[schema(required)]
    pub(crate) error_message: Option<String>,
    /// The answer text, when it succeeded.
    #[schema(required)]
    pub(crate) answer: Option<String>,
    /// Rows in the answer, when it succeeded.
    #[schema(required)]
    pub(crate) row_count: Option<u64>,
    pub(crate) truncated: bool,
    pub(crate) engine: String,
    pub(crate) attempts: u32,
    /// Where it was asked: `web` (the Ask page), `api` or `mcp`.
    #[schema(example = "api")]
    pub(crate) source: &'static str,
    /// The `Timings` of an answer; only `total_ms` for a failed question.
    // As stored (null if the stored text is not JSON).
    #[schema(value_type = Object)]
    pub(crate) timings: Option<Box<RawValue>>,
    /// `correct`, `incorrect`, or null before any feedback.
    #[schema(required)]
    pub(crate) feedback: Option<&'static str>,
    #[schema(format = DateTime)]
    pub(crate) created_at: String,
}

impl From<&QueryRecord> for QueryView {
    fn from(q: &QueryRecord) -> Self {
        let r = &q.record;
        QueryView {
            id: q.id.as_str().to_owned(),
            connection_id: r.connection_id.as_str().to_owned(),
            conversation_id: r.conversation_id.as_str().to_owned(),
            user_id: r.user_id.as_str().to_owned(),
            question: r.question.clone(),
            sql_query: r.sql.clone(),
            outcome: r.outcome.clone(),
            error_message: r.error_message.clone(),
            answer: r.answer.clone(),
            row_count: r.row_count,
            truncated: r.truncated,
            engine: r.engine.clone(),
            attempts: r.attempts,
            source: r.source.as_str(),
            timings: RawValue::from_string(r.timings_json.clone()).ok(),
            feedback: q.feedback.map(|c| if c { "correct" } else { "incorrect" }),
            created_at: q.created_at.to_rfc3339(),
        }
    }
}

/// A recorded question with its stored result.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueryDetail {
    #[serde(flatten)]
    pub(crate) query: QueryView,
    /// The answer's `ResultView` with its first 200 rows (`row_count` says how
    /// many there were); null for a failed question.
    // Passed on as stored (null if the stored text is not JSON).
    #[schema(value_type = Option<ResultView>, required)]
    pub(crate) result: Option<Box<RawValue>>,
}

/// A recorded question in a page of the history: with who asked it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryItem {
    #[serde(flatten)]
    pub(crate) query: QueryView,
    /// Who asked; null when their account no longer exists.
    #[schema(required)]
    pub(crate) asked_by: Option<AskerView>,
}

impl From<&HistoryEntry> for HistoryItem {
    fn from(entry: &HistoryEntry) -> Self {
        HistoryItem {
            query: QueryView::from(&entry.query),
            asked_by: entry.asked_by.as_ref().map(AskerView::from),
        }
    }
}

/// The person who asked a question.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AskerView {
    /// Their full name, or their email when they gave no name.
    pub(crate) name: String,
    pub(crate) email: String,
    /// Whether they are still a member of the organisation.
    pub(crate) member: bool,
}

impl From<&Asker> for AskerView {
    fn from(asker: &Asker) -> Self {
        AskerView { name: asker.display_name(), email: asker.email.clone(), member: asker.member }
    }
}

/// A page of the history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueryPage {
    pub(crate) queries: Vec<HistoryItem>,
    pub(crate) limit: u32,
    pub(crate) offset: u32,
    /// The `offset` of the next page, or null on the last page.
    #[schema(required)]
    pub(crate) next_offset: Option<u32>,
}

/// Which page of the history to list, and which questions it holds.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only questions about this connection.
    #[serde(default)]
    pub(crate) connection_id: Option<String>,
    /// Only questions this user asked (a user id).
    #[serde(default)]
    pub(crate) user_id: Option<String>,
    /// `answered` or `failed`: only questions with that outcome.
    #[serde(default)]
    #[param(example = "failed")]
    pub(crate) outcome: Option<String>,
    /// Only questions whose text contains this, ignoring case (at most 200
    /// characters; `%` and `_` are plain characters, not wildcards).
    #[serde(default)]
    pub(crate) q: Option<String>,
    /// 1 to 200; 50 by default.
    #[serde(default)]
    pub(crate) limit: Option<u32>,
    /// Skip this many of the newest; 0 by default.
    #[serde(default)]
    pub(crate) offset: Option<u32>,
}

const LIST_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    NotFound: "no such connection in the organisation",
    Validation: "a `limit` or `offset` that is not a number, an `outcome` other than `answered` \
        or `failed`, or a `q` longer than 200 characters",
    StoreUnavailable,
    Internal,
];

/// List asked questions
///
/// The organisation's history, newest first, each question with who asked
/// it; optionally only one connection's, one person's, answered or failed
/// ones, or those whose text contains `q`. The filters combine.
#[utoipa::path(
    get,
    path = "/api/v1/queries",
    operation_id = "list_queries",
    tag = "queries",
    security(("access_token" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of the history", body = QueryPage),
    ),
    extensions(("x-errors" = json!(LIST_ERRORS))),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<QueryPage>, AppError> {
    let limit = params.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let offset = params.offset.unwrap_or(0);
    let outcome = match params.outcome.as_deref().filter(|o| !o.is_empty()) {
        None => None,
        Some(name) => Some(OutcomeFilter::parse(name).ok_or_else(|| {
            AppError::new(ErrorCode::Validation, "outcome must be `answered` or `failed`")
        })?),
    };
    let filter = QueryFilter {
        connection_id: params.connection_id.filter(|c| !c.is_empty()).map(ConnectionId::from),
        asked_by: params.user_id.filter(|u| !u.is_empty()).map(UserId::from),
        outcome,
        search: questions::search_term(params.q.as_deref().unwrap_or_default())?,
        limit,
        offset,
    };
    let entries = questions::history(&state, &current, filter).await?;
    let queries: Vec<HistoryItem> = entries.iter().map(HistoryItem::from).collect();
    let next_offset = (queries.len() == limit as usize).then(|| offset + limit);
    Ok(Json(QueryPage { queries, limit, offset, next_offset }))
}

const DELETE_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "someone else asked it, and the caller is not an owner or admin (or a session \
        cookie without the page's CSRF token)",
    NotFound: "no such question in the organisation",
    StoreUnavailable,
    Internal,
];

/// Delete an asked question
///
/// Removes a question from the organisation's history: its page, its CSV
/// export and its use as an example go with it. Members may delete the
/// questions they asked; owners and admins any.
#[utoipa::path(
    delete,
    path = "/api/v1/queries/{id}",
    operation_id = "delete_query",
    tag = "queries",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The question's id")),
    responses(
        (status = 204, description = "The question is deleted"),
    ),
    extensions(("x-errors" = json!(DELETE_ERRORS))),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    questions::delete_query(&state, &current, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

const GET_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    NotFound: "no such question in the organisation",
    StoreUnavailable,
    Internal,
];

/// Get an asked question
///
/// One recorded question with its stored result.
#[utoipa::path(
    get,
    path = "/api/v1/queries/{id}",
    operation_id = "get_query",
    tag = "queries",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The question's id")),
    responses(
        (status = 200, description = "The question and its result", body = QueryDetail),
    ),
    extensions(("x-errors" = json!(GET_ERRORS))),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<QueryDetail>, AppError> {
    let mut q = questions::get(&state, &current, &id).await?;
    // Checked to be JSON, not parsed into values to be written again.
    let result = q.record.result_json.take().and_then(|j| RawValue::from_string(j).ok());
    Ok(Json(QueryDetail { query: QueryView::from(&q), result }))
}

/// Whether an answer was right.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedbackBody {
    pub(crate) correct: bool,
}

const FEEDBACK_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    Unauthorized,
    Forbidden: "a session cookie without the page's CSRF token",
    NotFound: "no such question in the organisation",
    PayloadTooLarge,
    Validation: "no `correct`, or an unknown field",
    StoreUnavailable,
    Internal,
];

/// Give feedback on an answer
///
/// An answered question marked correct becomes an example for similar later
/// questions. A failed question takes feedback too (correct: it was right not
/// to answer; incorrect: it should have been answered), kept in the history
/// and never used as an example.
#[utoipa::path(
    post,
    path = "/api/v1/queries/{id}/feedback",
    tag = "queries",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The question's id")),
    request_body = FeedbackBody,
    responses(
        (status = 200, description = "The question with its feedback", body = QueryView),
    ),
    extensions(("x-errors" = json!(FEEDBACK_ERRORS))),
)]
pub(crate) async fn feedback(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FeedbackBody>,
) -> Result<Json<QueryView>, AppError> {
    let q = questions::set_feedback(&state, &current, &id, body.correct).await?;
    Ok(Json(QueryView::from(&q)))
}

/// Whatever the agent answers the rerun with, nothing fed back to a model;
/// after the header row an error only cuts the body short.
const EXPORT_CSV_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    NotFound: "no such question in the organisation",
    Validation: "the question has no answer to export",
    QueryRejected: "the stored SQL no longer passes the server's guard, or the agent's",
    QueryFailed,
    PermissionDenied,
    AgentDisconnected,
    Canceled,
    AgentOffline,
    AgentBusy,
    DatabaseUnavailable,
    PrivilegedRole,
    StoreUnavailable: "the store",
    QueryTimeout,
    Internal,
];

/// Export an answer as CSV
///
/// Reruns the question's SQL through the agent and streams the whole result
/// as CSV (RFC 4180, CRLF line ends, a header row). An error after the first
/// row can only cut the body short. Text that a spreadsheet would run as a
/// formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) is
/// prefixed with `'`; numbers, and number columns' values, are written as
/// they are.
#[utoipa::path(
    get,
    path = "/api/v1/queries/{id}/export.csv",
    tag = "queries",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The question's id")),
    responses(
        (status = 200, description = "The whole result, as an attachment", content_type = "text/csv", body = String),
    ),
    extensions(("x-errors" = json!(EXPORT_CSV_ERRORS))),
)]
pub(crate) async fn export_csv(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<CsvExport, AppError> {
    questions::export_csv(&state, &current, &id).await
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use chrono::{TimeZone, Utc};
    use custard_core::{Answer, ChartKind, ChartSpec, ColumnMeta, Timings as StepTimings};

    use serde_json::Value;

    use super::*;
    use crate::store::{ConversationId, NewQueryRecord, OrgId, QueryId, QuerySource};

    fn record(ok: bool) -> QueryRecord {
        QueryRecord {
            id: QueryId::from("q1".to_owned()),
            record: NewQueryRecord {
                org_id: OrgId::from("o1".to_owned()),
                connection_id: ConnectionId::from("c1".to_owned()),
                user_id: UserId::from("u1".to_owned()),
                conversation_id: ConversationId::from("v1".to_owned()),
                question: "how many?".to_owned(),
                sql: ok.then(|| "SELECT 1".to_owned()),
                outcome: if ok { "ok" } else { "cannot_answer" }.to_owned(),
                error_message: (!ok).then(|| "no".to_owned()),
                answer: ok.then(|| "1".to_owned()),
                row_count: ok.then_some(1),
                truncated: false,
                engine: "offline".to_owned(),
                attempts: 1,
                timings_json: r#"{"total_ms":1.5}"#.to_owned(),
                result_json: ok.then(|| r#"{"rows":[[1]]}"#.to_owned()),
                source: QuerySource::Mcp,
            },
            feedback: ok.then_some(true),
            created_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        }
    }

    /// The wire shapes, null fields included, as clients and tests rely on them.
    #[test]
    fn history_keeps_its_json_shape() {
        let failed = json!({
            "id": "q1", "connection_id": "c1", "conversation_id": "v1", "user_id": "u1",
            "question": "how many?", "sql_query": null, "outcome": "cannot_answer",
            "error_message": "no", "answer": null, "row_count": null, "truncated": false,
            "engine": "offline", "attempts": 1, "source": "mcp", "timings": {"total_ms": 1.5},
            "feedback": null, "created_at": "2026-01-02T03:04:05+00:00",
        });
        assert_eq!(json!(QueryView::from(&record(false))), failed);
        let mut detail = failed;
        detail["result"] = Value::Null;
        let q = record(false);
        assert_eq!(json!(QueryDetail { query: QueryView::from(&q), result: None }), detail);
        let ok = json!(QueryView::from(&record(true)));
        assert_eq!(
            (&ok["feedback"], &ok["row_count"], &ok["sql_query"]),
            (&json!("correct"), &json!(1), &json!("SELECT 1"))
        );
        let page = json!(QueryPage { queries: vec![], limit: 50, offset: 0, next_offset: None });
        assert_eq!(page, json!({"queries": [], "limit": 50, "offset": 0, "next_offset": null}));
    }

    #[test]
    fn answers_keep_their_json_shape() {
        let answer = Answer {
            text: "2 rows".to_owned(),
            sql: "SELECT a, b FROM t".to_owned(),
            columns: vec![ColumnMeta { name: "a".to_owned(), type_name: "int4".to_owned() }],
            rows: vec![vec![json!(1)], vec![json!(null)]],
            truncated: false,
            chart: Some(ChartSpec {
                kind: ChartKind::Bar,
                x: "a".to_owned(),
                y: vec!["b".to_owned()],
            }),
            engine: "offline".to_owned(),
            attempts: vec![],
            timings: StepTimings::default(),
        };
        assert_eq!(
            json!(ResultView::new(&answer, 1)),
            json!({
                "columns": [{"name": "a", "type": "int4"}], "rows": [[1]], "row_count": 2,
                "truncated": false, "chart": {"type": "bar", "x": "a", "y": ["b"]},
            })
        );
        let started = Instant::now();
        let view = json!(AnswerView {
            result: ResultView::new(&Answer { chart: None, ..answer.clone() }, 2),
            id: "q1".to_owned(),
            answer: answer.text.clone(),
            sql_query: answer.sql.clone(),
            engine: answer.engine.clone(),
            attempts: 0,
            timings: Timings::new(&answer, started),
            conversation_id: "v1".to_owned(),
            connection_id: "c1".to_owned(),
        });
        let mut keys: Vec<&str> = view.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "answer",
                "attempts",
                "chart",
                "columns",
                "connection_id",
                "conversation_id",
                "engine",
                "id",
                "row_count",
                "rows",
                "sql_query",
                "timings",
                "truncated",
            ]
        );
        assert_eq!(view["chart"], Value::Null);
        let mut timing_keys: Vec<&str> =
            view["timings"].as_object().unwrap().keys().map(String::as_str).collect();
        timing_keys.sort_unstable();
        assert_eq!(
            timing_keys,
            [
                "answer_ms",
                "execute_ms",
                "generate_ms",
                "guard_ms",
                "pipeline_ms",
                "prompt_ms",
                "retrieve_ms",
                "total_ms"
            ]
        );
    }
}
