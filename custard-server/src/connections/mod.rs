//! Connections: the logic behind the organisation's databases, their agent
//! API keys, cached schemas and live status, shared by the JSON API
//! (`api::connections`) and the web pages (`web::connections`).
//!
//! Every function takes the caller as the auth layer made it and passes its
//! organisation to the store, so another organisation's connection answers
//! 404; creating, changing, rotating and deleting take a
//! [`CurrentAdmin`](crate::auth::CurrentAdmin). Names are unique per
//! organisation, trimmed and case-insensitive (else `409 name_taken`, from
//! the store). A rotated or deleted connection's agents are disconnected at
//! once, and a deleted one's ask pipeline forgotten.

pub(crate) mod setup;

use custard_core::Dialect;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{self, CurrentAdmin, CurrentUser};
use crate::error::{AppError, ErrorCode};
use crate::hub::{AgentRouter, StatusEvent};
use crate::state::AppState;
use crate::store::{
    ConflictKind, Connection, ConnectionId, ConnectionUpdate, NewConnection, StoreError,
    StoredSchema,
};

pub(crate) use setup::{AgentSetup, KEY_PLACEHOLDER};

/// The longest connection name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// The longest business instructions, in characters.
const MAX_INSTRUCTIONS_CHARS: usize = 4000;
/// Characters of the key kept for display: `custard_` and four more.
const KEY_PREFIX_CHARS: usize = 12;
/// Frequent values per text column asked of the agent on a refresh.
const SAMPLE_VALUES: u32 = 5;

/// The live status of a connection.
pub(crate) fn status_of(connection: &Connection, agents: usize) -> &'static str {
    match (agents, connection.last_seen_at) {
        (1.., _) => "online",
        (0, Some(_)) => "offline",
        (0, None) => "pending",
    }
}

/// What the agent router knows of a connection now.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    /// `online` (an agent is connected), `offline` (one was, none is now) or
    /// `pending` (no agent ever connected).
    pub(crate) status: &'static str,
    /// Agent sessions connected now.
    pub(crate) agents: usize,
    /// The version of the connected agent, or of the last one.
    pub(crate) agent_version: Option<String>,
}

impl Live {
    /// The live status of `connection` from the agent router.
    pub(crate) fn of(connection: &Connection, router: &dyn AgentRouter) -> Self {
        let presence = router.presence(&connection.id);
        Live {
            status: status_of(connection, presence.agents),
            agents: presence.agents,
            agent_version: presence.agent_version.or_else(|| connection.agent_version.clone()),
        }
    }
}

/// A connection with a new API key, shown this once, and the lines that
/// start its agent with it.
pub(crate) struct IssuedKey {
    /// The connection as stored.
    pub(crate) connection: Connection,
    /// The agent's API key; only its hash is kept, so it cannot be shown again.
    pub(crate) api_key: String,
    /// The setup lines holding the key.
    pub(crate) setup: AgentSetup,
}

// The key is a secret: `Debug` (and so any log line) leaves it out.
impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey").field("connection", &self.connection.id).finish_non_exhaustive()
    }
}

/// A freshly discovered and stored schema.
#[derive(Debug)]
pub(crate) struct RefreshedSchema {
    /// What the store keeps of it.
    pub(crate) stored: StoredSchema,
    /// Tables in the schema.
    pub(crate) tables: usize,
}

/// A trimmed name of 1 to [`MAX_NAME_CHARS`] characters without control
/// characters, or a validation error.
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

/// A fresh key with its hash and display prefix.
fn new_key() -> (String, String, String) {
    let key = auth::new_api_key();
    let hash = auth::hash_secret(&key);
    let prefix: String = key.chars().take(KEY_PREFIX_CHARS).collect();
    (key, hash, prefix)
}

