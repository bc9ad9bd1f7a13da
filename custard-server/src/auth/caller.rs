//! Who is calling: the extractors that authenticate a request and the types
//! only they (and this module) can make.
//!
//! - [`CurrentUser`]: the user of an active session (or, on the API, of a
//!   personal access token) who is a member of the organisation the token is
//!   for. Everything organisation-scoped takes one and passes
//!   [`CurrentUser::org`] to the store, so tenancy is not remembered per
//!   handler. What only a session may do (sign out, change the password,
//!   create tokens) asks [`CurrentUser::session`], which a token caller
//!   does not have.
//! - [`CurrentAdmin`] and [`CurrentOwner`]: a [`CurrentUser`] whose role was
//!   checked. The logic of an operation reserved to owners and admins (or to
//!   owners) takes one, so it cannot be reached without the check: a handler
//!   extracts it, and a page asks [`CurrentUser::admin`] or
//!   [`CurrentUser::owner`] for it.
//! - [`SessionUser`]: the user of an active session whatever became of their
//!   organisation, for the pages of a user in no organisation.
//!
//! The extractors read the JWT secret and the store through [`AuthState`],
//! which the server's state implements, so this module knows nothing of it.

use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::Utc;

use super::{
    JwtSecret, PERSONAL_TOKEN_PREFIX, cookie, decode_access, hash_secret, is_personal_token,
};
use crate::error::{AppError, ErrorCode};
use crate::store::{OrgId, PersonalTokenId, Role, SessionId, Store, StoreError, User};

/// How often at most a personal access token's `last_used_at` is written.
const TOKEN_USE_WRITE_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// What authenticating a request reads: the JWT secret and the store.
pub(crate) trait AuthState: Send + Sync {
    /// The secret access tokens are signed with.
    fn jwt(&self) -> &JwtSecret;

    /// The store that holds sessions, users and memberships.
    fn store(&self) -> &dyn Store;
}

/// The signed-in user, what they signed in with and the organisation the
/// token is for.
#[derive(Debug, Clone)]
pub(crate) struct CurrentUser {
    user: User,
    credential: Credential,
    org: OrgId,
    role: Role,
}

/// What a [`CurrentUser`] proved who they are with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A session, opened with the password: its id.
    Session(SessionId),
    /// A personal access token: its id.
    Token(PersonalTokenId),
}

/// The credentials of an `Authorization: Bearer ...` header, trimmed; the
/// scheme's case does not matter (RFC 9110). `None` without the header or
/// with another scheme.
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim())
}

impl<S: AuthState> FromRequestParts<S> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let unauthorized =
            || AppError::new(ErrorCode::Unauthorized, "sign in: a valid bearer token is required");
        let header = parts.headers.contains_key(axum::http::header::AUTHORIZATION);
        let token = match header {
            true => {
                let token = bearer_token(&parts.headers).ok_or_else(unauthorized)?;
                // A personal access token: the API's only (never a cookie).
                if token.starts_with(PERSONAL_TOKEN_PREFIX) {
                    return CurrentUser::of_personal_token(state, token).await;
                }
                token.to_owned()
            }
            // A browser's session cookie: a request that changes something must
            // also prove it comes from our own page (CSRF).
            false => {
                let token = cookie::cookie_value(&parts.headers, cookie::SESSION_COOKIE)
                    .ok_or_else(unauthorized)?;
                if !parts.method.is_safe()
                    && !cookie::request_has_valid_csrf(state.jwt(), &parts.headers, None)
                {
                    return Err(AppError::new(
                        ErrorCode::Forbidden,
                        "the request's CSRF token is missing or wrong; reload the page",
                    ));
                }
                token
            }
        };
        // An invalid token reads the same whichever check refused it; a store
        // that cannot answer is not the caller's fault (503, not 401).
        CurrentUser::of_token(state, &token)
            .await
            .map_err(|e| if e.code == ErrorCode::Unauthorized { unauthorized() } else { e })
    }
}

