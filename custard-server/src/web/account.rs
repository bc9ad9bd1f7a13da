//! The account pages: sign up and verify the email, sign in and out, forgot
//! and reset a password, accept an invitation, and the settings page.
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

use askama::Template;
use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::flash::{Flash, Owner};
use super::{
    Csrf, Layout, TokenForm, WEB_SESSION, WebError, WebUser, check_csrf, page, secure, sentence,
    session,
};
use crate::accounts::{self, CurrentUser, SignupRequest};
use crate::error::{AppError, ErrorCode};
use crate::extract::ClientIp;
use crate::routes::AppState;
use crate::store::Role;

/// The account pages' routes.
pub(crate) fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", get(|| async { Redirect::to("/") }).post(logout))
        .route("/signup", get(signup_page).post(signup))
        .route("/verify-email", get(verify_email))
        .route("/forgot-password", get(forgot_page).post(forgot))
        .route("/reset-password", get(reset_page).post(reset))
        .route("/accept-invitation", get(invitation_page).post(accept_invitation))
        .route("/settings", get(settings))
        .route("/settings/profile", get(to_settings).post(update_profile))
        .route("/settings/password", get(to_settings).post(change_password))
        .route("/settings/members/{user_id}/role", get(to_settings).post(change_role))
        .route("/settings/members/{user_id}/remove", get(to_settings).post(remove_member))
        .route("/settings/invitations", get(to_settings).post(invite))
        .route("/settings/invitations/{id}/revoke", get(to_settings).post(revoke_invitation))
}

/// `GET` of a settings form's URL (a reload, a bookmark): the settings page.
async fn to_settings() -> Redirect {
    Redirect::to("/settings")
}

/// Where sign-up and forgot-password redirect once the email is sent.
const SIGNUP_SENT: &str = "/signup?sent=1";
const FORGOT_SENT: &str = "/forgot-password?sent=1";

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

/// What went wrong with a form: a message for people and the field it is
/// about (a section name, or empty for the whole form).
#[derive(Debug, Default)]
struct Problem {
    field: &'static str,
    message: String,
}

impl Problem {
    /// A problem with the whole form.
    fn general(message: impl Into<String>) -> Self {
        Problem { field: "", message: message.into() }
    }

