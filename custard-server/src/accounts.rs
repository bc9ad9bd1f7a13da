//! Accounts: sign-up with email verification, login and sessions, password
//! reset, profile, and the organisation's members and invitations.
//!
//! Tenancy lives in the [`CurrentUser`] extractor and the store: every
//! organisation-scoped call takes the caller's organisation id, and rows of
//! other organisations answer 404.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use chrono::{Duration as Span, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{self, AccessClaims};
use crate::error::{AppError, ErrorBody, ErrorCode};
use crate::extract::{ApiJson, ApiQuery, ClientIp};
use crate::mail;
use crate::routes::AppState;
use crate::store::{
    ConflictKind, Invitation, Membership, NewToken, NewUser, OneTimeToken, OrgId, Organization,
    ProfileUpdate, ReceivedInvitation, Role, SessionGrant, SessionId, StoreError, TokenId, User,
    UserId, normalize_email,
};
use crate::web::session;

const VERIFICATION_VALID: Span = Span::hours(24);
const RESET_VALID: Span = Span::hours(1);
const INVITATION_VALID: Span = Span::days(7);
const MAX_NAME_CHARS: usize = 100;

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AppError::new(ErrorCode::NotFound, "not found"),
            StoreError::Conflict(ConflictKind::ConnectionName) => AppError::new(
                ErrorCode::NameTaken,
                "another connection in this organisation already has that name",
            ),
            StoreError::Conflict(_) => AppError::new(ErrorCode::Conflict, "it already exists"),
            StoreError::LastOwner => {
                AppError::new(ErrorCode::Validation, "an organisation must keep at least one owner")
            }
            StoreError::Stale => AppError::new(
                ErrorCode::Conflict,
                "something this depended on changed meanwhile (your password, session or \
                 role): reload the page, or sign in again, and retry",
            ),
            StoreError::Unavailable(_) => {
                AppError::new(ErrorCode::Unavailable, "the store is unavailable; try again")
            }
            other => AppError::internal(other),
        }
    }
}

/// The signed-in user, their session and the organisation the token is for.
#[derive(Debug, Clone)]
pub(crate) struct CurrentUser {
    user: User,
    session: SessionId,
    org: OrgId,
    role: Role,
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized =
            || AppError::new(ErrorCode::Unauthorized, "sign in: a valid bearer token is required");
        let inner = state.inner();
        let header =
            parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = match header {
            Some(h) => h.strip_prefix("Bearer ").ok_or_else(unauthorized)?.to_owned(),
            // A browser's session cookie: a request that changes something must
            // also prove it comes from our own page (CSRF).
            None => {
                let token = session::cookie_value(&parts.headers, session::SESSION_COOKIE)
                    .ok_or_else(unauthorized)?;
                if !parts.method.is_safe()
                    && !session::request_has_valid_csrf(&inner.jwt, &parts.headers, None)
                {
                    return Err(AppError::new(
                        ErrorCode::Forbidden,
                        "the request's CSRF token is missing or wrong; reload the page",
                    ));
                }
                token
            }
        };
        CurrentUser::of_token(state, &token).await.map_err(|_| unauthorized())
    }
}

impl CurrentUser {
    /// The user of an access token (a bearer token or a session cookie's value)
    /// whose session is active and who is still a member of its organisation.
    /// Checks no CSRF token: callers that take a cookie check it themselves.
    pub(crate) async fn of_token(state: &AppState, token: &str) -> Result<Self, AppError> {
        let unauthorized =
            || AppError::new(ErrorCode::Unauthorized, "sign in: the session is not valid");
        let inner = state.inner();
        let claims = auth::decode_access(token.trim(), &inner.jwt).map_err(|_| unauthorized())?;
        let org = OrgId::from(claims.org.clone());
        let (session, user, membership) = inner
            .store
            .session_context(&SessionId::from(claims.sid.clone()), &org)
            .await
            .map_err(|_| unauthorized())?;
        if !session.is_active(Utc::now()) || session.user_id.as_str() != claims.sub {
            return Err(unauthorized());
        }
        Ok(CurrentUser { user, session: session.id, org, role: membership.role })
    }

