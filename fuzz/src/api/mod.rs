//! The HTTP API in process: the router on a temporary SQLite store with the
//! offline engine and a real agent over a SQLite shop database, sent every
//! operation of its own OpenAPI document ([`plan`]): valid bodies and
//! parameters mutated at every level, wrong types, deep nesting, huge
//! strings, invalid UTF-8, random bytes and wrong content types, with and
//! without a verified owner's bearer token.
//!
//! The harness follows what the cases do to its own session: it logs in
//! again when its token stops working (a fuzzed logout), takes the new
//! password of a fuzzed password change, and restarts its agent with the new
//! key of a fuzzed key rotation. It never deletes its own objects with the
//! owner's credentials: such a `DELETE` is sent to an object a case created,
//! or to an id that names nothing.

mod case;
mod plan;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use clap::Parser as _;
use custard_agent::backoff::Backoff;
use custard_agent::config::AgentConfig;
use custard_server::config::ServerConfig;
use custard_server::rate_limit::Limits;
use custard_server::store::{SqliteStore, Store};
use custard_server::{AppState, ErrorCode, app};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use self::case::{ApiCase, Auth, BodyKind, Pick, QUESTIONS, Val};
pub use self::plan::{ApiField, ApiOperation, ApiPlan, SkippedOperation};
use crate::mutate::escape_bytes;
use crate::runner::FuzzTarget;

/// The owner's password at the start (change-password may change it; the target follows).
const PASSWORD: &str = "correct horse battery staple";
const OWNER_EMAIL: &str = "fuzz-owner@example.com";
/// How long one request (and its event stream) may take before it is a hang.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);
/// Log in again when the access token is this old (it lives 15 minutes).
const SESSION_REFRESH: Duration = Duration::from_secs(10 * 60);
/// How long a live event feed may take to send its first event.
const FEED_FIRST_EVENT: Duration = Duration::from_secs(5);
/// How long the agent may take to come back with a rotated key.
const AGENT_RETURN: Duration = Duration::from_secs(20);
/// The most ids kept per resource (the harness's own ones and the newest created).
const POOL_SIZE: usize = 16;

/// The objects cases refer to by id, by resource (`connection`, `query`,
/// `member`, ...): the harness's own first, then the newest ones that
/// replies named.
#[derive(Debug, Default)]
struct Live {
    pools: BTreeMap<String, Vec<String>>,
    /// The harness's own objects: never deleted with the owner's credentials.
    own: BTreeSet<String>,
    /// Every (resource, id) ever named, kept when it leaves its pool.
    seen: BTreeSet<(String, String)>,
}

impl Live {
    /// Adds one of the harness's own objects.
    fn own(&mut self, resource: &str, id: &str) {
        self.own.insert(id.to_owned());
        self.add(resource, id);
    }

    fn add(&mut self, resource: &str, id: &str) {
        if resource.is_empty() || id.is_empty() {
            return;
        }
        self.seen.insert((resource.to_owned(), id.to_owned()));
        let pool = self.pools.entry(resource.to_owned()).or_default();
        if pool.iter().any(|p| p == id) {
            return;
        }
        if pool.len() >= POOL_SIZE {
            match pool.iter().position(|p| !self.own.contains(p)) {
                Some(oldest) => {
                    pool.remove(oldest);
                }
                None => return,
            }
        }
        pool.push(id.to_owned());
    }

    /// Takes the objects a successful reply to `path` names: its `id` (an
    /// object of the path's resource) and its `<resource>_id` fields.
    fn harvest(&mut self, path: &str, reply: &Value) {
        let Some(fields) = reply.as_object() else {
            return;
        };
        if let Some(id) = fields.get("id").and_then(Value::as_str) {
            self.add(&plan::resource_of_reply(path), id);
        }
        for (name, value) in fields {
            if let (Some(resource), Some(id)) = (name.strip_suffix("_id"), value.as_str()) {
                self.add(&plan::singular(resource), id);
            }
        }
    }

    /// Drops a deleted object (the harness's own stay).
    fn forget(&mut self, id: &str) {
        if !self.own.contains(id) {
            self.pools.values_mut().for_each(|pool| pool.retain(|p| p != id));
        }
    }

