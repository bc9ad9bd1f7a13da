//! Asking questions and their history: `POST /api/v1/query` (and its streaming
//! variant), the history (searched, filtered, and deleted from), feedback that
//! turns answers into examples, and CSV export.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use custard_core::{
    Answer, AskOptions, AskPipeline, AskRequest, AskStep, ChartSpec, ColumnMeta, Guard,
    MAX_QUESTION_BYTES, RowBatch, RunLimits, Turn, select_examples,
};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use utoipa::{IntoParams, ToSchema};

use crate::accounts::CurrentUser;
use crate::connections::load_schema;
use crate::error::{AppError, ErrorBody, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::hub::AgentExecutor;
use crate::rate_limit::QuestionPermit;
use crate::routes::AppState;
use crate::store::{
    Asker, Connection, ConnectionId, ConversationId, HistoryEntry, NewQueryRecord, OutcomeFilter,
    QueryDeletion, QueryFilter, QueryId, QueryRecord, UserId,
};

/// Rows of an answer kept in the history to show it again.
const HISTORY_ROWS: usize = 200;
/// Approved examples considered per question, and shown to the model.
const EXAMPLE_CANDIDATES: u32 = 500;
const EXAMPLES_SHOWN: usize = 3;
/// Earlier turns of a conversation given to the model.
const CONVERSATION_TURNS: u32 = 10;
/// Rows an answer carries.
const ANSWER_ROWS: u64 = 1000;
/// Rows a CSV export may stream (the agent's own cap may be lower).
const EXPORT_ROWS: u64 = 100_000_000;
const MAX_PAGE: u32 = 200;
/// The longest text the history can be searched for, in characters.
pub(crate) const MAX_SEARCH_CHARS: usize = 200;

/// Ask pipelines by connection, rebuilt when the schema or the instructions change
/// (indexing a big schema is the expensive part).
#[derive(Debug, Default)]
pub(crate) struct Pipelines {
    cached: Mutex<HashMap<ConnectionId, Arc<Cached>>>,
}

#[derive(Debug)]
struct Cached {
    fingerprint: String,
    instructions: String,
    pipeline: Arc<AskPipeline>,
}

impl Pipelines {
    /// Drops the pipeline of a deleted connection.
    pub(crate) fn forget(&self, id: &ConnectionId) {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    async fn get(
        &self,
        state: &AppState,
        connection: &Connection,
    ) -> Result<Arc<AskPipeline>, AppError> {
        let current = |c: &Cached| {
            Some(&c.fingerprint) == connection.schema_fingerprint.as_ref()
                && c.instructions == connection.instructions
        };
        if let Some(cached) =
            self.cached.lock().unwrap_or_else(PoisonError::into_inner).get(&connection.id)
            && current(cached)
        {
            return Ok(Arc::clone(&cached.pipeline));
        }
        let schema = load_schema(state, connection).await?;
        let fingerprint = schema.fingerprint();
        let inner = state.inner();
        let executor = Arc::new(AgentExecutor::new(
            Arc::clone(&inner.router),
            connection.id.clone(),
            connection.dialect,
        ));
        let options = AskOptions {
            max_rows: ANSWER_ROWS,
            limits: RunLimits {
                timeout: Duration::from_secs(inner.config.query_timeout_secs.max(1)),
                ..RunLimits::default()
            },
            instructions: Some(connection.instructions.clone()).filter(|i| !i.is_empty()),
            ..AskOptions::default()
        };
        let model = Arc::clone(&inner.model);
        // Indexing is CPU work proportional to the schema; keep it off the async threads.
        let pipeline =
            tokio::task::spawn_blocking(move || AskPipeline::new(schema, model, executor, options))
                .await
                .map_err(AppError::internal)?
                .map_err(AppError::internal)?;
        let pipeline = Arc::new(pipeline);
        self.cached.lock().unwrap_or_else(PoisonError::into_inner).insert(
            connection.id.clone(),
            Arc::new(Cached {
                fingerprint,
                instructions: connection.instructions.clone(),
                pipeline: Arc::clone(&pipeline),
            }),
        );
        Ok(pipeline)
    }
}

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
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such connection in the organisation", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error` (an empty or too long question, a bad `conversation_id`, an unknown field), `cannot_answer`, `no_valid_query`, `query_rejected` or `query_failed`", body = ErrorBody),
        (status = 429, description = "`rate_limited` (the caller asked `CUSTARD_QUESTIONS_PER_MINUTE` questions in the last minute) or `too_many_questions` (the organisation has `CUSTARD_QUESTIONS_IN_FLIGHT_PER_ORG` questions in flight); `Retry-After` says when to ask again. Such a question is not recorded.", body = ErrorBody),
        (status = 502, description = "`llm_unavailable` or `agent_disconnected`", body = ErrorBody),
        (status = 503, description = "`agent_offline`, `agent_busy`, `database_unavailable`, or `unavailable` (the store)", body = ErrorBody),
        (status = 504, description = "`query_timeout`", body = ErrorBody),
    )
)]
pub(crate) async fn ask(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<AskBody>,
) -> Result<Json<AnswerView>, AppError> {
    let permit = admit(&state, &current)?;
    answer(&state, &current, permit, body, None).await.map(Json).map_err(|f| f.error)
}

