//! [`NatsRouter`]: the agents of every server replica, reached through NATS.
//!
//! Each replica keeps the WebSockets of the agents connected to it in its own
//! [`LocalHub`]; this router puts the replicas together:
//!
//! - while a replica holds a session of a connection, it is subscribed to the
//!   connection's subject (`custard.agents.<id>`) in the queue group
//!   `holders`, so NATS hands each request to one of the replicas holding it;
//!   with none, NATS answers "no responders" at once and the caller gets
//!   `agent_offline` (no waiting for a timeout);
//! - a question answered where its agent is connected skips NATS; otherwise
//!   the request and its streamed reply go through NATS ([`relay`]), with
//!   the agent protocol's flow control, cancel and deadlines, and with
//!   heartbeats both ways so a replica dying mid-query ends its questions
//!   with `agent_disconnected`;
//! - each replica announces its sessions (`custard.presence`, every
//!   [`PRESENCE_EVERY`], and `custard.events` on each change), so presence
//!   and the live status streams cover every replica ([`presence`]);
//! - closing a connection's sessions (key rotated, connection deleted) is
//!   published (`custard.disconnect`) and done wherever they are.

mod presence;
mod relay;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::{Client, ServerAddr, Subject, Subscriber};
use chrono::Utc;
use custard_core::{
    BoxFuture, CheckedSql, ExecError, ExecErrorCode, RowSender, RunLimits, RunSummary, Schema,
};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use self::presence::{Announcement, Change, ClusterPresence, Disconnect, Held, Snapshot};
use self::relay::Link;
use super::{AgentRouter, LocalHub, Presence, StatusEvent, StatusKind};
use crate::store::{ConnectionId, OrgId};

/// How often each replica announces all its sessions.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(2);
/// How long an announced session counts without being announced again.
const PRESENCE_TTL: Duration = Duration::from_secs(7);
/// Connections per presence message.
const SNAPSHOT_PART: usize = 500;
/// The queue group of the replicas holding a connection's agents.
const HOLDERS: &str = "holders";
/// Status events buffered for slow subscribers.
const EVENT_BUFFER: usize = 1024;
/// Requests of other replicas one replica serves at once.
const MOST_SERVED: usize = 1024;
/// How long a replica keeps trying to reach NATS when it starts.
const CONNECT_FOR: Duration = Duration::from_secs(30);

/// How to reach NATS, and how this replica calls itself there.
#[derive(Clone)]
pub struct NatsSettings {
    /// One or more `nats://` (or `tls://`) URLs, comma-separated; user and
    /// password or a token may be in them.
    pub url: String,
    /// A NATS credentials file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// A PEM file of root certificates to trust for TLS.
    pub root_certificates: Option<PathBuf>,
    /// This replica's name (logs, metrics).
    pub replica: String,
    /// How often the two replicas of a relayed request tell each other they
    /// are still there; three missed mean gone.
    pub heartbeat: Duration,
    /// Subjects start with this (`custard`): deployments sharing one NATS
    /// account keep apart by it.
    pub subject_prefix: String,
    /// The longest a query relayed to this replica may run, whatever the
    /// asking replica says.
    pub max_query_timeout: Duration,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &redact(&self.url))
            .field("credentials", &self.credentials)
            .field("root_certificates", &self.root_certificates)
            .field("replica", &self.replica)
            .field("heartbeat", &self.heartbeat)
            .field("subject_prefix", &self.subject_prefix)
            .field("max_query_timeout", &self.max_query_timeout)
            .finish()
    }
}

