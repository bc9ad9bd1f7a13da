//! `/api/v1/connections/*`: the organisation's connections, their API keys,
//! schemas and live status, and the agent's socket. Each handler parses the
//! request, calls [`crate::connections`] (or the hub, for the socket) and
//! maps the result; creating, changing, rotating and deleting take a
//! [`CurrentAdmin`].

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::{CurrentAdmin, CurrentUser};
use crate::connections::{self, AgentSetup, IssuedKey, Live, StatusUpdate};
use crate::error::AppError;
use crate::extract::{ApiJson, ClientIp};
use crate::hub::{self, AgentRouter, StatusEvent};
use crate::openapi::{DeclaredError, errors};
use crate::state::AppState;
use crate::store::Connection;

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
        let live = Live::of(connection, router);
        ConnectionView {
            id: connection.id.as_str().to_owned(),
            name: connection.name.clone(),
            db_type: connection.dialect.as_str(),
            status: live.status,
            agents: live.agents,
            agent_version: live.agent_version,
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

impl ConnectionWithKey {
    /// The API's view of a new key.
    fn new(issued: IssuedKey, router: &dyn AgentRouter) -> Self {
        ConnectionWithKey {
            connection: ConnectionView::new(&issued.connection, router),
            api_key: issued.api_key,
            setup: issued.setup,
        }
    }
}

// The key is a secret: `Debug` (and so any log line) leaves it out.
impl std::fmt::Debug for ConnectionWithKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionWithKey")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
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

const CREATE_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    Unauthorized,
    Forbidden: "not an owner or admin (or a session cookie without the page's CSRF token)",
    NameTaken,
    PayloadTooLarge,
    Validation: "a bad name, an unknown `db_type` or an unknown field",
    StoreUnavailable,
    Internal,
];

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
    ),
    extensions(("x-errors" = json!(CREATE_ERRORS))),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    admin: CurrentAdmin,
    ApiJson(body): ApiJson<CreateConnection>,
) -> Result<impl IntoResponse, AppError> {
    let issued = connections::create(&state, &admin, &body.name, &body.db_type).await?;
    let created = ConnectionWithKey::new(issued, state.inner().router.as_ref());
    Ok((StatusCode::CREATED, Json(created)))
}

const LIST_ERRORS: &[DeclaredError] = errors![Unauthorized, StoreUnavailable, Internal];

/// List connections
///
/// The organisation's connections with their live status.
#[utoipa::path(
    get,
    path = "/api/v1/connections",
    operation_id = "list_connections",
    tag = "connections",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "Every connection of the organisation", body = ConnectionList),
    ),
    extensions(("x-errors" = json!(LIST_ERRORS))),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<ConnectionList>, AppError> {
    let router = state.inner().router.as_ref();
    let connections = connections::list(&state, &current).await?;
    let connections = connections.iter().map(|c| ConnectionView::new(c, router)).collect();
    Ok(Json(ConnectionList { connections }))
}

const GET_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    NotFound: "no such connection in the organisation",
    StoreUnavailable,
    Internal,
];

/// Get a connection
#[utoipa::path(
    get,
    path = "/api/v1/connections/{id}",
    operation_id = "get_connection",
    tag = "connections",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "The connection", body = ConnectionView),
    ),
    extensions(("x-errors" = json!(GET_ERRORS))),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, AppError> {
    let connection = connections::get(&state, &current, &id).await?;
    Ok(Json(ConnectionView::new(&connection, state.inner().router.as_ref())))
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

const UPDATE_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    Unauthorized,
    Forbidden: "not an owner or admin (or a session cookie without the page's CSRF token)",
    NotFound: "no such connection in the organisation",
    NameTaken,
    PayloadTooLarge,
    Validation: "a bad name, instructions too long or an unknown field",
    StoreUnavailable,
    Internal,
];

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
    ),
    extensions(("x-errors" = json!(UPDATE_ERRORS))),
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    admin: CurrentAdmin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateConnection>,
) -> Result<Json<ConnectionView>, AppError> {
    let (name, instructions) = (body.name.as_deref(), body.instructions.as_deref());
    let connection = connections::update(&state, &admin, &id, name, instructions).await?;
    Ok(Json(ConnectionView::new(&connection, state.inner().router.as_ref())))
}

const DELETE_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "not an owner or admin (or a session cookie without the page's CSRF token)",
    NotFound: "no such connection in the organisation",
    StoreUnavailable,
    Internal,
];

