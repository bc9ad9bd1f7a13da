//! The signed-in user's own account: names and password.

use super::{check_password, validate_name};
use crate::auth::CurrentUser;
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use crate::store::{ProfileUpdate, User};

/// Validates and sets the caller's names (`None` keeps one as it is). Shared
/// by the API and the settings page.
pub(crate) async fn set_names(
    state: &AppState,
    current: &CurrentUser,
    first_name: Option<&str>,
    last_name: Option<&str>,
) -> Result<User, AppError> {
    let first_name = validate_name("first_name", first_name.unwrap_or(&current.user().first_name))?;
    let last_name = validate_name("last_name", last_name.unwrap_or(&current.user().last_name))?;
    Ok(state
        .inner()
        .store
        .update_profile(&current.user().id, ProfileUpdate { first_name, last_name })
        .await?)
}

/// Checks the caller's current password (wrong attempts are limited per
/// account) and the new one's policy, then sets it, ends the account's
/// outstanding reset links and signs out every other session (whoever knew
/// the old password is out). Shared by the API and the settings page.
pub(crate) async fn change_own_password(
    state: &AppState,
    current: &CurrentUser,
    current_password: String,
    new_password: String,
) -> Result<(), AppError> {
    let inner = state.inner();
    let user = current.user();
    // Before anything is checked: a personal access token may not change the
    // password (nor test guesses of it).
    let keep = current.session()?;
    // Counted as a failure until it proves right, so concurrent guesses count too.
    inner.password_failures.begin(user.id.as_str()).await?;
    match inner.hashing.verify(current_password, Some(user.password_hash.clone())).await {
        Ok(true) => inner.password_failures.forgive(user.id.as_str()).await,
        Ok(false) => {
            return Err(AppError::new(ErrorCode::Unauthorized, "the current password is wrong"));
        }
        // Not tried (the server is busy): not a failure.
        Err(e) => {
            inner.password_failures.forgive(user.id.as_str()).await;
            return Err(e);
        }
    }
    check_password(&new_password, &user.email, &[&user.first_name, &user.last_name])?;
    let password_hash = inner.hashing.hash(new_password).await?;
    inner.store.change_password(&user.id, &user.password_hash, password_hash, keep).await?;
    Ok(())
}
