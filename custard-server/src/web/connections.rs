//! The Connections pages: the list with live status, the wizard that creates a
//! connection and shows its API key once with the agent's setup lines, and one
//! connection's page (status, how to run the agent, business instructions,
//! schema browser, refresh, rotate key, delete with confirmation).
//!
//! The setup lines (server URL, `docker run`, the binary, an env file, and
//! for PostgreSQL the read-only role's SQL) are on the connection's page on
//! every visit, with a placeholder where the key goes; only right after a
//! create or a rotation do they hold the key itself. Status, last seen and
//! schema refreshed follow the organisation's status stream in the page
//! (`data-status-for`, `data-seen-for`, `data-version-for`,
//! `data-schema-for`), and times are [`LocalTime`]s.
//!
//! Every action calls the same logic as its API endpoint
//! ([`crate::connections`]), so roles, validation and the hub's side effects
//! (a rotated or deleted connection's agents are disconnected at once) are
//! the API's.
//!
//! Post/Redirect/Get: a form that succeeds answers 303 to a page, so a reload
//! never re-submits it; a new or rotated key reaches the connection's page as
//! a one-time [`flash`](crate::flash) of the session, never in a URL. A form
//! that fails is shown again with the reason (nothing changed, so re-sending
//! it is harmless). A GET of an action's URL (a reload, a bookmark) redirects
//! to the connection's page.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use custard_core::Schema;
use serde::Deserialize;

use super::{CheckedForm, Csrf, Layout, LocalTime, TokenForm, WebError, WebUser, page, sentence};
use crate::auth::CurrentUser;
use crate::config::LlmSettings;
use crate::connections::{self, AgentSetup, IssuedKey, KEY_PLACEHOLDER, Live};
use crate::error::AppError;
use crate::flash::{Flash, Owner};
use crate::hub::AgentRouter;
use crate::pipelines::stored_schema;
use crate::state::AppState;
use crate::store::Connection;

/// The Connections pages' routes.
pub(crate) fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/connections", get(list).post(create))
        .route("/connections/{id}", get(detail).post(update))
        .route("/connections/{id}/refresh-schema", get(to_detail).post(refresh_schema))
        .route("/connections/{id}/rotate-key", get(to_detail).post(rotate_key))
        .route("/connections/{id}/delete", get(to_detail).post(delete))
}

/// The page of connection `id`.
fn detail_url(id: &str) -> String {
    let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
    format!("/connections/{id}")
}

/// `GET` of an action's URL (a reload after it, a bookmark): the connection's
/// page, so nothing is done again and no method error is shown.
pub(crate) async fn to_detail(Path(id): Path<String>) -> Redirect {
    Redirect::to(&detail_url(&id))
}

/// How to run the agent, as a connection's page shows it (`key_panel.html`).
struct SetupView {
    /// The new key, right after a create or a rotation; `None` on every later
    /// visit, when the lines hold [`KEY_PLACEHOLDER`] instead.
    api_key: Option<String>,
    lines: AgentSetup,
    /// What stands for the key in the lines without it.
    placeholder: &'static str,
    /// Whether the lines start unfolded: with a new key, or no agent online.
    open: bool,
}

// The key is a secret: `Debug` leaves it and the lines holding it out.
impl std::fmt::Debug for SetupView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupView")
            .field("with_key", &self.api_key.is_some())
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

/// A connection as the pages show it, with its live status and times for
/// people ([`LocalTime`]).
#[derive(Debug)]
struct ConnectionRow {
    id: String,
    name: String,
    /// `PostgreSQL` or `SQLite`.
    database: &'static str,
    /// `online`, `offline` or `pending`.
    status: &'static str,
    agent_version: Option<String>,
    /// When an agent was last connected (written down while one is, too).
    last_seen: Option<LocalTime>,
    schema_refreshed: Option<LocalTime>,
    /// The stored schema's fingerprint, empty when none was stored yet.
    schema_fingerprint: String,
    key_prefix: String,
    instructions: String,
}

