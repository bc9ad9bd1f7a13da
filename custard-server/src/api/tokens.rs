//! `/api/v1/tokens`: the caller's personal access tokens. A token acts as
//! its user in one organisation, with the user's role, on the API; it is
//! shown once, when created, and stored only as a hash.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts;
use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::extract::ApiJson;
use crate::openapi::{DeclaredError, errors};
use crate::state::AppState;
use crate::store::PersonalToken;

/// A new token's name and lifetime.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTokenRequest {
    /// What it is for (1 to 100 characters), to tell tokens apart.
    #[schema(example = "Claude Desktop")]
    name: String,
    /// Days it lasts (1 to 366); without it, until revoked.
    #[schema(example = 90)]
    expires_in_days: Option<u32>,
}

/// A token just created, with its secret: shown this once.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedToken {
    id: String,
    name: String,
    /// `custard_pat_...`: send it as `Authorization: Bearer <token>`.
    token: String,
    #[schema(format = DateTime)]
    created_at: String,
    /// `null`: until revoked.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

// The secret stays out of `Debug` (and so of any log line).
impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenView {
    id: String,
    name: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// When it was last used (to the minute), if ever.
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
}

impl From<&PersonalToken> for TokenView {
    fn from(t: &PersonalToken) -> Self {
        TokenView {
            id: t.id.to_string(),
            name: t.name.clone(),
            created_at: t.created_at.to_rfc3339(),
            expires_at: t.expires_at.map(|at| at.to_rfc3339()),
            last_used_at: t.last_used_at.map(|at| at.to_rfc3339()),
        }
    }
}

/// The caller's tokens.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokensResponse {
    tokens: Vec<TokenView>,
}

const CREATE_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    Unauthorized,
    Forbidden: "called with a personal access token (a token makes no tokens), or a session \
        cookie without the page's CSRF token",
    PayloadTooLarge,
    Validation: "a missing or unknown field, a name that is empty or too long, or a lifetime out \
        of range",
    Conflict: "the caller already has as many tokens in the organisation as allowed (50)",
    StoreUnavailable,
    Internal,
];

/// Create a personal access token
///
/// A token for scripts: it acts as the caller in the caller's
/// organisation, with the caller's role, on the API, never in the web UI;
/// it cannot create tokens, sign out, change the password, join another
/// organisation, delete the organisation or make an owner. Its secret is in
/// this reply only (marked `Cache-Control: no-store`). Changing or resetting
/// the password deletes the account's tokens.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "accounts",
    security(("access_token" = [])),
    request_body = CreateTokenRequest,
    responses((status = 201, description = "The token, with its secret", body = CreatedToken,
        headers(("Cache-Control" = String, description = "`no-store`: the secret is shown once")))),
    extensions(("x-errors" = json!(CREATE_ERRORS))),
)]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(body): ApiJson<CreateTokenRequest>,
) -> Result<impl IntoResponse, AppError> {
    let issued =
        accounts::create_personal_token(&state, &current, &body.name, body.expires_in_days).await?;
    let t = &issued.token;
    Ok((
        StatusCode::CREATED,
        // The secret is shown once: no cache keeps it.
        [(header::CACHE_CONTROL, "no-store")],
        Json(CreatedToken {
            id: t.id.to_string(),
            name: t.name.clone(),
            token: issued.secret,
            created_at: t.created_at.to_rfc3339(),
            expires_at: t.expires_at.map(|at| at.to_rfc3339()),
        }),
    ))
}

const LIST_ERRORS: &[DeclaredError] = errors![Unauthorized, StoreUnavailable, Internal];

/// List your personal access tokens
///
/// The caller's tokens in the caller's organisation, newest first, without
/// their secrets.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "accounts",
    security(("access_token" = [])),
    responses((status = 200, description = "The caller's tokens", body = TokensResponse)),
    extensions(("x-errors" = json!(LIST_ERRORS))),
)]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<TokensResponse>, AppError> {
    let tokens = accounts::personal_tokens(&state, &current).await?;
    Ok(Json(TokensResponse { tokens: tokens.iter().map(TokenView::from).collect() }))
}

const REVOKE_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "a session cookie without the page's CSRF token, or a personal access token \
        revoking another token",
    NotFound: "no such token of the caller's in the organisation",
    StoreUnavailable,
    Internal,
];

/// Revoke a personal access token
///
/// Refused from the next request on. Called with a token, only that token
/// may be revoked.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "accounts",
    security(("access_token" = [])),
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 204, description = "The token is revoked")),
    extensions(("x-errors" = json!(REVOKE_ERRORS))),
)]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    accounts::revoke_personal_token(&state, &current, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
