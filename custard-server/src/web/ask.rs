//! The Ask page (`/`): pick a connection, start from an example question the
//! engine can answer about it, ask, follow the progress, read the card of
//! each question (answered: text, highlighted SQL, sortable table, SVG chart,
//! CSV link; failed: what went wrong and what to do), give feedback, and keep
//! asking in the same conversation, shown as one thread.
//!
//! `POST /ask` answers as server-sent events like the API's
//! `/api/v1/query/stream`, but its `answer` and `error` events carry the
//! server-rendered card, so the page script only moves HTML around.
//! `GET /ask/examples` is the example questions of one connection, as the
//! page shows them (it asks again when another connection is picked).
//!
//! Without a language model, the offline engine answers each question on its
//! own: the page says so instead of promising follow-ups.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use custard_core::format::{CellText, NumberFormat, is_numeric_type};
use custard_core::llm::OfflineEngine;
use custard_core::{AskStep, SchemaIndex};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{CheckedForm, Csrf, Layout, WebError, WebUser, chart, highlight, page, sentence};
use crate::auth::CurrentUser;
use crate::config::LlmSettings;
use crate::connections::{self, status_of};
use crate::error::{AppError, ErrorCode};
use crate::pipelines::stored_schema;
use crate::questions::{self, Answered, AskInput, Failure, ResultView};
use crate::state::AppState;
use crate::store::{ConnectionId, QuerySource};

/// The Ask page's routes.
pub(crate) fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(ask_page))
        // A GET of a form's URL (a reload, a bookmark) is a page, not a method error.
        .route("/ask", get(|| async { Redirect::to("/") }).post(ask))
        .route("/ask/examples", get(examples))
        .route("/history/{id}/feedback", get(super::history::to_detail).post(feedback))
}

/// A connection in the picker.
#[derive(Debug)]
pub(crate) struct ConnectionChoice {
    id: String,
    name: String,
    status: &'static str,
    selected: bool,
}

/// What the Ask form starts with.
#[derive(Debug, Default)]
pub(crate) struct Prefill {
    /// The connection to select.
    pub(crate) connection_id: Option<String>,
    /// The question to put in the box.
    pub(crate) question: String,
    /// Whether the page asks it at once (a rerun from the history).
    pub(crate) autorun: bool,
}

#[derive(Template)]
#[template(path = "ask.html")]
struct AskPage {
    layout: Layout,
    connections: Vec<ConnectionChoice>,
    question: String,
    autorun: bool,
    notice: Option<&'static str>,
    /// Whether the engine reads earlier questions (a model does; the
    /// offline engine answers each question on its own).
    follow_ups: bool,
    /// The rendered [`ExampleList`] of the selected connection.
    examples: String,
}

/// `GET /` query parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct AskParams {
    /// The connection to select.
    #[serde(default)]
    connection: Option<String>,
    /// A past question to fill in (`POST /history/{id}/rerun` redirects
    /// here); it is asked at once only the first time, by a one-time flash.
    #[serde(default)]
    rerun: Option<String>,
}

/// `GET /`: the Ask page, the landing page after signing in.
pub(crate) async fn ask_page(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    Query(params): Query<AskParams>,
) -> Result<Response, WebError> {
    let mut prefill = Prefill { connection_id: params.connection, ..Prefill::default() };
    if let Some(id) = params.rerun {
        // A question gone since (its connection deleted) just leaves the form empty.
        if let Ok(q) = questions::get(&state, &user, &id).await {
            let target = super::history::rerun_target(&id);
            prefill = Prefill {
                connection_id: Some(q.record.connection_id.as_str().to_owned()),
                question: q.record.question,
                autorun: matches!(
                    state
                        .inner()
                        .flashes
                        .take(&crate::flash::Owner::session(user.session()?), &target),
                    Some(crate::flash::Flash::Rerun)
                ),
            };
        }
    }
    render_ask_page(&state, &user, &headers, prefill).await
}

