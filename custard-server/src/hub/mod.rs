//! The agent hub: which agents are connected for which connection, and how a
//! request reaches one of them and its reply comes back.
//!
//! Handlers only see the [`AgentRouter`] trait, so a hub spread over several
//! server replicas (relaying through a broker) can replace the in-process
//! [`LocalHub`] without touching them. [`AgentExecutor`] wraps a router as a
//! `custard_core::Executor`, so the ask pipeline runs over agents unchanged.
//!
//! Rules the hub keeps:
//! - every request has an id unique on its socket and a deadline; at the deadline
//!   the agent gets a `cancel` and the caller a `query_timeout`;
//! - when an agent's socket ends, every request in flight on it fails at once with
//!   `agent_disconnected` (no waiting for a deadline);
//! - requests go to the connected agent with the fewest requests in flight; when
//!   every agent is at its `max_concurrency`, the caller gets `agent_busy`, and
//!   with no agent at all `agent_offline`;
//! - a caller that stops listening (drops the row receiver or the future) cancels
//!   the query on the agent.

mod executor;
mod local;
mod nats;
mod socket;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use custard_core::{BoxFuture, CheckedSql, ExecError, RowSender, RunLimits, RunSummary, Schema};
use tokio::sync::broadcast;

use crate::store::{ConnectionId, OrgId};

pub use executor::AgentExecutor;
pub use local::LocalHub;
pub use nats::{NatsRouter, NatsSettings, PRESENCE_EVERY, redact as redact_nats_url};
pub(crate) use socket::agent_socket;

/// Routes requests to the agents of a connection.
pub trait AgentRouter: Send + Sync + fmt::Debug {
    /// Runs `sql` on an agent of `connection` and streams its result into `rows`.
    fn run<'a>(
        &'a self,
        connection: &'a ConnectionId,
        sql: &'a CheckedSql,
        limits: &'a RunLimits,
        rows: RowSender,
    ) -> BoxFuture<'a, Result<RunSummary, ExecError>>;

    /// Asks an agent of `connection` for the database's schema.
    fn discover<'a>(
        &'a self,
        connection: &'a ConnectionId,
        sample_values: u32,
    ) -> BoxFuture<'a, Result<Schema, ExecError>>;

    /// Who is connected for `connection` right now.
    fn presence(&self, connection: &ConnectionId) -> Presence;

    /// Closes every agent session of `connection` with `reason` (key rotated,
    /// connection deleted); their requests in flight fail with `agent_disconnected`.
    fn disconnect(&self, connection: &ConnectionId, reason: &str);

    /// Status changes of every connection, for the live status stream; receivers
    /// filter by organisation.
    fn subscribe(&self) -> broadcast::Receiver<StatusEvent>;

    /// How many agent sessions are connected in all (for `/metrics` and `/status`).
    fn agents_online(&self) -> usize;
}

/// The agents connected for one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Presence {
    /// Connected agent sessions.
    pub agents: usize,
    /// The version of the most recently connected agent.
    pub agent_version: Option<String>,
    /// Requests in flight over all its agents.
    pub in_flight: usize,
}

/// A change of a connection's live status, pushed to browsers of its organisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusEvent {
    /// The organisation that owns the connection (events are filtered by it).
    pub org_id: OrgId,
    /// The connection.
    pub connection_id: ConnectionId,
    /// What happened.
    pub kind: StatusKind,
    /// Connected agents after the change.
    pub agents: usize,
    /// The version of the agent the event is about.
    pub agent_version: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// What a [`StatusEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusKind {
    /// An agent connected.
    AgentConnected,
    /// An agent's session ended.
    AgentDisconnected,
    /// A new schema was stored for the connection.
    SchemaRefreshed,
}

impl StatusKind {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusKind::AgentConnected => "agent_connected",
            StatusKind::AgentDisconnected => "agent_disconnected",
            StatusKind::SchemaRefreshed => "schema_refreshed",
        }
    }

    /// The kind named `name` ([`StatusKind::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        [StatusKind::AgentConnected, StatusKind::AgentDisconnected, StatusKind::SchemaRefreshed]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// Timing of the agent protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubSettings {
    /// How often the server pings each agent; an agent silent for three
    /// intervals is dropped.
    pub heartbeat: Duration,
    /// Added to a query's own timeout before the hub gives up on the agent.
    pub grace: Duration,
    /// How long `hello` may take after the upgrade.
    pub handshake_timeout: Duration,
    /// How long a discovery may take.
    pub discover_timeout: Duration,
    /// The most agent sessions one connection may have at once (0: no limit).
    pub max_agents_per_connection: usize,
    /// The most agent sessions one organisation may have at once (0: no limit).
    pub max_agents_per_org: usize,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            heartbeat: Duration::from_secs(15),
            grace: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            discover_timeout: Duration::from_secs(120),
            max_agents_per_connection: 8,
            max_agents_per_org: 64,
        }
    }
}