/// Admits one question of the caller under the question limits: per user
/// per minute, and in flight per organisation. [`answer`] takes the permit,
/// so nothing runs the ask pipeline around the limits.
pub(crate) fn admit(state: &AppState, current: &CurrentUser) -> Result<QuestionPermit, AppError> {
    state.inner().questions.admit(current.user().id.as_str(), current.org().as_str())
}

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
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: a missing or unknown field", body = ErrorBody),
        (status = 429, description = "`rate_limited` or `too_many_questions`, as for `POST /api/v1/query`; see `Retry-After`", body = ErrorBody),
    )
)]
pub(crate) async fn ask_stream(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<AskBody>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let permit = admit(&state, &current)?;
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    tokio::spawn(async move {
        let steps = tx.clone();
        let progress = move |step: AskStep| {
            let _ = steps.send(
                Event::default().event("step").data(json!({"step": step.as_str()}).to_string()),
            );
        };
        let event = match answer(&state, &current, permit, body, Some(&progress)).await {
            Ok(body) => Event::default().event("answer").data(json!(body).to_string()),
            Err(f) => Event::default().event("error").data(f.error.body().to_string()),
        };
        let _ = tx.send(event);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

fn validate_question(question: &str) -> Result<&str, AppError> {
    let question = question.trim();
    if question.is_empty() {
        return Err(AppError::new(ErrorCode::Validation, "question must not be empty"));
    }
    if question.len() > MAX_QUESTION_BYTES {
        return Err(AppError::new(
            ErrorCode::Validation,
            format!("question must be at most {MAX_QUESTION_BYTES} bytes"),
        ));
    }
    Ok(question)
}

fn parse_conversation(id: Option<String>) -> Result<ConversationId, AppError> {
    match id {
        None => Ok(ConversationId::random()),
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Ok(ConversationId::from(id))
        }
        Some(_) => Err(AppError::new(
            ErrorCode::Validation,
            "conversation_id must be 1 to 64 letters, digits, `-` or `_`",
        )),
    }
}

/// Answers one question admitted by [`admit`] (it counts as in flight until
/// this returns) and records it, whatever the outcome. Shared by the API and
/// the web UI's Ask page (which shows a failure's last SQL).
pub(crate) async fn answer(
    state: &AppState,
    current: &CurrentUser,
    _permit: QuestionPermit,
    body: AskBody,
    progress: Option<&(dyn Fn(AskStep) + Send + Sync)>,
) -> Result<AnswerView, Failure> {
    let started = Instant::now();
    let question = validate_question(&body.question)?.to_owned();
    let continues = body.conversation_id.is_some();
    let conversation = parse_conversation(body.conversation_id)?;
    let inner = state.inner();
    let org = current.org();
    let connection =
        inner.store.get_connection(org, &ConnectionId::from(body.connection_id)).await?;

    let result = async {
        // Without an agent nothing can run: say so before spending a model call.
        if inner.router.presence(&connection.id).agents == 0 {
            return Err(Failure::from(AppError::from_exec(custard_core::ExecError::new(
                custard_core::ExecErrorCode::AgentOffline,
                "no agent is connected for this connection; start its agent (the connection's page shows how to run it)",
            ))));
        }
        let pipeline = inner.pipelines.get(state, &connection).await?;
        // A new conversation has no earlier turns to read.
        let earlier = if continues {
            inner.store.conversation(org, &conversation, CONVERSATION_TURNS).await?
        } else {
            Vec::new()
        };
        let turns: Vec<Turn> = earlier
            .into_iter()
            .filter(|q| q.record.connection_id == connection.id && q.record.outcome == "ok")
            .map(|q| Turn { question: q.record.question, sql: q.record.sql, answer: q.record.answer })
            .collect();
        let candidates: Vec<custard_core::Example> = inner
            .store
            .approved_examples(org, &connection.id, EXAMPLE_CANDIDATES)
            .await?
            .into_iter()
            .map(|e| custard_core::Example { question: e.question, sql: e.sql })
            .collect();
        let examples = select_examples(&question, &candidates, EXAMPLES_SHOWN);
        let mut request = AskRequest::new(&question).history(&turns).examples(&examples);
        if let Some(progress) = progress {
            request = request.progress(progress);
        }
        pipeline.ask_with(&request).await.map_err(|e| (e.clone(), AppError::from_ask(e))).map_err(
            |(ask_error, app_error)| {
                // Keep the last SQL tried for the history.
                let sql = match &ask_error {
                    custard_core::AskError::NoValidQuery { attempts } => {
                        attempts.iter().rev().find_map(|a| a.sql.clone())
                    }
                    _ => None,
                };
                Failure { error: app_error, sql, attempts: attempt_count(&ask_error), history_id: None }
            },
        )
    }
    .await;

    let engine = inner.model.name();
    let record = match &result {
        Ok(answer) => NewQueryRecord {
            org_id: org.clone(),
            connection_id: connection.id.clone(),
            user_id: current.user().id.clone(),
            conversation_id: conversation.clone(),
            question: question.clone(),
            sql: Some(answer.sql.clone()),
            outcome: "ok".to_owned(),
            error_message: None,
            answer: Some(answer.text.clone()),
            row_count: Some(answer.rows.len() as u64),
            truncated: answer.truncated,
            engine: answer.engine.clone(),
            attempts: u32::try_from(answer.attempts.len()).unwrap_or(u32::MAX),
            timings_json: json!(Timings::new(answer, started)).to_string(),
            result_json: Some(json!(ResultView::new(answer, HISTORY_ROWS)).to_string()),
        },
        Err(failure) => NewQueryRecord {
            org_id: org.clone(),
            connection_id: connection.id.clone(),
            user_id: current.user().id.clone(),
            conversation_id: conversation.clone(),
            question: question.clone(),
            sql: failure.sql.clone(),
            outcome: failure.error.code.as_str().to_owned(),
            error_message: Some(failure.error.message.clone()),
            answer: None,
            row_count: None,
            truncated: false,
            engine: engine.clone(),
            attempts: failure.attempts,
            timings_json: json!({"total_ms": ms(started.elapsed())}).to_string(),
            result_json: None,
        },
    };
    inner.metrics.question(&record.outcome);
    let saved = inner.store.record_query(record).await;
    let answer = match result {
        Ok(answer) => answer,
        Err(mut failure) => {
            match saved {
                Ok(q) => failure.history_id = Some(q.id.as_str().to_owned()),
                Err(e) => tracing::error!("could not record a failed question: {e}"),
            }
            return Err(failure);
        }
    };
    let saved = saved?;
    Ok(AnswerView {
        result: ResultView::new(&answer, answer.rows.len()),
        id: saved.id.as_str().to_owned(),
        answer: answer.text.clone(),
        sql_query: answer.sql.clone(),
        engine: answer.engine.clone(),
        attempts: answer.attempts.len(),
        timings: Timings::new(&answer, started),
        conversation_id: conversation.as_str().to_owned(),
        connection_id: connection.id.as_str().to_owned(),
    })
}

/// An answered question.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AnswerView {
    #[serde(flatten)]
    pub(crate) result: ResultView,
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

/// A result: columns, rows, counts and a chart.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ResultView {
    pub(crate) columns: Vec<ColumnView>,
    /// The rows, each a list of JSON values in column order.
    pub(crate) rows: Vec<Vec<Value>>,
    /// Rows in the answer (the rows listed may be fewer in the history).
    pub(crate) row_count: usize,
    /// Whether rows were left out by a cap.
    pub(crate) truncated: bool,
    /// A chart for the result, when its shape suits one.
    #[schema(required)]
    pub(crate) chart: Option<ChartView>,
}

impl ResultView {
    /// Columns, the first `max_rows` rows, counts and chart of an answer.
    fn new(answer: &Answer, max_rows: usize) -> Self {
        ResultView {
            columns: answer.columns.iter().map(ColumnView::from).collect(),
            rows: answer.rows[..answer.rows.len().min(max_rows)].to_vec(),
            row_count: answer.rows.len(),
            truncated: answer.truncated,
            chart: answer.chart.as_ref().map(ChartView::from),
        }
    }
}

/// A result column.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ColumnView {
    pub(crate) name: String,
    /// The database's name for its type (`int4`, `numeric`, `text`, ...).
    #[serde(rename = "type")]
    pub(crate) type_name: String,
}

