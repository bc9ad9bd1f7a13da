//! What the other replicas hold: their agent sessions by connection, as they
//! last announced them, and the messages they announce them with.
//!
//! Each replica publishes a snapshot of its sessions every few seconds and an
//! event whenever one of its sessions comes or goes. An entry not announced
//! again within its time to live is dropped: that is how a replica that died
//! without a word (SIGKILL, a lost network) stops counting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::hub::Presence;
use crate::store::{ConnectionId, OrgId};

/// One connection's sessions on one replica, as announced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Held {
    /// The connection.
    pub(super) connection: String,
    /// Its organisation.
    pub(super) org: String,
    /// Agent sessions of the connection on the announcing replica.
    pub(super) agents: usize,
    /// The version of the announcing replica's most recent session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) agent_version: Option<String>,
    /// Requests in flight on those sessions.
    #[serde(default)]
    pub(super) in_flight: usize,
}

/// A replica's sessions (all of them, or one part of them when there are many).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Snapshot {
    /// The announcing replica's instance id.
    pub(super) replica: String,
    /// The connections it holds sessions of.
    pub(super) held: Vec<Held>,
}

/// A change of one of a replica's sessions, with what it holds of the
/// connection after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Change {
    /// The announcing replica's instance id.
    pub(super) replica: String,
    /// `agent_connected`, `agent_disconnected` or `schema_refreshed`.
    pub(super) kind: String,
    /// The connection after the change, on the announcing replica.
    pub(super) held: Held,
}

/// What a replica announces on the presence subject: one subject for both
/// kinds, so they arrive in the order they were sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Announcement {
    /// All its sessions (or a part of them).
    Snapshot(Snapshot),
    /// One change.
    Change(Change),
}

/// Close a connection's sessions wherever they are (key rotated, connection deleted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Disconnect {
    /// The asking replica's instance id (it closed its own sessions already).
    pub(super) replica: String,
    /// The connection.
    pub(super) connection: String,
    /// Sent to the agents in the close frame.
    pub(super) reason: String,
}

/// The most sessions (or requests in flight) one announcement may count for
/// one connection; more is a bug or a forgery, and counts as this many.
const MOST: usize = 1 << 16;

/// One remote replica's sessions of one connection.
#[derive(Clone, Debug)]
struct Remote {
    org: OrgId,
    agents: usize,
    agent_version: Option<String>,
    in_flight: usize,
    /// When it was last announced.
    seen: Instant,
}

/// The other replicas' sessions, by connection and replica.
#[derive(Debug, Default)]
pub(super) struct ClusterPresence {
    by_connection: HashMap<ConnectionId, HashMap<String, Remote>>,
}

impl ClusterPresence {
    /// Records what `replica` announced of one connection at `now`; an entry
    /// with no agent is removed. Returns whether the connection's count of
    /// remote agents changed.
    pub(super) fn record(&mut self, replica: &str, held: &Held, now: Instant) -> bool {
        let connection = ConnectionId::from(held.connection.clone());
        let before = self.remote_agents(&connection);
        if held.agents == 0 {
            if let Some(replicas) = self.by_connection.get_mut(&connection) {
                replicas.remove(replica);
                if replicas.is_empty() {
                    self.by_connection.remove(&connection);
                }
            }
        } else {
            self.by_connection.entry(connection.clone()).or_default().insert(
                replica.to_owned(),
                Remote {
                    org: OrgId::from(held.org.clone()),
                    agents: held.agents.min(MOST),
                    agent_version: held.agent_version.clone(),
                    in_flight: held.in_flight.min(MOST),
                    seen: now,
                },
            );
        }
        before != self.remote_agents(&connection)
    }

    /// Drops every entry not announced since `now - ttl`; returns the
    /// connections (with their organisations) whose remote agents went away.
    pub(super) fn expire(&mut self, now: Instant, ttl: Duration) -> Vec<(OrgId, ConnectionId)> {
        let mut gone = Vec::new();
        self.by_connection.retain(|connection, replicas| {
            let mut lost = None;
            replicas.retain(|_, remote| {
                let live = now.saturating_duration_since(remote.seen) <= ttl;
                if !live {
                    lost = Some(remote.org.clone());
                }
                live
            });
            if let Some(org) = lost {
                gone.push((org, connection.clone()));
            }
            !replicas.is_empty()
        });
        gone
    }

    /// Agent sessions of `connection` on the other replicas.
    pub(super) fn remote_agents(&self, connection: &ConnectionId) -> usize {
        self.by_connection
            .get(connection)
            .map_or(0, |r| r.values().fold(0, |sum, r| sum.saturating_add(r.agents)))
    }