    /// Whether the caller's session is still active and the caller still a
    /// member of the organisation: what a long-lived stream checks again as
    /// it goes. A store error counts as no (the stream ends; the client may
    /// reconnect and be checked afresh).
    pub(crate) async fn still_valid(&self, store: &dyn crate::store::Store) -> bool {
        match store.session_context(&self.session, &self.org).await {
            Ok((session, user, _)) => session.is_active(Utc::now()) && user.id == self.user.id,
            Err(_) => false,
        }
    }

    /// The caller's role in the organisation.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The store session the caller's token belongs to.
    pub(crate) fn session(&self) -> &SessionId {
        &self.session
    }

    /// The organisation the caller acts in.
    pub(crate) fn org(&self) -> &OrgId {
        &self.org
    }

    /// The caller.
    pub(crate) fn user(&self) -> &User {
        &self.user
    }

    /// Refuses callers that are not owners or admins of the organisation.
    pub(crate) fn require_admin(&self) -> Result<(), AppError> {
        match self.role {
            Role::Owner | Role::Admin => Ok(()),
            _ => Err(AppError::new(ErrorCode::Forbidden, "only owners and admins may do this")),
        }
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
    pub(crate) async fn of_token(state: &AppState, token: &str) -> Result<Self, AppError> {
        let unauthorized =
            || AppError::new(ErrorCode::Unauthorized, "sign in: the session is not valid");
        let store = &state.inner().store;
        let claims =
            auth::decode_access(token.trim(), &state.inner().jwt).map_err(|_| unauthorized())?;
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

impl From<CurrentUser> for SessionUser {
    fn from(current: CurrentUser) -> Self {
        SessionUser { user: current.user, session: current.session }
    }
}

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

fn validate_email(email: &str) -> Result<String, AppError> {
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

fn validate_name(field: &str, value: &str) -> Result<String, AppError> {
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

fn check_password(password: &str, email: &str, names: &[&str]) -> Result<(), AppError> {
    auth::check_password_policy(password, email, names).map_err(|problem| {
        AppError::new(
            ErrorCode::Validation,
            format!("password rejected: {}", problem.code().replace('_', " ")),
        )
    })
}

/// Issues a one-time token of `kind`, stores its hash and returns the secret
/// with the stored row.
async fn issue_token(
    state: &AppState,
    token: impl FnOnce(String) -> NewToken,
) -> Result<(String, OneTimeToken), AppError> {
    let secret = auth::new_secret();
    let stored = state.inner().store.create_token(token(auth::hash_secret(&secret))).await?;
    Ok((secret, stored))
}

async fn send(state: &AppState, message: mail::Message) {
    // A failed email must not undo the account; the user can ask again.
    if let Err(e) = state.inner().mailer.send(&message).await {
        tracing::error!(error = %e, to = %message.to, "sending email failed");
    }
}

/// A new account.
#[derive(Deserialize, ToSchema)]
pub(crate) struct SignupRequest {
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
        (status = 400, description = "`invalid_json`, or `invalid_token` for an unknown, used, expired or revoked invitation, or one whose sender may no longer send it", body = ErrorBody),
        (status = 409, description = "`conflict`: signing up through an invitation with an email that already has an account (sign in and accept it instead)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: a missing field, a malformed email or name, or a weak password", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many sign-ups from this address or for this email (see `Retry-After`)", body = ErrorBody),
        (status = 503, description = "`server_busy`: too many passwords being checked (see `Retry-After`)", body = ErrorBody),
    )
)]
pub(crate) async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<SignupRequest>,
) -> Result<impl IntoResponse, AppError> {
    let (user, verification_sent) = sign_up(&state, ip, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(SignupResponse { user: UserView::from(&user), verification_sent }),
    ))
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
    request: SignupRequest,
) -> Result<(User, bool), AppError> {
    let inner = state.inner();
    inner.signup_limiter.check(ip, Some(&request.email))?;
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

/// A one-time token from an email link.
#[derive(Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TokenRequest {
    /// The token from the link.
    token: String,
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

async fn verify_token(state: &AppState, token: &str) -> Result<Json<VerifiedResponse>, AppError> {
    let user = verify_email_token(state, token).await?;
    Ok(Json(VerifiedResponse { verified: true, user: UserView::from(&user) }))
}

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
        (status = 400, description = "`invalid_json`, or `invalid_token`: the link is unknown, used or expired", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: no token", body = ErrorBody),
    )
)]
pub(crate) async fn verify_email_post(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Json<VerifiedResponse>, AppError> {
    verify_token(&state, &request.token).await
}

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
        (status = 400, description = "`invalid_token`: the link is unknown, used or expired", body = ErrorBody),
        (status = 422, description = "`validation_error`: no `token` parameter", body = ErrorBody),
    )
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

/// Checks the credentials (rate-limited, the same answer for unknown emails and
/// wrong passwords) and that the email is verified; returns the user. Shared
/// by the API's and the web's sign-in.
pub(crate) async fn check_credentials(
    state: &AppState,
    ip: std::net::IpAddr,
    email: &str,
    password: String,
) -> Result<User, AppError> {
    let inner = state.inner();
    inner.login_limiter.check(ip, Some(email))?;
    let found = match inner.store.get_user_by_email(email).await {
        Ok(user) => Some(user),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let ok =
        inner.hashing.verify(password, found.as_ref().map(|u| u.password_hash.clone())).await?;
    let user = match found {
        Some(user) if ok => user,
        _ => return Err(AppError::new(ErrorCode::Unauthorized, "wrong email or password")),
    };
    if user.email_verified_at.is_none() {
        return Err(AppError::new(
            ErrorCode::EmailNotVerified,
            "verify your email first: follow the link we sent",
        ));
    }
    Ok(user)
}

/// The organisation a user signs in to: their oldest membership's, if any.
pub(crate) async fn first_organization(
    state: &AppState,
    user: &UserId,
) -> Result<Option<OrgId>, AppError> {
    let orgs = state.inner().store.organizations_of_user(user).await?;
    Ok(orgs.into_iter().next().map(|(org, _)| org.id))
}

/// Checks the credentials ([`check_credentials`]), starts a store session
/// valid for `lifetime` in the user's first organisation and returns the user
/// with an access token for it. A user in no organisation is refused (the web
/// sign-in lets them create one or accept an invitation instead).
pub(crate) async fn sign_in(
    state: &AppState,
    ip: std::net::IpAddr,
    email: &str,
    password: String,
    lifetime: std::time::Duration,
) -> Result<(User, String), AppError> {
    let user = check_credentials(state, ip, email, password).await?;
    let Some(org) = first_organization(state, &user.id).await? else {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "this account belongs to no organisation: sign in on the web to create one or \
             accept an invitation",
        ));
    };
    let grant = SessionGrant::Password(&user.password_hash);
    let token = open_session(state, &user.id, Some(&org), lifetime, grant).await?;
    Ok((user, token))
}