/// `url` without user, password or token (with or without a scheme:
/// `user:password@host:4222` is a NATS URL too).
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            match one.rfind('@') {
                Some(at) => {
                    let scheme = one.find("://").filter(|&s| s < at).map_or("", |s| &one[..s + 3]);
                    format!("{scheme}***@{}", &one[at + 1..])
                }
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The agents of every replica: this replica's through its [`LocalHub`], the
/// others' through NATS.
#[derive(Debug)]
pub struct NatsRouter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    local: Arc<LocalHub>,
    link: Link,
    /// This process among the replicas (its name and a random suffix, so a
    /// restarted replica is a new one).
    instance: String,
    prefix: String,
    others: Mutex<ClusterPresence>,
    events: broadcast::Sender<StatusEvent>,
    /// The connections whose subject this replica is subscribed to, each
    /// with what ends its subscription.
    held: Mutex<HashMap<ConnectionId, CancellationToken>>,
    /// Ends the background tasks when the router goes.
    stop: CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single update of a map: consistent even
    // if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NatsRouter {
    /// Connects to NATS (retrying for up to 30 s, then failing with the
    /// reason) and starts serving `local`'s sessions to the other replicas.
    pub async fn connect(local: Arc<LocalHub>, settings: NatsSettings) -> anyhow::Result<Self> {
        let addresses = settings
            .url
            .split(',')
            .map(|u| u.trim().parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading the NATS URL {}", redact(&settings.url)))?;
        let (reconnected_tx, reconnected) = mpsc::unbounded_channel();
        let client = connect_with_retry(&settings, &addresses, &reconnected_tx).await?;
        let subject = |name: &str| format!("{}.{name}", settings.subject_prefix);
        let subscribe = |name: &str| {
            let (client, subject) = (client.clone(), subject(name));
            async move {
                client
                    .subscribe(subject.clone())
                    .await
                    .with_context(|| format!("subscribing to {subject}"))
            }
        };
        let subscriptions = Subscriptions {
            announcements: subscribe("presence").await?,
            syncs: subscribe("presence.sync").await?,
            disconnects: subscribe("disconnect").await?,
        };
        let shared = Arc::new(Shared {
            local: Arc::clone(&local),
            link: Link {
                client,
                heartbeat: settings.heartbeat,
                max_timeout: settings.max_query_timeout,
                serving: Arc::new(tokio::sync::Semaphore::new(MOST_SERVED)),
            },
            // Part of subjects: only letters, digits, - and _.
            instance: format!(
                "{}-{}",
                settings
                    .replica
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
                    .collect::<String>(),
                hex::encode(rand::random::<[u8; 6]>())
            ),
            prefix: settings.subject_prefix.clone(),
            others: Mutex::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            held: Mutex::default(),
            stop: CancellationToken::new(),
        });
        let local_events = local.subscribe();
        tokio::spawn(cluster(Arc::clone(&shared), subscriptions, local_events, reconnected));
        tracing::info!(nats = %redact(&settings.url), instance = %shared.instance, "routing between replicas through NATS");
        Ok(NatsRouter { shared })
    }

    /// Whether NATS is reachable right now (for `/ready`).
    pub fn connected(&self) -> bool {
        self.shared.link.client.connection_state() == async_nats::connection::State::Connected
    }
}

impl Drop for NatsRouter {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        for (_, token) in lock(&self.shared.held).drain() {
            token.cancel();
        }
    }
}

/// The client options `settings` ask for; `reconnected` hears of each
/// (re)connection, so the replica announces its sessions again.
async fn options(
    settings: &NatsSettings,
    reconnected: &mpsc::UnboundedSender<()>,
) -> anyhow::Result<async_nats::ConnectOptions> {
    let reconnected = reconnected.clone();
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("custard-server {}", settings.replica))
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let reconnected = reconnected.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connected");
                        let _ = reconnected.send(());
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected; reconnecting");
                    }
                    other => tracing::info!("NATS: {other}"),
                }
            }
        });
    if let Some(path) = &settings.credentials {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("reading the NATS credentials {}", path.display()))?;
    }
    if let Some(path) = &settings.root_certificates {
        options = options.add_root_certificates(path.clone()).require_tls(true);
    }
    Ok(options)
}

/// Connects, trying again with backoff for [`CONNECT_FOR`], then failing
/// with the last reason.
async fn connect_with_retry(
    settings: &NatsSettings,
    addresses: &[ServerAddr],
    reconnected: &mpsc::UnboundedSender<()>,
) -> anyhow::Result<Client> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        let attempt = options(settings, reconnected).await?;
        match attempt.connect(addresses.to_vec()).await {
            Ok(client) => return Ok(client),
            Err(e) if started.elapsed() + pause < CONNECT_FOR => {
                tracing::warn!(
                    nats = %redact(&settings.url),
                    "NATS does not answer yet ({e}); trying again in {} ms",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            Err(e) => {
                anyhow::bail!(
                    "NATS at {} did not answer within {} s: {e}",
                    redact(&settings.url),
                    CONNECT_FOR.as_secs()
                );
            }
        }
    }
}

