//! The accounts' SQL for [`PostgresStore`](super::PostgresStore): users,
//! organisations and their members, sessions, and one-time tokens
//! (verification, reset, invitation).
//!
//! Each function translates its namesake of the SQLite store. A single
//! statement runs on its own ([`single`]); a write that reads before it
//! writes runs in a `SERIALIZABLE` transaction that [`retry`] runs again when
//! PostgreSQL gives it up for a concurrent one, where SQLite has its single
//! writer: of two admins demoting an organisation's last two owners at once,
//! one is refused. Statements go through the connection's statement cache,
//! so the hot ones (the session context of every request) are parsed once.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::rows::{
    self, INVITATION_COLUMNS, MEMBERSHIP_COLUMNS, ORG_COLUMNS, PgError, RECEIVED_SELECT,
    SESSION_COLUMNS, TOKEN_COLUMNS, USER_COLUMNS, at_millis, invitation_from_row, matched,
    membership_from_row, org_from_row, received_from_row, session_from_row, token_from_row,
    user_from_row,
};
use super::{
    Params, PostgresStore, all_rows, execute, one_row, opt_row, retry, serializable, single,
};
use crate::store::sql::{column_count, qualified};
use crate::store::{
    ConnectionId, Invitation, Member, Membership, NewToken, NewUser, OneTimeToken, OrgId,
    Organization, ProfileUpdate, ReceivedInvitation, Role, Session, SessionGrant, SessionId,
    SignUp, StoreError, TokenId, TokenKind, User, UserId, normalize_email,
};

/// The organisation's (`$1`) pending invitations at `$2`, or only the one
/// with id `$3` when it is not NULL.
const INVITATION_FROM: &str = "FROM one_time_tokens t LEFT JOIN users u ON u.id = t.invited_by
     WHERE t.kind = 'invitation' AND t.org_id = $1 AND t.used_at IS NULL
       AND t.revoked_at IS NULL AND t.expires_at > $2 AND ($3::text IS NULL OR t.id = $3)";

/// Invitations (`t`) oldest first; `seq` orders those sent in the same
/// millisecond, as SQLite's rowid does.
const INVITATIONS_OLDEST_FIRST: &str = "ORDER BY t.created_at, t.seq";

/// A session (`s`), its user (`u`) and the user's membership (`m`) of the
/// organisation `$2`, in one statement: every request reads it.
static SESSION_CONTEXT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {}, {}
         FROM sessions s
         JOIN users u ON u.id = s.user_id
         JOIN memberships m ON m.user_id = s.user_id AND m.org_id = $2
         WHERE s.id = $1",
        qualified("s", SESSION_COLUMNS),
        qualified("u", USER_COLUMNS),
        qualified("m", MEMBERSHIP_COLUMNS),
    )
});

/// A new user, unverified.
pub(super) async fn create_user(store: &PostgresStore, user: NewUser) -> Result<User, StoreError> {
    let user = &user;
    single(store, |client| async move { insert_user(&client, user, None, rows::now()).await }).await
}

/// A new user with a new organisation they own, in one transaction.
pub(super) async fn create_user_with_org(
    store: &PostgresStore,
    user: NewUser,
    org_name: String,
) -> Result<SignUp, StoreError> {
    let (user, org_name) = (&user, org_name.as_str());
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let at = rows::now();
        let user = insert_user(&tx, user, None, at).await?;
        let organization = insert_org(&tx, org_name, at).await?;
        let membership =
            insert_membership(&tx, &organization.id, &user.id, Role::Owner, at).await?;
        tx.commit().await?;
        Ok(SignUp { user, organization, membership })
    })
    .await
}

/// A user by id.
pub(super) async fn get_user(store: &PostgresStore, id: &UserId) -> Result<User, StoreError> {
    single(store, |client| async move { select_user(&client, id).await }).await
}

/// The user with this email, normalised as it is stored.
pub(super) async fn get_user_by_email(
    store: &PostgresStore,
    email: &str,
) -> Result<User, StoreError> {
    let email = &normalize_email(email);
    single(store, |client| async move {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        user_from_row(&one_row(&client, &sql, &[email]).await?, 0)
    })
    .await
}

