//! `/api/v1/auth/*`: sign-up, email verification, sessions, passwords, the
//! profile and accepting an invitation. Each handler parses the request,
//! calls [`crate::accounts`] and maps the result to its response.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::accounts::{self, NewAccount};
use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::extract::{ApiJson, ApiQuery, ClientIp};
use crate::openapi::{DeclaredError, errors};
use crate::state::AppState;
use crate::store::User;

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserView {
    id: String,
    email: String,
    first_name: String,
    last_name: String,
    email_verified: bool,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        UserView {
            id: user.id.as_str().to_owned(),
            email: user.email.clone(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            email_verified: user.email_verified_at.is_some(),
            created_at: user.created_at.to_rfc3339(),
        }
    }
}

/// A new account.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SignupResponse {
    user: UserView,
    /// Whether a verification email was sent (not for an invited user, whose
    /// invitation proved the email).
    verification_sent: bool,
}

/// A verified email.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VerifiedResponse {
    /// Always `true`.
    verified: bool,
    user: UserView,
}

/// A session: the bearer token for every other call (no `Debug`: it holds the token).
#[derive(Serialize, ToSchema)]
pub(crate) struct LoginResponse {
    /// A JWT to send as `Authorization: Bearer <token>`.
    access_token: String,
    /// Always `bearer`.
    #[schema(example = "bearer")]
    token_type: &'static str,
    /// Seconds until the token expires.
    expires_in: u64,
    user: UserView,
}

/// An acknowledgement that says nothing about whether the account exists.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatusMessage {
    status: &'static str,
}

/// A password that was reset.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ResetResponse {
    /// Always `true`.
    reset: bool,
    user: UserView,
}

/// The caller, with the organisation the token is for.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProfileResponse {
    user: UserView,
    organization_id: String,
    /// `owner`, `admin` or `member`.
    role: &'static str,
}

/// A user.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserResponse {
    user: UserView,
}

/// A membership in an organisation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MembershipResponse {
    organization_id: String,
    /// `owner`, `admin` or `member`.
    role: &'static str,
}

/// A new account.
#[derive(Deserialize, ToSchema)]
pub(crate) struct SignupRequest {
    email: String,
    /// Checked against the password policy (length, common passwords, the
    /// email and names).
    password: String,
    first_name: String,
    last_name: String,
    /// The organisation to create; by default "`<first name>`'s organisation".
    organization_name: Option<String>,
    /// An invitation's token: join that organisation instead of creating one.
    invitation_token: Option<String>,
}

impl From<SignupRequest> for NewAccount {
    fn from(r: SignupRequest) -> Self {
        NewAccount {
            email: r.email,
            password: r.password,
            first_name: r.first_name,
            last_name: r.last_name,
            organization_name: r.organization_name,
            invitation_token: r.invitation_token,
        }
    }
}

const SIGNUP_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    InvalidToken: "an unknown, used, expired or revoked invitation, or one whose sender may no \
        longer send it",
    Conflict: "signing up through an invitation with an email that already has an account \
        (sign in and accept it instead)",
    PayloadTooLarge,
    Validation: "a missing field, a malformed email or name, or a weak password",
    RateLimited: "too many sign-ups from this address or for this email",
    ServerBusy,
    StoreUnavailable,
    Internal,
];

/// Sign up
///
/// Creates the user and their organisation and emails a verification link;
/// with an invitation token the user joins the inviting organisation instead,
/// already verified. For an email that already has an account the answer is
/// the same as for a new one (so it tells nobody who has an account): nothing
/// is created, and the address gets an email saying how to sign in or reset
/// the password instead.
#[utoipa::path(
    post,
    path = "/api/v1/auth/signup",
    tag = "accounts",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "The account was created", body = SignupResponse),
    ),
    extensions(("x-errors" = json!(SIGNUP_ERRORS))),
)]
pub(crate) async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<SignupRequest>,
) -> Result<impl IntoResponse, AppError> {
    let (user, verification_sent) = accounts::sign_up(&state, ip, request.into()).await?;
    Ok((
        StatusCode::CREATED,
        Json(SignupResponse { user: UserView::from(&user), verification_sent }),
    ))
}

