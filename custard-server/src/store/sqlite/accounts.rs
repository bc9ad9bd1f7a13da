//! The accounts' SQL for [`SqliteStore`](super::SqliteStore): users,
//! organisations and their members, sessions, and one-time tokens
//! (verification, reset, invitation), the tables of `0001_accounts.sql`.
//!
//! Each function runs on the connection [`SqliteStore`](super::SqliteStore)
//! hands it (the writer, or a read-only reader); those that change more than
//! one row take the write lock first ([`write_tx`]), so a check and the change
//! it guards see one state.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{
    INVITATION_COLUMNS, MEMBERSHIP_COLUMNS, Millis, ORG_COLUMNS, RECEIVED_SELECT, SESSION_COLUMNS,
    TOKEN_COLUMNS, USER_COLUMNS, conflict_or, db_error, invitation_from_row, membership_from_row,
    org_from_row, received_from_row, session_from_row, token_from_row, user_from_row,
};
use super::{CachedRow, write_tx};
use crate::store::{
    ConflictKind, ConnectionId, Invitation, Member, Membership, NewToken, NewUser, OneTimeToken,
    OrgId, Organization, ProfileUpdate, ReceivedInvitation, Role, Session, SessionGrant, SessionId,
    SignUp, StoreError, TokenId, TokenKind, User, UserId, normalize_email,
};

/// The organisation's (`?1`) pending invitations at `?2`, or only the one
/// with id `?3` when it is not NULL.
const INVITATION_FROM: &str = "FROM one_time_tokens t LEFT JOIN users u ON u.id = t.invited_by
     WHERE t.kind = 'invitation' AND t.org_id = ?1 AND t.used_at IS NULL
       AND t.revoked_at IS NULL AND t.expires_at > ?2 AND (?3 IS NULL OR t.id = ?3)";

/// A new user, unverified.
pub(super) fn create_user(conn: &Connection, user: &NewUser) -> Result<User, StoreError> {
    insert_user(conn, user, None, Millis::now())
}

/// A new user with a new organisation they own, in one transaction.
pub(super) fn create_user_with_org(
    conn: &mut Connection,
    user: &NewUser,
    org_name: &str,
) -> Result<SignUp, StoreError> {
    let tx = write_tx(conn)?;
    let at = Millis::now();
    let user = insert_user(&tx, user, None, at)?;
    let organization = insert_org(&tx, org_name, at)?;
    let membership = insert_membership(&tx, &organization.id, &user.id, Role::Owner, at)?;
    tx.commit().map_err(db_error)?;
    Ok(SignUp { user, organization, membership })
}

/// The user with this (normalised) email.
pub(super) fn user_by_email(conn: &Connection, email: &str) -> Result<User, StoreError> {
    conn.cached_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?1"),
        [email],
        user_from_row,
    )
    .map_err(db_error)
}

/// Sets the user's names.
pub(super) fn update_profile(
    conn: &Connection,
    id: &UserId,
    profile: &ProfileUpdate,
) -> Result<User, StoreError> {
    conn.cached_row(
        &format!(
            "UPDATE users SET first_name = ?2, last_name = ?3, updated_at = ?4
             WHERE id = ?1 RETURNING {USER_COLUMNS}"
        ),
        params![id, profile.first_name, profile.last_name, Millis::now()],
        user_from_row,
    )
    .map_err(db_error)
}

/// Sets the password hash and ends the user's outstanding reset links.
pub(super) fn set_password_hash(
    conn: &mut Connection,
    id: &UserId,
    password_hash: &str,
) -> Result<(), StoreError> {
    let tx = write_tx(conn)?;
    let at = Millis::now();
    update_password(&tx, id, password_hash, at)?;
    end_reset_tokens(&tx, id, at)?;
    tx.commit().map_err(db_error)
}

/// Marks the user verified (an earlier verification time stays).
pub(super) fn mark_email_verified(conn: &Connection, id: &UserId) -> Result<User, StoreError> {
    mark_verified(conn, id, None, Millis::now())
}

