//! The errors the server answers are the ones its OpenAPI document declares:
//! a representative request for each kind of refusal, from the extractors
//! (body, token, CSRF) to the logic (tokens, roles, limits, the agent), each
//! checked twice: the server answers the expected status and code, and the
//! document lists that code under that status for the operation (or among
//! the codes any operation may answer).

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use clap::Parser;
use custard_server::auth::hash_secret;
use custard_server::config::ServerConfig;
use custard_server::rate_limit::Limits;
use custard_server::store::{NewToken, OrgId, Role, SqliteStore, Store, UserId};
use custard_server::{AppState, app};
use serde_json::{Value, json};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new passphrase for ada";
/// A body past the API's limit (64 KiB).
const HUGE: usize = 70 * 1024;

/// Who a request is sent as.
#[derive(Clone, Copy, Debug)]
enum As {
    Nobody,
    Owner,
    /// A member of the owner's organisation (not an admin).
    Member,
    /// The owner's session as a browser cookie, without the page's CSRF token.
    CookieWithoutCsrf,
    Garbage,
    /// The idle connection's agent API key.
    AgentKey,
}

/// What a request carries.
enum Sent {
    Nothing,
    Json(Value),
    Raw(&'static str),
    Huge,
}

struct Server {
    app: Router,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn new(limits: Limits) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let config = ServerConfig::parse_from([
            "custard-server",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ]);
        let state = AppState::open_with_limits(config, limits).await.expect("state");
        Server { app: app(state), data, _dir: dir }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        auth: Option<(&str, String)>,
        body: Body,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some((name, value)) = auth {
            request = request.header(name, value);
        }
        request = request.header("content-type", "application/json");
        let response =
            self.app.clone().oneshot(request.body(body).expect("a request")).await.expect("reply");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let auth = token.map(|t| ("authorization", format!("Bearer {t}")));
        self.send(method, path, auth, Body::from(body.to_string())).await
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.data.join("custard.db")).expect("the store")
    }

    /// Signs up `email` (through `invitation` when given) and returns the reply.
    async fn signup(&self, email: &str, invitation: Option<&str>) -> Value {
        let mut body = json!({"email": email, "password": PASSWORD, "first_name": "Ada",
            "last_name": "Lovelace", "organization_name": "Engines"});
        if let Some(token) = invitation {
            body["invitation_token"] = json!(token);
        }
        let (status, reply) = self.json("POST", "/api/v1/auth/signup", None, body).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        reply
    }

    async fn login(&self, email: &str) -> String {
        let body = json!({"email": email, "password": PASSWORD});
        let (status, reply) = self.json("POST", "/api/v1/auth/login", None, body).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        reply["access_token"].as_str().expect("a token").to_owned()
    }

    async fn document(&self) -> Value {
        let (status, document) =
            self.send("GET", "/api/v1/openapi.json", None, Body::empty()).await;
        assert_eq!(status, StatusCode::OK);
        document
    }
}

/// What a request is about: the credentials and ids the cases use.
struct World {
    owner: String,
    owner_id: String,
    member: String,
    idle: String,
    agent_key: String,
    failed_question: String,
}

/// A verified owner, a member of their organisation, a connection without
/// an agent, and a question about it that failed.
async fn world(s: &Server) -> World {
    let reply = s.signup("owner@example.com", None).await;
    let owner_id = reply["user"]["id"].as_str().expect("an id").to_owned();
    let store = s.store();
    let user = store.get_user_by_email("owner@example.com").await.expect("the owner");
    store.mark_email_verified(&user.id).await.expect("verified");
    let owner = s.login("owner@example.com").await;
    let (_, profile) = s.json("GET", "/api/v1/auth/profile", Some(&owner), Value::Null).await;
    let org = OrgId::from(profile["organization_id"].as_str().expect("an org").to_owned());

    // Invitations made in the store, as the emailed links would carry them.
    let expires = Utc::now() + chrono::Duration::days(1);
    let by = UserId::from(owner_id.clone());
    for (email, secret) in [("member@example.com", "member-link"), ("owner@example.com", "again")] {
        let token =
            NewToken::invitation(&org, &by, email, Role::Member, hash_secret(secret), expires);
        store.create_token(token).await.expect("an invitation");
    }
    s.signup("member@example.com", Some("member-link")).await;
    let member = s.login("member@example.com").await;

    let body = json!({"name": "idle", "db_type": "sqlite"});
    let (status, created) = s.json("POST", "/api/v1/connections", Some(&owner), body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let idle = created["id"].as_str().expect("an id").to_owned();
    let agent_key = created["api_key"].as_str().expect("a key").to_owned();

    let ask = json!({"connection_id": idle, "question": "how many orders are there?"});
    let (status, _) = s.json("POST", "/api/v1/query", Some(&owner), ask).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, page) = s.json("GET", "/api/v1/queries", Some(&owner), Value::Null).await;
    let failed_question = page["queries"][0]["id"].as_str().expect("the question").to_owned();
    World { owner, owner_id, member, idle, agent_key, failed_question }
}