/// A one-time token from an email link.
#[derive(Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TokenRequest {
    /// The token from the link.
    token: String,
}

/// Consumes a verification token; the answer of both ways to verify.
async fn verify_token(state: &AppState, token: &str) -> Result<Json<VerifiedResponse>, AppError> {
    let user = accounts::verify_email_token(state, token).await?;
    Ok(Json(VerifiedResponse { verified: true, user: UserView::from(&user) }))
}

const VERIFY_EMAIL_POST_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    InvalidToken: "the link is unknown, used or expired",
    PayloadTooLarge,
    Validation: "no token",
    StoreUnavailable,
    Internal,
];

/// Verify an email
///
/// Consumes the token of the verification email.
#[utoipa::path(
    post,
    path = "/api/v1/auth/verify-email",
    tag = "accounts",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "The email is verified", body = VerifiedResponse),
    ),
    extensions(("x-errors" = json!(VERIFY_EMAIL_POST_ERRORS))),
)]
pub(crate) async fn verify_email_post(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Json<VerifiedResponse>, AppError> {
    verify_token(&state, &request.token).await
}

const VERIFY_EMAIL_GET_ERRORS: &[DeclaredError] = errors![
    InvalidToken: "the link is unknown, used or expired",
    Validation: "no `token` parameter",
    StoreUnavailable,
    Internal,
];

/// Verify an email from its link
///
/// The same as the `POST`, with the token in the query string (the emailed
/// link opens the web page `/verify-email`, which does the same for people).
#[utoipa::path(
    get,
    path = "/api/v1/auth/verify-email",
    tag = "accounts",
    params(TokenRequest),
    responses(
        (status = 200, description = "The email is verified", body = VerifiedResponse),
    ),
    extensions(("x-errors" = json!(VERIFY_EMAIL_GET_ERRORS))),
)]
pub(crate) async fn verify_email_get(
    State(state): State<AppState>,
    ApiQuery(request): ApiQuery<TokenRequest>,
) -> Result<Json<VerifiedResponse>, AppError> {
    verify_token(&state, &request.token).await
}

/// Credentials.
#[derive(Deserialize, ToSchema)]
pub(crate) struct LoginRequest {
    email: String,
    password: String,
}

const LOGIN_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    Unauthorized: "wrong email or password",
    EmailNotVerified,
    Forbidden: "an account in no organisation (sign in on the web to create one or accept an \
        invitation)",
    Conflict: "the password changed while signing in; sign in again",
    PayloadTooLarge,
    Validation: "a missing field",
    RateLimited: "too many attempts from this address or for this email",
    ServerBusy,
    StoreUnavailable,
    Internal,
];

/// Log in
///
/// Opens a session in the user's first organisation and returns its bearer token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = LoginResponse),
    ),
    extensions(("x-errors" = json!(LOGIN_ERRORS))),
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, AppError> {
    let lifetime = state.inner().access_lifetime;
    let (user, token) =
        accounts::sign_in(&state, ip, &request.email, request.password, lifetime).await?;
    Ok(Json(LoginResponse {
        access_token: token,
        token_type: "bearer",
        expires_in: lifetime.as_secs(),
        user: UserView::from(&user),
    }))
}

const LOGOUT_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "a session cookie without the page's CSRF token, or a personal access token \
        (it has no session)",
    StoreUnavailable,
    Internal,
];

/// Log out
///
/// Revokes the session of the bearer token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "accounts",
    security(("access_token" = [])),
    responses(
        (status = 204, description = "The session is revoked"),
    ),
    extensions(("x-errors" = json!(LOGOUT_ERRORS))),
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<StatusCode, AppError> {
    accounts::sign_out(&state, current.session()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sessions signed out.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SignedOutResponse {
    /// How many other sessions were signed out.
    signed_out: u64,
}

const LOGOUT_OTHERS_ERRORS: &[DeclaredError] = errors![
    Unauthorized,
    Forbidden: "a session cookie without the page's CSRF token, or a personal access token \
        (it has no session)",
    StoreUnavailable,
    Internal,
];

/// Log out every other session
///
/// Revokes every session of the caller (browsers and API tokens) except the
/// one of this bearer token, at once and for good.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout-others",
    tag = "accounts",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The other sessions are revoked", body = SignedOutResponse),
    ),
    extensions(("x-errors" = json!(LOGOUT_OTHERS_ERRORS))),
)]
pub(crate) async fn logout_others(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<SignedOutResponse>, AppError> {
    let signed_out = accounts::sign_out_other_sessions(&state, &current).await?;
    Ok(Json(SignedOutResponse { signed_out }))
}

/// The address to send a new verification link to.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ResendVerificationRequest {
    email: String,
}