/// Creates a connection named `name` for a database of type `db_type`
/// (`postgresql`, `postgres`, `pg` or `sqlite`) with a new API key.
pub(crate) async fn create(
    state: &AppState,
    admin: &CurrentAdmin,
    name: &str,
    db_type: &str,
) -> Result<IssuedKey, AppError> {
    let name = validate_name(name)?;
    let dialect: Dialect = db_type.parse().map_err(|_| {
        AppError::new(ErrorCode::Validation, "db_type must be `postgresql` or `sqlite`")
    })?;
    let inner = state.inner();
    // A collision of 190-bit keys would be a broken random generator; retry once anyway.
    for _ in 0..2 {
        let (key, key_hash, key_prefix) = new_key();
        let new = NewConnection {
            org_id: admin.org().clone(),
            name: name.clone(),
            dialect,
            key_hash,
            key_prefix,
        };
        match inner.store.create_connection(new).await {
            Ok(connection) => {
                tracing::info!(connection = %connection.id, org = %connection.org_id, "connection created");
                let setup = AgentSetup::new(&inner.config.public_url, &connection, &key);
                return Ok(IssuedKey { connection, api_key: key, setup });
            }
            Err(StoreError::Conflict(ConflictKind::ApiKey)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::internal("API key collided twice"))
}

/// The organisation's connections.
pub(crate) async fn list(
    state: &AppState,
    current: &CurrentUser,
) -> Result<Vec<Connection>, AppError> {
    Ok(state.inner().store.list_connections(current.org()).await?)
}

/// One connection of the organisation.
pub(crate) async fn get(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
) -> Result<Connection, AppError> {
    Ok(state
        .inner()
        .store
        .get_connection(current.org(), &ConnectionId::from(id.to_owned()))
        .await?)
}

/// Changes a connection's name and business instructions (`None` keeps one
/// as it is); instructions are trimmed and at most 4000 characters.
pub(crate) async fn update(
    state: &AppState,
    admin: &CurrentAdmin,
    id: &str,
    name: Option<&str>,
    instructions: Option<&str>,
) -> Result<Connection, AppError> {
    let name = name.map(validate_name).transpose()?;
    let instructions = match instructions {
        Some(text) if text.chars().count() > MAX_INSTRUCTIONS_CHARS => {
            return Err(AppError::new(
                ErrorCode::Validation,
                format!("instructions are limited to {MAX_INSTRUCTIONS_CHARS} characters"),
            ));
        }
        // Line breaks and tabs are text; other control characters are not
        // (and a NUL cannot be stored in PostgreSQL's text).
        Some(text) if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) => {
            return Err(AppError::new(
                ErrorCode::Validation,
                "instructions may not hold control characters other than line breaks and tabs",
            ));
        }
        other => other.map(|t| t.trim().to_owned()),
    };
    let id = ConnectionId::from(id.to_owned());
    let update = ConnectionUpdate { name, instructions };
    Ok(state.inner().store.update_connection(admin.org(), &id, update).await?)
}

/// Deletes a connection with its schema and history, disconnects its agents
/// and forgets its ask pipeline.
pub(crate) async fn delete(
    state: &AppState,
    admin: &CurrentAdmin,
    id: &str,
) -> Result<(), AppError> {
    let inner = state.inner();
    let id = ConnectionId::from(id.to_owned());
    inner.store.delete_connection(admin.org(), &id).await?;
    inner.router.disconnect(&id, "the connection was deleted");
    inner.pipelines.forget(&id);
    tracing::info!(connection = %id, org = %admin.org(), "connection deleted");
    Ok(())
}

/// Gives a connection a new API key; the old one stops working and the
/// agents using it are disconnected at once.
pub(crate) async fn rotate_key(
    state: &AppState,
    admin: &CurrentAdmin,
    id: &str,
) -> Result<IssuedKey, AppError> {
    let inner = state.inner();
    let id = ConnectionId::from(id.to_owned());
    let (key, key_hash, key_prefix) = new_key();
    let connection = inner.store.set_connection_key(admin.org(), &id, key_hash, key_prefix).await?;
    inner.router.disconnect(&id, "the API key was rotated");
    tracing::info!(connection = %id, "API key rotated");
    let setup = AgentSetup::new(&inner.config.public_url, &connection, &key);
    Ok(IssuedKey { connection, api_key: key, setup })
}

/// The schema an agent last reported for a connection, as stored:
/// `not_found` for another organisation's connection, `schema_unavailable`
/// while no agent has reported one.
pub(crate) async fn cached_schema(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
) -> Result<StoredSchema, AppError> {
    let store = &state.inner().store;
    let id = ConnectionId::from(id.to_owned());
    // Check the connection first: 404 for another organisation's, not "no schema".
    store.get_connection(current.org(), &id).await?;
    match store.get_schema(current.org(), &id).await {
        Ok(stored) => Ok(stored),
        Err(StoreError::NotFound) => Err(AppError::new(
            ErrorCode::SchemaUnavailable,
            "no schema yet: start the agent for this connection",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Asks a connected agent to discover the connection's schema now, and
/// stores it.
pub(crate) async fn refresh_schema(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
) -> Result<RefreshedSchema, AppError> {
    let inner = state.inner();
    let id = ConnectionId::from(id.to_owned());
    let connection = inner.store.get_connection(current.org(), &id).await?;
    let schema =
        inner.router.discover(&connection.id, SAMPLE_VALUES).await.map_err(AppError::from_exec)?;
    let json = custard_core::wire::schema_to_json(&schema);
    let stored = inner.store.save_schema(current.org(), &id, schema.fingerprint(), json).await?;
    Ok(RefreshedSchema { stored, tables: schema.tables.len() })
}

/// One update of the organisation's live status.
#[derive(Debug)]
pub(crate) enum StatusUpdate {
    /// A connection as it is when the stream starts.
    Snapshot(Connection),
    /// Something happened to a connection: the event, and the connection as
    /// it is now (`None` when it is gone).
    Changed(StatusEvent, Option<Connection>),
    /// Updates were missed: list the connections again.
    Resync,
}

/// The organisation's live status: one [`StatusUpdate::Snapshot`] per
/// connection, then a [`StatusUpdate::Changed`] per change of one of its
/// connections. The stream checks again before each update and every
/// `CUSTARD_SESSION_RECHECK_MS` that the caller's session is active and the
/// caller still a member, and ends when either is no longer so.
pub(crate) async fn status_updates(
    state: &AppState,
    current: CurrentUser,
) -> Result<impl Stream<Item = StatusUpdate> + use<>, AppError> {
    let inner = state.inner();
    // Subscribe before the snapshot, so no change falls between them.
    let receiver = inner.router.subscribe();
    let connections = inner.store.list_connections(current.org()).await?;
    let org = current.org().clone();
    let store = inner.store.clone();
    let every = inner.config.session_recheck();
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live =
        futures_util::stream::unfold((receiver, recheck), move |(mut receiver, mut recheck)| {
            let (org, store, current) = (org.clone(), store.clone(), current.clone());
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
                    let update = match received {
                        Ok(event) if event.org_id == org => {
                            // Nothing of the organisation's after a sign-out or a removal.
                            if !current.still_valid(store.as_ref()).await {
                                return None;
                            }
                            let now = store.get_connection(&org, &event.connection_id).await.ok();
                            StatusUpdate::Changed(event, now)
                        }
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => {
                            if !current.still_valid(store.as_ref()).await {
                                return None;
                            }
                            StatusUpdate::Resync
                        }
                        Err(RecvError::Closed) => return None,
                    };
                    return Some((update, (receiver, recheck)));
                }
            }
        });
    let snapshot = connections.into_iter().map(StatusUpdate::Snapshot);
    Ok(futures_util::StreamExt::chain(futures_util::stream::iter(snapshot), live))
}