impl From<&ColumnMeta> for ColumnView {
    fn from(c: &ColumnMeta) -> Self {
        ColumnView { name: c.name.clone(), type_name: c.type_name.clone() }
    }
}

/// A chart to draw.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChartView {
    /// `line` or `bar`.
    #[serde(rename = "type")]
    #[schema(example = "bar")]
    pub(crate) kind: &'static str,
    /// The column along the x axis.
    pub(crate) x: String,
    /// The measure columns drawn against x.
    pub(crate) y: Vec<String>,
}

impl From<&ChartSpec> for ChartView {
    fn from(c: &ChartSpec) -> Self {
        ChartView { kind: c.kind.as_str(), x: c.x.clone(), y: c.y.clone() }
    }
}

/// Milliseconds spent per step of answering.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Timings {
    pub(crate) retrieve_ms: f64,
    pub(crate) prompt_ms: f64,
    pub(crate) generate_ms: f64,
    pub(crate) guard_ms: f64,
    pub(crate) execute_ms: f64,
    pub(crate) answer_ms: f64,
    /// The pipeline's total.
    pub(crate) pipeline_ms: f64,
    /// The request's total, with the history and the store.
    pub(crate) total_ms: f64,
}

impl Timings {
    fn new(answer: &Answer, started: Instant) -> Self {
        let t = &answer.timings;
        Timings {
            retrieve_ms: ms(t.retrieve),
            prompt_ms: ms(t.prompt),
            generate_ms: ms(t.generate),
            guard_ms: ms(t.guard),
            execute_ms: ms(t.execute),
            answer_ms: ms(t.answer),
            pipeline_ms: ms(t.total),
            total_ms: ms(started.elapsed()),
        }
    }
}