/// The user's organisations with their memberships, oldest membership first.
pub(super) fn organizations_of_user(
    conn: &Connection,
    user: &UserId,
) -> Result<Vec<(Organization, Membership)>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT o.id, o.name, o.created_at, m.org_id, m.user_id, m.role, m.created_at
             FROM memberships m JOIN organizations o ON o.id = m.org_id
             WHERE m.user_id = ?1 ORDER BY m.created_at, m.org_id",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([user], |row| {
            let org = Organization {
                id: row.get(0)?,
                name: row.get(1)?,
                created_at: row.get::<_, Millis>(2)?.0,
            };
            let membership = Membership {
                org_id: row.get(3)?,
                user_id: row.get(4)?,
                role: row.get(5)?,
                created_at: row.get::<_, Millis>(6)?.0,
            };
            Ok((org, membership))
        })
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
}

/// The organisation's members, oldest first.
pub(super) fn list_members(conn: &mut Connection, org: &OrgId) -> Result<Vec<Member>, StoreError> {
    // One read transaction: the organisation check and the list see one snapshot.
    let tx = conn.transaction().map_err(db_error)?;
    select_org(&tx, org)?;
    let mut stmt = tx
        .prepare(
            "SELECT u.id, u.email, u.first_name, u.last_name, m.role, m.created_at
             FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.org_id = ?1 ORDER BY m.created_at, u.id",
        )
        .map_err(db_error)?;
    let rows = stmt
        .query_map([org], |row| {
            Ok(Member {
                user_id: row.get(0)?,
                email: row.get(1)?,
                first_name: row.get(2)?,
                last_name: row.get(3)?,
                role: row.get(4)?,
                joined_at: row.get::<_, Millis>(5)?.0,
            })
        })
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
}

/// Sets a member's role: the organisation keeps an owner, and the member's
/// pending invitations the new role may not send end.
pub(super) fn set_role(
    conn: &mut Connection,
    org: &OrgId,
    user: &UserId,
    role: Role,
) -> Result<Membership, StoreError> {
    let tx = write_tx(conn)?;
    let current = select_membership(&tx, org, user)?;
    if current.role == Role::Owner && role != Role::Owner {
        ensure_other_owner(&tx, org)?;
    }
    let membership = tx
        .cached_row(
            &format!(
                "UPDATE memberships SET role = ?3 WHERE org_id = ?1 AND user_id = ?2
                 RETURNING {MEMBERSHIP_COLUMNS}"
            ),
            params![org, user, role],
            membership_from_row,
        )
        .map_err(db_error)?;
    match role {
        Role::Owner => {}
        Role::Admin => end_invitations_by(&tx, org, user, Some(Role::Owner), Millis::now())?,
        Role::Member => end_invitations_by(&tx, org, user, None, Millis::now())?,
    }
    tx.commit().map_err(db_error)?;
    Ok(membership)
}

/// Removes a member (the organisation keeps an owner), ends the invitations
/// they sent and deletes their personal access tokens there.
pub(super) fn remove_member(
    conn: &mut Connection,
    org: &OrgId,
    user: &UserId,
) -> Result<(), StoreError> {
    let tx = write_tx(conn)?;
    let current = select_membership(&tx, org, user)?;
    if current.role == Role::Owner {
        ensure_other_owner(&tx, org)?;
    }
    tx.execute("DELETE FROM memberships WHERE org_id = ?1 AND user_id = ?2", params![org, user])
        .map_err(db_error)?;
    end_invitations_by(&tx, org, user, None, Millis::now())?;
    super::personal_tokens::delete_of_member(&tx, org, user)?;
    tx.commit().map_err(db_error)
}

/// What a new session stands on, owned (see [`SessionGrant`]).
#[derive(Debug)]
pub(super) enum Grant {
    /// The password hash that was verified.
    Password(String),
    /// The session it replaces (revoked in the same transaction).
    Replaces(SessionId),
}

impl From<SessionGrant<'_>> for Grant {
    fn from(grant: SessionGrant<'_>) -> Self {
        match grant {
            SessionGrant::Password(hash) => Grant::Password(hash.to_owned()),
            SessionGrant::Replaces(old) => Grant::Replaces(old.clone()),
        }
    }
}

