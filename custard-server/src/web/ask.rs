//! The Ask page (`/`): pick a connection, ask, follow the progress, read the
//! answer card (text, highlighted SQL, sortable table, SVG chart, CSV link,
//! feedback), and follow up in the same conversation.
//!
//! `POST /ask` answers as server-sent events like the API's
//! `/api/v1/query/stream`, but its `answer` and `error` events carry the
//! server-rendered card, so the page script only moves HTML around.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use custard_core::AskStep;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{CheckedForm, Csrf, Layout, WebError, WebUser, chart, highlight, page, sentence};
use crate::accounts::CurrentUser;
use crate::connections::status_of;
use crate::error::{AppError, ErrorCode};
use crate::queries::{self, AnswerView, AskBody, Failure};
use crate::routes::AppState;
use crate::store::QueryId;

/// The Ask page's routes.
pub(crate) fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(ask_page))
        // A GET of a form's URL (a reload, a bookmark) is a page, not a method error.
        .route("/ask", get(|| async { Redirect::to("/") }).post(ask))
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
        if let Ok(q) = state.inner().store.get_query(user.org(), &QueryId::from(id.clone())).await {
            let target = super::history::rerun_target(&id);
            prefill = Prefill {
                connection_id: Some(q.record.connection_id.as_str().to_owned()),
                question: q.record.question,
                autorun: matches!(
                    state
                        .inner()
                        .flashes
                        .take(&super::flash::Owner::session(user.session()), &target),
                    Some(super::flash::Flash::Rerun)
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
    let stored = inner.store.list_connections(user.org()).await?;
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
    let csrf = Csrf::of(state, headers);
    let html = AskPage {
        layout: csrf.signed_in(user, "ask"),
        connections,
        question: prefill.question,
        autorun,
        notice,
    }
    .render();
    Ok(page(StatusCode::OK, html, csrf.cookies()))
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
    let body = AskBody {
        connection_id: form.connection_id,
        question: form.question.clone(),
        conversation_id: Some(form.conversation_id).filter(|c| !c.is_empty()),
    };
    // Over the question limits: a 429 whose message the page shows.
    let permit = queries::admit(&state, &user)?;
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    tokio::spawn(async move {
        let steps = tx.clone();
        let progress = move |step: AskStep| {
            let data = serde_json::json!({"step": step.as_str(), "label": step_label(step)});
            let _ = steps.send(Event::default().event("step").data(data.to_string()));
        };
        let event = match queries::answer(&state, &user, permit, body, Some(&progress)).await {
            Ok(view) => match AnswerCard::from_answer(&form.question, &view).render() {
                Ok(html) => Event::default().event("answer").data(no_cr(&html)),
                Err(e) => error_event(&Failure::from(AppError::internal(e))),
            },
            Err(failure) => error_event(&failure),
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

fn error_event(failure: &Failure) -> Event {
    let html =
        ErrorCard::new(&failure.error, failure.sql.as_deref(), failure.history_id.as_deref())
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

/// A cell: the text shown and, for numbers, the value to sort by.
#[derive(Debug)]
pub(crate) struct Cell {
    text: String,
    number: Option<f64>,
    null: bool,
}

impl Cell {
    /// A cell of a column; numbers get a sort key only in number columns.
    fn new(value: &Value, numeric: bool) -> Self {
        let number = match value {
            Value::Number(n) if numeric => n.as_f64(),
            Value::String(s) if numeric => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            _ => None,
        };
        let text = match value {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Cell { text, number, null: value.is_null() }
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
    /// Column names and database type names.
    pub(crate) columns: Vec<(String, String)>,
    pub(crate) rows: &'a [Vec<Value>],
    pub(crate) row_count: usize,
    pub(crate) truncated: bool,
    /// The chart: kind, x column and y columns.
    pub(crate) chart: Option<(String, String, Vec<String>)>,
    pub(crate) feedback: Option<bool>,
}

/// Whether a result column holds numbers (right-aligned, sorted as numbers):
/// a numeric database type, or, when the type says nothing (SQLite
/// expressions), JSON numbers in every non-null cell.
fn numeric_column(type_name: &str, index: usize, rows: &[Vec<Value>]) -> bool {
    let t = type_name.trim().to_ascii_lowercase();
    let base = t.split('(').next().unwrap_or_default().trim();
    match base {
        "int2" | "int4" | "int8" | "smallint" | "integer" | "int" | "bigint" | "numeric"
        | "decimal" | "real" | "float4" | "float8" | "float" | "double" | "double precision"
        | "money" => true,
        "" => {
            let mut values = rows.iter().filter_map(|r| r.get(index)).filter(|v| !v.is_null());
            let first = values.next();
            first.is_some_and(Value::is_number) && values.all(Value::is_number)
        }
        _ => false,
    }
}

impl AnswerCard {
    /// The card of a card input.
    pub(crate) fn new(input: CardInput<'_>) -> Self {
        let names: Vec<String> = input.columns.iter().map(|(name, _)| name.clone()).collect();
        let numeric: Vec<bool> = input
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, type_name))| numeric_column(type_name, i, input.rows))
            .collect();
        let chart_svg = input.chart.as_ref().and_then(|(kind, x, y)| {
            chart::svg(&format!("chart-{}", input.id), kind, x, y, &names, input.rows)
        });
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
            rows: input
                .rows
                .iter()
                .map(|row| row.iter().zip(&numeric).map(|(v, n)| Cell::new(v, *n)).collect())
                .collect(),
            columns: input
                .columns
                .iter()
                .zip(&numeric)
                .map(|((name, _), numeric)| CardColumn { name: name.clone(), numeric: *numeric })
                .collect(),
            row_count: input.row_count,
            truncated: input.truncated,
            partial: input.rows.len() < input.row_count,
            chart_svg,
            feedback: Feedback { id: input.id.to_owned(), correct: input.feedback }
                .render()
                .unwrap_or_default(),
        }
    }

    /// The card of a fresh answer.
    pub(crate) fn from_answer(question: &str, view: &AnswerView) -> Self {
        let result = &view.result;
        AnswerCard::new(CardInput {
            id: &view.id,
            question: question.trim(),
            text: &view.answer,
            sql: &view.sql_query,
            engine: &view.engine,
            attempts: view.attempts,
            total_ms: Some(view.timings.total_ms),
            conversation_id: &view.conversation_id,
            connection_id: &view.connection_id,
            columns: result.columns.iter().map(|c| (c.name.clone(), c.type_name.clone())).collect(),
            rows: &result.rows,
            row_count: result.row_count,
            truncated: result.truncated,
            chart: result.chart.as_ref().map(|c| (c.kind.to_owned(), c.x.clone(), c.y.clone())),
            feedback: None,
        })
    }
}

/// Which engine wrote the SQL, for people.
fn engine_label(engine: &str) -> String {
    if engine == "offline" { "the offline engine".to_owned() } else { format!("model {engine}") }
}

/// The thumbs up/down of an answer.
#[derive(Template)]
#[template(path = "feedback.html")]
pub(crate) struct Feedback {
    id: String,
    correct: Option<bool>,
}

/// An error as the page shows it: what happened, the reason, the SQL tried.
#[derive(Template)]
#[template(path = "error_card.html")]
pub(crate) struct ErrorCard {
    title: &'static str,
    message: String,
    code: &'static str,
    sql_html: Option<String>,
    hint: Option<&'static str>,
    history_id: Option<String>,
}

impl ErrorCard {
    /// The card for an error, with the last SQL tried and its history entry when known.
    pub(crate) fn new(error: &AppError, sql: Option<&str>, history_id: Option<&str>) -> Self {
        let (title, hint) = match error.code {
            ErrorCode::AgentOffline => (
                "The agent is offline",
                Some(
                    "Start the agent next to your database; its setup lines are on the Connections page.",
                ),
            ),
            ErrorCode::AgentBusy => ("The agent is busy", Some("Try again in a moment.")),
            ErrorCode::AgentDisconnected => (
                "The agent disconnected while answering",
                Some("Try again once it is back online."),
            ),
            ErrorCode::QueryTimeout => {
                ("The query took too long", Some("Ask for less data, or a narrower time range."))
            }
            ErrorCode::NoValidQuery | ErrorCode::QueryRejected => ("The SQL was rejected", None),
            ErrorCode::QueryFailed => ("The database refused the query", None),
            ErrorCode::CannotAnswer => (
                "Custard could not answer this",
                Some(
                    "Rephrase the question with the names of tables or columns, or configure a language model.",
                ),
            ),
            ErrorCode::LlmUnavailable => {
                ("The language model is unavailable", Some("Try again in a moment."))
            }
            ErrorCode::SchemaUnavailable => (
                "The schema is not known yet",
                Some("Wait for the agent to report it, or refresh it on the Connections page."),
            ),
            ErrorCode::DatabaseUnavailable => ("The database is unavailable", None),
            ErrorCode::NotFound => ("No such connection", Some("Pick a connection from the list.")),
            ErrorCode::Validation => ("Check the question", None),
            ErrorCode::Forbidden => ("The page expired", Some("Reload the page and ask again.")),
            _ => ("Something went wrong", None),
        };
        ErrorCard {
            title,
            message: sentence(error),
            code: error.code.as_str(),
            sql_html: sql.map(highlight::sql_html),
            hint,
            history_id: history_id.map(str::to_owned),
        }
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
    let q = state.inner().store.set_feedback(user.org(), &QueryId::from(id), correct).await?;
    let html = Feedback { id: q.id.as_str().to_owned(), correct: q.feedback }.render();
    Ok(page(StatusCode::OK, html, Vec::new()).into_response())
}