/// Sets the user's names.
pub(super) async fn update_profile(
    store: &PostgresStore,
    id: &UserId,
    profile: ProfileUpdate,
) -> Result<User, StoreError> {
    let profile = &profile;
    single(store, |client| async move {
        let sql = format!(
            "UPDATE users SET first_name = $2, last_name = $3, updated_at = $4
             WHERE id = $1 RETURNING {USER_COLUMNS}"
        );
        let params: Params = &[&id.as_str(), &profile.first_name, &profile.last_name, &rows::now()];
        user_from_row(&one_row(&client, &sql, params).await?, 0)
    })
    .await
}

/// Sets the password hash and ends the user's outstanding reset links.
pub(super) async fn set_password_hash(
    store: &PostgresStore,
    id: &UserId,
    password_hash: String,
) -> Result<(), StoreError> {
    let password_hash = password_hash.as_str();
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let at = rows::now();
        update_password(&tx, id, password_hash, at).await?;
        end_reset_tokens(&tx, id, at).await?;
        Ok(tx.commit().await?)
    })
    .await
}

/// Marks the user verified (an earlier verification time stays).
pub(super) async fn mark_email_verified(
    store: &PostgresStore,
    id: &UserId,
) -> Result<User, StoreError> {
    single(store, |client| async move { mark_verified(&client, id, None, rows::now()).await }).await
}

/// An organisation by id.
pub(super) async fn get_organization(
    store: &PostgresStore,
    org: &OrgId,
) -> Result<Organization, StoreError> {
    single(store, |client| async move { select_org(&client, org).await }).await
}

/// The user's organisations with their memberships, oldest membership first.
pub(super) async fn organizations_of_user(
    store: &PostgresStore,
    user: &UserId,
) -> Result<Vec<(Organization, Membership)>, StoreError> {
    single(store, |client| async move {
        let sql = format!(
            "SELECT {}, {}
             FROM memberships m JOIN organizations o ON o.id = m.org_id
             WHERE m.user_id = $1 ORDER BY m.created_at, m.org_id",
            qualified("o", ORG_COLUMNS),
            qualified("m", MEMBERSHIP_COLUMNS),
        );
        let at = column_count(ORG_COLUMNS);
        all_rows(&client, &sql, &[&user.as_str()])
            .await?
            .iter()
            .map(|row| Ok((org_from_row(row, 0)?, membership_from_row(row, at)?)))
            .collect()
    })
    .await
}

/// The organisation's members, oldest first; NotFound for an unknown organisation.
pub(super) async fn list_members(
    store: &PostgresStore,
    org: &OrgId,
) -> Result<Vec<Member>, StoreError> {
    // One statement, so the organisation check and the list see one snapshot:
    // no row is an unknown organisation, a row without a member one with none.
    const SQL: &str = "
        SELECT u.id, u.email, u.first_name, u.last_name, m.role, m.created_at
        FROM organizations o
        LEFT JOIN memberships m ON m.org_id = o.id
        LEFT JOIN users u ON u.id = m.user_id
        WHERE o.id = $1 ORDER BY m.created_at, u.id";
    single(store, |client| async move {
        let listed = all_rows(&client, SQL, &[&org.as_str()]).await?;
        if listed.is_empty() {
            return Err(StoreError::NotFound.into());
        }
        let mut members = Vec::with_capacity(listed.len());
        for row in &listed {
            let Some(user_id) = row.try_get::<_, Option<UserId>>(0)? else { continue };
            members.push(Member {
                user_id,
                email: row.try_get(1)?,
                first_name: row.try_get(2)?,
                last_name: row.try_get(3)?,
                role: row.try_get(4)?,
                joined_at: row.try_get(5)?,
            });
        }
        Ok(members)
    })
    .await
}

/// The user's membership of the organisation.
pub(super) async fn get_membership(
    store: &PostgresStore,
    org: &OrgId,
    user: &UserId,
) -> Result<Membership, StoreError> {
    single(store, |client| async move { select_membership(&client, org, user).await }).await
}

/// Sets a member's role: the organisation keeps an owner, and the member's
/// pending invitations the new role may not send end.
pub(super) async fn set_role(
    store: &PostgresStore,
    org: &OrgId,
    user: &UserId,
    role: Role,
) -> Result<Membership, StoreError> {
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let current = select_membership(&tx, org, user).await?;
        if current.role == Role::Owner && role != Role::Owner {
            ensure_other_owner(&tx, org).await?;
        }
        let sql = format!(
            "UPDATE memberships SET role = $3 WHERE org_id = $1 AND user_id = $2
             RETURNING {MEMBERSHIP_COLUMNS}"
        );
        let params: Params = &[&org.as_str(), &user.as_str(), &role.as_str()];
        let membership = membership_from_row(&one_row(&tx, &sql, params).await?, 0)?;
        match role {
            Role::Owner => {}
            Role::Admin => {
                end_invitations_by(&tx, org, user, Some(Role::Owner), rows::now()).await?
            }
            Role::Member => end_invitations_by(&tx, org, user, None, rows::now()).await?,
        }
        tx.commit().await?;
        Ok(membership)
    })
    .await
}

