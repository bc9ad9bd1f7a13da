//! Rows to the store's types and back for [`PostgresStore`](super::PostgresStore):
//! the columns each mapping reads (in its order), the `*_from_row` mappings,
//! ids, roles and token kinds read from `text` columns, and PostgreSQL's
//! errors as [`StoreError`]s ([`PgError`]).

use std::error::Error as _;

use chrono::{DateTime, SubsecRound, Utc};
use custard_core::Dialect;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Type};

pub(super) use crate::store::sql::{
    INVITATION_COLUMNS, MEMBERSHIP_COLUMNS, ORG_COLUMNS, QUERY_COLUMNS, SESSION_COLUMNS,
    TOKEN_COLUMNS, USER_COLUMNS, query_column_count,
};
use crate::store::{
    Asker, ConflictKind, Connection as DbConnection, ConnectionId, ConversationId, HistoryEntry,
    Invitation, Membership, NewQueryRecord, OneTimeToken, OrgId, Organization, PersonalToken,
    PersonalTokenId, QueryId, QueryRecord, QuerySource, ReceivedInvitation, Role, Session,
    SessionId, StoreError, StoredSchema, TokenId, TokenKind, User, UserId,
};

/// Why an operation on PostgreSQL failed, before it becomes a [`StoreError`]:
/// the driver's errors stay whole until then, so a serialization failure can
/// be retried and a unique violation named by its constraint.
#[derive(Debug)]
pub(super) enum PgError {
    /// From the driver: the server's error, or the connection's.
    Db(tokio_postgres::Error),
    /// No connection could be had from the pool in time.
    Pool(String),
    /// Decided by the store's own logic (NotFound, LastOwner, Stale...).
    Store(StoreError),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl From<StoreError> for PgError {
    fn from(e: StoreError) -> Self {
        PgError::Store(e)
    }
}

impl PgError {
    /// Whether running the whole transaction again may succeed: PostgreSQL
    /// gave it up for a concurrent one (serializable isolation) or a deadlock.
    pub(super) fn is_retryable(&self) -> bool {
        matches!(
            self,
            PgError::Db(e) if matches!(
                e.code(),
                Some(&SqlState::T_R_SERIALIZATION_FAILURE | &SqlState::T_R_DEADLOCK_DETECTED)
            )
        )
    }

    /// The store's error for this failure: a unique violation is the conflict
    /// its constraint stands for; an unreachable, shutting down, overloaded or
    /// timed-out database is Unavailable; anything else Internal.
    pub(super) fn into_store(self) -> StoreError {
        let e = match self {
            PgError::Store(e) => return e,
            PgError::Pool(message) => return StoreError::Unavailable(message),
            PgError::Db(e) => e,
        };
        let Some(code) = e.code() else {
            // No SQLSTATE: the driver's own error. A connection that broke or
            // could not be made may come back; anything else (a value that
            // does not convert, a row that is not there) is a bug.
            return if e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>()) {
                StoreError::Unavailable(describe(&e))
            } else {
                StoreError::Internal(describe(&e))
            };
        };
        if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE {
            // Text with a NUL, which no PostgreSQL text can hold: no stored
            // row can match it (SQLite answers NotFound the same way).
            return StoreError::NotFound;
        }
        if *code == SqlState::UNIQUE_VIOLATION {
            let constraint = e.as_db_error().and_then(|d| d.constraint());
            if let Some(kind) = constraint.and_then(conflict_of) {
                return StoreError::Conflict(kind);
            }
        }
        let class = &code.code()[..2];
        // 08: connection exception, 53: insufficient resources, 57: operator
        // intervention (shutdown, statement timeout), 40: a transaction given
        // up too often; and a lock not had within `lock_timeout`.
        // A standby after a failover refuses writes until it is promoted.
        if matches!(class, "08" | "53" | "57" | "40")
            || *code == SqlState::LOCK_NOT_AVAILABLE
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        {
            return StoreError::Unavailable(describe(&e));
        }
        StoreError::Internal(describe(&e))
    }
}

/// The conflict a unique constraint of `0001_init.sql` stands for.
fn conflict_of(constraint: &str) -> Option<ConflictKind> {
    Some(match constraint {
        "users_email_unique" => ConflictKind::Email,
        "memberships_unique" => ConflictKind::Membership,
        "connections_key_unique" => ConflictKind::ApiKey,
        "connections_name_unique" => ConflictKind::ConnectionName,
        _ => return None,
    })
}

/// A driver error for the log: the server's SQLSTATE, message and
/// constraint, never its detail (which quotes the failing row, password
/// hash included); or the driver's own error with its cause.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let constraint = db.constraint().map(|c| format!(" (constraint {c})")).unwrap_or_default();
        return format!("{} {}: {}{constraint}", db.severity(), db.code().code(), db.message());
    }
    match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Rows a write changed: none is NotFound.
pub(super) fn matched(changed: u64) -> Result<(), PgError> {
    if changed == 0 { Err(PgError::Store(StoreError::NotFound)) } else { Ok(()) }
}

