//! The store: users, organisations, memberships, sessions, one-time tokens and
//! personal access tokens, and the platform's database connections, cached
//! schemas and history of questions, behind one object-safe [`Store`] trait.
//!
//! [`SqliteStore`] (a file in the data dir) is the embedded default; a PostgreSQL
//! implementation of the same trait comes with scale-out. Domain types here are
//! plain Rust: no serde, no SQL types; wire types live with the API.
//!
//! Invariants every implementation keeps:
//! - tenancy: each organisation-scoped operation takes the organisation id and
//!   answers [`StoreError::NotFound`] for rows of any other organisation;
//! - emails are stored trimmed and lowercase, so they are unique case-insensitively;
//! - one-time token secrets are never stored, only their SHA-256 hex
//!   (`auth::hash_secret`), and consuming a token is atomic: of two concurrent
//!   consumes exactly one wins; using a reset token or changing the password
//!   ends every other reset token of the user, and a member removed (or
//!   demoted) loses the pending invitations they may no longer send;
//! - sessions are rows, checked on every request: a password reset revokes
//!   every session of the user, a password change every one but the
//!   changer's, and a revoked session stays revoked across restarts;
//! - personal access tokens are stored only as their SHA-256 hex, unique
//!   across all users; one acts for its user in its one organisation only
//!   while the user is a member of it (removing the member deletes them), and
//!   a user has at most [`MAX_PERSONAL_TOKENS`] of them in an organisation,
//!   however many are created at once;
//! - an organisation always keeps at least one owner ([`StoreError::LastOwner`]);
//! - agent API keys are stored only as their SHA-256 hex, unique across all
//!   organisations; a recorded question is about a connection of its own
//!   organisation, and goes when that connection is deleted, or when its
//!   asker or an owner or admin of the organisation deletes it (the role is
//!   read in the deleting transaction);
//! - a successful write is durable before its future resolves.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use custard_core::BoxFuture;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// A fresh id: 128 bits from a CSPRNG, hex.
            pub(crate) fn random() -> Self {
                $name(hex::encode(rand::random::<[u8; 16]>()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

mod platform;
mod postgres;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;

pub use platform::{
    ApprovedExample, Asker, Connection, ConnectionId, ConnectionUpdate, ConversationId,
    HistoryEntry, NewConnection, NewQueryRecord, OutcomeFilter, QueryDeletion, QueryFilter,
    QueryId, QueryRecord, QuerySource, StoredSchema,
};
pub use postgres::{PostgresOptions, PostgresStore, Sharing};
pub use sqlite::SqliteStore;

/// Where the store lives, as `CUSTARD_STORE_URL` names it.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file (`sqlite:PATH`).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database (`postgres://...` or `postgresql://...`); the
    /// URL may hold a password, so it is never shown.
    Postgres(String),
}

impl StoreLocation {
    /// Reads `sqlite:PATH` or a PostgreSQL URL; anything else is an error
    /// that says what is accepted.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            // `sqlite://PATH` is common too: take both.
            let path = path.strip_prefix("//").unwrap_or(path);
            anyhow::ensure!(!path.is_empty(), "CUSTARD_STORE_URL `sqlite:` needs a file path");
            return Ok(StoreLocation::Sqlite(path.into()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Checked now, so a typo fails at start with the driver's reason
            // (which never repeats the URL).
            url.parse::<tokio_postgres::Config>()
                .map_err(|e| anyhow::anyhow!("CUSTARD_STORE_URL is not a PostgreSQL URL: {e}"))?;
            return Ok(StoreLocation::Postgres(url.to_owned()));
        }
        let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
        anyhow::bail!(
            "CUSTARD_STORE_URL must start with `sqlite:` or `postgres://`, not with the scheme {scheme:?}"
        )
    }

    /// Opens the store here, migrating it; PostgreSQL is retried with backoff
    /// for a while when unreachable.
    pub async fn open(&self, options: &PostgresOptions) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            StoreLocation::Sqlite(path) => {
                let path = path.clone();
                let opened = tokio::task::spawn_blocking(move || SqliteStore::open(&path)).await;
                Arc::new(opened.map_err(|e| StoreError::Internal(e.to_string()))??)
            }
            StoreLocation::Postgres(url) => Arc::new(PostgresStore::open(url, options).await?),
        })
    }
}

