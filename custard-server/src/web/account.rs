//! The account pages: sign up and verify the email (and send the link
//! again), sign in and out, forgot and reset a password, accept an
//! invitation, the page of a user in no organisation, and the settings page.
//!
//! Every form calls the same functions as the JSON API ([`crate::accounts`]),
//! so validation, rate limits, the password policy, one-time tokens, emails
//! and role checks live in one place; this module only turns their answers
//! into pages. A failed form comes back with the person's input (never a
//! password), the message and a 4xx status (nothing changed, so re-sending it
//! is harmless). A form that succeeds redirects (303, Post/Redirect/Get): a
//! settings change to `/settings?done=...`, sign-up and forgot-password to
//! their page with `?sent=1` (which says to check the email without naming
//! the address), a reset to `/reset-password?done=1`. A GET of any form's URL
//! is a page or a redirect to one, never a method error.
//!
//! Errors stay in view: a refused settings form comes back with its message
//! beside the control that caused it (a member's row for a refused role
//! change), announced (`role="alert"`) and focused (`autofocus`, which also
//! scrolls it into view; a fragment in the URL would cancel autofocus, so the
//! form's URL has none). A change that went through redirects to the page
//! with its section's fragment (`/settings?done=role#members`) and the notice
//! there, in view.
//!
//! A signed-in user in no organisation (removed from it, or it was deleted)
//! has a session but nothing to act in: sign-in and any page that needs an
//! organisation lead to `/welcome`, which offers to create one and lists the
//! invitations sent to them.

use askama::Template;
use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{
    Csrf, Layout, LocalTime, TokenForm, WEB_SESSION, WebError, WebUser, check_csrf, page, secure,
    sentence,
};
use crate::accounts::{self, NewAccount};
use crate::auth::cookie;
use crate::auth::{CurrentUser, SessionUser};
use crate::error::{AppError, ErrorCode};
use crate::extract::ClientIp;
use crate::flash::{Flash, Owner};
use crate::state::AppState;
use crate::store::{OrgId, ReceivedInvitation, Role, SessionGrant};

/// The account pages' routes.
pub(crate) fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", get(|| async { Redirect::to("/") }).post(logout))
        .route("/signup", get(signup_page).post(signup))
        .route("/verify-email", get(verify_email))
        .route("/resend-verification", get(resend_page).post(resend_verification))
        .route("/forgot-password", get(forgot_page).post(forgot))
        .route("/reset-password", get(reset_page).post(reset))
        .route("/accept-invitation", get(invitation_page).post(accept_invitation))
        .route("/welcome", get(welcome))
        .route("/welcome/organisation", get(to_welcome).post(create_organization))
        .route("/welcome/invitations/{id}/accept", get(to_welcome).post(accept_listed_invitation))
        .route("/settings", get(settings))
        .route("/settings/profile", get(to_settings).post(update_profile))
        .route("/settings/password", get(to_settings).post(change_password))
        .route("/settings/sessions", get(to_settings).post(sign_out_others))
        .route("/settings/members/{user_id}/role", get(to_settings).post(change_role))
        .route("/settings/members/{user_id}/remove", get(to_settings).post(remove_member))
        .route("/settings/invitations", get(to_settings).post(invite))
        .route("/settings/invitations/{id}/revoke", get(to_settings).post(revoke_invitation))
        .route("/settings/invitations/{id}/resend", get(to_settings).post(resend_invitation))
        .route("/settings/organisation/delete", get(to_settings).post(delete_organization))
        .route("/settings/tokens", get(to_settings).post(create_token))
        .route("/settings/tokens/{id}/revoke", get(to_settings).post(revoke_token))
}

/// `GET` of a settings form's URL (a reload, a bookmark): the settings page.
async fn to_settings() -> Redirect {
    Redirect::to("/settings")
}

/// `GET` of a form of the no-organisation page: that page.
async fn to_welcome() -> Redirect {
    Redirect::to(WELCOME)
}

/// Where sign-up, forgot-password and resend-verification redirect once the
/// email is sent.
const SIGNUP_SENT: &str = "/signup?sent=1";
const FORGOT_SENT: &str = "/forgot-password?sent=1";
const RESEND_SENT: &str = "/resend-verification?sent=1";

/// The page of a signed-in user in no organisation.
const WELCOME: &str = "/welcome";

/// After an email was sent: a redirect to `target`, which names the address
/// once (a flash of this browser; never in the URL), then only "the address
/// you gave".
fn sent(state: &AppState, headers: &HeaderMap, target: &str, to: String) -> Response {
    if let Some(owner) = Owner::browser(headers) {
        state.inner().flashes.put(&owner, target, Flash::SentTo(to));
    }
    Redirect::to(target).into_response()
}

/// The address [`sent`] kept for this browser's view of `target`, once.
fn sent_to(state: &AppState, headers: &HeaderMap, target: &str) -> Option<String> {
    let owner = Owner::browser(headers)?;
    match state.inner().flashes.take(&owner, target)? {
        Flash::SentTo(to) => Some(to),
        _ => None,
    }
}

/// `?sent=1` after a form's redirect.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AfterForm {
    #[serde(default)]
    sent: String,
}

/// What went wrong with a form: a message for people, the field it is
/// about (a section name, or empty for the whole form) and, for a form of
/// one row of a list, that row's id.
#[derive(Debug, Default)]
struct Problem {
    field: &'static str,
    item: String,
    message: String,
}

impl Problem {
    /// A problem with the whole form.
    fn general(message: impl Into<String>) -> Self {
        Problem { field: "", item: String::new(), message: message.into() }
    }

    /// A problem with `field`.
    fn at_field(field: &'static str, message: impl Into<String>) -> Self {
        Problem { field, item: String::new(), message: message.into() }
    }

    /// An API error as a problem with the field its message names (the first
    /// of `fields` whose prefix starts the message), else with `fallback`.
    fn of(error: &AppError, fields: &[(&str, &'static str)], fallback: &'static str) -> Self {
        let field = fields
            .iter()
            .find(|(prefix, _)| error.message.starts_with(prefix))
            .map_or(fallback, |(_, field)| field);
        Problem::at_field(field, say(error))
    }

    /// The same problem, about the row `item` of a list.
    fn in_row(mut self, item: impl Into<String>) -> Self {
        self.item = item.into();
        self
    }

    /// Whether the problem is about `field`.
    fn at(&self, field: &str) -> bool {
        !self.message.is_empty() && self.field == field
    }

    /// Whether the problem is about `field` of the row `item`.
    fn at_row(&self, field: &str, item: &str) -> bool {
        self.at(field) && self.item == item
    }

    /// `aria-invalid`'s value for `field`.
    fn invalid(&self, field: &str) -> &'static str {
        if self.at(field) { "true" } else { "false" }
    }

    /// The message when it is about the whole form.
    fn general_message(&self) -> Option<&str> {
        self.at("").then_some(self.message.as_str())
    }
}

/// An API error as a sentence, with field names in words.
fn say(error: &AppError) -> String {
    let mut error = error.clone();
    for (name, words) in [
        ("first_name", "first name"),
        ("last_name", "last name"),
        ("organization_name", "organisation name"),
    ] {
        error.message = error.message.replace(name, words);
    }
    sentence(&error)
}

/// What a stale or forged form gets told.
const FORM_EXPIRED: &str = "The form expired. Please try again.";

/// What an emailed link without its token gets told.
const NO_TOKEN: &str = "This link has no token. Open the link from the email exactly as it came.";

/// The password policy in words, shown under every new-password field.
fn password_hint() -> String {
    format!(
        "At least {} characters; not a common password, your email or your name. \
         A few unrelated words make a good one.",
        crate::auth::MIN_PASSWORD_CHARS
    )
}

/// The signed-in user of a page that also serves visitors, if any.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<CurrentUser> {
    let token = cookie::cookie_value(headers, cookie::SESSION_COOKIE)?;
    CurrentUser::of_token(state, &token).await.ok()
}