/// A new session of `user`, if what `grant` stands on still holds (else `Stale`).
pub(super) fn create_session(
    conn: &mut Connection,
    user: &UserId,
    expires_at: DateTime<Utc>,
    grant: &Grant,
) -> Result<Session, StoreError> {
    // A write transaction: a password change cannot slip in between
    // the check and the insert.
    let tx = write_tx(conn)?;
    let now = Millis::now();
    let holds = match grant {
        Grant::Password(hash) => tx
            .query_row(
                "SELECT 1 FROM users WHERE id = ?1 AND password_hash = ?2",
                params![user, hash],
                |_| Ok(()),
            )
            .optional()
            .map_err(db_error)?
            .is_some(),
        Grant::Replaces(old) => {
            tx.execute(
                "UPDATE sessions SET revoked_at = ?3 WHERE id = ?1 AND user_id = ?2
                   AND revoked_at IS NULL AND expires_at > ?3",
                params![old, user, now],
            )
            .map_err(db_error)?
                == 1
        }
    };
    if !holds {
        return Err(StoreError::Stale);
    }
    let session = tx
        .cached_row(
            &format!(
                "INSERT INTO sessions (id, user_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4) RETURNING {SESSION_COLUMNS}"
            ),
            params![SessionId::random(), user, now, Millis(expires_at)],
            session_from_row,
        )
        .map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    Ok(session)
}

/// A session by id.
pub(super) fn get_session(conn: &Connection, id: &SessionId) -> Result<Session, StoreError> {
    conn.cached_row(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
        [id],
        session_from_row,
    )
    .map_err(db_error)
}

/// A session, its user and their membership of `org`, in one snapshot.
pub(super) fn session_context(
    conn: &mut Connection,
    id: &SessionId,
    org: &OrgId,
) -> Result<(Session, User, Membership), StoreError> {
    // One snapshot for the three reads.
    let tx = conn.transaction().map_err(db_error)?;
    let session = get_session(&tx, id)?;
    let user = select_user(&tx, &session.user_id)?;
    let membership = select_membership(&tx, org, &user.id)?;
    Ok((session, user, membership))
}

