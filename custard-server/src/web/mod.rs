//! The web UI: server-rendered pages (askama templates compiled into the
//! binary, htmx and one small script vendored in `assets/`) over the same
//! logic, store and rules as the API, signed in with a session cookie and
//! protected by CSRF tokens ([`crate::auth::cookie`]).
//!
//! Pages call the plain logic modules ([`crate::accounts`],
//! [`crate::connections`], [`crate::questions`]) with typed inputs, never an
//! API handler, and turn their results into HTML. Only the router (`routes`)
//! uses this module.
//!
//! - [`account`]: sign up, verify, sign in and out, forgot and reset password,
//!   invitations, and the settings page.
//! - [`ask`]: the Ask page (`/`), its streamed answers and feedback.
//! - [`connections`]: the connections wizard, list, schema browser and actions.
//! - [`crate::flash`]: what a page shows once after a form's redirect (a new API key).
//! - [`history`]: past questions and their answers.
//!
//! Forms follow Post/Redirect/Get: one that succeeds answers 303 to a page,
//! and a GET of any URL a form posts to is a page or redirects to one.
//!
//! Every page carries the same security headers ([`page`]); every form and
//! every htmx request carries the CSRF token (a hidden field, or the
//! `X-CSRF-Token` header htmx sends from `<body hx-headers>`).

pub(crate) mod account;
pub(crate) mod ask;
pub(crate) mod chart;
pub(crate) mod connections;
pub(crate) mod highlight;
pub(crate) mod history;

use std::time::Duration;

use askama::Template;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::auth::CurrentUser;
use crate::auth::cookie;
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

/// The pages: HTML for browsers, outside the API document.
pub(crate) fn pages() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/assets/{name}", axum::routing::get(asset))
        .merge(account::routes())
        .merge(ask::routes())
        .merge(connections::routes())
        .merge(history::routes())
}

/// How long a browser stays signed in.
pub(crate) const WEB_SESSION: Duration = Duration::from_secs(12 * 60 * 60);

/// Whether cookies get the `Secure` attribute: when the public URL is https.
pub(crate) fn secure(state: &AppState) -> bool {
    state.config().public_url.starts_with("https://")
}

/// What the shared layout (`base.html`) shows around every page.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The CSRF token for this page's forms and htmx requests.
    pub(crate) csrf_token: String,
    /// The signed-in user's email; `None` on the signed-out pages (no menu).
    pub(crate) email: Option<String>,
    /// The menu entry to mark as current: `ask`, `connections`, `history`,
    /// `settings`, or empty.
    pub(crate) active: &'static str,
}

impl Layout {
    /// The nav entry's `aria-current` attribute value for `name`.
    pub(crate) fn current(&self, name: &str) -> &'static str {
        if self.active == name { "page" } else { "false" }
    }
}

/// The CSRF token of a page and the nonce cookie to set when the browser has none.
#[derive(Debug)]
pub(crate) struct Csrf {
    /// The token to put in forms.
    pub(crate) token: String,
    /// `Set-Cookie` for a new nonce, when the request had none.
    pub(crate) cookie: Option<String>,
}

impl Csrf {
    /// The token for this browser's nonce (a new nonce when it has none).
    pub(crate) fn of(state: &AppState, headers: &HeaderMap) -> Self {
        let (nonce, cookie) = cookie::csrf_nonce(headers, secure(state));
        Csrf { token: cookie::csrf_token(&state.inner().jwt, &nonce), cookie }
    }

    /// The layout of a signed-out page.
    pub(crate) fn signed_out(&self) -> Layout {
        Layout { csrf_token: self.token.clone(), email: None, active: "" }
    }

    /// The layout of a signed-in page with `active` marked in the menu.
    pub(crate) fn signed_in(&self, user: &CurrentUser, active: &'static str) -> Layout {
        Layout { csrf_token: self.token.clone(), email: Some(user.user().email.clone()), active }
    }

    /// The cookies to send with the page.
    pub(crate) fn cookies(&self) -> Vec<String> {
        self.cookie.clone().into_iter().collect()
    }
}

