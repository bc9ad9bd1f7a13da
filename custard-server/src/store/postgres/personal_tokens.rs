//! The personal access tokens' SQL for [`PostgresStore`](super::PostgresStore),
//! the table of `postgres/0002_personal_tokens.sql`.
//!
//! Each function translates its namesake of the SQLite store. Creating a
//! token reads before it writes (the membership, the count against
//! [`MAX_PERSONAL_TOKENS`]), so it runs in a `SERIALIZABLE` transaction that
//! [`retry`] runs again when PostgreSQL gives it up for a concurrent one:
//! tokens created at once on several replicas never go past the limit, and
//! none is created for a member being removed. Everything else is one
//! statement, which names the user and the organisation in its `WHERE`.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::accounts::select_membership;
use super::rows::{
    self, MEMBERSHIP_COLUMNS, PERSONAL_TOKEN_COLUMNS, PgError, USER_COLUMNS, at_millis, matched,
    membership_from_row, personal_token_from_row, user_from_row,
};
use super::{Params, PostgresStore, all_rows, execute, one_row, retry, serializable, single};
use crate::store::sql::{column_count, qualified};
use crate::store::{
    ConflictKind, MAX_PERSONAL_TOKENS, Membership, NewPersonalToken, OrgId,
    PERSONAL_TOKEN_TOUCH_EVERY, PersonalToken, PersonalTokenId, StoreError, User, UserId,
};

/// A token (`p`) by its hash `$1`, its user (`u`) and the user's membership
/// (`m`) of the token's organisation, in one statement: every request made
/// with a token reads it.
static CONTEXT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {}, {}
         FROM personal_tokens p
         JOIN users u ON u.id = p.user_id
         JOIN memberships m ON m.user_id = p.user_id AND m.org_id = p.org_id
         WHERE p.token_hash = $1",
        qualified("p", PERSONAL_TOKEN_COLUMNS),
        qualified("u", USER_COLUMNS),
        qualified("m", MEMBERSHIP_COLUMNS),
    )
});

/// The membership of `$1` in `$2` with the user's tokens there, newest first:
/// no row when there is no membership, one row of NULL token columns when
/// there are no tokens.
static LIST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}
         FROM memberships m
         LEFT JOIN personal_tokens p ON p.user_id = m.user_id AND p.org_id = m.org_id
         WHERE m.user_id = $1 AND m.org_id = $2
         ORDER BY p.created_at DESC, p.seq DESC",
        qualified("p", PERSONAL_TOKEN_COLUMNS),
    )
});

/// Stores a token for a member of its organisation who has fewer than
/// [`MAX_PERSONAL_TOKENS`] there (else a [`ConflictKind::PersonalTokenLimit`]).
pub(super) async fn create(
    store: &PostgresStore,
    token: NewPersonalToken<'_>,
) -> Result<PersonalToken, StoreError> {
    let expires_at = token.expires_at.map(at_millis);
    retry(|| async move {
        // Serializable: of creations counting at once, those that would go
        // past the limit together are given up and counted again.
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        select_membership(&tx, token.org_id, token.user_id).await?;
        let sql = "SELECT count(*) FROM personal_tokens WHERE user_id = $1 AND org_id = $2";
        let params: Params = &[&token.user_id.as_str(), &token.org_id.as_str()];
        let held: i64 = one_row(&tx, sql, params).await?.try_get(0)?;
        if usize::try_from(held).map_or(true, |held| held >= MAX_PERSONAL_TOKENS) {
            return Err(StoreError::Conflict(ConflictKind::PersonalTokenLimit).into());
        }
        let sql = format!(
            "INSERT INTO personal_tokens
                 (id, user_id, org_id, name, token_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {PERSONAL_TOKEN_COLUMNS}"
        );
        let id = PersonalTokenId::random();
        let params: Params = &[
            &id.as_str(),
            &token.user_id.as_str(),
            &token.org_id.as_str(),
            &token.name,
            &token.token_hash,
            &rows::now(),
            &expires_at,
        ];
        let created = personal_token_from_row(&one_row(&tx, &sql, params).await?, 0)?;
        tx.commit().await?;
        Ok(created)
    })
    .await
}

/// The user's tokens in the organisation, newest first; NotFound when the
/// user is not a member of it.
pub(super) async fn list(
    store: &PostgresStore,
    user: &UserId,
    org: &OrgId,
) -> Result<Vec<PersonalToken>, StoreError> {
    single(store, |client| async move {
        // One statement, so the membership check and the list see one snapshot.
        let listed = all_rows(&client, &LIST, &[&user.as_str(), &org.as_str()]).await?;
        if listed.is_empty() {
            return Err(StoreError::NotFound.into());
        }
        let mut tokens = Vec::with_capacity(listed.len());
        for row in &listed {
            if row.try_get::<_, Option<PersonalTokenId>>(0)?.is_some() {
                tokens.push(personal_token_from_row(row, 0)?);
            }
        }
        Ok(tokens)
    })
    .await
}

/// Deletes the user's token `id` in the organisation; NotFound for any other.
pub(super) async fn delete(
    store: &PostgresStore,
    user: &UserId,
    org: &OrgId,
    id: &PersonalTokenId,
) -> Result<(), StoreError> {
    single(store, |client| async move {
        let sql = "DELETE FROM personal_tokens WHERE id = $1 AND user_id = $2 AND org_id = $3";
        matched(execute(&client, sql, &[&id.as_str(), &user.as_str(), &org.as_str()]).await?)
    })
    .await
}

/// The token with this hash, its user and the user's membership of the
/// token's organisation, in one statement.
pub(super) async fn context(
    store: &PostgresStore,
    token_hash: &str,
) -> Result<(PersonalToken, User, Membership), StoreError> {
    single(store, |client| async move {
        let row = one_row(&client, &CONTEXT, &[&token_hash]).await?;
        let user_at = column_count(PERSONAL_TOKEN_COLUMNS);
        let membership_at = user_at + column_count(USER_COLUMNS);
        Ok((
            personal_token_from_row(&row, 0)?,
            user_from_row(&row, user_at)?,
            membership_from_row(&row, membership_at)?,
        ))
    })
    .await
}

/// Sets the token's last use to `at` unless one was recorded within
/// [`PERSONAL_TOKEN_TOUCH_EVERY`] before it; a token that is gone is no error.
pub(super) async fn touch(
    store: &PostgresStore,
    id: &PersonalTokenId,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let at = at_millis(at);
    let before = at - PERSONAL_TOKEN_TOUCH_EVERY;
    single(store, |client| async move {
        let sql = "UPDATE personal_tokens SET last_used_at = $2
                   WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)";
        execute(&client, sql, &[&id.as_str(), &at, &before]).await.map(drop)
    })
    .await
}

/// Deletes the user's tokens in the organisation (they left it).
pub(super) async fn delete_of_member(
    c: &impl GenericClient,
    org: &OrgId,
    user: &UserId,
) -> Result<(), PgError> {
    let sql = "DELETE FROM personal_tokens WHERE user_id = $1 AND org_id = $2";
    execute(c, sql, &[&user.as_str(), &org.as_str()]).await.map(drop)
}