/// Revokes one session (an earlier revocation time stays).
pub(super) fn revoke_session(conn: &Connection, id: &SessionId) -> Result<(), StoreError> {
    let changed = conn
        .execute(
            "UPDATE sessions SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
            params![id, Millis::now()],
        )
        .map_err(db_error)?;
    if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// Sets a new password if `old_hash` is still the user's and `keep` still
/// active (else `Stale`), ends the reset links and revokes every other
/// session; returns how many were revoked.
pub(super) fn change_password(
    conn: &mut Connection,
    id: &UserId,
    old_hash: &str,
    password_hash: &str,
    keep: &SessionId,
) -> Result<u64, StoreError> {
    let tx = write_tx(conn)?;
    let at = Millis::now();
    let current: Option<String> = tx
        .query_row("SELECT password_hash FROM users WHERE id = ?1", [id], |r| r.get(0))
        .optional()
        .map_err(db_error)?;
    let kept = tx
        .query_row(
            "SELECT 1 FROM sessions WHERE id = ?1 AND user_id = ?2
               AND revoked_at IS NULL AND expires_at > ?3",
            params![keep, id, at],
            |_| Ok(()),
        )
        .optional()
        .map_err(db_error)?;
    match current {
        None => return Err(StoreError::NotFound),
        Some(hash) if hash != old_hash || kept.is_none() => return Err(StoreError::Stale),
        Some(_) => {}
    }
    update_password(&tx, id, password_hash, at)?;
    end_reset_tokens(&tx, id, at)?;
    let signed_out = revoke_sessions_but(&tx, id, keep, at)?;
    delete_personal_tokens_of(&tx, id)?;
    tx.commit().map_err(db_error)?;
    Ok(signed_out)
}

/// Stores a new one-time token (its hash).
pub(super) fn create_token(
    conn: &Connection,
    token: &NewToken,
) -> Result<OneTimeToken, StoreError> {
    conn.cached_row(
        &format!(
            "INSERT INTO one_time_tokens
                 (id, kind, token_hash, user_id, email, org_id, role, created_at,
                  expires_at, invited_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING {TOKEN_COLUMNS}"
        ),
        params![
            TokenId::random(),
            token.kind,
            token.token_hash,
            token.user_id,
            token.email,
            token.org_id,
            token.role,
            Millis::now(),
            Millis(token.expires_at),
            token.invited_by,
        ],
        token_from_row,
    )
    .map_err(db_error)
}

/// Consumes a verification token and marks its user verified.
pub(super) fn verify_email(
    conn: &mut Connection,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<User, StoreError> {
    let tx = write_tx(conn)?;
    let token = consume(&tx, TokenKind::EmailVerification, token_hash, Millis(now))?;
    let user_id = token_user(&token)?;
    // A token sent to an address the user no longer has proves nothing.
    let user = mark_verified(&tx, user_id, Some(&token.email), Millis::now())?;
    tx.commit().map_err(db_error)?;
    Ok(user)
}

/// The user of a usable reset token, which stays unused.
pub(super) fn password_reset_user(
    conn: &Connection,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<User, StoreError> {
    conn.cached_row(
        "SELECT u.id, u.email, u.password_hash, u.first_name, u.last_name,
                u.email_verified_at, u.created_at, u.updated_at
         FROM one_time_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.kind = ?1 AND t.token_hash = ?2 AND t.used_at IS NULL
           AND t.revoked_at IS NULL AND t.expires_at > ?3",
        params![TokenKind::PasswordReset, token_hash, Millis(now)],
        user_from_row,
    )
    .map_err(db_error)
}

/// Consumes a reset token, sets the password, ends the other reset links
/// and revokes every session of the user.
pub(super) fn reset_password(
    conn: &mut Connection,
    token_hash: &str,
    password_hash: &str,
    now: DateTime<Utc>,
) -> Result<User, StoreError> {
    let tx = write_tx(conn)?;
    let token = consume(&tx, TokenKind::PasswordReset, token_hash, Millis(now))?;
    let user_id = token_user(&token)?;
    let at = Millis::now();
    let user = update_password(&tx, user_id, password_hash, at)?;
    end_reset_tokens(&tx, user_id, at)?;
    revoke_all_sessions(&tx, user_id, at)?;
    delete_personal_tokens_of(&tx, user_id)?;
    tx.commit().map_err(db_error)?;
    Ok(user)
}

/// Consumes an invitation token and makes `user` a member.
pub(super) fn accept_invitation(
    conn: &mut Connection,
    token_hash: &str,
    user: &UserId,
    now: DateTime<Utc>,
) -> Result<Membership, StoreError> {
    let tx = write_tx(conn)?;
    let token = consume(&tx, TokenKind::Invitation, token_hash, Millis(now))?;
    let user = select_user(&tx, user)?;
    let membership = join_by(&tx, &token, &user)?;
    tx.commit().map_err(db_error)?;
    Ok(membership)
}

/// Consumes an invitation token and creates its (verified) user as a member.
pub(super) fn create_user_from_invitation(
    conn: &mut Connection,
    user: &NewUser,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<SignUp, StoreError> {
    let tx = write_tx(conn)?;
    let token = consume(&tx, TokenKind::Invitation, token_hash, Millis(now))?;
    let (org, role) = invitation_target(&token)?;
    ensure_sender_may_invite(&tx, &token)?;
    if normalize_email(&user.email) != token.email {
        return Err(StoreError::NotFound);
    }
    let at = Millis::now();
    let user = insert_user(&tx, user, Some(at), at)?;
    let membership = insert_membership(&tx, org, &user.id, role, at)?;
    let organization = select_org(&tx, org)?;
    tx.commit().map_err(db_error)?;
    Ok(SignUp { user, organization, membership })
}

/// The organisation's pending invitations, oldest first.
pub(super) fn list_invitations(
    conn: &Connection,
    org: &OrgId,
    now: DateTime<Utc>,
) -> Result<Vec<Invitation>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {INVITATION_COLUMNS} {INVITATION_FROM}
             ORDER BY t.created_at, t.rowid"
        ))
        .map_err(db_error)?;
    let rows = stmt
        .query_map(params![org, Millis(now), None::<TokenId>], invitation_from_row)
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
}

/// One pending invitation of the organisation.
pub(super) fn get_invitation(
    conn: &Connection,
    org: &OrgId,
    id: &TokenId,
    now: DateTime<Utc>,
) -> Result<Invitation, StoreError> {
    conn.cached_row(
        &format!("SELECT {INVITATION_COLUMNS} {INVITATION_FROM}"),
        params![org, Millis(now), Some(id)],
        invitation_from_row,
    )
    .map_err(db_error)
}

/// Revokes one pending invitation of the organisation.
pub(super) fn revoke_invitation(
    conn: &Connection,
    org: &OrgId,
    id: &TokenId,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let changed = conn
        .execute(
            "UPDATE one_time_tokens SET revoked_at = ?3
             WHERE id = ?2 AND org_id = ?1 AND kind = 'invitation' AND used_at IS NULL
               AND revoked_at IS NULL AND expires_at > ?3",
            params![org, id, Millis(now)],
        )
        .map_err(db_error)?;
    if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// Gives a pending invitation a new token, expiry and sender.
pub(super) fn renew_invitation(
    conn: &mut Connection,
    org: &OrgId,
    id: &TokenId,
    by: &UserId,
    token_hash: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Invitation, StoreError> {
    let tx = write_tx(conn)?;
    let changed = tx
        .execute(
            "UPDATE one_time_tokens SET token_hash = ?4, expires_at = ?5, invited_by = ?6
             WHERE id = ?2 AND org_id = ?1 AND kind = 'invitation' AND used_at IS NULL
               AND revoked_at IS NULL AND expires_at > ?3",
            params![org, id, Millis(now), token_hash, Millis(expires_at), by],
        )
        .map_err(db_error)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    let renewed = tx
        .cached_row(
            &format!("SELECT {INVITATION_COLUMNS} {INVITATION_FROM}"),
            params![org, Millis(now), Some(id)],
            invitation_from_row,
        )
        .map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    Ok(renewed)
}

/// The pending invitation of a token, as its recipient sees it.
pub(super) fn invitation_by_token(
    conn: &Connection,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<ReceivedInvitation, StoreError> {
    conn.cached_row(
        &format!("{RECEIVED_SELECT} AND t.token_hash = ?1"),
        params![token_hash, Millis(now)],
        received_from_row,
    )
    .map_err(db_error)
}

/// The pending invitations sent to this (normalised) email, oldest first.
pub(super) fn invitations_for_email(
    conn: &Connection,
    email: &str,
    now: DateTime<Utc>,
) -> Result<Vec<ReceivedInvitation>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "{RECEIVED_SELECT} AND t.email = ?1 ORDER BY t.created_at, t.rowid"
        ))
        .map_err(db_error)?;
    let rows = stmt.query_map(params![email, Millis(now)], received_from_row).map_err(db_error)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
}

/// Consumes the invitation `id` for a verified `user` and makes them a member.
pub(super) fn accept_invitation_by_id(
    conn: &mut Connection,
    id: &TokenId,
    user: &UserId,
    now: DateTime<Utc>,
) -> Result<Membership, StoreError> {
    let tx = write_tx(conn)?;
    let token = tx
        .cached_row(
            &format!(
                "UPDATE one_time_tokens SET used_at = ?2
                 WHERE kind = 'invitation' AND id = ?1 AND used_at IS NULL
                   AND revoked_at IS NULL AND expires_at > ?2
                 RETURNING {TOKEN_COLUMNS}"
            ),
            params![id, Millis(now)],
            token_from_row,
        )
        .map_err(db_error)?;
    let user = select_user(&tx, user)?;
    // Without the token, only a verified address proves the invitation reached its owner.
    if !user.is_verified() {
        return Err(StoreError::NotFound);
    }
    let membership = join_by(&tx, &token, &user)?;
    tx.commit().map_err(db_error)?;
    Ok(membership)
}

/// A new organisation owned by `owner`.
pub(super) fn create_organization(
    conn: &mut Connection,
    owner: &UserId,
    name: &str,
) -> Result<(Organization, Membership), StoreError> {
    let tx = write_tx(conn)?;
    let at = Millis::now();
    select_user(&tx, owner)?;
    let organization = insert_org(&tx, name, at)?;
    let membership = insert_membership(&tx, &organization.id, owner, Role::Owner, at)?;
    tx.commit().map_err(db_error)?;
    Ok((organization, membership))
}

/// Deletes the organisation with everything it holds, if `by` is still one
/// of its owners (else `Stale`); returns its connections, whose agents the
/// caller sends away.
pub(super) fn delete_organization(
    conn: &mut Connection,
    org: &OrgId,
    by: &UserId,
) -> Result<Vec<ConnectionId>, StoreError> {
    let tx = write_tx(conn)?;
    select_org(&tx, org)?;
    match select_membership(&tx, org, by) {
        Ok(m) if m.role == Role::Owner => {}
        Ok(_) | Err(StoreError::NotFound) => return Err(StoreError::Stale),
        Err(e) => return Err(e),
    }
    let connections = {
        let mut stmt =
            tx.prepare_cached("SELECT id FROM connections WHERE org_id = ?1").map_err(db_error)?;
        let rows = stmt.query_map([org], |r| r.get(0)).map_err(db_error)?;
        rows.collect::<rusqlite::Result<Vec<ConnectionId>>>().map_err(db_error)?
    };
    // Memberships, invitations, personal tokens, connections, schemas and
    // history cascade.
    tx.execute("DELETE FROM organizations WHERE id = ?1", [org]).map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    Ok(connections)
}

/// Inserts a user (`verified_at` for one whose invitation proved the email).
fn insert_user(
    conn: &Connection,
    user: &NewUser,
    verified_at: Option<Millis>,
    at: Millis,
) -> Result<User, StoreError> {
    conn.cached_row(
        &format!(
            "INSERT INTO users (id, email, password_hash, first_name, last_name,
                                email_verified_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING {USER_COLUMNS}"
        ),
        params![
            UserId::random(),
            normalize_email(&user.email),
            user.password_hash,
            user.first_name,
            user.last_name,
            verified_at,
            at,
        ],
        user_from_row,
    )
    .map_err(|e| conflict_or(e, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE, ConflictKind::Email))
}

/// Inserts an organisation.
fn insert_org(conn: &Connection, name: &str, at: Millis) -> Result<Organization, StoreError> {
    conn.cached_row(
        &format!(
            "INSERT INTO organizations (id, name, created_at) VALUES (?1, ?2, ?3)
             RETURNING {ORG_COLUMNS}"
        ),
        params![OrgId::random(), name, at],
        org_from_row,
    )
    .map_err(db_error)
}

/// Inserts a membership; an existing one is a [`ConflictKind::Membership`].
fn insert_membership(
    conn: &Connection,
    org: &OrgId,
    user: &UserId,
    role: Role,
    at: Millis,
) -> Result<Membership, StoreError> {
    conn.cached_row(
        &format!(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)
             RETURNING {MEMBERSHIP_COLUMNS}"
        ),
        params![org, user, role, at],
        membership_from_row,
    )
    .map_err(|e| {
        conflict_or(e, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY, ConflictKind::Membership)
    })
}

/// A user by id.
pub(super) fn select_user(conn: &Connection, id: &UserId) -> Result<User, StoreError> {
    conn.cached_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"), [id], user_from_row)
        .map_err(db_error)
}

/// An organisation by id.
pub(super) fn select_org(conn: &Connection, id: &OrgId) -> Result<Organization, StoreError> {
    conn.cached_row(
        &format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id = ?1"),
        [id],
        org_from_row,
    )
    .map_err(db_error)
}

/// A membership of `user` in `org`.
pub(super) fn select_membership(
    conn: &Connection,
    org: &OrgId,
    user: &UserId,
) -> Result<Membership, StoreError> {
    conn.cached_row(
        &format!("SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE org_id = ?1 AND user_id = ?2"),
        params![org, user],
        membership_from_row,
    )
    .map_err(db_error)
}

/// Fails with [`StoreError::LastOwner`] unless the organisation has two owners or more.
fn ensure_other_owner(conn: &Connection, org: &OrgId) -> Result<(), StoreError> {
    let owners: i64 = conn
        .cached_row(
            "SELECT count(*) FROM memberships WHERE org_id = ?1 AND role = 'owner'",
            [org],
            |r| r.get(0),
        )
        .map_err(db_error)?;
    if owners <= 1 { Err(StoreError::LastOwner) } else { Ok(()) }
}

/// Sets a user's password hash.
fn update_password(
    conn: &Connection,
    id: &UserId,
    password_hash: &str,
    at: Millis,
) -> Result<User, StoreError> {
    conn.cached_row(
        &format!(
            "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1
             RETURNING {USER_COLUMNS}"
        ),
        params![id, password_hash, at],
        user_from_row,
    )
    .map_err(db_error)
}

/// Marks the user verified, keeping an earlier verification time; when `email`
/// is given, only if the user still has that email.
pub(super) fn mark_verified(
    conn: &Connection,
    id: &UserId,
    email: Option<&str>,
    at: Millis,
) -> Result<User, StoreError> {
    conn.cached_row(
        &format!(
            "UPDATE users SET email_verified_at = coalesce(email_verified_at, ?3), updated_at = ?3
             WHERE id = ?1 AND (?2 IS NULL OR email = ?2) RETURNING {USER_COLUMNS}"
        ),
        params![id, email, at],
        user_from_row,
    )
    .map_err(db_error)
}

/// Ends every outstanding password-reset token of the user.
fn end_reset_tokens(conn: &Connection, user: &UserId, at: Millis) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE one_time_tokens SET revoked_at = ?2
         WHERE kind = 'password_reset' AND user_id = ?1 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .and_then(|mut stmt| stmt.execute(params![user, at]))
    .map(drop)
    .map_err(db_error)
}