/// Removes a member (the organisation keeps an owner), ends the invitations
/// they sent and deletes their personal access tokens there.
pub(super) async fn remove_member(
    store: &PostgresStore,
    org: &OrgId,
    user: &UserId,
) -> Result<(), StoreError> {
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let current = select_membership(&tx, org, user).await?;
        if current.role == Role::Owner {
            ensure_other_owner(&tx, org).await?;
        }
        let sql = "DELETE FROM memberships WHERE org_id = $1 AND user_id = $2";
        execute(&tx, sql, &[&org.as_str(), &user.as_str()]).await?;
        end_invitations_by(&tx, org, user, None, rows::now()).await?;
        super::personal_tokens::delete_of_member(&tx, org, user).await?;
        Ok(tx.commit().await?)
    })
    .await
}

/// A new session of `user`, if what `grant` stands on still holds (else `Stale`).
pub(super) async fn create_session(
    store: &PostgresStore,
    user: &UserId,
    expires_at: DateTime<Utc>,
    grant: SessionGrant<'_>,
) -> Result<Session, StoreError> {
    let expires_at = at_millis(expires_at);
    retry(|| async move {
        // Serializable: a password change cannot slip in between the check
        // and the insert.
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let now = rows::now();
        let holds = match grant {
            SessionGrant::Password(hash) => {
                let sql = "SELECT 1 FROM users WHERE id = $1 AND password_hash = $2";
                opt_row(&tx, sql, &[&user.as_str(), &hash]).await?.is_some()
            }
            SessionGrant::Replaces(old) => {
                let sql = "UPDATE sessions SET revoked_at = $3 WHERE id = $1 AND user_id = $2
                             AND revoked_at IS NULL AND expires_at > $3";
                execute(&tx, sql, &[&old.as_str(), &user.as_str(), &now]).await? == 1
            }
        };
        if !holds {
            return Err(StoreError::Stale.into());
        }
        let sql = format!(
            "INSERT INTO sessions (id, user_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4) RETURNING {SESSION_COLUMNS}"
        );
        let id = SessionId::random();
        let params: Params = &[&id.as_str(), &user.as_str(), &now, &expires_at];
        let session = session_from_row(&one_row(&tx, &sql, params).await?, 0)?;
        tx.commit().await?;
        Ok(session)
    })
    .await
}

/// A session by id.
pub(super) async fn get_session(
    store: &PostgresStore,
    id: &SessionId,
) -> Result<Session, StoreError> {
    single(store, |client| async move {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
        session_from_row(&one_row(&client, &sql, &[&id.as_str()]).await?, 0)
    })
    .await
}

/// A session, its user and their membership of `org`, in one statement.
pub(super) async fn session_context(
    store: &PostgresStore,
    session: &SessionId,
    org: &OrgId,
) -> Result<(Session, User, Membership), StoreError> {
    single(store, |client| async move {
        let params: Params = &[&session.as_str(), &org.as_str()];
        let row = one_row(&client, &SESSION_CONTEXT, params).await?;
        let user_at = column_count(SESSION_COLUMNS);
        let membership_at = user_at + column_count(USER_COLUMNS);
        Ok((
            session_from_row(&row, 0)?,
            user_from_row(&row, user_at)?,
            membership_from_row(&row, membership_at)?,
        ))
    })
    .await
}

/// Revokes one session (an earlier revocation time stays).
pub(super) async fn revoke_session(
    store: &PostgresStore,
    id: &SessionId,
) -> Result<(), StoreError> {
    single(store, |client| async move {
        let sql = "UPDATE sessions SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1";
        matched(execute(&client, sql, &[&id.as_str(), &rows::now()]).await?)
    })
    .await
}

/// Revokes every unrevoked session of the user; returns how many.
///
/// Serializable, like the session it must not miss: a session created at
/// the same moment (switching organisation replaces one) is either seen and
/// revoked here or made `Stale` there; read committed would let it slip by.
pub(super) async fn revoke_user_sessions(
    store: &PostgresStore,
    user: &UserId,
) -> Result<u64, StoreError> {
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let revoked = revoke_all_sessions(&tx, user, rows::now()).await?;
        tx.commit().await?;
        Ok(revoked)
    })
    .await
}