/// Who the browser is signed in as: a member of the session's organisation
/// (`Member`), a user in none (`Adrift`), or nobody.
enum Visitor {
    Member(CurrentUser),
    Adrift(SessionUser),
    Nobody,
}

impl Visitor {
    /// The browser's session, as far as it goes.
    async fn of(state: &AppState, headers: &HeaderMap) -> Self {
        let Some(token) = cookie::cookie_value(headers, cookie::SESSION_COOKIE) else {
            return Visitor::Nobody;
        };
        if let Ok(current) = CurrentUser::of_token(state, &token).await {
            return Visitor::Member(current);
        }
        match SessionUser::of_token(state, &token).await {
            Ok(user) => Visitor::Adrift(user),
            Err(_) => Visitor::Nobody,
        }
    }

    /// The signed-in user, member or not.
    fn user(&self) -> Option<SessionUser> {
        match self {
            // A page's visitor signed in with a session (the cookie's).
            Visitor::Member(current) => SessionUser::try_from(current.clone()).ok(),
            Visitor::Adrift(user) => Some(user.clone()),
            Visitor::Nobody => None,
        }
    }

    /// The layout for this visitor: the menu only for a member (a user in no
    /// organisation has nowhere it could lead).
    fn layout(&self, csrf: &Csrf) -> Layout {
        match self {
            Visitor::Member(current) => csrf.signed_in(current, ""),
            _ => csrf.signed_out(),
        }
    }
}

/// A redirect that also sets the browser's session cookie.
fn signed_in_redirect(state: &AppState, to: &str, token: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    cookie::set_cookies(
        response.headers_mut(),
        [
            cookie::session_cookie(token, WEB_SESSION, secure(state)),
            cookie::fresh_csrf_cookie(secure(state)),
        ],
    );
    response
}

/// Where to go after signing in: `next` when it is a path on this site, else `/`.
fn local_path(next: &str) -> &str {
    let on_this_site = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.chars().all(|c| c.is_ascii_graphic());
    if on_this_site { next } else { "/" }
}

/// A query string's `token` (empty when missing or unreadable); no `Debug`:
/// it holds a one-time token.
#[derive(Default, Deserialize)]
pub(crate) struct TokenQuery {
    #[serde(default)]
    token: String,
    /// `?done=1`: where a successful reset redirects.
    #[serde(default)]
    done: String,
}

fn token_of(query: Result<Query<TokenQuery>, QueryRejection>) -> String {
    query.map(|Query(q)| q.token.trim().to_owned()).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Sign in and out

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    layout: Layout,
    email: &'a str,
    next: &'a str,
    error: Option<String>,
    /// The account is not verified yet: offer to send the link again.
    unverified: bool,
}

/// Where to go after signing in.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct NextQuery {
    #[serde(default)]
    next: String,
}

/// `GET /login`; a user signed in but in no organisation goes on to `/welcome`.
pub(crate) async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<NextQuery>, QueryRejection>,
) -> Response {
    if let Visitor::Adrift(_) = Visitor::of(&state, &headers).await {
        return Redirect::to(WELCOME).into_response();
    }
    let csrf = Csrf::of(&state, &headers);
    let next = query.map(|Query(q)| q.next).unwrap_or_default();
    let next = if local_path(&next) == "/" { "" } else { next.as_str() };
    let html =
        LoginPage { layout: csrf.signed_out(), email: "", next, error: None, unverified: false }
            .render();
    page(StatusCode::OK, html, csrf.cookies())
}

// No `Debug`: it holds the password.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /login`: signs in and sends the browser to `next` (a local path) or
/// `/`; a user in no organisation to `/welcome` (or `next`, such as an
/// invitation's page).
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let next = local_path(&form.next);
    let again = |error: &AppError| {
        let html = LoginPage {
            layout: csrf.signed_out(),
            email: form.email.trim(),
            next: if next == "/" { "" } else { next },
            error: Some(sentence(error)),
            unverified: error.code == ErrorCode::EmailNotVerified,
        }
        .render();
        page(error.code.status(), html, csrf.cookies())
    };
    if let Err(e) = check_csrf(&state, &headers, Some(&form.csrf_token)) {
        let expired = AppError::new(e.code, "the form expired. Please sign in again");
        return again(&expired);
    }
    let signed = async {
        let user =
            accounts::check_credentials(&state, ip, form.email.trim(), form.password.clone())
                .await?;
        let org = accounts::first_organization(&state, &user.id).await?;
        let grant = SessionGrant::Password(&user.password_hash);
        let token =
            accounts::open_session(&state, &user.id, org.as_ref(), WEB_SESSION, grant).await?;
        Ok::<_, AppError>((org.is_some(), token))
    };
    match signed.await {
        Ok((true, token)) => signed_in_redirect(&state, next, &token),
        Ok((false, token)) => {
            let to = if next == "/" { WELCOME } else { next };
            signed_in_redirect(&state, to, &token)
        }
        Err(e) => again(&e),
    }
}

/// The sign-out form: where to go afterwards (a local path; `/login` by default).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /logout`: ends the browser's session.
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, AppError> {
    check_csrf(&state, &headers, Some(&form.csrf_token))?;
    if let Some(token) = cookie::cookie_value(&headers, cookie::SESSION_COOKIE)
        && let Ok(claims) = crate::auth::decode_access(&token, &state.inner().jwt)
    {
        accounts::sign_out(&state, &claims.sid.clone().into()).await?;
    }
    let to = if form.next.is_empty() { "/login" } else { local_path(&form.next) };
    let mut response = Redirect::to(to).into_response();
    cookie::set_cookies(
        response.headers_mut(),
        [cookie::clear_session_cookie(secure(&state)), cookie::fresh_csrf_cookie(secure(&state))],
    );
    Ok(response)
}

// ---------------------------------------------------------------------------
// Sign up and verify the email

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage<'a> {
    layout: Layout,
    form: &'a SignupForm,
    /// Whether the email is fixed (an invitation's); never on this page.
    email_fixed: bool,
    password_hint: String,
    problem: Problem,
}

// No `Debug`: it holds the password.
#[derive(Default, Deserialize)]
pub(crate) struct SignupForm {
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    organization_name: String,
    #[serde(default)]
    csrf_token: String,
}

impl SignupForm {
    /// The new account of this form, joining through `invitation` when there
    /// is one.
    fn request(&self, invitation: Option<String>) -> NewAccount {
        NewAccount {
            email: self.email.trim().to_owned(),
            password: self.password.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            organization_name: Some(self.organization_name.clone()),
            invitation_token: invitation,
        }
    }
}

/// The sign-up form's fields, as the API's messages name them.
const SIGNUP_FIELDS: &[(&str, &str)] = &[
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("organization_name", "organization_name"),
    ("email", "email"),
    ("password", "password"),
];

/// Which sign-up field an API error is about.
fn signup_problem(error: &AppError) -> Problem {
    let fallback = if error.code == ErrorCode::Conflict { "email" } else { "" };
    Problem::of(error, SIGNUP_FIELDS, fallback)
}

/// `GET /signup` (and `?sent=1` after signing up: check the email).
pub(crate) async fn signup_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    after: Result<Query<AfterForm>, QueryRejection>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    if after.is_ok_and(|Query(a)| !a.sent.is_empty()) {
        // The same page whether or not the address already has an account:
        // the email itself says which. The address once, from the flash.
        let to = sent_to(&state, &headers, SIGNUP_SENT);
        let message = format!(
            "We sent an email to {}. Open its link to verify your address, then sign in; \
             the link works for 24 hours. If the address already has an account, the \
             email says how to sign in or reset your password instead.",
            to.as_deref().unwrap_or("the address you gave")
        );
        let resend_email = Some(to.unwrap_or_default());
        let html = CheckEmailPage { layout: csrf.signed_out(), message, resend_email }.render();
        return page(StatusCode::OK, html, csrf.cookies());
    }
    let form = SignupForm::default();
    let html = SignupPage {
        layout: csrf.signed_out(),
        form: &form,
        email_fixed: false,
        password_hint: password_hint(),
        problem: Problem::default(),
    }
    .render();
    page(StatusCode::OK, html, csrf.cookies())
}