/// The document's operation for a request: the path template that matches
/// with the fewest parameters (as the router prefers literal segments), if
/// it takes the method.
fn operation<'d>(document: &'d Value, method: &str, uri: &str) -> Option<(&'d str, &'d Value)> {
    let path = uri.split('?').next().unwrap_or(uri);
    let segments: Vec<&str> = path.split('/').collect();
    let matching = document["paths"].as_object()?.iter().filter(|(template, _)| {
        let parts: Vec<&str> = template.split('/').collect();
        parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(p, s)| p.starts_with('{') || p == s)
    });
    let (template, item) = matching.min_by_key(|(t, _)| t.matches('{').count())?;
    item.get(method.to_lowercase()).map(|op| (template.as_str(), op))
}

/// Whether the document declares `code` for `status` on the request's
/// operation, or for any operation.
fn declared(document: &Value, method: &str, uri: &str, status: u16, code: &str) -> bool {
    let listed = |codes: &Value| codes.as_array().is_some_and(|c| c.iter().any(|c| c == code));
    let Some((_, op)) = operation(document, method, uri) else {
        return false;
    };
    listed(&op["responses"][status.to_string()]["x-error-codes"])
        || listed(&document["x-error-codes-any-operation"])
}

/// One request and the error it must get.
struct Case {
    method: &'static str,
    uri: String,
    auth: As,
    body: Sent,
    status: u16,
    code: &'static str,
}

fn case(
    method: &'static str,
    uri: impl Into<String>,
    auth: As,
    body: Sent,
    status: u16,
    code: &'static str,
) -> Case {
    Case { method, uri: uri.into(), auth, body, status, code }
}

/// Sends every case; returns what went wrong, one line each, and the
/// operations the cases reached.
async fn run(s: &Server, w: Option<&World>, cases: Vec<Case>) -> (Vec<String>, Vec<String>) {
    let document = s.document().await;
    let mut problems = Vec::new();
    let mut reached = Vec::new();
    for c in cases {
        let bearer = |t: &str| Some(("authorization", format!("Bearer {t}")));
        let auth = match (c.auth, w) {
            (As::Nobody, _) => None,
            (As::Owner, Some(w)) => bearer(&w.owner),
            (As::Member, Some(w)) => bearer(&w.member),
            (As::CookieWithoutCsrf, Some(w)) => {
                Some(("cookie", format!("custard_session={}", w.owner)))
            }
            (As::Garbage, _) => bearer("garbage"),
            (As::AgentKey, Some(w)) => bearer(&w.agent_key),
            (auth, None) => panic!("{auth:?} needs the world"),
        };
        let body = match c.body {
            Sent::Nothing => Body::empty(),
            Sent::Json(v) => Body::from(v.to_string()),
            Sent::Raw(text) => Body::from(text),
            Sent::Huge => Body::from(format!("{{\"pad\": \"{}\"}}", "x".repeat(HUGE))),
        };
        let name = format!("{} {}", c.method, c.uri);
        let (status, reply) = s.send(c.method, &c.uri, auth, body).await;
        let code = reply["error"]["code"].as_str().unwrap_or("<none>");
        if (status.as_u16(), code) != (c.status, c.code) {
            problems
                .push(format!("{name}: {status} `{code}`, not {} `{}`: {reply}", c.status, c.code));
            continue;
        }
        // A success is no error to look up.
        if c.status >= 400 && !declared(&document, c.method, &c.uri, c.status, c.code) {
            problems.push(format!(
                "{name}: answered {} `{}`, which it does not declare",
                c.status, c.code
            ));
        }
        if let Some((template, _)) = operation(&document, c.method, &c.uri) {
            reached.push(format!("{} {template}", c.method));
        }
    }
    reached.sort();
    reached.dedup();
    (problems, reached)
}

