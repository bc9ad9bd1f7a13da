//! Rows to the store's types and back: the columns each mapping reads (in
//! its order), the `*_from_row` mappings, times as INTEGER unix milliseconds
//! ([`Millis`]), ids, roles and token kinds as TEXT, and SQLite's errors as
//! [`StoreError`]s.

use chrono::{DateTime, SubsecRound, Utc};
use custard_core::Dialect;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Type, ValueRef};
use rusqlite::{Row, ToSql};

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

/// A user from [`USER_COLUMNS`].
pub(super) fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        password_hash: row.get(2)?,
        first_name: row.get(3)?,
        last_name: row.get(4)?,
        email_verified_at: row.get::<_, Option<Millis>>(5)?.map(|m| m.0),
        created_at: row.get::<_, Millis>(6)?.0,
        updated_at: row.get::<_, Millis>(7)?.0,
    })
}

/// An organisation from [`ORG_COLUMNS`].
pub(super) fn org_from_row(row: &Row<'_>) -> rusqlite::Result<Organization> {
    Ok(Organization { id: row.get(0)?, name: row.get(1)?, created_at: row.get::<_, Millis>(2)?.0 })
}

/// A membership from [`MEMBERSHIP_COLUMNS`].
pub(super) fn membership_from_row(row: &Row<'_>) -> rusqlite::Result<Membership> {
    Ok(Membership {
        org_id: row.get(0)?,
        user_id: row.get(1)?,
        role: row.get(2)?,
        created_at: row.get::<_, Millis>(3)?.0,
    })
}

/// A session from [`SESSION_COLUMNS`].
pub(super) fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        user_id: row.get(1)?,
        created_at: row.get::<_, Millis>(2)?.0,
        expires_at: row.get::<_, Millis>(3)?.0,
        revoked_at: row.get::<_, Option<Millis>>(4)?.map(|m| m.0),
    })
}

/// A one-time token from [`TOKEN_COLUMNS`].
pub(super) fn token_from_row(row: &Row<'_>) -> rusqlite::Result<OneTimeToken> {
    Ok(OneTimeToken {
        id: row.get(0)?,
        kind: row.get(1)?,
        user_id: row.get(2)?,
        email: row.get(3)?,
        org_id: row.get(4)?,
        role: row.get(5)?,
        created_at: row.get::<_, Millis>(6)?.0,
        expires_at: row.get::<_, Millis>(7)?.0,
        used_at: row.get::<_, Option<Millis>>(8)?.map(|m| m.0),
        invited_by: row.get(9)?,
        revoked_at: row.get::<_, Option<Millis>>(10)?.map(|m| m.0),
    })
}

/// The columns a personal access token's row mapping reads, in its order
/// (the PostgreSQL store's are the same).
pub(super) const PERSONAL_TOKEN_COLUMNS: &str =
    "id, user_id, org_id, name, created_at, expires_at, last_used_at";

/// A personal access token from [`PERSONAL_TOKEN_COLUMNS`].
pub(super) fn personal_token_from_row(row: &Row<'_>) -> rusqlite::Result<PersonalToken> {
    Ok(PersonalToken {
        id: row.get(0)?,
        user_id: row.get(1)?,
        org_id: row.get(2)?,
        name: row.get(3)?,
        created_at: row.get::<_, Millis>(4)?.0,
        expires_at: row.get::<_, Option<Millis>>(5)?.map(|m| m.0),
        last_used_at: row.get::<_, Option<Millis>>(6)?.map(|m| m.0),
    })
}

/// Pending invitations (`?2` is now) with their organisation and sender,
/// only those whose sender may still send them (as `ensure_sender_may_invite`
/// checks); callers add the condition on `?1`.
pub(super) const RECEIVED_SELECT: &str = "
    SELECT t.id, t.email, t.role, t.org_id, o.name, u.first_name, u.last_name, u.email,
           t.expires_at
    FROM one_time_tokens t
    JOIN organizations o ON o.id = t.org_id
    LEFT JOIN users u ON u.id = t.invited_by
    LEFT JOIN memberships m ON m.org_id = t.org_id AND m.user_id = t.invited_by
    WHERE t.kind = 'invitation' AND t.used_at IS NULL AND t.revoked_at IS NULL
      AND t.expires_at > ?2
      AND (t.invited_by IS NULL OR m.role = 'owner' OR (m.role = 'admin' AND t.role <> 'owner'))";