/// Starts a store session for the user in `org` (none: a user in no
/// organisation, who can act on nothing organisation-scoped), valid for
/// `lifetime`, and returns its access token. The caller has checked who the
/// user is, by `grant`, which the store checks again as it creates the session.
pub(crate) async fn open_session(
    state: &AppState,
    user: &UserId,
    org: Option<&OrgId>,
    lifetime: std::time::Duration,
    grant: SessionGrant<'_>,
) -> Result<String, AppError> {
    let inner = state.inner();
    let expires = Utc::now() + Span::from_std(lifetime).map_err(AppError::internal)?;
    let session = inner.store.create_session(user, expires, grant).await?;
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let org = org.map_or("", OrgId::as_str);
    let claims = AccessClaims::new(user.as_str(), session.id.as_str(), org, now, lifetime);
    auth::encode_access(&claims, &inner.jwt).map_err(AppError::internal)
}

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
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: wrong email or password", body = ErrorBody),
        (status = 403, description = "`email_not_verified`, or `forbidden` for an account in no organisation", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: a missing field", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many attempts from this address or for this email (see `Retry-After`)", body = ErrorBody),
        (status = 503, description = "`server_busy`: too many passwords being checked (see `Retry-After`)", body = ErrorBody),
    )
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, AppError> {
    let lifetime = state.inner().access_lifetime;
    let (user, token) = sign_in(&state, ip, &request.email, request.password, lifetime).await?;
    Ok(Json(LoginResponse {
        access_token: token,
        token_type: "bearer",
        expires_in: lifetime.as_secs(),
        user: UserView::from(&user),
    }))
}

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
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<StatusCode, AppError> {
    state.inner().store.revoke_session(&current.session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sessions signed out.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SignedOutResponse {
    /// How many other sessions were signed out.
    signed_out: u64,
}

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
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn logout_others(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<SignedOutResponse>, AppError> {
    let signed_out = sign_out_other_sessions(&state, &current).await?;
    Ok(Json(SignedOutResponse { signed_out }))
}

/// Revokes every session of the caller but their own; returns how many.
/// Shared by the API and the settings page.
pub(crate) async fn sign_out_other_sessions(
    state: &AppState,
    current: &CurrentUser,
) -> Result<u64, AppError> {
    Ok(state.inner().store.revoke_other_sessions(&current.user.id, &current.session).await?)
}

/// The address to send a new verification link to.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ResendVerificationRequest {
    email: String,
}

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
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: no email", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many verification emails or sign-ups for this address or from this client (see `Retry-After`)", body = ErrorBody),
    )
)]
pub(crate) async fn resend_verification_email(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<ResendVerificationRequest>,
) -> Result<(StatusCode, Json<StatusMessage>), AppError> {
    resend_verification(&state, ip, &request.email).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StatusMessage {
            status: "if an account with this email waits for verification, a new link is on its way",
        }),
    ))
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
    inner.signup_limiter.check(ip, Some(email))?;
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

