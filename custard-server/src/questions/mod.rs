//! Questions: the logic behind asking (the question limits, the ask pipeline
//! over the connection's agents, conversations and approved examples, and
//! recording every admitted question whatever its outcome), the history
//! (read, deleted, given feedback) and CSV export, shared by the JSON API
//! (`api::queries`) and the web pages (`web::ask`, `web::history`).
//!
//! [`admit`] applies the question limits and [`answer`] takes its permit, so
//! every way of asking passes them before the model is called.

mod export;
mod record;

use std::time::{Duration, Instant};

use custard_core::{Answer, AskRequest, AskStep, Turn, select_examples};

use crate::auth::CurrentUser;
use crate::error::{AppError, ErrorCode};
use crate::rate_limit::QuestionPermit;
use crate::state::AppState;
use crate::store::{
    Connection, ConnectionId, ConversationId, HistoryEntry, NewQueryRecord, QueryDeletion,
    QueryFilter, QueryId, QueryRecord, QuerySource,
};

pub(crate) use export::{CsvExport, export_csv};
pub(crate) use record::{ChartView, ColumnView, ResultView, StoredTimings, Timings, json_text};

/// Rows of an answer kept in the history to show it again.
const HISTORY_ROWS: usize = 200;
/// Bytes of those rows (as JSON) kept at most.
const HISTORY_BYTES: usize = 256 * 1024;
/// Approved examples considered per question, and shown to the model.
const EXAMPLE_CANDIDATES: u32 = 500;
/// Approved examples shown to the model.
const EXAMPLES_SHOWN: usize = 3;
/// Earlier turns of a conversation given to the model.
const CONVERSATION_TURNS: u32 = 10;
/// The longest text the history can be searched for, in characters.
pub(crate) const MAX_SEARCH_CHARS: usize = 200;

/// A question about one connection's database, as a request or the Ask form gives it.
#[derive(Debug)]
pub(crate) struct AskInput {
    /// The connection to ask.
    pub(crate) connection_id: String,
    /// The question, in plain language.
    pub(crate) question: String,
    /// The conversation it continues; a new one is started when `None`.
    pub(crate) conversation_id: Option<String>,
}

/// An answered question, recorded in the history.
#[derive(Debug)]
pub(crate) struct Answered {
    /// Its entry in the history.
    pub(crate) id: QueryId,
    /// The core's answer: text, SQL, columns, rows, chart, attempts, timings.
    pub(crate) answer: Answer,
    /// The conversation it belongs to.
    pub(crate) conversation_id: ConversationId,
    /// The connection it asked.
    pub(crate) connection_id: ConnectionId,
    /// When answering started: the request's total time runs from here.
    pub(crate) started: Instant,
}

impl Answered {
    /// The step timings with the request's total until now.
    pub(crate) fn timings(&self) -> Timings {
        Timings::new(&self.answer, self.started)
    }
}

/// Admits one question of the caller under the question limits: per user
/// per minute, and in flight per organisation. [`answer`] takes the permit,
/// so nothing runs the ask pipeline around the limits.
pub(crate) fn admit(state: &AppState, current: &CurrentUser) -> Result<QuestionPermit, AppError> {
    state.inner().questions.admit(current.user().id.as_str(), current.org().as_str())
}