/// Revokes the user's unrevoked sessions other than `keep`; returns how
/// many. Serializable, as [`revoke_user_sessions`] is.
pub(super) async fn revoke_other_sessions(
    store: &PostgresStore,
    user: &UserId,
    keep: &SessionId,
) -> Result<u64, StoreError> {
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let revoked = revoke_sessions_but(&tx, user, keep, rows::now()).await?;
        tx.commit().await?;
        Ok(revoked)
    })
    .await
}

/// Sets a new password if `old_hash` is still the user's and `keep` still
/// active (else `Stale`), ends the reset links and revokes every other
/// session; returns how many were revoked.
pub(super) async fn change_password(
    store: &PostgresStore,
    id: &UserId,
    old_hash: &str,
    password_hash: String,
    keep: &SessionId,
) -> Result<u64, StoreError> {
    let password_hash = password_hash.as_str();
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let at = rows::now();
        let sql = "SELECT password_hash FROM users WHERE id = $1";
        let current: Option<String> = match opt_row(&tx, sql, &[&id.as_str()]).await? {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        };
        let sql = "SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2
                     AND revoked_at IS NULL AND expires_at > $3";
        let kept = opt_row(&tx, sql, &[&keep.as_str(), &id.as_str(), &at]).await?;
        match current {
            None => return Err(StoreError::NotFound.into()),
            Some(hash) if hash != old_hash || kept.is_none() => {
                return Err(StoreError::Stale.into());
            }
            Some(_) => {}
        }
        update_password(&tx, id, password_hash, at).await?;
        end_reset_tokens(&tx, id, at).await?;
        let signed_out = revoke_sessions_but(&tx, id, keep, at).await?;
        delete_personal_tokens_of(&tx, id).await?;
        tx.commit().await?;
        Ok(signed_out)
    })
    .await
}

/// Stores a new one-time token (its hash).
pub(super) async fn create_token(
    store: &PostgresStore,
    token: NewToken,
) -> Result<OneTimeToken, StoreError> {
    let token = &token;
    single(store, |client| async move {
        let sql = format!(
            "INSERT INTO one_time_tokens
                 (id, kind, token_hash, user_id, email, org_id, role, created_at,
                  expires_at, invited_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {TOKEN_COLUMNS}"
        );
        let id = TokenId::random();
        let params: Params = &[
            &id.as_str(),
            &token.kind.as_str(),
            &token.token_hash,
            &token.user_id.as_ref().map(UserId::as_str),
            &token.email,
            &token.org_id.as_ref().map(OrgId::as_str),
            &token.role.map(Role::as_str),
            &rows::now(),
            &at_millis(token.expires_at),
            &token.invited_by.as_ref().map(UserId::as_str),
        ];
        token_from_row(&one_row(&client, &sql, params).await?)
    })
    .await
}

/// Marks the token used, if it is of `kind`, unused, not ended and unexpired.
pub(super) async fn consume_token(
    store: &PostgresStore,
    kind: TokenKind,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<OneTimeToken, StoreError> {
    let now = at_millis(now);
    single(store, |client| async move { consume(&client, kind, token_hash, now).await }).await
}

/// Consumes a verification token and marks its user verified.
pub(super) async fn verify_email(
    store: &PostgresStore,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<User, StoreError> {
    let at = at_millis(now);
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let token = consume(&tx, TokenKind::EmailVerification, token_hash, at).await?;
        let user_id = token_user(&token)?;
        // A token sent to an address the user no longer has proves nothing.
        let user = mark_verified(&tx, user_id, Some(&token.email), rows::now()).await?;
        tx.commit().await?;
        Ok(user)
    })
    .await
}

/// The user of a usable reset token, which stays unused.
pub(super) async fn password_reset_user(
    store: &PostgresStore,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<User, StoreError> {
    let now = at_millis(now);
    single(store, |client| async move {
        let sql = format!(
            "SELECT {} FROM one_time_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.kind = $1 AND t.token_hash = $2 AND t.used_at IS NULL
               AND t.revoked_at IS NULL AND t.expires_at > $3",
            qualified("u", USER_COLUMNS),
        );
        let params: Params = &[&TokenKind::PasswordReset.as_str(), &token_hash, &now];
        user_from_row(&one_row(&client, &sql, params).await?, 0)
    })
    .await
}

/// Consumes a reset token, sets the password, ends the other reset links
/// and revokes every session of the user.
pub(super) async fn reset_password(
    store: &PostgresStore,
    token_hash: &str,
    password_hash: String,
    now: DateTime<Utc>,
) -> Result<User, StoreError> {
    let (password_hash, now) = (password_hash.as_str(), at_millis(now));
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let token = consume(&tx, TokenKind::PasswordReset, token_hash, now).await?;
        let user_id = token_user(&token)?;
        let at = rows::now();
        let user = update_password(&tx, user_id, password_hash, at).await?;
        end_reset_tokens(&tx, user_id, at).await?;
        revoke_all_sessions(&tx, user_id, at).await?;
        delete_personal_tokens_of(&tx, user_id).await?;
        tx.commit().await?;
        Ok(user)
    })
    .await
}