/// The account that forgot its password.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ForgotRequest {
    email: String,
}

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
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: no email", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
    )
)]
pub(crate) async fn forgot_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<ForgotRequest>,
) -> Result<(StatusCode, Json<StatusMessage>), AppError> {
    request_password_reset(&state, ip, &request.email).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StatusMessage {
            status: "if an account exists for this email, a reset link is on its way",
        }),
    ))
}

/// Emails a reset link if an account has this email (rate-limited); succeeds
/// the same way either way. Shared by the API and the web page.
pub(crate) async fn request_password_reset(
    state: &AppState,
    ip: std::net::IpAddr,
    email: &str,
) -> Result<(), AppError> {
    let inner = state.inner();
    inner.forgot_limiter.check(ip, Some(email))?;
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

/// A reset token and the new password.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ResetRequest {
    /// The token from the reset email.
    token: String,
    new_password: String,
}

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
        (status = 400, description = "`invalid_json`, or `invalid_token`: the link is unknown, used, expired, or outdated by a newer one or a change of password", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: a missing field or a weak password (the account's email and names count as weak)", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many attempts from this address (see `Retry-After`)", body = ErrorBody),
        (status = 503, description = "`server_busy`: too many passwords being hashed (see `Retry-After`)", body = ErrorBody),
    )
)]
pub(crate) async fn reset_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<ResetRequest>,
) -> Result<Json<ResetResponse>, AppError> {
    let user = reset_password_with_token(&state, ip, &request.token, request.new_password).await?;
    Ok(Json(ResetResponse { reset: true, user: UserView::from(&user) }))
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
    inner.reset_limiter.check(ip, None)?;
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
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn profile(current: CurrentUser) -> Json<ProfileResponse> {
    Json(ProfileResponse {
        user: UserView::from(&current.user),
        organization_id: current.org.as_str().to_owned(),
        role: current.role.as_str(),
    })
}

/// Names to change; a missing one stays as it is.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ProfileRequest {
    first_name: Option<String>,
    last_name: Option<String>,
}