#[tokio::test]
async fn every_error_answered_is_declared_for_its_operation() {
    let limits = Limits { per_ip: 1000, per_account: 1000, replenish: Duration::from_millis(1) };
    let s = Server::new(limits).await;
    let w = world(&s).await;
    let (idle, question, owner_id) = (&w.idle, &w.failed_question, &w.owner_id);
    let signup = |extra: Value| {
        let mut body = json!({"email": "new@example.com", "password": PASSWORD,
            "first_name": "Grace", "last_name": "Hopper"});
        body.as_object_mut()
            .expect("an object")
            .extend(extra.as_object().cloned().unwrap_or_default());
        Sent::Json(body)
    };
    s.signup("unverified@example.com", None).await;

    use As::*;
    use Sent::{Huge, Json, Nothing, Raw};
    #[rustfmt::skip]
    let cases = vec![
        // Accounts.
        case("POST", "/api/v1/auth/signup", Nobody, Raw("{"), 400, "invalid_json"),
        case("POST", "/api/v1/auth/signup", Nobody, Json(json!({"email": "x"})), 422, "validation_error"),
        case("POST", "/api/v1/auth/signup", Nobody, signup(json!({"password": "password"})), 422, "validation_error"),
        case("POST", "/api/v1/auth/signup", Nobody, signup(json!({"invitation_token": "nope"})), 400, "invalid_token"),
        case("POST", "/api/v1/auth/signup", Nobody, Huge, 413, "payload_too_large"),
        case("POST", "/api/v1/auth/verify-email", Nobody, Json(json!({"token": "nope"})), 400, "invalid_token"),
        case("GET", "/api/v1/auth/verify-email", Nobody, Nothing, 422, "validation_error"),
        case("GET", "/api/v1/auth/verify-email?token=nope", Nobody, Nothing, 400, "invalid_token"),
        case("POST", "/api/v1/auth/login", Nobody, Json(json!({"email": "owner@example.com", "password": "wrong"})), 401, "unauthorized"),
        case("POST", "/api/v1/auth/login", Nobody, Json(json!({"email": "unverified@example.com", "password": PASSWORD})), 403, "email_not_verified"),
        case("POST", "/api/v1/auth/logout", Nobody, Nothing, 401, "unauthorized"),
        case("POST", "/api/v1/auth/logout", CookieWithoutCsrf, Nothing, 403, "forbidden"),
        case("POST", "/api/v1/auth/logout-others", Garbage, Nothing, 401, "unauthorized"),
        case("GET", "/api/v1/auth/profile", Garbage, Nothing, 401, "unauthorized"),
        case("PUT", "/api/v1/auth/profile", Owner, Json(json!({"first_name": " "})), 422, "validation_error"),
        case("POST", "/api/v1/auth/change-password", Owner, Json(json!({"current_password": "wrong", "new_password": NEW_PASSWORD})), 401, "unauthorized"),
        case("POST", "/api/v1/auth/change-password", Owner, Json(json!({"current_password": PASSWORD, "new_password": "password"})), 422, "validation_error"),
        case("POST", "/api/v1/auth/accept-invitation", Owner, Json(json!({"token": "nope"})), 400, "invalid_token"),
        case("POST", "/api/v1/auth/accept-invitation", Owner, Json(json!({"token": "again"})), 409, "conflict"),
        case("POST", "/api/v1/auth/reset-password", Nobody, Json(json!({"token": "nope", "new_password": NEW_PASSWORD})), 400, "invalid_token"),
        case("POST", "/api/v1/auth/forgot-password", Nobody, Json(json!({})), 422, "validation_error"),
        case("POST", "/api/v1/auth/resend-verification", Nobody, Raw("not json"), 400, "invalid_json"),
        // The organisation.
        case("GET", "/api/v1/org", Nobody, Nothing, 401, "unauthorized"),
        case("DELETE", "/api/v1/org", Member, Nothing, 403, "forbidden"),
        case("GET", "/api/v1/org/members", Garbage, Nothing, 401, "unauthorized"),
        case("GET", "/api/v1/org/invitations", Member, Nothing, 403, "forbidden"),
        case("POST", "/api/v1/org/invitations", Owner, Json(json!({"email": "bad", "role": "member"})), 422, "validation_error"),
        case("POST", "/api/v1/org/invitations", Member, Json(json!({"email": "a@example.com", "role": "member"})), 403, "forbidden"),
        case("DELETE", "/api/v1/org/invitations/nope", Owner, Nothing, 404, "not_found"),
        case("POST", "/api/v1/org/invitations/nope/resend", Owner, Nothing, 404, "not_found"),
        case("PATCH", "/api/v1/org/members/nope", Owner, Json(json!({"role": "member"})), 404, "not_found"),
        case("PATCH", format!("/api/v1/org/members/{owner_id}"), Owner, Json(json!({"role": "king"})), 422, "validation_error"),
        case("PATCH", format!("/api/v1/org/members/{owner_id}"), Owner, Json(json!({"role": "member"})), 422, "validation_error"),
        case("PATCH", format!("/api/v1/org/members/{owner_id}"), Member, Json(json!({"role": "member"})), 403, "forbidden"),
        case("DELETE", format!("/api/v1/org/members/{owner_id}"), Owner, Nothing, 422, "validation_error"),
        // Connections.
        case("POST", "/api/v1/connections", Owner, Json(json!({"name": "", "db_type": "sqlite"})), 422, "validation_error"),
        case("POST", "/api/v1/connections", Owner, Json(json!({"name": " IDLE ", "db_type": "sqlite"})), 409, "name_taken"),
        case("POST", "/api/v1/connections", Member, Json(json!({"name": "x", "db_type": "sqlite"})), 403, "forbidden"),
        case("GET", "/api/v1/connections", Nobody, Nothing, 401, "unauthorized"),
        case("GET", "/api/v1/connections/nope", Owner, Nothing, 404, "not_found"),
        case("PATCH", format!("/api/v1/connections/{idle}"), Owner, Json(json!({"bogus": 1})), 422, "validation_error"),
        case("DELETE", "/api/v1/connections/nope", Owner, Nothing, 404, "not_found"),
        case("POST", "/api/v1/connections/nope/rotate-key", Owner, Nothing, 404, "not_found"),
        case("GET", format!("/api/v1/connections/{idle}/schema"), Owner, Nothing, 409, "schema_unavailable"),
        case("POST", format!("/api/v1/connections/{idle}/refresh-schema"), Owner, Nothing, 503, "agent_offline"),
        case("GET", "/api/v1/connections/events", Garbage, Nothing, 401, "unauthorized"),
        case("GET", format!("/api/v1/connections/ws/{idle}"), Nobody, Nothing, 401, "unauthorized"),
        case("GET", format!("/api/v1/connections/ws/{idle}"), AgentKey, Nothing, 422, "validation_error"),
        // Questions.
        case("POST", "/api/v1/query", Owner, Json(json!({"connection_id": "nope", "question": "how many?"})), 404, "not_found"),
        case("POST", "/api/v1/query", Owner, Json(json!({"connection_id": idle, "question": " "})), 422, "invalid_question"),
        case("POST", "/api/v1/query", Owner, Json(json!({"connection_id": idle, "question": "how many?", "conversation_id": "a b"})), 422, "validation_error"),
        case("POST", "/api/v1/query", Owner, Json(json!({"connection_id": idle, "question": "how many?"})), 503, "agent_offline"),
        case("POST", "/api/v1/query", CookieWithoutCsrf, Json(json!({"connection_id": idle, "question": "how many?"})), 403, "forbidden"),
        case("POST", "/api/v1/query/stream", Owner, Raw("{"), 400, "invalid_json"),
        case("GET", "/api/v1/queries?outcome=maybe", Owner, Nothing, 422, "validation_error"),
        case("GET", "/api/v1/queries?limit=many", Owner, Nothing, 422, "validation_error"),
        case("GET", "/api/v1/queries?connection_id=nope", Owner, Nothing, 404, "not_found"),
        case("GET", "/api/v1/queries/nope", Owner, Nothing, 404, "not_found"),
        case("DELETE", "/api/v1/queries/nope", Owner, Nothing, 404, "not_found"),
        case("DELETE", format!("/api/v1/queries/{question}"), Member, Nothing, 403, "forbidden"),
        case("POST", format!("/api/v1/queries/{question}/feedback"), Owner, Json(json!({})), 422, "validation_error"),
        case("GET", format!("/api/v1/queries/{question}/export.csv"), Owner, Nothing, 422, "validation_error"),
        // Operators, and what any operation may answer.
        case("GET", "/metrics", Nobody, Nothing, 404, "not_found"),
        case("GET", "/health", Nobody, Huge, 413, "payload_too_large"),
    ];
    let (problems, reached) = run(&s, Some(&w), cases).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(reached.len() >= 35, "only {} operations reached: {reached:?}", reached.len());
}

/// The limits' refusals, on a server whose limits allow one attempt.
#[tokio::test]
async fn limits_refusals_are_declared() {
    let s = Server::new(Limits { per_ip: 1, per_account: 1, replenish: Duration::from_secs(3600) })
        .await;
    let login = || Sent::Json(json!({"email": "someone@example.com", "password": "wrong"}));
    let reset = || Sent::Json(json!({"token": "nope", "new_password": NEW_PASSWORD}));
    let forgot = || Sent::Json(json!({"email": "someone@example.com"}));
    let cases = vec![
        case("POST", "/api/v1/auth/login", As::Nobody, login(), 401, "unauthorized"),
        case("POST", "/api/v1/auth/login", As::Nobody, login(), 429, "rate_limited"),
        case("POST", "/api/v1/auth/reset-password", As::Nobody, reset(), 400, "invalid_token"),
        case("POST", "/api/v1/auth/reset-password", As::Nobody, reset(), 429, "rate_limited"),
        case("POST", "/api/v1/auth/forgot-password", As::Nobody, forgot(), 202, "<none>"),
        case("POST", "/api/v1/auth/forgot-password", As::Nobody, forgot(), 429, "rate_limited"),
    ];
    let (problems, _) = run(&s, None, cases).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
