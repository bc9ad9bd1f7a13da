//! Sign-up and email verification.

use chrono::{Duration as Span, Utc};

use super::{check_password, issue_token, send, validate_email, validate_name};
use crate::auth;
use crate::error::{AppError, ErrorCode};
use crate::mail;
use crate::state::AppState;
use crate::store::{ConflictKind, NewToken, NewUser, StoreError, User, UserId, normalize_email};

/// How long a verification link works.
const VERIFICATION_VALID: Span = Span::hours(24);

/// A new account, as a sign-up form or request gives it.
#[derive(Debug)]
pub(crate) struct NewAccount {
    pub(crate) email: String,
    /// Checked against the password policy (length, common passwords, the
    /// email and names).
    pub(crate) password: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    /// The organisation to create; by default "`<first name>`'s organisation".
    pub(crate) organization_name: Option<String>,
    /// An invitation's token: join that organisation instead of creating one.
    pub(crate) invitation_token: Option<String>,
}

/// Creates the account (rate-limited, validated, the password policy
/// checked): with an invitation token the user joins that organisation,
/// already verified; otherwise a new organisation and a verification email.
/// Returns the user and whether a verification email was sent. An email that
/// already has an account gets the same answer (a look-alike user that was
/// never stored) and an email to its owner instead. Shared by the API and the
/// web sign-up.
pub(crate) async fn sign_up(
    state: &AppState,
    ip: std::net::IpAddr,
    request: NewAccount,
) -> Result<(User, bool), AppError> {
    let inner = state.inner();
    inner.signup_limiter.check(ip, Some(&request.email)).await?;
    let email = validate_email(&request.email)?;
    let first_name = validate_name("first_name", &request.first_name)?;
    let last_name = validate_name("last_name", &request.last_name)?;
    check_password(&request.password, &email, &[&first_name, &last_name])?;
    let new_user = NewUser {
        email: email.clone(),
        password_hash: inner.hashing.hash(request.password).await?,
        first_name: first_name.clone(),
        last_name: last_name.clone(),
    };
    if let Some(token) = request.invitation_token.filter(|t| !t.trim().is_empty()) {
        let signed = inner
            .store
            .create_user_from_invitation(new_user, &auth::hash_secret(token.trim()), Utc::now())
            .await
            .map_err(|e| match e {
                StoreError::NotFound => AppError::new(
                    ErrorCode::InvalidToken,
                    "the invitation is unknown, used or expired",
                ),
                // Only the holder of a valid invitation for this email gets here.
                StoreError::Conflict(ConflictKind::Email) => AppError::new(
                    ErrorCode::Conflict,
                    "an account with this email already exists; sign in and accept the \
                     invitation",
                ),
                other => other.into(),
            })?;
        return Ok((signed.user, false));
    }
    let org_name = match request.organization_name.filter(|n| !n.trim().is_empty()) {
        Some(name) => validate_name("organization_name", &name)?,
        None => format!("{first_name}'s organisation"),
    };
    // Either way the email goes out in the background, so the answer's timing
    // does not depend on the mail server or on which email was sent.
    match inner.store.create_user_with_org(new_user, org_name).await {
        Ok(signed) => {
            let (state, user) = (state.clone(), signed.user.clone());
            tokio::spawn(async move {
                let token =
                    |h| NewToken::email_verification(&user, h, Utc::now() + VERIFICATION_VALID);
                match issue_token(&state, token).await {
                    Ok((secret, _)) => {
                        let public_url = &state.inner().config.public_url;
                        send(&state, mail::verification_email(public_url, &user.email, &secret))
                            .await;
                    }
                    Err(e) => tracing::error!(error = %e, "issuing a verification token failed"),
                }
            });
            Ok((signed.user, true))
        }
        Err(StoreError::Conflict(ConflictKind::Email)) => {
            let state = state.clone();
            let existing = email.clone();
            tokio::spawn(async move { tell_existing_account(&state, &existing).await });
            Ok((look_alike(&email, first_name, last_name), true))
        }
        Err(e) => Err(e.into()),
    }
}

/// What a sign-up answers for an email that already has an account: a user
/// shaped like a new one (a fresh random id, never stored).
fn look_alike(email: &str, first_name: String, last_name: String) -> User {
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 3);
    User {
        id: UserId::random(),
        email: normalize_email(email),
        password_hash: String::new(),
        first_name,
        last_name,
        email_verified_at: None,
        created_at: now,
        updated_at: now,
    }
}

/// Emails the owner of `email` that someone tried to sign up with it: how to
/// sign in or reset the password, and a new verification link when the
/// account was never verified.
async fn tell_existing_account(state: &AppState, email: &str) {
    let user = match state.inner().store.get_user_by_email(email).await {
        Ok(user) => user,
        Err(e) => {
            tracing::error!(error = %e, "reading the account of a repeated sign-up failed");
            return;
        }
    };
    let secret = if user.is_verified() {
        None
    } else {
        let token = |h| NewToken::email_verification(&user, h, Utc::now() + VERIFICATION_VALID);
        match issue_token(state, token).await {
            Ok((secret, _)) => Some(secret),
            Err(e) => {
                tracing::error!(error = %e, "issuing a verification token failed");
                None
            }
        }
    };
    let public_url = &state.inner().config.public_url;
    send(state, mail::existing_account_email(public_url, &user.email, secret.as_deref())).await;
}

/// Consumes an email-verification token and marks its user verified. Shared
/// by the API and the web page the email links to.
pub(crate) async fn verify_email_token(state: &AppState, token: &str) -> Result<User, AppError> {
    state.inner().store.verify_email(&auth::hash_secret(token.trim()), Utc::now()).await.map_err(
        |e| match e {
            StoreError::NotFound => AppError::new(
                ErrorCode::InvalidToken,
                "the verification link is unknown, used or expired",
            ),
            other => other.into(),
        },
    )
}

/// Emails a new verification link if an unverified account has this email
/// (rate-limited per address and client with sign-ups, which send the same
/// email); succeeds the same way either way, and the email goes out in the
/// background so the timing says nothing either. Shared by the API and the
/// web pages.
pub(crate) async fn resend_verification(
    state: &AppState,
    ip: std::net::IpAddr,
    email: &str,
) -> Result<(), AppError> {
    let inner = state.inner();
    inner.signup_limiter.check(ip, Some(email)).await?;
    let user = match inner.store.get_user_by_email(email).await {
        Ok(user) if !user.is_verified() => user,
        Ok(_) | Err(StoreError::NotFound) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let state = state.clone();
    tokio::spawn(async move {
        let token = |h| NewToken::email_verification(&user, h, Utc::now() + VERIFICATION_VALID);
        match issue_token(&state, token).await {
            Ok((secret, _)) => {
                let public_url = &state.inner().config.public_url;
                send(&state, mail::verification_email(public_url, &user.email, &secret)).await;
            }
            Err(e) => tracing::error!(error = %e, "issuing a verification token failed"),
        }
    });
    Ok(())
}
