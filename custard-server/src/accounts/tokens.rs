//! Personal access tokens: what a user creates (signed in with their
//! password) to let a script act as them in one organisation, through the
//! API only; listed without their secrets and revoked by their user.

use chrono::{TimeDelta, Utc};

use super::validate_name;
use crate::auth::{self, Credential, CurrentUser};
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use crate::store::{NewPersonalToken, PersonalToken, PersonalTokenId};

/// The longest a token may be made to last, in days.
pub(crate) const MAX_TOKEN_DAYS: u32 = 366;

/// A token just created: the stored row and its secret, shown this once.
pub(crate) struct IssuedToken {
    pub(crate) token: PersonalToken,
    pub(crate) secret: String,
}

// The secret stays out of `Debug` (and so of any log line).
impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("token", &self.token).finish_non_exhaustive()
    }
}

/// Creates a token for the caller in their organisation, named `name`,
/// lasting `expires_in_days` (1 to [`MAX_TOKEN_DAYS`]) or until revoked.
/// Only a caller signed in with a session may: a token makes no tokens.
pub(crate) async fn create_personal_token(
    state: &AppState,
    current: &CurrentUser,
    name: &str,
    expires_in_days: Option<u32>,
) -> Result<IssuedToken, AppError> {
    current.session()?;
    let name = validate_name("name", name)?;
    if let Some(days) = expires_in_days
        && !(1..=MAX_TOKEN_DAYS).contains(&days)
    {
        return Err(AppError::new(
            ErrorCode::Validation,
            format!("expires_in_days must be 1 to {MAX_TOKEN_DAYS} (or left out: until revoked)"),
        ));
    }
    let secret = auth::new_personal_token();
    let token_hash = auth::hash_secret(&secret);
    let expires_at = expires_in_days.map(|days| Utc::now() + TimeDelta::days(i64::from(days)));
    let new = NewPersonalToken {
        user_id: &current.user().id,
        org_id: current.org(),
        name: &name,
        token_hash: &token_hash,
        expires_at,
    };
    let token = state.inner().store.create_personal_token(new).await?;
    Ok(IssuedToken { token, secret })
}

/// The caller's tokens in their organisation, newest first.
pub(crate) async fn personal_tokens(
    state: &AppState,
    current: &CurrentUser,
) -> Result<Vec<PersonalToken>, AppError> {
    Ok(state.inner().store.list_personal_tokens(&current.user().id, current.org()).await?)
}

/// Revokes one of the caller's tokens; it is refused from the next request
/// on. A caller with a token may revoke that token only: a stolen token
/// cannot take the others away.
pub(crate) async fn revoke_personal_token(
    state: &AppState,
    current: &CurrentUser,
    id: String,
) -> Result<(), AppError> {
    let id = PersonalTokenId::from(id);
    if let Credential::Token(own) = current.credential()
        && *own != id
    {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "a personal access token may revoke only itself: sign in to revoke others",
        ));
    }
    Ok(state.inner().store.delete_personal_token(&current.user().id, current.org(), &id).await?)
}