/// Update the caller's profile
#[utoipa::path(
    put,
    path = "/api/v1/auth/profile",
    tag = "accounts",
    security(("access_token" = [])),
    request_body = ProfileRequest,
    responses(
        (status = 200, description = "The updated user", body = UserResponse),
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: an empty or too long name", body = ErrorBody),
    )
)]
pub(crate) async fn update_profile(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(request): ApiJson<ProfileRequest>,
) -> Result<Json<UserResponse>, AppError> {
    let user =
        set_names(&state, &current, request.first_name.as_deref(), request.last_name.as_deref())
            .await?;
    Ok(Json(UserResponse { user: UserView::from(&user) }))
}

/// Validates and sets the caller's names (`None` keeps one as it is). Shared
/// by the API and the settings page.
pub(crate) async fn set_names(
    state: &AppState,
    current: &CurrentUser,
    first_name: Option<&str>,
    last_name: Option<&str>,
) -> Result<User, AppError> {
    let first_name = validate_name("first_name", first_name.unwrap_or(&current.user.first_name))?;
    let last_name = validate_name("last_name", last_name.unwrap_or(&current.user.last_name))?;
    Ok(state
        .inner()
        .store
        .update_profile(&current.user.id, ProfileUpdate { first_name, last_name })
        .await?)
}

/// The current password and the new one.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

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
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid token, or the current password is wrong", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: a missing field or a weak password", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the current password was wrong too many times for this account (see `Retry-After`)", body = ErrorBody),
        (status = 503, description = "`server_busy`: too many passwords being checked (see `Retry-After`)", body = ErrorBody),
    )
)]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(request): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, AppError> {
    change_own_password(&state, &current, request.current_password, request.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
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
    let user = &current.user;
    // Counted as a failure until it proves right, so concurrent guesses count too.
    inner.password_failures.begin(user.id.as_str())?;
    match inner.hashing.verify(current_password, Some(user.password_hash.clone())).await {
        Ok(true) => inner.password_failures.forgive(user.id.as_str()),
        Ok(false) => {
            return Err(AppError::new(ErrorCode::Unauthorized, "the current password is wrong"));
        }
        // Not tried (the server is busy): not a failure.
        Err(e) => {
            inner.password_failures.forgive(user.id.as_str());
            return Err(e);
        }
    }
    check_password(&new_password, &user.email, &[&user.first_name, &user.last_name])?;
    let password_hash = inner.hashing.hash(new_password).await?;
    inner
        .store
        .change_password(&user.id, &user.password_hash, password_hash, &current.session)
        .await?;
    Ok(())
}

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
        (status = 400, description = "`invalid_json`, or `invalid_token`: the invitation is unknown, used, expired, revoked, for another email, or from a sender who may no longer send it", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 409, description = "`conflict`: already a member", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: no token", body = ErrorBody),
    )
)]
pub(crate) async fn accept_invitation(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Json<MembershipResponse>, AppError> {
    let membership = join_by_invitation(&state, &current.user, &request.token).await?;
    Ok(Json(MembershipResponse {
        organization_id: membership.org_id.as_str().to_owned(),
        role: membership.role.as_str(),
    }))
}

/// What an unusable invitation is told, whichever way it cannot be used.
fn invitation_gone(e: StoreError) -> AppError {
    match e {
        StoreError::NotFound => AppError::new(
            ErrorCode::InvalidToken,
            "the invitation is unknown, used, expired or for another email",
        ),
        StoreError::Conflict(_) => {
            AppError::new(ErrorCode::Conflict, "you are already a member of this organisation")
        }
        other => other.into(),
    }
}

/// Consumes an invitation sent to `user`'s email and makes them a member of
/// its organisation. Shared by the API and the invitation page.
pub(crate) async fn join_by_invitation(
    state: &AppState,
    user: &User,
    token: &str,
) -> Result<Membership, AppError> {
    state
        .inner()
        .store
        .accept_invitation(&auth::hash_secret(token.trim()), &user.id, Utc::now())
        .await
        .map_err(invitation_gone)
}

/// Accepts the pending invitation `id` sent to `user`'s (verified) email,
/// without its link: for the page of a user in no organisation, which lists
/// the invitations sent to them.
pub(crate) async fn join_by_invitation_id(
    state: &AppState,
    user: &User,
    id: String,
) -> Result<Membership, AppError> {
    state
        .inner()
        .store
        .accept_invitation_by_id(&TokenId::from(id), &user.id, Utc::now())
        .await
        .map_err(invitation_gone)
}

/// The pending invitation of a link's token, with its organisation and
/// sender, left unused: what the invitation page shows before anyone accepts.
pub(crate) async fn invitation_for_token(
    state: &AppState,
    token: &str,
) -> Result<ReceivedInvitation, AppError> {
    state
        .inner()
        .store
        .invitation_by_token(&auth::hash_secret(token.trim()), Utc::now())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => AppError::new(
                ErrorCode::InvalidToken,
                "the invitation is unknown, used, expired or revoked",
            ),
            other => other.into(),
        })
}