impl fmt::Display for StoreLocation {
    /// The kind and place, without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreLocation::Postgres(url) => {
                let Ok(config) = url.parse::<tokio_postgres::Config>() else {
                    return f.write_str("postgres://(invalid)");
                };
                let hosts: Vec<String> = config
                    .get_hosts()
                    .iter()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(name) => name.clone(),
                        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                    })
                    .collect();
                let ports: Vec<String> = config.get_ports().iter().map(|p| p.to_string()).collect();
                write!(
                    f,
                    "postgres://{}@{}:{}/{}",
                    config.get_user().unwrap_or(""),
                    hosts.join(","),
                    ports.join(","),
                    config.get_dbname().unwrap_or("")
                )
            }
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The arithmetic of [`Store::take_attempt`] (a generic cell rate algorithm)
/// in microseconds, shared by the stores: the key's theoretical arrival time
/// after one more attempt, when that attempt is admitted.
pub(in crate::store) mod attempts {
    use std::time::Duration;

    use chrono::{DateTime, Utc};

    /// Microseconds since the epoch.
    pub(in crate::store) fn micros(t: DateTime<Utc>) -> i64 {
        t.timestamp_micros()
    }

    /// A duration in microseconds, saturating.
    pub(in crate::store) fn span(d: Duration) -> i64 {
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
    }

    /// How far ahead of `now` the arrival time may run: `burst` attempts'
    /// worth, and a little slack (under one attempt's worth, so never one
    /// attempt more): attempts taken at once carry clock readings a few
    /// milliseconds apart (on one server, or several), and one read later
    /// but counted first must not cost the burst an attempt.
    pub(in crate::store) fn allowance(burst: u32, every: Duration) -> i64 {
        let slack = (span(every) / 2).min(CLOCK_SLACK_US);
        span(every).saturating_mul(i64::from(burst.max(1))).saturating_add(slack)
    }

    /// The most [`allowance`] adds for clock readings taken at once.
    const CLOCK_SLACK_US: i64 = 1_000_000;

    /// How long until an attempt would be admitted, given the key's arrival time.
    pub(in crate::store) fn wait(tat: i64, now: i64, burst: u32, every: Duration) -> Duration {
        let behind = tat.saturating_add(span(every)).saturating_sub(now);
        let over = behind.saturating_sub(allowance(burst, every)).max(1);
        Duration::from_micros(u64::try_from(over).unwrap_or(1))
    }
}

/// One schema change of a store, shipped inside the binary.
#[derive(Debug)]
pub(in crate::store) struct Migration {
    /// Strictly increasing from 1, without gaps; the file name starts with it.
    pub(in crate::store) version: i64,
    /// Short name, recorded for people reading `schema_migrations`.
    pub(in crate::store) name: &'static str,
    /// The SQL; no `BEGIN`/`COMMIT`, the runner owns the transaction.
    pub(in crate::store) sql: &'static str,
}

/// Persistent state of the platform; handlers hold it as `Arc<dyn Store>`.
///
/// Times are UTC; implementations keep millisecond precision. Write operations
/// take the current time from the store's clock, except where a caller-supplied
/// `now` decides validity (token expiry), so tests can move time.
pub trait Store: Send + Sync + fmt::Debug {
    /// Checks that the store answers a trivial query (for `/status`).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Creates a user without an organisation; a taken email is a [`ConflictKind::Email`].
    fn create_user(&self, user: NewUser) -> BoxFuture<'_, Result<User, StoreError>>;

    /// Creates a user, a new organisation named `org_name` and the user's owner
    /// membership in one transaction: all three exist afterwards, or none.
    fn create_user_with_org(
        &self,
        user: NewUser,
        org_name: String,
    ) -> BoxFuture<'_, Result<SignUp, StoreError>>;

    /// The user with this id.
    fn get_user<'a>(&'a self, id: &'a UserId) -> BoxFuture<'a, Result<User, StoreError>>;

    /// The user with this email, compared case-insensitively.
    fn get_user_by_email<'a>(&'a self, email: &'a str) -> BoxFuture<'a, Result<User, StoreError>>;