/// Renders the Ask page for `user`, with the form prefilled.
pub(crate) async fn render_ask_page(
    state: &AppState,
    user: &CurrentUser,
    headers: &HeaderMap,
    prefill: Prefill,
) -> Result<Response, WebError> {
    let inner = state.inner();
    let stored = connections::list(state, user).await?;
    // The requested connection, else the first online one, else the first.
    let status = |c: &crate::store::Connection| status_of(c, inner.router.presence(&c.id).agents);
    let requested =
        prefill.connection_id.as_deref().and_then(|id| stored.iter().find(|c| c.id.as_str() == id));
    // A question is only asked at once about the connection it was asked of.
    let autorun = prefill.autorun && requested.is_some();
    let notice = (prefill.connection_id.is_some() && requested.is_none())
        .then_some("That connection no longer exists; pick another one.");
    let chosen = requested
        .or_else(|| stored.iter().find(|c| status(c) == "online"))
        .or(stored.first())
        .map(|c| c.id.clone());
    let connections = stored
        .iter()
        .map(|c| ConnectionChoice {
            id: c.id.as_str().to_owned(),
            name: c.name.clone(),
            status: status(c),
            selected: Some(&c.id) == chosen.as_ref(),
        })
        .collect();
    // Examples already worked out are shown at once; the page script asks
    // for the others, so a wide schema being indexed does not hold the page.
    let examples = match stored.iter().find(|c| Some(&c.id) == chosen.as_ref()) {
        Some(c) => match cached_examples(c) {
            Some(questions) => ExampleList::ready(state, &c.id, questions),
            None => ExampleList::loading(&c.id),
        }
        .render()
        .unwrap_or_default(),
        // No connection: no form, no examples.
        None => String::new(),
    };
    let csrf = Csrf::of(state, headers);
    let html = AskPage {
        layout: csrf.signed_in(user, "ask"),
        connections,
        question: prefill.question,
        autorun,
        notice,
        follow_ups: takes_follow_ups(state),
        examples,
    }
    .render();
    Ok(page(StatusCode::OK, html, csrf.cookies()))
}

/// How many example questions the page shows.
const EXAMPLES_SHOWN: usize = 5;
/// Schemas whose example questions are kept, at most (then the cache starts over).
const EXAMPLE_SCHEMAS: usize = 256;

/// Example questions by schema fingerprint: they depend on the schema alone,
/// and finding them indexes the schema, which is worth doing once per schema.
static EXAMPLES: LazyLock<Mutex<HashMap<String, Arc<[String]>>>> = LazyLock::new(Mutex::default);

/// Whether the engine reads a conversation's earlier questions: a language
/// model does; the offline engine answers each question on its own.
fn takes_follow_ups(state: &AppState) -> bool {
    !matches!(state.config().llm(), Ok(LlmSettings::Offline))
}

/// The example questions of a connection's current schema, when already found.
fn cached_examples(connection: &crate::store::Connection) -> Option<Arc<[String]>> {
    let fingerprint = connection.schema_fingerprint.as_ref()?;
    EXAMPLES.lock().unwrap_or_else(PoisonError::into_inner).get(fingerprint).cloned()
}

/// The example questions of a connection: questions about its schema that
/// the offline engine plans into SQL the guard accepts (so a model can
/// answer them too); `None` while the schema is not known yet.
async fn find_examples(
    state: &AppState,
    connection: &crate::store::Connection,
) -> Result<Option<Arc<[String]>>, AppError> {
    if let Some(found) = cached_examples(connection) {
        return Ok(Some(found));
    }
    let schema = match stored_schema(state.inner().store.as_ref(), connection).await {
        Ok(schema) => schema,
        Err(e) if e.code == ErrorCode::SchemaUnavailable => return Ok(None),
        Err(e) => return Err(e),
    };
    let fingerprint = schema.fingerprint();
    // Indexing is CPU work proportional to the schema; keep it off the async threads.
    let questions: Arc<[String]> = tokio::task::spawn_blocking(move || {
        OfflineEngine::new().example_questions(&SchemaIndex::new(schema), EXAMPLES_SHOWN)
    })
    .await
    .map_err(AppError::internal)?
    .into();
    let mut cache = EXAMPLES.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= EXAMPLE_SCHEMAS {
        cache.clear();
    }
    cache.insert(fingerprint, Arc::clone(&questions));
    Ok(Some(questions))
}