/// The pending invitations sent to `user`'s email, oldest first.
pub(crate) async fn invitations_for(
    state: &AppState,
    user: &User,
) -> Result<Vec<ReceivedInvitation>, AppError> {
    Ok(state.inner().store.invitations_for_email(&user.email, Utc::now()).await?)
}

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
    state.inner().signup_limiter.check(ip, Some(&user.email))?;
    Ok(state.inner().store.create_organization(&user.id, name).await?)
}

/// The caller's organisation
#[utoipa::path(
    get,
    path = "/api/v1/org",
    tag = "organization",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The organisation the token is for", body = OrganizationView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn organization(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<OrganizationView>, AppError> {
    let org = state.inner().store.get_organization(&current.org).await?;
    Ok(Json(OrganizationView {
        id: org.id.as_str().to_owned(),
        name: org.name,
        role: current.role.as_str(),
        created_at: org.created_at.to_rfc3339(),
    }))
}

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
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an owner", body = ErrorBody),
    )
)]
pub(crate) async fn delete_organization(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<StatusCode, AppError> {
    delete_own_organization(&state, &current).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the caller's organisation (owners only) and disconnects the
/// agents of its connections. Shared by the API and the settings page.
pub(crate) async fn delete_own_organization(
    state: &AppState,
    current: &CurrentUser,
) -> Result<(), AppError> {
    if current.role != Role::Owner {
        return Err(AppError::new(ErrorCode::Forbidden, "only owners may delete the organisation"));
    }
    let inner = state.inner();
    let connections = inner.store.delete_organization(&current.org, &current.user.id).await?;
    for id in &connections {
        inner.router.disconnect(id, "the organisation was deleted");
        inner.pipelines.forget(id);
    }
    tracing::info!(org = %current.org, connections = connections.len(), "organisation deleted");
    Ok(())
}

/// The organisation's members
#[utoipa::path(
    get,
    path = "/api/v1/org/members",
    tag = "organization",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "Every member", body = MembersResponse),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub(crate) async fn members(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<MembersResponse>, AppError> {
    let members = state.inner().store.list_members(&current.org).await?;
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

fn parse_role(role: &str) -> Result<Role, AppError> {
    Role::parse(role)
        .ok_or_else(|| AppError::new(ErrorCode::Validation, "role must be owner, admin or member"))
}

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
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an owner or admin, or an admin inviting an owner", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: a malformed email or an unknown role", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the organisation, or the address, was sent too many invitations lately (see `Retry-After`)", body = ErrorBody),
    )
)]
pub(crate) async fn invite(
    State(state): State<AppState>,
    current: CurrentUser,
    ApiJson(request): ApiJson<InviteRequest>,
) -> Result<(StatusCode, Json<InvitationResponse>), AppError> {
    let (id, email, role) =
        invite_by_email(&state, &current, &request.email, &request.role).await?;
    let response =
        InvitationResponse { id: id.as_str().to_owned(), email, role: role.as_str(), sent: true };
    Ok((StatusCode::CREATED, Json(response)))
}