    /// Replaces the user's names and returns the updated user.
    fn update_profile<'a>(
        &'a self,
        id: &'a UserId,
        profile: ProfileUpdate,
    ) -> BoxFuture<'a, Result<User, StoreError>>;

    /// Replaces the user's password hash and ends every outstanding
    /// password-reset token of the user, in one transaction (sessions are left
    /// alone: see [`Store::change_password`] and [`Store::reset_password`]).
    /// For setting a password outside a signed-in change (the demo's user).
    fn set_password_hash<'a>(
        &'a self,
        id: &'a UserId,
        password_hash: String,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Marks the user's email as verified (keeps the first verification time).
    fn mark_email_verified<'a>(&'a self, id: &'a UserId)
    -> BoxFuture<'a, Result<User, StoreError>>;

    /// The organisation with this id.
    fn get_organization<'a>(
        &'a self,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Organization, StoreError>>;

    /// Every organisation the user belongs to with the membership, oldest first.
    fn organizations_of_user<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<(Organization, Membership)>, StoreError>>;

    /// The members of the organisation, oldest first; NotFound for an unknown organisation.
    fn list_members<'a>(&'a self, org: &'a OrgId)
    -> BoxFuture<'a, Result<Vec<Member>, StoreError>>;

    /// The user's membership in this organisation; NotFound when not a member.
    fn get_membership<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Membership, StoreError>>;

    /// Changes a member's role and ends the pending invitations they sent
    /// that the new role may not send (an admin invites admins and members, a
    /// member nobody); demoting the last owner is [`StoreError::LastOwner`].
    fn set_role<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
        role: Role,
    ) -> BoxFuture<'a, Result<Membership, StoreError>>;

    /// Removes a member, ends the invitations they sent to the organisation
    /// that are still pending and deletes their personal access tokens there,
    /// in one transaction; removing the last owner is [`StoreError::LastOwner`].
    fn remove_member<'a>(
        &'a self,
        org: &'a OrgId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Starts a session for the user, valid until `expires_at` unless revoked,
    /// if what it stands on (`grant`) still holds in the same transaction;
    /// [`StoreError::Stale`] when it does not (the password changed since it
    /// was checked, or the replaced session was signed out).
    fn create_session<'a>(
        &'a self,
        user: &'a UserId,
        expires_at: DateTime<Utc>,
        grant: SessionGrant<'a>,
    ) -> BoxFuture<'a, Result<Session, StoreError>>;

    /// The session with this id, active or not (see [`Session::is_active`]).
    fn get_session<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<Session, StoreError>>;

    /// What authenticating a request reads: the session (active or not), its
    /// user, and the user's membership in `org`; NotFound when any is missing.
    /// Stores read the three at once where they can (every request does this).
    fn session_context<'a>(
        &'a self,
        session: &'a SessionId,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<(Session, User, Membership), StoreError>> {
        Box::pin(async move {
            let session = self.get_session(session).await?;
            let user = self.get_user(&session.user_id).await?;
            let membership = self.get_membership(org, &user.id).await?;
            Ok((session, user, membership))
        })
    }

    /// Revokes one session; revoking it again is not an error.
    fn revoke_session<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Revokes every unrevoked session of the user and returns how many.
    fn revoke_user_sessions<'a>(
        &'a self,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Revokes every unrevoked session of the user except `keep` (the caller's
    /// own) and returns how many: "sign out other sessions".
    fn revoke_other_sessions<'a>(
        &'a self,
        user: &'a UserId,
        keep: &'a SessionId,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Replaces the user's password hash `old_hash` (the one the caller
    /// checked the current password against) with `password_hash`, ends every
    /// outstanding password-reset token of the user, revokes every session
    /// of the user except `keep` (the one that made the change) and deletes
    /// the user's personal access tokens, in one transaction; returns how
    /// many sessions were signed out.
    /// [`StoreError::Stale`] when the hash is no longer `old_hash` or `keep`
    /// was signed out meanwhile: then nothing changes.
    fn change_password<'a>(
        &'a self,
        id: &'a UserId,
        old_hash: &'a str,
        password_hash: String,
        keep: &'a SessionId,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Stores a personal access token for its user in its organisation (only
    /// the SHA-256 hex of its secret, `auth::hash_secret`) and returns it.
    /// The user must be a member of the organisation (else NotFound), with
    /// fewer than [`MAX_PERSONAL_TOKENS`] tokens there, expired ones included
    /// (else [`ConflictKind::PersonalTokenLimit`]); checked and inserted in
    /// one transaction, so tokens created at once never go past the limit.
    fn create_personal_token<'a>(
        &'a self,
        token: NewPersonalToken<'a>,
    ) -> BoxFuture<'a, Result<PersonalToken, StoreError>>;

    /// The user's personal access tokens in the organisation, expired ones
    /// included, newest first; NotFound when the user is not a member of it.
    fn list_personal_tokens<'a>(
        &'a self,
        user: &'a UserId,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Vec<PersonalToken>, StoreError>>;

    /// Deletes one of the user's personal access tokens in the organisation
    /// (it stops working at once); NotFound for any other user's or
    /// organisation's token, or an unknown one.
    fn delete_personal_token<'a>(
        &'a self,
        user: &'a UserId,
        org: &'a OrgId,
        id: &'a PersonalTokenId,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// What authenticating a request by personal access token reads, in one
    /// snapshot: the token whose secret hashes to `token_hash`, its user, and
    /// the user's current membership in the token's organisation; NotFound
    /// when any is missing (a member removed loses their tokens at once).
    /// Expiry is not checked: the caller compares `expires_at` with now.
    fn personal_token_context<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> BoxFuture<'a, Result<(PersonalToken, User, Membership), StoreError>>;

    /// Records that the token was used at `at`: sets `last_used_at` only when
    /// it is unset or more than [`PERSONAL_TOKEN_TOUCH_EVERY`] before `at`, so
    /// a token is written at most once a minute however busy (and never
    /// moved back by a server whose clock is behind). A token deleted
    /// meanwhile is not an error: `Ok`, and nothing is written. Callers may
    /// skip the call when the token they read was used less than a minute ago.
    fn touch_personal_token<'a>(
        &'a self,
        id: &'a PersonalTokenId,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores a one-time token (only the SHA-256 hex of its secret, `auth::hash_secret`).
    fn create_token(&self, token: NewToken) -> BoxFuture<'_, Result<OneTimeToken, StoreError>>;

    /// Marks the token used and returns it, only if it is of this kind, unused,
    /// not ended and unexpired at `now`; otherwise NotFound. Atomic: one of
    /// concurrent calls wins.
    fn consume_token<'a>(
        &'a self,
        kind: TokenKind,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<OneTimeToken, StoreError>>;

    /// Consumes an email-verification token and marks its user verified, in one transaction.
    fn verify_email<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>>;

    /// The user of a password-reset token that is unused, not ended and
    /// unexpired at `now`, without consuming it; NotFound otherwise. Lets the
    /// caller refuse a bad token before any expensive work.
    fn password_reset_user<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>>;

    /// Consumes a password-reset token, sets the new hash, ends every other
    /// reset token of the user, revokes every session of the user and
    /// deletes the user's personal access tokens, in one transaction.
    fn reset_password<'a>(
        &'a self,
        token_hash: &'a str,
        password_hash: String,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<User, StoreError>>;

    /// Consumes an invitation and makes the existing user a member with the invited role.
    ///
    /// The invitation must have been sent to the user's email, and its sender
    /// must still be a member who may invite to that role (else NotFound); an
    /// existing member gets [`ConflictKind::Membership`]. On error the token stays unused.
    fn accept_invitation<'a>(
        &'a self,
        token_hash: &'a str,
        user: &'a UserId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Membership, StoreError>>;

    /// Signs up through an invitation: consumes it, creates the user (verified,
    /// since the link reached the invited email) and the membership, in one transaction.
    ///
    /// The user's email must be the invited one, and the sender must still
    /// be a member who may invite to that role (else NotFound).
    fn create_user_from_invitation<'a>(
        &'a self,
        user: NewUser,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<SignUp, StoreError>>;

    /// The organisation's pending invitations (unused, not ended, unexpired at
    /// `now`), oldest first.
    fn list_invitations<'a>(
        &'a self,
        org: &'a OrgId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Invitation>, StoreError>>;

    /// One pending invitation of the organisation; NotFound for another
    /// organisation's, a used, ended or expired one, or any other token.
    fn get_invitation<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a TokenId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Invitation, StoreError>>;

    /// Ends a pending invitation of the organisation (its link stops working);
    /// NotFound as for [`Store::get_invitation`].
    fn revoke_invitation<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a TokenId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Sends a pending invitation of the organisation again: a new token hash
    /// and expiry, and `by` as its sender (the old link stops working); NotFound
    /// as for [`Store::get_invitation`].
    fn renew_invitation<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a TokenId,
        by: &'a UserId,
        token_hash: String,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Invitation, StoreError>>;

    /// The pending invitation whose token hashes to `token_hash`, with its
    /// organisation and sender, without consuming it; NotFound when it is
    /// unknown, used, ended or expired at `now`, or its sender may no longer
    /// send it.
    fn invitation_by_token<'a>(
        &'a self,
        token_hash: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<ReceivedInvitation, StoreError>>;

    /// The pending invitations sent to `email` (compared case-insensitively)
    /// whose senders may still send them, oldest first.
    fn invitations_for_email<'a>(
        &'a self,
        email: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<ReceivedInvitation>, StoreError>>;

    /// Accepts the pending invitation with this id for `user`, as
    /// [`Store::accept_invitation`] does with a token: the user must have
    /// verified the invited email (the proof the token would have given),
    /// else NotFound.
    fn accept_invitation_by_id<'a>(
        &'a self,
        id: &'a TokenId,
        user: &'a UserId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Membership, StoreError>>;

    /// Creates an organisation named `name` with `owner` as its owner, in one
    /// transaction.
    fn create_organization<'a>(
        &'a self,
        owner: &'a UserId,
        name: String,
    ) -> BoxFuture<'a, Result<(Organization, Membership), StoreError>>;

    /// Deletes the organisation with everything it holds (memberships,
    /// invitations, personal access tokens, connections with their schemas,
    /// history) in one
    /// transaction, and returns the ids of the connections it had, so their
    /// agents can be sent away. Its members' accounts and sessions stay.
    /// Only for an owner: `by` is checked to be one in the same transaction
    /// ([`StoreError::Stale`] when no longer).
    fn delete_organization<'a>(
        &'a self,
        org: &'a OrgId,
        by: &'a UserId,
    ) -> BoxFuture<'a, Result<Vec<ConnectionId>, StoreError>>;

    /// Creates a connection; its key hash must be unique ([`ConflictKind::ApiKey`])
    /// and its name unique in the organisation, compared trimmed and
    /// case-insensitively ([`ConflictKind::ConnectionName`]).
    fn create_connection(
        &self,
        connection: NewConnection,
    ) -> BoxFuture<'_, Result<Connection, StoreError>>;

    /// The organisation's connections, oldest first (none for an unknown organisation).
    fn list_connections<'a>(
        &'a self,
        org: &'a OrgId,
    ) -> BoxFuture<'a, Result<Vec<Connection>, StoreError>>;

    /// One connection of the organisation.
    fn get_connection<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
    ) -> BoxFuture<'a, Result<Connection, StoreError>>;

    /// The connection whose current API key hashes to `key_hash`, in any
    /// organisation: this is how the hub authenticates an agent.
    fn connection_by_key_hash<'a>(
        &'a self,
        key_hash: &'a str,
    ) -> BoxFuture<'a, Result<Connection, StoreError>>;

    /// Changes a connection's name or instructions and returns it; with nothing
    /// to change it returns the connection as it is, `updated_at` included.
    /// A name another connection of the organisation has is a
    /// [`ConflictKind::ConnectionName`].
    fn update_connection<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        update: ConnectionUpdate,
    ) -> BoxFuture<'a, Result<Connection, StoreError>>;

    /// Replaces the connection's API key; the old key stops matching at once.
    /// A key hash another connection has is a [`ConflictKind::ApiKey`].
    fn set_connection_key<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        key_hash: String,
        key_prefix: String,
    ) -> BoxFuture<'a, Result<Connection, StoreError>>;

    /// Deletes a connection with its cached schema and its history.
    fn delete_connection<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The connection's cached schema; NotFound when none was stored yet.
    fn get_schema<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
    ) -> BoxFuture<'a, Result<StoredSchema, StoreError>>;

    /// Stores the schema an agent reported (replacing the previous one) and returns it.
    /// The connection's `updated_at` stays: a schema is not a setting.
    fn save_schema<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        fingerprint: String,
        json: String,
    ) -> BoxFuture<'a, Result<StoredSchema, StoreError>>;

    /// Records that an agent of this version is connected now (`agent_version`,
    /// `last_seen_at`; not `updated_at`).
    fn record_agent_seen<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        agent_version: String,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Records an asked question; the connection must belong to the record's organisation.
    fn record_query(
        &self,
        record: NewQueryRecord,
    ) -> BoxFuture<'_, Result<QueryRecord, StoreError>>;

    /// A page of the organisation's history with who asked each question,
    /// newest first, at most 200 whatever the filter's limit; the filter's
    /// conditions all hold. Filtering on another organisation's connection is
    /// NotFound; on a user who never asked here, an empty page.
    fn list_queries<'a>(
        &'a self,
        org: &'a OrgId,
        filter: QueryFilter,
    ) -> BoxFuture<'a, Result<Vec<HistoryEntry>, StoreError>>;

    /// Deletes a recorded question of the organisation on behalf of `by`, who
    /// may delete the questions they asked, or any as an owner or admin
    /// ([`QueryDeletion::NotAllowed`] otherwise, and nothing changes).
    /// NotFound when the organisation has no such question or `by` is not a
    /// member of it.
    fn delete_query<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a QueryId,
        by: &'a UserId,
    ) -> BoxFuture<'a, Result<QueryDeletion, StoreError>>;

    /// One recorded question of the organisation.
    fn get_query<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a QueryId,
    ) -> BoxFuture<'a, Result<QueryRecord, StoreError>>;

    /// Sets the feedback on a recorded question and returns it.
    fn set_feedback<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a QueryId,
        correct: bool,
    ) -> BoxFuture<'a, Result<QueryRecord, StoreError>>;

    /// The questions of a conversation in the organisation, oldest first: the
    /// newest `limit` of them, at most 200. An unknown conversation has none.
    fn conversation<'a>(
        &'a self,
        org: &'a OrgId,
        conversation: &'a ConversationId,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<QueryRecord>, StoreError>>;

    /// The server secret kept under `name`, storing `candidate` first when
    /// there is none: of servers asking at once, the first to store wins and
    /// all get its value. For secrets every replica must share (the JWT
    /// signing key when none is configured).
    fn shared_secret<'a>(
        &'a self,
        name: &'a str,
        candidate: String,
    ) -> BoxFuture<'a, Result<String, StoreError>>;

    /// Counts one attempt under `key` (a sign-in on one account, say) against
    /// a limit of `burst` at once and one more every `every`, at `now`:
    /// `None` when it is admitted (and counted), `Some(wait)` when it is over
    /// the limit (and not counted), `wait` being how long until it would be
    /// admitted. Atomic: servers sharing the store share the limit.
    fn take_attempt<'a>(
        &'a self,
        key: &'a str,
        burst: u32,
        every: std::time::Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<std::time::Duration>, StoreError>>;

    /// Takes back one attempt [`Store::take_attempt`] counted under `key`
    /// (it turned out to be no failure).
    fn forgive_attempt<'a>(
        &'a self,
        key: &'a str,
        every: std::time::Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Questions about the connection marked correct and answered (outcome `ok`)
    /// with SQL, newest first, at most `limit`; a question asked again appears
    /// once, with its newest SQL. SQL a caller wrote (engine `sql`, whose
    /// question is the SQL itself) is never an example.
    fn approved_examples<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a ConnectionId,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<ApprovedExample>, StoreError>>;
}