/// Ends the pending invitations `inviter` sent to `org`: those of `role`
/// only, or all of them.
fn end_invitations_by(
    conn: &Connection,
    org: &OrgId,
    inviter: &UserId,
    role: Option<Role>,
    at: Millis,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE one_time_tokens SET revoked_at = ?4
         WHERE kind = 'invitation' AND org_id = ?1 AND invited_by = ?2
           AND (?3 IS NULL OR role = ?3) AND used_at IS NULL AND revoked_at IS NULL",
    )
    .and_then(|mut stmt| stmt.execute(params![org, inviter, role, at]))
    .map(drop)
    .map_err(db_error)
}

/// Refuses (NotFound) an invitation whose sender is no longer a member of its
/// organisation, or no longer may invite to its role; invitations from before
/// senders were recorded have none to check.
fn ensure_sender_may_invite(conn: &Connection, token: &OneTimeToken) -> Result<(), StoreError> {
    let (Some(sender), (org, role)) = (&token.invited_by, invitation_target(token)?) else {
        return Ok(());
    };
    let sender = select_membership(conn, org, sender)?;
    let may = match sender.role {
        Role::Owner => true,
        Role::Admin => role != Role::Owner,
        Role::Member => false,
    };
    if may { Ok(()) } else { Err(StoreError::NotFound) }
}

