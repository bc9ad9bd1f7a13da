//! `/api/v1/org/*`: the caller's organisation, its members and invitations.
//! Each handler parses the request, calls [`crate::accounts`] and maps the
//! result; those reserved to owners and admins (or owners) take a
//! [`CurrentAdmin`] (or [`CurrentOwner`]), so a member is refused before
//! anything else happens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts;
use crate::auth::{CurrentAdmin, CurrentOwner, CurrentUser};
use crate::error::AppError;
use crate::extract::ApiJson;
use crate::openapi::{DeclaredError, errors};
use crate::state::AppState;
use crate::store::Invitation;

/// The caller's organisation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrganizationView {
    id: String,
    name: String,
    /// The caller's role: `owner`, `admin` or `member`.
    role: &'static str,
    #[schema(format = DateTime)]
    created_at: String,
}

/// A member of the organisation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MemberView {
    /// The member's user id.
    id: String,
    email: String,
    first_name: String,
    last_name: String,
    /// `owner`, `admin` or `member`.
    role: &'static str,
    #[schema(format = DateTime)]
    joined_at: String,
}

/// The organisation's members.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MembersResponse {
    members: Vec<MemberView>,
}

/// An invitation sent by email.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InvitationResponse {
    /// The invitation's id, to revoke it.
    id: String,
    email: String,
    /// `owner`, `admin` or `member`.
    role: &'static str,
    /// Always `true`.
    sent: bool,
}

/// A pending invitation (never its token).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InvitationView {
    id: String,
    email: String,
    /// `owner`, `admin` or `member`.
    role: &'static str,
    /// The user id of the member who sent it (unknown for old invitations).
    #[schema(required)]
    invited_by: Option<String>,
    /// The sender's email (unknown for old invitations).
    #[schema(required)]
    invited_by_email: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
}

impl From<Invitation> for InvitationView {
    fn from(i: Invitation) -> Self {
        InvitationView {
            id: i.id.as_str().to_owned(),
            email: i.email,
            role: i.role.as_str(),
            invited_by: i.invited_by.map(|u| u.as_str().to_owned()),
            invited_by_email: i.invited_by_email,
            created_at: i.created_at.to_rfc3339(),
            expires_at: i.expires_at.to_rfc3339(),
        }
    }
}

/// The organisation's pending invitations.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InvitationsResponse {
    invitations: Vec<InvitationView>,
}

/// A member's new role.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoleResponse {
    /// The member's user id.
    id: String,
    /// `owner`, `admin` or `member`.
    role: &'static str,
}

const ORGANIZATION_ERRORS: &[DeclaredError] = errors![Unauthorized, StoreUnavailable, Internal];

/// The caller's organisation
#[utoipa::path(
    get,
    path = "/api/v1/org",
    tag = "organization",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The organisation the token is for", body = OrganizationView),
    ),
    extensions(("x-errors" = json!(ORGANIZATION_ERRORS))),
)]
pub(crate) async fn organization(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<OrganizationView>, AppError> {
    let org = accounts::organization(&state, &current).await?;
    Ok(Json(OrganizationView {
        id: org.id.as_str().to_owned(),
        name: org.name,
        role: current.role().as_str(),
        created_at: org.created_at.to_rfc3339(),
    }))
}

const DELETE_ORGANIZATION_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "not an owner, a personal access token (deleting takes a session), or a session \
        cookie without the page's CSRF token",
    Conflict: "the caller stopped being an owner meanwhile",
    StoreUnavailable,
    Internal,
];

/// Delete the caller's organisation
///
/// Deletes the organisation with its connections (their agents are sent
/// away), schemas, history, memberships and invitations, at once and for
/// good. Owners only. The members keep their accounts, in no organisation
/// unless they belong to another one.
#[utoipa::path(
    delete,
    path = "/api/v1/org",
    tag = "organization",
    security(("access_token" = [])),
    responses(
        (status = 204, description = "The organisation is deleted"),
    ),
    extensions(("x-errors" = json!(DELETE_ORGANIZATION_ERRORS))),
)]
pub(crate) async fn delete_organization(
    State(state): State<AppState>,
    current: CurrentOwner,
) -> Result<StatusCode, AppError> {
    accounts::delete_own_organization(&state, &current).await?;
    Ok(StatusCode::NO_CONTENT)
}