/// Why a store operation failed; messages never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such row, or it belongs to another organisation, or a token is used or expired.
    #[error("not found")]
    NotFound,
    /// The write would break a uniqueness rule (the API answers 409).
    #[error("conflict: {0}")]
    Conflict(ConflictKind),
    /// The change would leave an organisation without an owner.
    #[error("an organization must keep at least one owner")]
    LastOwner,
    /// What the write stood on changed meanwhile (a password, a session, a
    /// role); nothing was written.
    #[error("changed meanwhile")]
    Stale,
    /// The database was migrated by a newer binary; this one refuses to touch it.
    #[error("database schema version {found} is newer than this binary knows ({known})")]
    SchemaTooNew {
        /// The newest migration recorded in the database.
        found: i64,
        /// The newest migration this binary ships.
        known: i64,
    },
    /// The database cannot be reached or is busy; retrying later may help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or a broken invariant.
    #[error("internal store error: {0}")]
    Internal(String),
}

/// What a new session stands on, checked again where it is created so no
/// session outlives the credential that opened it.
#[derive(Debug, Clone, Copy)]
pub enum SessionGrant<'a> {
    /// A sign-in that verified the password against this hash: refused when
    /// the user's hash is another by now (changed or reset meanwhile).
    Password(&'a str),
    /// Takes over from this active session of the same user (switching
    /// organisation), which is revoked in the same transaction.
    Replaces(&'a SessionId),
}

/// Which uniqueness rule a [`StoreError::Conflict`] hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConflictKind {
    /// A user with this email exists.
    Email,
    /// The user is already a member of the organisation.
    Membership,
    /// Another connection has this API key (a collision: generate a new one).
    ApiKey,
    /// Another connection of the organisation has this name (trimmed,
    /// case-insensitive).
    ConnectionName,
    /// The user has [`MAX_PERSONAL_TOKENS`] personal access tokens in the
    /// organisation already (delete one first).
    PersonalTokenLimit,
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictKind::Email => "email already registered",
            ConflictKind::Membership => "already a member of the organization",
            ConflictKind::ApiKey => "API key already in use",
            ConflictKind::ConnectionName => "connection name already in use",
            ConflictKind::PersonalTokenLimit => {
                "too many personal access tokens in the organization"
            }
        })
    }
}

