//! The History pages: past questions with who asked, outcome, SQL and timing,
//! searched and filtered by connection, outcome and person (`/history`); one
//! question's answer again (`/history/{id}`); asking it again (`POST
//! /history/{id}/rerun`, which redirects to the Ask page with the question
//! filled in and a one-time flash that runs it there once; a reload of that
//! page fills it in again without asking); and deleting it (`POST
//! /history/{id}/delete`, back to the list as it was).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::ask::{AnswerCard, CardInput, ErrorCard};
use super::{CheckedForm, Csrf, Layout, LocalTime, TokenForm, WebError, WebUser, page};
use crate::error::{AppError, ErrorCode};
use crate::flash::{Flash, Owner};
use crate::questions::{ResultView, StoredTimings};
use crate::state::AppState;
use crate::store::{Asker, ConnectionId, OutcomeFilter, QueryFilter, QueryRecord, Role, UserId};
use crate::{accounts, connections, questions};

/// Questions per History page.
const PAGE_SIZE: u32 = 50;

/// The History pages' routes.
pub(crate) fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/history", get(list))
        .route("/history/{id}", get(detail))
        .route("/history/{id}/rerun", get(to_detail).post(rerun))
        .route("/history/{id}/delete", get(to_list).post(delete))
        .route("/history/{id}/export.csv", get(export_csv))
}

/// One entry of the History list.
#[derive(Debug)]
struct HistoryRow {
    id: String,
    question: String,
    /// The SQL that ran, or the last tried.
    sql: Option<String>,
    connection: String,
    /// The error code in words, when it failed (`no valid query`).
    outcome: String,
    /// Why it failed.
    error: Option<String>,
    ok: bool,
    /// Rows, time and engine: `12 rows · 42 ms · offline`.
    figures: String,
    /// Who asked: a name, or what became of the account.
    asked_by: String,
    asked_at: LocalTime,
    feedback: Option<bool>,
    /// Whether the viewer may delete it (the store decides again).
    deletable: bool,
}

/// An option of a filter's `<select>`.
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
    outcomes: Vec<FilterChoice>,
    people: Vec<FilterChoice>,
    /// The list's search and filters, to keep in the forms.
    params: HistoryParams,
    /// Whether any search or filter narrows the list.
    filtered: bool,
    /// What the last action did, once.
    notice: Option<Notice>,
    /// The links to the newer and the older page, keeping the filters.
    newer: Option<String>,
    older: Option<String>,
}

/// A message after an action on the list.
#[derive(Debug)]
struct Notice {
    text: &'static str,
    good: bool,
}

/// `GET /history` parameters, also carried by the list's forms (deleting
/// from it returns to the list as it was).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct HistoryParams {
    /// Only questions containing this text (empty: all).
    #[serde(default)]
    q: String,
    /// Only this connection's questions (empty: all).
    #[serde(default)]
    connection: String,
    /// `answered` or `failed` (anything else: both).
    #[serde(default)]
    outcome: String,
    /// Only this member's questions, by user id (empty: everyone's).
    #[serde(default)]
    person: String,
    /// Questions skipped; text, so a bad value is the first page, not an error.
    #[serde(default)]
    offset: String,
    /// What the last action did: `deleted`, `not-allowed` or `gone`.
    #[serde(default)]
    done: String,
}

impl HistoryParams {
    /// The page's offset (0 when missing or not a number).
    fn offset(&self) -> u32 {
        self.offset.trim().parse().unwrap_or(0)
    }

    /// The outcome filter, when it names one.
    fn outcome(&self) -> Option<OutcomeFilter> {
        OutcomeFilter::parse(&self.outcome)
    }

    /// Whether any search or filter narrows the list.
    fn filtered(&self) -> bool {
        !self.q.trim().is_empty()
            || !self.connection.is_empty()
            || self.outcome().is_some()
            || !self.person.is_empty()
    }

    /// The list's URL with this search and these filters at `offset`, and
    /// `done` to say what just happened.
    fn url(&self, offset: u32, done: Option<&str>) -> String {
        let offset = offset.to_string();
        let pairs = [
            ("q", self.q.trim()),
            ("connection", self.connection.as_str()),
            ("outcome", self.outcome().map_or("", OutcomeFilter::as_str)),
            ("person", self.person.as_str()),
            ("offset", if offset == "0" { "" } else { offset.as_str() }),
            ("done", done.unwrap_or_default()),
        ];
        let pairs: Vec<(&str, &str)> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        match serde_urlencoded::to_string(pairs) {
            Ok(query) if !query.is_empty() => format!("/history?{query}"),
            _ => "/history".to_owned(),
        }
    }