impl CurrentUser {
    /// The user of an access token (a bearer token or a session cookie's value)
    /// whose session is active and who is still a member of its organisation.
    /// Checks no CSRF token: callers that take a cookie check it themselves.
    pub(crate) async fn of_token<S: AuthState + ?Sized>(
        state: &S,
        token: &str,
    ) -> Result<Self, AppError> {
        let unauthorized =
            || AppError::new(ErrorCode::Unauthorized, "sign in: the session is not valid");
        let claims = decode_access(token.trim(), state.jwt()).map_err(|_| unauthorized())?;
        let org = OrgId::from(claims.org.clone());
        let (session, user, membership) = state
            .store()
            .session_context(&SessionId::from(claims.sid.clone()), &org)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => unauthorized(),
                other => AppError::from(other),
            })?;
        if !session.is_active(Utc::now()) || session.user_id.as_str() != claims.sub {
            return Err(unauthorized());
        }
        Ok(CurrentUser {
            user,
            credential: Credential::Session(session.id),
            org,
            role: membership.role,
        })
    }

    /// The user of a personal access token that exists, has not expired, and
    /// whose user is still a member of its organisation (with the role they
    /// have now).
    pub(crate) async fn of_personal_token<S: AuthState + ?Sized>(
        state: &S,
        token: &str,
    ) -> Result<Self, AppError> {
        let unauthorized = || {
            AppError::new(
                ErrorCode::Unauthorized,
                "the personal access token is not valid (it may have expired or been revoked)",
            )
        };
        if !is_personal_token(token) {
            return Err(unauthorized());
        }
        let store = state.store();
        let (token, user, membership) =
            store.personal_token_context(&hash_secret(token)).await.map_err(|e| match e {
                StoreError::NotFound => unauthorized(),
                other => AppError::from(other),
            })?;
        let now = Utc::now();
        if token.expires_at.is_some_and(|at| at <= now) {
            return Err(unauthorized());
        }
        if token.last_used_at.is_none_or(|at| now - at >= TOKEN_USE_WRITE_EVERY)
            && let Err(e) = store.touch_personal_token(&token.id, now).await
        {
            // Not the caller's fault, and not worth refusing them for.
            tracing::warn!(token = %token.id, "could not record the token's use: {e}");
        }
        Ok(CurrentUser {
            user,
            credential: Credential::Token(token.id),
            org: token.org_id,
            role: membership.role,
        })
    }

    /// Whether the caller's session is still active and the caller still a
    /// member of the organisation: what a long-lived stream checks again as
    /// it goes. A store error counts as no (the stream ends; the client may
    /// reconnect and be checked afresh).
    pub(crate) async fn still_valid(&self, store: &dyn Store) -> bool {
        match &self.credential {
            Credential::Session(id) => match store.session_context(id, &self.org).await {
                Ok((session, user, _)) => session.is_active(Utc::now()) && user.id == self.user.id,
                Err(_) => false,
            },
            Credential::Token(id) => {
                let now = Utc::now();
                let member = store.get_membership(&self.org, &self.user.id).await.is_ok();
                member
                    && store.list_personal_tokens(&self.user.id, &self.org).await.is_ok_and(
                        |tokens| {
                            tokens
                                .iter()
                                .any(|t| t.id == *id && t.expires_at.is_none_or(|at| at > now))
                        },
                    )
            }
        }
    }

    /// The caller's role in the organisation.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The store session the caller signed in with; `forbidden` for a caller
    /// with a personal access token, which may not do what needs one (sign
    /// out, change the password, create tokens).
    pub(crate) fn session(&self) -> Result<&SessionId, AppError> {
        match &self.credential {
            Credential::Session(id) => Ok(id),
            Credential::Token(_) => Err(AppError::new(
                ErrorCode::Forbidden,
                "a personal access token cannot do this: sign in with your password",
            )),
        }
    }

    /// What the caller signed in with.
    pub(crate) fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The organisation the caller acts in.
    pub(crate) fn org(&self) -> &OrgId {
        &self.org
    }

    /// The caller.
    pub(crate) fn user(&self) -> &User {
        &self.user
    }

    /// Whether the caller may manage the organisation (an owner or an admin).
    pub(crate) fn manages(&self) -> bool {
        matches!(self.role, Role::Owner | Role::Admin)
    }

    /// The caller as an owner or admin of the organisation; `forbidden` for a member.
    pub(crate) fn admin(&self) -> Result<CurrentAdmin, AppError> {
        if self.manages() {
            Ok(CurrentAdmin(self.clone()))
        } else {
            Err(AppError::new(ErrorCode::Forbidden, "only owners and admins may do this"))
        }
    }

    /// The caller as an owner of the organisation; `forbidden` for anyone else.
    pub(crate) fn owner(&self) -> Result<CurrentOwner, AppError> {
        if self.role == Role::Owner {
            Ok(CurrentOwner(self.clone()))
        } else {
            // Deleting the organisation is, so far, the one thing only owners may do.
            Err(AppError::new(ErrorCode::Forbidden, "only owners may delete the organisation"))
        }
    }
}