id_type!(
    /// Identifies a user.
    UserId
);
id_type!(
    /// Identifies an organisation (the tenant).
    OrgId
);
id_type!(
    /// Identifies a session; JWTs carry it so logout and reset can revoke them.
    SessionId
);
id_type!(
    /// Identifies a one-time token row (never its secret).
    TokenId
);
id_type!(
    /// Identifies a personal access token (never its secret).
    PersonalTokenId
);

/// The most personal access tokens a user may have in one organisation,
/// expired ones included.
pub const MAX_PERSONAL_TOKENS: usize = 50;

/// How long after a recorded use of a personal access token the next use is
/// recorded ([`Store::touch_personal_token`]): one write a minute at most.
pub const PERSONAL_TOKEN_TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// A member's role in an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Full control, including other owners.
    Owner,
    /// Manages members and resources.
    Admin,
    /// Uses the organisation's resources.
    Member,
}

impl Role {
    /// The stable lowercase name (`owner`, `admin`, `member`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// The role with this stable name.
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Owner, Role::Admin, Role::Member].into_iter().find(|r| r.as_str() == name)
    }
}

/// What a one-time token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Proves the user owns the email (link in the sign-up email).
    EmailVerification,
    /// Lets the user set a new password.
    PasswordReset,
    /// Lets the invited email join an organisation.
    Invitation,
}

