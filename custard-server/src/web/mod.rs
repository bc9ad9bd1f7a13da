//! The web UI: server-rendered pages (askama templates compiled into the
//! binary) over the same store and rules as the API, signed in with a session
//! cookie and protected by CSRF tokens ([`session`]).
//!
//! Pages so far: sign in (`/login`), sign out (`/logout`) and the organisation's
//! connections with their live status (`/`); the rest of the UI builds on these.

pub(crate) mod session;

use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::accounts::{self, CurrentUser};
use crate::connections::status_of;
use crate::error::{AppError, ErrorCode};
use crate::extract::ClientIp;
use crate::routes::AppState;

/// The pages: HTML for browsers, outside the API document.
pub(crate) fn pages() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/{name}", get(asset))
}

/// How long a browser stays signed in.
const WEB_SESSION: Duration = Duration::from_secs(12 * 60 * 60);

/// Whether cookies get the `Secure` attribute: when the public URL is https.
fn secure(state: &AppState) -> bool {
    state.config().public_url.starts_with("https://")
}

/// A rendered page with the headers every page carries.
fn page(status: StatusCode, html: Result<String, askama::Error>, cookies: Vec<String>) -> Response {
    let html = match html {
        Ok(html) => html,
        Err(e) => return AppError::internal(e).into_response(),
    };
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "same-origin"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                 frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        ],
        html,
    )
        .into_response();
    session::set_cookies(response.headers_mut(), cookies);
    response
}

/// The signed-in user of a page; anyone else is sent to `/login`.
#[derive(Debug)]
pub(crate) struct WebUser(CurrentUser);

impl FromRequestParts<AppState> for WebUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        CurrentUser::from_request_parts(parts, state)
            .await
            .map(WebUser)
            .map_err(|_| Redirect::to("/login").into_response())
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf_token: String,
    email: &'a str,
    error: Option<&'a str>,
}

/// `GET /login`.
pub(crate) async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (nonce, cookie) = session::csrf_nonce(&headers, secure(&state));
    let csrf_token = session::csrf_token(&state.inner().jwt, &nonce);
    let html = LoginPage { csrf_token, email: "", error: None }.render();
    page(StatusCode::OK, html, cookie.into_iter().collect())
}

// No `Debug`: it holds the password.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /login`: signs in and sends the browser to `/`.
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let secure = secure(&state);
    let (nonce, new_nonce) = session::csrf_nonce(&headers, secure);
    let again = |status: StatusCode, error: &str| {
        let csrf_token = session::csrf_token(&state.inner().jwt, &nonce);
        let html = LoginPage { csrf_token, email: form.email.trim(), error: Some(error) }.render();
        page(status, html, new_nonce.clone().into_iter().collect())
    };
    if !session::request_has_valid_csrf(&state.inner().jwt, &headers, Some(&form.csrf_token)) {
        return again(StatusCode::FORBIDDEN, "The form expired. Please sign in again.");
    }
    match accounts::sign_in(&state, ip, form.email.trim(), form.password.clone(), WEB_SESSION).await
    {
        Ok((_, token)) => {
            let mut response = Redirect::to("/").into_response();
            session::set_cookies(
                response.headers_mut(),
                [session::session_cookie(&token, WEB_SESSION, secure)],
            );
            response
        }
        Err(e) if e.code == ErrorCode::Internal || e.code == ErrorCode::Unavailable => {
            again(e.code.status(), "Something went wrong on our side. Please try again.")
        }
        Err(e) => again(e.code.status(), &capitalised(&e.message)),
    }
}

fn capitalised(message: &str) -> String {
    let mut chars = message.chars();
    chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect()) + "."
}

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf_token: String,
}

/// `POST /logout`: ends the browser's session.
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    if !session::request_has_valid_csrf(&state.inner().jwt, &headers, Some(&form.csrf_token)) {
        return Err(AppError::new(ErrorCode::Forbidden, "the form expired; reload the page"));
    }
    if let Some(token) = session::cookie_value(&headers, session::SESSION_COOKIE)
        && let Ok(claims) = crate::auth::decode_access(&token, &state.inner().jwt)
    {
        state.inner().store.revoke_session(&claims.sid.clone().into()).await?;
    }
    let mut response = Redirect::to("/login").into_response();
    session::set_cookies(response.headers_mut(), [session::clear_session_cookie(secure(&state))]);
    Ok(response)
}

/// One row of the connections table.
#[derive(Debug)]
struct ConnectionRow {
    name: String,
    db_type: &'static str,
    status: &'static str,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    csrf_token: String,
    email: String,
    connections: Vec<ConnectionRow>,
}

/// `GET /`: the organisation's connections and their live status.
pub(crate) async fn home(
    State(state): State<AppState>,
    WebUser(user): WebUser,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let inner = state.inner();
    let connections = inner.store.list_connections(user.org()).await?;
    let rows = connections
        .iter()
        .map(|c| ConnectionRow {
            name: c.name.clone(),
            db_type: c.dialect.as_str(),
            status: status_of(c, inner.router.presence(&c.id).agents),
        })
        .collect();
    let (nonce, cookie) = session::csrf_nonce(&headers, secure(&state));
    let csrf_token = session::csrf_token(&inner.jwt, &nonce);
    let html =
        HomePage { csrf_token, email: user.user().email.clone(), connections: rows }.render();
    Ok(page(StatusCode::OK, html, cookie.into_iter().collect()))
}

/// `GET /assets/{name}`: the stylesheet (and later scripts), compiled in.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match name.as_str() {
        "app.css" => (include_bytes!("../../assets/app.css"), "text/css; charset=utf-8"),
        _ => return AppError::new(ErrorCode::NotFound, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