/// Whether a form post (hidden field) or an htmx request (header) carries a
/// valid CSRF token; the error to answer with when not.
pub(crate) fn check_csrf(
    state: &AppState,
    headers: &HeaderMap,
    form_token: Option<&str>,
) -> Result<(), AppError> {
    if cookie::request_has_valid_csrf(&state.inner().jwt, headers, form_token) {
        Ok(())
    } else {
        Err(AppError::new(ErrorCode::Forbidden, "the form expired; reload the page and try again"))
    }
}

/// A form with nothing but its CSRF token (buttons that POST).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct TokenForm {
    /// The page's CSRF token.
    #[serde(default)]
    pub(crate) csrf_token: String,
}

/// The headers every HTML response carries.
fn security_headers(headers: &mut HeaderMap) {
    use axum::http::HeaderValue;
    let set = |headers: &mut HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CACHE_CONTROL, "no-store");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
         connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
}

/// A rendered page (or htmx fragment) with the headers every page carries.
pub(crate) fn page(
    status: StatusCode,
    html: Result<String, askama::Error>,
    cookies: Vec<String>,
) -> Response {
    let html = match html {
        Ok(html) => html,
        Err(e) => return AppError::internal(e).into_response(),
    };
    let mut response =
        (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    security_headers(response.headers_mut());
    cookie::set_cookies(response.headers_mut(), cookies);
    response
}

/// The signed-in user of a page (by the session cookie); anyone else is sent
/// to `/login`. It checks no CSRF token: every page that changes something
/// takes its input through [`CheckedForm`], which does.
#[derive(Debug)]
pub(crate) struct WebUser(pub(crate) CurrentUser);

impl FromRequestParts<AppState> for WebUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = cookie::cookie_value(&parts.headers, cookie::SESSION_COOKIE);
        let user = match token {
            Some(token) => CurrentUser::of_token(state, &token).await.ok(),
            None => None,
        };
        user.map(WebUser).ok_or_else(|| {
            // htmx follows `HX-Redirect` instead of swapping the login page into a fragment.
            if parts.headers.contains_key("hx-request") {
                ([("hx-redirect", "/login")], StatusCode::UNAUTHORIZED).into_response()
            } else if parts.method == axum::http::Method::GET && parts.uri.path() != "/" {
                // Back to the page asked for once signed in.
                let here = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let next =
                    percent_encoding::utf8_percent_encode(here, percent_encoding::NON_ALPHANUMERIC);
                Redirect::to(&format!("/login?next={next}")).into_response()
            } else {
                Redirect::to("/login").into_response()
            }
        })
    }
}

/// A form posted from one of our pages (urlencoded), accepted only with the
/// page's CSRF token: the `csrf_token` field, or the `X-CSRF-Token` header
/// htmx sends. A handler cannot get at the form without the check.
#[derive(Debug)]
pub(crate) struct CheckedForm<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<AppState> for CheckedForm<T> {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let headers = request.headers().clone();
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let token: TokenForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        check_csrf(state, &headers, Some(&token.csrf_token))
            .map_err(|e| WebError(e).into_response())?;
        serde_urlencoded::from_bytes(&body).map(CheckedForm).map_err(|e| {
            let error = AppError::new(ErrorCode::Validation, format!("the form is malformed: {e}"));
            WebError(error).into_response()
        })
    }
}

/// An error answered to a browser: a page that says what happened, with the
/// API's status and code (`data-code`), never internals.
#[derive(Debug)]
pub(crate) struct WebError(pub(crate) AppError);