const MEMBERS_ERRORS: &[DeclaredError] = errors![Unauthorized, StoreUnavailable, Internal];

/// The organisation's members
#[utoipa::path(
    get,
    path = "/api/v1/org/members",
    tag = "organization",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "Every member", body = MembersResponse),
    ),
    extensions(("x-errors" = json!(MEMBERS_ERRORS))),
)]
pub(crate) async fn members(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<MembersResponse>, AppError> {
    let members = accounts::members(&state, &current).await?;
    let members = members
        .into_iter()
        .map(|m| MemberView {
            id: m.user_id.as_str().to_owned(),
            email: m.email,
            first_name: m.first_name,
            last_name: m.last_name,
            role: m.role.as_str(),
            joined_at: m.joined_at.to_rfc3339(),
        })
        .collect();
    Ok(Json(MembersResponse { members }))
}

/// Who to invite, and as what.
#[derive(Deserialize, ToSchema)]
pub(crate) struct InviteRequest {
    email: String,
    /// `owner`, `admin` or `member`.
    role: String,
}

const INVITE_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    Unauthorized,
    Forbidden: "not an owner or admin, an admin inviting an owner, a personal access token \
        inviting an owner (that takes a session), or a session cookie without the page's CSRF \
        token",
    PayloadTooLarge,
    Validation: "a malformed email or an unknown role",
    RateLimited: "too many invitations lately from the organisation or the sender, or to the \
        address",
    StoreUnavailable,
    Internal,
];

/// Invite someone
///
/// Emails an invitation to join the organisation, valid for seven days.
/// Owners and admins may invite; only owners may invite owners. Sending is
/// limited per organisation and per recipient address. The invitation stops
/// working if its sender is removed, or loses the role that could send it.
#[utoipa::path(
    post,
    path = "/api/v1/org/invitations",
    tag = "organization",
    security(("access_token" = [])),
    request_body = InviteRequest,
    responses(
        (status = 201, description = "The invitation was sent", body = InvitationResponse),
    ),
    extensions(("x-errors" = json!(INVITE_ERRORS))),
)]
pub(crate) async fn invite(
    State(state): State<AppState>,
    current: CurrentAdmin,
    ApiJson(request): ApiJson<InviteRequest>,
) -> Result<(StatusCode, Json<InvitationResponse>), AppError> {
    let (id, email, role) =
        accounts::invite_by_email(&state, &current, &request.email, &request.role).await?;
    let response =
        InvitationResponse { id: id.as_str().to_owned(), email, role: role.as_str(), sent: true };
    Ok((StatusCode::CREATED, Json(response)))
}

const LIST_INVITATIONS_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "not an owner or admin",
    StoreUnavailable,
    Internal,
];

/// Pending invitations
///
/// The organisation's invitations that are neither used, revoked nor
/// expired, oldest first. Owners and admins only.
#[utoipa::path(
    get,
    path = "/api/v1/org/invitations",
    tag = "organization",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The pending invitations", body = InvitationsResponse),
    ),
    extensions(("x-errors" = json!(LIST_INVITATIONS_ERRORS))),
)]
pub(crate) async fn list_invitations(
    State(state): State<AppState>,
    current: CurrentAdmin,
) -> Result<Json<InvitationsResponse>, AppError> {
    let invitations = accounts::pending_invitations(&state, &current).await?;
    Ok(Json(InvitationsResponse {
        invitations: invitations.into_iter().map(InvitationView::from).collect(),
    }))
}

const REVOKE_INVITATION_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "not an owner or admin, or an admin revoking an invitation to be an owner (or a \
        session cookie without the page's CSRF token)",
    NotFound: "no such pending invitation in the organisation",
    StoreUnavailable,
    Internal,
];