#[derive(Template)]
#[template(path = "check_email.html")]
struct CheckEmailPage {
    layout: Layout,
    message: String,
    /// After a verification email: the form that sends it again, with this
    /// address (empty when it is not known any more).
    resend_email: Option<String>,
}

/// `POST /signup`: creates the account and says to check the email.
pub(crate) async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<SignupForm>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let again = |status: StatusCode, problem: Problem| {
        let html = SignupPage {
            layout: csrf.signed_out(),
            form: &form,
            email_fixed: false,
            password_hint: password_hint(),
            problem,
        }
        .render();
        page(status, html, csrf.cookies())
    };
    if let Err(e) = check_csrf(&state, &headers, Some(&form.csrf_token)) {
        return again(e.code.status(), Problem::general(FORM_EXPIRED));
    }
    match accounts::sign_up(&state, ip, form.request(None)).await {
        // The same answer whether or not the address already has an account.
        Ok((user, _)) => sent(&state, &headers, SIGNUP_SENT, user.email),
        Err(e) => again(e.code.status(), signup_problem(&e)),
    }
}

#[derive(Template)]
#[template(path = "verify_email.html")]
struct VerifyEmailPage {
    layout: Layout,
    /// The problem with the link; empty when the email is verified.
    error: String,
}

/// `GET /verify-email?token=...`: the verification email's link.
pub(crate) async fn verify_email(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let token = token_of(query);
    let (status, error) = if token.is_empty() {
        (StatusCode::BAD_REQUEST, NO_TOKEN.to_owned())
    } else {
        match accounts::verify_email_token(&state, &token).await {
            Ok(_) => (StatusCode::OK, String::new()),
            Err(e) => (e.code.status(), say(&e)),
        }
    };
    let layout = match signed_in(&state, &headers).await {
        Some(user) => csrf.signed_in(&user, ""),
        None => csrf.signed_out(),
    };
    page(status, VerifyEmailPage { layout, error }.render(), csrf.cookies())
}

#[derive(Template)]
#[template(path = "resend_verification.html")]
struct ResendPage<'a> {
    layout: Layout,
    email: &'a str,
    problem: Problem,
}

/// A form of one email address that a link is sent to: resend the
/// verification link, forgot the password.
#[derive(Debug, Deserialize)]
pub(crate) struct EmailForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    csrf_token: String,
}

/// Answers an [`EmailForm`]: with a valid CSRF token and an address, runs
/// `send` on it and redirects to the page that says to check the email
/// (`sent_target`); otherwise the form again, drawn by `draw` with the
/// problem beside the field (`missing` says what to enter).
async fn post_email_form<Fut>(
    state: &AppState,
    headers: &HeaderMap,
    form: EmailForm,
    (missing, sent_target): (&str, &str),
    draw: impl Fn(Layout, &str, Problem) -> askama::Result<String>,
    send: impl FnOnce(String) -> Fut,
) -> Response
where
    Fut: Future<Output = Result<(), AppError>>,
{
    let csrf = Csrf::of(state, headers);
    let email = form.email.trim();
    let again = |status: StatusCode, problem: Problem| {
        page(status, draw(csrf.signed_out(), email, problem), csrf.cookies())
    };
    if let Err(e) = check_csrf(state, headers, Some(&form.csrf_token)) {
        return again(e.code.status(), Problem::general(FORM_EXPIRED));
    }
    if email.is_empty() {
        return again(StatusCode::UNPROCESSABLE_ENTITY, Problem::at_field("email", missing));
    }
    match send(email.to_owned()).await {
        Ok(()) => sent(state, headers, sent_target, email.to_owned()),
        Err(e) => again(e.code.status(), Problem::of(&e, &[], "")),
    }
}

/// `GET /resend-verification` (and `?sent=1` after asking: check the email).
pub(crate) async fn resend_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    after: Result<Query<AfterForm>, QueryRejection>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    if after.is_ok_and(|Query(a)| !a.sent.is_empty()) {
        let to = sent_to(&state, &headers, RESEND_SENT);
        let message = format!(
            "If {} has an account that waits for verification, we sent it a new link. \
             It works for 24 hours; the newest email is the one to open.",
            to.as_deref().unwrap_or("the address you gave")
        );
        let resend_email = Some(to.unwrap_or_default());
        let html = CheckEmailPage { layout: csrf.signed_out(), message, resend_email }.render();
        return page(StatusCode::OK, html, csrf.cookies());
    }
    let html =
        ResendPage { layout: csrf.signed_out(), email: "", problem: Problem::default() }.render();
    page(StatusCode::OK, html, csrf.cookies())
}

/// `POST /resend-verification`: the same answer whether or not the account
/// exists (or is verified already).
pub(crate) async fn resend_verification(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<EmailForm>,
) -> Response {
    let texts = ("Enter the address you signed up with.", RESEND_SENT);
    let state_ref = &state;
    let draw = |layout: Layout, email: &str, problem: Problem| {
        ResendPage { layout, email, problem }.render()
    };
    let send =
        |email: String| async move { accounts::resend_verification(state_ref, ip, &email).await };
    post_email_form(&state, &headers, form, texts, draw, send).await
}

// ---------------------------------------------------------------------------
// Forgot and reset the password

#[derive(Template)]
#[template(path = "forgot_password.html")]
struct ForgotPage<'a> {
    layout: Layout,
    email: &'a str,
    problem: Problem,
}

/// `GET /forgot-password` (and `?sent=1` after asking: check the email).
pub(crate) async fn forgot_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    after: Result<Query<AfterForm>, QueryRejection>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    if after.is_ok_and(|Query(a)| !a.sent.is_empty()) {
        let to = sent_to(&state, &headers, FORGOT_SENT).unwrap_or("the address you gave".into());
        let message = format!(
            "If an account exists for {to}, we sent a reset link. It works once, within an hour."
        );
        let html =
            CheckEmailPage { layout: csrf.signed_out(), message, resend_email: None }.render();
        return page(StatusCode::OK, html, csrf.cookies());
    }
    let html =
        ForgotPage { layout: csrf.signed_out(), email: "", problem: Problem::default() }.render();
    page(StatusCode::OK, html, csrf.cookies())
}

/// `POST /forgot-password`: the same answer whether or not the account exists.
pub(crate) async fn forgot(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<EmailForm>,
) -> Response {
    let texts = ("Enter your email address.", FORGOT_SENT);
    let state_ref = &state;
    let draw = |layout: Layout, email: &str, problem: Problem| {
        ForgotPage { layout, email, problem }.render()
    };
    let send = |email: String| async move {
        accounts::request_password_reset(state_ref, ip, &email).await
    };
    post_email_form(&state, &headers, form, texts, draw, send).await
}

/// What the reset page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetStep {
    /// The new-password form.
    Form,
    /// The password was changed.
    Done,
    /// The link cannot be used.
    BadLink,
}

#[derive(Template)]
#[template(path = "reset_password.html")]
struct ResetPage<'a> {
    layout: Layout,
    step: ResetStep,
    token: &'a str,
    password_hint: String,
    problem: Problem,
}

// No `Debug`: it holds the token and passwords.
#[derive(Deserialize)]
pub(crate) struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
    #[serde(default)]
    csrf_token: String,
}

/// `GET /reset-password?token=...`: the reset email's link; `?done=1` after
/// the password was changed.
pub(crate) async fn reset_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let done = query.as_ref().is_ok_and(|Query(q)| !q.done.is_empty());
    let token = token_of(query);
    let (status, step, problem) = if done {
        (StatusCode::OK, ResetStep::Done, Problem::default())
    } else if token.is_empty() {
        (StatusCode::BAD_REQUEST, ResetStep::BadLink, Problem::general(NO_TOKEN))
    } else {
        (StatusCode::OK, ResetStep::Form, Problem::default())
    };
    let html = ResetPage {
        layout: csrf.signed_out(),
        step,
        token: &token,
        password_hint: password_hint(),
        problem,
    }
    .render();
    page(status, html, csrf.cookies())
}