    fn pick(&self, resource: &str, pick: Pick, fallback: &str) -> String {
        let pool = self.pools.get(resource).map_or(&[][..], Vec::as_slice);
        let chosen = match pick {
            Pick::Main => pool.first(),
            Pick::Any(k) => pool.get(usize::from(k) % pool.len().max(1)),
            Pick::Foreign(k) => {
                let others: Vec<&String> = self
                    .pools
                    .iter()
                    .filter(|(r, _)| r.as_str() != resource)
                    .flat_map(|(_, pool)| pool)
                    .collect();
                others.get(usize::from(k) % others.len().max(1)).copied()
            }
        };
        chosen.map_or_else(|| fallback.to_owned(), String::clone)
    }

    /// The newest object of `resource` that is not the harness's own, or an
    /// id that names nothing.
    fn not_own(&self, resource: &str) -> String {
        self.pools
            .get(resource)
            .and_then(|pool| pool.iter().rev().find(|id| !self.own.contains(*id)))
            .map_or_else(|| format!("fuzz-no-such-{resource}"), String::clone)
    }
}

/// The harness's agent: where it connects, what it serves, how to stop it.
struct Agent {
    addr: SocketAddr,
    database: PathBuf,
    connection: String,
    stop: RefCell<CancellationToken>,
}

impl Agent {
    /// Runs the agent with `key` until `stop`.
    fn spawn(&self, key: String, stop: CancellationToken) {
        let config = AgentConfig {
            sample_values: 5,
            shutdown_grace: Duration::from_millis(100),
            ..AgentConfig::new(
                format!("ws://{}/api/v1/connections/ws/{}", self.addr, self.connection),
                key,
                format!("sqlite:{}", self.database.display()),
            )
        };
        let backoff = Backoff::with(
            Duration::from_millis(50),
            Duration::from_millis(500),
            Duration::from_secs(60),
        );
        tokio::spawn(async move { custard_agent::run_with_backoff(config, stop, backoff).await });
    }
}

/// The signed-in owner: token, when it was issued, and the current password.
struct Session {
    token: String,
    issued: Instant,
    password: String,
}

/// A case made concrete against the live objects: what is sent.
struct Sent {
    method: String,
    uri: String,
    /// The objects the path names: resource and id.
    ids: Vec<(String, String)>,
    body: Vec<u8>,
    /// A `DELETE` of one of the harness's own objects went to another id.
    redirected: bool,
}

/// A request's outcome, for the report.
#[derive(Default)]
struct Counts {
    statuses: BTreeMap<u16, u64>,
    /// Per operation: replies by status or error code.
    endpoints: BTreeMap<String, BTreeMap<String, u64>>,
    /// The last event of each stream: `answer` or `error <code>`.
    stream_events: BTreeMap<String, u64>,
    /// `agent_offline` for a connection without an agent: documented, not a finding.
    expected_offline: u64,
    /// Logins after the owner's token stopped working.
    relogins: u64,
    /// Agent restarts after its key was rotated.
    agent_restarts: u64,
    /// `DELETE`s of the harness's own objects sent to other ids.
    redirected_deletes: u64,
}

pub(crate) struct ApiTarget {
    rt: Runtime,
    app: Router,
    plan: ApiPlan,
    live: RefCell<Live>,
    agent: Agent,
    session: RefCell<Session>,
    emails: Cell<u64>,
    counts: RefCell<Counts>,
    /// False while shrinking: those requests stay out of the counts.
    counting: Cell<bool>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl fmt::Debug for ApiTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTarget").finish_non_exhaustive()
    }
}

impl Drop for ApiTarget {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    ip: IpAddr,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let mut request = builder
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap_or_else(|_| Request::new(Body::empty()));
    request.extensions_mut().insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
    request
}

async fn call(app: &Router, request: Request<Body>) -> Result<(StatusCode, Value), String> {
    let response = app.clone().oneshot(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes =
        axum::body::to_bytes(response.into_body(), 16 << 20).await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// A call during setup that must answer `want`.
async fn expect(
    app: &Router,
    want: StatusCode,
    request: Request<Body>,
    what: &str,
) -> Result<Value, String> {
    let (status, body) = call(app, request).await?;
    if status == want { Ok(body) } else { Err(format!("{what}: {status} {body}")) }
}

/// A SQLite shop database for the agent: customers and their orders.
fn shop_database(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("shop.sqlite");
    let db = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
    db.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
                              amount REAL NOT NULL, status TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
         INSERT INTO customers SELECT i, 'Customer ' || i, CASE i % 3 WHEN 0 THEN 'Paris' WHEN 1 THEN 'London' ELSE 'Berlin' END FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
         INSERT INTO orders SELECT i, 1 + i % 50, i * 1.5, CASE i % 2 WHEN 0 THEN 'paid' ELSE 'open' END FROM n;",
    )
    .map_err(|e| e.to_string())?;
    Ok(path)
}

/// A value as text, for a path or a query string.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The events of a `text/event-stream` text: name and data of each block
/// that has data.
fn events(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = "message";
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if !data.is_empty() {
            out.push((name.to_owned(), data));
        }
    }
    out
}

