//! Connections: the organisation's databases, their agent API keys, cached
//! schemas and live status, plus the organisation's status stream.
//!
//! Every handler takes [`CurrentUser`], and every store call takes its
//! organisation, so another organisation's connection answers 404.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use custard_core::Dialect;
use custard_core::wire::schema_from_json;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use crate::accounts::CurrentUser;
use crate::auth;
use crate::error::{AppError, ErrorBody, ErrorCode};
use crate::extract::ApiJson;
use crate::hub::{AgentRouter, StatusEvent};
use crate::routes::AppState;
use crate::store::{
    ConflictKind, Connection, ConnectionId, ConnectionUpdate, NewConnection, StoreError,
};

const MAX_NAME_CHARS: usize = 100;
const MAX_INSTRUCTIONS_CHARS: usize = 4000;
/// Characters of the key kept for display: `custard_` and four more.
const KEY_PREFIX_CHARS: usize = 12;

/// The live status of a connection.
pub(crate) fn status_of(connection: &Connection, agents: usize) -> &'static str {
    match (agents, connection.last_seen_at) {
        (1.., _) => "online",
        (0, Some(_)) => "offline",
        (0, None) => "pending",
    }
}

/// A connection as the API shows it, with its live status.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectionView {
    pub(crate) id: String,
    pub(crate) name: String,
    /// `postgres` or `sqlite`.
    #[schema(example = "postgres")]
    pub(crate) db_type: &'static str,
    /// `online` (an agent is connected), `offline` (one was, none is now) or
    /// `pending` (no agent ever connected).
    #[schema(example = "online")]
    pub(crate) status: &'static str,
    /// Agent sessions connected now.
    pub(crate) agents: usize,
    /// The version of the connected agent, or of the last one.
    #[schema(required)]
    pub(crate) agent_version: Option<String>,
    /// When an agent was last seen: written when one connects, about once a
    /// minute while it stays connected, and when it leaves.
    #[schema(format = DateTime, required)]
    pub(crate) last_seen_at: Option<String>,
    /// The fingerprint of the cached schema, once an agent reported one.
    #[schema(required)]
    pub(crate) schema_fingerprint: Option<String>,
    #[schema(format = DateTime, required)]
    pub(crate) schema_refreshed_at: Option<String>,
    /// The first characters of the current API key, to tell keys apart.
    #[schema(example = "custard_AbCd")]
    pub(crate) key_prefix: String,
    /// Business instructions added to every prompt for this database.
    pub(crate) instructions: String,
    #[schema(format = DateTime)]
    pub(crate) created_at: String,
    #[schema(format = DateTime)]
    pub(crate) updated_at: String,
}

impl ConnectionView {
    /// The connection with its live status from the agent router.
    pub(crate) fn new(connection: &Connection, router: &dyn AgentRouter) -> Self {
        let presence = router.presence(&connection.id);
        ConnectionView {
            id: connection.id.as_str().to_owned(),
            name: connection.name.clone(),
            db_type: connection.dialect.as_str(),
            status: status_of(connection, presence.agents),
            agents: presence.agents,
            agent_version: presence.agent_version.or_else(|| connection.agent_version.clone()),
            last_seen_at: connection.last_seen_at.map(|t| t.to_rfc3339()),
            schema_fingerprint: connection.schema_fingerprint.clone(),
            schema_refreshed_at: connection.schema_refreshed_at.map(|t| t.to_rfc3339()),
            key_prefix: connection.key_prefix.clone(),
            instructions: connection.instructions.clone(),
            created_at: connection.created_at.to_rfc3339(),
            updated_at: connection.updated_at.to_rfc3339(),
        }
    }
}

/// A connection with its new API key, shown this once.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionWithKey {
    #[serde(flatten)]
    pub(crate) connection: ConnectionView,
    /// The agent's API key; only its hash is kept, so it cannot be shown again.
    pub(crate) api_key: String,
    pub(crate) setup: AgentSetup,
}