const RESEND_VERIFICATION_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    PayloadTooLarge,
    Validation: "no email",
    RateLimited: "too many verification emails or sign-ups for this address or from this client",
    StoreUnavailable,
    Internal,
];

/// Send the verification email again
///
/// Emails a new verification link if an account with this address waits
/// for verification; the answer is the same whether or not it does. Limited
/// per address and per client address, together with sign-ups.
#[utoipa::path(
    post,
    path = "/api/v1/auth/resend-verification",
    tag = "accounts",
    request_body = ResendVerificationRequest,
    responses(
        (status = 202, description = "Accepted, whether or not such an account exists", body = StatusMessage),
    ),
    extensions(("x-errors" = json!(RESEND_VERIFICATION_ERRORS))),
)]
pub(crate) async fn resend_verification_email(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<ResendVerificationRequest>,
) -> Result<(StatusCode, Json<StatusMessage>), AppError> {
    accounts::resend_verification(&state, ip, &request.email).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StatusMessage {
            status: "if an account with this email waits for verification, a new link is on its way",
        }),
    ))
}

/// The account that forgot its password.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ForgotRequest {
    email: String,
}

/// No store error: the answer is the same whether or not the account could be read.
const FORGOT_PASSWORD_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    PayloadTooLarge,
    Validation: "no email",
    RateLimited: "too many reset requests from this address or for this email",
];

/// Ask for a password reset
///
/// Emails a reset link if the account exists; the answer is the same either way.
#[utoipa::path(
    post,
    path = "/api/v1/auth/forgot-password",
    tag = "accounts",
    request_body = ForgotRequest,
    responses(
        (status = 202, description = "Accepted, whether or not the account exists", body = StatusMessage),
    ),
    extensions(("x-errors" = json!(FORGOT_PASSWORD_ERRORS))),
)]
pub(crate) async fn forgot_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<ForgotRequest>,
) -> Result<(StatusCode, Json<StatusMessage>), AppError> {
    accounts::request_password_reset(&state, ip, &request.email).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StatusMessage {
            status: "if an account exists for this email, a reset link is on its way",
        }),
    ))
}

/// A reset token and the new password.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ResetRequest {
    /// The token from the reset email.
    token: String,
    new_password: String,
}

const RESET_PASSWORD_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    InvalidToken: "the link is unknown, used, expired, or outdated by a newer one or a change of \
        password",
    PayloadTooLarge,
    Validation: "a missing field or a weak password (the account's email and names count as weak)",
    RateLimited: "too many attempts from this address",
    ServerBusy,
    StoreUnavailable,
    Internal,
];

/// Reset a password
///
/// Consumes the reset token and sets the new password; every other reset
/// link of the account stops working, and every session is signed out. The
/// token is checked before anything else (a bad one costs no hashing).
#[utoipa::path(
    post,
    path = "/api/v1/auth/reset-password",
    tag = "accounts",
    request_body = ResetRequest,
    responses(
        (status = 200, description = "The password is reset", body = ResetResponse),
    ),
    extensions(("x-errors" = json!(RESET_PASSWORD_ERRORS))),
)]
pub(crate) async fn reset_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<ResetRequest>,
) -> Result<Json<ResetResponse>, AppError> {
    let user =
        accounts::reset_password_with_token(&state, ip, &request.token, request.new_password)
            .await?;
    Ok(Json(ResetResponse { reset: true, user: UserView::from(&user) }))
}

/// Only the token is checked: the caller's user and role come with it.
const PROFILE_ERRORS: &[DeclaredError] = errors![Unauthorized, StoreUnavailable];