    /// The other replicas holding sessions of `connection`, the least busy
    /// first (requests in flight per session, as last announced).
    pub(super) fn holders(&self, connection: &ConnectionId) -> Vec<String> {
        let Some(replicas) = self.by_connection.get(connection) else {
            return Vec::new();
        };
        let mut holders: Vec<(&String, &Remote)> = replicas.iter().collect();
        // a/b < c/d  <=>  a*d < c*b (agents is at least 1 here).
        holders.sort_by(|(_, a), (_, b)| {
            (a.in_flight.saturating_mul(b.agents)).cmp(&b.in_flight.saturating_mul(a.agents))
        });
        holders.into_iter().map(|(name, _)| name.clone()).collect()
    }

    /// `local` with the other replicas' sessions of `connection` added.
    pub(super) fn add_to(&self, connection: &ConnectionId, mut local: Presence) -> Presence {
        let Some(replicas) = self.by_connection.get(connection) else {
            return local;
        };
        for remote in replicas.values() {
            local.agents = local.agents.saturating_add(remote.agents);
            local.in_flight = local.in_flight.saturating_add(remote.in_flight);
        }
        if local.agent_version.is_none() {
            local.agent_version =
                replicas.values().max_by_key(|r| r.seen).and_then(|r| r.agent_version.clone());
        }
        local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(connection: &str, agents: usize) -> Held {
        Held {
            connection: connection.to_owned(),
            org: "org".to_owned(),
            agents,
            agent_version: Some("1.2.3".to_owned()),
            in_flight: agents,
        }
    }

    #[test]
    fn remote_sessions_add_up_over_replicas_and_leave_with_zero() {
        let mut presence = ClusterPresence::default();
        let now = Instant::now();
        let c = ConnectionId::from("c1".to_owned());
        assert!(presence.record("r1", &held("c1", 2), now));
        assert!(presence.record("r2", &held("c1", 1), now));
        // The same count again is no change.
        assert!(!presence.record("r2", &held("c1", 1), now));
        let both = presence.add_to(&c, Presence { agents: 1, ..Presence::default() });
        assert_eq!((both.agents, both.in_flight), (4, 3));
        assert_eq!(both.agent_version.as_deref(), Some("1.2.3"));
        assert!(presence.record("r1", &held("c1", 0), now));
        assert_eq!(presence.remote_agents(&c), 1);
        assert!(presence.record("r2", &held("c1", 0), now));
        assert_eq!(presence.add_to(&c, Presence::default()), Presence::default());
    }

    #[test]
    fn forged_counts_are_capped_and_holders_come_least_busy_first() {
        let mut presence = ClusterPresence::default();
        let now = Instant::now();
        let c = ConnectionId::from("c1".to_owned());
        let mut forged = held("c1", usize::MAX);
        forged.in_flight = usize::MAX;
        presence.record("f1", &forged, now);
        presence.record("f2", &forged, now);
        assert_eq!(presence.remote_agents(&c), 2 * MOST);
        let sum = presence.add_to(&c, Presence { agents: usize::MAX, ..Presence::default() });
        assert_eq!(sum.agents, usize::MAX);

        let mut presence = ClusterPresence::default();
        let busy = Held { in_flight: 4, ..held("c1", 2) };
        let idle = Held { in_flight: 1, ..held("c1", 2) };
        presence.record("busy", &busy, now);
        presence.record("idle", &idle, now);
        assert_eq!(presence.holders(&c), ["idle", "busy"]);
    }

    #[test]
    fn announcements_name_their_kind() {
        let change = Announcement::Change(Change {
            replica: "r1".to_owned(),
            kind: "agent_connected".to_owned(),
            held: held("c1", 1),
        });
        let text = serde_json::to_string(&change).expect("json");
        assert!(text.starts_with(r#"{"type":"change","#), "{text}");
        assert_eq!(serde_json::from_str::<Announcement>(&text).expect("back"), change);
    }

    #[test]
    fn entries_not_announced_again_expire_with_their_connection_named() {
        let mut presence = ClusterPresence::default();
        let start = Instant::now();
        let ttl = Duration::from_secs(6);
        presence.record("dead", &held("c1", 1), start);
        presence.record("alive", &held("c2", 1), start);
        // The live replica announces again; the dead one does not.
        presence.record("alive", &held("c2", 1), start + Duration::from_secs(5));
        assert!(presence.expire(start + Duration::from_secs(6), ttl).is_empty());
        let gone = presence.expire(start + Duration::from_secs(7), ttl);
        assert_eq!(gone, [(OrgId::from("org".to_owned()), ConnectionId::from("c1".to_owned()))]);
        assert_eq!(presence.remote_agents(&ConnectionId::from("c1".to_owned())), 0);
        assert_eq!(presence.remote_agents(&ConnectionId::from("c2".to_owned())), 1);
    }
}