/// A failed question: the API error plus what the history keeps of it.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What the API answers.
    pub(crate) error: AppError,
    /// The last SQL tried, when the failure came after writing some.
    pub(crate) sql: Option<String>,
    attempts: u32,
    /// Its entry in the history, once recorded.
    pub(crate) history_id: Option<String>,
}

impl From<AppError> for Failure {
    fn from(error: AppError) -> Self {
        Failure { error, sql: None, attempts: 0, history_id: None }
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::from(AppError::from(e))
    }
}

fn attempt_count(e: &custard_core::AskError) -> u32 {
    match e {
        custard_core::AskError::NoValidQuery { attempts } => {
            u32::try_from(attempts.len()).unwrap_or(u32::MAX)
        }
        _ => 0,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
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
    /// The `Timings` of an answer; only `total_ms` for a failed question.
    #[schema(value_type = Object)]
    pub(crate) timings: Value,
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
            timings: serde_json::from_str(&r.timings_json).unwrap_or(Value::Null),
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
    #[schema(value_type = Option<ResultView>, required)]
    pub(crate) result: Value,
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

/// List asked questions
///
/// The organisation's history, newest first, each question with who asked
/// it; optionally only one connection's, one person's, answered or failed
/// ones, or those whose text contains `q`. The filters combine.
#[utoipa::path(
    get,
    path = "/api/v1/queries",
    tag = "queries",
    security(("access_token" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of the history", body = QueryPage),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such connection in the organisation", body = ErrorBody),
        (status = 422, description = "`validation_error`: a `limit` or `offset` that is not a number, an `outcome` other than `answered` or `failed`, or a `q` longer than 200 characters", body = ErrorBody),
    )
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
        search: search_term(params.q.as_deref().unwrap_or_default())?,
        limit,
        offset,
    };
    let entries = state.inner().store.list_queries(current.org(), filter).await?;
    let queries: Vec<HistoryItem> = entries.iter().map(HistoryItem::from).collect();
    let next_offset = (queries.len() == limit as usize).then(|| offset + limit);
    Ok(Json(QueryPage { queries, limit, offset, next_offset }))
}