    /// The message for `done`.
    fn notice(&self) -> Option<Notice> {
        let (text, good) = match self.done.as_str() {
            "deleted" => ("The question was deleted from the history.", true),
            "not-allowed" => (
                "You can delete only the questions you asked; owners and admins can delete any.",
                false,
            ),
            "gone" => ("That question is no longer in the history.", false),
            _ => return None,
        };
        Some(Notice { text, good })
    }
}

/// The request's total time of a record, for people.
fn total_ms(record: &QueryRecord) -> Option<f64> {
    StoredTimings::read(&record.record.timings_json).map(|t| t.total_ms())
}

/// A question's rows, time and engine, for people: `12 rows · 42 ms · offline`.
fn figures(q: &QueryRecord) -> String {
    let rows =
        q.record.row_count.map(|n| if n == 1 { "1 row".to_owned() } else { format!("{n} rows") });
    let time = total_ms(q).map(super::duration_text);
    let parts: Vec<String> =
        rows.into_iter().chain(time).chain([q.record.engine.clone()]).collect();
    parts.join(" · ")
}

/// Who asked, for people: the name (or email), marked when they left the
/// organisation or their account is gone.
fn asked_by_text(asker: Option<&Asker>) -> String {
    match asker {
        Some(a) if a.member => a.display_name(),
        Some(a) => format!("{} (former member)", a.display_name()),
        None => "a deleted account".to_owned(),
    }
}

/// `GET /history`: the organisation's questions, newest first, with who asked
/// each; searched and filtered by connection, outcome and person.
pub(crate) async fn list(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    Query(params): Query<HistoryParams>,
) -> Result<Response, WebError> {
    let connections = connections::list(&state, &user).await?;
    let members = accounts::members(&state, &user).await?;
    let names: HashMap<&str, &str> =
        connections.iter().map(|c| (c.id.as_str(), c.name.as_str())).collect();
    let offset = params.offset();
    let filter = QueryFilter {
        connection_id: Some(params.connection.clone())
            .filter(|c| !c.is_empty())
            .map(ConnectionId::from),
        asked_by: Some(params.person.clone()).filter(|p| !p.is_empty()).map(UserId::from),
        outcome: params.outcome(),
        search: questions::search_term(&params.q)?,
        // One more than shown tells whether there is a next page.
        limit: PAGE_SIZE + 1,
        offset,
    };
    let mut entries = questions::history(&state, &user, filter).await?;
    let more = entries.len() > PAGE_SIZE as usize;
    entries.truncate(PAGE_SIZE as usize);
    let manages = matches!(user.role(), Role::Owner | Role::Admin);
    let rows = entries
        .iter()
        .map(|entry| {
            let q = &entry.query;
            HistoryRow {
                id: q.id.as_str().to_owned(),
                question: q.record.question.clone(),
                sql: q.record.sql.clone(),
                error: q.record.error_message.clone(),
                connection: names
                    .get(q.record.connection_id.as_str())
                    .map_or_else(|| "(deleted)".to_owned(), |n| (*n).to_owned()),
                outcome: q.record.outcome.replace('_', " "),
                ok: q.record.outcome == "ok",
                figures: figures(q),
                asked_by: asked_by_text(entry.asked_by.as_ref()),
                asked_at: LocalTime::relative(q.created_at),
                feedback: q.feedback,
                deletable: manages || q.record.user_id == user.user().id,
            }
        })
        .collect();
    let connection_choices = connections
        .iter()
        .map(|c| FilterChoice {
            id: c.id.as_str().to_owned(),
            name: c.name.clone(),
            selected: c.id.as_str() == params.connection,
        })
        .collect();
    let outcomes = [(OutcomeFilter::Answered, "Answered"), (OutcomeFilter::Failed, "Failed")]
        .into_iter()
        .map(|(o, name)| FilterChoice {
            id: o.as_str().to_owned(),
            name: name.to_owned(),
            selected: params.outcome() == Some(o),
        })
        .collect();
    let people = members
        .iter()
        .map(|m| {
            let asker = Asker {
                email: m.email.clone(),
                first_name: m.first_name.clone(),
                last_name: m.last_name.clone(),
                member: true,
            };
            let you = if m.user_id == user.user().id { " (you)" } else { "" };
            FilterChoice {
                id: m.user_id.as_str().to_owned(),
                name: format!("{}{you}", asker.display_name()),
                selected: m.user_id.as_str() == params.person,
            }
        })
        .collect();
    let csrf = Csrf::of(&state, &headers);
    let html = HistoryPage {
        layout: csrf.signed_in(&user, "history"),
        rows,
        connections: connection_choices,
        outcomes,
        people,
        filtered: params.filtered(),
        notice: params.notice(),
        newer: (offset > 0).then(|| params.url(offset.saturating_sub(PAGE_SIZE), None)),
        older: more.then(|| params.url(offset + PAGE_SIZE, None)),
        params,
    }
    .render();
    Ok(page(StatusCode::OK, html, csrf.cookies()))
}

