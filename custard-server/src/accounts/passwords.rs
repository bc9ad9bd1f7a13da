//! Forgotten passwords: the reset link and the reset.

use chrono::{Duration as Span, Utc};

use super::{check_password, issue_token, send};
use crate::auth;
use crate::error::{AppError, ErrorCode};
use crate::mail;
use crate::state::AppState;
use crate::store::{NewToken, StoreError, User};

/// How long a reset link works.
const RESET_VALID: Span = Span::hours(1);

/// Emails a reset link if an account has this email (rate-limited); succeeds
/// the same way either way. Shared by the API and the web page.
pub(crate) async fn request_password_reset(
    state: &AppState,
    ip: std::net::IpAddr,
    email: &str,
) -> Result<(), AppError> {
    let inner = state.inner();
    inner.forgot_limiter.check(ip, Some(email)).await?;
    // The same answer whether or not the account exists, and no email round
    // trip in the response time: the token and the email happen in the background.
    if let Ok(user) = inner.store.get_user_by_email(email).await {
        let state = state.clone();
        tokio::spawn(async move {
            let token = |h| NewToken::password_reset(&user, h, Utc::now() + RESET_VALID);
            match issue_token(&state, token).await {
                Ok((secret, _)) => {
                    let public_url = &state.inner().config.public_url;
                    send(&state, mail::password_reset_email(public_url, &user.email, &secret))
                        .await;
                }
                Err(e) => tracing::error!(error = %e, "issuing a reset token failed"),
            }
        });
    }
    Ok(())
}

/// Resets a password with a reset token (rate-limited per address): the
/// token is checked first, then the new password's policy (with the
/// account's email and names), and only then is it hashed; the store
/// consumes the token, ends the user's other reset tokens and revokes every
/// session. Shared by the API and the web page.
pub(crate) async fn reset_password_with_token(
    state: &AppState,
    ip: std::net::IpAddr,
    token: &str,
    new_password: String,
) -> Result<User, AppError> {
    let inner = state.inner();
    inner.reset_limiter.check(ip, None).await?;
    let invalid = |e: StoreError| match e {
        StoreError::NotFound => {
            AppError::new(ErrorCode::InvalidToken, "the reset link is unknown, used or expired")
        }
        other => other.into(),
    };
    let token_hash = auth::hash_secret(token.trim());
    let user = inner.store.password_reset_user(&token_hash, Utc::now()).await.map_err(invalid)?;
    check_password(&new_password, &user.email, &[&user.first_name, &user.last_name])?;
    let password_hash = inner.hashing.hash(new_password).await?;
    inner.store.reset_password(&token_hash, password_hash, Utc::now()).await.map_err(invalid)
}