/// The example questions under the question box.
#[derive(Template)]
#[template(path = "ask_examples.html")]
pub(crate) struct ExampleList {
    connection_id: String,
    /// `ready`, `loading` (the page script asks for them) or `pending` (the
    /// schema is not known yet; the page script asks again when the status
    /// stream says the connection has one).
    state: &'static str,
    questions: Arc<[String]>,
    /// What the list is, for people.
    label: &'static str,
}

impl ExampleList {
    /// The questions found for a connection.
    fn ready(state: &AppState, id: &ConnectionId, questions: Arc<[String]>) -> Self {
        let label = if takes_follow_ups(state) {
            "Examples to start from:"
        } else {
            "Questions the offline engine can answer about this database:"
        };
        ExampleList { connection_id: id.as_str().to_owned(), state: "ready", questions, label }
    }

    /// A placeholder the page script fills in.
    fn loading(id: &ConnectionId) -> Self {
        ExampleList {
            connection_id: id.as_str().to_owned(),
            state: "loading",
            questions: Arc::new([]),
            label: "",
        }
    }
}

/// `GET /ask/examples` parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct ExamplesParams {
    /// The connection whose examples to show.
    #[serde(default)]
    connection: String,
}

/// `GET /ask/examples?connection=ID`: the example questions of a connection
/// as the Ask page shows them (an HTML fragment for the page script).
pub(crate) async fn examples(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    Query(params): Query<ExamplesParams>,
) -> Result<Response, WebError> {
    let connection = connections::get(&state, &user, &params.connection).await?;
    let id = connection.id.clone();
    let list = match find_examples(&state, &connection).await? {
        Some(questions) => ExampleList::ready(&state, &id, questions),
        None => ExampleList { state: "pending", ..ExampleList::loading(&id) },
    };
    Ok(page(StatusCode::OK, list.render(), Vec::new()))
}

/// The Ask form.
#[derive(Debug, Deserialize)]
pub(crate) struct AskForm {
    #[serde(default)]
    connection_id: String,
    #[serde(default)]
    question: String,
    #[serde(default)]
    conversation_id: String,
}