/// Emails an invitation to join the caller's organisation as `role`: owners
/// and admins may invite, only owners may invite owners, and sending is
/// limited per organisation and per recipient. Returns the invitation's id,
/// the checked email and role. Shared by the API and the settings page.
pub(crate) async fn invite_by_email(
    state: &AppState,
    current: &CurrentUser,
    email: &str,
    role: &str,
) -> Result<(TokenId, String, Role), AppError> {
    current.require_admin()?;
    let email = validate_email(email)?;
    let role = parse_role(role)?;
    if role == Role::Owner && current.role != Role::Owner {
        return Err(AppError::new(ErrorCode::Forbidden, "only owners may invite owners"));
    }
    let sender = current.user.id.as_str();
    state.inner().invitation_limiter.check(current.org.as_str(), sender, &email)?;
    let org = state.inner().store.get_organization(&current.org).await?;
    let (secret, stored) = issue_token(state, |h| {
        let expires = Utc::now() + INVITATION_VALID;
        NewToken::invitation(&current.org, &current.user.id, &email, role, h, expires)
    })
    .await?;
    let inviter = format!("{} {}", current.user.first_name, current.user.last_name);
    send(
        state,
        mail::invitation_email(
            &state.inner().config.public_url,
            &email,
            &secret,
            &org.name,
            &inviter,
        ),
    )
    .await;
    Ok((stored.id, email, role))
}

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
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an owner or admin", body = ErrorBody),
    )
)]
pub(crate) async fn list_invitations(
    State(state): State<AppState>,
    current: CurrentUser,
) -> Result<Json<InvitationsResponse>, AppError> {
    let invitations = pending_invitations(&state, &current).await?;
    Ok(Json(InvitationsResponse {
        invitations: invitations.into_iter().map(InvitationView::from).collect(),
    }))
}

/// The organisation's pending invitations, for owners and admins. Shared by
/// the API and the settings page.
pub(crate) async fn pending_invitations(
    state: &AppState,
    current: &CurrentUser,
) -> Result<Vec<Invitation>, AppError> {
    current.require_admin()?;
    Ok(state.inner().store.list_invitations(&current.org, Utc::now()).await?)
}

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
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an owner or admin, or an admin revoking an invitation to be an owner", body = ErrorBody),
        (status = 404, description = "`not_found`: no such pending invitation in the organisation", body = ErrorBody),
    )
)]
pub(crate) async fn revoke_invitation(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    revoke_pending_invitation(&state, &current, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a pending invitation of the caller's organisation: owners and
/// admins may, only owners may revoke one to be an owner. Shared by the API
/// and the settings page.
pub(crate) async fn revoke_pending_invitation(
    state: &AppState,
    current: &CurrentUser,
    id: String,
) -> Result<(), AppError> {
    current.require_admin()?;
    let id = TokenId::from(id);
    let store = &state.inner().store;
    let invitation = store.get_invitation(&current.org, &id, Utc::now()).await?;
    if invitation.role == Role::Owner && current.role != Role::Owner {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "only owners may revoke an invitation to be an owner",
        ));
    }
    Ok(store.revoke_invitation(&current.org, &id, Utc::now()).await?)
}

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
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an owner or admin, or an admin sending an invitation to be an owner", body = ErrorBody),
        (status = 404, description = "`not_found`: no such pending invitation in the organisation", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the organisation, or the address, was sent too many invitations lately (see `Retry-After`)", body = ErrorBody),
    )
)]
pub(crate) async fn resend_invitation(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<Json<InvitationView>, AppError> {
    Ok(Json(resend_pending_invitation(&state, &current, id).await?.into()))
}

/// Sends a pending invitation of the caller's organisation again: a fresh
/// link valid for seven days, the old one dead, the caller its sender. The
/// rules of revoking and the limits of inviting apply. Shared by the API and
/// the settings page.
pub(crate) async fn resend_pending_invitation(
    state: &AppState,
    current: &CurrentUser,
    id: String,
) -> Result<Invitation, AppError> {
    current.require_admin()?;
    let id = TokenId::from(id);
    let store = &state.inner().store;
    let invitation = store.get_invitation(&current.org, &id, Utc::now()).await?;
    if invitation.role == Role::Owner && current.role != Role::Owner {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "only owners may send an invitation to be an owner",
        ));
    }
    let sender = current.user.id.as_str();
    state.inner().invitation_limiter.check(current.org.as_str(), sender, &invitation.email)?;
    let org = store.get_organization(&current.org).await?;
    let secret = auth::new_secret();
    let expires = Utc::now() + INVITATION_VALID;
    let renewed = store
        .renew_invitation(
            &current.org,
            &id,
            &current.user.id,
            auth::hash_secret(&secret),
            expires,
            Utc::now(),
        )
        .await?;
    let inviter = format!("{} {}", current.user.first_name, current.user.last_name);
    let public_url = &state.inner().config.public_url;
    let message = mail::invitation_email(public_url, &renewed.email, &secret, &org.name, &inviter);
    send(state, message).await;
    Ok(renewed)
}