/// An invitation as its recipient sees it, from [`RECEIVED_SELECT`].
pub(super) fn received_from_row(row: &Row<'_>) -> rusqlite::Result<ReceivedInvitation> {
    let (first, last): (Option<String>, Option<String>) = (row.get(5)?, row.get(6)?);
    Ok(ReceivedInvitation {
        id: row.get(0)?,
        email: row.get(1)?,
        role: row.get(2)?,
        org_id: row.get(3)?,
        org_name: row.get(4)?,
        invited_by_name: first.zip(last).map(|(f, l)| format!("{f} {l}")),
        invited_by_email: row.get(7)?,
        expires_at: row.get::<_, Millis>(8)?.0,
    })
}

/// A pending invitation from [`INVITATION_COLUMNS`].
pub(super) fn invitation_from_row(row: &Row<'_>) -> rusqlite::Result<Invitation> {
    Ok(Invitation {
        id: row.get(0)?,
        email: row.get(1)?,
        role: row.get(2)?,
        invited_by: row.get(3)?,
        invited_by_email: row.get(4)?,
        created_at: row.get::<_, Millis>(5)?.0,
        expires_at: row.get::<_, Millis>(6)?.0,
    })
}

/// Maps a SQLite error to a [`StoreError`]; no row is NotFound, locks and I/O are Unavailable.
pub(super) fn db_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match &e {
        rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::CannotOpen
                    | C::DiskFull
                    | C::SystemIoFailure
                    | C::ReadOnly
                    | C::DatabaseCorrupt
                    | C::NotADatabase
                    | C::OutOfMemory
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// Maps a violation of the constraint `extended_code` to a conflict, anything else as usual.
pub(super) fn conflict_or(
    e: rusqlite::Error,
    extended_code: i32,
    kind: ConflictKind,
) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.extended_code == extended_code => {
            StoreError::Conflict(kind)
        }
        _ => db_error(e),
    }
}

/// A UTC time stored as INTEGER unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Millis(pub(super) DateTime<Utc>);

impl Millis {
    /// The store's clock, at the precision it stores.
    pub(super) fn now() -> Self {
        Millis(Utc::now().trunc_subsecs(3))
    }
}

/// Converts a time to the stored INTEGER unix milliseconds.
pub(super) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

impl ToSql for Millis {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(to_millis(self.0)))
    }
}

impl FromSql for Millis {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let ms = i64::column_result(value)?;
        DateTime::from_timestamp_millis(ms).map(Millis).ok_or(FromSqlError::OutOfRange(ms))
    }
}

macro_rules! text_id_sql {
    ($($name:ident),*) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                String::column_result(value).map($name::from)
            }
        }
    )*};
}

text_id_sql!(
    UserId,
    OrgId,
    SessionId,
    TokenId,
    PersonalTokenId,
    ConnectionId,
    QueryId,
    ConversationId
);

impl ToSql for Role {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Role {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        Role::parse(name)
            .ok_or_else(|| FromSqlError::Other(format!("unknown role {name:?}").into()))
    }
}

impl ToSql for TokenKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for TokenKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        TokenKind::parse(name)
            .ok_or_else(|| FromSqlError::Other(format!("unknown token kind {name:?}").into()))
    }
}