/// The cluster-wide subjects every replica listens to.
struct Subscriptions {
    announcements: Subscriber,
    syncs: Subscriber,
    disconnects: Subscriber,
}

/// Keeps presence, status events and subscriptions in step with this
/// replica's sessions and the other replicas' announcements.
async fn cluster(
    shared: Arc<Shared>,
    mut subscriptions: Subscriptions,
    mut local_events: broadcast::Receiver<StatusEvent>,
    mut reconnected: mpsc::UnboundedReceiver<()>,
) {
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Ask the others for their sessions now rather than at their next tick.
    shared.publish(&shared.subject("presence.sync"), &shared.instance).await;
    let mut draining = false;
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => break,
            () = shared.local.draining().cancelled(), if !draining => {
                // No new requests from the other replicas; those in flight finish.
                draining = true;
                for (_, token) in lock(&shared.held).drain() {
                    token.cancel();
                }
            }
            event = local_events.recv() => match event {
                Ok(event) => shared.local_change(event).await,
                Err(broadcast::error::RecvError::Lagged(_)) => shared.reconcile_all().await,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            Some(message) = subscriptions.announcements.next() => {
                match decode::<Announcement>(&message) {
                    Some(Announcement::Change(change)) => shared.remote_change(change),
                    Some(Announcement::Snapshot(snapshot)) => shared.remote_snapshot(snapshot),
                    None => {}
                }
            }
            Some(message) = subscriptions.syncs.next() => {
                if decode::<String>(&message).is_some_and(|from| from != shared.instance) {
                    shared.publish_snapshot().await;
                }
            }
            Some(message) = subscriptions.disconnects.next() => {
                if let Some(request) = decode::<Disconnect>(&message)
                    && request.replica != shared.instance
                {
                    shared.local.disconnect(&ConnectionId::from(request.connection), &request.reason);
                }
            }
            Some(()) = reconnected.recv() => {
                shared.publish_snapshot().await;
                shared.publish(&shared.subject("presence.sync"), &shared.instance).await;
            }
            _ = tick.tick() => {
                shared.publish_snapshot().await;
                shared.expire();
                shared.reconcile_all().await;
            }
        }
    }
}

fn decode<T: DeserializeOwned>(message: &async_nats::Message) -> Option<T> {
    match serde_json::from_slice(&message.payload) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(subject = %message.subject, "ignoring a malformed message from NATS: {e}");
            None
        }
    }
}

impl Shared {
    fn subject(&self, name: &str) -> Subject {
        Subject::from(format!("{}.{name}", self.prefix))
    }

    /// The subject of `connection`'s agents, if its id can be one (ids are
    /// hex, so always).
    fn agents_subject(&self, connection: &ConnectionId) -> Option<Subject> {
        let id = connection.as_str();
        let plain = !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        plain.then(|| self.subject(&format!("agents.{id}")))
    }

    /// The subject of `connection`'s agents on the replica `instance` only.
    fn agents_on(&self, connection: &ConnectionId, instance: &str) -> Option<Subject> {
        let any = self.agents_subject(connection)?;
        Some(Subject::from(format!("{any}.{instance}")))
    }

    async fn publish(&self, subject: &Subject, value: &impl Serialize) {
        let Ok(payload) = serde_json::to_vec(value) else { return };
        if let Err(e) = self.link.client.publish(subject.clone(), payload.into()).await {
            tracing::warn!(%subject, "publishing to NATS failed: {e}");
        }
    }