/// `POST /ask`: answers as server-sent events: `step` events (the step's
/// name and a label), then one `answer` event (the card's HTML) or one `error`
/// event (the error card's HTML).
pub(crate) async fn ask(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    CheckedForm(form): CheckedForm<AskForm>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let body = AskInput {
        connection_id: form.connection_id,
        question: form.question.clone(),
        conversation_id: Some(form.conversation_id).filter(|c| !c.is_empty()),
    };
    // Over the question limits: a 429 whose message the page shows.
    let permit = questions::admit(&state, &user)?;
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    tokio::spawn(async move {
        let steps = tx.clone();
        let progress = move |step: AskStep| {
            let data = serde_json::json!({"step": step.as_str(), "label": step_label(step)});
            let _ = steps.send(Event::default().event("step").data(data.to_string()));
        };
        let event =
            match questions::answer(&state, &user, permit, QuerySource::Web, body, Some(&progress))
                .await
            {
                Ok(answered) => match AnswerCard::from_answer(&form.question, &answered).render() {
                    Ok(html) => Event::default().event("answer").data(no_cr(&html)),
                    Err(e) => error_event(&form.question, &Failure::from(AppError::internal(e))),
                },
                Err(failure) => error_event(&form.question, &failure),
            };
        let _ = tx.send(event);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

/// What the page says while a step runs.
fn step_label(step: AskStep) -> &'static str {
    match step {
        AskStep::Retrieving => "Finding the relevant tables",
        AskStep::Generating => "Writing SQL",
        AskStep::Checking => "Checking that the SQL only reads",
        AskStep::Running => "Running it on your database",
        AskStep::Summarising => "Summarising the answer",
        _ => "Working",
    }
}

/// The `error` event of a failed question: its card.
fn error_event(question: &str, failure: &Failure) -> Event {
    let sql = failure.sql.as_deref();
    let html = ErrorCard::new(question.trim(), &failure.error, sql, failure.history_id.as_deref())
        .render()
        .unwrap_or_else(|_| "<p class=\"error\">Something went wrong.</p>".to_owned());
    Event::default().event("error").data(no_cr(&html))
}

/// SSE data cannot hold carriage returns (they end lines); in HTML `&#13;` is the same character.
fn no_cr(html: &str) -> String {
    html.replace('\r', "&#13;")
}

/// A column of the answer table.
#[derive(Debug)]
pub(crate) struct CardColumn {
    name: String,
    numeric: bool,
}

/// A cell: the text shown and, for numbers, the value to sort by and, when
/// the text rounds it, the exact value (its `title`).
#[derive(Debug)]
pub(crate) struct Cell {
    text: String,
    number: Option<f64>,
    exact: Option<String>,
    null: bool,
}

impl Cell {
    /// A cell of a column shown in `format`; numbers get a sort key only in
    /// number columns, and a readable text (`250,048`) in any, with the
    /// exact value behind it.
    fn new(value: &Value, format: NumberFormat) -> Self {
        let number = match value {
            Value::Number(n) if format.numeric() => n.as_f64(),
            Value::String(s) if format.numeric() => {
                s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
            }
            _ => None,
        };
        let exact = CellText::Exact.text(value);
        let shown = CellText::Table(format).text(value);
        if shown == exact {
            Cell { text: exact.into_owned(), number, exact: None, null: value.is_null() }
        } else {
            Cell { text: shown.into_owned(), number, exact: Some(exact.into_owned()), null: false }
        }
    }
}

/// An answer as the page shows it.
#[derive(Template)]
#[template(path = "answer_card.html")]
pub(crate) struct AnswerCard {
    id: String,
    question: String,
    text: String,
    sql_html: String,
    engine: String,
    attempts: usize,
    total_ms: Option<String>,
    conversation_id: String,
    connection_id: String,
    columns: Vec<CardColumn>,
    rows: Vec<Vec<Cell>>,
    row_count: usize,
    truncated: bool,
    /// Fewer rows listed than the answer had (a history entry keeps 200).
    partial: bool,
    chart_svg: Option<String>,
    /// The rendered [`Feedback`] buttons.
    feedback: String,
    /// Whether to link to its history entry (not on the entry's own page).
    history_link: bool,
}

/// The parts of an answer a card shows, from a live answer or the history.
#[derive(Debug)]
pub(crate) struct CardInput<'a> {
    pub(crate) id: &'a str,
    pub(crate) question: &'a str,
    pub(crate) text: &'a str,
    pub(crate) sql: &'a str,
    pub(crate) engine: &'a str,
    pub(crate) attempts: usize,
    pub(crate) total_ms: Option<f64>,
    pub(crate) conversation_id: &'a str,
    pub(crate) connection_id: &'a str,
    /// Columns, rows (all of them, or the history's first ones), counts and chart.
    pub(crate) result: &'a ResultView<'a>,
    pub(crate) feedback: Option<bool>,
}

/// Whether a result column holds numbers (right-aligned, sorted as numbers):
/// a numeric database type, or, when the type says nothing (SQLite
/// expressions), JSON numbers in every non-null cell.
fn numeric_column(type_name: &str, index: usize, rows: &[Vec<Value>]) -> bool {
    if type_name.split('(').next().unwrap_or_default().trim().is_empty() {
        let mut values = rows.iter().filter_map(|r| r.get(index)).filter(|v| !v.is_null());
        let first = values.next();
        return first.is_some_and(Value::is_number) && values.all(Value::is_number);
    }
    is_numeric_type(type_name)
}

impl AnswerCard {
    /// The card of a card input.
    pub(crate) fn new(input: CardInput<'_>) -> Self {
        let result = input.result;
        let (columns, rows) = (&result.columns, &*result.rows);
        let numeric: Vec<bool> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| numeric_column(&c.type_name, i, rows))
            .collect();
        let formats: Vec<NumberFormat> = (columns.iter().zip(&numeric))
            .enumerate()
            .map(|(i, (c, n))| NumberFormat::of(&c.name, *n, i, rows))
            .collect();
        let chart_svg = result
            .chart
            .as_ref()
            .and_then(|c| chart::html(&format!("chart-{}", input.id), c, columns, rows));
        AnswerCard {
            id: input.id.to_owned(),
            question: input.question.to_owned(),
            text: input.text.to_owned(),

            sql_html: highlight::sql_html(input.sql),
            engine: engine_label(input.engine),
            attempts: input.attempts,
            total_ms: input.total_ms.map(super::duration_text),
            conversation_id: input.conversation_id.to_owned(),
            connection_id: input.connection_id.to_owned(),
            rows: rows
                .iter()
                .map(|row| row.iter().zip(&formats).map(|(v, f)| Cell::new(v, *f)).collect())
                .collect(),
            columns: columns
                .iter()
                .zip(&numeric)
                .map(|(c, numeric)| CardColumn { name: c.name.to_string(), numeric: *numeric })
                .collect(),
            row_count: result.row_count,
            truncated: result.truncated,
            partial: rows.len() < result.row_count,
            chart_svg,
            feedback: Feedback { id: input.id.to_owned(), correct: input.feedback, failed: false }
                .render()
                .unwrap_or_default(),
            history_link: true,
        }
    }

    /// The card on its own history page: no link to that page.
    pub(crate) fn in_history(mut self) -> Self {
        self.history_link = false;
        self
    }

    /// The card of a fresh answer.
    pub(crate) fn from_answer(question: &str, answered: &Answered) -> Self {
        let answer = &answered.answer;
        // Borrows the answer: its rows are not copied.
        let result = ResultView::new(answer, answer.rows.len());
        AnswerCard::new(CardInput {
            id: answered.id.as_str(),
            question: question.trim(),
            text: &answer.text,
            sql: &answer.sql,
            engine: &answer.engine,
            attempts: answer.attempts.len(),
            total_ms: Some(answered.timings().total_ms),
            conversation_id: answered.conversation_id.as_str(),
            connection_id: answered.connection_id.as_str(),
            result: &result,
            feedback: None,
        })
    }
}

