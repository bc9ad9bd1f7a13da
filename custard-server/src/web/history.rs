//! The History pages: past questions with outcome, SQL and timing
//! (`/history`), one question's answer again (`/history/{id}`), and asking it
//! again (`POST /history/{id}/rerun`, which redirects to the Ask page with
//! the question filled in and a one-time flash that runs it there once; a
//! reload of that page fills it in again without asking).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

use super::ask::{AnswerCard, CardInput, ErrorCard};
use super::flash::{Flash, Owner};
use super::{CheckedForm, Csrf, Layout, TokenForm, WebError, WebUser, page};
use crate::error::{AppError, ErrorCode};
use crate::routes::AppState;
use crate::store::{ConnectionId, QueryFilter, QueryId, QueryRecord};

/// Questions per History page.
const PAGE_SIZE: u32 = 50;

/// The History pages' routes.
pub(crate) fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/history", get(list))
        .route("/history/{id}", get(detail))
        .route("/history/{id}/rerun", get(to_detail).post(rerun))
        .route("/history/{id}/export.csv", get(export_csv))
}

/// One row of the History table.
#[derive(Debug)]
struct HistoryRow {
    id: String,
    question: String,
    /// The SQL that ran, or the last tried.
    sql: Option<String>,
    connection: String,
    outcome: String,
    /// Why it failed.
    error: Option<String>,
    ok: bool,
    rows: Option<u64>,
    total_ms: Option<String>,
    engine: String,
    asked_at: String,
    feedback: Option<bool>,
}

/// A connection in the filter.
#[derive(Debug)]
struct FilterChoice {
    id: String,
    name: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    layout: Layout,
    rows: Vec<HistoryRow>,
    connections: Vec<FilterChoice>,
    connection: String,
    previous: Option<u32>,
    next: Option<u32>,
}

/// `GET /history` parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct HistoryParams {
    /// Only this connection's questions (empty: all).
    #[serde(default)]
    connection: String,
    #[serde(default)]
    offset: u32,
}

/// The request's total time of a record, for people.
fn total_ms(record: &QueryRecord) -> Option<f64> {
    let timings: Value = serde_json::from_str(&record.record.timings_json).ok()?;
    timings["total_ms"].as_f64()
}

/// `GET /history`: the organisation's questions, newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    Query(params): Query<HistoryParams>,
) -> Result<Response, WebError> {
    let store = &state.inner().store;
    let connections = store.list_connections(user.org()).await?;
    let names: HashMap<&str, &str> =
        connections.iter().map(|c| (c.id.as_str(), c.name.as_str())).collect();
    let filter = QueryFilter {
        connection_id: Some(params.connection.clone())
            .filter(|c| !c.is_empty())
            .map(ConnectionId::from),
        // One more than shown tells whether there is a next page.
        limit: PAGE_SIZE + 1,
        offset: params.offset,
    };
    let mut records = store.list_queries(user.org(), filter).await?;
    let more = records.len() > PAGE_SIZE as usize;
    records.truncate(PAGE_SIZE as usize);
    let rows = records
        .iter()
        .map(|q| HistoryRow {
            id: q.id.as_str().to_owned(),
            question: q.record.question.clone(),
            sql: q.record.sql.clone(),
            error: q.record.error_message.clone(),
            connection: names
                .get(q.record.connection_id.as_str())
                .map_or_else(|| "(deleted)".to_owned(), |n| (*n).to_owned()),
            outcome: q.record.outcome.replace('_', " "),
            ok: q.record.outcome == "ok",
            rows: q.record.row_count,
            total_ms: total_ms(q).map(super::duration_text),
            engine: q.record.engine.clone(),
            asked_at: super::time_text(&q.created_at),
            feedback: q.feedback,
        })
        .collect();
    let choices = connections
        .iter()
        .map(|c| FilterChoice {
            id: c.id.as_str().to_owned(),
            name: c.name.clone(),
            selected: c.id.as_str() == params.connection,
        })
        .collect();
    let csrf = Csrf::of(&state, &headers);
    let html = HistoryPage {
        layout: csrf.signed_in(&user, "history"),
        rows,
        connections: choices,
        connection: params.connection,
        previous: (params.offset > 0).then(|| params.offset.saturating_sub(PAGE_SIZE)),
        next: more.then_some(params.offset + PAGE_SIZE),
    }
    .render();
    Ok(page(StatusCode::OK, html, csrf.cookies()))
}