/// Ready-to-paste lines that start the agent for a connection.
#[derive(Serialize, ToSchema)]
pub(crate) struct AgentSetup {
    /// The agent's WebSocket URL.
    #[schema(example = "wss://custard.example.com/api/v1/connections/ws/abc123")]
    pub(crate) server_url: String,
    /// An env file for the agent (the database URL is a placeholder to replace).
    pub(crate) env: String,
    /// A `docker run` command; for SQLite it mounts the database file read-only.
    pub(crate) docker_run: String,
    /// The `custard-agent run` command, for the agent's binary.
    pub(crate) binary_run: String,
    /// A `cargo run` command, from the source.
    pub(crate) cargo_run: String,
    /// PostgreSQL: the SQL that creates a read-only login role for the agent,
    /// to run as an administrator of the database. SQLite has no roles (null):
    /// the agent opens the file read-only, and `docker_run` mounts it so.
    #[schema(required)]
    pub(crate) role_sql: Option<String>,
}

// The key is a secret: `Debug` (and so any log line) leaves it out.
impl std::fmt::Debug for ConnectionWithKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionWithKey")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AgentSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSetup").field("server_url", &self.server_url).finish_non_exhaustive()
    }
}

/// The organisation's connections.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectionList {
    pub(crate) connections: Vec<ConnectionView>,
}

/// A connection's cached schema.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SchemaResponse {
    fingerprint: String,
    #[schema(format = DateTime)]
    refreshed_at: String,
    /// The schema as the agent reported it: tables, columns, keys and sample values.
    #[schema(value_type = Object)]
    schema: Value,
}

/// A freshly discovered schema.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SchemaRefreshed {
    pub(crate) fingerprint: String,
    #[schema(format = DateTime)]
    pub(crate) refreshed_at: String,
    /// Tables in the schema.
    pub(crate) tables: usize,
}