/// Consumes an invitation token and makes `user` a member.
pub(super) async fn accept_invitation(
    store: &PostgresStore,
    token_hash: &str,
    user: &UserId,
    now: DateTime<Utc>,
) -> Result<Membership, StoreError> {
    let now = at_millis(now);
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let token = consume(&tx, TokenKind::Invitation, token_hash, now).await?;
        let user = select_user(&tx, user).await?;
        let membership = join_by(&tx, &token, &user).await?;
        tx.commit().await?;
        Ok(membership)
    })
    .await
}

/// Consumes an invitation token and creates its (verified) user as a member.
pub(super) async fn create_user_from_invitation(
    store: &PostgresStore,
    user: NewUser,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<SignUp, StoreError> {
    let (user, now) = (&user, at_millis(now));
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let token = consume(&tx, TokenKind::Invitation, token_hash, now).await?;
        let (org, role) = invitation_target(&token)?;
        ensure_sender_may_invite(&tx, &token).await?;
        if normalize_email(&user.email) != token.email {
            return Err(StoreError::NotFound.into());
        }
        let at = rows::now();
        let user = insert_user(&tx, user, Some(at), at).await?;
        let membership = insert_membership(&tx, org, &user.id, role, at).await?;
        let organization = select_org(&tx, org).await?;
        tx.commit().await?;
        Ok(SignUp { user, organization, membership })
    })
    .await
}

/// The organisation's pending invitations, oldest first.
pub(super) async fn list_invitations(
    store: &PostgresStore,
    org: &OrgId,
    now: DateTime<Utc>,
) -> Result<Vec<Invitation>, StoreError> {
    let now = at_millis(now);
    single(store, |client| async move {
        let sql =
            format!("SELECT {INVITATION_COLUMNS} {INVITATION_FROM} {INVITATIONS_OLDEST_FIRST}");
        let params: Params = &[&org.as_str(), &now, &None::<&str>];
        all_rows(&client, &sql, params).await?.iter().map(invitation_from_row).collect()
    })
    .await
}

/// One pending invitation of the organisation.
pub(super) async fn get_invitation(
    store: &PostgresStore,
    org: &OrgId,
    id: &TokenId,
    now: DateTime<Utc>,
) -> Result<Invitation, StoreError> {
    let now = at_millis(now);
    single(store, |client| async move { select_invitation(&client, org, id, now).await }).await
}

/// Revokes one pending invitation of the organisation.
pub(super) async fn revoke_invitation(
    store: &PostgresStore,
    org: &OrgId,
    id: &TokenId,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let now = at_millis(now);
    single(store, |client| async move {
        let sql = "UPDATE one_time_tokens SET revoked_at = $3
                   WHERE id = $2 AND org_id = $1 AND kind = 'invitation' AND used_at IS NULL
                     AND revoked_at IS NULL AND expires_at > $3";
        matched(execute(&client, sql, &[&org.as_str(), &id.as_str(), &now]).await?)
    })
    .await
}

/// Gives a pending invitation a new token, expiry and sender.
pub(super) async fn renew_invitation(
    store: &PostgresStore,
    org: &OrgId,
    id: &TokenId,
    by: &UserId,
    token_hash: String,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Invitation, StoreError> {
    let (token_hash, expires_at, now) =
        (token_hash.as_str(), at_millis(expires_at), at_millis(now));
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let sql = "UPDATE one_time_tokens SET token_hash = $4, expires_at = $5, invited_by = $6
                   WHERE id = $2 AND org_id = $1 AND kind = 'invitation' AND used_at IS NULL
                     AND revoked_at IS NULL AND expires_at > $3";
        let params: Params =
            &[&org.as_str(), &id.as_str(), &now, &token_hash, &expires_at, &by.as_str()];
        if execute(&tx, sql, params).await? == 0 {
            return Err(StoreError::NotFound.into());
        }
        let renewed = select_invitation(&tx, org, id, now).await?;
        tx.commit().await?;
        Ok(renewed)
    })
    .await
}