#[derive(Template)]
#[template(path = "history_detail.html")]
struct DetailPage {
    layout: Layout,
    id: String,
    question: String,
    asked_at: String,
    /// The answer card, or the error card of a failed question.
    card: String,
}

/// `GET /history/{id}`: one question with its answer as it was given.
pub(crate) async fn detail(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let q = state.inner().store.get_query(user.org(), &QueryId::from(id)).await?;
    let r = &q.record;
    let card = if r.outcome == "ok" {
        let result: Value =
            r.result_json.as_deref().and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
        let columns = result["columns"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                        (text("name"), text("type"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rows: Vec<Vec<Value>> =
            serde_json::from_value(result["rows"].clone()).unwrap_or_default();
        let chart = result["chart"].as_object().map(|c| {
            let y = c["y"].as_array().map_or_else(Vec::new, |y| {
                y.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
            });
            let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            (text("type"), text("x"), y)
        });
        AnswerCard::new(CardInput {
            id: q.id.as_str(),
            question: &r.question,
            text: r.answer.as_deref().unwrap_or_default(),
            sql: r.sql.as_deref().unwrap_or_default(),
            engine: &r.engine,
            attempts: r.attempts as usize,
            total_ms: total_ms(&q),
            conversation_id: r.conversation_id.as_str(),
            connection_id: r.connection_id.as_str(),
            columns,
            rows: &rows,
            row_count: result["row_count"].as_u64().map_or(rows.len(), |n| n as usize),
            truncated: r.truncated,
            chart,
            feedback: q.feedback,
        })
        .render()
    } else {
        let code = ErrorCode::parse(&r.outcome).unwrap_or(ErrorCode::Internal);
        let message = r.error_message.clone().unwrap_or_default();
        ErrorCard::new(&AppError::new(code, message), r.sql.as_deref(), None).render()
    }
    .map_err(AppError::internal)?;
    let csrf = Csrf::of(&state, &headers);
    let html = DetailPage {
        layout: csrf.signed_in(&user, "history"),
        id: q.id.as_str().to_owned(),
        question: r.question.clone(),
        asked_at: super::time_text(&q.created_at),
        card,
    }
    .render();
    Ok(page(StatusCode::OK, html, csrf.cookies()))
}

/// The Ask page with question `id` filled in.
pub(crate) fn rerun_target(id: &str) -> String {
    let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
    format!("/?rerun={id}")
}

/// `GET` of a question's action URL (a reload, a bookmark): its page.
pub(crate) async fn to_detail(Path(id): Path<String>) -> Redirect {
    let id = percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC);
    Redirect::to(&format!("/history/{id}"))
}

/// `POST /history/{id}/rerun`: redirects (303) to the Ask page with the
/// question filled in, and asked there at once the first time (a one-time
/// flash of the session; a POST, so another site cannot make a browser ask).
pub(crate) async fn rerun(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    Path(id): Path<String>,
    CheckedForm(_): CheckedForm<TokenForm>,
) -> Result<Response, WebError> {
    let q = state.inner().store.get_query(user.org(), &QueryId::from(id)).await?;
    let target = rerun_target(q.id.as_str());
    state.inner().flashes.put(&Owner::session(user.session()), &target, Flash::Rerun);
    Ok(Redirect::to(&target).into_response())
}

/// `GET /history/{id}/export.csv`: the API's export for a browser: the CSV as
/// an attachment, or an error page (agent offline, timeout, ...) rather than
/// a JSON error saved as a file.
pub(crate) async fn export_csv(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    Ok(crate::queries::export_csv(State(state), user, Path(id)).await?)
}