    /// An API error as a problem with the field its message names (the first
    /// of `fields` whose prefix starts the message), else with `fallback`.
    fn of(error: &AppError, fields: &[(&str, &'static str)], fallback: &'static str) -> Self {
        let field = fields
            .iter()
            .find(|(prefix, _)| error.message.starts_with(prefix))
            .map_or(fallback, |(_, field)| field);
        Problem { field, message: say(error) }
    }

    /// Whether the problem is about `field`.
    fn at(&self, field: &str) -> bool {
        !self.message.is_empty() && self.field == field
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
    let token = session::cookie_value(headers, session::SESSION_COOKIE)?;
    CurrentUser::of_token(state, &token).await.ok()
}

/// A redirect that also sets the browser's session cookie.
fn signed_in_redirect(state: &AppState, to: &str, token: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    session::set_cookies(
        response.headers_mut(),
        [
            session::session_cookie(token, WEB_SESSION, secure(state)),
            session::fresh_csrf_cookie(secure(state)),
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
}

/// Where to go after signing in.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct NextQuery {
    #[serde(default)]
    next: String,
}

/// `GET /login`.
pub(crate) async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<NextQuery>, QueryRejection>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let next = query.map(|Query(q)| q.next).unwrap_or_default();
    let next = if local_path(&next) == "/" { "" } else { next.as_str() };
    let html = LoginPage { layout: csrf.signed_out(), email: "", next, error: None }.render();
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

/// `POST /login`: signs in and sends the browser to `next` (a local path) or `/`.
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let next = local_path(&form.next);
    let again = |status: StatusCode, error: String| {
        let html = LoginPage {
            layout: csrf.signed_out(),
            email: form.email.trim(),
            next: if next == "/" { "" } else { next },
            error: Some(error),
        }
        .render();
        page(status, html, csrf.cookies())
    };
    if let Err(e) = check_csrf(&state, &headers, Some(&form.csrf_token)) {
        return again(e.code.status(), "The form expired. Please sign in again.".to_owned());
    }
    match accounts::sign_in(&state, ip, form.email.trim(), form.password.clone(), WEB_SESSION).await
    {
        Ok((_, token)) => signed_in_redirect(&state, next, &token),
        Err(e) => again(e.code.status(), sentence(&e)),
    }
}

/// `POST /logout`: ends the browser's session.
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Result<Response, AppError> {
    check_csrf(&state, &headers, Some(&form.csrf_token))?;
    if let Some(token) = session::cookie_value(&headers, session::SESSION_COOKIE)
        && let Ok(claims) = crate::auth::decode_access(&token, &state.inner().jwt)
    {
        state.inner().store.revoke_session(&claims.sid.clone().into()).await?;
    }
    let mut response = Redirect::to("/login").into_response();
    session::set_cookies(
        response.headers_mut(),
        [session::clear_session_cookie(secure(&state)), session::fresh_csrf_cookie(secure(&state))],
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
    /// The API's sign-up request for this form, joining through `invitation`
    /// when there is one.
    fn request(&self, invitation: Option<String>) -> SignupRequest {
        SignupRequest {
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
        let to = sent_to(&state, &headers, SIGNUP_SENT).unwrap_or("the address you gave".into());
        let message = format!(
            "We sent an email to {to}. Open its link to verify your address, then sign in; \
             the link works for 24 hours. If the address already has an account, the \
             email says how to sign in or reset your password instead."
        );
        let html = CheckEmailPage { layout: csrf.signed_out(), message }.render();
        return page(StatusCode::OK, html, csrf.cookies());
    }
    let form = SignupForm::default();
    let html = SignupPage {
        layout: csrf.signed_out(),
        form: &form,
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

// ---------------------------------------------------------------------------
// Forgot and reset the password

#[derive(Template)]
#[template(path = "forgot_password.html")]
struct ForgotPage<'a> {
    layout: Layout,
    email: &'a str,
    problem: Problem,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ForgotForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    csrf_token: String,
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
        let html = CheckEmailPage { layout: csrf.signed_out(), message }.render();
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
    Form(form): Form<ForgotForm>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let email = form.email.trim();
    let again = |status: StatusCode, problem: Problem| {
        let html = ForgotPage { layout: csrf.signed_out(), email, problem }.render();
        page(status, html, csrf.cookies())
    };
    if let Err(e) = check_csrf(&state, &headers, Some(&form.csrf_token)) {
        return again(e.code.status(), Problem::general(FORM_EXPIRED));
    }
    if email.is_empty() {
        let problem = Problem { field: "email", message: "Enter your email address.".to_owned() };
        return again(StatusCode::UNPROCESSABLE_ENTITY, problem);
    }
    match accounts::request_password_reset(&state, ip, email).await {
        Ok(()) => sent(&state, &headers, FORGOT_SENT, email.to_owned()),
        Err(e) => again(e.code.status(), Problem::of(&e, &[], "")),
    }
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
        let problem = Problem {
            field: "confirm_password",
            message: "The two passwords do not match. Type the same password twice.".to_owned(),
        };
        return show(StatusCode::UNPROCESSABLE_ENTITY, ResetStep::Form, problem, csrf.cookies());
    }
    match accounts::reset_password_with_token(&state, ip, token, form.new_password.clone()).await {
        Ok(_) => {
            // Every session of the account was revoked, this browser's too.
            let mut response = Redirect::to("/reset-password?done=1").into_response();
            let mut cookies = csrf.cookies();
            cookies.push(session::clear_session_cookie(secure(&state)));
            session::set_cookies(response.headers_mut(), cookies);
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
    /// A signed-in user: the button that accepts.
    Accept,
    /// A visitor: the sign-up form that joins.
    Signup,
    /// Accepting failed; nothing to try again.
    Failed,
    /// The account exists but signing in did not follow.
    Joined,
}

#[derive(Template)]
#[template(path = "accept_invitation.html")]
struct InvitationPage<'a> {
    layout: Layout,
    step: InvitationStep,
    token: &'a str,
    form: &'a SignupForm,
    /// `/login` with the way back to this invitation.
    login_link: String,
    password_hint: String,
    problem: Problem,
}

/// `/login?next=` the invitation page for `token`.
fn login_link(token: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let back = format!("/accept-invitation?token={}", utf8_percent_encode(token, NON_ALPHANUMERIC));
    format!("/login?next={}", utf8_percent_encode(&back, NON_ALPHANUMERIC))
}

// No `Debug`: it holds the token and the password.
#[derive(Deserialize)]
pub(crate) struct InvitationForm {
    #[serde(default)]
    token: String,
    #[serde(flatten)]
    signup: SignupForm,
}

/// The invitation page for `user` (signed in) or a visitor.
fn render_invitation(
    csrf: &Csrf,
    user: Option<&CurrentUser>,
    step: InvitationStep,
    token: &str,
    form: &SignupForm,
    problem: Problem,
) -> Result<String, askama::Error> {
    let layout = match user {
        Some(user) => csrf.signed_in(user, ""),
        None => csrf.signed_out(),
    };
    InvitationPage {
        layout,
        step,
        token,
        form,
        login_link: login_link(token),
        password_hint: password_hint(),
        problem,
    }
    .render()
}

/// `GET /accept-invitation?token=...`: the invitation email's link.
pub(crate) async fn invitation_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let token = token_of(query);
    let user = signed_in(&state, &headers).await;
    let (status, step, problem) = match (&user, token.is_empty()) {
        (_, true) => (StatusCode::BAD_REQUEST, InvitationStep::NoToken, Problem::general(NO_TOKEN)),
        (Some(_), false) => (StatusCode::OK, InvitationStep::Accept, Problem::default()),
        (None, false) => (StatusCode::OK, InvitationStep::Signup, Problem::default()),
    };
    let form = SignupForm::default();
    let html = render_invitation(&csrf, user.as_ref(), step, &token, &form, problem);
    page(status, html, csrf.cookies())
}

/// `POST /accept-invitation`: a signed-in user joins the organisation (and
/// the browser's session moves to it); a visitor signs up into it, already
/// verified, and is signed in.
pub(crate) async fn accept_invitation(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<InvitationForm>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let token = form.token.trim();
    let user = signed_in(&state, &headers).await;
    let show = |status: StatusCode, step: InvitationStep, problem: Problem| {
        let html = render_invitation(&csrf, user.as_ref(), step, token, &form.signup, problem);
        page(status, html, csrf.cookies())
    };
    let asking = if user.is_some() { InvitationStep::Accept } else { InvitationStep::Signup };
    if let Err(e) = check_csrf(&state, &headers, Some(&form.signup.csrf_token)) {
        return show(e.code.status(), asking, Problem::general(FORM_EXPIRED));
    }
    if token.is_empty() {
        return show(StatusCode::BAD_REQUEST, InvitationStep::NoToken, Problem::general(NO_TOKEN));
    }
    if let Some(current) = &user {
        return match accounts::join_by_invitation(&state, current, token).await {
            Ok(membership) => {
                match switch_session(&state, current, &membership.org_id).await {
                    Ok(session) => signed_in_redirect(&state, "/", &session),
                    // Joined all the same; the old session still works.
                    Err(_) => Redirect::to("/").into_response(),
                }
            }
            Err(e) => show(e.code.status(), InvitationStep::Failed, Problem::general(say(&e))),
        };
    }
    match accounts::sign_up(&state, ip, form.signup.request(Some(token.to_owned()))).await {
        Ok((user, _)) => {
            let password = form.signup.password.clone();
            match accounts::sign_in(&state, ip, &user.email, password, WEB_SESSION).await {
                Ok((_, session)) => signed_in_redirect(&state, "/", &session),
                Err(_) => show(StatusCode::OK, InvitationStep::Joined, Problem::default()),
            }
        }
        Err(e) if e.code == ErrorCode::InvalidToken => {
            // The token is left unused when the email is not the invited one.
            let message = format!("{} Use the email address the invitation was sent to.", say(&e));
            show(e.code.status(), InvitationStep::Signup, Problem::general(message))
        }
        Err(e) => show(e.code.status(), InvitationStep::Signup, signup_problem(&e)),
    }
}

/// A new browser session for `current` in `org`, replacing the current one.
async fn switch_session(
    state: &AppState,
    current: &CurrentUser,
    org: &crate::store::OrgId,
) -> Result<String, AppError> {
    let token = accounts::open_session(state, &current.user().id, org, WEB_SESSION).await?;
    state.inner().store.revoke_session(current.session()).await?;
    Ok(token)
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
    expires: String,
    /// Whether the viewer may revoke it (only owners revoke owner invitations).
    revocable: bool,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    layout: Layout,
    notice: Option<&'static str>,
    first_name: String,
    last_name: String,
    email: String,
    organization: String,
    role: &'static str,
    /// Whether the viewer may manage members (owner or admin).
    admin: bool,
    /// The roles the viewer may grant.
    grantable: Vec<&'static str>,
    members: Vec<MemberRow>,
    invitations: Vec<InvitationRow>,
    invite_email: String,
    invite_role: String,
    password_hint: String,
    problem: Problem,
}

/// What a failed settings form keeps of its input.
#[derive(Debug, Default)]
struct Kept {
    first_name: Option<String>,
    last_name: Option<String>,
    invite_email: String,
    invite_role: String,
}

/// The settings page for `current`: its notice or problem, and kept input.
async fn settings_page(
    state: &AppState,
    csrf: &Csrf,
    current: &CurrentUser,
    status: StatusCode,
    notice: Option<&'static str>,
    kept: Kept,
    problem: Problem,
) -> Response {
    let store = &state.inner().store;
    let (organization, members) = match tokio::try_join!(
        store.get_organization(current.org()),
        store.list_members(current.org())
    ) {
        Ok(found) => found,
        Err(e) => return AppError::from(e).into_response(),
    };
    let role = current.role();
    let admin = matches!(role, Role::Owner | Role::Admin);
    let invitations = if admin {
        match accounts::pending_invitations(state, current).await {
            Ok(found) => found,
            Err(e) => return WebError(e).into_response(),
        }
    } else {
        Vec::new()
    };
    let invitations = invitations
        .into_iter()
        .map(|i| InvitationRow {
            id: i.id.as_str().to_owned(),
            revocable: i.role != Role::Owner || role == Role::Owner,
            role: i.role.as_str(),
            invited_by: i.invited_by_email.unwrap_or_else(|| "someone".to_owned()),
            expires: super::time_text(&i.expires_at),
            email: i.email,
        })
        .collect();
    let grantable = match role {
        Role::Owner => vec!["owner", "admin", "member"],
        Role::Admin => vec!["admin", "member"],
        Role::Member => vec![],
    };
    let me = current.user();
    let members = members
        .into_iter()
        .map(|m| {
            // The API's rules: owners and admins manage, only owners touch owners.
            let manageable = admin && (m.role != Role::Owner || role == Role::Owner);
            MemberRow {
                removable: manageable && m.user_id != me.id,
                manageable,
                id: m.user_id.as_str().to_owned(),
                name: format!("{} {}", m.first_name, m.last_name),
                email: m.email,
                role: m.role.as_str(),
            }
        })
        .collect();
    let html = SettingsPage {
        layout: csrf.signed_in(current, "settings"),
        notice,
        first_name: kept.first_name.unwrap_or_else(|| me.first_name.clone()),
        last_name: kept.last_name.unwrap_or_else(|| me.last_name.clone()),
        email: me.email.clone(),
        organization: organization.name,
        role: role.as_str(),
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
        password_hint: password_hint(),
        problem,
    }
    .render();
    page(status, html, csrf.cookies())
}

/// Which change the settings page confirms.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DoneQuery {
    #[serde(default)]
    done: String,
}

/// The notice for `?done=...`.
fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "profile" => "Your name is saved.",
        // The API leaves other sessions alone; say so rather than imply otherwise.
        "password" => {
            "Your password is changed. You stay signed in here, and so do other browsers \
             and apps already signed in; sign them out there if you need to."
        }
        "role" => "The member's role is changed.",
        "removed" => "The member is removed from the organisation.",
        "invited" => "The invitation is on its way. It works for 7 days.",
        "revoked" => "The invitation is revoked; its link no longer works.",
        _ => return None,
    })
}

/// `GET /settings`: profile, password, and the organisation's members.
pub(crate) async fn settings(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    headers: HeaderMap,
    query: Result<Query<DoneQuery>, QueryRejection>,
) -> Response {
    let csrf = Csrf::of(&state, &headers);
    let done = query.map(|Query(q)| q.done).unwrap_or_default();
    settings_page(
        &state,
        &csrf,
        &current,
        StatusCode::OK,
        notice(&done),
        Kept::default(),
        Problem::default(),
    )
    .await
}

/// The page's CSRF token for a settings form whose token checks out;
/// otherwise the settings page with the error (a stale or forged form).
async fn settings_csrf(
    state: &AppState,
    headers: &HeaderMap,
    current: &CurrentUser,
    csrf_token: &str,
) -> Result<Csrf, Response> {
    let csrf = Csrf::of(state, headers);
    if let Err(e) = check_csrf(state, headers, Some(csrf_token)) {
        let problem = Problem::general(FORM_EXPIRED);
        let status = e.code.status();
        return Err(
            settings_page(state, &csrf, current, status, None, Kept::default(), problem).await
        );
    }
    Ok(csrf)
}

/// After a settings change: back to the page with its notice.
fn done(what: &str) -> Response {
    Redirect::to(&format!("/settings?done={what}")).into_response()
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
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match accounts::set_names(&state, &current, Some(&form.first_name), Some(&form.last_name)).await
    {
        Ok(_) => done("profile"),
        Err(e) => {
            let fields = [("first_name", "first_name"), ("last_name", "last_name")];
            let problem = Problem::of(&e, &fields, "profile");
            let kept = Kept {
                first_name: Some(form.first_name),
                last_name: Some(form.last_name),
                ..Kept::default()
            };
            settings_page(&state, &csrf, &current, e.code.status(), None, kept, problem).await
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

/// `POST /settings/password`: this browser stays signed in.
pub(crate) async fn change_password(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Response {
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    let result = if form.new_password == form.confirm_password {
        accounts::change_own_password(&state, &current, form.current_password, form.new_password)
            .await
            .map_err(|e| {
                let fields =
                    [("the current password", "current_password"), ("password", "new_password")];
                (e.code.status(), Problem::of(&e, &fields, "password"))
            })
    } else {
        let message = "The two new passwords do not match. Type the same password twice.";
        Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            Problem { field: "confirm_password", message: message.to_owned() },
        ))
    };
    match result {
        Ok(()) => done("password"),
        Err((status, problem)) => {
            settings_page(&state, &csrf, &current, status, None, Kept::default(), problem).await
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

/// `POST /settings/members/{user_id}/role`.
pub(crate) async fn change_role(
    State(state): State<AppState>,
    WebUser(current): WebUser,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<RoleForm>,
) -> Response {
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match accounts::set_member_role(&state, &current, user_id, &form.role).await {
        Ok(_) => done("role"),
        Err(e) => {
            let problem = Problem::of(&e, &[], "members");
            settings_page(&state, &csrf, &current, e.code.status(), None, Kept::default(), problem)
                .await
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
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match accounts::remove_from_org(&state, &current, user_id).await {
        Ok(()) => done("removed"),
        Err(e) => {
            let problem = Problem::of(&e, &[], "members");
            settings_page(&state, &csrf, &current, e.code.status(), None, Kept::default(), problem)
                .await
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
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match accounts::revoke_pending_invitation(&state, &current, id).await {
        Ok(()) => done("revoked"),
        Err(e) => {
            let problem = Problem::of(&e, &[], "invitations");
            settings_page(&state, &csrf, &current, e.code.status(), None, Kept::default(), problem)
                .await
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
    let csrf = match settings_csrf(&state, &headers, &current, &form.csrf_token).await {
        Ok(csrf) => csrf,
        Err(response) => return response,
    };
    match accounts::invite_by_email(&state, &current, &form.email, &form.role).await {
        Ok(_) => done("invited"),
        Err(e) => {
            let fields = [("email", "invite_email"), ("role", "invite_role")];
            let problem = Problem::of(&e, &fields, "invite");
            let kept = Kept { invite_email: form.email, invite_role: form.role, ..Kept::default() };
            settings_page(&state, &csrf, &current, e.code.status(), None, kept, problem).await
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