/// Which engine wrote the SQL, for people.
fn engine_label(engine: &str) -> String {
    if engine == "offline" { "the offline engine".to_owned() } else { format!("model {engine}") }
}

/// The thumbs up/down of an answer, or of a failure (was it right not to
/// answer?); only answers marked correct become examples.
#[derive(Template)]
#[template(path = "feedback.html")]
pub(crate) struct Feedback {
    id: String,
    correct: Option<bool>,
    /// Whether the question failed.
    failed: bool,
}

/// A failed question as the page shows it: the question, what happened, the
/// reason, what to do, the SQL tried, and feedback once it is in the history.
#[derive(Template)]
#[template(path = "error_card.html")]
pub(crate) struct ErrorCard {
    question: String,
    title: &'static str,
    message: String,
    code: &'static str,
    sql_html: Option<String>,
    hint: Option<&'static str>,
    /// Its history entry, when recorded.
    history_id: Option<String>,
    /// Whether to link to that entry (not on the entry's own page).
    history_link: bool,
    /// The rendered [`Feedback`] buttons, once recorded.
    feedback: String,
}

/// What to do when the offline engine could not read a question.
const REPHRASE_OFFLINE: &str = "Rephrase it with the table and column names you mean, or start \
     from an example question on the Ask page. A language model (CUSTARD_LLM_MODEL on the \
     server) answers many more kinds of question.";
/// What to do when a model found no way to answer from this database.
const REPHRASE: &str = "Rephrase it with the table and column names you mean.";

/// A `cannot_answer` message without the advice the engine and the API add to
/// it (the card gives its own, once), and whether that advice was to
/// configure a language model (the offline engine could not read it).
fn without_advice(message: &str) -> (&str, bool) {
    const ADVICE: &[&str] =
        &["configure an llm", "configure a language model", "or rephrase", "rephrase the question"];
    // ASCII lower case keeps every byte where it was.
    let lower = message.to_ascii_lowercase();
    let cut = lower
        .match_indices("; ")
        .map(|(i, _)| i)
        .find(|&i| ADVICE.iter().any(|a| lower[i + 2..].starts_with(a)));
    match cut {
        Some(i) => {
            let advice = &lower[i..];
            (message[..i].trim_end(), advice.contains("llm") || advice.contains("language model"))
        }
        None => (message, false),
    }
}

