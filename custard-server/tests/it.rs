//! The HTTP API driven in process through `app(state)`, email through a real
//! SMTP exchange into an in-test sink, and one test against the real binary.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use clap::Parser;
use custard_server::config::ServerConfig;
use custard_server::rate_limit::Limits;
use custard_server::{AppState, app};
use custard_testkit::smtp_sink::SmtpSink;
use serde_json::{Value, json};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";

/// Other sessions signed out, verification sent again, users in no
/// organisation, invitations sent again, the organisation deleted.
#[path = "it/accounts.rs"]
mod accounts;

/// The server on a PostgreSQL store that goes away and comes back.
#[path = "it/store.rs"]
mod store;

struct Server {
    app: Router,
    state: AppState,
    sink: SmtpSink,
    _dir: tempfile::TempDir,
}

async fn server_with(limits: Limits) -> Server {
    server_with_flags(limits, &[]).await
}

/// A server with `flags` on top of a fresh data dir and the SMTP sink.
async fn server_with_flags(limits: Limits, flags: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SmtpSink::start().await;
    let smtp = sink.url();
    let mut args = vec![
        "custard-server",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--smtp-url",
        &smtp,
    ];
    args.extend_from_slice(flags);
    let config = ServerConfig::parse_from(args);
    let state = AppState::open_with_limits(config, limits).await.expect("state");
    Server { app: app(state.clone()), state, sink, _dir: dir }
}

async fn server() -> Server {
    server_with(Limits { per_ip: 1000, per_account: 1000, replenish: Duration::from_millis(1) })
        .await
}

impl Server {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string());
        self.raw(method, path, token, body.as_deref()).await
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let (status, _, value) = self.with_headers(method, path, token, body).await;
        (status, value)
    }

    /// One API call: status, headers and JSON body (`Null` when not JSON).
    async fn with_headers(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .expect("request");
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn signup(&self, email: &str, org: &str) -> Value {
        let body = json!({"email": email, "password": PASSWORD, "first_name": "Ada", "last_name": "Lovelace", "organization_name": org});
        let (status, reply) = self.call("POST", "/api/v1/auth/signup", None, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        reply
    }

    /// The token of the newest email's link to `path`.
    async fn token_from_email(&self, count: usize, path: &str) -> String {
        let mails = self.sink.wait_for(count, Duration::from_secs(10)).await;
        let mail = mails.last().expect("an email");
        let body = mail.body();
        let start =
            body.find(&format!("{path}?token=")).expect("the link") + path.len() + "?token=".len();
        let token: String = body[start..].chars().take_while(|c| !c.is_whitespace()).collect();
        percent_decode(&token)
    }

    /// Signs up, verifies through the emailed link and logs in: (user id, access token).
    async fn verified_user(&self, email: &str, org: &str, mails_before: usize) -> (String, String) {
        let user = self.signup(email, org).await;
        let token = self.token_from_email(mails_before + 1, "/verify-email").await;
        let (status, _) =
            self.call("GET", &format!("/api/v1/auth/verify-email?token={token}"), None, None).await;
        assert_eq!(status, StatusCode::OK);
        let access = self.login(email, PASSWORD).await;
        (user["user"]["id"].as_str().expect("id").to_owned(), access)
    }

    async fn login(&self, email: &str, password: &str) -> String {
        let (status, reply) = self
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["token_type"], "bearer");
        reply["access_token"].as_str().expect("token").to_owned()
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<none>")
}

/// The longest one of the tests below may take.
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Runs a test body under [`TEST_LIMIT`].
async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("the test finished within its time limit");
}

/// The `Retry-After` seconds of a response, which every limit sends.
fn retry_after(headers: &axum::http::HeaderMap) -> u64 {
    let value = headers.get("retry-after").expect("a Retry-After header");
    value.to_str().expect("ASCII").parse().expect("whole seconds")
}

