//! [`LocalHub`]: the in-process hub, holding the agent sessions of this server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use custard_core::wire::{Cancel, Discover, Frame, Message, More, Run};
use custard_core::{
    BoxFuture, CheckedSql, Dialect, ExecError, ExecErrorCode, RowBatch, RowSender, RunLimits,
    RunSummary, Schema,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{AgentRouter, HubSettings, Presence, StatusEvent, StatusKind};
use crate::store::{ConnectionId, OrgId};

/// Frames buffered per request of an agent without flow control before the
/// socket reader waits for the caller.
const REPLY_BUFFER: usize = 16;
/// `rows` frames of one request an agent with flow control may send before the
/// caller took them. The request's buffer holds them and `columns` and `done`.
pub(crate) const FLOW_WINDOW: u32 = 16;
/// The caller acknowledges taken frames in steps of this many (fewer `more` frames).
const FLOW_STEP: u32 = FLOW_WINDOW / 2;
/// Status events buffered for slow subscribers (they skip ahead when lagging).
const EVENT_BUFFER: usize = 1024;
/// Bytes of replies one agent session may have waiting for their callers. An
/// agent is the customer's process, not ours: whatever it sends, the server
/// holds at most this much of it per session; beyond, the socket reader waits
/// (and a caller too slow to make room loses its request).
pub(crate) const SESSION_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// What the server allows over a request's byte cap, counting frames as they
/// arrive (the agent counts the rows' JSON; frames add a little to that).
const BYTE_CAP_SLACK: u64 = 1024 * 1024;

/// The in-process [`AgentRouter`]: agent sessions of this server, by connection.
#[derive(Debug)]
pub struct LocalHub {
    settings: HubSettings,
    connections: Mutex<HashMap<ConnectionId, Entry>>,
    events: broadcast::Sender<StatusEvent>,
    next_session: AtomicU64,
    online: AtomicUsize,
    /// Cancelled when the server shuts down, once its HTTP requests are done:
    /// sessions finish what they still run and close, asking their agents to
    /// connect again; no new session is taken.
    draining: CancellationToken,
    /// Woken whenever a session leaves (for [`LocalHub::drained`]).
    session_gone: Notify,
}

/// The live sessions of one connection.
#[derive(Debug)]
struct Entry {
    links: Vec<Arc<AgentLink>>,
    /// Woken whenever a request finishes or a session leaves, for callers
    /// waiting for a free agent.
    freed: Arc<Notify>,
}

/// One agent's session as the hub sees it; the socket task owns the socket.
#[derive(Debug)]
pub(crate) struct AgentLink {
    pub(crate) session: u64,
    pub(crate) org_id: OrgId,
    pub(crate) connection_id: ConnectionId,
    pub(crate) agent_version: String,
    pub(crate) dialect: Dialect,
    max_concurrency: usize,
    /// [`FLOW_WINDOW`] when the agent takes `flow`/`more`; otherwise a slow caller
    /// holds up the socket (see [`AgentLink::deliver`]).
    window: Option<u32>,
    in_flight: AtomicUsize,
    next_request: AtomicU64,
    /// Frames for the socket writer.
    outbox: mpsc::Sender<Frame>,
    /// Requests waiting for replies, by request id.
    pending: Mutex<HashMap<String, mpsc::Sender<Reply>>>,
    /// [`SESSION_BUFFER_BYTES`] of room for replies not yet taken by their callers.
    buffer: Arc<Semaphore>,
    freed: Arc<Notify>,
    /// Cancelled to close the session; the reason is sent in the close frame.
    pub(crate) closing: CancellationToken,
    close_reason: Mutex<Option<String>>,
}

/// What the socket task needs to register a session.
#[derive(Debug)]
pub(crate) struct NewLink {
    pub(crate) org_id: OrgId,
    pub(crate) connection_id: ConnectionId,
    pub(crate) agent_version: String,
    pub(crate) dialect: Dialect,
    pub(crate) max_concurrency: usize,
    /// The flow window the agent was given, if it takes flow control.
    pub(crate) window: Option<u32>,
    pub(crate) outbox: mpsc::Sender<Frame>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked: every critical section
    // is a single insert, remove or read.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LocalHub {
    /// An empty hub.
    pub fn new(settings: HubSettings) -> Self {
        LocalHub {
            settings,
            connections: Mutex::new(HashMap::new()),
            events: broadcast::channel(EVENT_BUFFER).0,
            next_session: AtomicU64::new(1),
            online: AtomicUsize::new(0),
            draining: CancellationToken::new(),
            session_gone: Notify::new(),
        }
    }

    /// Starts shutting down: no new session is taken, and each closes, asking
    /// its agent to connect again (elsewhere), once its requests in flight are
    /// done. Call it once the server's HTTP requests are done; then
    /// [`LocalHub::drained`] says when the sessions are gone.
    pub fn drain(&self) {
        self.draining.cancel();
    }

    /// Resolves once no session is left (call after [`LocalHub::drain`]).
    pub async fn drained(&self) {
        loop {
            let gone = self.session_gone.notified();
            tokio::pin!(gone);
            // Registered before the check, so a session leaving in between wakes it.
            gone.as_mut().enable();
            if self.online.load(Ordering::SeqCst) == 0 {
                return;
            }
            gone.await;
        }
    }

    /// Cancelled once [`LocalHub::drain`] was called.
    pub(crate) fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// The hub's timing settings.
    pub fn settings(&self) -> HubSettings {
        self.settings
    }

    /// Adds a session that said `hello`; it takes requests at once. Refused
    /// (with the reason to close the socket with) when its connection or its
    /// organisation already has as many agent sessions as the settings allow,
    /// so one key cannot fill the server with sessions.
    pub(crate) fn register(&self, new: NewLink) -> Result<Arc<AgentLink>, String> {
        let mut connections = lock(&self.connections);
        if self.draining.is_cancelled() {
            return Err("the server is shutting down; connect again".to_owned());
        }
        let per_connection = self.settings.max_agents_per_connection;
        let here = connections.get(&new.connection_id).map_or(0, |e| e.links.len());
        if per_connection > 0 && here >= per_connection {
            return Err(format!(
                "this connection already has {here} agents connected, the most allowed \
                 (CUSTARD_MAX_AGENTS_PER_CONNECTION); stop one first"
            ));
        }
        let per_org = self.settings.max_agents_per_org;
        if per_org > 0 {
            let in_org: usize = connections
                .values()
                .flat_map(|e| &e.links)
                .filter(|l| l.org_id == new.org_id)
                .count();
            if in_org >= per_org {
                return Err(format!(
                    "this organisation already has {in_org} agents connected, the most allowed \
                     (CUSTARD_MAX_AGENTS_PER_ORG); stop one first"
                ));
            }
        }
        let entry = connections
            .entry(new.connection_id.clone())
            .or_insert_with(|| Entry { links: Vec::new(), freed: Arc::new(Notify::new()) });
        let link = Arc::new(AgentLink {
            session: self.next_session.fetch_add(1, Ordering::Relaxed),
            org_id: new.org_id,
            connection_id: new.connection_id,
            agent_version: new.agent_version,
            dialect: new.dialect,
            max_concurrency: new.max_concurrency.max(1),
            window: new.window,
            in_flight: AtomicUsize::new(0),
            next_request: AtomicU64::new(1),
            outbox: new.outbox,
            pending: Mutex::new(HashMap::new()),
            buffer: Arc::new(Semaphore::new(SESSION_BUFFER_BYTES)),
            freed: Arc::clone(&entry.freed),
            closing: CancellationToken::new(),
            close_reason: Mutex::new(None),
        });
        entry.links.push(Arc::clone(&link));
        let agents = entry.links.len();
        entry.freed.notify_waiters();
        drop(connections);
        self.online.fetch_add(1, Ordering::Relaxed);
        self.publish(&link, StatusKind::AgentConnected, agents);
        Ok(link)
    }

    /// Removes a session whose socket ended and fails its requests in flight.
    pub(crate) fn unregister(&self, link: &Arc<AgentLink>) {
        let mut connections = lock(&self.connections);
        let mut agents = 0;
        if let Some(entry) = connections.get_mut(&link.connection_id) {
            let before = entry.links.len();
            entry.links.retain(|l| !Arc::ptr_eq(l, link));
            if entry.links.len() < before {
                self.online.fetch_sub(1, Ordering::Relaxed);
            }
            agents = entry.links.len();
            entry.freed.notify_waiters();
            if entry.links.is_empty() {
                connections.remove(&link.connection_id);
            }
        }
        drop(connections);
        self.session_gone.notify_waiters();
        // Closing first: a request that registers after the clear below sees it
        // (`start` checks after inserting) instead of waiting for its deadline.
        link.closing.cancel();
        // Dropping the senders ends every waiting caller with `agent_disconnected`.
        lock(&link.pending).clear();
        self.publish(link, StatusKind::AgentDisconnected, agents);
    }

    /// Tells browsers a new schema was stored for the connection.
    pub(crate) fn schema_refreshed(&self, link: &AgentLink) {
        let agents = self.presence(&link.connection_id).agents;
        self.publish(link, StatusKind::SchemaRefreshed, agents);
    }

    fn publish(&self, link: &AgentLink, kind: StatusKind, agents: usize) {
        // No subscribers is fine.
        let _ = self.events.send(StatusEvent {
            org_id: link.org_id.clone(),
            connection_id: link.connection_id.clone(),
            kind,
            agents,
            agent_version: Some(link.agent_version.clone()),
            at: Utc::now(),
        });
    }

    /// Takes a request slot on the least busy agent of `connection`, waiting up
    /// to `wait` for one to free up.
    async fn acquire(&self, connection: &ConnectionId, wait: Duration) -> Result<Slot, ExecError> {
        let deadline = Instant::now() + wait;
        loop {
            let freed = {
                let connections = lock(&self.connections);
                let Some(entry) = connections.get(connection) else {
                    return Err(offline());
                };
                let mut live = entry.links.iter().filter(|l| !l.closing.is_cancelled()).peekable();
                if live.peek().is_none() {
                    return Err(offline());
                }
                // The least busy of the agents with room; none with room means wait.
                if let Some(best) = live
                    .filter(|l| l.has_room())
                    .min_by_key(|l| l.in_flight.load(Ordering::Relaxed))
                {
                    best.in_flight.fetch_add(1, Ordering::Relaxed);
                    return Ok(Slot { link: Arc::clone(best) });
                }
                Arc::clone(&entry.freed)
            };
            let notified = freed.notified();
            tokio::pin!(notified);
            // Register before re-checking, so a wake-up in between is not lost;
            // the re-check uses the same test as the pick above, so it cannot spin.
            notified.as_mut().enable();
            if lock(&self.connections)
                .get(connection)
                .is_none_or(|e| e.links.iter().any(|l| l.has_room()))
            {
                continue;
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return Err(ExecError::new(
                    ExecErrorCode::AgentBusy,
                    "every agent of this connection is busy with other queries; try again shortly",
                ));
            }
        }
    }

    /// Sends a request on the slot's agent and returns the stream of its replies.
    async fn start(&self, slot: Slot, message: Message) -> Result<InFlight, ExecError> {
        let link = slot.link.clone();
        let id = format!("r{}", link.next_request.fetch_add(1, Ordering::Relaxed));
        // With flow control the agent never sends more than this holds.
        let buffer = link.window.map_or(REPLY_BUFFER, |w| w as usize + 2);
        let (tx, rx) = mpsc::channel(buffer);
        lock(&link.pending).insert(id.clone(), tx);
        let request = InFlight { slot, id: id.clone(), replies: rx, finished: false, taken: 0 };
        let sent = tokio::time::timeout(
            self.settings.handshake_timeout,
            link.outbox.send(Frame::new(id, message)),
        );
        if link.closing.is_cancelled() || !matches!(sent.await, Ok(Ok(()))) {
            return Err(disconnected());
        }
        Ok(request)
    }
}

impl AgentLink {
    /// Hands a reply to the request waiting for it; a caller gone loses its request.
    ///
    /// With flow control the agent never sends more than the caller's buffer
    /// holds, so this never waits: a slow caller pauses only its own query,
    /// and the socket keeps being read for the other requests. Without it
    /// (an older agent) this waits while the caller's buffer is full, up to
    /// `patience`, holding up the whole socket (a slow reader slows its agent
    /// instead of growing memory); a caller too slow loses its request.
    ///
    /// Every reply holds its size (`bytes`, as received) of the session's
    /// buffer until its caller takes it, so what one agent can make the
    /// server hold is bounded whatever it sends.
    pub(crate) async fn deliver(&self, frame: Frame, bytes: usize, patience: Duration) {
        let Some(sender) = lock(&self.pending).get(&frame.id).cloned() else {
            // A reply to a request that ended (cancelled, timed out): drop it.
            return;
        };
        let room = u32::try_from(bytes.clamp(1, SESSION_BUFFER_BYTES)).unwrap_or(u32::MAX);
        let permit =
            tokio::time::timeout(patience, Arc::clone(&self.buffer).acquire_many_owned(room)).await;
        let Ok(Ok(permit)) = permit else {
            tracing::warn!(
                connection = %self.connection_id,
                session = self.session,
                "the agent's replies are not being taken; dropping the request"
            );
            lock(&self.pending).remove(&frame.id);
            let _ = self.outbox.try_send(cancel_frame(&frame.id));
            return;
        };
        let reply = Reply { message: frame.message, bytes, _room: permit };
        let delivered = if self.window.is_some() {
            let sent = sender.try_send(reply);
            if let Err(mpsc::error::TrySendError::Full(_)) = &sent {
                tracing::warn!(
                    connection = %self.connection_id,
                    session = self.session,
                    "the agent sent more rows than its flow window; dropping the request"
                );
            }
            sent.is_ok()
        } else {
            matches!(tokio::time::timeout(patience, sender.send(reply)).await, Ok(Ok(())))
        };
        if !delivered {
            lock(&self.pending).remove(&frame.id);
            let _ = self.outbox.try_send(cancel_frame(&frame.id));
        }
    }

    /// Closes the session: the socket task sends a close frame with `reason`.
    pub(crate) fn close(&self, reason: &str) {
        lock(&self.close_reason).get_or_insert_with(|| reason.to_owned());
        self.closing.cancel();
    }

    /// The reason given to [`AgentLink::close`].
    pub(crate) fn close_reason(&self) -> Option<String> {
        lock(&self.close_reason).clone()
    }

    /// Whether the session takes another request now.
    fn has_room(&self) -> bool {
        !self.closing.is_cancelled()
            && self.in_flight.load(Ordering::Relaxed) < self.max_concurrency
    }

    /// Requests in flight on this session.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

fn cancel_frame(target: &str) -> Frame {
    Frame::new(format!("{target}-cancel"), Message::Cancel(Cancel { target: target.to_owned() }))
}

pub(super) fn offline() -> ExecError {
    ExecError::new(
        ExecErrorCode::AgentOffline,
        "no agent is connected for this connection; start its agent (the connection's page shows how to run it)",
    )
}

fn disconnected() -> ExecError {
    ExecError::new(
        ExecErrorCode::AgentDisconnected,
        "the agent disconnected before it answered; try again",
    )
}

/// A reply from an agent on its way to its caller, holding its room in the
/// session's buffer until the caller is done with it.
#[derive(Debug)]
struct Reply {
    message: Message,
    /// Its size as received.
    bytes: usize,
    _room: OwnedSemaphorePermit,
}

/// A request slot on one agent; freed on drop.
#[derive(Debug)]
struct Slot {
    link: Arc<AgentLink>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.link.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.link.freed.notify_waiters();
    }
}

/// A request sent to an agent; dropping it before the reply ends cancels it there.
#[derive(Debug)]
struct InFlight {
    slot: Slot,
    id: String,
    replies: mpsc::Receiver<Reply>,
    finished: bool,
    /// `rows` frames taken and not yet acknowledged to a flow-controlled agent.
    taken: u32,
}

impl InFlight {
    /// The next reply, or `agent_disconnected` when the session ended. Taking
    /// `rows` lets a flow-controlled agent send more of them.
    async fn next(&mut self) -> Result<Reply, ExecError> {
        let reply = self.replies.recv().await.ok_or_else(disconnected)?;
        if matches!(reply.message, Message::Rows(_)) && self.slot.link.window.is_some() {
            self.taken += 1;
            if self.taken >= FLOW_STEP {
                let more = More { target: self.id.clone(), frames: self.taken };
                self.taken = 0;
                let frame = Frame::new(format!("{}-more", self.id), Message::More(more));
                // The socket's writer may be slow; waiting here is bounded by the caller's deadline.
                let _ = self.slot.link.outbox.send(frame).await;
            }
        }
        Ok(reply)
    }

    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let link = &self.slot.link;
        lock(&link.pending).remove(&self.id);
        if !self.finished {
            let _ = link.outbox.try_send(cancel_frame(&self.id));
        }
    }
}