/// `POST /reset-password`: sets the new password and signs out everywhere.
pub(crate) async fn reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<ResetForm>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let token = form.token.trim();
    let show = |status: StatusCode, step: ResetStep, problem: Problem, cookies: Vec<String>| {
        let html = ResetPage {
            layout: csrf.signed_out(),
            step,
            token,
            password_hint: password_hint(),
            problem,
        }
        .render();
        page(status, html, cookies)
    };
    if let Err(e) = check_csrf(&state, &headers, Some(&form.csrf_token)) {
        return show(
            e.code.status(),
            ResetStep::Form,
            Problem::general(FORM_EXPIRED),
            csrf.cookies(),
        );
    }
    if token.is_empty() {
        return show(
            StatusCode::BAD_REQUEST,
            ResetStep::BadLink,
            Problem::general(NO_TOKEN),
            csrf.cookies(),
        );
    }
    if form.new_password != form.confirm_password {
        let problem = Problem::at_field(
            "confirm_password",
            "The two passwords do not match. Type the same password twice.",
        );
        return show(StatusCode::UNPROCESSABLE_ENTITY, ResetStep::Form, problem, csrf.cookies());
    }
    match accounts::reset_password_with_token(&state, ip, token, form.new_password.clone()).await {
        Ok(_) => {
            // Every session of the account was revoked, this browser's too.
            let mut response = Redirect::to("/reset-password?done=1").into_response();
            let mut cookies = csrf.cookies();
            cookies.push(cookie::clear_session_cookie(secure(&state)));
            cookie::set_cookies(response.headers_mut(), cookies);
            response
        }
        Err(e) if e.code == ErrorCode::InvalidToken => {
            show(e.code.status(), ResetStep::BadLink, Problem::general(say(&e)), csrf.cookies())
        }
        Err(e) => {
            let problem = Problem::of(&e, &[("password", "new_password")], "");
            show(e.code.status(), ResetStep::Form, problem, csrf.cookies())
        }
    }
}

// ---------------------------------------------------------------------------
// Invitations

/// What the invitation page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvitationStep {
    /// The link has no token.
    NoToken,
    /// The invited user, signed in: the button that accepts.
    Accept,
    /// Signed in with another address: how to accept it, and no button.
    WrongAccount,
    /// A visitor: the sign-up form that joins.
    Signup,
    /// The invitation cannot be used; nothing to try again.
    Failed,
    /// The account exists but signing in did not follow.
    Joined,
}

/// An invitation as its page names it.
#[derive(Debug)]
struct InvitationSummary {
    organization: String,
    /// Who sent it: their name and address, or "Someone".
    invited_by: String,
    role: &'static str,
    email: String,
    expires: LocalTime,
}

impl From<&ReceivedInvitation> for InvitationSummary {
    fn from(i: &ReceivedInvitation) -> Self {
        let invited_by = match (&i.invited_by_name, &i.invited_by_email) {
            (Some(name), Some(email)) => format!("{name} ({email})"),
            (None, Some(email)) => email.clone(),
            _ => "Someone".to_owned(),
        };
        InvitationSummary {
            organization: i.org_name.clone(),
            invited_by,
            role: i.role.as_str(),
            email: i.email.clone(),
            expires: LocalTime::relative(i.expires_at),
        }
    }
}

#[derive(Template)]
#[template(path = "accept_invitation.html")]
struct InvitationPage<'a> {
    layout: Layout,
    step: InvitationStep,
    token: &'a str,
    form: &'a SignupForm,
    /// The invitation, once its token checked out.
    invitation: Option<InvitationSummary>,
    /// The signed-in user's address, if any.
    signed_in_as: String,
    /// The sign-up form's email is the invited one, not to be changed.
    email_fixed: bool,
    /// `/login` with the way back to this invitation.
    login_link: String,
    /// This invitation's page: where signing out returns.
    here: String,
    password_hint: String,
    problem: Problem,
}

/// The invitation page's path for `token`.
fn invitation_path(token: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    format!("/accept-invitation?token={}", utf8_percent_encode(token, NON_ALPHANUMERIC))
}

/// `/login?next=` the invitation page for `token`.
fn login_link(token: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    format!("/login?next={}", utf8_percent_encode(&invitation_path(token), NON_ALPHANUMERIC))
}

// No `Debug`: it holds the token and the password.
#[derive(Deserialize)]
pub(crate) struct InvitationForm {
    #[serde(default)]
    token: String,
    #[serde(flatten)]
    signup: SignupForm,
}

/// What the invitation page is about: the step, the invitation and who looks.
struct InvitationView<'a> {
    step: InvitationStep,
    token: &'a str,
    invitation: Option<&'a ReceivedInvitation>,
    visitor: &'a Visitor,
}

/// The invitation page.
fn render_invitation(
    csrf: &Csrf,
    view: &InvitationView<'_>,
    form: &SignupForm,
    problem: Problem,
) -> Result<String, askama::Error> {
    let signed_in_as = match view.visitor {
        Visitor::Member(current) => current.user().email.clone(),
        Visitor::Adrift(user) => user.user().email.clone(),
        Visitor::Nobody => String::new(),
    };
    InvitationPage {
        layout: view.visitor.layout(csrf),
        step: view.step,
        token: view.token,
        form,
        invitation: view.invitation.map(InvitationSummary::from),
        signed_in_as,
        email_fixed: view.invitation.is_some(),
        login_link: login_link(view.token),
        here: invitation_path(view.token),
        password_hint: password_hint(),
        problem,
    }
    .render()
}

/// The step for `visitor` looking at a valid `invitation`.
fn step_for(visitor: &Visitor, invitation: &ReceivedInvitation) -> InvitationStep {
    let email = match visitor {
        Visitor::Member(current) => &current.user().email,
        Visitor::Adrift(user) => &user.user().email,
        Visitor::Nobody => return InvitationStep::Signup,
    };
    if *email == invitation.email { InvitationStep::Accept } else { InvitationStep::WrongAccount }
}

/// `GET /accept-invitation?token=...`: the invitation email's link, naming
/// the organisation and its sender.
pub(crate) async fn invitation_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let token = token_of(query);
    let visitor = Visitor::of(&state, &headers).await;
    let mut form = SignupForm::default();
    let found = if token.is_empty() {
        Err((StatusCode::BAD_REQUEST, InvitationStep::NoToken, NO_TOKEN.to_owned()))
    } else {
        accounts::invitation_for_token(&state, &token)
            .await
            .map_err(|e| (e.code.status(), InvitationStep::Failed, say(&e)))
    };
    let (status, step, invitation, problem) = match &found {
        Ok(invitation) => {
            form.email.clone_from(&invitation.email);
            (StatusCode::OK, step_for(&visitor, invitation), Some(invitation), Problem::default())
        }
        Err((status, step, message)) => (*status, *step, None, Problem::general(message.clone())),
    };
    let view = InvitationView { step, token: &token, invitation, visitor: &visitor };
    page(status, render_invitation(&csrf, &view, &form, problem), csrf.cookies())
}