/// A [`CurrentUser`] who is an owner or an admin of the organisation; made
/// only by [`CurrentUser::admin`], so holding one is the role check.
#[derive(Debug, Clone)]
pub(crate) struct CurrentAdmin(CurrentUser);

impl CurrentAdmin {
    /// Whether the admin is also an owner (some changes touch the owner role).
    pub(crate) fn is_owner(&self) -> bool {
        self.0.role == Role::Owner
    }
}

impl Deref for CurrentAdmin {
    type Target = CurrentUser;

    fn deref(&self) -> &CurrentUser {
        &self.0
    }
}

impl<S: AuthState> FromRequestParts<S> for CurrentAdmin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        CurrentUser::from_request_parts(parts, state).await?.admin()
    }
}

/// A [`CurrentUser`] who is an owner of the organisation; made only by
/// [`CurrentUser::owner`].
#[derive(Debug, Clone)]
pub(crate) struct CurrentOwner(CurrentUser);

impl Deref for CurrentOwner {
    type Target = CurrentUser;

    fn deref(&self) -> &CurrentUser {
        &self.0
    }
}

impl<S: AuthState> FromRequestParts<S> for CurrentOwner {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        CurrentUser::from_request_parts(parts, state).await?.owner()
    }
}

/// A signed-in user whatever became of their organisation: the user of an
/// active session, member of the token's organisation or not. What the pages
/// for a user in no organisation (removed, or the organisation deleted) and
/// the invitation page act as; everything organisation-scoped takes a
/// [`CurrentUser`] instead.
#[derive(Debug, Clone)]
pub(crate) struct SessionUser {
    user: User,
    session: SessionId,
}

impl SessionUser {
    /// The user of an access token whose session is active.
    pub(crate) async fn of_token<S: AuthState + ?Sized>(
        state: &S,
        token: &str,
    ) -> Result<Self, AppError> {
        let unauthorized =
            || AppError::new(ErrorCode::Unauthorized, "sign in: the session is not valid");
        let store = state.store();
        let claims = decode_access(token.trim(), state.jwt()).map_err(|_| unauthorized())?;
        let session =
            store.get_session(&SessionId::from(claims.sid)).await.map_err(|_| unauthorized())?;
        if !session.is_active(Utc::now()) || session.user_id.as_str() != claims.sub {
            return Err(unauthorized());
        }
        let user = store.get_user(&session.user_id).await.map_err(|_| unauthorized())?;
        Ok(SessionUser { user, session: session.id })
    }

    /// The caller.
    pub(crate) fn user(&self) -> &User {
        &self.user
    }

    /// The store session the caller's token belongs to.
    pub(crate) fn session(&self) -> &SessionId {
        &self.session
    }
}

impl TryFrom<CurrentUser> for SessionUser {
    type Error = AppError;

    /// The session user of a caller who signed in with a session.
    fn try_from(current: CurrentUser) -> Result<Self, AppError> {
        let session = current.session()?.clone();
        Ok(SessionUser { user: current.user, session })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_read_whatever_its_case() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(bearer_token(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with("bearer abc ")), Some("abc"));
        assert_eq!(bearer_token(&with("BEARER abc")), Some("abc"));
        assert_eq!(bearer_token(&with("Basic abc")), None);
        assert_eq!(bearer_token(&with("Bearerabc")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