impl ApiTarget {
    /// Starts the server (in process and on a loopback socket for the agent),
    /// reads its OpenAPI document into the plan, and makes a verified owner,
    /// a connection served by a real agent, an idle connection and one
    /// answered question.
    pub(crate) fn new() -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let stop = CancellationToken::new();
        let setup = rt.block_on(setup(dir.path(), &stop))?;
        Ok(ApiTarget {
            rt,
            app: setup.app,
            plan: setup.plan,
            live: RefCell::new(setup.live),
            agent: setup.agent,
            session: RefCell::new(setup.session),
            emails: Cell::new(0),
            counts: RefCell::default(),
            counting: Cell::new(true),
            stop,
            _dir: dir,
        })
    }

    fn resolve(&self, val: &Val) -> Value {
        match val {
            Val::Lit(v) => v.clone(),
            Val::OwnerEmail => json!(OWNER_EMAIL),
            Val::CurrentPassword => json!(self.session.borrow().password),
            Val::UniqueEmail(n) => {
                // Unique within the run even when shrinking repeats a case.
                let k = self.emails.get() + 1;
                self.emails.set(k);
                json!(format!("fuzz{n:x}.{k}@example.com"))
            }
            Val::Live { resource, pick, fallback } => {
                json!(self.live.borrow().pick(resource, *pick, fallback))
            }
        }
    }

    /// The case against the live objects: method, URI, body.
    fn prepare(&self, case: &ApiCase) -> Sent {
        let op = &self.plan.operations[case.operation];
        let method = case.method.map_or_else(|| op.method.clone(), str::to_owned);
        let mut uri = op.path.clone();
        let mut ids = Vec::new();
        let mut redirected = false;
        for (param, val) in op.path_params.iter().zip(&case.path) {
            let resource = param.resource().to_owned();
            let mut id = text(&self.resolve(val));
            let live = self.live.borrow();
            if method == "DELETE" && matches!(case.auth, Auth::Owner) && live.own.contains(&id) {
                // The harness's own objects stay: the cases need them.
                id = live.not_own(&resource);
                redirected = true;
            }
            uri = uri.replace(&format!("{{{}}}", param.name), &percent_encode(&id));
            ids.push((resource, id));
        }
        let query: Vec<String> = case
            .query
            .iter()
            .filter_map(|(i, val)| {
                let param = op.query_params.get(*i)?;
                let value = text(&self.resolve(val));
                Some(format!("{}={}", percent_encode(&param.name), percent_encode(&value)))
            })
            .collect();
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(&query.join("&"));
        }
        Sent { method, uri, ids, body: self.body(case, op), redirected }
    }

    fn body(&self, case: &ApiCase, op: &ApiOperation) -> Vec<u8> {
        let doc = |fields: &[(usize, Val)]| {
            let mut map = Map::new();
            for (i, val) in fields {
                if let Some(field) = op.fields.get(*i) {
                    map.insert(field.name.clone(), self.resolve(val));
                }
            }
            Value::Object(map)
        };
        match &case.body {
            BodyKind::Fields(fields, edits) => edits.apply(doc(fields)),
            BodyKind::Bytes(b) => b.clone(),
            BodyKind::Text(t) => t.clone().into_bytes(),
            BodyKind::Empty => Vec::new(),
            BodyKind::Huge(n) => {
                let all: Vec<(usize, Val)> =
                    (0..op.fields.len()).map(|i| (i, Val::Lit(Value::from("h")))).collect();
                let mut text = doc(&all).to_string();
                if !text.contains(":\"h") {
                    text = json!({"pad": "h"}).to_string();
                }
                let pad = n.saturating_sub(text.len());
                // Grow the first string value to the wanted size.
                if let Some(at) = text.find(":\"h") {
                    text.insert_str(at + 2, &"h".repeat(pad));
                }
                text.into_bytes()
            }
            BodyKind::Deep(depth, objects, closed) => {
                let (open, close) = if *objects { ("{\"a\":", "}") } else { ("[", "]") };
                let mut text = open.repeat(*depth);
                if *closed {
                    text.push('1');
                    text.push_str(&close.repeat(*depth));
                }
                text.into_bytes()
            }
        }
    }

    fn build(&self, case: &ApiCase, sent: &Sent) -> Result<Request<Body>, String> {
        let mut builder = Request::builder().method(sent.method.as_str()).uri(sent.uri.as_str());
        let token = self.session.borrow().token.clone();
        builder = match &case.auth {
            Auth::None => builder,
            Auth::Owner => builder.header(header::AUTHORIZATION, format!("Bearer {token}")),
            Auth::Garbage(g) => builder.header(header::AUTHORIZATION, g.as_str()),
            Auth::Basic => builder.header(header::AUTHORIZATION, "Basic Zm9vOmJhcg=="),
            Auth::Cookie => builder.header(header::COOKIE, format!("custard_session={token}")),
        };
        if let Some(ct) = &case.content_type {
            builder = builder.header(header::CONTENT_TYPE, ct.as_str());
        }
        let mut request = builder
            .body(Body::from(sent.body.clone()))
            .map_err(|e| format!("the request cannot be built: {e}"))?;
        request.extensions_mut().insert(ConnectInfo(SocketAddr::new(case.ip, 40_000)));
        Ok(request)
    }

    /// Sends one case, checks the reply, and follows what the case did to
    /// the harness's session.
    async fn exchange(
        &self,
        case: &ApiCase,
        request: Request<Body>,
        sent: &Sent,
    ) -> Result<(), String> {
        let op = &self.plan.operations[case.operation];
        let response = self.app.clone().oneshot(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.count(|c| *c.statuses.entry(status.as_u16()).or_default() += 1);
        let verdict = self.judge(case, op, sent, status, &content_type, response.into_body()).await;
        if status == StatusCode::UNAUTHORIZED && op.needs_auth && matches!(case.auth, Auth::Owner) {
            // The owner's token stopped working (a fuzzed logout): sign in again.
            self.count(|c| c.relogins += 1);
            self.login().await.map_err(|e| {
                format!("the owner's session ended (401) and logging in again failed: {e}")
            })?;
        }
        verdict
    }

    /// Checks one reply.
    async fn judge(
        &self,
        case: &ApiCase,
        op: &ApiOperation,
        sent: &Sent,
        status: StatusCode,
        content_type: &str,
        body: Body,
    ) -> Result<(), String> {
        let outcome = |outcome: String| {
            self.count(|c| {
                *c.endpoints.entry(op.name()).or_default().entry(outcome).or_default() += 1;
            });
        };
        if content_type.starts_with("text/event-stream") && status == StatusCode::OK {
            self.check_credentials(case, op, sent, status, "")?;
            if op.feed {
                outcome("200 (feed)".to_owned());
                return self.read_feed(body).await;
            }
            return self.read_stream(body, sent, outcome).await;
        }
        let bytes = axum::body::to_bytes(body, 16 << 20)
            .await
            .map_err(|e| format!("{status}: the body could not be read: {e}"))?;
        let reply: Option<Value> = serde_json::from_slice(&bytes).ok();
        let shown = || escape_bytes(&bytes, 600);
        let code = reply.as_ref().and_then(|b| b["error"]["code"].as_str());
        outcome(code.map_or_else(|| status.as_u16().to_string(), str::to_owned));
        // An error of the operation's own method is one its document lists (a
        // path parameter that names another route may meet the router's 405).
        if let Some(code) = code
            && (status.is_client_error() || status.is_server_error())
            && sent.method == op.method
            && code != "method_not_allowed"
            && !self.plan.declares(op, status.as_u16(), code)
        {
            return Err(format!(
                "a {status} reply with the code `{code}`, which the document does not declare \
                 for {}: {}",
                op.name(),
                shown()
            ));
        }
        if status.is_server_error() {
            if code == Some("agent_offline") && self.names_agentless_connection(sent) {
                self.count(|c| c.expected_offline += 1);
                return Ok(());
            }
            return Err(format!("a {status} reply: {}", shown()));
        }
        if status.is_client_error() {
            let Some(reply) = &reply else {
                return Err(format!("a {status} reply that is not JSON: {}", shown()));
            };
            let code = reply["error"]["code"]
                .as_str()
                .ok_or_else(|| format!("a {status} reply without error.code: {}", shown()))?;
            if !reply["error"]["message"].is_string() {
                return Err(format!("a {status} reply without error.message: {}", shown()));
            }
            match ErrorCode::parse(code) {
                Some(c) if c.status() == status => {}
                _ => {
                    return Err(format!(
                        "a {status} reply with the code `{code}` of another status: {}",
                        shown()
                    ));
                }
            }
        } else if status.is_success() {
            if content_type.contains("json") && reply.is_none() {
                return Err(format!("a {status} JSON reply that does not parse: {}", shown()));
            }
            self.check_credentials(case, op, sent, status, &shown())?;
            self.follow(case, op, sent, reply.as_ref()).await?;
        }
        Ok(())
    }

    /// An operation the document says needs the bearer token must not
    /// succeed without working credentials.
    fn check_credentials(
        &self,
        case: &ApiCase,
        op: &ApiOperation,
        sent: &Sent,
        status: StatusCode,
        shown: &str,
    ) -> Result<(), String> {
        if case.method.is_none() && op.needs_auth && !case.auth.works_for(&sent.method) {
            return Err(format!(
                "a {status} reply to an operation that needs the bearer token, sent with {:?}: {shown}",
                case.auth
            ));
        }
        Ok(())
    }

    /// Follows what a successful case changed: the owner's password, the
    /// agent's key, objects created and deleted.
    async fn follow(
        &self,
        case: &ApiCase,
        op: &ApiOperation,
        sent: &Sent,
        reply: Option<&Value>,
    ) -> Result<(), String> {
        let sets_password = op.fields.iter().any(|f| f.name == "new_password");
        if sets_password
            && op.needs_auth
            && matches!(case.auth, Auth::Owner)
            && sent.method == op.method
        {
            // The owner's password changed: follow it so logins keep working.
            // Read as the server does: unknown fields skipped, however deep.
            #[derive(serde::Deserialize)]
            struct NewPassword {
                new_password: String,
            }
            let parsed: NewPassword = serde_json::from_slice(&sent.body)
                .map_err(|e| format!("a success for a body without a new password ({e})"))?;
            self.session.borrow_mut().password = parsed.new_password;
        }
        if let Some(reply) = reply {
            if reply["id"] == self.agent.connection.as_str()
                && let Some(key) = reply["api_key"].as_str()
            {
                // The agent's key was rotated: the old one no longer connects.
                self.restart_agent(key).await?;
            }
            if sent.method != "DELETE" {
                self.live.borrow_mut().harvest(&op.path, reply);
            }
        }
        if sent.method == "DELETE" {
            let mut live = self.live.borrow_mut();
            sent.ids.iter().for_each(|(_, id)| live.forget(id));
        }
        Ok(())
    }

    /// Starts the agent again with its new key and waits until it is connected.
    async fn restart_agent(&self, key: &str) -> Result<(), String> {
        let stop = self.stop.child_token();
        self.agent.stop.replace(stop.clone()).cancel();
        self.agent.spawn(key.to_owned(), stop);
        self.count(|c| c.agent_restarts += 1);
        let path = format!("/api/v1/connections/{}", self.agent.connection);
        let deadline = Instant::now() + AGENT_RETURN;
        loop {
            let token = self.session.borrow().token.clone();
            let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let (status, view) =
                call(&self.app, request("GET", &path, Some(&token), None, local)).await?;
            if status == StatusCode::OK && view["agents"].as_u64().is_some_and(|n| n > 0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the agent did not come back within {} s of its key's rotation: {status} {view}",
                    AGENT_RETURN.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads an event stream to its end: events of JSON data, the last one an
    /// `answer` or an `error` in the API's shape with a 4xx code.
    async fn read_stream(
        &self,
        body: Body,
        sent: &Sent,
        outcome: impl Fn(String),
    ) -> Result<(), String> {
        let bytes = axum::body::to_bytes(body, 16 << 20)
            .await
            .map_err(|e| format!("the event stream failed: {e}"))?;
        let mut last = None;
        for (name, data) in events(&String::from_utf8_lossy(&bytes)) {
            let value: Value = serde_json::from_str(&data)
                .map_err(|e| format!("event `{name}` data is not JSON ({e}): {data}"))?;
            last = Some((name, value));
        }
        match last {
            Some((name, _)) if name == "answer" => {
                outcome("answer".to_owned());
                self.count(|c| *c.stream_events.entry("answer".to_owned()).or_default() += 1);
                Ok(())
            }
            Some((name, value)) if name == "error" => {
                let code = value["error"]["code"]
                    .as_str()
                    .ok_or_else(|| format!("an error event without a code: {value}"))?;
                let status = ErrorCode::parse(code).map(ErrorCode::status);
                outcome(format!("error {code}"));
                self.count(|c| *c.stream_events.entry(format!("error {code}")).or_default() += 1);
                match status {
                    Some(_) if code == "agent_offline" && self.names_agentless_connection(sent) => {
                        self.count(|c| c.expected_offline += 1);
                        Ok(())
                    }
                    Some(s) if s.is_server_error() => {
                        Err(format!("an error event with the {s} code `{code}`: {value}"))
                    }
                    Some(_) => Ok(()),
                    None => Err(format!("an error event with an unknown code: {value}")),
                }
            }
            other => {
                Err(format!("the event stream ended without an answer or an error: last {other:?}"))
            }
        }
    }

    /// Reads a live feed (it does not end by itself) up to its first event,
    /// whose data must be JSON, then drops it.
    async fn read_feed(&self, mut body: Body) -> Result<(), String> {
        let first = async {
            let mut bytes = Vec::new();
            loop {
                match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    None => return Err("the event feed ended before its first event".to_owned()),
                    Some(Err(e)) => return Err(format!("the event feed failed: {e}")),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            bytes.extend_from_slice(&data);
                        }
                    }
                }
                let text = String::from_utf8_lossy(&bytes);
                // Only whole events: up to the last blank line.
                let Some(end) = text.rfind("\n\n") else {
                    continue;
                };
                if let Some((name, data)) = events(&text[..end]).into_iter().next() {
                    serde_json::from_str::<Value>(&data)
                        .map_err(|e| format!("event `{name}` data is not JSON ({e}): {data}"))?;
                    return Ok(());
                }
            }
        };
        tokio::time::timeout(FEED_FIRST_EVENT, first).await.unwrap_or_else(|_| {
            Err(format!("the event feed sent no event within {} s", FEED_FIRST_EVENT.as_secs()))
        })
    }

    fn count(&self, update: impl FnOnce(&mut Counts)) {
        if self.counting.get() {
            update(&mut self.counts.borrow_mut());
        }
    }

    /// Whether the request is about a connection the harness knows that has
    /// no agent (the idle one, or one a case created): the documented
    /// `agent_offline` is then the right answer.
    fn names_agentless_connection(&self, sent: &Sent) -> bool {
        #[derive(serde::Deserialize)]
        struct AskedAbout {
            connection_id: String,
        }
        let named = serde_json::from_slice::<AskedAbout>(&sent.body)
            .ok()
            .map(|s| s.connection_id)
            .or_else(|| sent.ids.iter().find(|(r, _)| r == "connection").map(|(_, id)| id.clone()));
        named.is_some_and(|id| {
            id != self.agent.connection
                && self.live.borrow().seen.contains(&("connection".to_owned(), id))
        })
    }

    async fn login(&self) -> Result<(), String> {
        let password = self.session.borrow().password.clone();
        let login = json!({"email": OWNER_EMAIL, "password": password});
        let reply = expect(
            &self.app,
            StatusCode::OK,
            request(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(&login),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            ),
            "logging in again",
        )
        .await?;
        let token = reply["access_token"].as_str().ok_or("no access token")?.to_owned();
        *self.session.borrow_mut() = Session { token, issued: Instant::now(), password };
        Ok(())
    }
}