impl ConnectionRow {
    /// The connection with its live status from the agent router.
    fn new(connection: &Connection, router: &dyn AgentRouter) -> Self {
        let live = Live::of(connection, router);
        ConnectionRow {
            database: match connection.dialect {
                custard_core::Dialect::Postgres => "PostgreSQL",
                custard_core::Dialect::Sqlite => "SQLite",
                other => other.as_str(),
            },
            status: live.status,
            agent_version: live.agent_version,
            last_seen: connection.last_seen_at.map(LocalTime::relative),
            schema_refreshed: connection.schema_refreshed_at.map(LocalTime::relative),
            schema_fingerprint: connection.schema_fingerprint.clone().unwrap_or_default(),
            key_prefix: connection.key_prefix.clone(),
            instructions: connection.instructions.clone(),
            id: connection.id.as_str().to_owned(),
            name: connection.name.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "connections.html")]
struct ListPage {
    layout: Layout,
    connections: Vec<ConnectionRow>,
    manages: bool,
    name: String,
    db_type: String,
    error: Option<String>,
    notice: Option<&'static str>,
}

/// `?done=` after an action, as a notice.
#[derive(Debug, Deserialize)]
pub(crate) struct Done {
    #[serde(default)]
    done: String,
}

impl Done {
    fn notice(&self) -> Option<&'static str> {
        match self.done.as_str() {
            "deleted" => Some("The connection was deleted and its agents disconnected."),
            "saved" => Some("Saved."),
            "refreshed" => Some("The schema was refreshed."),
            "rotated" => Some(
                "The key was rotated: the old key no longer works and its agents were disconnected.",
            ),
            _ => None,
        }
    }
}

async fn connection_rows(
    state: &AppState,
    user: &CurrentUser,
) -> Result<Vec<ConnectionRow>, AppError> {
    let router = state.inner().router.as_ref();
    let stored = connections::list(state, user).await?;
    Ok(stored.iter().map(|c| ConnectionRow::new(c, router)).collect())
}

/// `GET /connections`: the list with live status and the create form.
pub(crate) async fn list(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Result<Response, WebError> {
    let csrf = Csrf::of(&state, &headers);
    let html = ListPage {
        layout: csrf.signed_in(&user, "connections"),
        connections: connection_rows(&state, &user).await?,
        manages: user.manages(),
        name: String::new(),
        db_type: "postgresql".to_owned(),
        error: None,
        notice: done.notice(),
    }
    .render();
    Ok(page(StatusCode::OK, html, csrf.cookies()))
}

/// The create form.
#[derive(Debug, Deserialize)]
pub(crate) struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    db_type: String,
}

/// Keeps a new key for the session's next view of the connection's page and
/// redirects there (303): the key is never stored, nor put in a URL.
fn show_key_once(state: &AppState, user: &CurrentUser, key: IssuedKey, done: &str) -> Response {
    let connection_id = key.connection.id.as_str().to_owned();
    let target = detail_url(&connection_id);
    let flash = Flash::NewKey { connection_id, api_key: key.api_key };
    // A page's user signed in with a session: it owns the flash.
    let session = match user.session() {
        Ok(session) => session,
        Err(e) => return e.into_response(),
    };
    state.inner().flashes.put(&Owner::session(session), &target, flash);
    Redirect::to(&format!("{target}{done}")).into_response()
}

/// `POST /connections`: creates a connection and redirects to its page, which
/// shows the key once (a reload cannot create a second connection). A refused
/// form (a bad or taken name) is shown again with the reason.
pub(crate) async fn create(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<CreateForm>,
) -> Result<Response, WebError> {
    let created =
        async { connections::create(&state, &user.admin()?, &form.name, &form.db_type).await };
    let error = match created.await {
        Ok(created) => return Ok(show_key_once(&state, &user, created, "")),
        Err(e) => e,
    };
    let csrf = Csrf::of(&state, &headers);
    let html = ListPage {
        layout: csrf.signed_in(&user, "connections"),
        connections: connection_rows(&state, &user).await?,
        manages: user.manages(),
        name: form.name,
        db_type: form.db_type,
        error: Some(sentence(&error)),
        notice: None,
    }
    .render();
    Ok(page(error.code.status(), html, csrf.cookies()))
}