    /// Subscribes to `connection`'s subjects while this replica holds a
    /// session of it (and is not draining), and not otherwise. Run by the
    /// cluster task only; a new subscription is in place (NATS has it)
    /// before anything the task publishes next, its announcement included.
    async fn reconcile(self: &Arc<Self>, connection: &ConnectionId) {
        let want = !self.local.draining().is_cancelled()
            && !self.stop.is_cancelled()
            && self.local.presence(connection).agents > 0;
        let held = lock(&self.held).contains_key(connection);
        if want && !held {
            let (Some(any), Some(mine)) =
                (self.agents_subject(connection), self.agents_on(connection, &self.instance))
            else {
                return;
            };
            let client = &self.link.client;
            let subscribed = async {
                let queue = client.queue_subscribe(any, HOLDERS.to_owned()).await?;
                let direct = client.subscribe(mine).await?;
                Ok::<_, async_nats::SubscribeError>((queue, direct))
            };
            match subscribed.await {
                Ok((queue, direct)) => {
                    let token = CancellationToken::new();
                    lock(&self.held).insert(connection.clone(), token.clone());
                    tokio::spawn(hold(Arc::clone(self), connection.clone(), queue, direct, token));
                }
                // Tried again at the next presence tick.
                Err(e) => {
                    tracing::warn!(connection = %connection, "cannot take requests through NATS: {e}")
                }
            }
        } else if !want && let Some(token) = lock(&self.held).remove(connection) {
            token.cancel();
        }
    }

    async fn reconcile_all(self: &Arc<Self>) {
        let mut connections: Vec<ConnectionId> =
            self.local.held().into_iter().map(|(connection, _, _)| connection).collect();
        connections.extend(lock(&self.held).keys().cloned());
        for connection in connections {
            self.reconcile(&connection).await;
        }
    }

    /// One of this replica's sessions came, went or refreshed its schema.
    async fn local_change(self: &Arc<Self>, event: StatusEvent) {
        if event.kind != StatusKind::SchemaRefreshed {
            self.reconcile(&event.connection_id).await;
        }
        let here = self.local.presence(&event.connection_id);
        let change = Change {
            replica: self.instance.clone(),
            kind: event.kind.as_str().to_owned(),
            held: Held {
                connection: event.connection_id.to_string(),
                org: event.org_id.to_string(),
                agents: here.agents,
                agent_version: here.agent_version.or_else(|| event.agent_version.clone()),
                in_flight: here.in_flight,
            },
        };
        self.publish(&self.subject("presence"), &Announcement::Change(change)).await;
        self.emit(event);
    }

    /// Another replica's session came, went or refreshed its schema.
    fn remote_change(&self, change: Change) {
        if change.replica == self.instance {
            return;
        }
        let Some(kind) = StatusKind::parse(&change.kind) else { return };
        lock(&self.others).record(&change.replica, &change.held, Instant::now());
        self.emit(StatusEvent {
            org_id: OrgId::from(change.held.org),
            connection_id: ConnectionId::from(change.held.connection),
            kind,
            agents: 0,
            agent_version: change.held.agent_version,
            at: Utc::now(),
        });
    }

    fn remote_snapshot(&self, snapshot: Snapshot) {
        if snapshot.replica == self.instance {
            return;
        }
        let now = Instant::now();
        for held in snapshot.held {
            let connection = ConnectionId::from(held.connection.clone());
            let (before, after) = {
                let mut others = lock(&self.others);
                let before = others.remote_agents(&connection);
                others.record(&snapshot.replica, &held, now);
                (before, others.remote_agents(&connection))
            };
            // A replica heard of for the first time (or a change it announced
            // that got lost): browsers learn of it now.
            if before != after {
                let kind = if after > before {
                    StatusKind::AgentConnected
                } else {
                    StatusKind::AgentDisconnected
                };
                self.emit(StatusEvent {
                    org_id: OrgId::from(held.org),
                    connection_id: connection,
                    kind,
                    agents: 0,
                    agent_version: held.agent_version,
                    at: Utc::now(),
                });
            }
        }
    }

    /// Forgets sessions of replicas that stopped announcing them.
    fn expire(&self) {
        let gone = lock(&self.others).expire(Instant::now(), PRESENCE_TTL);
        for (org_id, connection_id) in gone {
            tracing::info!(connection = %connection_id, "agents of a silent replica no longer count");
            self.emit(StatusEvent {
                org_id,
                connection_id,
                kind: StatusKind::AgentDisconnected,
                agents: 0,
                agent_version: None,
                at: Utc::now(),
            });
        }
    }

    /// Sends `event` to this replica's status streams, counting the agents of
    /// every replica.
    fn emit(&self, mut event: StatusEvent) {
        event.agents = self.presence(&event.connection_id).agents;
        // No subscribers is fine.
        let _ = self.events.send(event);
    }