/// `POST /history/{id}/delete`: deletes a question from the history, then
/// redirects (303) back to the list as it was (search, filters, page) with a
/// message: deleted, not allowed (someone else's question, for a member), or
/// already gone.
pub(crate) async fn delete(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    Path(id): Path<String>,
    CheckedForm(back): CheckedForm<HistoryParams>,
) -> Result<Response, WebError> {
    let done = match questions::delete_query(&state, &user, &id).await {
        Ok(()) => "deleted",
        Err(e) if e.code == ErrorCode::Forbidden => "not-allowed",
        Err(e) if e.code == ErrorCode::NotFound => "gone",
        Err(e) => return Err(e.into()),
    };
    Ok(Redirect::to(&back.url(back.offset(), Some(done))).into_response())
}

/// `GET` of a delete URL (a reload, a bookmark): the list.
pub(crate) async fn to_list() -> Redirect {
    Redirect::to("/history")
}

#[derive(Template)]
#[template(path = "history_detail.html")]
struct DetailPage {
    layout: Layout,
    id: String,
    question: String,
    asked_at: LocalTime,
    /// The answer card, or the error card of a failed question; each shows
    /// the question and takes feedback.
    card: String,
}

/// `GET /history/{id}`: one question with its answer as it was given, or
/// why it failed.
pub(crate) async fn detail(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let q = questions::get(&state, &user, &id).await?;
    let r = &q.record;
    let card = if r.outcome == "ok" {
        // A stored result that does not read still shows the answer, its SQL
        // and feedback, without rows.
        let read = r.result_json.as_deref().map(ResultView::read).transpose();
        let result = read
            .unwrap_or_else(|e| {
                tracing::warn!(query = %q.id, "the stored result does not read: {e}");
                None
            })
            .unwrap_or_else(|| ResultView { truncated: r.truncated, ..ResultView::default() });
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
            result: &result,
            feedback: q.feedback,
        })
        .in_history()
        .render()
    } else {
        let code = ErrorCode::parse(&r.outcome).unwrap_or(ErrorCode::Internal);
        let message = r.error_message.clone().unwrap_or_default();
        let error = AppError::new(code, message);
        ErrorCard::new(&r.question, &error, r.sql.as_deref(), Some(q.id.as_str()))
            .in_history(q.feedback)
            .render()
    }
    .map_err(AppError::internal)?;
    let csrf = Csrf::of(&state, &headers);
    let html = DetailPage {
        layout: csrf.signed_in(&user, "history"),
        id: q.id.as_str().to_owned(),
        question: r.question.clone(),
        asked_at: LocalTime::exact(q.created_at),
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
    let q = questions::get(&state, &user, &id).await?;
    let target = rerun_target(q.id.as_str());
    state.inner().flashes.put(&Owner::session(user.session()?), &target, Flash::Rerun);
    Ok(Redirect::to(&target).into_response())
}

/// `GET /history/{id}/export.csv`: the export for a browser (the CSV
/// as an attachment named after the question and the day), or an error page
/// (agent offline, timeout, ...) rather than a JSON error saved as a file.
pub(crate) async fn export_csv(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    Ok(questions::export_csv(&state, &user, &id).await?.into_response())
}