impl AgentRouter for LocalHub {
    fn run<'a>(
        &'a self,
        connection: &'a ConnectionId,
        sql: &'a CheckedSql,
        limits: &'a RunLimits,
        rows: RowSender,
    ) -> BoxFuture<'a, Result<RunSummary, ExecError>> {
        Box::pin(async move {
            // The agent enforces the timeout itself; the grace covers the trip back.
            let patience = limits.timeout + self.settings.grace.min(limits.timeout);
            let deadline = Instant::now() + patience;
            let slot = self.acquire(connection, limits.timeout).await?;
            if slot.link.dialect != sql.dialect() {
                return Err(ExecError::new(
                    ExecErrorCode::Internal,
                    format!(
                        "a query checked for {} cannot run on a {} agent",
                        sql.dialect(),
                        slot.link.dialect
                    ),
                ));
            }
            let max_rows = sql.row_limit().map_or(limits.max_rows, |l| l.min(limits.max_rows));
            // The plain query and its cap: the agent's guard wraps it once.
            let run = Run {
                sql: sql.query().to_owned(),
                // 0 leaves the cap to the agent's own configuration.
                max_rows: if max_rows == u64::MAX { 0 } else { max_rows },
                timeout_ms: u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
            };
            let mut request = self.start(slot, Message::Run(run)).await?;
            // The server's own caps, whatever the agent says or sends.
            let started = Instant::now();
            let byte_cap = limits
                .max_bytes
                .saturating_add(limits.max_bytes / 4)
                .saturating_add(BYTE_CAP_SLACK);
            let (mut row_count, mut bytes) = (0u64, 0u64);
            let capped = |row_count: u64, bytes: u64| RunSummary {
                row_count,
                truncated: true,
                bytes,
                elapsed: started.elapsed(),
            };
            let timed_out = || {
                ExecError::new(
                    ExecErrorCode::Timeout,
                    format!(
                        "the agent did not finish the query within {} s",
                        patience.as_secs_f64()
                    ),
                )
            };
            loop {
                let reply = tokio::time::timeout_at(deadline.into(), request.next())
                    .await
                    .map_err(|_| timed_out())??;
                let batch = match reply.message {
                    Message::Columns(c) => {
                        RowBatch::Columns(c.columns.into_iter().map(Into::into).collect())
                    }
                    Message::Rows(mut r) => {
                        let size = u64::try_from(reply.bytes).unwrap_or(u64::MAX);
                        if bytes.saturating_add(size) > byte_cap {
                            // Dropping the request cancels the query on the agent.
                            return Ok(capped(row_count, bytes));
                        }
                        bytes += size;
                        let room = max_rows.saturating_sub(row_count);
                        let n = u64::try_from(r.rows.len()).unwrap_or(u64::MAX);
                        if n > room {
                            r.rows.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                            let kept = RowBatch::Rows(r.rows);
                            let _ = tokio::time::timeout_at(deadline.into(), rows.send(kept)).await;
                            return Ok(capped(max_rows, bytes));
                        }
                        row_count += n;
                        RowBatch::Rows(r.rows)
                    }
                    Message::Done(done) => {
                        request.finish();
                        // The counts are the server's; the agent only says whether it cut.
                        return Ok(RunSummary {
                            row_count,
                            truncated: done.truncated,
                            bytes,
                            elapsed: started.elapsed(),
                        });
                    }
                    Message::Error(report) => {
                        request.finish();
                        return Err(ExecError::from(report));
                    }
                    other => {
                        return Err(ExecError::new(
                            ExecErrorCode::Internal,
                            format!("the agent answered `run` with `{}`", other.type_name()),
                        ));
                    }
                };
                // A caller that stopped reading cancels the query (InFlight's drop).
                if tokio::time::timeout_at(deadline.into(), rows.send(batch))
                    .await
                    .map_err(|_| timed_out())?
                    .is_err()
                {
                    return Err(ExecError::new(
                        ExecErrorCode::ReceiverClosed,
                        "the receiver of the rows went away",
                    ));
                }
            }
        })
    }

    fn discover<'a>(
        &'a self,
        connection: &'a ConnectionId,
        sample_values: u32,
    ) -> BoxFuture<'a, Result<Schema, ExecError>> {
        Box::pin(async move {
            let wait = self.settings.discover_timeout;
            let slot = self.acquire(connection, wait).await?;
            discover_on(self.start(slot, Message::Discover(Discover { sample_values })), wait).await
        })
    }

    fn presence(&self, connection: &ConnectionId) -> Presence {
        let connections = lock(&self.connections);
        let Some(entry) = connections.get(connection) else {
            return Presence::default();
        };
        // Sessions told to close (key rotated, connection deleted) no longer count.
        let live: Vec<&Arc<AgentLink>> =
            entry.links.iter().filter(|l| !l.closing.is_cancelled()).collect();
        Presence {
            agents: live.len(),
            agent_version: live.last().map(|l| l.agent_version.clone()),
            in_flight: live.iter().map(|l| l.in_flight()).sum(),
        }
    }

    fn disconnect(&self, connection: &ConnectionId, reason: &str) {
        let links: Vec<Arc<AgentLink>> =
            lock(&self.connections).get(connection).map(|e| e.links.clone()).unwrap_or_default();
        for link in links {
            link.close(reason);
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.events.subscribe()
    }

    fn agents_online(&self) -> usize {
        self.online.load(Ordering::Relaxed)
    }
}