    fn presence(&self, connection: &ConnectionId) -> Presence {
        lock(&self.others).add_to(connection, self.local.presence(connection))
    }

    async fn publish_snapshot(&self) {
        let held: Vec<Held> = self
            .local
            .held()
            .into_iter()
            .map(|(connection, org, presence)| Held {
                connection: connection.to_string(),
                org: org.to_string(),
                agents: presence.agents,
                agent_version: presence.agent_version,
                in_flight: presence.in_flight,
            })
            .collect();
        let subject = self.subject("presence");
        for part in held.chunks(SNAPSHOT_PART) {
            let snapshot = Snapshot { replica: self.instance.clone(), held: part.to_vec() };
            self.publish(&subject, &Announcement::Snapshot(snapshot)).await;
        }
    }
}

/// Serves the other replicas' requests for `connection`, from the subject
/// of any holder (`queue`) and this replica's own (`direct`), until `token`
/// is cancelled.
async fn hold(
    shared: Arc<Shared>,
    connection: ConnectionId,
    mut queue: Subscriber,
    mut direct: Subscriber,
    token: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            () = token.cancelled() => {
                let _ = queue.unsubscribe().await;
                let _ = direct.unsubscribe().await;
                return;
            }
            request = queue.next() => request,
            request = direct.next() => request,
        };
        let Some(request) = request else {
            // The client closed the subscription: subscribed again at the
            // next tick, unless it was let go meanwhile.
            if !token.is_cancelled() {
                lock(&shared.held).remove(&connection);
            }
            return;
        };
        let (link, local) = (shared.link.clone(), Arc::clone(&shared.local));
        tokio::spawn(relay::serve_request(link, local, connection.clone(), request));
    }
}

impl AgentRouter for NatsRouter {
    fn run<'a>(
        &'a self,
        connection: &'a ConnectionId,
        sql: &'a CheckedSql,
        limits: &'a RunLimits,
        rows: RowSender,
    ) -> BoxFuture<'a, Result<RunSummary, ExecError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let local = &shared.local;
            // An agent of this replica with room answers without a hop.
            if local.has_room(connection) {
                return local.run(connection, sql, limits, rows).await;
            }
            let grace = local.settings().grace;
            if local.presence(connection).agents > 0 {
                // Every agent here is busy: the least busy other replica
                // holding some takes it, else it waits here for room.
                let other = lock(&shared.others).holders(connection).into_iter().next();
                if let Some(subject) = other.and_then(|o| shared.agents_on(connection, &o)) {
                    let routed =
                        relay::run(&shared.link, subject, sql, limits, grace, rows.clone()).await;
                    // Gone since it last said: wait here instead.
                    if !matches!(&routed, Err(e) if e.code == ExecErrorCode::AgentOffline) {
                        return routed;
                    }
                }
                return local.run(connection, sql, limits, rows).await;
            }
            let Some(subject) = shared.agents_subject(connection) else {
                return Err(super::local::offline());
            };
            relay::run(&shared.link, subject, sql, limits, grace, rows).await
        })
    }

    fn discover<'a>(
        &'a self,
        connection: &'a ConnectionId,
        sample_values: u32,
    ) -> BoxFuture<'a, Result<Schema, ExecError>> {
        Box::pin(async move {
            let shared = &self.shared;
            if shared.local.presence(connection).agents > 0 {
                return shared.local.discover(connection, sample_values).await;
            }
            let Some(subject) = shared.agents_subject(connection) else {
                return Err(super::local::offline());
            };
            let wait = shared.local.settings().discover_timeout;
            relay::discover(&shared.link, subject, sample_values, wait).await
        })
    }

    fn presence(&self, connection: &ConnectionId) -> Presence {
        self.shared.presence(connection)
    }

    fn disconnect(&self, connection: &ConnectionId, reason: &str) {
        self.shared.local.disconnect(connection, reason);
        let shared = Arc::clone(&self.shared);
        let request = Disconnect {
            replica: shared.instance.clone(),
            connection: connection.to_string(),
            reason: reason.to_owned(),
        };
        tokio::spawn(async move {
            shared.publish(&shared.subject("disconnect"), &request).await;
        });
    }

    fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.shared.events.subscribe()
    }

    fn agents_online(&self) -> usize {
        self.shared.local.agents_online()
    }
}
