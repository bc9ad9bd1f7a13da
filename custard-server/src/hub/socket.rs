//! `GET /api/v1/connections/ws/{connection_id}`: the agent's WebSocket.
//!
//! The API key in `Authorization: Bearer` must be the current key of exactly
//! this connection; anything else is refused before the upgrade with a 401 and
//! a clear message, and logged (without the key).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{
    CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade, close_code,
};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use custard_core::wire::{
    ErrorReport, Flow, Frame, MAX_FRAME_BYTES, Message, Origin, WireErrorCode, WireLimits,
    schema_to_json,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::local::{AgentLink, FLOW_WINDOW, LocalHub, NewLink};
use crate::auth;
use crate::error::{AppError, ErrorCode};
use crate::store::{Connection, ConnectionId, Store, StoreError};

/// Frames queued for one agent's socket writer.
const OUTBOX: usize = 64;
/// Frequent values per text column asked of the agent on discovery.
const SAMPLE_VALUES: u32 = 5;
/// How often at most a connected agent is written down as seen: every frame
/// from it (a pong included) counts, but one store write a minute is enough.
const SEEN_WRITE_EVERY: Duration = Duration::from_secs(60);
/// How long the last "seen" write of a session may hold up its leaving.
const LAST_SEEN_WRITE_LIMIT: Duration = Duration::from_secs(2);

/// Authenticates the agent, then upgrades and serves its session.
pub(crate) async fn agent_socket(
    store: Arc<dyn Store>,
    hub: Arc<LocalHub>,
    connection_id: &str,
    ip: IpAddr,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let (connection, key_hash) = match authenticate(store.as_ref(), connection_id, headers).await {
        Ok(c) => c,
        Err(refusal) => {
            tracing::warn!(connection = %connection_id, %ip, reason = %refusal.message, "agent refused");
            return refusal.into_response();
        }
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return AppError::new(
                ErrorCode::Validation,
                format!("this endpoint speaks WebSocket only: {rejection}"),
            )
            .into_response();
        }
    };
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // Thousands of mostly idle agents: a small read buffer (a big result
        // is read in more, smaller reads) and none for writing (the server
        // writes small frames, each at once), not tungstenite's 128 KiB each.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            serve(&store, &hub, connection, &key_hash, socket).await;
        })
}

/// How long a shutting-down server lets a session finish its requests
/// (after its HTTP requests are done, so normally they are done too).
const DRAIN_LIMIT: Duration = Duration::from_secs(8);
/// What a session closed by a shutting-down server is told.
const SHUTTING_DOWN: &str = "the server is shutting down; connect again";
/// How often a draining session checks whether its requests are done.
const DRAIN_CHECK: Duration = Duration::from_millis(20);

/// The read buffer of an agent's socket: 1 KiB keeps 10,000 idle agents
/// under 180 MiB, and a 1,000,000-row export reads as fast as with 4 KiB
/// (`docs/performance.md`).
const READ_BUFFER_BYTES: usize = 1024;

/// The connection whose current key is the bearer token, if it is this one,
/// with the key's hash.
async fn authenticate(
    store: &dyn Store,
    connection_id: &str,
    headers: &HeaderMap,
) -> Result<(Connection, String), AppError> {
    let refuse = |message: &str| AppError::new(ErrorCode::Unauthorized, message);
    let key = auth::bearer_token(headers).ok_or_else(|| {
        refuse("send the connection's API key as `Authorization: Bearer custard_...`")
    })?;
    if !auth::is_api_key(key) {
        return Err(refuse("the API key is malformed; copy it again from the connection's setup"));
    }
    let hash = auth::hash_secret(key);
    let connection = match store.connection_by_key_hash(&hash).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => {
            return Err(refuse("the API key is not valid (it may have been rotated or revoked)"));
        }
        Err(e) => return Err(AppError::from(e)),
    };
    if connection.id.as_str() != connection_id {
        return Err(refuse("the API key belongs to another connection"));
    }
    Ok((connection, hash))
}

/// Whether `key_hash` is still the connection's key (it may have been rotated
/// or the connection deleted since the upgrade).
async fn key_still_valid(store: &dyn Store, connection: &Connection, key_hash: &str) -> bool {
    matches!(store.connection_by_key_hash(key_hash).await, Ok(c) if c.id == connection.id)
}

/// Whether the store says `key_hash` is no longer the connection's key (a
/// store that does not answer says nothing: the session stays).
async fn key_revoked(store: &dyn Store, connection: &Connection, key_hash: &str) -> bool {
    match store.connection_by_key_hash(key_hash).await {
        Ok(c) => c.id != connection.id,
        Err(StoreError::NotFound) => true,
        Err(_) => false,
    }
}

/// How a session ended, for the log and the close frame.
struct End {
    code: u16,
    reason: String,
}