/// The pending invitation of a token, as its recipient sees it.
pub(super) async fn invitation_by_token(
    store: &PostgresStore,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<ReceivedInvitation, StoreError> {
    let now = at_millis(now);
    single(store, |client| async move {
        let sql = format!("{RECEIVED_SELECT} AND t.token_hash = $1");
        received_from_row(&one_row(&client, &sql, &[&token_hash, &now]).await?)
    })
    .await
}

/// The pending invitations sent to this email (normalised as stored), oldest first.
pub(super) async fn invitations_for_email(
    store: &PostgresStore,
    email: &str,
    now: DateTime<Utc>,
) -> Result<Vec<ReceivedInvitation>, StoreError> {
    let (email, now) = (&normalize_email(email), at_millis(now));
    single(store, |client| async move {
        let sql = format!("{RECEIVED_SELECT} AND t.email = $1 {INVITATIONS_OLDEST_FIRST}");
        all_rows(&client, &sql, &[email, &now]).await?.iter().map(received_from_row).collect()
    })
    .await
}

/// Consumes the invitation `id` for a verified `user` and makes them a member.
pub(super) async fn accept_invitation_by_id(
    store: &PostgresStore,
    id: &TokenId,
    user: &UserId,
    now: DateTime<Utc>,
) -> Result<Membership, StoreError> {
    let now = at_millis(now);
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let sql = format!(
            "UPDATE one_time_tokens SET used_at = $2
             WHERE kind = 'invitation' AND id = $1 AND used_at IS NULL
               AND revoked_at IS NULL AND expires_at > $2
             RETURNING {TOKEN_COLUMNS}"
        );
        let token = token_from_row(&one_row(&tx, &sql, &[&id.as_str(), &now]).await?)?;
        let user = select_user(&tx, user).await?;
        // Without the token, only a verified address proves the invitation reached its owner.
        if !user.is_verified() {
            return Err(StoreError::NotFound.into());
        }
        let membership = join_by(&tx, &token, &user).await?;
        tx.commit().await?;
        Ok(membership)
    })
    .await
}

/// A new organisation owned by `owner`.
pub(super) async fn create_organization(
    store: &PostgresStore,
    owner: &UserId,
    name: String,
) -> Result<(Organization, Membership), StoreError> {
    let name = name.as_str();
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        let at = rows::now();
        select_user(&tx, owner).await?;
        let organization = insert_org(&tx, name, at).await?;
        let membership = insert_membership(&tx, &organization.id, owner, Role::Owner, at).await?;
        tx.commit().await?;
        Ok((organization, membership))
    })
    .await
}

/// Deletes the organisation with everything it holds, if `by` is still one
/// of its owners (else `Stale`); returns its connections, oldest first,
/// whose agents the caller sends away.
pub(super) async fn delete_organization(
    store: &PostgresStore,
    org: &OrgId,
    by: &UserId,
) -> Result<Vec<ConnectionId>, StoreError> {
    retry(|| async move {
        let mut client = store.client().await?;
        let tx = serializable(&mut client).await?;
        select_org(&tx, org).await?;
        match select_membership(&tx, org, by).await {
            Ok(m) if m.role == Role::Owner => {}
            Ok(_) | Err(PgError::Store(StoreError::NotFound)) => {
                return Err(StoreError::Stale.into());
            }
            Err(e) => return Err(e),
        }
        let sql = "SELECT id FROM connections WHERE org_id = $1 ORDER BY created_at, seq";
        let connections = all_rows(&tx, sql, &[&org.as_str()])
            .await?
            .iter()
            .map(|row| Ok(row.try_get::<_, ConnectionId>(0)?))
            .collect::<Result<Vec<_>, PgError>>()?;
        // Memberships, invitations, personal tokens, connections, schemas and
        // history cascade.
        execute(&tx, "DELETE FROM organizations WHERE id = $1", &[&org.as_str()]).await?;
        tx.commit().await?;
        Ok(connections)
    })
    .await
}