/// `POST /accept-invitation`: the invited user, signed in, joins the
/// organisation (and the browser's session moves to it); a visitor signs up
/// into it with the invited address, already verified, and is signed in.
/// Someone signed in with another address is told how to accept it instead.
pub(crate) async fn accept_invitation(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(mut form): Form<InvitationForm>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let token = form.token.trim().to_owned();
    let visitor = Visitor::of(&state, &headers).await;
    let show =
        |status: StatusCode, view: InvitationView<'_>, form: &SignupForm, problem: Problem| {
            page(status, render_invitation(&csrf, &view, form, problem), csrf.cookies())
        };
    let failed = |step| InvitationView { step, token: &token, invitation: None, visitor: &visitor };
    if let Err(e) = check_csrf(&state, &headers, Some(&form.signup.csrf_token)) {
        let problem = Problem::general(format!("{FORM_EXPIRED} Open the invitation's link again."));
        return show(e.code.status(), failed(InvitationStep::Failed), &form.signup, problem);
    }
    if token.is_empty() {
        let problem = Problem::general(NO_TOKEN);
        return show(
            StatusCode::BAD_REQUEST,
            failed(InvitationStep::NoToken),
            &form.signup,
            problem,
        );
    }
    let invitation = match accounts::invitation_for_token(&state, &token).await {
        Ok(invitation) => invitation,
        Err(e) => {
            let problem = Problem::general(say(&e));
            return show(e.code.status(), failed(InvitationStep::Failed), &form.signup, problem);
        }
    };
    // The address is the invited one whatever the form says.
    form.signup.email.clone_from(&invitation.email);
    let view = |step| InvitationView {
        step,
        token: &token,
        invitation: Some(&invitation),
        visitor: &visitor,
    };
    if step_for(&visitor, &invitation) == InvitationStep::WrongAccount {
        let view = view(InvitationStep::WrongAccount);
        return show(StatusCode::FORBIDDEN, view, &form.signup, Problem::default());
    }
    // Signed in with the invited address: join.
    if let Some(user) = visitor.user() {
        return match accounts::join_by_invitation(&state, user.user(), &token).await {
            Ok(membership) => match switch_session(&state, &user, &membership.org_id).await {
                Ok(session) => signed_in_redirect(&state, "/", &session),
                // Joined all the same; the old session still works.
                Err(_) => Redirect::to("/").into_response(),
            },
            Err(e) => {
                let problem = Problem::general(say(&e));
                show(e.code.status(), view(InvitationStep::Failed), &form.signup, problem)
            }
        };
    }
    match accounts::sign_up(&state, ip, form.signup.request(Some(token.clone()))).await {
        Ok((user, _)) => {
            let password = form.signup.password.clone();
            match accounts::sign_in(&state, ip, &user.email, password, WEB_SESSION).await {
                Ok((_, session)) => signed_in_redirect(&state, "/", &session),
                Err(_) => show(
                    StatusCode::OK,
                    view(InvitationStep::Joined),
                    &form.signup,
                    Problem::default(),
                ),
            }
        }
        Err(e) if e.code == ErrorCode::InvalidToken => {
            let problem = Problem::general(say(&e));
            show(e.code.status(), view(InvitationStep::Failed), &form.signup, problem)
        }
        Err(e) => {
            show(e.code.status(), view(InvitationStep::Signup), &form.signup, signup_problem(&e))
        }
    }
}

/// A new browser session for `user` in `org`, replacing the current one.
async fn switch_session(
    state: &AppState,
    user: &SessionUser,
    org: &OrgId,
) -> Result<String, AppError> {
    // The store signs the old session out as it opens the new one.
    let grant = SessionGrant::Replaces(user.session());
    accounts::open_session(state, &user.user().id, Some(org), WEB_SESSION, grant).await
}

// ---------------------------------------------------------------------------
// No organisation

/// An invitation sent to the signed-in user, as the no-organisation page lists it.
#[derive(Debug)]
struct ReceivedRow {
    id: String,
    summary: InvitationSummary,
}

#[derive(Template)]
#[template(path = "welcome.html")]
struct WelcomePage {
    layout: Layout,
    email: String,
    notice: Option<&'static str>,
    invitations: Vec<ReceivedRow>,
    organization_name: String,
    problem: Problem,
}

/// The no-organisation page for `user`.
async fn welcome_page(
    state: &AppState,
    csrf: &Csrf,
    user: &SessionUser,
    status: StatusCode,
    notice: Option<&'static str>,
    organization_name: String,
    problem: Problem,
) -> Response {
    let invitations = match accounts::invitations_for(state, user.user()).await {
        Ok(found) => found,
        Err(e) => return WebError(e).into_response(),
    };
    let invitations: Vec<ReceivedRow> = invitations
        .iter()
        .map(|i| ReceivedRow { id: i.id.as_str().to_owned(), summary: i.into() })
        .collect();
    // An invitation no longer listed (used, revoked, not theirs): say it at the top.
    let mut problem = problem;
    if problem.at("invitation") && !invitations.iter().any(|i| i.id == problem.item) {
        problem.field = "";
    }
    let html = WelcomePage {
        layout: csrf.signed_out(),
        email: user.user().email.clone(),
        notice,
        invitations,
        organization_name,
        problem,
    }
    .render();
    page(status, html, csrf.cookies())
}

/// `GET /welcome` (`?done=deleted` after deleting the organisation): a user
/// in no organisation creates one or accepts an invitation. A member goes to
/// Ask; a user still in another organisation moves into it.
pub(crate) async fn welcome(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<DoneQuery>, QueryRejection>,
) -> Response {
    let user = match Visitor::of(&state, &headers).await {
        Visitor::Member(_) => return Redirect::to("/").into_response(),
        Visitor::Adrift(user) => user,
        Visitor::Nobody => return Redirect::to("/login").into_response(),
    };
    match accounts::first_organization(&state, &user.user().id).await {
        Ok(Some(org)) => {
            return match switch_session(&state, &user, &org).await {
                Ok(session) => signed_in_redirect(&state, "/", &session),
                Err(e) => WebError(e).into_response(),
            };
        }
        Ok(None) => {}
        Err(e) => return WebError(e).into_response(),
    }
    let csrf = Csrf::of(&state, &headers);
    let done = query.map(|Query(q)| q.done).unwrap_or_default();
    let notice = (done == "deleted").then_some(
        "The organisation is deleted, with its connections and history. Your account stays.",
    );
    welcome_page(&state, &csrf, &user, StatusCode::OK, notice, String::new(), Problem::default())
        .await
}

/// The user of a no-organisation page's form with a valid CSRF token, or
/// the response to give instead.
async fn adrift_form(
    state: &AppState,
    headers: &HeaderMap,
    csrf_token: &str,
) -> Result<(SessionUser, Csrf), Response> {
    let user = match Visitor::of(state, headers).await {
        Visitor::Member(_) => return Err(Redirect::to("/").into_response()),
        Visitor::Adrift(user) => user,
        Visitor::Nobody => return Err(Redirect::to("/login").into_response()),
    };
    let csrf = Csrf::of(state, headers);
    if let Err(e) = check_csrf(state, headers, Some(csrf_token)) {
        let problem = Problem::general(FORM_EXPIRED);
        let status = e.code.status();
        return Err(welcome_page(state, &csrf, &user, status, None, String::new(), problem).await);
    }
    Ok((user, csrf))
}