#[tokio::test]
async fn health_and_status_answer_without_secrets() {
    let s = server().await;
    let (status, body) = s.call("GET", "/health", None, None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = s.call("GET", "/status", None, None).await;
    assert_eq!((status, body["store"].as_str()), (StatusCode::OK, Some("ok")));
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let (status, body) = s.call("GET", "/api/v1/nope", None, None).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn signup_email_verify_login_profile_logout() {
    let s = server().await;
    let reply = s.signup("ada@example.com", "Analytical Engines").await;
    assert_eq!(reply["user"]["email_verified"], false);
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "ada@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "email_not_verified"));

    let token = s.token_from_email(1, "/verify-email").await;
    let mail = &s.sink.messages()[0];
    assert_eq!(mail.to, ["ada@example.com"]);
    let (status, _) =
        s.call("POST", "/api/v1/auth/verify-email", None, Some(json!({"token": token}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) =
        s.call("POST", "/api/v1/auth/verify-email", None, Some(json!({"token": token}))).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_token"), "single use");

    let access = s.login("ADA@example.com ", PASSWORD).await;
    let (status, body) = s.call("GET", "/api/v1/auth/profile", Some(&access), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["user"]["email"].as_str(), body["role"].as_str()),
        (Some("ada@example.com"), Some("owner"))
    );
    let (status, body) = s
        .call("PUT", "/api/v1/auth/profile", Some(&access), Some(json!({"first_name": "Augusta"})))
        .await;
    assert_eq!((status, body["user"]["first_name"].as_str()), (StatusCode::OK, Some("Augusta")));
    let (status, body) = s.call("GET", "/api/v1/org", Some(&access), None).await;
    assert_eq!((status, body["name"].as_str()), (StatusCode::OK, Some("Analytical Engines")));

    let (status, _) = s.call("POST", "/api/v1/auth/logout", Some(&access), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s.call("GET", "/api/v1/auth/profile", Some(&access), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "logout revokes the token"
    );
}

#[tokio::test]
async fn bad_input_gets_clear_4xx_errors() {
    let s = server().await;
    let cases: &[(&str, StatusCode, &str)] = &[
        ("{not json", StatusCode::BAD_REQUEST, "invalid_json"),
        ("{\"email\": \"x@example.com\"}", StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
        (
            "{\"email\": \"nope\", \"password\": \"correct horse battery\", \"first_name\": \"A\", \"last_name\": \"B\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            "{\"email\": \"p@example.com\", \"password\": \"password\", \"first_name\": \"A\", \"last_name\": \"B\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            "{\"email\": \"p@example.com\", \"password\": \"short\", \"first_name\": \"A\", \"last_name\": \"B\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
    ];
    for (body, status, want) in cases {
        let (got, reply) = s.raw("POST", "/api/v1/auth/signup", None, Some(body)).await;
        assert_eq!((got, code(&reply)), (*status, *want), "{body}");
    }
    let huge = format!("{{\"email\": \"{}\"}}", "x".repeat(200_000));
    let (status, body) = s.raw("POST", "/api/v1/auth/signup", None, Some(&huge)).await;
    assert_eq!((status, code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
    let (status, body) = s.raw("GET", "/api/v1/auth/signup", None, None).await;
    assert_eq!((status, code(&body)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
}

#[tokio::test]
async fn forged_and_expired_tokens_are_rejected() {
    let s = server().await;
    let (_, access) = s.verified_user("jwt@example.com", "Tokens", 0).await;
    let parts: Vec<&str> = access.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload: Value =
        serde_json::from_slice(&b64.decode(parts[1]).expect("payload")).expect("json");
    let with = |header: Value, payload: &Value, signature: &str| {
        format!(
            "{}.{}.{signature}",
            b64.encode(header.to_string()),
            b64.encode(payload.to_string())
        )
    };
    let mut other_aud = payload.clone();
    other_aud["aud"] = json!("someone-else");
    let mut expired = payload.clone();
    expired["exp"] = json!(1);
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let forged = [
        with(json!({"alg": "none", "typ": "JWT"}), &payload, ""),
        with(hs256.clone(), &other_aud, parts[2]),
        with(hs256.clone(), &expired, parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], "A".repeat(parts[2].len())),
        "not-a-token".to_owned(),
    ];
    for token in &forged {
        let (status, body) = s.call("GET", "/api/v1/auth/profile", Some(token), None).await;
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"), "{token}");
    }
    let (status, _) = s.call("GET", "/api/v1/auth/profile", Some(&access), None).await;
    assert_eq!(status, StatusCode::OK, "the genuine token still works");
}

#[tokio::test]
async fn password_reset_is_single_use_and_revokes_sessions() {
    let s = server().await;
    let (_, access) = s.verified_user("reset@example.com", "Resets", 0).await;
    let known = s
        .call(
            "POST",
            "/api/v1/auth/forgot-password",
            None,
            Some(json!({"email": "reset@example.com"})),
        )
        .await;
    let unknown = s
        .call(
            "POST",
            "/api/v1/auth/forgot-password",
            None,
            Some(json!({"email": "nobody@example.com"})),
        )
        .await;
    assert_eq!(known, unknown, "the same answer for known and unknown emails");
    assert_eq!(known.0, StatusCode::ACCEPTED);
    let token = s.token_from_email(2, "/reset-password").await;
    let reset = json!({"token": token, "new_password": "a brand new passphrase"});
    let (status, _) =
        s.call("POST", "/api/v1/auth/reset-password", None, Some(reset.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.call("POST", "/api/v1/auth/reset-password", None, Some(reset)).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_token"), "single use");
    let (status, _) = s.call("GET", "/api/v1/auth/profile", Some(&access), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the reset revoked the old session");
    s.login("reset@example.com", "a brand new passphrase").await;
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "reset@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let s = server_with(Limits { per_ip: 100, per_account: 3, replenish: Duration::from_secs(60) })
        .await;
    let wrong = json!({"email": "victim@example.com", "password": "guess guess guess"});
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(s.call("POST", "/api/v1/auth/login", None, Some(wrong.clone())).await.0);
    }
    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(statuses[3..], [StatusCode::TOO_MANY_REQUESTS; 2]);
}

/// Every organisation-scoped endpoint, called by a user of organisation A on
/// resources of organisation B, answers 404 (or only shows A's data).
#[tokio::test]
async fn tenants_are_isolated() {
    let s = server().await;
    let (_a_id, a) = s.verified_user("a@example.com", "Org A", 0).await;
    let (b_id, b) = s.verified_user("b@example.com", "Org B", 1).await;
    let (_, _, invitation) = invite(&s, &b, "guest@example.com", "member").await;
    let b_invitation = invitation["id"].as_str().expect("an invitation id");
    let cases: &[(&str, String, Option<Value>)] = &[
        ("PATCH", format!("/api/v1/org/members/{b_id}"), Some(json!({"role": "member"}))),
        ("DELETE", format!("/api/v1/org/members/{b_id}"), None),
        ("DELETE", format!("/api/v1/org/invitations/{b_invitation}"), None),
    ];
    for (method, path, body) in cases {
        let (status, reply) = s.call(method, path, Some(&a), body.clone()).await;
        assert_eq!((status, code(&reply)), (StatusCode::NOT_FOUND, "not_found"), "{method} {path}");
    }
    let (_, members) = s.call("GET", "/api/v1/org/members", Some(&a), None).await;
    let emails: Vec<&str> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["email"].as_str())
        .collect();
    assert_eq!(emails, ["a@example.com"]);
    let (_, org) = s.call("GET", "/api/v1/org", Some(&a), None).await;
    assert_eq!(org["name"], "Org A");
    let (_, invitations) = s.call("GET", "/api/v1/org/invitations", Some(&a), None).await;
    assert_eq!(invitations, json!({"invitations": []}));
    let (_, invitations) = s.call("GET", "/api/v1/org/invitations", Some(&b), None).await;
    assert_eq!(listed_emails(&invitations), ["guest@example.com"], "B's invitation stands");
    let (status, _) = s.call("GET", "/api/v1/auth/profile", Some(&b), None).await;
    assert_eq!(status, StatusCode::OK, "B is untouched");
}

#[tokio::test]
async fn invitations_join_the_organisation_and_the_last_owner_stays() {
    let s = server().await;
    let (owner_id, owner) = s.verified_user("owner@example.com", "Team", 0).await;
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/org/invitations",
            Some(&owner),
            Some(json!({"email": "new@example.com", "role": "member"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = s.token_from_email(2, "/accept-invitation").await;
    let join = json!({"email": "new@example.com", "password": PASSWORD, "first_name": "New", "last_name": "Member", "invitation_token": token});
    let (status, _) = s.call("POST", "/api/v1/auth/signup", None, Some(join)).await;
    assert_eq!(status, StatusCode::CREATED);
    let member = s.login("new@example.com", PASSWORD).await;
    let (_, org) = s.call("GET", "/api/v1/org", Some(&member), None).await;
    assert_eq!((org["name"].as_str(), org["role"].as_str()), (Some("Team"), Some("member")));
    let (status, _) =
        s.call("DELETE", &format!("/api/v1/org/members/{owner_id}"), Some(&member), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "members cannot remove anyone");
    let (status, body) =
        s.call("DELETE", &format!("/api/v1/org/members/{owner_id}"), Some(&owner), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
        "the last owner stays"
    );
}

/// One HTTP/1.1 request over a plain socket; returns the status code.
async fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

async fn start_binary(addr: &str, dir: &std::path::Path) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_custard-server"))
        .args(["--bind", addr, "--data-dir"])
        .arg(dir)
        .env("CUSTARD_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start custard-server");
    for _ in 0..100 {
        if http(addr, "GET", "/health", "").await == Some(200) {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("custard-server did not answer on {addr}");
}

/// Every sign-up the server confirmed is still there after SIGKILL and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_confirmed_is_lost_on_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = start_binary(&addr, dir.path()).await;
    let mut confirmed = Vec::new();
    for i in 0..5 {
        let email = format!("crash{i}@example.com");
        let body =
            json!({"email": email, "password": PASSWORD, "first_name": "C", "last_name": "D"})
                .to_string();
        if http(&addr, "POST", "/api/v1/auth/signup", &body).await == Some(201) {
            confirmed.push(email);
        }
    }
    assert_eq!(confirmed.len(), 5);
    let pid = child.id().expect("pid").to_string();
    assert!(
        std::process::Command::new("kill").args(["-KILL", &pid]).status().expect("kill").success()
    );
    let _ = child.wait().await;

    let mut restarted = start_binary(&addr, dir.path()).await;
    for email in &confirmed {
        // The account is there: its password is right, its email not verified
        // (an unknown email would answer 401).
        let login = json!({"email": email, "password": PASSWORD}).to_string();
        assert_eq!(
            http(&addr, "POST", "/api/v1/auth/login", &login).await,
            Some(403),
            "{email} survived the crash"
        );
    }
    let _ = restarted.kill().await;
}

// ---------------------------------------------------------------------------
// Web pages: session cookie and CSRF

/// A page request with cookies and optional form body; (status, headers, body text).
async fn web(
    s: &Server,
    method: &str,
    path: &str,
    cookies: &str,
    form: Option<&str>,
    csrf_header: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(path);
    if !cookies.is_empty() {
        request = request.header("cookie", cookies);
    }
    if let Some(token) = csrf_header {
        request = request.header("x-csrf-token", token);
    }
    let body = match form {
        Some(form) => {
            request = request.header("content-type", "application/x-www-form-urlencoded");
            Body::from(form.to_owned())
        }
        None => Body::empty(),
    };
    let response = s.app.clone().oneshot(request.body(body).expect("request")).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, headers, String::from_utf8_lossy(&bytes).into_owned())
}

/// The `name=value` part of the response's `Set-Cookie` for `name`, and the whole header.
fn set_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<(String, String)> {
    headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        let pair = v.split(';').next()?.trim();
        pair.starts_with(&format!("{name}=")).then(|| (pair.to_owned(), v.to_owned()))
    })
}

/// The hidden CSRF field's value in a page.
fn csrf_field(html: &str) -> String {
    let start = html.find("name=\"csrf_token\" value=\"").expect("a CSRF field") + 25;
    html[start..].chars().take_while(|c| *c != '"').collect()
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn web_sign_in_uses_a_session_cookie_and_csrf() {
    let s = server().await;
    s.verified_user("web@example.com", "Web org", 0).await;

    // Signed out: the home page sends the browser to the sign-in page.
    let (status, headers, _) = web(&s, "GET", "/", "", None, None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/login");

    let (status, headers, html) = web(&s, "GET", "/login", "", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for name in ["content-security-policy", "x-frame-options", "x-content-type-options"] {
        assert!(headers.contains_key(name), "{name} is set");
    }
    let (csrf_cookie, raw) = set_cookie(&headers, "custard_csrf").expect("a CSRF cookie");
    assert!(raw.contains("HttpOnly") && raw.contains("SameSite=Lax"), "{raw}");
    let token = csrf_field(&html);

    // A form without its token (a cross-site post) is refused; a wrong password says so.
    let no_token = form_encode(&[("email", "web@example.com"), ("password", PASSWORD)]);
    let (status, _, _) = web(&s, "POST", "/login", &csrf_cookie, Some(&no_token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let other_cookie = "custard_csrf=someone-elses-nonce";
    let stolen = form_encode(&[
        ("email", "web@example.com"),
        ("password", PASSWORD),
        ("csrf_token", &token),
    ]);
    let (status, _, _) = web(&s, "POST", "/login", other_cookie, Some(&stolen), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a token only fits its own cookie");
    let wrong =
        form_encode(&[("email", "web@example.com"), ("password", "nope"), ("csrf_token", &token)]);
    let (status, _, html) = web(&s, "POST", "/login", &csrf_cookie, Some(&wrong), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("Wrong email or password"), "{html}");

    let (status, headers, _) = web(&s, "POST", "/login", &csrf_cookie, Some(&stolen), None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/");
    let (session, raw) = set_cookie(&headers, "custard_session").expect("a session cookie");
    assert!(raw.contains("HttpOnly") && raw.contains("SameSite=Lax"), "{raw}");
    assert!(!raw.contains("Secure"), "not over plain http: {raw}");
    // Signing in replaces the CSRF nonce: one known before (or planted) is worthless after.
    let (new_csrf, _) = set_cookie(&headers, "custard_csrf").expect("a new CSRF nonce");
    assert_ne!(new_csrf, csrf_cookie, "the nonce changed at sign-in");
    let cookies = format!("{new_csrf}; {session}");

    let (status, _, html) = web(&s, "GET", "/", &cookies, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let stale_token = token;
    let token = csrf_field(&html);
    assert_ne!(token, stale_token);
    assert!(
        html.contains("web@example.com") && html.contains("There is no connection yet"),
        "{html}"
    );

    // The cookie also signs API calls, but a change needs the CSRF header too.
    let body = r#"{"name":"Shop","db_type":"postgresql"}"#;
    let request = |csrf: Option<&str>| {
        let mut r = Request::builder()
            .method("POST")
            .uri("/api/v1/connections")
            .header("cookie", &cookies)
            .header("content-type", "application/json");
        if let Some(csrf) = csrf {
            r = r.header("x-csrf-token", csrf);
        }
        r.body(Body::from(body)).expect("request")
    };
    let refused = s.app.clone().oneshot(request(None)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refused = s.app.clone().oneshot(request(Some(&stale_token))).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "the token of the old nonce");
    let created = s.app.clone().oneshot(request(Some(&token))).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let (_, _, html) = web(&s, "GET", "/", &cookies, None, None).await;
    assert!(html.contains("Shop") && html.contains("pending"), "{html}");

    // Signing out revokes the session: the old cookie no longer works.
    let out = form_encode(&[("csrf_token", &token)]);
    let (status, headers, _) = web(&s, "POST", "/logout", &cookies, Some(&out), None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        set_cookie(&headers, "custard_session").is_some_and(|(_, raw)| raw.contains("Max-Age=0"))
    );
    let (status, headers, _) = web(&s, "GET", "/", &cookies, None, None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/login");
}

// ---------------------------------------------------------------------------
// Account pages: sign up, verify, reset, invitations and settings

/// A browser of the in-process server: keeps the cookies it is given, like a browser.
struct Visitor<'a> {
    s: &'a Server,
    jar: Vec<(String, String)>,
}

impl<'a> Visitor<'a> {
    fn new(s: &'a Server) -> Self {
        Visitor { s, jar: Vec::new() }
    }

    fn cookies(&self) -> String {
        self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn has_cookie(&self, name: &str) -> bool {
        self.jar.iter().any(|(k, _)| k == name)
    }

    fn keep(&mut self, headers: &axum::http::HeaderMap) {
        for raw in headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            let Some((name, value)) = raw.split(';').next().and_then(|p| p.trim().split_once('='))
            else {
                continue;
            };
            self.jar.retain(|(k, _)| k != name);
            if !raw.contains("Max-Age=0") {
                self.jar.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    async fn get(&mut self, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let reply = web(self.s, "GET", path, &self.cookies(), None, None).await;
        self.keep(&reply.1);
        reply
    }

    async fn post(
        &mut self,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let form = form_encode(pairs);
        let reply = web(self.s, "POST", path, &self.cookies(), Some(&form), None).await;
        self.keep(&reply.1);
        reply
    }

    /// Opens a form page: checks it is a page with the security headers and a
    /// CSRF field, and returns the field's token.
    async fn form(&mut self, path: &str) -> String {
        let (status, headers, html) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert_page_headers(&headers);
        assert!(self.has_cookie("custard_csrf"), "{path} leaves a CSRF cookie");
        csrf_field(&html)
    }

    /// Posts `pairs` without a CSRF token, then with a token of another
    /// browser's nonce: both are refused with 403.
    async fn assert_csrf_refused(&mut self, path: &str, pairs: &[(&str, &str)]) {
        let (status, _, html) = self.post(path, pairs).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} without a token: {html}");
        let mut other = Visitor::new(self.s);
        let foreign = other.form("/login").await;
        let mut forged = pairs.to_vec();
        forged.push(("csrf_token", &foreign));
        let (status, _, html) = self.post(path, &forged).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} with another browser's token: {html}");
    }

    /// Signs in through `/login`.
    async fn sign_in(&mut self, email: &str, password: &str) {
        let token = self.form("/login").await;
        let (status, headers, html) = self
            .post("/login", &[("email", email), ("password", password), ("csrf_token", &token)])
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
        assert_eq!(headers["location"], "/");
        assert!(self.has_cookie("custard_session"));
    }
}

fn assert_page_headers(headers: &axum::http::HeaderMap) {
    for name in ["content-security-policy", "x-frame-options", "x-content-type-options"] {
        assert!(headers.contains_key(name), "{name} is set");
    }
    assert_eq!(headers["cache-control"], "no-store");
}

/// Owned form pairs as the borrowed pairs [`Visitor::post`] takes.
fn as_pairs<'p>(pairs: &'p [(&'static str, String)]) -> Vec<(&'static str, &'p str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The newest email's text.
async fn newest_mail(s: &Server, count: usize) -> String {
    let mails = s.sink.wait_for(count, Duration::from_secs(10)).await;
    mails.last().expect("an email").body().to_owned()
}

/// Whether the API accepts these credentials.
async fn can_log_in(s: &Server, email: &str, password: &str) -> bool {
    let body = json!({"email": email, "password": password});
    s.call("POST", "/api/v1/auth/login", None, Some(body)).await.0 == StatusCode::OK
}

#[tokio::test]
async fn web_signup_sends_a_link_that_verifies_the_email() {
    let s = server().await;
    let mut v = Visitor::new(&s);
    let token = v.form("/signup").await;
    let (_, _, html) = v.get("/signup").await;
    assert!(html.contains("At least 8 characters"), "the policy hint: {html}");
    let fields = |email: &'static str, first: &'static str, password: &'static str| {
        vec![
            ("first_name", first),
            ("last_name", "Lovelace"),
            ("email", email),
            ("password", password),
            ("organization_name", "Engines"),
        ]
    };
    v.assert_csrf_refused("/signup", &fields("ada@example.com", "Ada", PASSWORD)).await;

    // Problems come back on the form with the input kept, never the password.
    let cases = [
        (
            fields("ada@example.com", "Ada", "Zq9!x"),
            "password",
            "Password rejected: password too short.",
        ),
        (fields("ada@example.com", " ", PASSWORD), "first_name", "First name must be 1 to 100"),
        (fields("not-an-email", "Ada", PASSWORD), "email", "Email is not a valid address."),
    ];
    for (mut pairs, field, message) in cases {
        pairs.push(("csrf_token", &token));
        let (status, headers, html) = v.post("/signup", &pairs).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
        assert_page_headers(&headers);
        assert!(html.contains(message), "{message}: {html}");
        let marked = format!("id=\"{field}\" name=\"{field}\"");
        let input = &html[html.find(&marked).expect("the field")..];
        let input = &input[..input.find('>').expect("the tag's end")];
        assert!(input.contains("aria-invalid=\"true\""), "{input}");
        assert!(input.contains(&format!("{field}-error\"")), "{input}");
        assert!(html.contains(&format!("id=\"{field}-error\"")), "{html}");
        assert!(html.contains("value=\"Lovelace\"") && html.contains("value=\"Engines\""));
        assert!(!html.contains("Zq9!x") && !html.contains(PASSWORD), "no password in the page");
    }
    assert!(s.sink.messages().is_empty(), "nothing was created");

    let mut pairs = fields("ada@example.com", "Ada", PASSWORD);
    pairs.push(("csrf_token", &token));
    // Post/Redirect/Get: the page names the address once; a reload does not
    // sign up again, nor name it.
    let (status, headers, html) = v.post("/signup", &pairs).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(headers["location"], "/signup?sent=1");
    let (status, _, html) = v.get("/signup?sent=1").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Check your email") && html.contains("ada@example.com"), "{html}");
    let (_, _, reloaded) = v.get("/signup?sent=1").await;
    assert!(reloaded.contains("Check your email") && !reloaded.contains("ada@example.com"));
    let mail = newest_mail(&s, 1).await;
    assert!(
        mail.contains("/verify-email?token=") && !mail.contains("/api/v1/auth/verify-email"),
        "the link opens the page: {mail}"
    );
    // Again with the same address: the same page, and an email to the owner instead.
    let (status, headers, _) = v.post("/signup", &pairs).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/signup?sent=1");
    let (status, _, again) = v.get("/signup?sent=1").await;
    assert_eq!((status, again), (StatusCode::OK, html), "the same answer for a taken address");
    let mail = newest_mail(&s, 2).await;
    assert!(mail.contains("already has an account") && mail.contains("/forgot-password"), "{mail}");

    // Not verified yet: signing in says so.
    let login = v.form("/login").await;
    let (status, _, html) = v
        .post(
            "/login",
            &[("email", "ada@example.com"), ("password", PASSWORD), ("csrf_token", &login)],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("Verify your email first"), "{html}");

    let secret = s.token_from_email(1, "/verify-email").await;
    let link = format!(
        "/verify-email?token={}",
        percent_encoding::utf8_percent_encode(&secret, percent_encoding::NON_ALPHANUMERIC)
    );
    let (status, headers, html) = v.get(&link).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_page_headers(&headers);
    assert!(html.contains("Your email is verified") && html.contains("href=\"/login\""), "{html}");
    assert!(!html.contains(&secret), "the token is not shown");
    let (status, _, html) = v.get(&link).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "single use");
    assert!(html.contains("unknown, used or expired"), "{html}");
    let (status, _, _) = v.get("/verify-email").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no token");
    let (status, _, _) = v.get("/verify-email?token=made-up").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    v.sign_in("ada@example.com", PASSWORD).await;
    // Signed in, the (used) link's page offers the way back to Ask.
    let (_, _, html) = v.get("/verify-email?token=made-up").await;
    assert!(html.contains("ada@example.com"), "the signed-in layout: {html}");
}

#[tokio::test]
async fn web_password_reset_changes_the_password_once() {
    let s = server().await;
    let (_, access) = s.verified_user("reset@example.com", "Resets", 0).await;
    let mut v = Visitor::new(&s);
    let token = v.form("/forgot-password").await;
    v.assert_csrf_refused("/forgot-password", &[("email", "reset@example.com")]).await;
    let (status, _, html) =
        v.post("/forgot-password", &[("email", " "), ("csrf_token", &token)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Enter your email address.") && html.contains("aria-invalid=\"true\""));

    // The same answer for unknown and known accounts.
    let (status, headers, _) = v
        .post("/forgot-password", &[("email", "nobody@example.com"), ("csrf_token", &token)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/forgot-password?sent=1");
    let (status, _, unknown) = v.get("/forgot-password?sent=1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, _) =
        v.post("/forgot-password", &[("email", "reset@example.com"), ("csrf_token", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/forgot-password?sent=1");
    let (status, _, known) = v.get("/forgot-password?sent=1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(unknown.contains("If an account exists for nobody@example.com, we sent a reset link"));
    assert_eq!(unknown.replace("nobody@example.com", "reset@example.com"), known);
    let secret = s.token_from_email(2, "/reset-password").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.sink.messages().len(), 2, "only the accepted request sent an email");

    let (status, _, _) = v.get("/reset-password").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no token");
    let path = format!(
        "/reset-password?token={}",
        percent_encoding::utf8_percent_encode(&secret, percent_encoding::NON_ALPHANUMERIC)
    );
    let csrf = v.form(&path).await;
    let (_, _, html) = v.get(&path).await;
    assert!(html.contains("name=\"token\""), "the token travels in the form: {html}");
    let new = "a brand new passphrase";
    let reset = |new: &'static str, confirm: &'static str, csrf: &str| {
        let mut pairs = vec![
            ("token", secret.clone()),
            ("new_password", new.into()),
            ("confirm_password", confirm.into()),
        ];
        if !csrf.is_empty() {
            pairs.push(("csrf_token", csrf.to_owned()));
        }
        pairs
    };
    v.assert_csrf_refused("/reset-password", &as_pairs(&reset(new, new, ""))).await;
    let (status, _, html) =
        v.post("/reset-password", &as_pairs(&reset(new, "something else", &csrf))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("do not match") && html.contains("id=\"confirm_password-error\""));
    let (status, _, html) =
        v.post("/reset-password", &as_pairs(&reset("short", "short", &csrf))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("Password rejected: password too short."), "{html}");
    assert!(can_log_in(&s, "reset@example.com", PASSWORD).await, "nothing changed yet");

    let (status, headers, html) =
        v.post("/reset-password", &as_pairs(&reset(new, new, &csrf))).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(headers["location"], "/reset-password?done=1");
    assert!(
        set_cookie(&headers, "custard_session").is_some_and(|(_, raw)| raw.contains("Max-Age=0"))
    );
    let (status, _, html) = v.get("/reset-password?done=1").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Your password was changed") && html.contains("href=\"/login\""));
    let (status, _, html) = v.post("/reset-password", &as_pairs(&reset(new, new, &csrf))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "single use");
    assert!(html.contains("unknown, used or expired") && html.contains("/forgot-password"));
    assert!(can_log_in(&s, "reset@example.com", new).await);
    assert!(!can_log_in(&s, "reset@example.com", PASSWORD).await);
    let (status, _) = s.call("GET", "/api/v1/auth/profile", Some(&access), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the reset signed out every session");
}

/// The query-string form of a token.
fn encoded(token: &str) -> String {
    percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn web_settings_change_the_name_and_the_password() {
    let s = server().await;
    let (_, _) = s.verified_user("me@example.com", "My team", 0).await;
    let mut signed_out = Visitor::new(&s);
    let (status, headers, _) = signed_out.get("/settings").await;
    assert_eq!(
        (status, &headers["location"]),
        (StatusCode::SEE_OTHER, &"/login?next=%2Fsettings".parse().unwrap()),
        "to sign in, then back"
    );
    let (status, headers, _) = signed_out.post("/settings/profile", &[("first_name", "X")]).await;
    assert_eq!((status, &headers["location"]), (StatusCode::SEE_OTHER, &"/login".parse().unwrap()));

    let mut v = Visitor::new(&s);
    v.sign_in("me@example.com", PASSWORD).await;
    let csrf = v.form("/settings").await;
    let (_, _, html) = v.get("/settings").await;
    assert!(html.contains("href=\"/settings\" aria-current=\"page\""), "the menu marks Settings");
    for text in ["value=\"Ada\"", "value=\"Lovelace\"", "me@example.com", "My team", "owner"] {
        assert!(html.contains(text), "{text}: {html}");
    }
    assert!(!html.contains("password_hash") && !html.contains("$argon2"), "no secrets");

    // Profile: refused without the token, errors keep the input, success redirects.
    v.assert_csrf_refused("/settings/profile", &[("first_name", "Evil"), ("last_name", "X")]).await;
    let (status, _, html) = v
        .post(
            "/settings/profile",
            &[("first_name", " "), ("last_name", "Byron"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("First name must be 1 to 100 characters."), "{html}");
    assert!(
        html.contains("value=\"Byron\"") && html.contains("aria-describedby=\"first_name-error\"")
    );
    let (status, headers, _) = v
        .post(
            "/settings/profile",
            &[("first_name", "Augusta"), ("last_name", "King"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/settings?done=profile#profile");
    let (_, _, html) = v.get("/settings?done=profile").await;
    assert!(html.contains("Your name is saved.") && html.contains("value=\"Augusta\""), "{html}");
    assert!(!html.contains("Evil"), "the refused form changed nothing");

    // Password: mismatch, wrong current and weak passwords are refused with the message.
    let new = "an entirely new passphrase";
    v.assert_csrf_refused(
        "/settings/password",
        &[("current_password", PASSWORD), ("new_password", new), ("confirm_password", new)],
    )
    .await;
    let cases = [
        (
            (PASSWORD, new, "other words"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "confirm_password",
            "do not match",
        ),
        (
            ("wrong guess here", new, new),
            StatusCode::UNAUTHORIZED,
            "current_password",
            "The current password is wrong.",
        ),
        (
            (PASSWORD, "short", "short"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "new_password",
            "Password rejected: password too short.",
        ),
    ];
    for ((current, fresh, confirm), status, field, message) in cases {
        let pairs = [
            ("current_password", current),
            ("new_password", fresh),
            ("confirm_password", confirm),
            ("csrf_token", &csrf),
        ];
        let (got, _, html) = v.post("/settings/password", &pairs).await;
        assert_eq!(got, status, "{html}");
        assert!(html.contains(message), "{message}: {html}");
        assert!(html.contains(&format!("id=\"{field}-error\"")), "{field}: {html}");
        assert!(!html.contains(PASSWORD) && !html.contains(new), "no password in the page");
    }
    assert!(can_log_in(&s, "me@example.com", PASSWORD).await, "nothing changed yet");
    let pairs = [
        ("current_password", PASSWORD),
        ("new_password", new),
        ("confirm_password", new),
        ("csrf_token", &csrf),
    ];
    let (status, headers, _) = v.post("/settings/password", &pairs).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/settings?done=password#password");
    let (status, _, html) = v.get("/settings?done=password").await;
    assert_eq!(status, StatusCode::OK, "this browser stays signed in");
    assert!(html.contains("Your password is changed."), "{html}");
    assert!(can_log_in(&s, "me@example.com", new).await);
    assert!(!can_log_in(&s, "me@example.com", PASSWORD).await);
}

#[tokio::test]
async fn web_invitations_members_and_roles() {
    let s = server().await;
    let (owner_id, owner_token) = s.verified_user("boss@example.com", "Team", 0).await;
    let mut owner = Visitor::new(&s);
    owner.sign_in("boss@example.com", PASSWORD).await;
    let csrf = owner.form("/settings").await;
    let (_, _, html) = owner.get("/settings").await;
    assert!(html.contains("action=\"/settings/invitations\""), "owners may invite");

    owner
        .assert_csrf_refused(
            "/settings/invitations",
            &[("email", "new@example.com"), ("role", "member")],
        )
        .await;
    let (status, _, html) = owner
        .post(
            "/settings/invitations",
            &[("email", "not an email"), ("role", "member"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("Email is not a valid address.") && html.contains("value=\"not an email\"")
    );
    assert!(html.contains("aria-describedby=\"invite_email-error\""), "{html}");
    assert_eq!(s.sink.messages().len(), 1, "no invitation went out");
    let (status, headers, _) = owner
        .post(
            "/settings/invitations",
            &[("email", "new@example.com"), ("role", "member"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/settings?done=invited#invitations");
    let mail = newest_mail(&s, 2).await;
    assert!(mail.contains("/accept-invitation?token="), "{mail}");
    let secret = s.token_from_email(2, "/accept-invitation").await;
    let (_, _, html) = owner.get("/settings?done=invited").await;
    assert!(html.contains("The invitation is on its way."), "{html}");
    assert!(!html.contains(&secret), "the token is not shown");

    // A visitor signs up through the invitation: the email must be the invited one.
    let mut member = Visitor::new(&s);
    let path = format!("/accept-invitation?token={}", encoded(&secret));
    let token = member.form(&path).await;
    let (_, _, html) = member.get(&path).await;
    assert!(html.contains("Create account and join") && html.contains("/login?next="), "{html}");
    let (status, _, _) = member.get("/accept-invitation").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no token");
    let join = |email: &'static str| {
        vec![
            ("token", secret.clone()),
            ("first_name", "New".to_owned()),
            ("last_name", "Member".to_owned()),
            ("email", email.to_owned()),
            ("password", PASSWORD.to_owned()),
        ]
    };
    member.assert_csrf_refused("/accept-invitation", &as_pairs(&join("new@example.com"))).await;
    // The address is the invited one, fixed on the page and whatever the form says.
    assert!(html.contains("value=\"new@example.com\" readonly"), "{html}");
    let mut other = join("other@example.com");
    other.push(("csrf_token", token.clone()));
    let (status, headers, html) = member.post("/accept-invitation", &as_pairs(&other)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(headers["location"], "/", "signed in and sent to Ask");
    assert!(member.has_cookie("custard_session"));
    assert!(can_log_in(&s, "new@example.com", PASSWORD).await, "the invited address");
    assert!(!can_log_in(&s, "other@example.com", PASSWORD).await, "not the typed one");
    let member_csrf = member.form("/settings").await;
    let (_, _, html) = member.get("/settings").await;
    assert!(html.contains("Team") && html.contains("Your role: member."), "{html}");
    assert!(!html.contains("/settings/invitations") && !html.contains("/remove\""), "no controls");

    // A member's posts are refused by the API's rules; nothing changes.
    let member_id = {
        let (_, list) = s.call("GET", "/api/v1/org/members", Some(&owner_token), None).await;
        let found = list["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["email"] == "new@example.com");
        found.expect("the new member")["id"].as_str().expect("id").to_owned()
    };
    let refused = [
        (format!("/settings/members/{owner_id}/role"), vec![("role", "member")]),
        (format!("/settings/members/{member_id}/role"), vec![("role", "owner")]),
        (format!("/settings/members/{owner_id}/remove"), vec![]),
        ("/settings/invitations".to_owned(), vec![("email", "x@example.com"), ("role", "admin")]),
    ];
    for (path, mut pairs) in refused {
        pairs.push(("csrf_token", &member_csrf));
        let (status, _, html) = member.post(&path, &pairs).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {html}");
        assert!(html.contains("Only owners and admins may do this."), "{path}: {html}");
    }
    let roles = |list: &Value| -> Vec<(String, String)> {
        list["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (m["email"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let (_, list) = s.call("GET", "/api/v1/org/members", Some(&owner_token), None).await;
    assert_eq!(
        roles(&list),
        [("boss@example.com".into(), "owner".into()), ("new@example.com".into(), "member".into())]
    );
    assert_eq!(s.sink.messages().len(), 2, "the member's invitation was not sent");

    // The owner manages: the last owner stays, roles change, members go.
    let (_, _, html) = owner.get("/settings").await;
    let remove = format!("action=\"/settings/members/{member_id}/remove\"");
    assert!(html.contains(&remove), "{html}");
    assert!(
        html.contains("<details>") && html.contains("Remove new@example.com"),
        "confirmation step"
    );
    let (status, _, html) = owner
        .post(
            &format!("/settings/members/{owner_id}/role"),
            &[("role", "member"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("An organisation must keep at least one owner."), "{html}");
    owner
        .assert_csrf_refused(&format!("/settings/members/{member_id}/role"), &[("role", "admin")])
        .await;
    let (status, headers, _) = owner
        .post(
            &format!("/settings/members/{member_id}/role"),
            &[("role", "admin"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(
        (status, &headers["location"]),
        (StatusCode::SEE_OTHER, &"/settings?done=role#members".parse().unwrap())
    );
    let (_, list) = s.call("GET", "/api/v1/org/members", Some(&owner_token), None).await;
    assert_eq!(roles(&list)[1].1, "admin");
    owner.assert_csrf_refused(&format!("/settings/members/{member_id}/remove"), &[]).await;
    let (status, headers, _) = owner
        .post(&format!("/settings/members/{member_id}/remove"), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(
        (status, &headers["location"]),
        (StatusCode::SEE_OTHER, &"/settings?done=removed#members".parse().unwrap())
    );
    let (_, list) = s.call("GET", "/api/v1/org/members", Some(&owner_token), None).await;
    assert_eq!(roles(&list).len(), 1);
    let (status, headers, _) = member.get("/settings").await;
    assert_eq!(
        (status, &headers["location"]),
        (StatusCode::SEE_OTHER, &"/login?next=%2Fsettings".parse().unwrap()),
        "removed members are out"
    );
}

#[tokio::test]
async fn web_signed_in_user_accepts_an_invitation_and_works_in_it() {
    let s = server().await;
    let (_, owner) = s.verified_user("host@example.com", "Host team", 0).await;
    s.verified_user("guest@example.com", "Guest team", 1).await;
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/org/invitations",
            Some(&owner),
            Some(json!({"email": "guest@example.com", "role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let secret = s.token_from_email(3, "/accept-invitation").await;
    let path = format!("/accept-invitation?token={}", encoded(&secret));

    // Signed out, "sign in first" comes back to the invitation.
    let mut guest = Visitor::new(&s);
    let (_, _, html) = guest.get(&path).await;
    let start = html.find("/login?next=").expect("the sign-in link");
    let login: String = html[start..].chars().take_while(|c| *c != '"').collect();
    let csrf = guest.form(&login).await;
    let (_, _, html) = guest.get(&login).await;
    assert!(html.contains("name=\"next\""), "{html}");
    let (status, headers, _) = guest
        .post(
            "/login",
            &[
                ("email", "guest@example.com"),
                ("password", PASSWORD),
                ("next", &path),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], path.as_str());
    // Only paths of this site: anything else goes to `/`.
    for next in ["//evil.example/", "https://evil.example/", "/\\evil.example"] {
        let mut other = Visitor::new(&s);
        let csrf = other.form("/login").await;
        let (_, headers, _) = other
            .post(
                "/login",
                &[
                    ("email", "guest@example.com"),
                    ("password", PASSWORD),
                    ("next", next),
                    ("csrf_token", &csrf),
                ],
            )
            .await;
        assert_eq!(headers["location"], "/", "{next}");
    }

    let csrf = guest.form(&path).await;
    let (_, _, html) = guest.get(&path).await;
    assert!(html.contains("Accept and join Host team") && html.contains("guest@example.com"));
    guest.assert_csrf_refused("/accept-invitation", &[("token", &secret)]).await;
    let old_session = guest.cookies();
    let (status, headers, html) =
        guest.post("/accept-invitation", &[("token", &secret), ("csrf_token", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(headers["location"], "/");
    let (_, _, html) = guest.get("/settings").await;
    assert!(
        html.contains("Host team") && html.contains("Your role: admin."),
        "now in the host's team: {html}"
    );
    let (status, _, _) = web(&s, "GET", "/settings", &old_session, None, None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the old session was replaced");
    // The new session came with a new CSRF nonce: the page's token is a new one.
    // The used invitation's page says it does not work; another page gives the token.
    let (status, _, html) = guest.get(&path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("This invitation does not work"), "{html}");
    let csrf = guest.form("/settings").await;
    let (status, _, html) =
        guest.post("/accept-invitation", &[("token", &secret), ("csrf_token", &csrf)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "single use");
    assert!(html.contains("This invitation does not work"), "{html}");
}

/// Every page (signed in or out, error pages too) carries the security
/// headers, and over https both cookies are `Secure` as well as `HttpOnly`
/// and `SameSite=Lax`.
#[tokio::test]
async fn every_page_has_the_security_headers_and_cookies_are_secure_over_https() {
    let limits = Limits { per_ip: 1000, per_account: 1000, replenish: Duration::from_millis(1) };
    let s = server_with_flags(limits, &["--public-url", "https://custard.example"]).await;
    let (_, token) = s.verified_user("https@example.com", "Https org", 0).await;
    let (status, created) = s
        .call(
            "POST",
            "/api/v1/connections",
            Some(&token),
            Some(json!({"name": "shop", "db_type": "sqlite"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let connection = created["id"].as_str().expect("id").to_owned();

    let mut visitor = Visitor::new(&s);
    let (_, headers, _) = visitor.get("/login").await;
    let (_, raw) = set_cookie(&headers, "custard_csrf").expect("a CSRF cookie");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(raw.contains(attribute), "CSRF cookie {attribute}: {raw}");
    }
    let token = csrf_field(&visitor.get("/login").await.2);
    let (status, headers, _) = visitor
        .post(
            "/login",
            &[("email", "https@example.com"), ("password", PASSWORD), ("csrf_token", &token)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, raw) = set_cookie(&headers, "custard_session").expect("a session cookie");
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(raw.contains(attribute), "session cookie {attribute}: {raw}");
    }

    let signed_in = [
        "/".to_owned(),
        "/connections".to_owned(),
        format!("/connections/{connection}"),
        "/history".to_owned(),
        "/history/no-such-entry".to_owned(),
        "/settings".to_owned(),
        "/no-such-page".to_owned(),
    ];
    let signed_out = [
        "/login",
        "/signup",
        "/forgot-password",
        "/reset-password?token=x",
        "/verify-email?token=x",
        "/accept-invitation?token=x",
        "/connections",
        "/no-such-page",
    ];
    let pages =
        signed_in.iter().map(|p| (p.as_str(), true)).chain(signed_out.iter().map(|p| (*p, false)));
    for (path, with_session) in pages {
        let (status, headers, _) = if with_session {
            visitor.get(path).await
        } else {
            web(&s, "GET", path, "", None, None).await
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        if status.is_redirection() {
            // Not a page: signed out, a page for members sends the browser to sign in.
            assert!(!with_session && header("location").starts_with("/login"), "{path}");
            continue;
        }
        let csp = header("content-security-policy");
        assert!(
            csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert_eq!(header("x-frame-options"), "DENY", "{path} ({status})");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path} ({status})");
        assert_eq!(header("referrer-policy"), "same-origin", "{path} ({status})");
        assert_eq!(header("cache-control"), "no-store", "{path} ({status})");
    }
}

// ---------------------------------------------------------------------------
// Security review (issue 17): hashing bound, reset links, sign-up, change of
// password, invitations

/// The token of the newest email to `to` whose link goes to `path`.
async fn token_for(s: &Server, count: usize, to: &str, path: &str) -> String {
    let mails = s.sink.wait_for(count, Duration::from_secs(10)).await;
    let body = mails
        .iter()
        .rev()
        .filter(|m| m.to.iter().any(|t| t == to))
        .find_map(|m| m.body().contains(&format!("{path}?token=")).then(|| m.body().to_owned()))
        .unwrap_or_else(|| panic!("no email to {to} with a link to {path}"));
    let start = body.find(&format!("{path}?token=")).expect("the link") + path.len() + 7;
    percent_decode(&body[start..].chars().take_while(|c| !c.is_whitespace()).collect::<String>())
}

/// Finding 7: a reset with a bogus token is refused before anything is
/// hashed, so a flood of them costs neither memory nor CPU; and hashing, over
/// every route at once, never runs more than its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bogus_reset_tokens_cost_no_hashing_and_hashing_stays_within_its_bound() {
    bounded(async {
        let limits =
            Limits { per_ip: 1000, per_account: 1000, replenish: Duration::from_millis(1) };
        let s = server_with_flags(limits, &["--password-hash-concurrency", "2"]).await;
        s.verified_user("flood@example.com", "Flood", 0).await;
        let before = s.state.password_hashing();
        assert_eq!(before.bound, 2);

        let bodies: Vec<String> = (0..200)
            .map(|i| json!({"token": format!("bogus-{i}"), "new_password": "a brand new passphrase"}).to_string())
            .collect();
        let resets =
            bodies.iter().map(|b| s.raw("POST", "/api/v1/auth/reset-password", None, Some(b)));
        let replies = futures_util::future::join_all(resets).await;
        for (status, reply) in &replies {
            assert_eq!((*status, code(reply)), (StatusCode::BAD_REQUEST, "invalid_token"));
        }
        assert_eq!(s.state.password_hashing().started, before.started, "nothing was hashed");

        // A good token with a weak password is refused before hashing too.
        let forgot = json!({"email": "flood@example.com"});
        s.call("POST", "/api/v1/auth/forgot-password", None, Some(forgot)).await;
        let token = s.token_from_email(2, "/reset-password").await;
        let weak = json!({"token": token, "new_password": "password"});
        let (status, _) = s.call("POST", "/api/v1/auth/reset-password", None, Some(weak)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(s.state.password_hashing().started, before.started, "nothing was hashed");
        let good = json!({"token": token, "new_password": "a brand new passphrase"});
        let (status, _) = s.call("POST", "/api/v1/auth/reset-password", None, Some(good)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(s.state.password_hashing().started, before.started + 1);

        // Sign-ups (hash), right and wrong logins (verify) all at once.
        let signups: Vec<String> = (0..6)
            .map(|i| json!({"email": format!("c{i}@example.com"), "password": PASSWORD, "first_name": "C", "last_name": "D"}).to_string())
            .collect();
        let logins: Vec<String> = (0..6)
            .map(|i| {
                let password = if i % 2 == 0 { "a brand new passphrase" } else { "a wrong guess" };
                json!({"email": "flood@example.com", "password": password}).to_string()
            })
            .collect();
        let (signed, logged) = tokio::join!(
            futures_util::future::join_all(
                signups.iter().map(|b| s.raw("POST", "/api/v1/auth/signup", None, Some(b)))
            ),
            futures_util::future::join_all(
                logins.iter().map(|b| s.raw("POST", "/api/v1/auth/login", None, Some(b)))
            ),
        );
        assert!(signed.iter().all(|(status, _)| *status == StatusCode::CREATED), "{signed:?}");
        let statuses: Vec<StatusCode> = logged.iter().map(|(status, _)| *status).collect();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED].repeat(3));
        let after = s.state.password_hashing();
        assert_eq!(after.started, before.started + 13, "{after:?}");
        assert!(after.peak <= after.bound, "{after:?}");
        assert_eq!(after.refused, 0, "callers past the bound waited their turn");
    })
    .await;
}

/// Finding 7: password reset is rate limited per address like sign-in.
#[tokio::test]
async fn password_reset_attempts_are_rate_limited() {
    bounded(async {
        let s =
            server_with(Limits { per_ip: 3, per_account: 100, replenish: Duration::from_secs(60) })
                .await;
        let body = json!({"token": "bogus", "new_password": "a brand new passphrase"}).to_string();
        let mut answers = Vec::new();
        for _ in 0..4 {
            let (status, headers, reply) =
                s.with_headers("POST", "/api/v1/auth/reset-password", None, Some(&body)).await;
            answers.push((status, code(&reply).to_owned(), headers));
        }
        let got: Vec<(StatusCode, &str)> =
            answers.iter().map(|(s, c, _)| (*s, c.as_str())).collect();
        assert_eq!(
            got,
            [
                (StatusCode::BAD_REQUEST, "invalid_token"),
                (StatusCode::BAD_REQUEST, "invalid_token"),
                (StatusCode::BAD_REQUEST, "invalid_token"),
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ]
        );
        assert!((1..=60).contains(&retry_after(&answers[3].2)));
    })
    .await;
}

/// Finding 12: using a reset link, or changing the password, ends every other
/// reset link of the account.
#[tokio::test]
async fn an_older_reset_link_stops_working_once_a_newer_one_is_used_or_the_password_changes() {
    bounded(async {
        let s = server().await;
        s.verified_user("links@example.com", "Links", 0).await;
        let forgot = || {
            let body = json!({"email": "links@example.com"});
            s.call("POST", "/api/v1/auth/forgot-password", None, Some(body))
        };
        forgot().await;
        let older = s.token_from_email(2, "/reset-password").await;
        forgot().await;
        let newer = s.token_from_email(3, "/reset-password").await;
        assert_ne!(older, newer);
        let reset = |token: &str, password: &str| {
            let body = json!({"token": token, "new_password": password});
            s.call("POST", "/api/v1/auth/reset-password", None, Some(body))
        };
        assert_eq!(reset(&newer, "the second passphrase").await.0, StatusCode::OK);
        let (status, body) = reset(&older, "the attackers passphrase").await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_token"));

        // A link asked for before a change of password dies with the change.
        forgot().await;
        let before_change = s.token_from_email(4, "/reset-password").await;
        let access = s.login("links@example.com", "the second passphrase").await;
        let change = json!({"current_password": "the second passphrase", "new_password": "the third passphrase"});
        let (status, _) =
            s.call("POST", "/api/v1/auth/change-password", Some(&access), Some(change)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = reset(&before_change, "the attackers passphrase").await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_token"));
        assert!(can_log_in(&s, "links@example.com", "the third passphrase").await);
        assert!(!can_log_in(&s, "links@example.com", "the attackers passphrase").await);
    })
    .await;
}

/// Finding 12: a reset checks the new password against the account's email
/// and names, as sign-up does; a refused password leaves the link usable.
#[tokio::test]
async fn a_reset_password_may_not_be_the_accounts_email_or_name() {
    bounded(async {
        let s = server().await;
        s.verified_user("ada.lovelace@example.com", "Engines", 0).await;
        let forgot = json!({"email": "ada.lovelace@example.com"});
        s.call("POST", "/api/v1/auth/forgot-password", None, Some(forgot)).await;
        let token = s.token_from_email(2, "/reset-password").await;
        // (new password, the problem named)
        let cases = [
            ("ada.lovelace@example.com", "password is email"),
            ("Ada.Lovelace", "password is email"),
            ("AdaLovelace", "password is name"),
            ("Ada Lovelace", "password is name"),
            ("L0v3l4c3", "password too common"),
        ];
        for (password, problem) in cases {
            let body = json!({"token": token, "new_password": password});
            let (status, reply) =
                s.call("POST", "/api/v1/auth/reset-password", None, Some(body)).await;
            assert_eq!(
                (status, code(&reply)),
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
                "{password}"
            );
            let message = reply["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(problem), "{password}: {message}");
        }
        let body = json!({"token": token, "new_password": "a brand new passphrase"});
        let (status, _) = s.call("POST", "/api/v1/auth/reset-password", None, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "the link still worked");
    })
    .await;
}

/// Finding 14: signing up with an email that has an account answers exactly
/// as for a new address; only the address's owner learns of it, by email, and
/// nothing about the account changes.
#[tokio::test]
async fn signing_up_with_a_taken_email_tells_only_its_owner() {
    bounded(async {
        let s = server().await;
        let first = s.signup("taken@example.com", "Taken").await;
        s.sink.wait_for(1, Duration::from_secs(10)).await;
        let attempt = |email: &str| {
            let body = json!({"email": email, "password": "another fine passphrase", "first_name": "Eve", "last_name": "Mallory", "organization_name": "Evil"});
            s.call("POST", "/api/v1/auth/signup", None, Some(body))
        };
        let (taken_status, taken) = attempt(" TAKEN@example.com").await;
        let (fresh_status, fresh) = attempt("fresh@example.com").await;
        assert_eq!((taken_status, fresh_status), (StatusCode::CREATED, StatusCode::CREATED));
        let shape = |v: &Value| -> Vec<(String, Vec<String>)> {
            let mut keys: Vec<(String, Vec<String>)> = v
                .as_object()
                .expect("an object")
                .iter()
                .map(|(k, v)| {
                    let inner = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
                    (k.clone(), inner)
                })
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(shape(&taken), shape(&fresh));
        for (field, want) in [
            ("email", json!("taken@example.com")),
            ("first_name", json!("Eve")),
            ("email_verified", json!(false)),
        ] {
            assert_eq!(taken["user"][field], want, "{field}");
        }
        assert_eq!(taken["verification_sent"], fresh["verification_sent"]);
        assert_ne!(taken["user"]["id"], first["user"]["id"]);

        // The owner got an email saying so, with a verification link (the
        // account is not verified yet); nothing else changed.
        let mails = s.sink.wait_for(3, Duration::from_secs(10)).await;
        let to_owner: Vec<&str> = mails
            .iter()
            .filter(|m| m.to.iter().any(|t| t == "taken@example.com"))
            .map(|m| m.body())
            .collect();
        assert_eq!(to_owner.len(), 2, "{to_owner:?}");
        let notice = to_owner.iter().find(|b| b.contains("already has an account")).expect("the notice");
        assert!(notice.contains("/login") && notice.contains("/forgot-password"), "{notice}");
        assert!(notice.contains("/verify-email?token="), "{notice}");
        let token = token_for(&s, 3, "taken@example.com", "/verify-email").await;
        let (status, _) =
            s.call("POST", "/api/v1/auth/verify-email", None, Some(json!({"token": token}))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(can_log_in(&s, "taken@example.com", PASSWORD).await);
        assert!(!can_log_in(&s, "taken@example.com", "another fine passphrase").await);
        let (_, profile) = s.call("GET", "/api/v1/auth/profile", Some(&s.login("taken@example.com", PASSWORD).await), None).await;
        assert_eq!(profile["user"]["first_name"], "Ada", "the names are the owner's");

        // Verified now: the next notice has no verification link.
        assert_eq!(attempt("taken@example.com").await.0, StatusCode::CREATED);
        let mails = s.sink.wait_for(4, Duration::from_secs(10)).await;
        let last = mails.iter().rev().find(|m| m.to.iter().any(|t| t == "taken@example.com"));
        let last = last.expect("a notice").body();
        assert!(last.contains("already has an account") && !last.contains("/verify-email"), "{last}");
    })
    .await;
}

/// Finding 14: wrong current passwords on change-password are limited per
/// account, even when the guesses come all at once; a refused attempt is not
/// tried; another account is not affected.
#[tokio::test]
async fn wrong_current_passwords_are_limited_per_account() {
    bounded(async {
        let s = server_with(Limits {
            per_ip: 1000,
            per_account: 3,
            replenish: Duration::from_secs(60),
        })
        .await;
        let (_, access) = s.verified_user("guess@example.com", "Guess", 0).await;
        let (_, other) = s.verified_user("other@example.com", "Other", 1).await;
        let guesses: Vec<String> = (0..10)
            .map(|i| json!({"current_password": format!("wrong guess {i}"), "new_password": "a brand new passphrase"}).to_string())
            .collect();
        let replies = futures_util::future::join_all(guesses.iter().map(|b| {
            s.with_headers("POST", "/api/v1/auth/change-password", Some(&access), Some(b))
        }))
        .await;
        let count = |want: StatusCode| replies.iter().filter(|(status, _, _)| *status == want).count();
        assert_eq!((count(StatusCode::UNAUTHORIZED), count(StatusCode::TOO_MANY_REQUESTS)), (3, 7));
        for (status, headers, reply) in &replies {
            if *status == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(code(reply), "rate_limited");
                assert!((1..=180).contains(&retry_after(headers)));
            }
        }
        let right = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
        let (status, _) =
            s.call("POST", "/api/v1/auth/change-password", Some(&access), Some(right.clone())).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "not even the right one is tried");
        assert!(can_log_in(&s, "guess@example.com", PASSWORD).await, "unchanged");
        let (status, _) =
            s.call("POST", "/api/v1/auth/change-password", Some(&other), Some(right)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "another account is not limited");
    })
    .await;
}

/// Invites `email` as `role` with `token`; the reply.
async fn invite(
    s: &Server,
    token: &str,
    email: &str,
    role: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let body = json!({"email": email, "role": role}).to_string();
    s.with_headers("POST", "/api/v1/org/invitations", Some(token), Some(&body)).await
}

/// Signs up through an invitation token; the status and reply.
async fn join_with(s: &Server, email: &str, token: &str) -> (StatusCode, Value) {
    let body = json!({"email": email, "password": PASSWORD, "first_name": "New", "last_name": "Member", "invitation_token": token});
    s.call("POST", "/api/v1/auth/signup", None, Some(body)).await
}

fn listed_emails(list: &Value) -> Vec<&str> {
    list["invitations"]
        .as_array()
        .expect("invitations")
        .iter()
        .filter_map(|i| i["email"].as_str())
        .collect()
}

/// Finding 13: pending invitations are listed and revoked by owners and
/// admins, within their organisation only; a revoked link stops working.
#[tokio::test]
async fn invitations_are_listed_and_revoked_by_the_organisation() {
    bounded(async {
        let s = server().await;
        let (owner_id, owner) = s.verified_user("boss@example.com", "Team", 0).await;
        let (_, stranger) = s.verified_user("else@example.com", "Elsewhere", 1).await;
        let (status, _, x) = invite(&s, &owner, "x@example.com", "member").await;
        assert_eq!(status, StatusCode::CREATED, "{x}");
        let x_token = s.token_from_email(3, "/accept-invitation").await;
        invite(&s, &owner, "y@example.com", "admin").await;
        invite(&s, &owner, "m@example.com", "member").await;
        let m_token = s.token_from_email(5, "/accept-invitation").await;
        assert_eq!(join_with(&s, "m@example.com", &m_token).await.0, StatusCode::CREATED);
        let member = s.login("m@example.com", PASSWORD).await;

        let list = s.call("GET", "/api/v1/org/invitations", Some(&owner), None).await;
        assert_eq!(list.0, StatusCode::OK, "{}", list.1);
        assert_eq!(
            listed_emails(&list.1),
            ["x@example.com", "y@example.com"],
            "used ones are not pending"
        );
        let first = &list.1["invitations"][0];
        assert_eq!((&first["role"], &first["invited_by"]), (&json!("member"), &json!(owner_id)));
        assert_eq!(first["invited_by_email"], "boss@example.com");
        assert_eq!(first["id"], x["id"]);
        assert!(!list.1.to_string().contains(&x_token), "never the token");
        let x_id = x["id"].as_str().expect("an id");
        let path = format!("/api/v1/org/invitations/{x_id}");

        // Another organisation sees none of it and cannot revoke it; a member may do neither.
        let theirs = s.call("GET", "/api/v1/org/invitations", Some(&stranger), None).await;
        assert_eq!((theirs.0, listed_emails(&theirs.1)), (StatusCode::OK, vec![]));
        let refused: &[(&str, &str, &str, StatusCode, &str)] = &[
            ("DELETE", &path, &stranger, StatusCode::NOT_FOUND, "not_found"),
            (
                "DELETE",
                "/api/v1/org/invitations/no-such-id",
                &owner,
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            ("GET", "/api/v1/org/invitations", &member, StatusCode::FORBIDDEN, "forbidden"),
            ("DELETE", &path, &member, StatusCode::FORBIDDEN, "forbidden"),
        ];
        for (method, path, token, status, want) in refused {
            let (got, reply) = s.call(method, path, Some(token), None).await;
            assert_eq!((got, code(&reply)), (*status, *want), "{method} {path}");
        }
        let list = s.call("GET", "/api/v1/org/invitations", Some(&owner), None).await.1;
        assert_eq!(listed_emails(&list), ["x@example.com", "y@example.com"], "nothing was revoked");

        let (status, _) = s.call("DELETE", &path, Some(&owner), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, reply) = s.call("DELETE", &path, Some(&owner), None).await;
        assert_eq!((status, code(&reply)), (StatusCode::NOT_FOUND, "not_found"), "revoked already");
        let list = s.call("GET", "/api/v1/org/invitations", Some(&owner), None).await.1;
        assert_eq!(listed_emails(&list), ["y@example.com"]);
        let (status, reply) = join_with(&s, "x@example.com", &x_token).await;
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::BAD_REQUEST, "invalid_token"),
            "the link is dead"
        );
    })
    .await;
}

/// Finding 13: an invitation stops working when its sender is removed, or
/// demoted below the role it invites to.
#[tokio::test]
async fn invitations_end_when_their_sender_is_removed_or_demoted() {
    bounded(async {
        let s = server().await;
        let (_, owner) = s.verified_user("boss@example.com", "Team", 0).await;
        // Two admins, each of whom invites someone as admin.
        let mut admins = Vec::new();
        for (i, email) in ["a1@example.com", "a2@example.com"].iter().enumerate() {
            invite(&s, &owner, email, "admin").await;
            let token = s.token_from_email(2 + 2 * i, "/accept-invitation").await;
            assert_eq!(join_with(&s, email, &token).await.0, StatusCode::CREATED);
            let access = s.login(email, PASSWORD).await;
            let (_, profile) = s.call("GET", "/api/v1/auth/profile", Some(&access), None).await;
            let id = profile["user"]["id"].as_str().expect("id").to_owned();
            let invited = format!("by-{email}");
            assert_eq!(invite(&s, &access, &invited, "admin").await.0, StatusCode::CREATED);
            let invitation = s.token_from_email(3 + 2 * i, "/accept-invitation").await;
            admins.push((id, invited, invitation));
        }
        let (removed, demoted) = (&admins[0], &admins[1]);
        let path = format!("/api/v1/org/members/{}", removed.0);
        assert_eq!(s.call("DELETE", &path, Some(&owner), None).await.0, StatusCode::NO_CONTENT);
        let path = format!("/api/v1/org/members/{}", demoted.0);
        let to_member = Some(json!({"role": "member"}));
        assert_eq!(s.call("PATCH", &path, Some(&owner), to_member).await.0, StatusCode::OK);

        let list = s.call("GET", "/api/v1/org/invitations", Some(&owner), None).await.1;
        assert_eq!(listed_emails(&list), Vec::<&str>::new(), "neither is pending");
        for (_, email, token) in [removed, demoted] {
            let (status, reply) = join_with(&s, email, token).await;
            assert_eq!(
                (status, code(&reply)),
                (StatusCode::BAD_REQUEST, "invalid_token"),
                "{email}"
            );
        }
    })
    .await;
}

/// Finding 13: sending invitations is limited per recipient address (over
/// every organisation) and per organisation, with `Retry-After`; nothing is
/// emailed beyond the limits.
#[tokio::test]
async fn sending_invitations_is_rate_limited() {
    use custard_server::rate_limit::{INVITATIONS_PER_ORG, INVITATIONS_PER_RECIPIENT};
    bounded(async {
        let s = server().await;
        let (_, owner) = s.verified_user("boss@example.com", "Team", 0).await;
        let (_, other) = s.verified_user("other@example.com", "Other team", 1).await;
        for _ in 0..INVITATIONS_PER_RECIPIENT {
            assert_eq!(
                invite(&s, &owner, "victim@example.com", "member").await.0,
                StatusCode::CREATED
            );
        }
        for token in [&owner, &other] {
            let (status, headers, reply) = invite(&s, token, "Victim@example.com", "member").await;
            assert_eq!((status, code(&reply)), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
            assert!(retry_after(&headers) >= 1);
        }
        let mut sent = INVITATIONS_PER_RECIPIENT;
        for i in 0.. {
            assert!(i < 100, "the organisation's limit never came");
            let (status, headers, reply) =
                invite(&s, &owner, &format!("r{i}@example.com"), "member").await;
            if status == StatusCode::CREATED {
                sent += 1;
                continue;
            }
            assert_eq!((status, code(&reply)), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
            assert!(retry_after(&headers) >= 1);
            break;
        }
        assert_eq!(sent, INVITATIONS_PER_ORG);
        let emails = s.sink.messages().len();
        assert_eq!(
            emails,
            2 + INVITATIONS_PER_ORG as usize,
            "two verifications and the invitations sent"
        );
        assert_eq!(invite(&s, &other, "friend@example.com", "member").await.0, StatusCode::CREATED);
    })
    .await;
}

/// Finding 13: the settings page lists pending invitations to owners and
/// admins, and revokes one with the page's CSRF token.
#[tokio::test]
async fn web_settings_list_and_revoke_pending_invitations() {
    bounded(async {
        let s = server().await;
        let (_, owner_token) = s.verified_user("boss@example.com", "Team", 0).await;
        let (_, _, created) = invite(&s, &owner_token, "pending@example.com", "member").await;
        let id = created["id"].as_str().expect("id").to_owned();
        let mut owner = Visitor::new(&s);
        owner.sign_in("boss@example.com", PASSWORD).await;
        let csrf = owner.form("/settings").await;
        let (_, _, html) = owner.get("/settings").await;
        let action = format!("action=\"/settings/invitations/{id}/revoke\"");
        assert!(
            html.contains("Pending invitations") && html.contains("pending@example.com"),
            "{html}"
        );
        assert!(html.contains(&action), "{html}");
        let path = format!("/settings/invitations/{id}/revoke");
        owner.assert_csrf_refused(&path, &[]).await;
        let (status, headers, _) = owner.post(&path, &[("csrf_token", &csrf)]).await;
        assert_eq!(
            (status, &headers["location"]),
            (StatusCode::SEE_OTHER, &"/settings?done=revoked#invitations".parse().unwrap())
        );
        let (_, _, html) = owner.get("/settings?done=revoked").await;
        assert!(html.contains("The invitation is revoked") && !html.contains(&action), "{html}");
        let list = s.call("GET", "/api/v1/org/invitations", Some(&owner_token), None).await.1;
        assert_eq!(listed_emails(&list), Vec::<&str>::new());
    })
    .await;
}