/// A member's new role.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RoleRequest {
    /// `owner`, `admin` or `member`.
    role: String,
}

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
        (status = 400, description = "`invalid_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an owner or admin, or an admin touching the owner role", body = ErrorBody),
        (status = 404, description = "`not_found`: no such member in the organisation", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 422, description = "`validation_error`: an unknown role, or the last owner would be demoted", body = ErrorBody),
    )
)]
pub(crate) async fn change_role(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<RoleRequest>,
) -> Result<Json<RoleResponse>, AppError> {
    let membership = set_member_role(&state, &current, id, &request.role).await?;
    Ok(Json(RoleResponse {
        id: membership.user_id.as_str().to_owned(),
        role: membership.role.as_str(),
    }))
}

/// Changes a member's role: owners and admins may, only owners may grant or
/// take the owner role, and the organisation keeps an owner. Shared by the API
/// and the settings page.
pub(crate) async fn set_member_role(
    state: &AppState,
    current: &CurrentUser,
    id: String,
    role: &str,
) -> Result<Membership, AppError> {
    current.require_admin()?;
    let role = parse_role(role)?;
    let target = UserId::from(id);
    let existing = state.inner().store.get_membership(&current.org, &target).await?;
    if (role == Role::Owner || existing.role == Role::Owner) && current.role != Role::Owner {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            "only owners may grant or take the owner role",
        ));
    }
    Ok(state.inner().store.set_role(&current.org, &target, role).await?)
}

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
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an owner or admin, or an admin removing an owner", body = ErrorBody),
        (status = 404, description = "`not_found`: no such member in the organisation", body = ErrorBody),
        (status = 422, description = "`validation_error`: the last owner cannot leave", body = ErrorBody),
    )
)]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    current: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    remove_from_org(&state, &current, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a member: owners and admins may, only owners may remove an owner,
/// and the organisation keeps an owner. Shared by the API and the settings page.
pub(crate) async fn remove_from_org(
    state: &AppState,
    current: &CurrentUser,
    id: String,
) -> Result<(), AppError> {
    current.require_admin()?;
    let target = UserId::from(id);
    let existing = state.inner().store.get_membership(&current.org, &target).await?;
    if existing.role == Role::Owner && current.role != Role::Owner {
        return Err(AppError::new(ErrorCode::Forbidden, "only owners may remove an owner"));
    }
    state.inner().store.remove_member(&current.org, &target).await?;
    Ok(())
}