/// The new organisation's name.
#[derive(Debug, Deserialize)]
pub(crate) struct OrganizationForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /welcome/organisation`: creates the user's organisation and moves
/// the session into it.
pub(crate) async fn create_organization(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<OrganizationForm>,
) -> Response {
    let (user, csrf) = match adrift_form(&state, &headers, &form.csrf_token).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let created = accounts::create_organization_for(&state, ip, user.user(), &form.name).await;
    let created = match created {
        Ok((org, _)) => switch_session(&state, &user, &org.id).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(session) => signed_in_redirect(&state, "/", &session),
        Err(e) => {
            let problem = Problem::of(&e, &[("organization_name", "organization_name")], "");
            welcome_page(&state, &csrf, &user, e.code.status(), None, form.name, problem).await
        }
    }
}

/// `POST /welcome/invitations/{id}/accept`: joins the organisation of an
/// invitation sent to the user and moves the session into it.
pub(crate) async fn accept_listed_invitation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let (user, csrf) = match adrift_form(&state, &headers, &form.csrf_token).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let joined = match accounts::join_by_invitation_id(&state, user.user(), id.clone()).await {
        Ok(membership) => switch_session(&state, &user, &membership.org_id).await,
        Err(e) => Err(e),
    };
    match joined {
        Ok(session) => signed_in_redirect(&state, "/", &session),
        Err(e) => {
            let problem = Problem::at_field("invitation", say(&e)).in_row(id);
            welcome_page(&state, &csrf, &user, e.code.status(), None, String::new(), problem).await
        }
    }
}

// ---------------------------------------------------------------------------
// Settings

/// A member as the settings page lists them.
#[derive(Debug)]
struct MemberRow {
    id: String,
    name: String,
    email: String,
    role: &'static str,
    /// Whether this is the viewer.
    you: bool,
    /// Whether the viewer may change this member's role.
    manageable: bool,
    /// Whether the viewer may remove this member (never themselves here).
    removable: bool,
}

/// A pending invitation as the settings page lists it (owners and admins only).
#[derive(Debug)]
struct InvitationRow {
    id: String,
    email: String,
    role: &'static str,
    /// Who sent it, when known.
    invited_by: String,
    expires: LocalTime,
    /// Whether the viewer may send it again or revoke it (only owners touch
    /// owner invitations).
    manageable: bool,
}

/// A personal access token as the settings page lists it (never its secret).
#[derive(Debug)]
struct TokenRow {
    id: String,
    name: String,
    created: LocalTime,
    /// When it stops working; `None`: never.
    expires: Option<LocalTime>,
    /// Whether it has stopped working already.
    expired: bool,
    /// When it was last used; `None`: never.
    last_used: Option<LocalTime>,
}

/// A choice of the new-token form's lifetime select: its value and words.
#[derive(Debug)]
struct TokenLifetime {
    value: &'static str,
    label: &'static str,
}

/// The lifetimes a new token may be given on the page (the API takes any
/// number of days up to [`accounts::MAX_TOKEN_DAYS`]).
const TOKEN_LIFETIMES: &[TokenLifetime] = &[
    TokenLifetime { value: "30", label: "30 days" },
    TokenLifetime { value: "90", label: "90 days" },
    TokenLifetime { value: "365", label: "365 days" },
    TokenLifetime { value: "never", label: "No expiry" },
];

/// The lifetime the new-token form starts with.
const DEFAULT_TOKEN_LIFETIME: &str = "90";

/// A token just created, shown once in the tokens section.
struct NewTokenPanel {
    /// The token's id.
    id: String,
    /// Its name, as listed.
    name: String,
    /// `custard_pat_...`, shown this once.
    secret: String,
}

// The secret stays out of `Debug` (and so of any log line).
impl std::fmt::Debug for NewTokenPanel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTokenPanel")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A confirmation, shown in the section of the change it confirms.
#[derive(Debug, Default)]
struct Notice {
    section: &'static str,
    text: &'static str,
    /// A token created just before this view of the page, with its secret.
    new_token: Option<NewTokenPanel>,
}

impl Notice {
    /// The text, when the notice belongs to `section`.
    fn at(&self, section: &str) -> Option<&'static str> {
        (!self.text.is_empty() && self.section == section).then_some(self.text)
    }
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    layout: Layout,
    notice: Notice,
    first_name: String,
    last_name: String,
    email: String,
    organization: String,
    role: &'static str,
    /// Whether the viewer owns the organisation (and may delete it).
    owner: bool,
    /// Whether the viewer may manage members (owner or admin).
    admin: bool,
    /// The roles the viewer may grant.
    grantable: Vec<&'static str>,
    members: Vec<MemberRow>,
    invitations: Vec<InvitationRow>,
    invite_email: String,
    invite_role: String,
    /// What was typed to confirm deleting the organisation.
    delete_confirm: String,
    password_hint: String,
    /// The viewer's personal access tokens, newest first.
    tokens: Vec<TokenRow>,
    token_lifetimes: &'static [TokenLifetime],
    /// The new-token form's name and lifetime.
    token_name: String,
    token_expires: String,
    /// The server's MCP endpoint, for the new token's client configuration.
    mcp_url: String,
    problem: Problem,
}

impl SettingsPage {
    /// Whether the new-token form's lifetime select has `value` selected.
    fn lifetime_selected(&self, value: &str) -> bool {
        self.token_expires == value
    }
}

/// What a failed settings form keeps of its input.
#[derive(Debug, Default)]
struct Kept {
    first_name: Option<String>,
    last_name: Option<String>,
    invite_email: String,
    invite_role: String,
    delete_confirm: String,
    token_name: String,
    token_expires: String,
}

/// The settings page for `current`: its notice or problem, and kept input.
async fn settings_page(
    state: &AppState,
    csrf: &Csrf,
    current: &CurrentUser,
    status: StatusCode,
    notice: Notice,
    kept: Kept,
    problem: Problem,
) -> Response {
    let (organization, members, tokens) = match tokio::try_join!(
        accounts::organization(state, current),
        accounts::members(state, current),
        accounts::personal_tokens(state, current)
    ) {
        Ok(found) => found,
        Err(e) => return WebError(e).into_response(),
    };
    let role = current.role();
    let admin = current.manages();
    let invitations = match current.admin() {
        Ok(admin) => match accounts::pending_invitations(state, &admin).await {
            Ok(found) => found,
            Err(e) => return WebError(e).into_response(),
        },
        Err(_) => Vec::new(),
    };
    let invitations: Vec<InvitationRow> = invitations
        .into_iter()
        .map(|i| InvitationRow {
            id: i.id.as_str().to_owned(),
            manageable: i.role != Role::Owner || role == Role::Owner,
            role: i.role.as_str(),
            invited_by: i.invited_by_email.unwrap_or_else(|| "someone".to_owned()),
            expires: LocalTime::relative(i.expires_at),
            email: i.email,
        })
        .collect();
    let grantable = match role {
        Role::Owner => vec!["owner", "admin", "member"],
        Role::Admin => vec!["admin", "member"],
        Role::Member => vec![],
    };
    let me = current.user();
    let members: Vec<MemberRow> = members
        .into_iter()
        .map(|m| {
            // The API's rules: owners and admins manage, only owners touch owners.
            let manageable = admin && (m.role != Role::Owner || role == Role::Owner);
            let you = m.user_id == me.id;
            MemberRow {
                removable: manageable && !you,
                manageable,
                you,
                id: m.user_id.as_str().to_owned(),
                name: format!("{} {}", m.first_name, m.last_name),
                email: m.email,
                role: m.role.as_str(),
            }
        })
        .collect();
    let now = chrono::Utc::now();
    let tokens: Vec<TokenRow> = tokens
        .into_iter()
        .map(|t| TokenRow {
            id: t.id.as_str().to_owned(),
            name: t.name,
            created: LocalTime::relative(t.created_at),
            expires: t.expires_at.map(LocalTime::relative),
            expired: t.expires_at.is_some_and(|at| at <= now),
            last_used: t.last_used_at.map(LocalTime::relative),
        })
        .collect();
    let mut notice = notice;
    // The new token's name as listed; one revoked meanwhile is not shown.
    notice.new_token = notice.new_token.take().and_then(|mut panel| {
        let token = tokens.iter().find(|t| t.id == panel.id)?;
        panel.name.clone_from(&token.name);
        Some(panel)
    });
    let problem = placed(problem, role, &members, &invitations, &tokens);
    let html = SettingsPage {
        layout: csrf.signed_in(current, "settings"),
        notice,
        first_name: kept.first_name.unwrap_or_else(|| me.first_name.clone()),
        last_name: kept.last_name.unwrap_or_else(|| me.last_name.clone()),
        email: me.email.clone(),
        organization: organization.name,
        role: role.as_str(),
        owner: role == Role::Owner,
        admin,
        grantable,
        members,
        invitations,
        invite_email: kept.invite_email,
        invite_role: if kept.invite_role.is_empty() {
            "member".to_owned()
        } else {
            kept.invite_role
        },
        delete_confirm: kept.delete_confirm,
        password_hint: password_hint(),
        tokens,
        token_lifetimes: TOKEN_LIFETIMES,
        token_name: kept.token_name,
        token_expires: if kept.token_expires.is_empty() {
            DEFAULT_TOKEN_LIFETIME.to_owned()
        } else {
            kept.token_expires
        },
        mcp_url: format!("{}/mcp", state.config().public_url.trim_end_matches('/')),
        problem,
    }
    .render();
    page(status, html, csrf.cookies())
}

/// `problem` moved to a place the page shows to this viewer: a row's error
/// whose row is not listed goes to its list, and an error of a form the
/// viewer does not have (a member posting an admin's form) to the
/// organisation's section.
fn placed(
    mut problem: Problem,
    role: Role,
    members: &[MemberRow],
    invitations: &[InvitationRow],
    tokens: &[TokenRow],
) -> Problem {
    let admin = matches!(role, Role::Owner | Role::Admin);
    let listed = |field: &str| match field {
        "member_role" | "member_remove" => members.iter().any(|m| m.id == problem.item),
        "token" => tokens.iter().any(|t| t.id == problem.item),
        _ => invitations.iter().any(|i| i.id == problem.item),
    };
    problem.field = match problem.field {
        "member_role" | "member_remove" if !listed(problem.field) => "members",
        "invitation" if !listed(problem.field) => "invitations",
        "token" if !listed(problem.field) => "tokens",
        "invitation" | "invitations" | "invite" | "invite_email" | "invite_role" if !admin => {
            "organisation"
        }
        // Only admins have the column with the removal's confirmation.
        "member_remove" if !admin => "members",
        "delete_confirm" if role != Role::Owner => "organisation",
        field => field,
    };
    if problem.field == "invitations" && !admin {
        problem.field = "organisation";
    }
    problem
}

/// Which change the settings page confirms.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DoneQuery {
    #[serde(default)]
    done: String,
}

/// The notice for `?done=...`, in the section of the change.
fn notice(done: &str) -> Notice {
    let (section, text) = match done {
        "profile" => ("profile", "Your name is saved."),
        "password" => (
            "password",
            "Your password is changed. Every other browser and app signed in to your account \
             was signed out; this one stays signed in.",
        ),
        "others" => (
            "sessions",
            "Every other browser and app signed in to your account is signed out. This one \
             stays signed in.",
        ),
        "role" => ("members", "The member's role is changed."),
        "removed" => ("members", "The member is removed from the organisation."),
        "invited" => ("invitations", "The invitation is on its way. It works for 7 days."),
        "revoked" => ("invitations", "The invitation is revoked; its link no longer works."),
        "resent" => (
            "invitations",
            "The invitation is sent again with a new link, which works for 7 days; the old \
             link no longer does.",
        ),
        "token" => ("tokens", "The token is created."),
        "token_revoked" => (
            "tokens",
            "The token is revoked: scripts and assistants that use it are refused from now on.",
        ),
        _ => return Notice::default(),
    };
    Notice { section, text, new_token: None }
}

/// `GET /settings`: profile, password, sessions, and the organisation's
/// members and invitations.
pub(crate) async fn settings(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    headers: HeaderMap,
    query: Result<Query<DoneQuery>, QueryRejection>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let done = query.map(|Query(q)| q.done).unwrap_or_default();
    let mut notice = notice(&done);
    notice.new_token = new_token_once(&state, &current);
    settings_page(
        &state,
        &csrf,
        &current,
        StatusCode::OK,
        notice,
        Kept::default(),
        Problem::default(),
    )
    .await
}

/// The page's CSRF token for a settings form whose token checks out;
/// otherwise the settings page with the error where the form is (`section`,
/// and the row `item` of a list's form).
async fn settings_csrf(
    state: &AppState,
    headers: &HeaderMap,
    current: &CurrentUser,
    csrf_token: &str,
    (section, item): (&'static str, &str),
) -> Result<Csrf, Response> {
    let csrf = Csrf::of(state, headers);
    if let Err(e) = check_csrf(state, headers, Some(csrf_token)) {
        let problem = Problem::at_field(section, FORM_EXPIRED).in_row(item);
        let status = e.code.status();
        let page = settings_page(
            state,
            &csrf,
            current,
            status,
            Notice::default(),
            Kept::default(),
            problem,
        );
        return Err(page.await);
    }
    Ok(csrf)
}

/// After a settings change: back to the page with its notice, at `section`
/// (the notice is there, in view).
fn done(what: &str, section: &str) -> Response {
    Redirect::to(&format!("/settings?done={what}#{section}")).into_response()
}

/// The settings page again after a refused form: the error where the form is.
async fn refused(
    state: &AppState,
    csrf: &Csrf,
    current: &CurrentUser,
    error: &AppError,
    kept: Kept,
    problem: Problem,
) -> Response {
    settings_page(state, csrf, current, error.code.status(), Notice::default(), kept, problem).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProfileForm {
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /settings/profile`.
pub(crate) async fn update_profile(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    headers: HeaderMap,
    Form(form): Form<ProfileForm>,
) -> Response {
    let at = ("profile", "");
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token, at).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match accounts::set_names(&state, &current, Some(&form.first_name), Some(&form.last_name)).await
    {
        Ok(_) => done("profile", "profile"),
        Err(e) => {
            let fields = [("first_name", "first_name"), ("last_name", "last_name")];
            let problem = Problem::of(&e, &fields, "profile");
            let kept = Kept {
                first_name: Some(form.first_name),
                last_name: Some(form.last_name),
                ..Kept::default()
            };
            refused(&state, &csrf, &current, &e, kept, problem).await
        }
    }
}

