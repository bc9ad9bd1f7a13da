//! Signing in and out: credentials, sessions and their access tokens.

use chrono::{Duration as Span, Utc};

use crate::auth::{self, AccessClaims, CurrentUser};
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use crate::store::{OrgId, SessionGrant, SessionId, StoreError, User, UserId};

/// Checks the credentials (rate-limited, the same answer for unknown emails and
/// wrong passwords) and that the email is verified; returns the user. Shared
/// by the API's and the web's sign-in.
pub(crate) async fn check_credentials(
    state: &AppState,
    ip: std::net::IpAddr,
    email: &str,
    password: String,
) -> Result<User, AppError> {
    let inner = state.inner();
    inner.login_limiter.check(ip, Some(email)).await?;
    let found = match inner.store.get_user_by_email(email).await {
        Ok(user) => Some(user),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let ok =
        inner.hashing.verify(password, found.as_ref().map(|u| u.password_hash.clone())).await?;
    let user = match found {
        Some(user) if ok => user,
        _ => return Err(AppError::new(ErrorCode::Unauthorized, "wrong email or password")),
    };
    if user.email_verified_at.is_none() {
        return Err(AppError::new(
            ErrorCode::EmailNotVerified,
            "verify your email first: follow the link we sent",
        ));
    }
    Ok(user)
}

/// The organisation a user signs in to: their oldest membership's, if any.
pub(crate) async fn first_organization(
    state: &AppState,
    user: &UserId,
) -> Result<Option<OrgId>, AppError> {
    let orgs = state.inner().store.organizations_of_user(user).await?;
    Ok(orgs.into_iter().next().map(|(org, _)| org.id))
}

/// Checks the credentials ([`check_credentials`]), starts a store session
/// valid for `lifetime` in the user's first organisation and returns the user
/// with an access token for it. A user in no organisation is refused (the web
/// sign-in lets them create one or accept an invitation instead).
pub(crate) async fn sign_in(
    state: &AppState,
    ip: std::net::IpAddr,
    email: &str,
    password: String,
    lifetime: std::time::Duration,
) -> Result<(User, String), AppError> {
    let user = check_credentials(state, ip, email, password).await?;
    let Some(org) = first_organization(state, &user.id).await? else {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "this account belongs to no organisation: sign in on the web to create one or \
             accept an invitation",
        ));
    };
    let grant = SessionGrant::Password(&user.password_hash);
    let token = open_session(state, &user.id, Some(&org), lifetime, grant).await?;
    Ok((user, token))
}

/// Starts a store session for the user in `org` (none: a user in no
/// organisation, who can act on nothing organisation-scoped), valid for
/// `lifetime`, and returns its access token. The caller has checked who the
/// user is, by `grant`, which the store checks again as it creates the session.
pub(crate) async fn open_session(
    state: &AppState,
    user: &UserId,
    org: Option<&OrgId>,
    lifetime: std::time::Duration,
    grant: SessionGrant<'_>,
) -> Result<String, AppError> {
    let inner = state.inner();
    let expires = Utc::now() + Span::from_std(lifetime).map_err(AppError::internal)?;
    let session = inner.store.create_session(user, expires, grant).await?;
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let org = org.map_or("", OrgId::as_str);
    let claims = AccessClaims::new(user.as_str(), session.id.as_str(), org, now, lifetime);
    auth::encode_access(&claims, &inner.jwt).map_err(AppError::internal)
}

/// Ends the session `id` for good. Shared by the API's logout and the web's
/// sign-out.
pub(crate) async fn sign_out(state: &AppState, id: &SessionId) -> Result<(), AppError> {
    Ok(state.inner().store.revoke_session(id).await?)
}

/// Revokes every session of the caller but their own; returns how many.
/// Shared by the API and the settings page.
pub(crate) async fn sign_out_other_sessions(
    state: &AppState,
    current: &CurrentUser,
) -> Result<u64, AppError> {
    Ok(state.inner().store.revoke_other_sessions(&current.user().id, current.session()?).await?)
}