/// The conversation to continue (checked) or a new one.
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
    source: QuerySource,
    body: AskInput,
    progress: Option<&(dyn Fn(AskStep) + Send + Sync)>,
) -> Result<Answered, Failure> {
    let started = Instant::now();
    // Core's one rule for questions, before any lookup or record.
    let question =
        AskRequest::check_question(&body.question).map_err(AppError::from_ask)?.to_owned();
    let continues = body.conversation_id.is_some();
    let conversation = parse_conversation(body.conversation_id)?;
    let inner = state.inner();
    let org = current.org();
    let connection_id = ConnectionId::from(body.connection_id);
    // The reads a question needs, at once (each is scoped to the caller's
    // organisation by the store); a new conversation has no earlier turns.
    let (connection, earlier, candidates) = tokio::try_join!(
        inner.store.get_connection(org, &connection_id),
        async {
            if continues {
                inner.store.conversation(org, &conversation, CONVERSATION_TURNS).await
            } else {
                Ok(Vec::new())
            }
        },
        inner.store.approved_examples(org, &connection_id, EXAMPLE_CANDIDATES),
    )?;

    let result = async {
        // Without an agent nothing can run: say so before spending a model call.
        require_agent(state, &connection)?;
        let pipeline = inner.pipelines.get(&connection).await?;
        let turns: Vec<Turn> = earlier
            .into_iter()
            .filter(|q| q.record.connection_id == connection.id && q.record.outcome == "ok")
            .map(|q| Turn {
                question: q.record.question,
                sql: q.record.sql,
                answer: q.record.answer,
            })
            .collect();
        let candidates: Vec<custard_core::Example> = candidates
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
                Failure {
                    error: app_error,
                    sql,
                    attempts: attempt_count(&ask_error),
                    history_id: None,
                }
            },
        )
    }
    .await;

    let engine = inner.model.name();
    let asked = Asked { current, connection: &connection.id, conversation: &conversation, source };
    let (id, answer) = record(state, asked, question, &engine, result, started).await?;
    Ok(Answered {
        id,
        answer,
        conversation_id: conversation,
        connection_id: connection.id,
        started,
    })
}

/// Runs SQL the caller wrote (an assistant's, over MCP) on the path a
/// question's SQL takes: admitted under the question limits, checked by the
/// connection's pipeline's guard (the stored schema's identifiers), run by
/// its agents (which check again) and recorded in the history with the SQL
/// as the question and `sql` as the engine, whatever the outcome.
pub(crate) async fn run_sql(
    state: &AppState,
    current: &CurrentUser,
    _permit: QuestionPermit,
    source: QuerySource,
    connection_id: String,
    sql: &str,
) -> Result<Answered, Failure> {
    let started = Instant::now();
    let sql = check_sql(sql)?;
    let inner = state.inner();
    let connection =
        inner.store.get_connection(current.org(), &ConnectionId::from(connection_id)).await?;
    let result = async {
        require_agent(state, &connection)?;
        let pipeline = inner.pipelines.get(&connection).await?;
        pipeline.run_sql(sql).await.map_err(|e| Failure {
            error: AppError::from_ask(e),
            sql: Some(sql.to_owned()),
            attempts: 1,
            history_id: None,
        })
    }
    .await;
    let conversation = ConversationId::random();
    let asked = Asked { current, connection: &connection.id, conversation: &conversation, source };
    let (id, answer) = record(state, asked, sql.to_owned(), "sql", result, started).await?;
    Ok(Answered {
        id,
        answer,
        conversation_id: conversation,
        connection_id: connection.id,
        started,
    })
}

/// SQL a caller wrote, under the core's one rule for it
/// ([`AskRequest::check_sql`]); a refusal is a `validation_error`.
pub(crate) fn check_sql(sql: &str) -> Result<&str, AppError> {
    AskRequest::check_sql(sql).map_err(|e| AppError::new(ErrorCode::Validation, e.to_string()))
}

/// Refuses at once when no agent is connected: nothing could run.
fn require_agent(state: &AppState, connection: &Connection) -> Result<(), Failure> {
    if state.inner().router.presence(&connection.id).agents == 0 {
        return Err(Failure::from(AppError::from_exec(custard_core::ExecError::new(
            custard_core::ExecErrorCode::AgentOffline,
            "no agent is connected for this connection; start its agent (the connection's page shows how to run it)",
        ))));
    }
    Ok(())
}

/// Who asked what, where, for [`record`].
struct Asked<'a> {
    current: &'a CurrentUser,
    connection: &'a ConnectionId,
    conversation: &'a ConversationId,
    source: QuerySource,
}