/// Inserts a user (`verified_at` for one whose invitation proved the email);
/// a taken email is a conflict (by the constraint's name).
async fn insert_user(
    c: &impl GenericClient,
    user: &NewUser,
    verified_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> Result<User, PgError> {
    let sql = format!(
        "INSERT INTO users (id, email, password_hash, first_name, last_name,
                            email_verified_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {USER_COLUMNS}"
    );
    let id = UserId::random();
    let params: Params = &[
        &id.as_str(),
        &normalize_email(&user.email),
        &user.password_hash,
        &user.first_name,
        &user.last_name,
        &verified_at,
        &at,
    ];
    user_from_row(&one_row(c, &sql, params).await?, 0)
}

/// Inserts an organisation.
async fn insert_org(
    c: &impl GenericClient,
    name: &str,
    at: DateTime<Utc>,
) -> Result<Organization, PgError> {
    let sql = format!(
        "INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)
         RETURNING {ORG_COLUMNS}"
    );
    let id = OrgId::random();
    org_from_row(&one_row(c, &sql, &[&id.as_str(), &name, &at]).await?, 0)
}

/// Inserts a membership; an existing one is a conflict (by the constraint's name).
async fn insert_membership(
    c: &impl GenericClient,
    org: &OrgId,
    user: &UserId,
    role: Role,
    at: DateTime<Utc>,
) -> Result<Membership, PgError> {
    let sql = format!(
        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
         RETURNING {MEMBERSHIP_COLUMNS}"
    );
    let params: Params = &[&org.as_str(), &user.as_str(), &role.as_str(), &at];
    membership_from_row(&one_row(c, &sql, params).await?, 0)
}

/// A user by id.
async fn select_user(c: &impl GenericClient, id: &UserId) -> Result<User, PgError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    user_from_row(&one_row(c, &sql, &[&id.as_str()]).await?, 0)
}

/// An organisation by id.
async fn select_org(c: &impl GenericClient, id: &OrgId) -> Result<Organization, PgError> {
    let sql = format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id = $1");
    org_from_row(&one_row(c, &sql, &[&id.as_str()]).await?, 0)
}

/// A membership of `user` in `org`.
pub(super) async fn select_membership(
    c: &impl GenericClient,
    org: &OrgId,
    user: &UserId,
) -> Result<Membership, PgError> {
    let sql =
        format!("SELECT {MEMBERSHIP_COLUMNS} FROM memberships WHERE org_id = $1 AND user_id = $2");
    membership_from_row(&one_row(c, &sql, &[&org.as_str(), &user.as_str()]).await?, 0)
}

/// One pending invitation of the organisation at `now`.
async fn select_invitation(
    c: &impl GenericClient,
    org: &OrgId,
    id: &TokenId,
    now: DateTime<Utc>,
) -> Result<Invitation, PgError> {
    let sql = format!("SELECT {INVITATION_COLUMNS} {INVITATION_FROM}");
    let params: Params = &[&org.as_str(), &now, &Some(id.as_str())];
    invitation_from_row(&one_row(c, &sql, params).await?)
}

/// Fails with [`StoreError::LastOwner`] unless the organisation has two owners
/// or more. Read in the caller's serializable transaction, so two concurrent
/// demotions of the last two owners cannot both pass it.
async fn ensure_other_owner(c: &impl GenericClient, org: &OrgId) -> Result<(), PgError> {
    let sql = "SELECT count(*) FROM memberships WHERE org_id = $1 AND role = 'owner'";
    let owners: i64 = one_row(c, sql, &[&org.as_str()]).await?.try_get(0)?;
    if owners <= 1 { Err(StoreError::LastOwner.into()) } else { Ok(()) }
}

/// Sets a user's password hash.
async fn update_password(
    c: &impl GenericClient,
    id: &UserId,
    password_hash: &str,
    at: DateTime<Utc>,
) -> Result<User, PgError> {
    let sql = format!(
        "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1
         RETURNING {USER_COLUMNS}"
    );
    user_from_row(&one_row(c, &sql, &[&id.as_str(), &password_hash, &at]).await?, 0)
}

/// Marks the user verified, keeping an earlier verification time; when `email`
/// is given, only if the user still has that email.
async fn mark_verified(
    c: &impl GenericClient,
    id: &UserId,
    email: Option<&str>,
    at: DateTime<Utc>,
) -> Result<User, PgError> {
    let sql = format!(
        "UPDATE users SET email_verified_at = coalesce(email_verified_at, $3), updated_at = $3
         WHERE id = $1 AND ($2::text IS NULL OR email = $2) RETURNING {USER_COLUMNS}"
    );
    user_from_row(&one_row(c, &sql, &[&id.as_str(), &email, &at]).await?, 0)
}