/// The caller's profile
///
/// The user, the organisation the token is for and the role in it.
#[utoipa::path(
    get,
    path = "/api/v1/auth/profile",
    tag = "accounts",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The caller", body = ProfileResponse),
    ),
    extensions(("x-errors" = json!(PROFILE_ERRORS))),
)]
pub(crate) async fn profile(current: CurrentUser) -> Json<ProfileResponse> {
    Json(ProfileResponse {
        user: UserView::from(current.user()),
        organization_id: current.org().as_str().to_owned(),
        role: current.role().as_str(),
    })
}

/// Names to change; a missing one stays as it is.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ProfileRequest {
    first_name: Option<String>,
    last_name: Option<String>,
}

const UPDATE_PROFILE_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    Unauthorized,
    Forbidden: "a session cookie without the page's CSRF token",
    PayloadTooLarge,
    Validation: "an empty or too long name",
    StoreUnavailable,
    Internal,
];

/// Update the caller's profile
#[utoipa::path(
    put,
    path = "/api/v1/auth/profile",
    tag = "accounts",
    security(("access_token" = [])),
    request_body = ProfileRequest,
    responses(
        (status = 200, description = "The updated user", body = UserResponse),
    ),
    extensions(("x-errors" = json!(UPDATE_PROFILE_ERRORS))),
)]
pub(crate) async fn update_profile(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(request): ApiJson<ProfileRequest>,
) -> Result<Json<UserResponse>, AppError> {
    let user = accounts::set_names(
        &state,
        &current,
        request.first_name.as_deref(),
        request.last_name.as_deref(),
    )
    .await?;
    Ok(Json(UserResponse { user: UserView::from(&user) }))
}

/// The current password and the new one.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

const CHANGE_PASSWORD_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    Unauthorized: "no valid token, or the current password is wrong",
    Forbidden: "a session cookie without the page's CSRF token, or a personal access token \
        (it has no session)",
    Conflict: "the password changed, or this session was signed out, meanwhile",
    PayloadTooLarge,
    Validation: "a missing field or a weak password",
    RateLimited: "the current password was wrong too many times for this account",
    ServerBusy,
    StoreUnavailable,
    Internal,
];

/// Change the caller's password
///
/// Sets a new password after checking the current one. Every other session
/// of the account (browsers and API tokens) is signed out; this token's
/// stays valid. The account's outstanding reset links stop working.
#[utoipa::path(
    post,
    path = "/api/v1/auth/change-password",
    tag = "accounts",
    security(("access_token" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "The password is changed"),
    ),
    extensions(("x-errors" = json!(CHANGE_PASSWORD_ERRORS))),
)]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(request): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, AppError> {
    accounts::change_own_password(&state, &current, request.current_password, request.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

const ACCEPT_INVITATION_ERRORS: &[DeclaredError] = errors![
    InvalidJson,
    InvalidToken: "the invitation is unknown, used, expired, revoked, for another email, or from a \
        sender who may no longer send it",
    Unauthorized,
    Forbidden: "a session cookie without the page's CSRF token, or a personal access token \
        (joining takes a session)",
    Conflict: "already a member",
    PayloadTooLarge,
    Validation: "no token",
    StoreUnavailable,
    Internal,
];

/// Accept an invitation
///
/// The signed-in user joins the organisation of an invitation sent to their email.
#[utoipa::path(
    post,
    path = "/api/v1/auth/accept-invitation",
    tag = "accounts",
    security(("access_token" = [])),
    request_body = TokenRequest,
    responses(
        (status = 200, description = "The new membership", body = MembershipResponse),
    ),
    extensions(("x-errors" = json!(ACCEPT_INVITATION_ERRORS))),
)]
pub(crate) async fn accept_invitation(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Json<MembershipResponse>, AppError> {
    // Joining another organisation is the user's own act, not a token's.
    current.session()?;
    let membership = accounts::join_by_invitation(&state, current.user(), &request.token).await?;
    Ok(Json(MembershipResponse {
        organization_id: membership.org_id.as_str().to_owned(),
        role: membership.role.as_str(),
    }))
}
