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

struct Server {
    app: Router,
    sink: SmtpSink,
    _dir: tempfile::TempDir,
}

async fn server_with(limits: Limits) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SmtpSink::start().await;
    let config = ServerConfig::parse_from([
        "custard-server",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--smtp-url",
        &sink.url(),
    ]);
    let state = AppState::open_with_limits(config, limits).expect("state");
    Server { app: app(state), sink, _dir: dir }
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
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
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
    s.signup("dup@example.com", "One").await;
    let again = json!({"email": "DUP@example.com", "password": PASSWORD, "first_name": "A", "last_name": "B"});
    let (status, body) = s.call("POST", "/api/v1/auth/signup", None, Some(again)).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
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
    let cases: &[(&str, String, Option<Value>)] = &[
        ("PATCH", format!("/api/v1/org/members/{b_id}"), Some(json!({"role": "member"}))),
        ("DELETE", format!("/api/v1/org/members/{b_id}"), None),
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
        let again =
            json!({"email": email, "password": PASSWORD, "first_name": "C", "last_name": "D"})
                .to_string();
        assert_eq!(
            http(&addr, "POST", "/api/v1/auth/signup", &again).await,
            Some(409),
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
    assert!(raw.contains("HttpOnly") && raw.contains("SameSite=Strict"), "{raw}");
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
    let cookies = format!("{csrf_cookie}; {session}");

    let (status, _, html) = web(&s, "GET", "/", &cookies, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("web@example.com") && html.contains("No connections yet"), "{html}");

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