// No `Debug`: it holds passwords.
#[derive(Deserialize)]
pub(crate) struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /settings/password`: this browser stays signed in, every other
/// session of the account is signed out.
pub(crate) async fn change_password(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Response {
    let at = ("password", "");
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token, at).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    let result = if form.new_password == form.confirm_password {
        accounts::change_own_password(&state, &current, form.current_password, form.new_password)
            .await
            .map_err(|e| {
                let fields =
                    [("the current password", "current_password"), ("password", "new_password")];
                let problem = Problem::of(&e, &fields, "password");
                (e, problem)
            })
    } else {
        let message = "The two new passwords do not match. Type the same password twice.";
        let e = AppError::new(ErrorCode::Validation, message);
        Err((e, Problem::at_field("confirm_password", message)))
    };
    match result {
        Ok(()) => done("password", "password"),
        Err((e, problem)) => refused(&state, &csrf, &current, &e, Kept::default(), problem).await,
    }
}

/// `POST /settings/sessions`: signs out every other session of the account.
pub(crate) async fn sign_out_others(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let at = ("sessions", "");
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token, at).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match accounts::sign_out_other_sessions(&state, &current).await {
        Ok(_) => done("others", "sessions"),
        Err(e) => {
            let problem = Problem::of(&e, &[], "sessions");
            refused(&state, &csrf, &current, &e, Kept::default(), problem).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RoleForm {
    #[serde(default)]
    role: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /settings/members/{user_id}/role`; a refusal (the last owner) is
/// shown on the member's row.
pub(crate) async fn change_role(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<RoleForm>,
) -> Response {
    let at = ("member_role", user_id.as_str());
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token, at).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match async {
        accounts::set_member_role(&state, &current.admin()?, user_id.clone(), &form.role).await
    }
    .await
    {
        Ok(_) => done("role", "members"),
        Err(e) => {
            let problem = Problem::of(&e, &[], "member_role").in_row(user_id);
            refused(&state, &csrf, &current, &e, Kept::default(), problem).await
        }
    }
}

/// `POST /settings/members/{user_id}/remove`.
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let at = ("member_remove", user_id.as_str());
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token, at).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match async { accounts::remove_from_org(&state, &current.admin()?, user_id.clone()).await }
        .await
    {
        Ok(()) => done("removed", "members"),
        Err(e) => {
            let problem = Problem::of(&e, &[], "member_remove").in_row(user_id);
            refused(&state, &csrf, &current, &e, Kept::default(), problem).await
        }
    }
}

/// `POST /settings/invitations/{id}/revoke`.
pub(crate) async fn revoke_invitation(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let at = ("invitation", id.as_str());
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token, at).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match async { accounts::revoke_pending_invitation(&state, &current.admin()?, id.clone()).await }
        .await
    {
        Ok(()) => done("revoked", "invitations"),
        Err(e) => {
            let problem = Problem::of(&e, &[], "invitation").in_row(id);
            refused(&state, &csrf, &current, &e, Kept::default(), problem).await
        }
    }
}