/// Revoke an invitation
///
/// Its link stops working at once. Owners and admins may revoke; only
/// owners may revoke an invitation to be an owner.
#[utoipa::path(
    delete,
    path = "/api/v1/org/invitations/{id}",
    tag = "organization",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The invitation's id")),
    responses(
        (status = 204, description = "The invitation is revoked"),
    ),
    extensions(("x-errors" = json!(REVOKE_INVITATION_ERRORS))),
)]
pub(crate) async fn revoke_invitation(
    State(state): State<AppState>,
    current: CurrentAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    accounts::revoke_pending_invitation(&state, &current, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

const RESEND_INVITATION_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "not an owner or admin, or an admin sending an invitation to be an owner (or a \
        session cookie without the page's CSRF token)",
    NotFound: "no such pending invitation in the organisation",
    RateLimited: "too many invitations lately from the organisation or the sender, or to the \
        address",
    StoreUnavailable,
    Internal,
];

/// Send an invitation again
///
/// Emails the invited address a fresh link, valid for seven days from now;
/// the old link stops working, and the caller becomes its sender. The same
/// rules as revoking, and the same limits as inviting.
#[utoipa::path(
    post,
    path = "/api/v1/org/invitations/{id}/resend",
    tag = "organization",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The invitation's id")),
    responses(
        (status = 200, description = "The invitation, with its new expiry", body = InvitationView),
    ),
    extensions(("x-errors" = json!(RESEND_INVITATION_ERRORS))),
)]
pub(crate) async fn resend_invitation(
    State(state): State<AppState>,
    current: CurrentAdmin,
    Path(id): Path<String>,
) -> Result<Json<InvitationView>, AppError> {
    Ok(Json(accounts::resend_pending_invitation(&state, &current, id).await?.into()))
}

/// A member's new role.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RoleRequest {
    /// `owner`, `admin` or `member`.
    role: String,
}

const CHANGE_ROLE_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    Unauthorized,
    Forbidden: "not an owner or admin, an admin touching the owner role, a personal access token \
        granting the owner role (that takes a session), or a session cookie without the page's \
        CSRF token",
    NotFound: "no such member in the organisation",
    PayloadTooLarge,
    Validation: "an unknown role, or the last owner would be demoted",
    StoreUnavailable,
    Internal,
];

/// Change a member's role
///
/// Owners and admins may change roles; only owners may grant or take the
/// owner role, and the organisation keeps at least one owner. The member's
/// pending invitations that the new role may not send stop working.
#[utoipa::path(
    patch,
    path = "/api/v1/org/members/{id}",
    tag = "organization",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The member's user id")),
    request_body = RoleRequest,
    responses(
        (status = 200, description = "The member's new role", body = RoleResponse),
    ),
    extensions(("x-errors" = json!(CHANGE_ROLE_ERRORS))),
)]
pub(crate) async fn change_role(
    State(state): State<AppState>,
    current: CurrentAdmin,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<RoleRequest>,
) -> Result<Json<RoleResponse>, AppError> {
    let membership = accounts::set_member_role(&state, &current, id, &request.role).await?;
    Ok(Json(RoleResponse {
        id: membership.user_id.as_str().to_owned(),
        role: membership.role.as_str(),
    }))
}

const REMOVE_MEMBER_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "not an owner or admin, or an admin removing an owner (or a session cookie \
        without the page's CSRF token)",
    NotFound: "no such member in the organisation",
    Validation: "the last owner cannot leave",
    StoreUnavailable,
    Internal,
];

/// Remove a member
///
/// Owners and admins may remove members; only owners may remove an owner,
/// and the organisation keeps at least one owner. The invitations the member
/// sent that are still pending stop working.
#[utoipa::path(
    delete,
    path = "/api/v1/org/members/{id}",
    tag = "organization",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The member's user id")),
    responses(
        (status = 204, description = "The member is removed"),
    ),
    extensions(("x-errors" = json!(REMOVE_MEMBER_ERRORS))),
)]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    current: CurrentAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    accounts::remove_from_org(&state, &current, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
