//! Organisations: creating one, reading it and its members, changing and
//! removing members, and deleting it.

use super::validate_name;
use crate::auth::{CurrentAdmin, CurrentOwner, CurrentUser};
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use crate::store::{Member, Membership, Organization, Role, User, UserId};

/// Creates an organisation named `name` (validated like a sign-up's) owned
/// by `user`: how a user in no organisation starts again. It counts against
/// the sign-up limits (per client address and per email), as a sign-up makes
/// an organisation too.
pub(crate) async fn create_organization_for(
    state: &AppState,
    ip: std::net::IpAddr,
    user: &User,
    name: &str,
) -> Result<(Organization, Membership), AppError> {
    let name = validate_name("organization_name", name)?;
    state.inner().signup_limiter.check(ip, Some(&user.email)).await?;
    Ok(state.inner().store.create_organization(&user.id, name).await?)
}

/// The caller's organisation.
pub(crate) async fn organization(
    state: &AppState,
    current: &CurrentUser,
) -> Result<Organization, AppError> {
    Ok(state.inner().store.get_organization(current.org()).await?)
}

/// The caller's organisation's members, oldest first.
pub(crate) async fn members(
    state: &AppState,
    current: &CurrentUser,
) -> Result<Vec<Member>, AppError> {
    Ok(state.inner().store.list_members(current.org()).await?)
}

/// Deletes the caller's organisation (an owner: [`CurrentOwner`]) and
/// disconnects the agents of its connections. Shared by the API and the settings page.
pub(crate) async fn delete_own_organization(
    state: &AppState,
    current: &CurrentOwner,
) -> Result<(), AppError> {
    // Not with a personal access token: deleting everything takes a session.
    current.session()?;
    let inner = state.inner();
    let connections = inner.store.delete_organization(current.org(), &current.user().id).await?;
    for id in &connections {
        inner.router.disconnect(id, "the organisation was deleted");
        inner.pipelines.forget(id);
    }
    tracing::info!(org = %current.org(), connections = connections.len(), "organisation deleted");
    Ok(())
}

/// A role by name, or a validation error.
pub(super) fn parse_role(role: &str) -> Result<Role, AppError> {
    Role::parse(role)
        .ok_or_else(|| AppError::new(ErrorCode::Validation, "role must be owner, admin or member"))
}

/// Changes a member's role: owners and admins may, only owners may grant or
/// take the owner role, and the organisation keeps an owner. Shared by the API
/// and the settings page.
pub(crate) async fn set_member_role(
    state: &AppState,
    current: &CurrentAdmin,
    id: String,
    role: &str,
) -> Result<Membership, AppError> {
    let role = parse_role(role)?;
    if role == Role::Owner {
        // Whoever holds a token must not make an owner that outlives it.
        current.session()?;
    }
    let target = UserId::from(id);
    let existing = state.inner().store.get_membership(current.org(), &target).await?;
    if (role == Role::Owner || existing.role == Role::Owner) && !current.is_owner() {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "only owners may grant or take the owner role",
        ));
    }
    Ok(state.inner().store.set_role(current.org(), &target, role).await?)
}

/// Removes a member: owners and admins may, only owners may remove an owner,
/// and the organisation keeps an owner. Shared by the API and the settings page.
pub(crate) async fn remove_from_org(
    state: &AppState,
    current: &CurrentAdmin,
    id: String,
) -> Result<(), AppError> {
    let target = UserId::from(id);
    let existing = state.inner().store.get_membership(current.org(), &target).await?;
    if existing.role == Role::Owner && !current.is_owner() {
        return Err(AppError::new(ErrorCode::Forbidden, "only owners may remove an owner"));
    }
    state.inner().store.remove_member(current.org(), &target).await?;
    Ok(())
}