/// Revokes the user's unrevoked sessions other than `keep`; returns how many.
pub(super) fn revoke_sessions_but(
    conn: &Connection,
    user: &UserId,
    keep: &SessionId,
    at: Millis,
) -> Result<u64, StoreError> {
    let changed = conn
        .execute(
            "UPDATE sessions SET revoked_at = ?3
             WHERE user_id = ?1 AND id <> ?2 AND revoked_at IS NULL",
            params![user, keep, at],
        )
        .map_err(db_error)?;
    Ok(changed as u64)
}

/// Makes `user` a member through the consumed invitation `token`: it must
/// have been sent to the user's email by a sender who still may send it
/// (else NotFound); an existing member is a [`ConflictKind::Membership`].
fn join_by(conn: &Connection, token: &OneTimeToken, user: &User) -> Result<Membership, StoreError> {
    let (org, role) = invitation_target(token)?;
    ensure_sender_may_invite(conn, token)?;
    if user.email != token.email {
        return Err(StoreError::NotFound);
    }
    insert_membership(conn, org, &user.id, role, Millis::now())
}

/// Deletes every personal access token of the user, in every organisation:
/// whoever knew the old password may have made some.
fn delete_personal_tokens_of(conn: &Connection, user: &UserId) -> Result<(), StoreError> {
    conn.execute("DELETE FROM personal_tokens WHERE user_id = ?1", [user]).map_err(db_error)?;
    Ok(())
}