/// A table of the schema browser.
#[derive(Debug)]
struct TableView {
    name: String,
    kind: &'static str,
    comment: Option<String>,
    columns: Vec<ColumnView>,
}

/// A column of the schema browser.
#[derive(Debug)]
struct ColumnView {
    name: String,
    data_type: String,
    nullable: bool,
    key: String,
    comment: Option<String>,
}

/// The schema browser's tables.
fn tables_of(schema: &Schema) -> Vec<TableView> {
    schema
        .tables
        .iter()
        .map(|t| TableView {
            name: if t.schema == "public" || t.schema == "main" {
                t.name.clone()
            } else {
                format!("{}.{}", t.schema, t.name)
            },
            kind: t.kind.as_str(),
            comment: t.comment.clone(),
            columns: t
                .columns
                .iter()
                .map(|c| {
                    let mut key = Vec::new();
                    if t.primary_key.contains(&c.name) {
                        key.push("primary key".to_owned());
                    }
                    for fk in t.foreign_keys.iter().filter(|fk| fk.columns.contains(&c.name)) {
                        key.push(format!("→ {}", fk.referenced_table));
                    }
                    ColumnView {
                        name: c.name.clone(),
                        data_type: c.data_type.clone(),
                        nullable: c.nullable,
                        key: key.join(", "),
                        comment: c.comment.clone(),
                    }
                })
                .collect(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "connection.html")]
struct DetailPage {
    layout: Layout,
    c: ConnectionRow,
    manages: bool,
    setup: SetupView,
    /// The model that reads the business instructions; `None` when the
    /// offline engine answers (it does not read them).
    model: Option<String>,
    tables: Option<Vec<TableView>>,
    schema_error: Option<String>,
    error: Option<String>,
    /// Where the error is shown: beside the form that failed (`instructions`,
    /// `delete`), or at the top of the page (empty).
    error_at: &'static str,
    notice: Option<&'static str>,
}

/// What a connection's page adds on top of the stored connection.
#[derive(Default)]
struct DetailExtras {
    /// A new key, right after a create or a rotation.
    new_key: Option<String>,
    error: Option<String>,
    /// The form the error belongs to; see [`DetailPage::error_at`].
    error_at: &'static str,
    notice: Option<&'static str>,
    status: Option<StatusCode>,
    /// The name and instructions as submitted, when saving them failed.
    edited: Option<(String, String)>,
}

impl DetailExtras {
    /// The page for a failed action: the reason, with the action's status.
    fn failed(error: &AppError) -> Self {
        DetailExtras {
            error: Some(sentence(error)),
            status: Some(error.code.status()),
            ..DetailExtras::default()
        }
    }
}

async fn render_detail(
    state: &AppState,
    user: &CurrentUser,
    headers: &HeaderMap,
    id: &str,
    extras: DetailExtras,
) -> Result<Response, WebError> {
    let inner = state.inner();
    let connection = connections::get(state, user, id).await?;
    let (tables, schema_error) = match stored_schema(inner.store.as_ref(), &connection).await {
        Ok(schema) => (Some(tables_of(&schema)), None),
        Err(e) => (None, Some(sentence(&e))),
    };
    let csrf = Csrf::of(state, headers);
    let mut c = ConnectionRow::new(&connection, inner.router.as_ref());
    let setup = match extras.new_key {
        Some(key) => SetupView {
            lines: AgentSetup::new(&inner.config.public_url, &connection, &key),
            api_key: Some(key),
            placeholder: KEY_PLACEHOLDER,
            open: true,
        },
        None => SetupView {
            api_key: None,
            lines: AgentSetup::without_key(&inner.config.public_url, &connection),
            placeholder: KEY_PLACEHOLDER,
            open: c.status != "online",
        },
    };
    if let Some((name, instructions)) = extras.edited {
        (c.name, c.instructions) = (name, instructions);
    }
    let model = match inner.config.llm() {
        Ok(LlmSettings::OpenAi { model, .. }) => Some(model),
        // The server would not have started with bad settings.
        Ok(LlmSettings::Offline) | Err(_) => None,
    };
    let html = DetailPage {
        layout: csrf.signed_in(user, "connections"),
        c,
        manages: user.manages(),
        setup,
        model,
        tables,
        schema_error,
        error: extras.error,
        error_at: extras.error_at,
        notice: extras.notice,
    }
    .render();
    Ok(page(extras.status.unwrap_or(StatusCode::OK), html, csrf.cookies()))
}

/// `GET /connections/{id}`: status, instructions, schema and actions.
pub(crate) async fn detail(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, WebError> {
    // The key of a connection just created or rotated, once.
    let new_key =
        match state.inner().flashes.take(&Owner::session(user.session()?), &detail_url(&id)) {
            Some(Flash::NewKey { connection_id, api_key }) if connection_id == id => Some(api_key),
            _ => None,
        };
    let extras = DetailExtras { notice: done.notice(), new_key, ..DetailExtras::default() };
    render_detail(&state, &user, &headers, &id, extras).await
}

/// The name and instructions form.
#[derive(Debug, Deserialize)]
pub(crate) struct UpdateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    instructions: String,
}

/// `POST /connections/{id}`: saves the name and business instructions.
pub(crate) async fn update(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    CheckedForm(form): CheckedForm<UpdateForm>,
) -> Result<Response, WebError> {
    let (name, instructions) = (Some(form.name.as_str()), Some(form.instructions.as_str()));
    let updated =
        async { connections::update(&state, &user.admin()?, &id, name, instructions).await };
    match updated.await {
        Ok(_) => Ok(Redirect::to(&format!("{}?done=saved", detail_url(&id))).into_response()),
        Err(e) => {
            let extras = DetailExtras {
                edited: Some((form.name, form.instructions)),
                error_at: "instructions",
                ..DetailExtras::failed(&e)
            };
            render_detail(&state, &user, &headers, &id, extras).await
        }
    }
}

/// `POST /connections/{id}/refresh-schema`: asks the agent for the schema
/// now, then redirects to the connection's page (or shows why it failed).
pub(crate) async fn refresh_schema(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    CheckedForm(_): CheckedForm<TokenForm>,
) -> Result<Response, WebError> {
    match connections::refresh_schema(&state, &user, &id).await {
        Ok(_) => Ok(Redirect::to(&format!("{}?done=refreshed", detail_url(&id))).into_response()),
        Err(e) => render_detail(&state, &user, &headers, &id, DetailExtras::failed(&e)).await,
    }
}

/// `POST /connections/{id}/rotate-key`: a new key, shown once on the
/// connection's page it redirects to; the old one stops working and its
/// agents are disconnected.
pub(crate) async fn rotate_key(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    CheckedForm(_): CheckedForm<TokenForm>,
) -> Result<Response, WebError> {
    match async { connections::rotate_key(&state, &user.admin()?, &id).await }.await {
        Ok(rotated) => Ok(show_key_once(&state, &user, rotated, "?done=rotated")),
        Err(e) => render_detail(&state, &user, &headers, &id, DetailExtras::failed(&e)).await,
    }
}

/// The delete form: the connection's name typed again.
#[derive(Debug, Deserialize)]
pub(crate) struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

/// `POST /connections/{id}/delete`: deletes the connection once its name is
/// typed to confirm.
pub(crate) async fn delete(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    CheckedForm(form): CheckedForm<DeleteForm>,
) -> Result<Response, WebError> {
    let connection = connections::get(&state, &user, &id).await?;
    if form.confirm.trim() != connection.name {
        let extras = DetailExtras {
            error: Some(format!(
                "Type the connection's name, {}, to confirm deleting it.",
                connection.name
            )),
            error_at: "delete",
            status: Some(StatusCode::UNPROCESSABLE_ENTITY),
            ..DetailExtras::default()
        };
        return render_detail(&state, &user, &headers, &id, extras).await;
    }
    connections::delete(&state, &user.admin()?, &id).await?;
    Ok(Redirect::to("/connections?done=deleted").into_response())
}