async fn serve(
    store: &Arc<dyn Store>,
    hub: &Arc<LocalHub>,
    connection: Connection,
    key_hash: &str,
    socket: WebSocket,
) {
    let settings = hub.settings();
    let store = Arc::clone(store);
    let (mut sink, mut stream) = socket.split();

    // 1. `hello`, within the handshake timeout.
    let hello = tokio::time::timeout(settings.handshake_timeout, async {
        while let Some(Ok(message)) = stream.next().await {
            if let WsMessage::Text(text) = message {
                return Some(Frame::decode(text.as_str()));
            }
        }
        None
    })
    .await;
    let refusal = |code: WireErrorCode, message: String| {
        let text =
            Frame::new("hello", Message::Error(ErrorReport::new(code, message.clone()))).encode();
        (text, message)
    };
    let (hello_id, hello) = match hello {
        Ok(Some(Ok(Frame { id, message: Message::Hello(hello) }))) => (id, hello),
        Ok(Some(Ok(frame))) => {
            let (text, reason) = refusal(
                WireErrorCode::UnexpectedMessage,
                format!("the first frame must be `hello`, not `{}`", frame.message.type_name()),
            );
            refuse(&mut sink, text, reason).await;
            return;
        }
        Ok(Some(Err(e))) => {
            let (text, reason) = refusal(e.error_code(), e.to_string());
            refuse(&mut sink, text, reason).await;
            return;
        }
        Ok(None) | Err(_) => {
            tracing::info!(connection = %connection.id, "agent left before saying hello");
            return;
        }
    };
    if hello.dialect() != Some(connection.dialect) {
        let (text, reason) = refusal(
            WireErrorCode::DialectMismatch,
            format!(
                "this connection is for a {} database but the agent serves {}",
                connection.dialect, hello.dialect
            ),
        );
        refuse(&mut sink, text, reason).await;
        return;
    }

    // 2. Welcome (and flow control for an agent that takes it), register, and
    // note the agent in the store. The welcome is queued before the session is
    // registered, so no request can reach the agent ahead of it; if the session
    // is refused below, the queue is dropped unsent.
    let (outbox, mut outgoing) = mpsc::channel::<Frame>(OUTBOX);
    let max_concurrency = usize::try_from(hello.max_concurrency).unwrap_or(1).clamp(1, 1024);
    let window = hello.capabilities.iter().any(|c| c == "flow").then_some(FLOW_WINDOW);
    let welcome = custard_core::wire::Welcome {
        connection_id: connection.id.to_string(),
        heartbeat_interval_ms: u64::try_from(settings.heartbeat.as_millis()).unwrap_or(u64::MAX),
        limits: WireLimits {
            max_rows: 0,
            max_bytes: 0,
            timeout_ms: 0,
            max_concurrency: hello.max_concurrency,
        },
    };
    let _ = outbox.try_send(Frame::new(hello_id, Message::Welcome(welcome)));
    if let Some(window) = window {
        let _ = outbox.try_send(Frame::new("flow", Message::Flow(Flow { window })));
    }
    let link = hub.register(NewLink {
        org_id: connection.org_id.clone(),
        connection_id: connection.id.clone(),
        agent_version: hello.agent_version.clone(),
        dialect: connection.dialect,
        max_concurrency,
        window,
        outbox: outbox.clone(),
    });
    let link = match link {
        Ok(link) => link,
        Err(_) if hub.draining().is_cancelled() => {
            // Shutting down: this agent belongs on another server.
            let frame = CloseFrame { code: close_code::RESTART, reason: SHUTTING_DOWN.into() };
            let _ = sink.send(WsMessage::Close(Some(frame))).await;
            return;
        }
        Err(reason) => {
            tracing::warn!(connection = %connection.id, %reason, "agent refused");
            let (text, reason) = refusal(WireErrorCode::TooManyAgents, reason);
            refuse(&mut sink, text, reason).await;
            return;
        }
    };
    // The key was checked before the upgrade; a rotation or deletion since then
    // ran its disconnect before this session was registered, so check again now
    // that it is: from here on, `disconnect` reaches it.
    if !key_still_valid(store.as_ref(), &connection, key_hash).await {
        hub.unregister(&link);
        let (text, reason) = refusal(
            WireErrorCode::Unauthorized,
            "the API key was rotated or revoked while connecting".to_owned(),
        );
        refuse(&mut sink, text, reason).await;
        return;
    }
    tracing::info!(
        connection = %connection.id,
        session = link.session,
        agent_version = %hello.agent_version,
        flow_control = window.is_some(),
        "agent connected"
    );

    // The writer owns the sink; it ends with a close frame when told to.
    let (close_tx, close_rx) = oneshot::channel::<End>();
    let writer = tokio::spawn(async move {
        tokio::pin!(close_rx);
        loop {
            tokio::select! {
                frame = outgoing.recv() => {
                    let Some(frame) = frame else { break };
                    if sink.send(WsMessage::text(frame.encode())).await.is_err() {
                        return;
                    }
                }
                end = &mut close_rx => {
                    if let Ok(end) = end {
                        let frame = CloseFrame { code: end.code, reason: end.reason.into() };
                        let _ = sink.send(WsMessage::Close(Some(frame))).await;
                    }
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });

    record_seen(store.as_ref(), &connection, &hello.agent_version).await;
    let mut seen = SeenWrites::new(Instant::now(), SEEN_WRITE_EVERY);
    refresh_schema_if_changed(&store, hub, &link, hello.schema_fingerprint.as_deref());

    // 3. Serve until the socket ends, the agent goes silent or the hub closes it.
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.tick().await;
    let mut last_heard = Instant::now();
    // Set when the server shuts down: the session ends once its requests
    // are done, or at this deadline.
    let mut drain_until: Option<Instant> = None;
    let mut drain_check = tokio::time::interval(DRAIN_CHECK);
    // Idle until the drain, which resets it: no burst of missed ticks then.
    drain_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = loop {
        tokio::select! {
            () = link.closing.cancelled() => {
                let reason = link.close_reason().unwrap_or_else(|| "closed by the server".into());
                break End { code: close_code::POLICY, reason };
            }
            () = hub.draining().cancelled(), if drain_until.is_none() => {
                drain_until = Some(Instant::now() + DRAIN_LIMIT);
                drain_check.reset_immediately();
            }
            _ = drain_check.tick(), if drain_until.is_some() => {
                if link.in_flight() == 0 || drain_until.is_some_and(|until| Instant::now() >= until) {
                    // 1012, "service restart": the agent connects again at
                    // once, to whichever server now answers at this address.
                    break End { code: close_code::RESTART, reason: SHUTTING_DOWN.to_owned() };
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > settings.heartbeat * 3 {
                    break End { code: close_code::AWAY, reason: "the agent went silent".into() };
                }
                let _ = outbox.try_send(Frame::new("ping", Message::Ping));
            }
            message = stream.next() => {
                last_heard = Instant::now();
                if seen.due(last_heard) {
                    // In the background: the socket keeps being read meanwhile.
                    let (store, connection) = (Arc::clone(&store), connection.clone());
                    let (version, link, key_hash) =
                        (hello.agent_version.clone(), Arc::clone(&link), key_hash.to_owned());
                    tokio::spawn(async move {
                        record_seen(store.as_ref(), &connection, &version).await;
                        // A rotation or deletion closes the session where it
                        // happens and, through NATS, on every replica; should
                        // that message be lost, this closes it within a minute.
                        if key_revoked(store.as_ref(), &connection, &key_hash).await {
                            link.close("the API key was rotated or revoked");
                        }
                    });
                }
                let text = match message {
                    Some(Ok(WsMessage::Text(text))) => text,
                    Some(Ok(WsMessage::Close(_))) | None => {
                        break End { code: close_code::NORMAL, reason: "the agent closed the connection".into() };
                    }
                    Some(Ok(WsMessage::Binary(_))) => {
                        let report = ErrorReport::new(WireErrorCode::Malformed, "frames are JSON text, not binary");
                        let _ = outbox.try_send(Frame::new("", Message::Error(report)));
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break End { code: close_code::ERROR, reason: format!("socket error: {e}") },
                };
                let frame = match Frame::decode(text.as_str()) {
                    Ok(frame) => frame,
                    Err(e) => {
                        let id = e.id().unwrap_or_default().to_owned();
                        let _ = outbox.try_send(Frame::new(id, Message::Error(ErrorReport::from(&e))));
                        continue;
                    }
                };
                match frame.message {
                    Message::Pong => {}
                    Message::Hello(_) => {
                        let report = ErrorReport::new(WireErrorCode::UnexpectedMessage, "`hello` was already received");
                        let _ = outbox.try_send(frame.reply(Message::Error(report)));
                    }
                    ref message if message.origin() == Origin::Server => {
                        let report = ErrorReport::new(
                            WireErrorCode::UnexpectedMessage,
                            format!("the server does not accept `{}` messages", message.type_name()),
                        );
                        let _ = outbox.try_send(frame.reply(Message::Error(report)));
                    }
                    _ => link.deliver(frame, text.len(), settings.heartbeat).await,
                }
            }
        }
    };
    // The agent is told first (it may have somewhere to go at once); the
    // session leaves the hub after its last-seen write, so the status event
    // of its leaving reads that time from the store.
    let reason = end.reason.clone();
    // No request is routed to a session that is closing.
    link.closing.cancel();
    let _ = close_tx.send(end);
    let last_write = record_seen(store.as_ref(), &connection, &hello.agent_version);
    if tokio::time::timeout(LAST_SEEN_WRITE_LIMIT, last_write).await.is_err() {
        tracing::warn!(connection = %connection.id, "recording when the agent was last seen timed out");
    }
    hub.unregister(&link);
    tracing::info!(
        connection = %connection.id,
        session = link.session,
        %reason,
        "agent disconnected"
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// Writes down that an agent of `version` is connected to `connection` now
/// (its `last_seen_at`); a failure is logged, not fatal to the session.
async fn record_seen(store: &dyn Store, connection: &Connection, version: &str) {
    match store.record_agent_seen(&connection.org_id, &connection.id, version.to_owned()).await {
        Ok(()) => {}
        // Deleted meanwhile: its sessions are being closed.
        Err(StoreError::NotFound) => {}
        Err(e) => {
            tracing::warn!(connection = %connection.id, "could not record the agent as seen: {e}")
        }
    }
}

/// When a session's agent was last written down as seen, so frames arriving
/// all the time make one store write per interval, not one each.
#[derive(Debug)]
struct SeenWrites {
    last: Instant,
    every: Duration,
}

impl SeenWrites {
    /// Written down at `now` (the session's start), next after `every`.
    fn new(now: Instant, every: Duration) -> Self {
        SeenWrites { last: now, every }
    }

    /// Whether a frame heard at `now` is to be written down; when it is, the
    /// interval starts again from `now`.
    fn due(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last) < self.every {
            return false;
        }
        self.last = now;
        true
    }
}

async fn refuse<S>(sink: &mut S, error_frame: String, reason: String)
where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    tracing::warn!(%reason, "agent refused after the upgrade");
    let _ = sink.send(WsMessage::text(error_frame)).await;
    let reason: String = reason.chars().take(120).collect();
    let frame = CloseFrame { code: close_code::POLICY, reason: reason.into() };
    let _ = sink.send(WsMessage::Close(Some(frame))).await;
}

/// Fetches and stores the schema when the agent's fingerprint differs from the stored one.
fn refresh_schema_if_changed(
    store: &Arc<dyn Store>,
    hub: &Arc<LocalHub>,
    link: &Arc<AgentLink>,
    reported: Option<&str>,
) {
    let (store, hub, link) = (Arc::clone(store), Arc::clone(hub), Arc::clone(link));
    let reported = reported.map(str::to_owned);
    tokio::spawn(async move {
        let stored = match store.get_schema(&link.org_id, &link.connection_id).await {
            Ok(s) => Some(s.fingerprint),
            Err(StoreError::NotFound) => None,
            Err(e) => {
                tracing::warn!(connection = %link.connection_id, "could not read the stored schema: {e}");
                None
            }
        };
        if reported.is_some() && stored == reported {
            return;
        }
        if let Err(e) = refresh_from(store.as_ref(), &hub, &link).await {
            tracing::warn!(connection = %link.connection_id, code = e.code.as_str(), "schema refresh failed: {}", e.message);
        }
    });
}

/// Asks this session for the schema and stores it.
async fn refresh_from(
    store: &dyn Store,
    hub: &LocalHub,
    link: &Arc<AgentLink>,
) -> Result<(), custard_core::ExecError> {
    let schema = hub.discover_from(link, SAMPLE_VALUES).await?;
    save_schema(store, &link.connection_id, link, &schema).await?;
    hub.schema_refreshed(link);
    Ok(())
}

async fn save_schema(
    store: &dyn Store,
    connection: &ConnectionId,
    link: &AgentLink,
    schema: &custard_core::Schema,
) -> Result<(), custard_core::ExecError> {
    store
        .save_schema(&link.org_id, connection, schema.fingerprint(), schema_to_json(schema))
        .await
        .map(drop)
        .map_err(|e| {
            custard_core::ExecError::new(
                custard_core::ExecErrorCode::Internal,
                format!("storing the schema: {e}"),
            )
        })?;
    tracing::info!(connection = %connection, tables = schema.tables.len(), "schema stored");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames all the time make one "seen" write per interval.
    #[test]
    fn seen_writes_are_throttled_to_one_per_interval() {
        let start = Instant::now();
        let every = Duration::from_secs(60);
        let mut seen = SeenWrites::new(start, every);
        let at = |secs| start + Duration::from_secs(secs);
        let written: Vec<u64> = [1, 30, 59, 60, 61, 90, 119, 120, 125, 300]
            .into_iter()
            .filter(|&s| seen.due(at(s)))
            .collect();
        assert_eq!(written, [60, 120, 300]);
        // A clock that seems to go back (another task's `now`) writes nothing.
        assert!(!seen.due(start));
    }
}