impl ErrorCard {
    /// The card for a failed question, with the last SQL tried and its
    /// history entry (a link and feedback) when recorded.
    pub(crate) fn new(
        question: &str,
        error: &AppError,
        sql: Option<&str>,
        history_id: Option<&str>,
    ) -> Self {
        let (title, hint) = match error.code {
            ErrorCode::AgentOffline => (
                "The agent is offline",
                Some(
                    "Start the agent next to your database: the connection's page (under Connections) shows how to run it.",
                ),
            ),
            ErrorCode::AgentBusy => ("The agent is busy", Some("Try again in a moment.")),
            ErrorCode::AgentDisconnected | ErrorCode::Canceled => (
                "The agent disconnected while answering",
                Some("Try again once it is back online."),
            ),
            ErrorCode::QueryTimeout => {
                ("The query took too long", Some("Ask for less data, or a narrower time range."))
            }
            ErrorCode::NoValidQuery | ErrorCode::QueryRejected => ("The SQL was rejected", None),
            ErrorCode::QueryFailed | ErrorCode::PermissionDenied => {
                ("The database refused the query", None)
            }
            ErrorCode::CannotAnswer => ("Custard could not answer this", Some(REPHRASE)),
            ErrorCode::LlmUnavailable
            | ErrorCode::LlmTimeout
            | ErrorCode::LlmRateLimited
            | ErrorCode::LlmUnauthorized
            | ErrorCode::LlmBadResponse
            | ErrorCode::LlmMisconfigured => {
                ("The language model is unavailable", Some("Try again in a moment."))
            }
            ErrorCode::SchemaUnavailable => (
                "The schema is not known yet",
                Some("Wait for the agent to report it, or refresh it on the Connections page."),
            ),
            ErrorCode::DatabaseUnavailable | ErrorCode::PrivilegedRole => {
                ("The database is unavailable", None)
            }
            ErrorCode::NotFound => ("No such connection", Some("Pick a connection from the list.")),
            ErrorCode::Validation | ErrorCode::InvalidQuestion => ("Check the question", None),
            ErrorCode::Forbidden => ("The page expired", Some("Reload the page and ask again.")),
            _ => ("Something went wrong", None),
        };
        let (message, hint) = if error.code == ErrorCode::CannotAnswer {
            let (reason, offline) = without_advice(&error.message);
            let reason = sentence(&AppError::new(error.code, reason));
            (reason, Some(if offline { REPHRASE_OFFLINE } else { REPHRASE }))
        } else {
            (sentence(error), hint)
        };
        let mut card = ErrorCard {
            question: question.to_owned(),
            title,
            message,
            code: error.code.as_str(),
            sql_html: sql.map(highlight::sql_html),
            hint,
            history_id: history_id.map(str::to_owned),
            history_link: history_id.is_some(),
            feedback: String::new(),
        };
        card.feedback = card.feedback_html(None);
        card
    }

    /// The card on its own history page: no link to that page, and the
    /// feedback given.
    pub(crate) fn in_history(mut self, correct: Option<bool>) -> Self {
        self.history_link = false;
        self.feedback = self.feedback_html(correct);
        self
    }

    /// The feedback buttons, when the failure was recorded.
    fn feedback_html(&self, correct: Option<bool>) -> String {
        let Some(id) = &self.history_id else { return String::new() };
        Feedback { id: id.clone(), correct, failed: true }.render().unwrap_or_default()
    }
}

/// The feedback form.
#[derive(Debug, Deserialize)]
pub(crate) struct FeedbackForm {
    #[serde(default)]
    correct: String,
}

/// `POST /history/{id}/feedback` (htmx): records thumbs up or down and
/// answers with the updated buttons.
pub(crate) async fn feedback(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    Path(id): Path<String>,
    CheckedForm(form): CheckedForm<FeedbackForm>,
) -> Result<Response, WebError> {
    let correct = match form.correct.as_str() {
        "true" => true,
        "false" => false,
        _ => {
            return Err(
                AppError::new(ErrorCode::Validation, "correct must be true or false").into()
            );
        }
    };
    let q = questions::set_feedback(&state, &user, &id, correct).await?;
    let failed = q.record.outcome != "ok";
    let html = Feedback { id: q.id.as_str().to_owned(), correct: q.feedback, failed }.render();
    Ok(page(StatusCode::OK, html, Vec::new()).into_response())
}

#[cfg(test)]
mod tests {
    use custard_core::AskError;
    use custard_core::llm::{LlmError, LlmErrorCode};