/// The row, or NotFound.
pub(super) fn found(row: Option<Row>) -> Result<Row, PgError> {
    row.ok_or(PgError::Store(StoreError::NotFound))
}

/// The store's clock, at the precision it stores (milliseconds, as SQLite's store).
pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// A caller's time at the store's precision.
pub(super) fn at_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(3)
}

macro_rules! text_id_from_sql {
    ($($name:ident),*) => {$(
        impl<'a> FromSql<'a> for $name {
            fn from_sql(
                ty: &Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                String::from_sql(ty, raw).map($name::from)
            }

            fn accepts(ty: &Type) -> bool {
                <String as FromSql>::accepts(ty)
            }
        }
    )*};
}

text_id_from_sql!(
    UserId,
    OrgId,
    SessionId,
    TokenId,
    PersonalTokenId,
    ConnectionId,
    QueryId,
    ConversationId
);

impl<'a> FromSql<'a> for Role {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let name = <&str>::from_sql(ty, raw)?;
        Role::parse(name).ok_or_else(|| format!("unknown role {name:?}").into())
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

impl<'a> FromSql<'a> for TokenKind {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let name = <&str>::from_sql(ty, raw)?;
        TokenKind::parse(name).ok_or_else(|| format!("unknown token kind {name:?}").into())
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

/// A user from [`USER_COLUMNS`], starting at column `at`.
pub(super) fn user_from_row(row: &Row, at: usize) -> Result<User, PgError> {
    Ok(User {
        id: row.try_get(at)?,
        email: row.try_get(at + 1)?,
        password_hash: row.try_get(at + 2)?,
        first_name: row.try_get(at + 3)?,
        last_name: row.try_get(at + 4)?,
        email_verified_at: row.try_get(at + 5)?,
        created_at: row.try_get(at + 6)?,
        updated_at: row.try_get(at + 7)?,
    })
}

/// An organisation from [`ORG_COLUMNS`], starting at column `at`.
pub(super) fn org_from_row(row: &Row, at: usize) -> Result<Organization, PgError> {
    Ok(Organization {
        id: row.try_get(at)?,
        name: row.try_get(at + 1)?,
        created_at: row.try_get(at + 2)?,
    })
}

/// A membership from [`MEMBERSHIP_COLUMNS`], starting at column `at`.
pub(super) fn membership_from_row(row: &Row, at: usize) -> Result<Membership, PgError> {
    Ok(Membership {
        org_id: row.try_get(at)?,
        user_id: row.try_get(at + 1)?,
        role: row.try_get(at + 2)?,
        created_at: row.try_get(at + 3)?,
    })
}

/// A session from [`SESSION_COLUMNS`], starting at column `at`.
pub(super) fn session_from_row(row: &Row, at: usize) -> Result<Session, PgError> {
    Ok(Session {
        id: row.try_get(at)?,
        user_id: row.try_get(at + 1)?,
        created_at: row.try_get(at + 2)?,
        expires_at: row.try_get(at + 3)?,
        revoked_at: row.try_get(at + 4)?,
    })
}

/// A one-time token from [`TOKEN_COLUMNS`].
pub(super) fn token_from_row(row: &Row) -> Result<OneTimeToken, PgError> {
    Ok(OneTimeToken {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        user_id: row.try_get(2)?,
        email: row.try_get(3)?,
        org_id: row.try_get(4)?,
        role: row.try_get(5)?,
        created_at: row.try_get(6)?,
        expires_at: row.try_get(7)?,
        used_at: row.try_get(8)?,
        invited_by: row.try_get(9)?,
        revoked_at: row.try_get(10)?,
    })
}

/// The columns a personal access token's row mapping reads, in its order
/// (the SQLite store's are the same).
pub(super) const PERSONAL_TOKEN_COLUMNS: &str =
    "id, user_id, org_id, name, created_at, expires_at, last_used_at";

/// A personal access token from [`PERSONAL_TOKEN_COLUMNS`], starting at column `at`.
pub(super) fn personal_token_from_row(row: &Row, at: usize) -> Result<PersonalToken, PgError> {
    Ok(PersonalToken {
        id: row.try_get(at)?,
        user_id: row.try_get(at + 1)?,
        org_id: row.try_get(at + 2)?,
        name: row.try_get(at + 3)?,
        created_at: row.try_get(at + 4)?,
        expires_at: row.try_get(at + 5)?,
        last_used_at: row.try_get(at + 6)?,
    })
}

/// Pending invitations (`$2` is now) with their organisation and sender,
/// only those whose sender may still send them; callers add the condition
/// on `$1`.
pub(super) const RECEIVED_SELECT: &str = "
    SELECT t.id, t.email, t.role, t.org_id, o.name, u.first_name, u.last_name, u.email,
           t.expires_at
    FROM one_time_tokens t
    JOIN organizations o ON o.id = t.org_id
    LEFT JOIN users u ON u.id = t.invited_by
    LEFT JOIN memberships m ON m.org_id = t.org_id AND m.user_id = t.invited_by
    WHERE t.kind = 'invitation' AND t.used_at IS NULL AND t.revoked_at IS NULL
      AND t.expires_at > $2
      AND (t.invited_by IS NULL OR m.role = 'owner' OR (m.role = 'admin' AND t.role <> 'owner'))";

/// An invitation as its recipient sees it, from [`RECEIVED_SELECT`].
pub(super) fn received_from_row(row: &Row) -> Result<ReceivedInvitation, PgError> {
    let (first, last): (Option<String>, Option<String>) = (row.try_get(5)?, row.try_get(6)?);
    Ok(ReceivedInvitation {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        role: row.try_get(2)?,
        org_id: row.try_get(3)?,
        org_name: row.try_get(4)?,
        invited_by_name: first.zip(last).map(|(f, l)| format!("{f} {l}")),
        invited_by_email: row.try_get(7)?,
        expires_at: row.try_get(8)?,
    })
}

/// A pending invitation from [`INVITATION_COLUMNS`].
pub(super) fn invitation_from_row(row: &Row) -> Result<Invitation, PgError> {
    Ok(Invitation {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        role: row.try_get(2)?,
        invited_by: row.try_get(3)?,
        invited_by_email: row.try_get(4)?,
        created_at: row.try_get(5)?,
        expires_at: row.try_get(6)?,
    })
}

/// A connection with its schema's fingerprint; `c` is `connections`, `s`
/// `connection_schemas`. Callers add their `WHERE`.
pub(super) const CONNECTION_SELECT: &str = "
    SELECT c.id, c.org_id, c.name, c.dialect, c.key_prefix, c.instructions,
           s.fingerprint, s.refreshed_at, c.agent_version, c.last_seen_at,
           c.created_at, c.updated_at
    FROM connections c
    LEFT JOIN connection_schemas s ON s.connection_id = c.id";

/// A connection from [`CONNECTION_SELECT`].
pub(super) fn connection_from_row(row: &Row) -> Result<DbConnection, PgError> {
    let dialect: String = row.try_get(3)?;
    let dialect = dialect.parse::<Dialect>().map_err(|e| {
        StoreError::Internal(format!("connection with an unknown dialect {dialect:?}: {e}"))
    })?;
    Ok(DbConnection {
        id: row.try_get(0)?,
        org_id: row.try_get(1)?,
        name: row.try_get(2)?,
        dialect,
        key_prefix: row.try_get(4)?,
        instructions: row.try_get(5)?,
        schema_fingerprint: row.try_get(6)?,
        schema_refreshed_at: row.try_get(7)?,
        agent_version: row.try_get(8)?,
        last_seen_at: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
    })
}

/// A stored schema from `fingerprint, json, refreshed_at`.
pub(super) fn schema_from_row(row: &Row) -> Result<StoredSchema, PgError> {
    Ok(StoredSchema {
        fingerprint: row.try_get(0)?,
        json: row.try_get(1)?,
        refreshed_at: row.try_get(2)?,
    })
}

/// A recorded question from [`QUERY_COLUMNS`].
pub(super) fn query_from_row(row: &Row) -> Result<QueryRecord, PgError> {
    let row_count: Option<i64> = row.try_get(10)?;
    let row_count = row_count
        .map(|n| {
            u64::try_from(n)
                .map_err(|_| StoreError::Internal(format!("negative row count {n} in the history")))
        })
        .transpose()?;
    let attempts: i32 = row.try_get(13)?;
    Ok(QueryRecord {
        id: row.try_get(0)?,
        record: NewQueryRecord {
            org_id: row.try_get(1)?,
            connection_id: row.try_get(2)?,
            user_id: row.try_get(3)?,
            conversation_id: row.try_get(4)?,
            question: row.try_get(5)?,
            sql: row.try_get(6)?,
            outcome: row.try_get(7)?,
            error_message: row.try_get(8)?,
            answer: row.try_get(9)?,
            row_count,
            truncated: row.try_get(11)?,
            engine: row.try_get(12)?,
            attempts: u32::try_from(attempts).map_err(|_| {
                StoreError::Internal(format!("negative attempts {attempts} in the history"))
            })?,
            timings_json: row.try_get(14)?,
            result_json: row.try_get(15)?,
            source: {
                let name: &str = row.try_get(18)?;
                QuerySource::parse(name).ok_or_else(|| {
                    StoreError::Internal(format!("unknown question source {name:?} in the history"))
                })?
            },
        },
        feedback: row.try_get(16)?,
        created_at: row.try_get(17)?,
    })
}

/// A row of the history with its asker: the query's columns, then the
/// asker's email, names and whether they are still a member (NULL when the
/// account is gone).
pub(super) fn history_entry_from_row(row: &Row) -> Result<HistoryEntry, PgError> {
    let query = query_from_row(row)?;
    let n = query_column_count();
    let email: Option<String> = row.try_get(n)?;
    let asked_by = match email {
        Some(email) => Some(Asker {
            email,
            first_name: row.try_get(n + 1)?,
            last_name: row.try_get(n + 2)?,
            member: row.try_get(n + 3)?,
        }),
        None => None,
    };
    Ok(HistoryEntry { query, asked_by })
}