impl TokenKind {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::EmailVerification => "email_verification",
            TokenKind::PasswordReset => "password_reset",
            TokenKind::Invitation => "invitation",
        }
    }

    /// The kind with this stable name.
    pub fn parse(name: &str) -> Option<TokenKind> {
        [TokenKind::EmailVerification, TokenKind::PasswordReset, TokenKind::Invitation]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A user account.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// Trimmed, lowercase email.
    pub email: String,
    /// The PHC string of the password hash.
    pub password_hash: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// When the email was verified, if it was.
    pub email_verified_at: Option<DateTime<Utc>>,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// When the account last changed.
    pub updated_at: DateTime<Utc>,
}

impl User {
    /// Whether the user has verified the email.
    pub fn is_verified(&self) -> bool {
        self.email_verified_at.is_some()
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password hash stays out of logs.
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("first_name", &self.first_name)
            .field("last_name", &self.last_name)
            .field("email_verified_at", &self.email_verified_at)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

/// A user to create; the store normalizes the email.
#[derive(Clone)]
pub struct NewUser {
    /// Email as typed; stored trimmed and lowercase.
    pub email: String,
    /// The PHC string of the password hash.
    pub password_hash: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password hash stays out of logs.
        f.debug_struct("NewUser")
            .field("email", &self.email)
            .field("first_name", &self.first_name)
            .field("last_name", &self.last_name)
            .finish_non_exhaustive()
    }
}

/// The editable part of a user's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileUpdate {
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
}