/// The history's search text: trimmed, `None` when empty, refused when
/// longer than [`MAX_SEARCH_CHARS`].
pub(crate) fn search_term(text: &str) -> Result<Option<String>, AppError> {
    let text = text.trim();
    if text.chars().count() > MAX_SEARCH_CHARS {
        return Err(AppError::new(
            ErrorCode::Validation,
            format!("the search text must be at most {MAX_SEARCH_CHARS} characters"),
        ));
    }
    Ok(Some(text.to_owned()).filter(|t| !t.is_empty()))
}

/// Delete an asked question
///
/// Removes a question from the organisation's history: its page, its CSV
/// export and its use as an example go with it. Members may delete the
/// questions they asked; owners and admins any.
#[utoipa::path(
    delete,
    path = "/api/v1/queries/{id}",
    tag = "queries",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The question's id")),
    responses(
        (status = 204, description = "The question is deleted"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: someone else asked it, and the caller is not an owner or admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such question in the organisation", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    delete_query(&state, &current, &QueryId::from(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a question of the caller's organisation if the caller may (see
/// [`delete`]): `forbidden` when not, `not_found` when there is no such question.
pub(crate) async fn delete_query(
    state: &AppState,
    current: &CurrentUser,
    id: &QueryId,
) -> Result<(), AppError> {
    let by = &current.user().id;
    match state.inner().store.delete_query(current.org(), id, by).await? {
        QueryDeletion::Deleted => {
            tracing::info!(query = %id, org = %current.org(), user = %by, "question deleted");
            Ok(())
        }
        QueryDeletion::NotAllowed => Err(AppError::new(
            ErrorCode::Forbidden,
            "only the person who asked a question, an owner or an admin may delete it",
        )),
    }
}

/// Get an asked question
///
/// One recorded question with its stored result.
#[utoipa::path(
    get,
    path = "/api/v1/queries/{id}",
    tag = "queries",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The question's id")),
    responses(
        (status = 200, description = "The question and its result", body = QueryDetail),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such question in the organisation", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<QueryDetail>, AppError> {
    let q = state.inner().store.get_query(current.org(), &QueryId::from(id)).await?;
    let result = q
        .record
        .result_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(Value::Null);
    Ok(Json(QueryDetail { query: QueryView::from(&q), result }))
}

/// Whether an answer was right.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedbackBody {
    pub(crate) correct: bool,
}

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
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such question in the organisation", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: no `correct`, or an unknown field", body = ErrorBody),
    )
)]
pub(crate) async fn feedback(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FeedbackBody>,
) -> Result<Json<QueryView>, AppError> {
    let q =
        state.inner().store.set_feedback(current.org(), &QueryId::from(id), body.correct).await?;
    Ok(Json(QueryView::from(&q)))
}

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
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such question in the organisation", body = ErrorBody),
        (status = 422, description = "`validation_error` (the question has no answer to export), `query_rejected` or `query_failed`", body = ErrorBody),
        (status = 502, description = "`agent_disconnected`", body = ErrorBody),
        (status = 503, description = "`agent_offline`, `agent_busy`, `database_unavailable`, or `unavailable` (the store)", body = ErrorBody),
        (status = 504, description = "`query_timeout`", body = ErrorBody),
    )
)]
pub(crate) async fn export_csv(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let inner = state.inner();
    let q = inner.store.get_query(current.org(), &QueryId::from(id)).await?;
    let Some(sql) = q.record.sql.clone().filter(|_| q.record.outcome == "ok") else {
        return Err(AppError::new(ErrorCode::Validation, "this question has no answer to export"));
    };
    let connection = inner.store.get_connection(current.org(), &q.record.connection_id).await?;
    let schema = load_schema(&state, &connection).await?;
    // The server's guard checks again what it sends; the agent checks once more.
    let guard = Guard::builder(connection.dialect)
        .max_rows(EXPORT_ROWS)
        .schema(schema)
        .build()
        .map_err(AppError::internal)?;
    let checked = guard.check(&sql).map_err(|r| {
        AppError::new(
            ErrorCode::QueryRejected,
            format!("the stored SQL no longer passes the guard: {r}"),
        )
    })?;
    let (tx, mut rx) = mpsc::channel::<RowBatch>(4);
    let router = Arc::clone(&inner.router);
    let limits = RunLimits {
        max_rows: EXPORT_ROWS,
        max_bytes: u64::MAX,
        timeout: Duration::from_secs(inner.config.query_timeout_secs.max(1) * 10),
        ..RunLimits::default()
    };
    let connection_id = connection.id.clone();
    // Aborted when the response is dropped (the client went away), which
    // cancels the query on the agent.
    let mut run = AbortOnDropHandle::new(tokio::spawn(async move {
        router.run(&connection_id, &checked, &limits, tx).await
    }));
    // Wait for the header row, so an offline agent is an error status, not an empty file.
    let first = rx.recv().await;
    let columns = match first {
        Some(RowBatch::Columns(columns)) => columns,
        _ => {
            drop(rx);
            let result = (&mut run).await.map_err(AppError::internal)?;
            return Err(match result {
                Err(e) => AppError::from_exec(e),
                Ok(_) => AppError::internal("the agent sent no columns"),
            });
        }
    };
    let names: Vec<std::borrow::Cow<'_, str>> =
        columns.iter().map(|c| text_cell(&c.name)).collect();
    let header_line = csv_bytes(&[names.iter().map(|n| n.as_bytes()).collect::<Vec<_>>()])
        .map_err(AppError::internal)?;
    let numeric: Vec<bool> = columns.iter().map(|c| numeric_type(&c.type_name)).collect();
    let stream = futures_util::stream::unfold(
        (Some(header_line), rx, Some(run)),
        move |(header_line, mut rx, run)| {
            let numeric = numeric.clone();
            async move {
                if let Some(bytes) = header_line {
                    return Some((
                        Ok::<Bytes, std::io::Error>(Bytes::from(bytes)),
                        (None, rx, run),
                    ));
                }
                match rx.recv().await {
                    Some(RowBatch::Rows(rows)) => {
                        let records: Vec<Vec<std::borrow::Cow<'_, str>>> = rows
                            .iter()
                            .map(|row| {
                                row.iter()
                                    .enumerate()
                                    .map(|(i, v)| cell(v, numeric.get(i).copied().unwrap_or(false)))
                                    .collect()
                            })
                            .collect();
                        let records: Vec<Vec<&[u8]>> = records
                            .iter()
                            .map(|r| r.iter().map(|c| c.as_bytes()).collect())
                            .collect();
                        Some((csv_bytes(&records).map(Bytes::from), (None, rx, run)))
                    }
                    Some(RowBatch::Columns(_)) => Some((Ok(Bytes::new()), (None, rx, run))),
                    None => {
                        // The rows ended: a failure now can only cut the body short,
                        // which the client sees as a failed download, never as a
                        // complete-looking file.
                        let run = run?;
                        match run.await {
                            Ok(Ok(summary)) if summary.truncated => {
                                tracing::warn!(
                                    rows = summary.row_count,
                                    "CSV export cut short by the agent's row or byte cap"
                                );
                                Some((
                                    Err(std::io::Error::other(format!(
                                        "the export stopped at the agent's cap after {} rows \
                                     (raise CUSTARD_MAX_ROWS / CUSTARD_MAX_BYTES on the agent)",
                                        summary.row_count
                                    ))),
                                    (None, rx, None),
                                ))
                            }
                            Ok(Ok(summary)) => {
                                tracing::info!(rows = summary.row_count, "CSV export finished");
                                None
                            }
                            Ok(Err(e)) => Some((
                                Err(std::io::Error::other(format!("export failed: {e}"))),
                                (None, rx, None),
                            )),
                            Err(e) => Some((Err(std::io::Error::other(e)), (None, rx, None))),
                        }
                    }
                }
            }
        },
    );
    let day = chrono::Utc::now().date_naive();
    let filename = crate::download::csv_name(&q.record.question, &connection.name, day);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, crate::download::attachment(&filename)),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A JSON value as one CSV cell: null empty, numbers as they are, text (and
/// anything else, as JSON) through [`text_cell`]. In a column of a number
/// type (`numeric` true), text that is a plain number (PostgreSQL sends
/// `numeric` as text to keep its precision) stays as it is, so `-2` is `-2`.
fn cell(value: &Value, numeric: bool) -> std::borrow::Cow<'_, str> {
    match value {
        Value::Null => "".into(),
        Value::String(s) if numeric && plain_number(s) => s.as_str().into(),
        Value::String(s) => text_cell(s),
        Value::Bool(b) => if *b { "true" } else { "false" }.into(),
        Value::Number(n) => n.to_string().into(),
        other => text_cell(&other.to_string()).into_owned().into(),
    }
}