impl LocalHub {
    /// Whether a session of `connection` takes another request now.
    pub(crate) fn has_room(&self, connection: &ConnectionId) -> bool {
        lock(&self.connections)
            .get(connection)
            .is_some_and(|e| e.links.iter().any(|l| l.has_room()))
    }

    /// Every connection with a live session here, with its organisation and presence.
    pub(crate) fn held(&self) -> Vec<(ConnectionId, OrgId, Presence)> {
        let ids: Vec<(ConnectionId, OrgId)> = lock(&self.connections)
            .iter()
            .filter_map(|(id, entry)| Some((id.clone(), entry.links.first()?.org_id.clone())))
            .collect();
        ids.into_iter()
            .map(|(id, org)| {
                let presence = self.presence(&id);
                (id, org, presence)
            })
            .filter(|(_, _, presence)| presence.agents > 0)
            .collect()
    }

    /// Asks one specific session for its schema (the socket task does this
    /// right after `hello` when the fingerprint changed).
    pub(crate) async fn discover_from(
        &self,
        link: &Arc<AgentLink>,
        sample_values: u32,
    ) -> Result<Schema, ExecError> {
        link.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = Slot { link: Arc::clone(link) };
        let wait = self.settings.discover_timeout;
        discover_on(self.start(slot, Message::Discover(Discover { sample_values })), wait).await
    }
}

async fn discover_on(
    start: impl std::future::Future<Output = Result<InFlight, ExecError>>,
    wait: Duration,
) -> Result<Schema, ExecError> {
    let mut request = start.await?;
    let reply = tokio::time::timeout(wait, request.next()).await.map_err(|_| {
        ExecError::new(ExecErrorCode::Timeout, "the agent did not report the schema in time")
    })??;
    request.finish();
    match reply.message {
        Message::Schema(report) => report.into_schema().map_err(|e| {
            ExecError::new(ExecErrorCode::Internal, format!("the agent's schema is invalid: {e}"))
        }),
        Message::Error(report) => Err(ExecError::from(report)),
        other => Err(ExecError::new(
            ExecErrorCode::Internal,
            format!("the agent answered `discover` with `{}`", other.type_name()),
        )),
    }
}