/// Revokes every unrevoked session of the user; returns how many.
pub(super) fn revoke_all_sessions(
    conn: &Connection,
    user: &UserId,
    at: Millis,
) -> Result<u64, StoreError> {
    let changed = conn
        .execute(
            "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
            params![user, at],
        )
        .map_err(db_error)?;
    Ok(changed as u64)
}

/// Marks the token used in one statement, so concurrent consumers cannot both win.
pub(super) fn consume(
    conn: &Connection,
    kind: TokenKind,
    token_hash: &str,
    now: Millis,
) -> Result<OneTimeToken, StoreError> {
    conn.cached_row(
        &format!(
            "UPDATE one_time_tokens SET used_at = ?3
             WHERE kind = ?1 AND token_hash = ?2 AND used_at IS NULL AND revoked_at IS NULL
               AND expires_at > ?3
             RETURNING {TOKEN_COLUMNS}"
        ),
        params![kind, token_hash, now],
        token_from_row,
    )
    .map_err(db_error)
}

/// The user a token was issued to.
fn token_user(token: &OneTimeToken) -> Result<&UserId, StoreError> {
    token.user_id.as_ref().ok_or_else(|| StoreError::Internal("token has no user".to_owned()))
}

/// The organisation and role an invitation is for.
fn invitation_target(token: &OneTimeToken) -> Result<(&OrgId, Role), StoreError> {
    match (&token.org_id, token.role) {
        (Some(org), Some(role)) => Ok((org, role)),
        _ => Err(StoreError::Internal("invitation has no organization or role".to_owned())),
    }
}