fn validate_name(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(AppError::new(
            ErrorCode::Validation,
            format!("name must be 1 to {MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    Ok(name.to_owned())
}

fn parse_id(id: String) -> ConnectionId {
    ConnectionId::from(id)
}

/// The agent's WebSocket URL for a connection, from the public URL.
fn agent_url(public_url: &str, id: &ConnectionId) -> String {
    let base = public_url.trim_end_matches('/');
    let base = match base.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some((_, rest)) => format!("ws://{rest}"),
        None => format!("ws://{base}"),
    };
    format!("{base}/api/v1/connections/ws/{id}")
}

/// What stands for the API key in the setup lines shown after the key was:
/// only its hash is kept, so a later visit cannot show the key itself.
pub(crate) const KEY_PLACEHOLDER: &str = "YOUR_API_KEY";
/// The database's name in the PostgreSQL lines, for the customer to replace.
const DATABASE_PLACEHOLDER: &str = "your_database";
/// The read-only login role the PostgreSQL lines create and connect as.
const READER_ROLE: &str = "custard_reader";
/// The SQLite database file on the customer's machine, for them to replace.
const SQLITE_HOST_PATH: &str = "/path/to/your.db";
/// Where the `docker run` line mounts the SQLite file in the container.
const SQLITE_CONTAINER_PATH: &str = "/data/your.db";

impl AgentSetup {
    /// The lines for `connection` with `api_key`, pointing at `public_url`.
    pub(crate) fn new(public_url: &str, connection: &Connection, api_key: &str) -> Self {
        let url = agent_url(public_url, &connection.id);
        // The agent's database URL on the host, and inside the container.
        let (database, in_container, mount, role_sql) = match connection.dialect {
            Dialect::Sqlite => (
                format!("sqlite:{SQLITE_HOST_PATH}"),
                format!("sqlite:{SQLITE_CONTAINER_PATH}"),
                // Read-only: nothing in the container can change the file.
                format!("-v {SQLITE_HOST_PATH}:{SQLITE_CONTAINER_PATH}:ro \\\n  "),
                None,
            ),
            // PostgreSQL (the agent serves no other database).
            _ => {
                let database =
                    format!("postgres://{READER_ROLE}:PASSWORD@HOST:5432/{DATABASE_PLACEHOLDER}");
                let role_sql = custard_agent::privileges::read_only_role_sql(
                    READER_ROLE,
                    DATABASE_PLACEHOLDER,
                    &custard_core::AccessPolicy::default(),
                    &[],
                );
                (database.clone(), database, String::new(), Some(role_sql))
            }
        };
        AgentSetup {
            env: format!(
                "CUSTARD_SERVER_URL={url}\nCUSTARD_API_KEY={api_key}\nCUSTARD_DATABASE_URL={database}\n"
            ),
            docker_run: format!(
                "docker run -d --name custard-agent --restart unless-stopped \\\n  \
                 --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \\\n  \
                 {mount}-e CUSTARD_SERVER_URL={url} \\\n  \
                 -e CUSTARD_API_KEY={api_key} \\\n  \
                 -e CUSTARD_DATABASE_URL={in_container} \\\n  \
                 custard-agent"
            ),
            binary_run: format!(
                "CUSTARD_SERVER_URL={url} \\\nCUSTARD_API_KEY={api_key} \\\n\
                 CUSTARD_DATABASE_URL={database} \\\ncustard-agent run"
            ),
            cargo_run: format!(
                "CUSTARD_SERVER_URL={url} CUSTARD_API_KEY={api_key} \
             CUSTARD_DATABASE_URL={database} cargo run -p custard-agent"
            ),
            server_url: url,
            role_sql,
        }
    }

    /// The lines for `connection` with [`KEY_PLACEHOLDER`] for its key, for
    /// every later visit of its page.
    pub(crate) fn without_key(public_url: &str, connection: &Connection) -> Self {
        Self::new(public_url, connection, KEY_PLACEHOLDER)
    }
}

/// A fresh key with its hash and display prefix.
fn new_key() -> (String, String, String) {
    let key = auth::new_api_key();
    let hash = auth::hash_secret(&key);
    let prefix: String = key.chars().take(KEY_PREFIX_CHARS).collect();
    (key, hash, prefix)
}

/// A new connection.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateConnection {
    /// 1 to 100 characters.
    pub(crate) name: String,
    /// `postgresql` (or `postgres`, `pg`) or `sqlite`.
    #[schema(example = "postgresql")]
    pub(crate) db_type: String,
}

/// Create a connection
///
/// Creates a connection and shows its agent API key, this once, with the
/// lines that start the agent. Owners and admins only.
#[utoipa::path(
    post,
    path = "/api/v1/connections",
    tag = "connections",
    security(("access_token" = [])),
    request_body = CreateConnection,
    responses(
        (status = 201, description = "The connection, with its API key", body = ConnectionWithKey),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an owner or admin", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 409, description = "`name_taken`: another connection of the organisation has this name (trimmed, case-insensitive)", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad name, an unknown `db_type` or an unknown field", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<CreateConnection>,
) -> Result<impl IntoResponse, AppError> {
    let created = create_connection(&state, &current, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Creates a connection with a new API key (owners and admins only). Shared
/// by the API and the web UI.
pub(crate) async fn create_connection(
    state: &AppState,
    current: &CurrentUser,
    body: CreateConnection,
) -> Result<ConnectionWithKey, AppError> {
    current.require_admin()?;
    let name = validate_name(&body.name)?;
    let dialect: Dialect = body.db_type.parse().map_err(|_| {
        AppError::new(ErrorCode::Validation, "db_type must be `postgresql` or `sqlite`")
    })?;
    let inner = state.inner();
    // A collision of 190-bit keys would be a broken random generator; retry once anyway.
    for _ in 0..2 {
        let (key, key_hash, key_prefix) = new_key();
        let new = NewConnection {
            org_id: current.org().clone(),
            name: name.clone(),
            dialect,
            key_hash,
            key_prefix,
        };
        match inner.store.create_connection(new).await {
            Ok(connection) => {
                tracing::info!(connection = %connection.id, org = %connection.org_id, "connection created");
                return Ok(ConnectionWithKey {
                    connection: ConnectionView::new(&connection, inner.router.as_ref()),
                    setup: AgentSetup::new(&inner.config.public_url, &connection, &key),
                    api_key: key,
                });
            }
            Err(StoreError::Conflict(ConflictKind::ApiKey)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::internal("API key collided twice"))
}

/// List connections
///
/// The organisation's connections with their live status.
#[utoipa::path(
    get,
    path = "/api/v1/connections",
    tag = "connections",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "Every connection of the organisation", body = ConnectionList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<ConnectionList>, AppError> {
    let inner = state.inner();
    let connections = inner.store.list_connections(current.org()).await?;
    let connections =
        connections.iter().map(|c| ConnectionView::new(c, inner.router.as_ref())).collect();
    Ok(Json(ConnectionList { connections }))
}

/// Get a connection
#[utoipa::path(
    get,
    path = "/api/v1/connections/{id}",
    tag = "connections",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "The connection", body = ConnectionView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such connection in the organisation", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, AppError> {
    let inner = state.inner();
    let connection = inner.store.get_connection(current.org(), &parse_id(id)).await?;
    Ok(Json(ConnectionView::new(&connection, inner.router.as_ref())))
}

/// Changes to a connection; a missing field stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateConnection {
    /// 1 to 100 characters.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Business instructions added to every prompt, up to 4000 characters.
    #[serde(default)]
    pub(crate) instructions: Option<String>,
}

/// Update a connection
///
/// Its name and business instructions. Owners and admins only.
#[utoipa::path(
    patch,
    path = "/api/v1/connections/{id}",
    tag = "connections",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The connection's id")),
    request_body = UpdateConnection,
    responses(
        (status = 200, description = "The updated connection", body = ConnectionView),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an owner or admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such connection in the organisation", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 409, description = "`name_taken`: another connection of the organisation has this name (trimmed, case-insensitive)", body = ErrorBody),
        (status = 422, description = "`validation_error`: a bad name, instructions too long or an unknown field", body = ErrorBody),
    )
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateConnection>,
) -> Result<Json<ConnectionView>, AppError> {
    current.require_admin()?;
    let name = body.name.as_deref().map(validate_name).transpose()?;
    let instructions = match body.instructions {
        Some(text) if text.chars().count() > MAX_INSTRUCTIONS_CHARS => {
            return Err(AppError::new(
                ErrorCode::Validation,
                format!("instructions are limited to {MAX_INSTRUCTIONS_CHARS} characters"),
            ));
        }
        other => other.map(|t| t.trim().to_owned()),
    };
    let inner = state.inner();
    let connection = inner
        .store
        .update_connection(current.org(), &parse_id(id), ConnectionUpdate { name, instructions })
        .await?;
    Ok(Json(ConnectionView::new(&connection, inner.router.as_ref())))
}

/// Delete a connection
///
/// Disconnects its agents and removes its schema and history. Owners and admins only.
#[utoipa::path(
    delete,
    path = "/api/v1/connections/{id}",
    tag = "connections",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 204, description = "The connection is deleted"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an owner or admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such connection in the organisation", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    current.require_admin()?;
    let inner = state.inner();
    let id = parse_id(id);
    inner.store.delete_connection(current.org(), &id).await?;
    inner.router.disconnect(&id, "the connection was deleted");
    inner.pipelines.forget(&id);
    tracing::info!(connection = %id, org = %current.org(), "connection deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate a connection's API key
///
/// Issues a new key, shown this once; the old one stops working and agents
/// using it are disconnected at once. Owners and admins only.
#[utoipa::path(
    post,
    path = "/api/v1/connections/{id}/rotate-key",
    tag = "connections",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "The connection, with its new API key", body = ConnectionWithKey),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an owner or admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such connection in the organisation", body = ErrorBody),
    )
)]
pub(crate) async fn rotate_key(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<ConnectionWithKey>, AppError> {
    current.require_admin()?;
    let inner = state.inner();
    let id = parse_id(id);
    let (key, key_hash, key_prefix) = new_key();
    let connection =
        inner.store.set_connection_key(current.org(), &id, key_hash, key_prefix).await?;
    inner.router.disconnect(&id, "the API key was rotated");
    tracing::info!(connection = %id, "API key rotated");
    Ok(Json(ConnectionWithKey {
        connection: ConnectionView::new(&connection, inner.router.as_ref()),
        setup: AgentSetup::new(&inner.config.public_url, &connection, &key),
        api_key: key,
    }))
}

/// Get a connection's schema
///
/// The schema the agent last reported, as cached by the server.
#[utoipa::path(
    get,
    path = "/api/v1/connections/{id}/schema",
    tag = "connections",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "The cached schema", body = SchemaResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such connection in the organisation", body = ErrorBody),
        (status = 409, description = "`schema_unavailable`: no agent has reported a schema yet", body = ErrorBody),
    )
)]
pub(crate) async fn schema(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<SchemaResponse>, AppError> {
    let inner = state.inner();
    let id = parse_id(id);
    // Check the connection first: 404 for another organisation's, not "no schema".
    inner.store.get_connection(current.org(), &id).await?;
    let stored = match inner.store.get_schema(current.org(), &id).await {
        Ok(s) => s,
        Err(StoreError::NotFound) => {
            return Err(AppError::new(
                ErrorCode::SchemaUnavailable,
                "no schema yet: start the agent for this connection",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let schema: Value = serde_json::from_str(&stored.json).map_err(AppError::internal)?;
    Ok(Json(SchemaResponse {
        fingerprint: stored.fingerprint,
        refreshed_at: stored.refreshed_at.to_rfc3339(),
        schema,
    }))
}

/// Refresh a connection's schema
///
/// Asks a connected agent to discover the schema now and caches it.
#[utoipa::path(
    post,
    path = "/api/v1/connections/{id}/refresh-schema",
    tag = "connections",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "The new schema's fingerprint and size", body = SchemaRefreshed),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such connection in the organisation", body = ErrorBody),
        (status = 422, description = "`query_rejected` or `query_failed`: the agent could not read the catalog", body = ErrorBody),
        (status = 502, description = "`agent_disconnected`: the agent went away while answering", body = ErrorBody),
        (status = 503, description = "`agent_offline`, `agent_busy`, `database_unavailable`, or `unavailable` (the store)", body = ErrorBody),
        (status = 504, description = "`query_timeout`: the agent did not answer in time", body = ErrorBody),
    )
)]
pub(crate) async fn refresh_schema(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<SchemaRefreshed>, AppError> {
    let inner = state.inner();
    let id = parse_id(id);
    let connection = inner.store.get_connection(current.org(), &id).await?;
    let schema = inner.router.discover(&connection.id, 5).await.map_err(AppError::from_exec)?;
    let stored = inner
        .store
        .save_schema(
            current.org(),
            &id,
            schema.fingerprint(),
            custard_core::wire::schema_to_json(&schema),
        )
        .await?;
    Ok(Json(SchemaRefreshed {
        fingerprint: stored.fingerprint,
        refreshed_at: stored.refreshed_at.to_rfc3339(),
        tables: schema.tables.len(),
    }))
}

/// The stored schema of a connection, parsed.
pub(crate) async fn load_schema(
    state: &AppState,
    connection: &Connection,
) -> Result<custard_core::Schema, AppError> {
    match state.inner().store.get_schema(&connection.org_id, &connection.id).await {
        Ok(stored) => schema_from_json(&stored.json).map_err(AppError::internal),
        Err(StoreError::NotFound) => Err(AppError::new(
            ErrorCode::SchemaUnavailable,
            "the connection's schema is not known yet: start its agent, or wait a moment while \
             a connected agent reports it",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Follow connection status
///
/// The organisation's live connection status as server-sent events. It starts
/// with one `status` event per connection (a `ConnectionView`), then sends one
/// `status` event per change: the connection's `ConnectionView` with `event`
/// (`agent_connected`, `agent_disconnected` or `schema_refreshed`) and `at`
/// added, or only `id`, `status`, `agents`, `event` and `at` when the
/// connection is gone. A `resync` event (data `{}`) means events were missed:
/// list the connections again. The stream checks again before each event and
/// every 30 seconds that the session is active and the caller still a member
/// of the organisation, and ends when either is no longer so (signed out,
/// removed from the organisation).
#[utoipa::path(
    get,
    path = "/api/v1/connections/events",
    tag = "connections",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "A stream of `status` and `resync` events", content_type = "text/event-stream", body = String),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let inner = state.inner();
    // Subscribe before the snapshot, so no change falls between them.
    let receiver = inner.router.subscribe();
    let connections = inner.store.list_connections(current.org()).await?;
    let snapshot: Vec<Event> = connections
        .iter()
        .map(|c| {
            Event::default()
                .event("status")
                .data(json!(ConnectionView::new(c, inner.router.as_ref())).to_string())
        })
        .collect();
    let org = current.org().clone();
    let router = inner.router.clone();
    let store = inner.store.clone();
    let every = inner.config.session_recheck();
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live =
        futures_util::stream::unfold((receiver, recheck), move |(mut receiver, mut recheck)| {
            let (org, router, store, current) =
                (org.clone(), router.clone(), store.clone(), current.clone());
            async move {
                loop {
                    let received = tokio::select! {
                        received = receiver.recv() => received,
                        _ = recheck.tick() => {
                            if !current.still_valid(store.as_ref()).await {
                                return None;
                            }
                            continue;
                        }
                    };
                    let sse = match received {
                        Ok(event) if event.org_id == org => {
                            // Nothing of the organisation's after a sign-out or a removal.
                            if !current.still_valid(store.as_ref()).await {
                                return None;
                            }
                            let data = match store.get_connection(&org, &event.connection_id).await
                            {
                                Ok(c) => event_json(
                                    &event,
                                    Some(ConnectionView::new(&c, router.as_ref())),
                                ),
                                Err(_) => event_json(&event, None),
                            };
                            Event::default().event("status").data(data.to_string())
                        }
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => {
                            if !current.still_valid(store.as_ref()).await {
                                return None;
                            }
                            Event::default().event("resync").data("{}")
                        }
                        Err(RecvError::Closed) => return None,
                    };
                    return Some((Ok(sse), (receiver, recheck)));
                }
            }
        });
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::iter(snapshot.into_iter().map(Ok)),
        live,
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The connection's current JSON with the event's kind, or the bare event
/// when the connection is gone.
fn event_json(event: &StatusEvent, connection: Option<ConnectionView>) -> Value {
    let mut body = connection.map(|c| json!(c)).unwrap_or_else(|| {
        json!({
            "id": event.connection_id.as_str(),
            "status": if event.agents > 0 { "online" } else { "offline" },
            "agents": event.agents,
        })
    });
    body["event"] = json!(event.kind.as_str());
    body["at"] = json!(event.at.to_rfc3339());
    body
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::hub::{HubSettings, LocalHub};
    use crate::store::OrgId;

    fn connection(seen: bool) -> Connection {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        Connection {
            id: ConnectionId::from("c1".to_owned()),
            org_id: OrgId::from("o1".to_owned()),
            name: "shop".to_owned(),
            dialect: Dialect::Postgres,
            key_prefix: "custard_AbCd".to_owned(),
            instructions: String::new(),
            schema_fingerprint: seen.then(|| "f1".to_owned()),
            schema_refreshed_at: seen.then_some(at),
            agent_version: seen.then(|| "0.1.0".to_owned()),
            last_seen_at: seen.then_some(at),
            created_at: at,
            updated_at: at,
        }
    }

    /// The wire shape, null fields included, as clients and tests rely on it.
    #[test]
    fn connections_keep_their_json_shape() {
        let hub = LocalHub::new(HubSettings::default());
        let at = "2026-01-02T03:04:05+00:00";
        let pending = json!({
            "id": "c1", "name": "shop", "db_type": "postgres", "status": "pending", "agents": 0,
            "agent_version": null, "last_seen_at": null, "schema_fingerprint": null,
            "schema_refreshed_at": null, "key_prefix": "custard_AbCd", "instructions": "",
            "created_at": at, "updated_at": at,
        });
        assert_eq!(json!(ConnectionView::new(&connection(false), &hub)), pending);
        let offline = json!(ConnectionView::new(&connection(true), &hub));
        assert_eq!(offline["status"], "offline");
        assert_eq!(offline["agent_version"], "0.1.0");
        assert_eq!(offline["last_seen_at"], at);

        let c = connection(false);
        let with_key = json!(ConnectionWithKey {
            connection: ConnectionView::new(&c, &hub),
            setup: AgentSetup::new("https://custard.example/", &c, "custard_key"),
            api_key: "custard_key".to_owned(),
        });
        let mut expected = pending;
        expected["api_key"] = json!("custard_key");
        expected["setup"] = with_key["setup"].clone();
        assert_eq!(with_key, expected);
        let setup = with_key["setup"].as_object().unwrap();
        let keys: Vec<&str> = setup.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["binary_run", "cargo_run", "docker_run", "env", "role_sql", "server_url"]
        );
        assert_eq!(setup["server_url"], "wss://custard.example/api/v1/connections/ws/c1");
    }

    /// The env lines as `KEY=value` pairs.
    fn env_pairs(env: &str) -> Vec<(&str, &str)> {
        env.lines().filter_map(|l| l.split_once('=')).collect()
    }

    #[test]
    fn postgres_lines_create_a_read_only_role_and_connect_as_it() {
        let c = connection(false);
        let setup = AgentSetup::new("http://127.0.0.1:8000", &c, "custard_key");
        let url = "ws://127.0.0.1:8000/api/v1/connections/ws/c1";
        let database = "postgres://custard_reader:PASSWORD@HOST:5432/your_database";
        assert_eq!(
            env_pairs(&setup.env),
            [
                ("CUSTARD_SERVER_URL", url),
                ("CUSTARD_API_KEY", "custard_key"),
                ("CUSTARD_DATABASE_URL", database)
            ]
        );
        for line in [&setup.docker_run, &setup.binary_run, &setup.cargo_run] {
            assert!(line.contains(url) && line.contains(database), "{line}");
            assert!(line.contains("CUSTARD_API_KEY=custard_key"), "{line}");
        }
        assert!(setup.docker_run.starts_with("docker run ") && !setup.docker_run.contains(" -v "));
        assert!(setup.binary_run.ends_with("custard-agent run"), "{}", setup.binary_run);
        let sql = setup.role_sql.expect("PostgreSQL has a role to create");
        assert!(sql.contains("CREATE ROLE \"custard_reader\" LOGIN"), "{sql}");
        assert!(sql.contains("GRANT CONNECT ON DATABASE \"your_database\""), "{sql}");
        assert!(sql.contains("default_transaction_read_only = on"), "{sql}");
    }

    #[test]
    fn sqlite_lines_mount_the_file_read_only_and_create_no_role() {
        let c = Connection { dialect: Dialect::Sqlite, ..connection(false) };
        let setup = AgentSetup::new("https://custard.example", &c, "custard_key");
        assert!(setup.role_sql.is_none(), "SQLite has no roles");
        // The agent reads `sqlite:PATH`; in the container, the mounted file.
        let url = |line: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("CUSTARD_DATABASE_URL="))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no database URL in {line}"))
        };
        let mount = "/path/to/your.db:/data/your.db:ro";
        assert!(setup.docker_run.contains(&format!("-v {mount} ")), "{}", setup.docker_run);
        assert_eq!(url(&setup.docker_run), "sqlite:/data/your.db");
        for line in [&setup.env, &setup.binary_run, &setup.cargo_run] {
            assert_eq!(url(line), "sqlite:/path/to/your.db", "{line}");
        }
        for line in [&setup.docker_run, &setup.env] {
            let parsed = custard_core::DatabaseUrl::parse(&url(line)).expect("the agent's syntax");
            assert_eq!(parsed.dialect(), Dialect::Sqlite);
        }
    }

    /// On later visits the lines hold a placeholder, never a key.
    #[test]
    fn lines_without_the_key_hold_the_placeholder() {
        let setup = AgentSetup::without_key("http://h", &connection(false));
        assert!(setup.env.contains(&format!("CUSTARD_API_KEY={KEY_PLACEHOLDER}\n")));
        for line in [&setup.docker_run, &setup.binary_run, &setup.cargo_run] {
            assert!(line.contains(&format!("CUSTARD_API_KEY={KEY_PLACEHOLDER}")), "{line}");
            assert!(!line.contains("CUSTARD_API_KEY=custard_"), "no key: {line}");
        }
    }
}