/// Text as a CSV cell that a spreadsheet shows and does not run (OWASP's CSV
/// injection guidance): a cell starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return gets a leading `'`.
fn text_cell(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

/// Whether a column's database type is a number type (`int4`, `numeric(10,2)`,
/// `double precision`, SQLite's `INTEGER` and `REAL`, ...).
fn numeric_type(type_name: &str) -> bool {
    let base = type_name.split('(').next().unwrap_or_default().trim().to_ascii_lowercase();
    matches!(
        base.as_str(),
        "int"
            | "int2"
            | "int4"
            | "int8"
            | "integer"
            | "smallint"
            | "bigint"
            | "tinyint"
            | "mediumint"
            | "numeric"
            | "decimal"
            | "real"
            | "float"
            | "float4"
            | "float8"
            | "double"
            | "double precision"
            | "number"
    )
}

/// A plain decimal number: an optional `-`, digits with at most one `.`, and
/// an optional exponent (`-2`, `12.50`, `1e-7`); not `-inf`, not `-2+3`.
fn plain_number(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['+', '-']).unwrap_or(e))),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    !(whole.is_empty() && fraction.is_empty())
        && digits(whole)
        && digits(fraction)
        && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}

/// CSV bytes of some records (RFC 4180 quoting, CRLF line ends).
fn csv_bytes<R: AsRef<[u8]>>(records: &[Vec<R>]) -> std::io::Result<Vec<u8>> {
    let mut writer =
        csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    for record in records {
        writer.write_record(record)?;
    }
    writer.into_inner().map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use custard_core::{ChartKind, Timings as StepTimings};

    use super::*;
    use crate::store::{OrgId, UserId};

    #[test]
    fn csv_rows_follow_rfc_4180() {
        let out = csv_bytes(&[vec!["plain", "a,b", "say \"hi\"", "two\nlines", ""]]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
        assert_eq!(cell(&Value::Null, false), "");
        assert_eq!(cell(&json!("12.50"), true), "12.50");
        assert_eq!(cell(&json!(3), false), "3");
        assert_eq!(cell(&json!([1, 2]), false), "[1,2]");
    }

    /// OWASP's CSV injection guidance: text a spreadsheet would run as a
    /// formula is prefixed with `'`; numbers stay numbers.
    #[test]
    fn csv_cells_never_start_a_formula_but_numbers_stay_numbers() {
        // (value, the column's type, the cell)
        let cases: &[(Value, &str, &str)] = &[
            (
                json!("=HYPERLINK(\"http://evil.example\",\"x\")"),
                "text",
                "'=HYPERLINK(\"http://evil.example\",\"x\")",
            ),
            (json!("+cmd|' /C calc'!A0"), "text", "'+cmd|' /C calc'!A0"),
            (json!("@SUM(1+1)*cmd|' /C calc'!A0"), "text", "'@SUM(1+1)*cmd|' /C calc'!A0"),
            (json!("-2+3"), "text", "'-2+3"),
            (json!("\t=1+1"), "text", "'\t=1+1"),
            (json!("\r=1+1"), "text", "'\r=1+1"),
            (json!("-2"), "text", "'-2"),
            (json!("-2+3"), "numeric", "'-2+3"),
            (json!("-inf"), "float8", "'-inf"),
            (json!("=1"), "int4", "'=1"),
            (json!(-2), "int4", "-2"),
            (json!(-2), "text", "-2"),
            (json!(-2.5), "float8", "-2.5"),
            (json!("-2"), "numeric", "-2"),
            (json!("-12.50"), "numeric(10,2)", "-12.50"),
            (json!("-1e-7"), "double precision", "-1e-7"),
            (json!("-2"), "INTEGER", "-2"),
            (json!("plain"), "text", "plain"),
            (json!("a=b"), "text", "a=b"),
            (json!(" =1"), "text", " =1"),
            (json!(""), "text", ""),
            (json!(true), "bool", "true"),
            (json!(null), "text", ""),
            (json!(["=1"]), "jsonb", "[\"=1\"]"),
            (json!({"a": "=1"}), "jsonb", "{\"a\":\"=1\"}"),
        ];
        for (value, type_name, expected) in cases {
            assert_eq!(cell(value, numeric_type(type_name)), *expected, "{value} as {type_name}");
        }
        // Column names are text too.
        assert_eq!(text_cell("=cmd"), "'=cmd");
        assert_eq!(text_cell("total"), "total");
        let numbers = [("-2", true), ("12.50", true), (".5", true), ("5.", true), ("1E+3", true)];
        let not_numbers = [("", false), ("-", false), (".", false), ("1e", false), ("--2", false)];
        for (text, expected) in numbers.into_iter().chain(not_numbers) {
            assert_eq!(plain_number(text), expected, "{text:?}");
        }
    }

    #[test]
    fn conversation_ids_are_checked() {
        assert!(parse_conversation(None).is_ok());
        assert!(parse_conversation(Some("abc-123_X".into())).is_ok());
        assert!(parse_conversation(Some(String::new())).is_err());
        assert!(parse_conversation(Some("a b".into())).is_err());
        assert!(parse_conversation(Some("x".repeat(65))).is_err());
    }

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
            "engine": "offline", "attempts": 1, "timings": {"total_ms": 1.5}, "feedback": null,
            "created_at": "2026-01-02T03:04:05+00:00",
        });
        assert_eq!(json!(QueryView::from(&record(false))), failed);
        let mut detail = failed;
        detail["result"] = Value::Null;
        let q = record(false);
        assert_eq!(json!(QueryDetail { query: QueryView::from(&q), result: Value::Null }), detail);
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