/// Delete a connection
///
/// Disconnects its agents and removes its schema and history. Owners and admins only.
#[utoipa::path(
    delete,
    path = "/api/v1/connections/{id}",
    operation_id = "delete_connection",
    tag = "connections",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 204, description = "The connection is deleted"),
    ),
    extensions(("x-errors" = json!(DELETE_ERRORS))),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    admin: CurrentAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    connections::delete(&state, &admin, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

const ROTATE_KEY_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "not an owner or admin (or a session cookie without the page's CSRF token)",
    NotFound: "no such connection in the organisation",
    StoreUnavailable,
    Internal,
];

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
    ),
    extensions(("x-errors" = json!(ROTATE_KEY_ERRORS))),
)]
pub(crate) async fn rotate_key(
    State(state): State<AppState>,
    admin: CurrentAdmin,
    Path(id): Path<String>,
) -> Result<Json<ConnectionWithKey>, AppError> {
    let issued = connections::rotate_key(&state, &admin, &id).await?;
    Ok(Json(ConnectionWithKey::new(issued, state.inner().router.as_ref())))
}

const SCHEMA_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    NotFound: "no such connection in the organisation",
    SchemaUnavailable,
    StoreUnavailable,
    Internal,
];

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
    ),
    extensions(("x-errors" = json!(SCHEMA_ERRORS))),
)]
pub(crate) async fn schema(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<SchemaResponse>, AppError> {
    let stored = connections::cached_schema(&state, &current, &id).await?;
    let schema: Value = serde_json::from_str(&stored.json).map_err(AppError::internal)?;
    Ok(Json(SchemaResponse {
        fingerprint: stored.fingerprint,
        refreshed_at: stored.refreshed_at.to_rfc3339(),
        schema,
    }))
}

/// Whatever the agent answers `discover` with (it may send any executor's
/// code), and what the hub says of it.
const REFRESH_SCHEMA_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "a session cookie without the page's CSRF token",
    NotFound: "no such connection in the organisation",
    QueryRejected: "the agent could not read the catalog",
    QueryFailed: "the agent could not read the catalog",
    PermissionDenied,
    AgentDisconnected,
    Canceled,
    AgentOffline,
    AgentBusy,
    DatabaseUnavailable,
    PrivilegedRole,
    StoreUnavailable: "the store",
    QueryTimeout: "the agent did not report the schema in time",
    Internal,
];

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
    ),
    extensions(("x-errors" = json!(REFRESH_SCHEMA_ERRORS))),
)]
pub(crate) async fn refresh_schema(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<SchemaRefreshed>, AppError> {
    let refreshed = connections::refresh_schema(&state, &current, &id).await?;
    Ok(Json(SchemaRefreshed {
        fingerprint: refreshed.stored.fingerprint,
        refreshed_at: refreshed.stored.refreshed_at.to_rfc3339(),
        tables: refreshed.tables,
    }))
}

/// Errors before the stream starts; then it only ends.
const EVENTS_ERRORS: &[DeclaredError] = errors![Unauthorized, StoreUnavailable, Internal];

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
    ),
    extensions(("x-errors" = json!(EVENTS_ERRORS))),
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let router = state.inner().router.clone();
    // A server that shuts down ends its streams; browsers connect again.
    let shutting_down = state.inner().shutting_down.clone().cancelled_owned();
    let updates = connections::status_updates(&state, current).await?.take_until(shutting_down);
    let stream = updates.map(move |update| {
        let event = match update {
            StatusUpdate::Snapshot(c) => Event::default()
                .event("status")
                .data(json!(ConnectionView::new(&c, router.as_ref())).to_string()),
            StatusUpdate::Changed(event, now) => {
                let view = now.map(|c| ConnectionView::new(&c, router.as_ref()));
                Event::default().event("status").data(event_json(&event, view).to_string())
            }
            StatusUpdate::Resync => Event::default().event("resync").data("{}"),
        };
        Ok(event)
    });
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

const AGENT_SOCKET_ERRORS: &[DeclaredError] = errors![
    Unauthorized: "no key, a malformed, rotated or unknown key, or the key of another connection",
    Validation: "not a WebSocket upgrade request",
    StoreUnavailable,
    Internal,
];

/// The agent's WebSocket
///
/// A `GET` that upgrades to a WebSocket speaking the agent protocol (wire
/// v1: `hello`, then schema and query frames). The connection's API key is
/// the bearer token; anything else is refused before the upgrade.
#[utoipa::path(
    get,
    path = "/api/v1/connections/ws/{id}",
    tag = "agent",
    security(("agent_api_key" = [])),
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
    ),
    extensions(("x-errors" = json!(AGENT_SOCKET_ERRORS))),
)]
pub(crate) async fn agent_socket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let inner = state.inner();
    let (store, hub) = (inner.store.clone(), inner.hub.clone());
    hub::agent_socket(store, hub, &id, ip, &headers, upgrade).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::setup::tests::connection;
    use crate::hub::{HubSettings, LocalHub};

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
}