/// An organisation: the tenant that owns resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    /// The organisation's id.
    pub id: OrgId,
    /// Display name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A user's membership in an organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The organisation.
    pub org_id: OrgId,
    /// The member.
    pub user_id: UserId,
    /// The member's role.
    pub role: Role,
    /// When the user joined.
    pub created_at: DateTime<Utc>,
}

/// A member as listed to the organisation: the membership with the user's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member.
    pub user_id: UserId,
    /// The member's email.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// The member's role.
    pub role: Role,
    /// When the user joined.
    pub joined_at: DateTime<Utc>,
}

/// What a sign-up created: the user, the organisation and the membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignUp {
    /// The new user.
    pub user: User,
    /// The organisation the user now belongs to.
    pub organization: Organization,
    /// The user's membership in it.
    pub membership: Membership,
}

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session's id.
    pub id: SessionId,
    /// The user it belongs to.
    pub user_id: UserId,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Session {
    /// Whether the session is neither revoked nor expired at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// A one-time token to store; built by one constructor per kind.
#[derive(Debug, Clone)]
pub struct NewToken {
    kind: TokenKind,
    token_hash: String,
    user_id: Option<UserId>,
    email: String,
    org_id: Option<OrgId>,
    role: Option<Role>,
    invited_by: Option<UserId>,
    expires_at: DateTime<Utc>,
}

impl NewToken {
    /// A token that verifies `user`'s email.
    pub fn email_verification(user: &User, token_hash: String, expires_at: DateTime<Utc>) -> Self {
        Self::for_user(TokenKind::EmailVerification, user, token_hash, expires_at)
    }

    /// A token that lets `user` set a new password.
    pub fn password_reset(user: &User, token_hash: String, expires_at: DateTime<Utc>) -> Self {
        Self::for_user(TokenKind::PasswordReset, user, token_hash, expires_at)
    }

    /// A token that lets `email` join `org` with `role`, sent by the member `invited_by`.
    pub fn invitation(
        org: &OrgId,
        invited_by: &UserId,
        email: &str,
        role: Role,
        token_hash: String,
        expires_at: DateTime<Utc>,
    ) -> Self {
        NewToken {
            kind: TokenKind::Invitation,
            token_hash,
            user_id: None,
            email: normalize_email(email),
            org_id: Some(org.clone()),
            role: Some(role),
            invited_by: Some(invited_by.clone()),
            expires_at,
        }
    }

    fn for_user(
        kind: TokenKind,
        user: &User,
        token_hash: String,
        expires_at: DateTime<Utc>,
    ) -> Self {
        NewToken {
            kind,
            token_hash,
            user_id: Some(user.id.clone()),
            email: user.email.clone(),
            org_id: None,
            role: None,
            invited_by: None,
            expires_at,
        }
    }
}

/// A stored one-time token (without its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeToken {
    /// The row's id.
    pub id: TokenId,
    /// What it is for.
    pub kind: TokenKind,
    /// The user it was issued to (none for invitations).
    pub user_id: Option<UserId>,
    /// The email it was sent to.
    pub email: String,
    /// The inviting organisation (invitations only).
    pub org_id: Option<OrgId>,
    /// The invited role (invitations only).
    pub role: Option<Role>,
    /// Who sent it (invitations only; unknown for those sent before it was recorded).
    pub invited_by: Option<UserId>,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// When it was used, if it was.
    pub used_at: Option<DateTime<Utc>>,
    /// When it was ended unused (revoked, or outdated by a newer one), if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A personal access token: lets its user act in one organisation through
/// the API, with the role they have there at the time (never its secret or
/// its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalToken {
    /// The token's id.
    pub id: PersonalTokenId,
    /// The user it acts for.
    pub user_id: UserId,
    /// The one organisation it acts in.
    pub org_id: OrgId,
    /// What its user called it.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, or never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used, to the minute ([`Store::touch_personal_token`]);
    /// never when unset.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A personal access token to store.
#[derive(Debug, Clone, Copy)]
pub struct NewPersonalToken<'a> {
    /// The user it acts for; must be a member of `org_id`.
    pub user_id: &'a UserId,
    /// The organisation it acts in.
    pub org_id: &'a OrgId,
    /// What its user calls it (not empty).
    pub name: &'a str,
    /// The SHA-256 hex of its secret (`auth::hash_secret`), never the secret.
    pub token_hash: &'a str,
    /// When it stops working, or never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A pending invitation as the organisation lists it (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The invitation's id (the token row's).
    pub id: TokenId,
    /// The invited address.
    pub email: String,
    /// The role it grants.
    pub role: Role,
    /// Who sent it, when known.
    pub invited_by: Option<UserId>,
    /// The sender's email, when known.
    pub invited_by_email: Option<String>,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A pending invitation as its recipient sees it: who sends it, to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedInvitation {
    /// The invitation's id (the token row's).
    pub id: TokenId,
    /// The invited address.
    pub email: String,
    /// The role it grants.
    pub role: Role,
    /// The inviting organisation.
    pub org_id: OrgId,
    /// The inviting organisation's name.
    pub org_name: String,
    /// The sender's first and last name, when known.
    pub invited_by_name: Option<String>,
    /// The sender's email, when known.
    pub invited_by_email: Option<String>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// The stored form of an email: trimmed and lowercase.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}