impl From<AppError> for WebError {
    fn from(error: AppError) -> Self {
        WebError(error)
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(error: crate::store::StoreError) -> Self {
        WebError(error.into())
    }
}

#[derive(Template, Clone)]
#[template(path = "error_page.html")]
struct ErrorPage {
    layout: Layout,
    title: &'static str,
    message: String,
    code: &'static str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.0.code.status();
        let title = match self.0.code {
            ErrorCode::NotFound => "Not found",
            ErrorCode::Forbidden => "Not allowed",
            ErrorCode::Validation => "Check the form",
            ErrorCode::RateLimited | ErrorCode::TooManyQuestions => "Too many attempts",
            ErrorCode::ServerBusy => "The server is busy",
            _ if status.is_server_error() => "Something went wrong",
            _ => "That did not work",
        };
        // Rendered signed out here (no menu, so no CSRF token needed);
        // [`error_pages`] renders it again with the menu for a signed-in browser.
        let layout = Layout { csrf_token: String::new(), email: None, active: "" };
        let message = if self.0.code == ErrorCode::NotFound && self.0.message == "not found" {
            // The store's bare message says no more than the title.
            "Nothing is here: the link may be old, or what it led to was deleted.".to_owned()
        } else {
            sentence(&self.0)
        };
        let error_page = ErrorPage { layout, title, message, code: self.0.code.as_str() };
        let mut response = page(status, error_page.render(), Vec::new());
        response.extensions_mut().insert(error_page);
        if let Some((name, value)) = self.0.retry_after_header()
            && let Ok(value) = axum::http::HeaderValue::from_str(&value)
        {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Middleware: an error page ([`WebError`]) answered to a signed-in browser
/// keeps the menu, so a wrong link is not a dead end. Handlers and the
/// fallback make error pages without knowing who asked; only they pay for the
/// session lookup here.
pub(crate) async fn error_pages(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let session = cookie::cookie_value(request.headers(), cookie::SESSION_COOKIE);
    let headers = session.as_ref().map(|_| request.headers().clone());
    let mut response = next.run(request).await;
    let Some(mut error_page) = response.extensions_mut().remove::<ErrorPage>() else {
        return response;
    };
    let (Some(token), Some(headers)) = (session, headers) else { return response };
    let Ok(user) = CurrentUser::of_token(&state, &token).await else { return response };
    let csrf = Csrf::of(&state, &headers);
    error_page.layout = csrf.signed_in(&user, "");
    let Ok(html) = error_page.render() else { return response };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    cookie::set_cookies(&mut parts.headers, csrf.cookies());
    Response::from_parts(parts, axum::body::Body::from(html))
}

/// A message for people from an API error: the message capitalised as a
/// sentence, or a generic one for errors on our side (never their details).
pub(crate) fn sentence(error: &AppError) -> String {
    if matches!(error.code, ErrorCode::Internal | ErrorCode::StoreUnavailable) {
        return "Something went wrong on our side. Please try again.".to_owned();
    }
    let mut chars = error.message.chars();
    let mut text: String =
        chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect());
    if !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
    text
}

/// Text escaped for HTML and XML content and attribute values (`&`, `<`,
/// `>`, `"`, `'`): for markup built outside templates (charts, highlighting).
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// Milliseconds for people: `42 ms`.
pub(crate) fn duration_text(ms: f64) -> String {
    format!("{ms:.0} ms")
}

/// A moment for people, in UTC: `2026-11-25 14:03 UTC`.
pub(crate) fn time_text(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A moment as a `<time>` element for templates (`{{ at|safe }}`): the UTC
/// text of [`time_text`] for pages read without script, which the page script
/// rewrites in the browser's time zone, as "3 minutes ago" when `relative`
/// (kept current while the page is open), with the exact time as its title.
#[derive(Debug, Clone)]
pub(crate) struct LocalTime {
    at: chrono::DateTime<chrono::Utc>,
    relative: bool,
}

impl LocalTime {
    /// A date and time (`5 Dec 2026, 14:03` in the browser's zone).
    pub(crate) fn exact(at: chrono::DateTime<chrono::Utc>) -> Self {
        LocalTime { at, relative: false }
    }

    /// How long ago or until (`3 minutes ago`, `in 2 days`).
    pub(crate) fn relative(at: chrono::DateTime<chrono::Utc>) -> Self {
        LocalTime { at, relative: true }
    }
}

impl std::fmt::Display for LocalTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let iso = self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let text = time_text(&self.at);
        let style = if self.relative { "relative" } else { "exact" };
        // Both strings are digits, letters and punctuation of our own making.
        write!(f, r#"<time datetime="{iso}" data-show="{style}" title="{text}">{text}</time>"#)
    }
}

/// `GET /assets/{name}`: the stylesheet, the script and vendored htmx, compiled in.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match name.as_str() {
        "app.css" => (include_bytes!("../../assets/app.css"), "text/css; charset=utf-8"),
        "app.js" => (include_bytes!("../../assets/app.js"), "text/javascript; charset=utf-8"),
        "htmx.min.js" => (
            include_bytes!("../../assets/vendor/htmx-2.0.11.min.js"),
            "text/javascript; charset=utf-8",
        ),
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
