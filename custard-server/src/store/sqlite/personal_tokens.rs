//! The personal access tokens' SQL for [`SqliteStore`](super::SqliteStore),
//! the table of `0007_personal_tokens.sql`.
//!
//! A token is created under the write lock ([`write_tx`]), so the membership
//! check, the count against [`MAX_PERSONAL_TOKENS`] and the insert see one
//! state, and tokens created at once never go past the limit. Every other
//! operation is one statement, or reads in one snapshot; each names the user
//! and the organisation in its `WHERE`, so no call reaches another's token.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::accounts::{select_membership, select_user};
use super::rows::{Millis, PERSONAL_TOKEN_COLUMNS, db_error, personal_token_from_row};
use super::{CachedRow, write_tx};
use crate::store::{
    ConflictKind, MAX_PERSONAL_TOKENS, Membership, NewPersonalToken, OrgId,
    PERSONAL_TOKEN_TOUCH_EVERY, PersonalToken, PersonalTokenId, StoreError, User, UserId,
};

/// A personal access token to store, owned, for the writer's thread (see
/// [`NewPersonalToken`]).
#[derive(Debug)]
pub(super) struct OwnedNewToken {
    user_id: UserId,
    org_id: OrgId,
    name: String,
    token_hash: String,
    expires_at: Option<DateTime<Utc>>,
}

impl From<NewPersonalToken<'_>> for OwnedNewToken {
    fn from(token: NewPersonalToken<'_>) -> Self {
        OwnedNewToken {
            user_id: token.user_id.clone(),
            org_id: token.org_id.clone(),
            name: token.name.to_owned(),
            token_hash: token.token_hash.to_owned(),
            expires_at: token.expires_at,
        }
    }
}

/// Stores a token for a member of its organisation who has fewer than
/// [`MAX_PERSONAL_TOKENS`] there (else a [`ConflictKind::PersonalTokenLimit`]).
pub(super) fn create(
    conn: &mut Connection,
    token: &OwnedNewToken,
) -> Result<PersonalToken, StoreError> {
    // The write lock from the first statement: a concurrent creation waits,
    // then counts this one.
    let tx = write_tx(conn)?;
    select_membership(&tx, &token.org_id, &token.user_id)?;
    let held: i64 = tx
        .cached_row(
            "SELECT count(*) FROM personal_tokens WHERE user_id = ?1 AND org_id = ?2",
            params![token.user_id, token.org_id],
            |r| r.get(0),
        )
        .map_err(db_error)?;
    if usize::try_from(held).map_or(true, |held| held >= MAX_PERSONAL_TOKENS) {
        return Err(StoreError::Conflict(ConflictKind::PersonalTokenLimit));
    }
    let created = tx
        .cached_row(
            &format!(
                "INSERT INTO personal_tokens
                     (id, user_id, org_id, name, token_hash, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING {PERSONAL_TOKEN_COLUMNS}"
            ),
            params![
                PersonalTokenId::random(),
                token.user_id,
                token.org_id,
                token.name,
                token.token_hash,
                Millis::now(),
                token.expires_at.map(Millis),
            ],
            personal_token_from_row,
        )
        .map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    Ok(created)
}

/// The user's tokens in the organisation, newest first; NotFound when the
/// user is not a member of it.
pub(super) fn list(
    conn: &mut Connection,
    user: &UserId,
    org: &OrgId,
) -> Result<Vec<PersonalToken>, StoreError> {
    // One read transaction: the membership check and the list see one snapshot.
    let tx = conn.transaction().map_err(db_error)?;
    select_membership(&tx, org, user)?;
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT {PERSONAL_TOKEN_COLUMNS} FROM personal_tokens
             WHERE user_id = ?1 AND org_id = ?2 ORDER BY created_at DESC, rowid DESC"
        ))
        .map_err(db_error)?;
    let rows = stmt.query_map(params![user, org], personal_token_from_row).map_err(db_error)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
}

/// Deletes the user's token `id` in the organisation; NotFound for any other.
pub(super) fn delete(
    conn: &Connection,
    user: &UserId,
    org: &OrgId,
    id: &PersonalTokenId,
) -> Result<(), StoreError> {
    let deleted = conn
        .execute(
            "DELETE FROM personal_tokens WHERE id = ?1 AND user_id = ?2 AND org_id = ?3",
            params![id, user, org],
        )
        .map_err(db_error)?;
    if deleted == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// The token with this hash, its user and the user's membership of the
/// token's organisation, in one snapshot.
pub(super) fn context(
    conn: &mut Connection,
    token_hash: &str,
) -> Result<(PersonalToken, User, Membership), StoreError> {
    // One snapshot for the three reads.
    let tx = conn.transaction().map_err(db_error)?;
    let token = tx
        .cached_row(
            &format!("SELECT {PERSONAL_TOKEN_COLUMNS} FROM personal_tokens WHERE token_hash = ?1"),
            [token_hash],
            personal_token_from_row,
        )
        .map_err(db_error)?;
    let user = select_user(&tx, &token.user_id)?;
    let membership = select_membership(&tx, &token.org_id, &token.user_id)?;
    Ok((token, user, membership))
}

/// Sets the token's last use to `at` unless one was recorded within
/// [`PERSONAL_TOKEN_TOUCH_EVERY`] before it; a token that is gone is no error.
pub(super) fn touch(
    conn: &Connection,
    id: &PersonalTokenId,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE personal_tokens SET last_used_at = ?2
         WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?3)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![id, Millis(at), Millis(at - PERSONAL_TOKEN_TOUCH_EVERY)])
    })
    .map(drop)
    .map_err(db_error)
}

/// Deletes the user's tokens in the organisation (they left it).
pub(super) fn delete_of_member(
    conn: &Connection,
    org: &OrgId,
    user: &UserId,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM personal_tokens WHERE user_id = ?1 AND org_id = ?2")
        .and_then(|mut stmt| stmt.execute(params![user, org]))
        .map(drop)
        .map_err(db_error)
}