/// Ends every outstanding password-reset token of the user.
async fn end_reset_tokens(
    c: &impl GenericClient,
    user: &UserId,
    at: DateTime<Utc>,
) -> Result<(), PgError> {
    let sql = "UPDATE one_time_tokens SET revoked_at = $2
               WHERE kind = 'password_reset' AND user_id = $1 AND used_at IS NULL
                 AND revoked_at IS NULL";
    execute(c, sql, &[&user.as_str(), &at]).await.map(drop)
}

/// Ends the pending invitations `inviter` sent to `org`: those of `role`
/// only, or all of them.
async fn end_invitations_by(
    c: &impl GenericClient,
    org: &OrgId,
    inviter: &UserId,
    role: Option<Role>,
    at: DateTime<Utc>,
) -> Result<(), PgError> {
    let sql = "UPDATE one_time_tokens SET revoked_at = $4
               WHERE kind = 'invitation' AND org_id = $1 AND invited_by = $2
                 AND ($3::text IS NULL OR role = $3) AND used_at IS NULL AND revoked_at IS NULL";
    let params: Params = &[&org.as_str(), &inviter.as_str(), &role.map(Role::as_str), &at];
    execute(c, sql, params).await.map(drop)
}

/// Refuses (NotFound) an invitation whose sender is no longer a member of its
/// organisation, or no longer may invite to its role; invitations from before
/// senders were recorded have none to check.
async fn ensure_sender_may_invite(
    c: &impl GenericClient,
    token: &OneTimeToken,
) -> Result<(), PgError> {
    let (Some(sender), (org, role)) = (&token.invited_by, invitation_target(token)?) else {
        return Ok(());
    };
    let sender = select_membership(c, org, sender).await?;
    let may = match sender.role {
        Role::Owner => true,
        Role::Admin => role != Role::Owner,
        Role::Member => false,
    };
    if may { Ok(()) } else { Err(StoreError::NotFound.into()) }
}

/// Revokes the user's unrevoked sessions other than `keep`; returns how many.
async fn revoke_sessions_but(
    c: &impl GenericClient,
    user: &UserId,
    keep: &SessionId,
    at: DateTime<Utc>,
) -> Result<u64, PgError> {
    let sql = "UPDATE sessions SET revoked_at = $3
               WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL";
    execute(c, sql, &[&user.as_str(), &keep.as_str(), &at]).await
}

/// Makes `user` a member through the consumed invitation `token`: it must
/// have been sent to the user's email by a sender who still may send it
/// (else NotFound); an existing member is a conflict.
async fn join_by(
    c: &impl GenericClient,
    token: &OneTimeToken,
    user: &User,
) -> Result<Membership, PgError> {
    let (org, role) = invitation_target(token)?;
    ensure_sender_may_invite(c, token).await?;
    if user.email != token.email {
        return Err(StoreError::NotFound.into());
    }
    insert_membership(c, org, &user.id, role, rows::now()).await
}

/// Deletes every personal access token of the user, in every organisation:
/// whoever knew the old password may have made some.
async fn delete_personal_tokens_of(c: &impl GenericClient, user: &UserId) -> Result<u64, PgError> {
    execute(c, "DELETE FROM personal_tokens WHERE user_id = $1", &[&user.as_str()]).await
}

/// Revokes every unrevoked session of the user; returns how many.
async fn revoke_all_sessions(
    c: &impl GenericClient,
    user: &UserId,
    at: DateTime<Utc>,
) -> Result<u64, PgError> {
    let sql = "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL";
    execute(c, sql, &[&user.as_str(), &at]).await
}

/// Marks the token used in one statement: a concurrent consumer waits for the
/// row and then finds it used (or, in a serializable transaction, is retried),
/// so of two only one wins.
async fn consume(
    c: &impl GenericClient,
    kind: TokenKind,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<OneTimeToken, PgError> {
    let sql = format!(
        "UPDATE one_time_tokens SET used_at = $3
         WHERE kind = $1 AND token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL
           AND expires_at > $3
         RETURNING {TOKEN_COLUMNS}"
    );
    token_from_row(&one_row(c, &sql, &[&kind.as_str(), &token_hash, &now]).await?)
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