/// `POST /settings/invitations/{id}/resend`: a fresh link, valid 7 days.
pub(crate) async fn resend_invitation(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let at = ("invitation", id.as_str());
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token, at).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match async { accounts::resend_pending_invitation(&state, &current.admin()?, id.clone()).await }
        .await
    {
        Ok(_) => done("resent", "invitations"),
        Err(e) => {
            let problem = Problem::of(&e, &[], "invitation").in_row(id);
            refused(&state, &csrf, &current, &e, Kept::default(), problem).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /settings/invitations`: emails the invitation.
pub(crate) async fn invite(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    headers: HeaderMap,
    Form(form): Form<InviteForm>,
) -> Response {
    let at = ("invite", "");
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token, at).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match async {
        accounts::invite_by_email(&state, &current.admin()?, &form.email, &form.role).await
    }
    .await
    {
        Ok(_) => done("invited", "invitations"),
        Err(e) => {
            let fields = [("email", "invite_email"), ("role", "invite_role")];
            let problem = Problem::of(&e, &fields, "invite");
            let kept = Kept { invite_email: form.email, invite_role: form.role, ..Kept::default() };
            refused(&state, &csrf, &current, &e, kept, problem).await
        }
    }
}

/// The delete form: the organisation's name typed again.
#[derive(Debug, Deserialize)]
pub(crate) struct DeleteForm {
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /settings/organisation/delete`: deletes the organisation once its
/// name is typed again (owners only); the owner goes on to `/welcome`.
pub(crate) async fn delete_organization(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    headers: HeaderMap,
    Form(form): Form<DeleteForm>,
) -> Response {
    let at = ("delete_confirm", "");
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token, at).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    let organization = match accounts::organization(&state, &current).await {
        Ok(organization) => organization,
        Err(e) => return WebError(e).into_response(),
    };
    let result = if form.confirm.trim() == organization.name.trim() {
        async { accounts::delete_own_organization(&state, &current.owner()?).await }.await
    } else {
        Err(AppError::new(
            ErrorCode::Validation,
            format!(
                "the name does not match: type {} exactly as it is written to delete the \
                 organisation",
                organization.name.trim()
            ),
        ))
    };
    match result {
        Ok(()) => Redirect::to(&format!("{WELCOME}?done=deleted")).into_response(),
        Err(e) => {
            let problem = Problem::at_field("delete_confirm", say(&e));
            let kept = Kept { delete_confirm: form.confirm, ..Kept::default() };
            refused(&state, &csrf, &current, &e, kept, problem).await
        }
    }
}

// ---------------------------------------------------------------------------
// Personal access tokens

/// The settings page's path: where a new token's secret is shown.
const SETTINGS: &str = "/settings";

/// Keeps a new token's secret for the session's next view of the settings
/// page, once (a flash: never in a URL, a cookie or the store).
fn show_token_once(state: &AppState, current: &CurrentUser, issued: accounts::IssuedToken) {
    if let Ok(session) = current.session() {
        let flash = Flash::NewToken {
            token_id: issued.token.id.as_str().to_owned(),
            secret: issued.secret,
        };
        state.inner().flashes.put(&Owner::session(session), SETTINGS, flash);
    }
}

/// The token [`show_token_once`] kept for this session, taken out: its
/// panel, named once the page finds the token in its list.
fn new_token_once(state: &AppState, current: &CurrentUser) -> Option<NewTokenPanel> {
    let owner = Owner::session(current.session().ok()?);
    match state.inner().flashes.take(&owner, SETTINGS)? {
        Flash::NewToken { token_id, secret } => {
            Some(NewTokenPanel { id: token_id, name: String::new(), secret })
        }
        _ => None,
    }
}

/// What a refused lifetime gets told.
const TOKEN_LIFETIME_HINT: &str =
    "Choose how long the token works: 30, 90 or 365 days, or no expiry.";

/// The lifetime select's value as days (`never`: until revoked).
fn token_days(value: &str) -> Result<Option<u32>, AppError> {
    match value.trim() {
        "never" => Ok(None),
        days => match days.parse() {
            Ok(days) if (1..=accounts::MAX_TOKEN_DAYS).contains(&days) => Ok(Some(days)),
            _ => Err(AppError::new(ErrorCode::Validation, TOKEN_LIFETIME_HINT)),
        },
    }
}

/// The new-token form.
#[derive(Debug, Deserialize)]
pub(crate) struct NewTokenForm {
    #[serde(default)]
    name: String,
    /// Days (`30`, `90`, `365`) or `never`.
    #[serde(default)]
    expires_in_days: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /settings/tokens`: creates a personal access token and redirects
/// to the page, which shows its secret once; a refusal (a bad name or
/// lifetime, too many tokens) is shown by the form.
pub(crate) async fn create_token(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    headers: HeaderMap,
    Form(form): Form<NewTokenForm>,
) -> Response {
    let at = ("token_create", "");
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token, at).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    let created = async {
        let days = token_days(&form.expires_in_days)?;
        accounts::create_personal_token(&state, &current, &form.name, days).await
    };
    match created.await {
        Ok(issued) => {
            show_token_once(&state, &current, issued);
            done("token", "tokens")
        }
        Err(e) => {
            let fields = [
                ("name", "token_name"),
                (TOKEN_LIFETIME_HINT, "token_expires"),
                ("expires_in_days", "token_expires"),
            ];
            let mut problem = Problem::of(&e, &fields, "token_create");
            if problem.field == "token_expires" {
                problem.message = TOKEN_LIFETIME_HINT.to_owned();
            } else if e.code == ErrorCode::Conflict {
                problem.message = format!(
                    "You have {} tokens in this organisation, the most there can be. Revoke one \
                     you no longer use, then create this one.",
                    crate::store::MAX_PERSONAL_TOKENS
                );
            }
            let kept = Kept {
                token_name: form.name,
                token_expires: form.expires_in_days,
                ..Kept::default()
            };
            refused(&state, &csrf, &current, &e, kept, problem).await
        }
    }
}

/// `POST /settings/tokens/{id}/revoke`: the token is refused from the next
/// request on.
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let at = ("token", id.as_str());
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token, at).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match accounts::revoke_personal_token(&state, &current, id.clone()).await {
        Ok(()) => done("token_revoked", "tokens"),
        Err(e) => {
            let mut problem = Problem::of(&e, &[], "token").in_row(id);
            if e.code == ErrorCode::NotFound {
                problem.message = "This token is gone already: it was revoked.".to_owned();
            }
            refused(&state, &csrf, &current, &e, Kept::default(), problem).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_site_are_followed_after_signing_in() {
        let check = |next: &str, expected: &str| assert_eq!(local_path(next), expected, "{next:?}");
        check("/accept-invitation?token=abc%2B", "/accept-invitation?token=abc%2B");
        check("/settings", "/settings");
        check("", "/");
        check("//evil.example/", "/");
        check("/\\evil.example", "/");
        check("https://evil.example/", "/");
        check("/\t/evil.example", "/");
        check("/caf\u{e9}", "/");
        check("settings", "/");
    }

    #[test]
    fn api_errors_land_on_the_field_their_message_names() {
        let check = |code: ErrorCode, message: &str, field: &str, text: &str| {
            let problem = signup_problem(&AppError::new(code, message));
            assert_eq!((problem.field, problem.message.as_str()), (field, text), "{message}");
        };
        let validation = ErrorCode::Validation;
        check(
            validation,
            "first_name must be 1 to 100 characters",
            "first_name",
            "First name must be 1 to 100 characters.",
        );
        check(validation, "email is not a valid address", "email", "Email is not a valid address.");
        check(
            validation,
            "password rejected: too common",
            "password",
            "Password rejected: too common.",
        );
        check(
            ErrorCode::Conflict,
            "an account with this email already exists",
            "email",
            "An account with this email already exists.",
        );
        check(
            ErrorCode::RateLimited,
            "too many attempts; try again later",
            "",
            "Too many attempts; try again later.",
        );
        check(
            ErrorCode::Internal,
            "something went wrong on our side",
            "",
            "Something went wrong on our side. Please try again.",
        );
    }
}