    use super::*;

    /// What the offline engine's abstention becomes on the wire.
    fn abstained(reason: &str) -> AppError {
        let message =
            format!("the offline engine {reason}; configure an LLM for questions like this");
        AppError::from_ask(AskError::Model(LlmError::new(LlmErrorCode::Abstained, message)))
    }

    /// The history shows an answer as it was given: the card of the stored
    /// result is the card of the answer.
    #[test]
    fn a_stored_result_shows_the_same_card() {
        use custard_core::{Answer, ChartKind, ChartSpec, ColumnMeta, Timings};
        use serde_json::json;

        let column = |name: &str, type_name: &str| ColumnMeta {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
        };
        let answer = Answer {
            text: "Revenue by status: paid 250,048 and open 12.50.".to_owned(),
            sql: "SELECT status, revenue FROM t".to_owned(),
            columns: vec![column("status", "text"), column("revenue", "numeric")],
            rows: vec![vec![json!("paid"), json!("250047.70")], vec![json!("open"), json!("12.5")]],
            truncated: false,
            chart: Some(ChartSpec {
                kind: ChartKind::Bar,
                x: "status".to_owned(),
                y: vec!["revenue".to_owned()],
            }),
            engine: "offline".to_owned(),
            attempts: vec![],
            timings: Timings::default(),
        };
        let card = |result: &ResultView<'_>| {
            AnswerCard::new(CardInput {
                id: "q1",
                question: "Revenue by status?",
                text: &answer.text,
                sql: &answer.sql,
                engine: &answer.engine,
                attempts: 1,
                total_ms: Some(4.2),
                conversation_id: "v1",
                connection_id: "c1",
                result,
                feedback: None,
            })
            .render()
            .expect("a card")
        };
        let live = card(&ResultView::new(&answer, answer.rows.len()));
        assert!(live.contains("250,048") && live.contains("<table class=\"bar-chart\""), "{live}");
        let stored = questions::json_text(&ResultView::new(&answer, 200));
        assert_eq!(card(&ResultView::read(&stored).expect("a stored result")), live);
    }

    #[test]
    fn the_advice_in_a_message_is_left_to_the_card() {
        let cases = [
            (
                abstained("could not tell which table or column 'revenue' means").message,
                ("the offline engine could not tell which table or column 'revenue' means", true),
            ),
            (
                "this database cannot answer that: there is no weather; none at all".to_owned(),
                ("this database cannot answer that: there is no weather; none at all", false),
            ),
            (
                "it found nothing; rephrase the question with the table and column names you \
                 mean, or configure a language model (CUSTARD_LLM_MODEL)."
                    .to_owned(),
                ("it found nothing", true),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(without_advice(&message), expected, "{message}");
        }
    }

    #[test]
    fn a_failed_card_shows_its_question_the_advice_once_and_takes_feedback() {
        let error = abstained("could not tell which table or column 'revenue' means");
        let card = ErrorCard::new("What is the revenue <growth>?", &error, None, Some("q1"));
        let html = card.render().expect("a card");
        assert!(html.contains("<h2 class=\"question\">What is the revenue &#60;growth&#62;?</h2>"));
        assert_eq!(html.to_lowercase().matches("rephrase").count(), 1, "{html}");
        assert_eq!(html.matches("CUSTARD_LLM_MODEL").count(), 1, "{html}");
        assert!(html.contains("hx-post=\"/history/q1/feedback\""), "{html}");
        assert!(html.contains("href=\"/history/q1\""), "a link to the history entry");

        // On its own History page: no link to itself, the feedback given.
        let html = ErrorCard::new("Q", &error, None, Some("q1")).in_history(Some(false)).render();
        let html = html.expect("a card");
        assert!(!html.contains("href=\"/history/q1\""), "{html}");
        assert!(html.contains("value=\"false\" class=\"small\" aria-pressed=\"true\""), "{html}");

        // Not recorded (the page expired): no feedback to give.
        let expired = AppError::new(ErrorCode::Forbidden, "the form expired");
        let html = ErrorCard::new("Q", &expired, None, None).render().expect("a card");
        assert!(!html.contains("feedback") && !html.contains("/history/"), "{html}");
    }
}