/// A connection with its schema's fingerprint; `c` is `connections`, `s` `connection_schemas`.
/// `s` is read from its summary index (migration 5) and never from the row,
/// which holds the schema's JSON: `INDEXED BY` makes that a rule the planner
/// cannot trade away (a query it cannot plan that way fails to prepare).
pub(super) const CONNECTION_SELECT: &str = "
    SELECT c.id, c.org_id, c.name, c.dialect, c.key_prefix, c.instructions,
           s.fingerprint, s.refreshed_at, c.agent_version, c.last_seen_at,
           c.created_at, c.updated_at
    FROM connections c
    LEFT JOIN connection_schemas s INDEXED BY connection_schemas_summary
        ON s.connection_id = c.id";

/// A connection from [`CONNECTION_SELECT`].
pub(super) fn connection_from_row(row: &Row<'_>) -> rusqlite::Result<DbConnection> {
    let dialect: String = row.get(3)?;
    let dialect = dialect
        .parse::<Dialect>()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, Type::Text, Box::new(e)))?;
    Ok(DbConnection {
        id: row.get(0)?,
        org_id: row.get(1)?,
        name: row.get(2)?,
        dialect,
        key_prefix: row.get(4)?,
        instructions: row.get(5)?,
        schema_fingerprint: row.get(6)?,
        schema_refreshed_at: row.get::<_, Option<Millis>>(7)?.map(|m| m.0),
        agent_version: row.get(8)?,
        last_seen_at: row.get::<_, Option<Millis>>(9)?.map(|m| m.0),
        created_at: row.get::<_, Millis>(10)?.0,
        updated_at: row.get::<_, Millis>(11)?.0,
    })
}

/// A stored schema: fingerprint, JSON and refresh time.
pub(super) fn schema_from_row(row: &Row<'_>) -> rusqlite::Result<StoredSchema> {
    Ok(StoredSchema {
        fingerprint: row.get(0)?,
        json: row.get(1)?,
        refreshed_at: row.get::<_, Millis>(2)?.0,
    })
}

/// A row of `platform::list_queries`: the query's columns, then the asker's email,
/// names and whether they are still a member (the user's columns are NULL
/// when the account is gone).
pub(super) fn history_entry_from_row(row: &Row<'_>) -> rusqlite::Result<HistoryEntry> {
    let query = query_from_row(row)?;
    let n = query_column_count();
    let email: Option<String> = row.get(n)?;
    let asked_by = match email {
        Some(email) => Some(Asker {
            email,
            first_name: row.get(n + 1)?,
            last_name: row.get(n + 2)?,
            member: row.get(n + 3)?,
        }),
        None => None,
    };
    Ok(HistoryEntry { query, asked_by })
}

/// A recorded question from [`QUERY_COLUMNS`].
pub(super) fn query_from_row(row: &Row<'_>) -> rusqlite::Result<QueryRecord> {
    Ok(QueryRecord {
        id: row.get(0)?,
        record: NewQueryRecord {
            org_id: row.get(1)?,
            connection_id: row.get(2)?,
            user_id: row.get(3)?,
            conversation_id: row.get(4)?,
            question: row.get(5)?,
            sql: row.get(6)?,
            outcome: row.get(7)?,
            error_message: row.get(8)?,
            answer: row.get(9)?,
            row_count: row.get::<_, Option<RowCount>>(10)?.map(|c| c.0),
            truncated: row.get(11)?,
            engine: row.get(12)?,
            attempts: row.get(13)?,
            timings_json: row.get(14)?,
            result_json: row.get(15)?,
            source: {
                let name: String = row.get(18)?;
                QuerySource::parse(&name).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        18,
                        rusqlite::types::Type::Text,
                        format!("unknown question source {name:?}").into(),
                    )
                })?
            },
        },
        feedback: row.get(16)?,
        created_at: row.get::<_, Millis>(17)?.0,
    })
}

/// A row count as INTEGER: rusqlite binds `u64` only with its `fallible_uint` feature.
pub(super) struct RowCount(pub(super) u64);

impl ToSql for RowCount {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let n = i64::try_from(self.0)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(ToSqlOutput::from(n))
    }
}

impl FromSql for RowCount {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let n = i64::column_result(value)?;
        u64::try_from(n).map(RowCount).map_err(|_| FromSqlError::OutOfRange(n))
    }
}
