//! Invitations: owners and admins send, list, send again and revoke them;
//! their recipients see and accept them.

use chrono::{Duration as Span, Utc};

use super::organization::parse_role;
use super::{issue_token, send, validate_email};
use crate::auth::{self, CurrentAdmin};
use crate::error::{AppError, ErrorCode};
use crate::mail;
use crate::state::AppState;
use crate::store::{
    Invitation, Membership, NewToken, ReceivedInvitation, Role, StoreError, TokenId, User,
};

/// How long an invitation link works.
const INVITATION_VALID: Span = Span::days(7);

/// Emails an invitation to join the caller's organisation as `role`: owners
/// and admins may invite, only owners may invite owners, and sending is
/// limited per organisation and per recipient. Returns the invitation's id,
/// the checked email and role. Shared by the API and the settings page.
pub(crate) async fn invite_by_email(
    state: &AppState,
    current: &CurrentAdmin,
    email: &str,
    role: &str,
) -> Result<(TokenId, String, Role), AppError> {
    let email = validate_email(email)?;
    let role = parse_role(role)?;
    if role == Role::Owner {
        // Whoever holds a token must not make an owner that outlives it.
        current.session()?;
    }
    if role == Role::Owner && !current.is_owner() {
        return Err(AppError::new(ErrorCode::Forbidden, "only owners may invite owners"));
    }
    let sender = current.user().id.as_str();
    state.inner().invitation_limiter.check(current.org().as_str(), sender, &email)?;
    let org = state.inner().store.get_organization(current.org()).await?;
    let (secret, stored) = issue_token(state, |h| {
        let expires = Utc::now() + INVITATION_VALID;
        NewToken::invitation(current.org(), &current.user().id, &email, role, h, expires)
    })
    .await?;
    let inviter = format!("{} {}", current.user().first_name, current.user().last_name);
    send(
        state,
        mail::invitation_email(
            &state.inner().config.public_url,
            &email,
            &secret,
            &org.name,
            &inviter,
        ),
    )
    .await;
    Ok((stored.id, email, role))
}

/// The organisation's pending invitations, for owners and admins. Shared by
/// the API and the settings page.
pub(crate) async fn pending_invitations(
    state: &AppState,
    current: &CurrentAdmin,
) -> Result<Vec<Invitation>, AppError> {
    Ok(state.inner().store.list_invitations(current.org(), Utc::now()).await?)
}

/// Revokes a pending invitation of the caller's organisation: owners and
/// admins may, only owners may revoke one to be an owner. Shared by the API
/// and the settings page.
pub(crate) async fn revoke_pending_invitation(
    state: &AppState,
    current: &CurrentAdmin,
    id: String,
) -> Result<(), AppError> {
    let id = TokenId::from(id);
    let store = &state.inner().store;
    let invitation = store.get_invitation(current.org(), &id, Utc::now()).await?;
    if invitation.role == Role::Owner && !current.is_owner() {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "only owners may revoke an invitation to be an owner",
        ));
    }
    Ok(store.revoke_invitation(current.org(), &id, Utc::now()).await?)
}

/// Sends a pending invitation of the caller's organisation again: a fresh
/// link valid for seven days, the old one dead, the caller its sender. The
/// rules of revoking and the limits of inviting apply. Shared by the API and
/// the settings page.
pub(crate) async fn resend_pending_invitation(
    state: &AppState,
    current: &CurrentAdmin,
    id: String,
) -> Result<Invitation, AppError> {
    let id = TokenId::from(id);
    let store = &state.inner().store;
    let invitation = store.get_invitation(current.org(), &id, Utc::now()).await?;
    if invitation.role == Role::Owner && !current.is_owner() {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "only owners may send an invitation to be an owner",
        ));
    }
    let sender = current.user().id.as_str();
    state.inner().invitation_limiter.check(current.org().as_str(), sender, &invitation.email)?;
    let org = store.get_organization(current.org()).await?;
    let secret = auth::new_secret();
    let expires = Utc::now() + INVITATION_VALID;
    let renewed = store
        .renew_invitation(
            current.org(),
            &id,
            &current.user().id,
            auth::hash_secret(&secret),
            expires,
            Utc::now(),
        )
        .await?;
    let inviter = format!("{} {}", current.user().first_name, current.user().last_name);
    let public_url = &state.inner().config.public_url;
    let message = mail::invitation_email(public_url, &renewed.email, &secret, &org.name, &inviter);
    send(state, message).await;
    Ok(renewed)
}

/// What an unusable invitation is told, whichever way it cannot be used.
fn invitation_gone(e: StoreError) -> AppError {
    match e {
        StoreError::NotFound => AppError::new(
            ErrorCode::InvalidToken,
            "the invitation is unknown, used, expired or for another email",
        ),
        StoreError::Conflict(_) => {
            AppError::new(ErrorCode::Conflict, "you are already a member of this organisation")
        }
        other => other.into(),
    }
}

/// Consumes an invitation sent to `user`'s email and makes them a member of
/// its organisation. Shared by the API and the invitation page.
pub(crate) async fn join_by_invitation(
    state: &AppState,
    user: &User,
    token: &str,
) -> Result<Membership, AppError> {
    state
        .inner()
        .store
        .accept_invitation(&auth::hash_secret(token.trim()), &user.id, Utc::now())
        .await
        .map_err(invitation_gone)
}

/// Accepts the pending invitation `id` sent to `user`'s (verified) email,
/// without its link: for the page of a user in no organisation, which lists
/// the invitations sent to them.
pub(crate) async fn join_by_invitation_id(
    state: &AppState,
    user: &User,
    id: String,
) -> Result<Membership, AppError> {
    state
        .inner()
        .store
        .accept_invitation_by_id(&TokenId::from(id), &user.id, Utc::now())
        .await
        .map_err(invitation_gone)
}

/// The pending invitation of a link's token, with its organisation and
/// sender, left unused: what the invitation page shows before anyone accepts.
pub(crate) async fn invitation_for_token(
    state: &AppState,
    token: &str,
) -> Result<ReceivedInvitation, AppError> {
    state
        .inner()
        .store
        .invitation_by_token(&auth::hash_secret(token.trim()), Utc::now())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => AppError::new(
                ErrorCode::InvalidToken,
                "the invitation is unknown, used, expired or revoked",
            ),
            other => other.into(),
        })
}

/// The pending invitations sent to `user`'s email, oldest first.
pub(crate) async fn invitations_for(
    state: &AppState,
    user: &User,
) -> Result<Vec<ReceivedInvitation>, AppError> {
    Ok(state.inner().store.invitations_for_email(&user.email, Utc::now()).await?)
}