/// Records an admitted question (or SQL) in the history, whatever its
/// outcome, and counts it; returns the answer with its history id, or the
/// failure with it.
async fn record(
    state: &AppState,
    asked: Asked<'_>,
    question: String,
    engine: &str,
    result: Result<Answer, Failure>,
    started: Instant,
) -> Result<(QueryId, Answer), Failure> {
    let inner = state.inner();
    let Asked { current, connection, conversation, source } = asked;
    let record = match &result {
        Ok(answer) => NewQueryRecord {
            org_id: current.org().clone(),
            connection_id: connection.clone(),
            user_id: current.user().id.clone(),
            conversation_id: conversation.clone(),
            question,
            sql: Some(answer.sql.clone()),
            outcome: "ok".to_owned(),
            error_message: None,
            answer: Some(answer.text.clone()),
            row_count: Some(answer.rows.len() as u64),
            truncated: answer.truncated,
            engine: answer.engine.clone(),
            attempts: u32::try_from(answer.attempts.len()).unwrap_or(u32::MAX),
            // Serialised from views borrowing the answer: its rows are not copied.
            timings_json: json_text(&StoredTimings::Answered(Timings::new(answer, started))),
            result_json: Some(json_text(&ResultView::within(answer, HISTORY_ROWS, HISTORY_BYTES))),
            source,
        },
        Err(failure) => NewQueryRecord {
            org_id: current.org().clone(),
            connection_id: connection.clone(),
            user_id: current.user().id.clone(),
            conversation_id: conversation.clone(),
            question,
            sql: failure.sql.clone(),
            outcome: failure.error.code.as_str().to_owned(),
            error_message: Some(failure.error.message.clone()),
            answer: None,
            row_count: None,
            truncated: false,
            engine: engine.to_owned(),
            attempts: failure.attempts,
            timings_json: json_text(&StoredTimings::Failed { total_ms: ms(started.elapsed()) }),
            result_json: None,
            source,
        },
    };
    inner.metrics.question(&record.outcome);
    let saved = inner.store.record_query(record).await;
    match result {
        Ok(answer) => Ok((saved?.id, answer)),
        Err(mut failure) => {
            match saved {
                Ok(q) => failure.history_id = Some(q.id.as_str().to_owned()),
                Err(e) => tracing::error!("could not record a failed question: {e}"),
            }
            Err(failure)
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

/// SQL attempts a failed question made.
fn attempt_count(e: &custard_core::AskError) -> u32 {
    match e {
        custard_core::AskError::NoValidQuery { attempts } => {
            u32::try_from(attempts.len()).unwrap_or(u32::MAX)
        }
        _ => 0,
    }
}

/// A duration in milliseconds, to the microsecond.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
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

/// A page of the organisation's history, newest first, each question with
/// who asked it.
pub(crate) async fn history(
    state: &AppState,
    current: &CurrentUser,
    filter: QueryFilter,
) -> Result<Vec<HistoryEntry>, AppError> {
    Ok(state.inner().store.list_queries(current.org(), filter).await?)
}

/// One recorded question of the organisation.
pub(crate) async fn get(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
) -> Result<QueryRecord, AppError> {
    Ok(state.inner().store.get_query(current.org(), &QueryId::from(id.to_owned())).await?)
}

/// Deletes a question of the caller's organisation if the caller may (see
/// `DELETE /api/v1/queries/{id}`): `forbidden` when not, `not_found` when there is no such question.
pub(crate) async fn delete_query(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
) -> Result<(), AppError> {
    let id = &QueryId::from(id.to_owned());
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

/// Records whether an answer was right; an answered question marked
/// correct becomes an example for similar later questions.
pub(crate) async fn set_feedback(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
    correct: bool,
) -> Result<QueryRecord, AppError> {
    let id = QueryId::from(id.to_owned());
    Ok(state.inner().store.set_feedback(current.org(), &id, correct).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_are_checked() {
        assert!(parse_conversation(None).is_ok());
        assert!(parse_conversation(Some("abc-123_X".into())).is_ok());
        assert!(parse_conversation(Some(String::new())).is_err());
        assert!(parse_conversation(Some("a b".into())).is_err());
        assert!(parse_conversation(Some("x".repeat(65))).is_err());
    }
}