/// What [`setup`] makes.
struct Setup {
    app: Router,
    plan: ApiPlan,
    live: Live,
    agent: Agent,
    session: Session,
}

async fn setup(dir: &Path, stop: &CancellationToken) -> Result<Setup, String> {
    let data = dir.join("data");
    let data_arg = data.to_str().ok_or("the temporary folder is not UTF-8")?;
    let config = ServerConfig::parse_from([
        "custard-server",
        "--data-dir",
        data_arg,
        "--agent-heartbeat-ms",
        "2000",
    ]);
    // High limits: the fuzzer should reach the handlers, not the rate limiter.
    let limits =
        Limits { per_ip: 1_000_000, per_account: 1_000_000, replenish: Duration::from_millis(1) };
    let state = AppState::open_with_limits(config, limits).await.map_err(|e| format!("{e:#}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let serving = stop.clone();
    tokio::spawn(async move {
        let shutdown = async move { serving.cancelled().await };
        let _ = axum::serve(listener, service).with_graceful_shutdown(shutdown).await;
    });
    let app = app(state);
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);

    let document = expect(
        &app,
        StatusCode::OK,
        request("GET", plan::DOCUMENT_PATH, None, None, local),
        "fetching the OpenAPI document",
    )
    .await?;
    let plan = ApiPlan::from_document(&document)?;
    check_coverage(&document, &plan)?;

    let signup = json!({"email": OWNER_EMAIL, "password": PASSWORD, "first_name": "Ada", "last_name": "Lovelace", "organization_name": "Fuzz"});
    let reply = expect(
        &app,
        StatusCode::CREATED,
        request("POST", "/api/v1/auth/signup", None, Some(&signup), local),
        "signing up",
    )
    .await?;
    let user_id = reply["user"]["id"].as_str().ok_or("no user id")?.to_owned();
    {
        // Verify through the store, as the emailed link would.
        let store = SqliteStore::open(&data.join("custard.db")).map_err(|e| e.to_string())?;
        let user = store.get_user_by_email(OWNER_EMAIL).await.map_err(|e| e.to_string())?;
        store.mark_email_verified(&user.id).await.map_err(|e| e.to_string())?;
    }
    let login = json!({"email": OWNER_EMAIL, "password": PASSWORD});
    let reply = expect(
        &app,
        StatusCode::OK,
        request("POST", "/api/v1/auth/login", None, Some(&login), local),
        "logging in",
    )
    .await?;
    let token = reply["access_token"].as_str().ok_or("no access token")?.to_owned();

    let (agent_connection, key) = create_connection(&app, &token, "shop").await?;
    let (idle_connection, _) = create_connection(&app, &token, "idle").await?;

    let agent = Agent {
        addr,
        database: shop_database(dir)?,
        connection: agent_connection.clone(),
        stop: RefCell::new(stop.child_token()),
    };
    agent.spawn(key, agent.stop.borrow().clone());

    let schema_path = format!("/api/v1/connections/{agent_connection}/schema");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) =
            call(&app, request("GET", &schema_path, Some(&token), None, local)).await?;
        if status == StatusCode::OK {
            break;
        }
        if Instant::now() > deadline {
            return Err("the agent did not report a schema within 30 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ask = json!({"connection_id": agent_connection, "question": QUESTIONS[0]});
    let reply = expect(
        &app,
        StatusCode::OK,
        request("POST", "/api/v1/query", Some(&token), Some(&ask), local),
        "asking",
    )
    .await?;
    let query_id = reply["id"].as_str().ok_or("no question id")?.to_owned();

    let mut live = Live::default();
    live.own("connection", &agent_connection);
    live.own("connection", &idle_connection);
    live.own("query", &query_id);
    // A member's id is the user's.
    live.own("member", &user_id);
    live.own("user", &user_id);
    live.harvest("/api/v1/query", &reply);
    let session = Session { token, issued: Instant::now(), password: PASSWORD.to_owned() };
    Ok(Setup { app, plan, live, agent, session })
}

/// Fails unless the plan has operations and every operation of the document
/// with a JSON body is among them: a target that fuzzed less would pass
/// without a word.
fn check_coverage(document: &Value, plan: &ApiPlan) -> Result<(), String> {
    if plan.operations.is_empty() {
        return Err(format!(
            "the OpenAPI document at {} has no operation to fuzz",
            plan::DOCUMENT_PATH
        ));
    }
    let fuzzed: BTreeSet<(&str, &str)> =
        plan.operations.iter().map(|op| (op.method(), op.path())).collect();
    let mut missing = Vec::new();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let method = method.to_uppercase();
            let json = op["requestBody"].get("$ref").is_some()
                || op["requestBody"]["content"].as_object().is_some_and(|c| {
                    c.keys().any(|m| m.starts_with("application/json") || m.ends_with("+json"))
                });
            if json && !fuzzed.contains(&(method.as_str(), path.as_str())) {
                let reason = plan
                    .skipped
                    .iter()
                    .find(|s| s.method == method && &s.path == path)
                    .map_or("not read", |s| s.reason.as_str());
                missing.push(format!("{method} {path} ({reason})"));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("operations with a JSON body left out: {}", missing.join(", ")))
    }
}

/// A new SQLite connection of the owner's organisation: (id, API key).
async fn create_connection(
    app: &Router,
    token: &str,
    name: &str,
) -> Result<(String, String), String> {
    let body = json!({"name": name, "db_type": "sqlite"});
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let req = request("POST", "/api/v1/connections", Some(token), Some(&body), local);
    let reply = expect(app, StatusCode::CREATED, req, "creating a connection").await?;
    let id = reply["id"].as_str().ok_or("no connection id")?.to_owned();
    let key = reply["api_key"].as_str().ok_or("no api key")?.to_owned();
    Ok((id, key))
}

/// Text as a path segment or query value: unreserved characters as they
/// are, the rest percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl FuzzTarget for ApiTarget {
    type Input = ApiCase;

    fn strategy(&self) -> BoxedStrategy<ApiCase> {
        case::case(&self.plan.operations)
    }

    fn check(&self, input: &ApiCase, count: bool) -> Result<(), String> {
        self.counting.set(count);
        let sent = self.prepare(input);
        if sent.redirected {
            self.count(|c| c.redirected_deletes += 1);
        }
        let request = self.build(input, &sent)?;
        let describe = |e: String| {
            format!(
                "{e}\n  request: {} {} (content type {:?})\n  body: {}",
                sent.method,
                sent.uri,
                input.content_type,
                escape_bytes(&sent.body, 2000)
            )
        };
        let exchange = self.exchange(input, request, &sent);
        match self.rt.block_on(async { tokio::time::timeout(REQUEST_LIMIT, exchange).await }) {
            Ok(result) => result.map_err(describe),
            Err(_) => Err(describe(format!("no reply within {} s", REQUEST_LIMIT.as_secs()))),
        }
    }

    fn size(&self, input: &ApiCase) -> usize {
        match &input.body {
            BodyKind::Bytes(b) => b.len(),
            BodyKind::Text(t) => t.len(),
            BodyKind::Huge(n) => *n,
            BodyKind::Deep(d, ..) => d * 2,
            BodyKind::Empty => 0,
            BodyKind::Fields(fields, _) => fields.len(),
        }
    }

    fn batch_cases(&self) -> u32 {
        200
    }

    fn before_batch(&self) -> Result<(), String> {
        if self.session.borrow().issued.elapsed() > SESSION_REFRESH {
            self.rt.block_on(self.login())?;
        }
        Ok(())
    }

    fn stats(&self) -> Vec<String> {
        let counts = self.counts.borrow();
        let total: u64 = counts.statuses.values().sum();
        let limited = counts.statuses.get(&429).copied().unwrap_or(0);
        let statuses: Vec<String> =
            counts.statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let mut lines = vec![format!(
            "operations: {} fuzzed ({} with a JSON body), from the server's {}",
            self.plan.operations.len(),
            self.plan.json_body_operations(),
            plan::DOCUMENT_PATH
        )];
        for op in self.plan.operations.iter().filter(|op| op.removes_caller) {
            lines.push(format!(
                "only with credentials that do not work (it would remove the harness's own organisation): {}",
                op.name()
            ));
        }
        for skipped in &self.plan.skipped {
            lines.push(format!(
                "not fuzzed: {} {}: {}",
                skipped.method, skipped.path, skipped.reason
            ));
        }
        let unreached: Vec<String> = self
            .plan
            .operations
            .iter()
            .map(ApiOperation::name)
            .filter(|name| !counts.endpoints.contains_key(name))
            .collect();
        if total > 0 && !unreached.is_empty() {
            lines.push(format!("not reached in this run: {}", unreached.join(", ")));
        }
        lines.push(format!("statuses: {}", statuses.join(", ")));
        lines.push(format!(
            "429 (rate limited): {limited} of {total} ({:.2}%)",
            if total > 0 { 100.0 * limited as f64 / total as f64 } else { 0.0 }
        ));
        lines.push(format!(
            "503 agent_offline for a connection without an agent (documented): {}",
            counts.expected_offline
        ));
        lines.push(format!(
            "followed: {} logins after the owner's token stopped working, {} agent restarts after its key was rotated, {} DELETEs of the harness's own objects sent to other ids",
            counts.relogins, counts.agent_restarts, counts.redirected_deletes
        ));
        if !counts.stream_events.is_empty() {
            let events: Vec<String> =
                counts.stream_events.iter().map(|(c, n)| format!("{c} {n}")).collect();
            lines.push(format!("event streams, last events: {}", events.join(", ")));
        }
        for (endpoint, outcomes) in &counts.endpoints {
            let mut outcomes: Vec<(u64, &str)> =
                outcomes.iter().map(|(o, n)| (*n, o.as_str())).collect();
            outcomes.sort_unstable_by(|a, b| b.cmp(a));
            let shown: Vec<String> = outcomes.iter().map(|(n, o)| format!("{o} {n}")).collect();
            lines.push(format!("{endpoint}: {}", shown.join(", ")));
        }
        lines
    }

    fn summary_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("operations", self.plan.operations.len().to_string()),
            ("json_body_operations", self.plan.json_body_operations().to_string()),
        ]
    }
}
