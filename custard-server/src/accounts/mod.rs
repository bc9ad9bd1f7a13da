//! Accounts: the logic behind sign-up and email verification, sign-in and
//! sessions, passwords, the profile, organisations, their members and
//! invitations, personal access tokens, shared by the JSON API (`api::accounts`, `api::org`) and the
//! web pages (`web::account`).
//!
//! Functions take typed inputs (the state, the caller as the auth layer made
//! it, plain values) and return typed results or an [`AppError`]; they know
//! nothing of HTTP. Tenancy comes with the caller: every organisation-scoped
//! call takes a [`CurrentUser`](crate::auth::CurrentUser) (or a
//! [`CurrentAdmin`](crate::auth::CurrentAdmin), a
//! [`CurrentOwner`](crate::auth::CurrentOwner) where the role matters) and
//! passes its organisation to the store, whose rows of other organisations
//! answer 404.

mod invitations;
mod organization;
mod passwords;
mod profile;
mod registration;
mod sessions;
mod tokens;

use crate::auth;
use crate::error::{AppError, ErrorCode};
use crate::mail;
use crate::state::AppState;
use crate::store::{NewToken, OneTimeToken};

pub(crate) use invitations::{
    invitation_for_token, invitations_for, invite_by_email, join_by_invitation,
    join_by_invitation_id, pending_invitations, resend_pending_invitation,
    revoke_pending_invitation,
};
pub(crate) use organization::{
    create_organization_for, delete_own_organization, members, organization, remove_from_org,
    set_member_role,
};
pub(crate) use passwords::{request_password_reset, reset_password_with_token};
pub(crate) use profile::{change_own_password, set_names};
pub(crate) use registration::{NewAccount, resend_verification, sign_up, verify_email_token};
pub(crate) use sessions::{
    check_credentials, first_organization, open_session, sign_in, sign_out, sign_out_other_sessions,
};
pub(crate) use tokens::{
    IssuedToken, MAX_TOKEN_DAYS, create_personal_token, personal_tokens, revoke_personal_token,
};

/// The longest name (of a person or an organisation), in characters.
const MAX_NAME_CHARS: usize = 100;

/// A trimmed email of a plausible shape, or a validation error.
pub(super) fn validate_email(email: &str) -> Result<String, AppError> {
    let email = email.trim();
    let shaped = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if shaped {
        Ok(email.to_owned())
    } else {
        Err(AppError::new(ErrorCode::Validation, "email is not a valid address"))
    }
}

/// A trimmed name of 1 to [`MAX_NAME_CHARS`] characters without control
/// characters, or a validation error naming `field`.
pub(super) fn validate_name(field: &str, value: &str) -> Result<String, AppError> {
    let value = value.trim();
    if value.is_empty()
        || value.chars().count() > MAX_NAME_CHARS
        || value.chars().any(char::is_control)
    {
        return Err(AppError::new(
            ErrorCode::Validation,
            format!("{field} must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// The password policy's verdict as the API reports it.
pub(super) fn check_password(password: &str, email: &str, names: &[&str]) -> Result<(), AppError> {
    auth::check_password_policy(password, email, names).map_err(|problem| {
        AppError::new(
            ErrorCode::Validation,
            format!("password rejected: {}", problem.code().replace('_', " ")),
        )
    })
}

/// Issues a one-time token of `kind`, stores its hash and returns the secret
/// with the stored row.
pub(super) async fn issue_token(
    state: &AppState,
    token: impl FnOnce(String) -> NewToken,
) -> Result<(String, OneTimeToken), AppError> {
    let secret = auth::new_secret();
    let stored = state.inner().store.create_token(token(auth::hash_secret(&secret))).await?;
    Ok((secret, stored))
}

/// Sends an email; a failure is logged, not returned.
pub(super) async fn send(state: &AppState, message: mail::Message) {
    // A failed email must not undo the account; the user can ask again.
    if let Err(e) = state.inner().mailer.send(&message).await {
        tracing::error!(error = %e, to = %message.to, "sending email failed");
    }
}
