//! The platform API end to end: connections, the agent hub, the live status
//! stream, asking, history, feedback and CSV export.
//!
//! Each test serves `app(state)` on a loopback socket (agents dial it) and calls
//! the HTTP API in process on the same state. Agents are either the real agent
//! library over a SQLite file, or a scripted fake ([`FakeAgent`]) for precise
//! hub behaviour.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, BodyDataStream};
use axum::http::{Request, StatusCode, header};
use clap::Parser;
use custard_agent::backoff::Backoff;
use custard_agent::config::AgentConfig;
use custard_core::wire::{
    Columns, Done, Frame, Hello, Message, Rows, SchemaReport, WireColumnMeta,
};
use custard_core::{Column, Dialect, Schema, Table};
use custard_server::config::ServerConfig;
use custard_server::rate_limit::Limits;
use custard_server::{AppState, app};
use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use custard_testkit::smtp_sink::SmtpSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery staple";
/// The longest any one test may take.
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// How long `eventually` and event reads wait before failing.
const PATIENCE: Duration = Duration::from_secs(10);
const HOW_MANY: &str = "how many customers are there";

/// Runs a test body under [`TEST_LIMIT`].
async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("the test finished within its time limit");
}

/// Polls `check` until it holds, failing with `what` after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<none>")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[path = "platform/injection.rs"]
mod injection;
#[path = "platform/mcp.rs"]
mod mcp;
#[path = "platform/routing.rs"]
mod routing;
#[path = "platform/routing_attack.rs"]
mod routing_attack;
#[path = "platform/tokens.rs"]
mod tokens;
#[path = "platform/tokens_attack.rs"]
mod tokens_attack;

// ---------------------------------------------------------------------------
// The server

/// A server on a loopback socket, its email sink and data directory.
struct Platform {
    app: Router,
    state: AppState,
    addr: SocketAddr,
    sink: SmtpSink,
    /// Stops the real agents started by this test.
    stop: CancellationToken,
    dir: tempfile::TempDir,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A server started with `flags` on top of a fresh data dir and the SMTP sink.
async fn platform(flags: &[&str]) -> Platform {
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
    let limits = Limits { per_ip: 1000, per_account: 1000, replenish: Duration::from_millis(1) };
    let state = AppState::open_with_limits(config, limits).await.expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    Platform { app: app(state.clone()), state, addr, sink, stop: CancellationToken::new(), dir }
}

impl Platform {
    fn request(
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Request<Body> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).expect("request")
    }

    async fn send(&self, request: Request<Body>) -> axum::response::Response {
        self.app.clone().oneshot(request).await.expect("infallible")
    }

    /// One API call: status and JSON body (`Null` when the body is not JSON).
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let response = self.send(Self::request(method, path, token, body.as_ref())).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A call that must answer `want`; returns the body.
    async fn ok(
        &self,
        want: StatusCode,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, reply) = self.call(method, path, Some(token), body).await;
        assert_eq!(status, want, "{method} {path}: {reply}");
        reply
    }

    /// A server-sent event stream opened with `token`.
    async fn events(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Sse {
        let response = self.send(Self::request(method, path, Some(token), body.as_ref())).await;
        assert_eq!(response.status(), StatusCode::OK, "{method} {path}");
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/event-stream"),
            "{method} {path}"
        );
        Sse { body: response.into_body().into_data_stream(), buffer: String::new() }
    }

    /// Signs up, verifies through the emailed link and logs in: the access token.
    async fn user(&self, email: &str, org: &str) -> String {
        let mails = self.sink.messages().len();
        let body = json!({"email": email, "password": PASSWORD, "first_name": "Ada", "last_name": "Lovelace", "organization_name": org});
        let (status, reply) = self.call("POST", "/api/v1/auth/signup", None, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        let mail = self.sink.wait_for(mails + 1, PATIENCE).await;
        let text = mail.last().expect("the verification email").body().to_owned();
        let start =
            text.find("/verify-email?token=").expect("the link") + "/verify-email?token=".len();
        let token: String = text[start..].chars().take_while(|c| !c.is_whitespace()).collect();
        let token = percent_encoding::percent_decode_str(&token).decode_utf8_lossy().into_owned();
        let (status, _) = self
            .call("POST", "/api/v1/auth/verify-email", None, Some(json!({"token": token})))
            .await;
        assert_eq!(status, StatusCode::OK);
        let login = json!({"email": email, "password": PASSWORD});
        let (status, reply) = self.call("POST", "/api/v1/auth/login", None, Some(login)).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        reply["access_token"].as_str().expect("access token").to_owned()
    }

    /// Signs in again: a new session's access token.
    async fn login(&self, email: &str) -> String {
        let login = json!({"email": email, "password": PASSWORD});
        let (status, reply) = self.call("POST", "/api/v1/auth/login", None, Some(login)).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        reply["access_token"].as_str().expect("access token").to_owned()
    }

    /// A new member of `owner`'s organisation, through an invitation: (user
    /// id, access token).
    async fn member_of(&self, owner: &str, email: &str) -> (String, String) {
        let mails = self.sink.messages().len();
        let invite = json!({"email": email, "role": "member"});
        self.ok(StatusCode::CREATED, "POST", "/api/v1/org/invitations", owner, Some(invite)).await;
        let mail = self.sink.wait_for(mails + 1, PATIENCE).await;
        let text = mail
            .iter()
            .rev()
            .find(|m| m.to.iter().any(|t| t == email))
            .expect("the invitation")
            .body()
            .to_owned();
        let marker = "/accept-invitation?token=";
        let start = text.find(marker).expect("the link") + marker.len();
        let token: String = text[start..].chars().take_while(|c| !c.is_whitespace()).collect();
        let token = percent_encoding::percent_decode_str(&token).decode_utf8_lossy().into_owned();
        let join = json!({"email": email, "password": PASSWORD, "first_name": "Mo", "last_name": "Member", "invitation_token": token});
        let (status, reply) = self.call("POST", "/api/v1/auth/signup", None, Some(join)).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        let id = reply["user"]["id"].as_str().expect("id").to_owned();
        (id, self.login(email).await)
    }

    /// A new SQLite connection of the token's organisation: (id, API key).
    async fn connection(&self, token: &str, name: &str) -> (String, String) {
        let body = json!({"name": name, "db_type": "sqlite"});
        let reply =
            self.ok(StatusCode::CREATED, "POST", "/api/v1/connections", token, Some(body)).await;
        let id = reply["id"].as_str().expect("id").to_owned();
        let key = reply["api_key"].as_str().expect("api key").to_owned();
        (id, key)
    }

    async fn get_connection(&self, token: &str, id: &str) -> Value {
        self.ok(StatusCode::OK, "GET", &format!("/api/v1/connections/{id}"), token, None).await
    }

    /// Waits until the connection shows `agents` connected agents.
    async fn wait_for_agents(&self, token: &str, id: &str, agents: u64) {
        eventually(&format!("{agents} agents on {id}"), || async move {
            self.get_connection(token, id).await["agents"].as_u64() == Some(agents)
        })
        .await;
    }

    /// Waits until an agent has reported the connection's schema.
    async fn wait_for_schema(&self, token: &str, id: &str) -> Value {
        let path = format!("/api/v1/connections/{id}/schema");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, body) = self.call("GET", &path, Some(token), None).await;
            if status == StatusCode::OK {
                return body;
            }
            assert!(Instant::now() < deadline, "no schema for {id}: {body}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn ask(&self, token: &str, connection: &str, question: &str) -> (StatusCode, Value) {
        let body = json!({"connection_id": connection, "question": question});
        self.call("POST", "/api/v1/query", Some(token), Some(body)).await
    }

    fn agent_url(&self, connection: &str) -> String {
        format!("ws://{}/api/v1/connections/ws/{connection}", self.addr)
    }

    /// Starts the real agent over `database`; it stops with the test or the
    /// returned token.
    fn real_agent(&self, connection: &str, key: &str, database: &Path) -> CancellationToken {
        let database_url = format!("sqlite:{}", database.display());
        self.start_agent(self.agent_config(connection, key, &database_url))
    }

    /// The real agent's configuration for `connection` over `database_url`.
    fn agent_config(&self, connection: &str, key: &str, database_url: &str) -> AgentConfig {
        AgentConfig {
            sample_values: 5,
            shutdown_grace: Duration::from_millis(100),
            ..AgentConfig::new(self.agent_url(connection), key, database_url)
        }
    }

    /// Starts the real agent with `config`; it stops with the test or the
    /// returned token.
    fn start_agent(&self, config: AgentConfig) -> CancellationToken {
        let stop = self.stop.child_token();
        let backoff = Backoff::with(
            Duration::from_millis(50),
            Duration::from_millis(500),
            Duration::from_secs(60),
        );
        let token = stop.clone();
        tokio::spawn(async move { custard_agent::run_with_backoff(config, token, backoff).await });
        stop
    }

    /// A fake agent for `connection`, connected and welcomed.
    async fn fake_agent(&self, connection: &str, key: &str, script: Script) -> FakeAgent {
        FakeAgent::connect(&self.agent_url(connection), key, script).await
    }
}

/// A SQLite shop database with `customers` rows (ids 1..=n, cities in turn).
fn shop_database(dir: &Path, customers: usize) -> PathBuf {
    let path = dir.join(format!("shop-{customers}.sqlite"));
    let mut db = rusqlite::Connection::open(&path).expect("open sqlite");
    db.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL);",
    )
    .expect("create table");
    let tx = db.transaction().expect("transaction");
    {
        let mut insert = tx
            .prepare("INSERT INTO customers (id, name, city) VALUES (?1, ?2, ?3)")
            .expect("prepare");
        let cities = ["Paris", "London", "Berlin"];
        for i in 1..=customers {
            insert
                .execute(rusqlite::params![i as i64, format!("Customer {i}"), cities[i % 3]])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    path
}

// ---------------------------------------------------------------------------
// Server-sent events

/// Reads server-sent events from a streaming body, one at a time.
struct Sse {
    body: BodyDataStream,
    buffer: String,
}

/// One server-sent event: its name and JSON data.
#[derive(Clone, Debug)]
struct Event {
    name: String,
    data: Value,
}

/// What reading a stream gave.
enum Read {
    Event(Event),
    /// The server ended the stream.
    End,
    /// Nothing came in time.
    Quiet,
}

impl Sse {
    /// The next event within `wait`; `None` at the end of the stream or on timeout.
    async fn next(&mut self, wait: Duration) -> Option<Event> {
        match self.read(tokio::time::Instant::now() + wait).await {
            Read::Event(event) => Some(event),
            Read::End | Read::Quiet => None,
        }
    }

    /// Every event until the server ends the stream, which it must within [`PATIENCE`].
    async fn until_end(&mut self) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut events = Vec::new();
        loop {
            match self.read(deadline).await {
                Read::Event(event) => events.push(event),
                Read::End => return events,
                Read::Quiet => panic!("the stream did not end; it sent {events:?}"),
            }
        }
    }

    async fn read(&mut self, deadline: tokio::time::Instant) -> Read {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let data = serde_json::from_str(&data).expect("event data is JSON");
                return Read::Event(Event { name, data });
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(Ok(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Some(Err(e))) => panic!("the event stream failed: {e}"),
                Ok(None) => return Read::End,
                Err(_) => return Read::Quiet,
            }
        }
    }

    /// Every event until the stream ends (failing after [`PATIENCE`]).
    async fn all(&mut self) -> Vec<Event> {
        let deadline = Instant::now() + PATIENCE;
        let mut events = Vec::new();
        while let Some(event) = self.next(PATIENCE).await {
            events.push(event);
            assert!(Instant::now() < deadline, "the event stream did not end");
        }
        events
    }

    /// Events up to and including the first that `stop` accepts.
    async fn until(&mut self, what: &str, stop: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            let event = self
                .next(PATIENCE)
                .await
                .unwrap_or_else(|| panic!("no event {what}; saw {seen:?}"));
            let done = stop(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A scripted agent

/// How a [`FakeAgent`] treats `run` requests.
#[derive(Clone, Copy, Debug)]
enum OnRun {
    /// Answers with one row `[answer]` after a pause.
    Answer(Duration),
    /// Never answers (but keeps answering pings).
    Silent,
    /// Closes its socket without answering.
    HangUp,
    /// Goes quiet without closing: no answer, no more pongs (a network partition).
    Freeze,
}

/// A fake agent's behaviour.
#[derive(Clone, Copy, Debug)]
struct Script {
    on_run: OnRun,
    max_concurrency: u32,
    /// The number its answers hold.
    answer: i64,
}

impl Script {
    fn answering(answer: i64) -> Self {
        Script { on_run: OnRun::Answer(Duration::ZERO), max_concurrency: 4, answer }
    }

    fn on_run(on_run: OnRun) -> Self {
        Script { on_run, max_concurrency: 4, answer: 0 }
    }
}

/// What a fake agent saw from the server.
#[derive(Clone, Debug)]
enum Seen {
    Frame(Frame),
    /// The server's close frame: code and reason.
    Closed(u16, String),
    /// The socket ended without a close frame.
    Ended,
}

/// The schema fake agents serve: `customers(id, name, city)` in SQLite.
fn customers_schema() -> Schema {
    let mut schema = Schema::new(Dialect::Sqlite);
    schema.tables.push(Table::new(
        "main",
        "customers",
        vec![
            Column::new("id", "INTEGER"),
            Column::new("name", "TEXT"),
            Column::new("city", "TEXT"),
        ],
    ));
    schema
}

/// An agent driven by a [`Script`] over a real WebSocket, recording what it sees.
struct FakeAgent {
    seen: Arc<Mutex<Vec<Seen>>>,
    outbox: mpsc::UnboundedSender<tungstenite::Message>,
}

impl FakeAgent {
    /// Connects, says `hello` and waits for `welcome`.
    async fn connect(url: &str, key: &str, script: Script) -> FakeAgent {
        let mut request = url.into_client_request().expect("request");
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, format!("Bearer {key}").parse().expect("header"));
        let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("agent connects");
        let (mut sink, mut stream) = socket.split();
        let schema = customers_schema();
        let hello = Hello {
            agent_version: "fake-1.0".to_owned(),
            dialect: Dialect::Sqlite.as_str().to_owned(),
            capabilities: Vec::new(),
            schema_fingerprint: Some(schema.fingerprint()),
            max_concurrency: script.max_concurrency,
        };
        sink.send(text(&Frame::new("hello-1", Message::Hello(hello)))).await.expect("send hello");
        let welcome = tokio::time::timeout(PATIENCE, stream.next()).await.expect("welcome in time");
        match welcome {
            Some(Ok(tungstenite::Message::Text(t))) => {
                let frame = Frame::decode(t.as_str()).expect("a frame");
                assert!(matches!(frame.message, Message::Welcome(_)), "welcome, not {frame:?}");
            }
            other => panic!("expected welcome, got {other:?}"),
        }

        let (outbox, mut outgoing) = mpsc::unbounded_channel::<tungstenite::Message>();
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                let last = matches!(message, tungstenite::Message::Close(_));
                if sink.send(message).await.is_err() || last {
                    break;
                }
            }
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, replies) = (Arc::clone(&seen), outbox.clone());
        tokio::spawn(async move {
            let reply = |frame: Frame| {
                let _ = replies.send(text(&frame));
            };
            let mut frozen = false;
            loop {
                let frame = match stream.next().await {
                    Some(Ok(tungstenite::Message::Text(t))) => {
                        Frame::decode(t.as_str()).expect("the server sends valid frames")
                    }
                    Some(Ok(tungstenite::Message::Close(close))) => {
                        let (code, reason) = close
                            .map(|c| (u16::from(c.code), c.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        lock(&log).push(Seen::Closed(code, reason));
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        lock(&log).push(Seen::Ended);
                        break;
                    }
                };
                lock(&log).push(Seen::Frame(frame.clone()));
                match &frame.message {
                    Message::Ping if !frozen => reply(frame.reply(Message::Pong)),
                    Message::Discover(_) => {
                        reply(frame.reply(Message::Schema(SchemaReport::new(&schema))));
                    }
                    Message::Run(_) => match script.on_run {
                        OnRun::Answer(pause) => {
                            let (replies, run) = (replies.clone(), frame.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(pause).await;
                                for frame in answer_frames(&run, script.answer) {
                                    let _ = replies.send(text(&frame));
                                }
                            });
                        }
                        OnRun::Silent => {}
                        OnRun::HangUp => {
                            let _ = replies.send(tungstenite::Message::Close(None));
                        }
                        OnRun::Freeze => frozen = true,
                    },
                    _ => {}
                }
            }
        });
        FakeAgent { seen, outbox }
    }

    fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    /// The frames the server sent of one type.
    fn frames(&self, type_name: &str) -> Vec<Frame> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Frame(f) if f.message.type_name() == type_name => Some(f),
                _ => None,
            })
            .collect()
    }

    /// Waits for the server to close the socket: its close code and reason.
    async fn closed(&self) -> (u16, String) {
        let mut end = None;
        eventually("the server to close the agent's socket", || {
            end = self.seen().into_iter().find_map(|s| match s {
                Seen::Closed(code, reason) => Some((code, reason)),
                Seen::Ended => Some((0, "ended without a close frame".to_owned())),
                Seen::Frame(_) => None,
            });
            std::future::ready(end.is_some())
        })
        .await;
        end.expect("closed")
    }

    /// Closes the socket from the agent's side.
    fn hang_up(&self) {
        let _ = self.outbox.send(tungstenite::Message::Close(None));
    }
}

fn text(frame: &Frame) -> tungstenite::Message {
    tungstenite::Message::text(frame.encode())
}

/// `columns`, one row `[answer]`, `done`: a whole reply to `run`.
fn answer_frames(run: &Frame, answer: i64) -> [Frame; 3] {
    let columns = Columns {
        columns: vec![WireColumnMeta {
            name: "answer".to_owned(),
            type_name: "INTEGER".to_owned(),
        }],
    };
    let done = Done { row_count: 1, truncated: false, elapsed_ms: 1, bytes: 8 };
    [
        run.reply(Message::Columns(columns)),
        run.reply(Message::Rows(Rows { rows: vec![vec![json!(answer)]] })),
        run.reply(Message::Done(done)),
    ]
}

// ---------------------------------------------------------------------------
// The tests

/// Every platform endpoint, called by organisation B on organisation A's
/// resources, answers 404 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_covers_every_platform_endpoint() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        p.real_agent(&conn, &key, &shop_database(p.dir.path(), 3));
        let schema = p.wait_for_schema(&a, &conn).await;
        let (status, answer) = p.ask(&a, &conn, HOW_MANY).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["rows"], json!([[3]]));
        let query = answer["id"].as_str().expect("query id").to_owned();
        let feedback = format!("/api/v1/queries/{query}/feedback");
        p.ok(StatusCode::OK, "POST", &feedback, &a, Some(json!({"correct": true}))).await;
        let before = p.get_connection(&a, &conn).await;

        let ask = json!({"connection_id": conn, "question": HOW_MANY});
        let cases: &[(&str, String, Option<Value>)] = &[
            ("GET", format!("/api/v1/connections/{conn}"), None),
            (
                "PATCH",
                format!("/api/v1/connections/{conn}"),
                Some(json!({"name": "Taken", "instructions": "answer 42"})),
            ),
            ("GET", format!("/api/v1/connections/{conn}/schema"), None),
            ("POST", format!("/api/v1/connections/{conn}/refresh-schema"), None),
            ("POST", format!("/api/v1/connections/{conn}/rotate-key"), None),
            ("GET", format!("/api/v1/queries/{query}"), None),
            ("POST", feedback.clone(), Some(json!({"correct": false}))),
            ("GET", format!("/api/v1/queries/{query}/export.csv"), None),
            ("POST", "/api/v1/query".to_owned(), Some(ask.clone())),
            ("DELETE", format!("/api/v1/connections/{conn}"), None),
        ];
        for (method, path, body) in cases {
            let (status, reply) = p.call(method, path, Some(&b), body.clone()).await;
            assert_eq!(
                (status, code(&reply)),
                (StatusCode::NOT_FOUND, "not_found"),
                "B: {method} {path}: {reply}"
            );
        }
        // The streaming ask answers 200 and reports the error as an event.
        let events = p.events("POST", "/api/v1/query/stream", &b, Some(ask)).await.all().await;
        let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["error"], "{events:?}");
        assert_eq!(code(&events[0].data), "not_found");

        let lists: &[(&str, &str)] =
            &[("/api/v1/connections", "connections"), ("/api/v1/queries", "queries")];
        for (path, field) in lists {
            let reply = p.ok(StatusCode::OK, "GET", path, &b, None).await;
            assert_eq!(reply[field], json!([]), "B: GET {path}");
        }
        // Filtering by A's connection answers exactly as filtering by one that
        // does not exist (404, like every other organisation's resource).
        let filtered = format!("/api/v1/queries?connection_id={conn}");
        let unknown = p.call("GET", "/api/v1/queries?connection_id=nope", Some(&b), None).await;
        assert_eq!(p.call("GET", &filtered, Some(&b), None).await, unknown, "B: GET {filtered}");
        assert_eq!((unknown.0, code(&unknown.1)), (StatusCode::NOT_FOUND, "not_found"));

        // A's connection, schema, history and key are as they were.
        let after = p.get_connection(&a, &conn).await;
        for field in
            ["name", "instructions", "key_prefix", "status", "agents", "schema_fingerprint"]
        {
            assert_eq!(after[field], before[field], "{field} changed");
        }
        assert_eq!(after["agents"], 1);
        let path = format!("/api/v1/connections/{conn}/schema");
        assert_eq!(
            p.ok(StatusCode::OK, "GET", &path, &a, None).await["fingerprint"],
            schema["fingerprint"]
        );
        let stored =
            p.ok(StatusCode::OK, "GET", &format!("/api/v1/queries/{query}"), &a, None).await;
        assert_eq!(stored["feedback"], "correct");
        let history = p.ok(StatusCode::OK, "GET", "/api/v1/queries", &a, None).await;
        assert_eq!(
            history["queries"].as_array().map(Vec::len),
            Some(1),
            "B's asks were not recorded for A"
        );
        let (status, again) = p.ask(&a, &conn, HOW_MANY).await;
        assert_eq!(
            (status, &again["rows"]),
            (StatusCode::OK, &json!([[3]])),
            "A's agent still answers"
        );
        let extra = p.fake_agent(&conn, &key, Script::answering(3)).await;
        p.wait_for_agents(&a, &conn, 2).await;
        extra.hang_up();
    })
    .await;
}

/// The agent socket takes only the current key of exactly its connection;
/// everything else is a 401 with the API's error body and a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_rejects_keys_of_other_connections() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        let (a_conn, old_key) = p.connection(&a, "Shop A").await;
        let (b_conn, b_key) = p.connection(&b, "Shop B").await;
        let path = format!("/api/v1/connections/{a_conn}/rotate-key");
        let rotated = p.ok(StatusCode::OK, "POST", &path, &a, None).await;
        let a_key = rotated["api_key"].as_str().expect("new key").to_owned();
        assert_ne!(a_key, old_key);

        let bearer = |k: &str| Some(format!("Bearer {k}"));
        let cases: &[(&str, &str, Option<String>, &str)] = &[
            (
                "A's key on B's connection",
                b_conn.as_str(),
                bearer(&a_key),
                "belongs to another connection",
            ),
            (
                "B's key on A's connection",
                a_conn.as_str(),
                bearer(&b_key),
                "belongs to another connection",
            ),
            ("A's key on an unknown connection", "nope", bearer(&a_key), "another connection"),
            ("a malformed key", &a_conn, bearer("custard_abc"), "malformed"),
            ("a user's access token", &a_conn, bearer(&a), "malformed"),
            ("no key", &a_conn, None, "Authorization: Bearer"),
            ("a key without `Bearer`", &a_conn, Some(a_key.clone()), "Authorization: Bearer"),
            ("the old key after rotate-key", &a_conn, bearer(&old_key), "rotated"),
        ];
        for (case, connection, authorization, message) in cases {
            let path = format!("/api/v1/connections/ws/{connection}");
            let mut request = Request::builder().uri(&path);
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            let response = p.send(request.body(Body::empty()).expect("request")).await;
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
            let body: Value = serde_json::from_slice(&bytes).expect("a JSON body");
            assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"), "{case}");
            let text = body["error"]["message"].as_str().expect("message");
            assert!(text.contains(message), "{case}: {text}");
            assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{case}: {body}");
            assert_eq!(body["error"].as_object().map(|o| o.len()), Some(2), "{case}: {body}");
            for key in [&a_key, &old_key, &b_key] {
                assert!(!text.contains(key.as_str()), "{case}: the message echoes a key");
            }

            // The same over a real WebSocket handshake.
            let mut request = p.agent_url(connection).into_client_request().expect("request");
            if let Some(value) = authorization {
                request.headers_mut().insert(header::AUTHORIZATION, value.parse().expect("header"));
            }
            match tokio_tungstenite::connect_async(request).await {
                Err(tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
                }
                Err(other) => panic!("{case}: expected an HTTP 401, got {other}"),
                Ok(_) => panic!("{case}: the socket was accepted"),
            }
        }
        // The current key still gets in.
        let agent = p.fake_agent(&a_conn, &a_key, Script::answering(1)).await;
        p.wait_for_agents(&a, &a_conn, 1).await;
        agent.hang_up();
    })
    .await;
}

/// One key cannot fill the server with sessions: agents beyond the caps per
/// connection and per organisation get an `error` (`too_many_agents`) and a
/// close frame saying why, and the sessions already open keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sessions_are_capped_per_connection_and_per_organisation() {
    bounded(async {
        let p = platform(&["--max-agents-per-connection", "2", "--max-agents-per-org", "3"]).await;
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        let (one, one_key) = p.connection(&a, "Shop one").await;
        let (two, two_key) = p.connection(&a, "Shop two").await;
        let (other, other_key) = p.connection(&b, "Shop B").await;

        // Says hello and returns the server's first frame's type and the close reason.
        let refused = |url: String, key: String| async move {
            let mut request = url.into_client_request().expect("request");
            let bearer = format!("Bearer {key}").parse().expect("header");
            request.headers_mut().insert(header::AUTHORIZATION, bearer);
            let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
            let hello = Hello {
                agent_version: "fake-1.0".to_owned(),
                dialect: "sqlite".to_owned(),
                capabilities: Vec::new(),
                schema_fingerprint: None,
                max_concurrency: 1,
            };
            socket.send(text(&Frame::new("h", Message::Hello(hello)))).await.expect("hello");
            let mut first = None;
            let mut reason = String::new();
            while let Ok(Some(Ok(message))) = tokio::time::timeout(PATIENCE, socket.next()).await {
                match message {
                    tungstenite::Message::Text(t) => {
                        let frame = Frame::decode(t.as_str()).expect("a frame");
                        first.get_or_insert(frame.message);
                    }
                    tungstenite::Message::Close(close) => {
                        reason = close.map(|c| c.reason.to_string()).unwrap_or_default();
                        break;
                    }
                    _ => {}
                }
            }
            (first, reason)
        };

        let _a1 = p.fake_agent(&one, &one_key, Script::answering(1)).await;
        let _a2 = p.fake_agent(&one, &one_key, Script::answering(1)).await;
        p.wait_for_agents(&a, &one, 2).await;
        let (first, reason) = refused(p.agent_url(&one), one_key.clone()).await;
        match first {
            Some(Message::Error(report)) => assert_eq!(report.code, "too_many_agents"),
            other => panic!("a third agent on one connection: {other:?}"),
        }
        assert!(reason.contains("CUSTARD_MAX_AGENTS_PER_CONNECTION"), "{reason}");

        let _a3 = p.fake_agent(&two, &two_key, Script::answering(1)).await;
        p.wait_for_agents(&a, &two, 1).await;
        let (first, reason) = refused(p.agent_url(&two), two_key.clone()).await;
        assert!(
            matches!(first, Some(Message::Error(ref r)) if r.code == "too_many_agents"),
            "{first:?}"
        );
        assert!(reason.contains("CUSTARD_MAX_AGENTS_PER_ORG"), "{reason}");

        // Another organisation is not affected, and the open sessions answer.
        let _b1 = p.fake_agent(&other, &other_key, Script::answering(7)).await;
        p.wait_for_agents(&b, &other, 1).await;
        p.wait_for_agents(&a, &one, 2).await;
    })
    .await;
}

/// Rotating the key or deleting the connection closes live agent sockets at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_and_delete_disconnect_live_agents() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        let agent = p.fake_agent(&conn, &key, Script::answering(1)).await;
        p.wait_for_agents(&a, &conn, 1).await;

        let started = Instant::now();
        let path = format!("/api/v1/connections/{conn}/rotate-key");
        let rotated = p.ok(StatusCode::OK, "POST", &path, &a, None).await;
        let (close_code, reason) = agent.closed().await;
        assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
        assert_eq!((close_code, reason.as_str()), (1008, "the API key was rotated"));
        p.wait_for_agents(&a, &conn, 0).await;
        assert_eq!(p.get_connection(&a, &conn).await["status"], "offline");

        let new_key = rotated["api_key"].as_str().expect("new key");
        let agent = p.fake_agent(&conn, new_key, Script::answering(1)).await;
        p.wait_for_agents(&a, &conn, 1).await;
        let started = Instant::now();
        p.ok(StatusCode::NO_CONTENT, "DELETE", &format!("/api/v1/connections/{conn}"), &a, None)
            .await;
        let (close_code, reason) = agent.closed().await;
        assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
        assert_eq!((close_code, reason.as_str()), (1008, "the connection was deleted"));
        let server = &p;
        eventually("no agent online", || async move {
            server.call("GET", "/status", None, None).await.1["agents_online"] == 0
        })
        .await;
        let (status, _) =
            p.call("GET", &format!("/api/v1/connections/{conn}"), Some(&a), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

/// The rotate-key reply does not count the agent it just revoked as connected.
///
/// On one thread the handler runs from `disconnect` to building its reply
/// without the agent's socket task getting a turn, so this is deterministic;
/// on several threads the reply says `online` or `offline` by chance.
#[tokio::test(flavor = "current_thread")]
async fn rotate_key_reply_does_not_count_the_revoked_agent() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        let agent = p.fake_agent(&conn, &key, Script::answering(1)).await;
        p.wait_for_agents(&a, &conn, 1).await;
        let path = format!("/api/v1/connections/{conn}/rotate-key");
        let rotated = p.ok(StatusCode::OK, "POST", &path, &a, None).await;
        agent.closed().await;
        assert_eq!(
            (&rotated["agents"], &rotated["status"]),
            (&json!(0), &json!("offline")),
            "the reply still counts the agent whose key was just revoked"
        );
    })
    .await;
}

/// The status stream carries only the subscriber's organisation's connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_stream_is_scoped_to_the_organisation() {
    bounded(async {
        let p = platform(&[]).await;
        let (status, body) = p.call("GET", "/api/v1/connections/events", None, None).await;
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        let (a_conn, a_key) = p.connection(&a, "Shop A").await;
        let (b_conn, b_key) = p.connection(&b, "Shop B").await;
        let mut a_events = p.events("GET", "/api/v1/connections/events", &a, None).await;
        let mut b_events = p.events("GET", "/api/v1/connections/events", &b, None).await;

        // Each stream starts with its own organisation's connections.
        let first = a_events.next(PATIENCE).await.expect("A's snapshot");
        assert_eq!((first.name.as_str(), &first.data["id"]), ("status", &json!(a_conn)));
        let first = b_events.next(PATIENCE).await.expect("B's snapshot");
        assert_eq!((first.name.as_str(), &first.data["id"]), ("status", &json!(b_conn)));

        let agent = p.fake_agent(&a_conn, &a_key, Script::answering(1)).await;
        let seen =
            a_events.until("agent_connected", |e| e.data["event"] == "agent_connected").await;
        let connected = seen.last().expect("event");
        assert_eq!(connected.data["id"], json!(a_conn));
        assert_eq!(connected.data["agents"], 1);
        agent.hang_up();
        let seen =
            a_events.until("agent_disconnected", |e| e.data["event"] == "agent_disconnected").await;
        let disconnected = seen.last().expect("event");
        assert_eq!(disconnected.data["id"], json!(a_conn));
        assert_eq!(disconnected.data["agents"], 0);
        assert!(seen.iter().all(|e| e.data["id"] == json!(a_conn)), "{seen:?}");

        // B's own event comes after A's in the hub's one channel, so anything
        // of A's that leaked would arrive before it.
        let b_agent = p.fake_agent(&b_conn, &b_key, Script::answering(1)).await;
        let seen =
            b_events.until("B's agent_connected", |e| e.data["event"] == "agent_connected").await;
        for event in &seen {
            assert_eq!(event.data["id"], json!(b_conn), "B saw {event:?}");
            assert!(!event.data.to_string().contains(&a_conn), "B saw {event:?}");
        }
        b_agent.hang_up();
    })
    .await;
}

/// A question in flight fails as soon as its agent goes, and a silent agent
/// gets a `cancel` when the question times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_fail_fast_when_the_agent_drops() {
    bounded(async {
        let p = platform(&["--query-timeout-secs", "30", "--agent-heartbeat-ms", "200"]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        let agent = p.fake_agent(&conn, &key, Script::on_run(OnRun::HangUp)).await;
        p.wait_for_schema(&a, &conn).await;
        let started = Instant::now();
        let (status, reply) = p.ask(&a, &conn, HOW_MANY).await;
        let took = started.elapsed();
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::BAD_GATEWAY, "agent_disconnected"),
            "{reply}"
        );
        assert!(took < Duration::from_secs(5), "failed after {took:?}, not at once");
        assert_eq!(agent.frames("run").len(), 1);
        let history = p.ok(StatusCode::OK, "GET", "/api/v1/queries", &a, None).await;
        assert_eq!(history["queries"][0]["outcome"], "agent_disconnected");
        assert_eq!(history["queries"][0]["source"], "api", "asked through the API");

        // An agent that goes quiet mid-query without closing is dropped after
        // three silent heartbeats, and the question fails then.
        p.wait_for_agents(&a, &conn, 0).await;
        let agent = p.fake_agent(&conn, &key, Script::on_run(OnRun::Freeze)).await;
        p.wait_for_agents(&a, &conn, 1).await;
        let started = Instant::now();
        let (status, reply) = p.ask(&a, &conn, HOW_MANY).await;
        let took = started.elapsed();
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::BAD_GATEWAY, "agent_disconnected"),
            "{reply}"
        );
        assert!(took < Duration::from_secs(5), "failed after {took:?}, not at the heartbeat");
        let (close_code, reason) = agent.closed().await;
        assert_eq!((close_code, reason.as_str()), (1001, "the agent went silent"));
        drop(p);

        let p = platform(&["--query-timeout-secs", "1"]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        let agent = p.fake_agent(&conn, &key, Script::on_run(OnRun::Silent)).await;
        p.wait_for_schema(&a, &conn).await;
        let started = Instant::now();
        let (status, reply) = p.ask(&a, &conn, HOW_MANY).await;
        let took = started.elapsed();
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::GATEWAY_TIMEOUT, "query_timeout"),
            "{reply}"
        );
        assert!(took >= Duration::from_secs(1), "timed out after {took:?}");
        assert!(took < Duration::from_secs(15), "timed out after {took:?}");
        let runs = agent.frames("run");
        assert_eq!(runs.len(), 1);
        eventually("a cancel for the run", || {
            let cancelled = agent
                .frames("cancel")
                .iter()
                .any(|f| matches!(&f.message, Message::Cancel(c) if c.target == runs[0].id));
            std::future::ready(cancelled)
        })
        .await;
    })
    .await;
}

/// A server shutting down (its HTTP side stopped taking requests) lets its
/// agents finish the questions they still run, then closes their sessions
/// with 1012 ("service restart") so they connect again at once, to whichever
/// server answers; it resolves once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_finishes_its_questions_then_moves_its_agents() {
    bounded(async {
        let p = platform(&["--agent-heartbeat-ms", "200"]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        let pause = Duration::from_millis(800);
        let agent = p.fake_agent(&conn, &key, Script::on_run(OnRun::Answer(pause))).await;
        p.wait_for_schema(&a, &conn).await;
        let asking = {
            let (app, token, conn) = (p.app.clone(), a.clone(), conn.clone());
            tokio::spawn(async move {
                let body = json!({"connection_id": conn, "question": HOW_MANY});
                let request = Platform::request("POST", "/api/v1/query", Some(&token), Some(&body));
                app.oneshot(request).await.expect("infallible").status()
            })
        };
        eventually("the question to reach the agent", || {
            std::future::ready(!agent.frames("run").is_empty())
        })
        .await;
        let draining = {
            let state = p.state.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                state.drain_agents(Duration::from_secs(10)).await;
                started.elapsed()
            })
        };
        assert_eq!(asking.await.expect("task"), StatusCode::OK, "the question in flight finished");
        let (close_code, reason) = agent.closed().await;
        assert_eq!(
            (close_code, reason.as_str()),
            (1012, "the server is shutting down; connect again")
        );
        let took = draining.await.expect("drain");
        assert!(took < Duration::from_secs(10), "the sessions were gone after {took:?}");
    })
    .await;
}

/// Questions go to the least busy agent; with every agent at its limit the
/// next question gets `agent_busy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_agent_and_load_spreading() {
    bounded(async {
        let p = platform(&["--query-timeout-secs", "2"]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        // Answers take longer than a question waits for a free agent (the 2 s query
        // timeout) but come within the hub's deadline (the timeout plus a grace of
        // at most the timeout: 4 s).
        let slow = |answer| Script {
            on_run: OnRun::Answer(Duration::from_secs(3)),
            max_concurrency: 1,
            answer,
        };
        let first = p.fake_agent(&conn, &key, slow(1)).await;
        p.wait_for_schema(&a, &conn).await;
        let second = p.fake_agent(&conn, &key, slow(2)).await;
        p.wait_for_agents(&a, &conn, 2).await;

        let (r1, r2, r3) = tokio::join!(
            p.ask(&a, &conn, HOW_MANY),
            p.ask(&a, &conn, HOW_MANY),
            p.ask(&a, &conn, HOW_MANY),
        );
        let mut outcomes: Vec<(StatusCode, String)> = [r1, r2, r3]
            .into_iter()
            .map(|(status, reply)| {
                let what = match status {
                    StatusCode::OK => reply["rows"].to_string(),
                    _ => code(&reply).to_owned(),
                };
                (status, what)
            })
            .collect();
        outcomes.sort();
        assert_eq!(
            outcomes,
            [
                (StatusCode::OK, "[[1]]".to_owned()),
                (StatusCode::OK, "[[2]]".to_owned()),
                (StatusCode::SERVICE_UNAVAILABLE, "agent_busy".to_owned()),
            ]
        );
        assert_eq!(first.frames("run").len(), 1, "{:?}", first.seen());
        assert_eq!(second.frames("run").len(), 1, "{:?}", second.seen());
        assert!(second.frames("discover").is_empty(), "the known schema was not asked again");
        // A run carries the plain checked query and its row cap; the agent wraps it.
        for run in first.frames("run").into_iter().chain(second.frames("run")) {
            let Message::Run(run) = run.message else { unreachable!("a run frame") };
            assert!(!run.sql.contains("custard_result"), "{}", run.sql);
            assert!(run.sql.to_ascii_uppercase().contains("COUNT("), "{}", run.sql);
            assert_eq!(run.max_rows, 1000);
        }
    })
    .await;
}

/// A question marked correct becomes an example in the prompt for a similar
/// question; one marked incorrect (or not marked) does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_turns_answers_into_examples() {
    bounded(async {
        let sql_for = |question: &str| -> &'static str {
            match question {
                "how many customers are there" => {
                    "SELECT COUNT(*) AS customer_count FROM customers"
                }
                "how many customers live in Paris" => {
                    "SELECT COUNT(*) AS wrong_count FROM customers WHERE city = 'Berlin'"
                }
                "how many customers live in London" => {
                    "SELECT COUNT(*) AS london_count FROM customers WHERE city = 'London'"
                }
                _ => "SELECT COUNT(*) AS total FROM customers",
            }
        };
        let llm = FakeOpenAi::with_responder(move |request| {
            let question = request.last_user_message().unwrap_or_default();
            Behaviour::reply(format!("```sql\n{}\n```", sql_for(question)))
        })
        .await;
        let base_url = llm.base_url();
        let p = platform(&["--llm-base-url", &base_url, "--llm-model", "fake-model"]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        p.real_agent(&conn, &key, &shop_database(p.dir.path(), 6));
        p.wait_for_schema(&a, &conn).await;

        let mut asked = Vec::new();
        for (question, correct) in [
            ("how many customers are there", Some(true)),
            ("how many customers live in Paris", Some(false)),
            ("how many customers live in London", None),
        ] {
            let (status, reply) = p.ask(&a, &conn, question).await;
            assert_eq!(status, StatusCode::OK, "{question}: {reply}");
            assert_eq!(reply["engine"], "fake-model");
            let id = reply["id"].as_str().expect("id");
            if let Some(correct) = correct {
                let path = format!("/api/v1/queries/{id}/feedback");
                let marked = p
                    .ok(StatusCode::OK, "POST", &path, &a, Some(json!({"correct": correct})))
                    .await;
                assert_eq!(marked["feedback"], if correct { "correct" } else { "incorrect" });
            }
            asked.push(reply);
        }

        let similar = "how many customers do we have";
        let (status, reply) = p.ask(&a, &conn, similar).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let requests = llm.requests();
        let prompt = requests
            .iter()
            .filter_map(|r| r.body.as_ref())
            .find(|b| b.last_user_message() == Some(similar))
            .expect("the model was asked the similar question");
        let messages = prompt.roles_and_contents();
        let example = messages
            .iter()
            .position(|m| *m == ("user", "how many customers are there"))
            .unwrap_or_else(|| panic!("the approved question is an example: {messages:#?}"));
        let (role, content) = messages[example + 1];
        assert_eq!(role, "assistant");
        assert!(
            content.contains("SELECT COUNT(*) AS customer_count FROM customers"),
            "the example carries the approved SQL: {content}"
        );
        assert!(
            content.contains(asked[0]["sql_query"].as_str().expect("sql")),
            "the example is the SQL the history recorded: {content}"
        );
        // The schema's sample values may name the cities; the questions and SQL may not.
        for (role, content) in &messages {
            for left_out in ["live in Paris", "wrong_count", "live in London", "london_count"] {
                assert!(!content.contains(left_out), "{left_out} leaked into {role}: {content}");
            }
        }
    })
    .await;
}

/// `POST /api/v1/query/stream` reports each step, then the answer, or an error event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_ask_reports_steps_then_answer() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        p.real_agent(&conn, &key, &shop_database(p.dir.path(), 3));
        p.wait_for_schema(&a, &conn).await;

        let ask = json!({"connection_id": conn, "question": HOW_MANY});
        let events = p.events("POST", "/api/v1/query/stream", &a, Some(ask)).await.all().await;
        let (answer, steps) = events.split_last().expect("events");
        let steps: Vec<(&str, &str)> = steps
            .iter()
            .map(|e| (e.name.as_str(), e.data["step"].as_str().unwrap_or("?")))
            .collect();
        assert_eq!(
            steps,
            [
                ("step", "retrieving"),
                ("step", "generating"),
                ("step", "checking"),
                ("step", "running"),
                ("step", "summarising"),
            ]
        );
        assert_eq!(answer.name, "answer", "{:?}", answer.data);
        assert_eq!(answer.data["rows"], json!([[3]]));
        let id = answer.data["id"].as_str().expect("the answer is recorded");
        let stored = p.ok(StatusCode::OK, "GET", &format!("/api/v1/queries/{id}"), &a, None).await;
        assert_eq!(stored["outcome"], "ok");

        let (offline, _) = p.connection(&a, "No agent yet").await;
        let ask = json!({"connection_id": offline, "question": HOW_MANY});
        let events = p.events("POST", "/api/v1/query/stream", &a, Some(ask)).await.all().await;
        let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["error"], "{events:?}");
        assert_eq!(code(&events[0].data), "agent_offline");
    })
    .await;
}

/// The answer carries the first 1,000 rows; the CSV export carries all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_csv_streams_the_full_result() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        p.real_agent(&conn, &key, &shop_database(p.dir.path(), 3000));
        p.wait_for_schema(&a, &conn).await;

        let (status, answer) = p.ask(&a, &conn, "list the customers").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["rows"].as_array().map(Vec::len), Some(1000));
        assert_eq!(answer["truncated"], true);
        let id = answer["id"].as_str().expect("id");

        let path = format!("/api/v1/queries/{id}/export.csv");
        let response = p.send(Platform::request("GET", &path, Some(&a), None)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/csv; charset=utf-8")
        );
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20).await.expect("csv");
        let csv = String::from_utf8(bytes.to_vec()).expect("utf-8");
        let lines: Vec<&str> = csv.lines().collect();
        let columns: Vec<&str> = lines[0].split(',').collect();
        assert!(columns.contains(&"name"), "a header line: {}", lines[0]);
        let name_at = columns.iter().position(|c| *c == "name").expect("name column");
        let names: std::collections::BTreeSet<&str> =
            lines[1..].iter().map(|l| l.split(',').nth(name_at).unwrap_or("")).collect();
        let sql = &answer["sql_query"];
        assert_eq!(lines.len(), 3001, "a header and 3,000 rows; the recorded SQL was {sql}");
        assert_eq!(names.len(), 3000, "every customer once");
        assert!(names.contains("Customer 3000"));
    })
    .await;
}

/// A question is checked once, by core's rule, before anything else: an empty
/// or too long one is `invalid_question` with core's message, even with no
/// agent connected, and is not recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_are_checked_by_one_rule_before_anything_else() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, _key) = p.connection(&a, "Shop").await;
        let long = "x".repeat(custard_core::MAX_QUESTION_BYTES + 1);
        for question in ["", "  \n\t ", long.as_str()] {
            let (status, reply) = p.ask(&a, &conn, question).await;
            assert_eq!(
                (status, code(&reply)),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_question")
            );
            let expected = custard_core::AskRequest::check_question(question).unwrap_err();
            assert_eq!(reply["error"]["message"], expected.to_string(), "{reply}");
        }
        let history = p.ok(StatusCode::OK, "GET", "/api/v1/queries", &a, None).await;
        assert_eq!(history["queries"].as_array().map(Vec::len), Some(0), "{history}");
    })
    .await;
}

/// A model that is down, and a model whose every SQL the guard refuses, get
/// their own clear errors (never a 200), and both are recorded in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_failures_and_refused_sql_have_their_own_codes() {
    bounded(async {
        let llm = FakeOpenAi::with_responder(|request| {
            // Repairs resend the question in an earlier message.
            if request.messages.iter().any(|m| m.content.contains("delete every")) {
                Behaviour::reply("```sql\nDELETE FROM customers\n```")
            } else {
                Behaviour::status(500, "the model is down")
            }
        })
        .await;
        let base_url = llm.base_url();
        let p = platform(&["--llm-base-url", &base_url, "--llm-model", "fake-model"]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        p.real_agent(&conn, &key, &shop_database(p.dir.path(), 3));
        p.wait_for_schema(&a, &conn).await;

        let (status, reply) = p.ask(&a, &conn, HOW_MANY).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{reply}");
        assert_eq!(code(&reply), "llm_unavailable");
        // Tenants see the code and a generic sentence, never what the model's
        // endpoint said nor where it is (finding 14); the operator's log has them.
        let endpoint = base_url.trim_start_matches("http://").split('/').next().expect("host");
        let web = p.web_session(&a).await;
        let form = [("connection_id", conn.as_str()), ("question", HOW_MANY)];
        let (_, _, card) = p.web("POST", "/ask", &web.cookie, Some(&form), Some(&web.csrf)).await;
        let message = reply["error"]["message"].as_str().expect("a message");
        for shown in [message, card.as_str()] {
            assert!(shown.contains("llm_unavailable"), "{shown}");
            for upstream in ["the model is down", endpoint, "HTTP 500", "http://"] {
                assert!(!shown.contains(upstream), "{upstream} shown: {shown}");
            }
        }

        // The guard refuses the DELETE on every attempt (the first and each repair).
        let (status, reply) = p.ask(&a, &conn, "please delete every customer").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
        assert_eq!(code(&reply), "no_valid_query");
        assert!(reply["error"]["message"].as_str().unwrap_or_default().contains("DELETE"));

        let history = p.ok(StatusCode::OK, "GET", "/api/v1/queries", &a, None).await;
        let outcomes: Vec<&str> = history["queries"]
            .as_array()
            .expect("queries")
            .iter()
            .map(|q| q["outcome"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(outcomes, ["no_valid_query", "llm_unavailable", "llm_unavailable"]);
        for q in history["queries"].as_array().expect("queries") {
            let recorded = q["error_message"].as_str().unwrap_or_default();
            assert!(!recorded.contains("the model is down"), "the history: {recorded}");
        }
        let refused = &history["queries"][0];
        assert_eq!(refused["sql_query"], "DELETE FROM customers", "the last SQL tried is kept");
    })
    .await;
}

/// A socket that passed the key check before a rotation but says `hello` only
/// after it is refused: a revoked key never gets a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_during_the_handshake_gets_no_session() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        let mut request = p.agent_url(&conn).into_client_request().expect("request");
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, format!("Bearer {key}").parse().expect("header"));
        let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("upgraded");
        let (mut sink, mut stream) = socket.split();

        let path = format!("/api/v1/connections/{conn}/rotate-key");
        p.ok(StatusCode::OK, "POST", &path, &a, None).await;

        let hello = Hello {
            agent_version: "late-1.0".to_owned(),
            dialect: Dialect::Sqlite.as_str().to_owned(),
            capabilities: Vec::new(),
            schema_fingerprint: None,
            max_concurrency: 1,
        };
        sink.send(text(&Frame::new("hello-1", Message::Hello(hello)))).await.expect("hello");
        let mut refused = false;
        while let Ok(Some(message)) = tokio::time::timeout(PATIENCE, stream.next()).await {
            match message {
                Ok(tungstenite::Message::Text(t)) => {
                    let frame = Frame::decode(t.as_str()).expect("a frame");
                    assert!(
                        !matches!(frame.message, Message::Welcome(_)),
                        "a revoked key was welcomed"
                    );
                    if let Message::Error(e) = frame.message {
                        assert_eq!(e.code, "unauthorized", "{e:?}");
                        refused = true;
                    }
                }
                Ok(tungstenite::Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        assert!(refused, "the late hello got an `unauthorized` error frame");
        assert_eq!(p.get_connection(&a, &conn).await["agents"], 0);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Web pages (cookie session + CSRF) over the same platform

/// A browser's session: its cookies and the CSRF token of its pages.
struct WebSession {
    cookie: String,
    csrf: String,
}

/// The API key a connection's page shows once (`<pre id="api-key">`), if any.
fn shown_key(page: &str) -> Option<String> {
    let marker = "id=\"api-key\" class=\"secret\">";
    let start = page.find(marker)? + marker.len();
    Some(page[start..].chars().take_while(|c| *c != '<').collect())
}

impl Platform {
    /// A browser session for an access token: the session cookie plus the
    /// CSRF nonce cookie and token a page hands out.
    async fn web_session(&self, token: &str) -> WebSession {
        let session = format!("custard_session={token}");
        let response = self.web("GET", "/connections", &session, None, None).await;
        assert_eq!(response.0, StatusCode::OK);
        let nonce = response
            .1
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("custard_csrf="))
            .and_then(|c| c.split(';').next())
            .expect("a CSRF cookie")
            .to_owned();
        let html = response.2;
        let start = html.find("name=\"csrf_token\" value=\"").expect("a CSRF field")
            + "name=\"csrf_token\" value=\"".len();
        let csrf = html[start..].split('"').next().expect("the token").to_owned();
        WebSession { cookie: format!("{session}; custard_csrf={nonce}"), csrf }
    }

    /// A signed-out browser: the CSRF nonce cookie and the token of `/login`.
    async fn visitor(&self) -> WebSession {
        let (status, headers, html) = self.web("GET", "/login", "", None, None).await;
        assert_eq!(status, StatusCode::OK);
        let nonce = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("custard_csrf="))
            .and_then(|c| c.split(';').next())
            .expect("a CSRF cookie")
            .to_owned();
        let start = html.find("name=\"csrf_token\" value=\"").expect("a CSRF field")
            + "name=\"csrf_token\" value=\"".len();
        let csrf = html[start..].split('"').next().expect("the token").to_owned();
        WebSession { cookie: format!("custard_csrf={nonce}"), csrf }
    }

    /// The token of the link in the newest email to `to` (after `before`
    /// emails), where the link's path is `marker` (`/reset-password?token=`).
    async fn mailed_token(&self, before: usize, to: &str, marker: &str) -> String {
        // Other emails (sign-ups are mailed in the background) may arrive in
        // between: wait for the one to `to` that holds the link.
        let mut seen = before + 1;
        let text = loop {
            let mail = self.sink.wait_for(seen, PATIENCE).await;
            let found = mail[before..]
                .iter()
                .rev()
                .find(|m| m.to.iter().any(|t| t == to) && m.body().contains(marker));
            if let Some(m) = found {
                break m.body().to_owned();
            }
            seen = mail.len() + 1;
        };
        let start = text.find(marker).expect("the link") + marker.len();
        let token: String = text[start..].chars().take_while(|c| !c.is_whitespace()).collect();
        percent_encoding::percent_decode_str(&token).decode_utf8_lossy().into_owned()
    }

    /// Posts a form that must succeed with Post/Redirect/Get: a 303 whose
    /// target is a page (200, HTML). Returns the target; a new session cookie
    /// the answer sets replaces the one in `web`.
    async fn post_redirects(
        &self,
        web: &mut WebSession,
        path: &str,
        form: &[(&str, &str)],
    ) -> String {
        let csrf = web.csrf.clone();
        let (status, headers, body) =
            self.web("POST", path, &web.cookie, Some(form), Some(&csrf)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "POST {path} answers a redirect: {body}");
        assert!(body.is_empty(), "POST {path} renders nothing: {body}");
        let to = headers["location"].to_str().expect("location").to_owned();
        for cookie in headers.get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            if let Some(rest) = cookie.strip_prefix("custard_session=") {
                let value = rest.split(';').next().unwrap_or_default();
                let others: Vec<&str> =
                    web.cookie.split("; ").filter(|c| !c.starts_with("custard_session=")).collect();
                let mut jar = others.join("; ");
                if !cookie.contains("Max-Age=0") {
                    jar = format!("custard_session={value}; {jar}");
                }
                web.cookie = jar;
            }
        }
        to
    }

    /// A GET that must be a page (200, HTML); its body.
    async fn page(&self, web: &WebSession, path: &str) -> String {
        let (status, headers, body) = self.web("GET", path, &web.cookie, None, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        let kind = headers[header::CONTENT_TYPE].to_str().unwrap_or_default();
        assert!(kind.starts_with("text/html"), "GET {path} is a page: {kind}");
        body
    }

    /// One browser request: status, headers and body text. `form` is sent
    /// urlencoded; `csrf_header` as `X-CSRF-Token`.
    async fn web(
        &self,
        method: &str,
        path: &str,
        cookie: &str,
        form: Option<&[(&str, &str)]>,
        csrf_header: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut request =
            Request::builder().method(method).uri(path).header(header::COOKIE, cookie);
        if let Some(token) = csrf_header {
            request = request.header("x-csrf-token", token);
        }
        let body = match form {
            Some(pairs) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                let encoded: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| {
                        let v = percent_encoding::utf8_percent_encode(
                            v,
                            percent_encoding::NON_ALPHANUMERIC,
                        );
                        format!("{k}={v}")
                    })
                    .collect();
                Body::from(encoded.join("&"))
            }
            None => Body::empty(),
        };
        let response = self.send(request.body(body).expect("request")).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20).await.expect("body");
        (status, headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Starts a real agent on a fresh SQLite shop for `conn` and waits for its schema.
    async fn shop_agent(&self, token: &str, conn: &str, key: &str, customers: usize) {
        let database = shop_database(self.dir.path(), customers);
        self.real_agent(conn, key, &database);
        self.wait_for_schema(token, conn).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn web_pages_and_actions_are_scoped_to_the_organisation() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        let (conn, key) = p.connection(&a, "Secret shop").await;
        p.shop_agent(&a, &conn, &key, 9).await;
        let (status, answer) = p.ask(&a, &conn, HOW_MANY).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let query = answer["id"].as_str().expect("query id").to_owned();

        let web_a = p.web_session(&a).await;
        let (status, _, page) =
            p.web("GET", &format!("/connections/{conn}"), &web_a.cookie, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("Secret shop") && page.contains("customers"), "A sees its schema");
        assert!(!page.contains(&key), "the API key is never shown again");

        let web_b = p.web_session(&b).await;
        for path in ["/", "/connections", "/history"] {
            let (status, headers, page) = p.web("GET", path, &web_b.cookie, None, None).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(headers.contains_key("content-security-policy"), "{path} has a CSP");
            assert_eq!(headers["x-frame-options"], "DENY", "{path}");
            assert!(!page.contains("Secret shop") && !page.contains(&conn), "{path} leaks A");
        }
        for path in [format!("/connections/{conn}"), format!("/history/{query}")] {
            let (status, _, page) = p.web("GET", &path, &web_b.cookie, None, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(!page.contains("Secret shop"), "{path}");
        }
        let csrf = Some(web_b.csrf.as_str());
        let actions: [(String, Vec<(&str, &str)>); 6] = [
            (format!("/connections/{conn}"), vec![("name", "Taken"), ("instructions", "x")]),
            (format!("/connections/{conn}/delete"), vec![("confirm", "Secret shop")]),
            (format!("/connections/{conn}/rotate-key"), vec![]),
            (format!("/connections/{conn}/refresh-schema"), vec![]),
            (format!("/history/{query}/feedback"), vec![("correct", "true")]),
            (format!("/history/{query}/rerun"), vec![]),
        ];
        for (path, form) in &actions {
            let (status, _, _) = p.web("POST", path, &web_b.cookie, Some(form), csrf).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "POST {path} by another organisation");
        }
        // Asking about A's connection from B's session is an error event, not an answer.
        let form = [("connection_id", conn.as_str()), ("question", HOW_MANY)];
        let (status, _, events) = p.web("POST", "/ask", &web_b.cookie, Some(&form), csrf).await;
        assert_eq!(status, StatusCode::OK);
        assert!(events.contains("event: error") && events.contains("not_found"), "{events}");
        assert!(!events.contains("event: answer"), "{events}");

        // A's connection and question are untouched.
        let view = p.get_connection(&a, &conn).await;
        assert_eq!(view["name"], "Secret shop");
        assert_eq!(view["key_prefix"].as_str().map(|k| key.starts_with(k)), Some(true));
        let q = p.ok(StatusCode::OK, "GET", &format!("/api/v1/queries/{query}"), &a, None).await;
        assert_eq!(q["feedback"], Value::Null);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn web_actions_need_the_csrf_token_and_delete_needs_the_name() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let web = p.web_session(&a).await;
        let form = [("name", "Shop"), ("db_type", "sqlite")];

        // Without a token, or with another browser's, nothing is created.
        let (status, _, _) = p.web("POST", "/connections", &web.cookie, Some(&form), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let other = p.web_session(&a).await;
        let (status, _, _) =
            p.web("POST", "/connections", &web.cookie, Some(&form), Some(&other.csrf)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a token only fits its own nonce cookie");
        let list = p.ok(StatusCode::OK, "GET", "/api/v1/connections", &a, None).await;
        assert_eq!(list["connections"].as_array().map(Vec::len), Some(0));

        // With it: a redirect to the connection's page, which shows the key
        // once, with the agent's lines.
        let csrf = Some(web.csrf.as_str());
        let (status, headers, _) =
            p.web("POST", "/connections", &web.cookie, Some(&form), csrf).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let list = p.ok(StatusCode::OK, "GET", "/api/v1/connections", &a, None).await;
        let conn = list["connections"][0]["id"].as_str().expect("id").to_owned();
        assert_eq!(headers["location"], format!("/connections/{conn}"));
        let (status, _, page) =
            p.web("GET", &format!("/connections/{conn}"), &web.cookie, None, None).await;
        assert_eq!(status, StatusCode::OK);
        let key = shown_key(&page).expect("the key");
        assert!(key.starts_with("custard_") && page.contains("docker run"), "{key}");

        // A blank name re-renders the form with the reason.
        let blank = [("name", "  "), ("db_type", "sqlite")];
        let (status, _, page) =
            p.web("POST", "/connections", &web.cookie, Some(&blank), csrf).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("role=\"alert\""), "the error is announced");

        // Delete asks for the name; a wrong one deletes nothing.
        let delete = format!("/connections/{conn}/delete");
        let wrong = [("confirm", "Shp")];
        let (status, _, page) = p.web("POST", &delete, &web.cookie, Some(&wrong), csrf).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("to confirm deleting it"), "the page says why");
        p.get_connection(&a, &conn).await;

        // Rotating shows a new key once; the old one no longer opens the hub.
        let rotate = format!("/connections/{conn}/rotate-key");
        let (status, headers, _) = p.web("POST", &rotate, &web.cookie, Some(&[]), csrf).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let to = headers["location"].to_str().expect("location").to_owned();
        assert_eq!(to, format!("/connections/{conn}?done=rotated"));
        let (_, _, page) = p.web("GET", &to, &web.cookie, None, None).await;
        let new_key = shown_key(&page).expect("the new key");
        assert!(new_key != key && !page.contains(&key), "a new key, not the old");

        let right = [("confirm", "Shop")];
        let (status, headers, _) = p.web("POST", &delete, &web.cookie, Some(&right), csrf).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers["location"], "/connections?done=deleted");
        let (status, _) =
            p.call("GET", &format!("/api/v1/connections/{conn}"), Some(&a), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_names_are_unique_per_organisation() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        p.connection(&a, "Shop").await;
        // Compared trimmed and case-insensitively.
        for name in ["Shop", "shop", "  SHOP  "] {
            let body = json!({"name": name, "db_type": "sqlite"});
            let reply =
                p.ok(StatusCode::CONFLICT, "POST", "/api/v1/connections", &a, Some(body)).await;
            assert_eq!(code(&reply), "name_taken", "{name:?}: {reply}");
        }
        // Another organisation may use the name.
        p.connection(&b, "Shop").await;

        // Renaming to a taken name is refused; to its own in another case is not.
        let (second, _) = p.connection(&a, "Staging").await;
        let path = format!("/api/v1/connections/{second}");
        let reply =
            p.ok(StatusCode::CONFLICT, "PATCH", &path, &a, Some(json!({"name": "SHOP"}))).await;
        assert_eq!(code(&reply), "name_taken", "{reply}");
        assert_eq!(p.get_connection(&a, &second).await["name"], "Staging");
        let reply =
            p.ok(StatusCode::OK, "PATCH", &path, &a, Some(json!({"name": "staging"}))).await;
        assert_eq!(reply["name"], "staging");
        let list = p.ok(StatusCode::OK, "GET", "/api/v1/connections", &a, None).await;
        assert_eq!(list["connections"].as_array().map(Vec::len), Some(2));

        // The web forms say so, keeping what was typed.
        let web = p.web_session(&a).await;
        let csrf = Some(web.csrf.as_str());
        let form = [("name", " shop"), ("db_type", "sqlite")];
        let (status, _, page) = p.web("POST", "/connections", &web.cookie, Some(&form), csrf).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            page.contains("already has that name") && page.contains("role=\"alert\""),
            "{page}"
        );
        let form = [("name", "Shop"), ("instructions", "")];
        let (status, _, page) =
            p.web("POST", &format!("/connections/{second}"), &web.cookie, Some(&form), csrf).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(page.contains("already has that name"), "{page}");
    })
    .await;
}

/// A form's fields.
type Fields<'a> = Vec<(&'a str, &'a str)>;

/// Post/Redirect/Get: every full-page form that succeeds answers 303 to a
/// page (so a reload re-submits nothing), and a GET of any URL a form posts
/// to is a page or a redirect to one, never a method error.
#[tokio::test(flavor = "multi_thread")]
async fn every_web_form_redirects_and_a_get_of_its_url_is_a_page() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        p.shop_agent(&a, &conn, &key, 3).await;
        let (status, answer) = p.ask(&a, &conn, HOW_MANY).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let query = answer["id"].as_str().expect("id").to_owned();
        let (member, _) = p.member_of(&a, "m@example.com").await;
        let invite = json!({"email": "pending@example.com", "role": "member"});
        let invitation =
            p.ok(StatusCode::CREATED, "POST", "/api/v1/org/invitations", &a, Some(invite)).await;
        let invitation = invitation["id"].as_str().expect("an invitation id").to_owned();
        let mut web = p.web_session(&a).await;

        // A GET of every URL a form posts to, signed in and signed out.
        let urls = [
            "/login".to_owned(),
            "/logout".into(),
            "/signup".into(),
            "/forgot-password".into(),
            "/reset-password".into(),
            "/accept-invitation".into(),
            "/settings/profile".into(),
            "/settings/password".into(),
            format!("/settings/members/{member}/role"),
            format!("/settings/members/{member}/remove"),
            "/settings/invitations".into(),
            format!("/settings/invitations/{invitation}/revoke"),
            "/connections".into(),
            format!("/connections/{conn}"),
            format!("/connections/{conn}/refresh-schema"),
            format!("/connections/{conn}/rotate-key"),
            format!("/connections/{conn}/delete"),
            "/ask".into(),
            format!("/history/{query}/feedback"),
            format!("/history/{query}/rerun"),
            format!("/history/{query}/delete"),
        ];
        for cookie in [web.cookie.as_str(), ""] {
            for url in &urls {
                let (mut status, mut headers, mut body) =
                    p.web("GET", url, cookie, None, None).await;
                for _ in 0..3 {
                    if status != StatusCode::SEE_OTHER {
                        break;
                    }
                    let to = headers["location"].to_str().expect("location").to_owned();
                    (status, headers, body) = p.web("GET", &to, cookie, None, None).await;
                }
                assert!(
                    status != StatusCode::METHOD_NOT_ALLOWED && status != StatusCode::SEE_OTHER,
                    "GET {url}: {status} {body}"
                );
                let kind = headers[header::CONTENT_TYPE].to_str().unwrap_or_default();
                assert!(kind.starts_with("text/html"), "GET {url} ends on a page: {kind} {body}");
                assert!(!body.contains("method_not_allowed"), "GET {url}: {body}");
            }
        }
        let (_, _, page) =
            p.web("GET", &format!("/connections/{conn}/rotate-key"), &web.cookie, None, None).await;
        assert!(page.is_empty(), "the GET only redirects");
        let view = p.get_connection(&a, &conn).await;
        assert_eq!(
            view["key_prefix"].as_str().map(|k| key.starts_with(k)),
            Some(true),
            "no rotation"
        );

        // Every signed-in form, with its expected target: (path, fields, target).
        let new_password = "another correct horse staple";
        let forms: Vec<(String, Fields, String)> = vec![
            (
                format!("/connections/{conn}"),
                vec![("name", "Shop"), ("instructions", "x")],
                format!("/connections/{conn}?done=saved"),
            ),
            (
                format!("/connections/{conn}/refresh-schema"),
                vec![],
                format!("/connections/{conn}?done=refreshed"),
            ),
            (
                format!("/connections/{conn}/rotate-key"),
                vec![],
                format!("/connections/{conn}?done=rotated"),
            ),
            (format!("/history/{query}/rerun"), vec![], format!("/?rerun={query}")),
            (
                format!("/history/{query}/delete"),
                vec![("q", "how many"), ("offset", "0")],
                "/history?q=how+many&done=deleted".into(),
            ),
            (
                "/settings/profile".into(),
                vec![("first_name", "Ada"), ("last_name", "King")],
                "/settings?done=profile#profile".into(),
            ),
            (
                format!("/settings/members/{member}/role"),
                vec![("role", "admin")],
                "/settings?done=role#members".into(),
            ),
            (
                format!("/settings/members/{member}/remove"),
                vec![],
                "/settings?done=removed#members".into(),
            ),
            (
                "/settings/invitations".into(),
                vec![("email", "x@example.com"), ("role", "member")],
                "/settings?done=invited#invitations".into(),
            ),
            (
                format!("/settings/invitations/{invitation}/revoke"),
                vec![],
                "/settings?done=revoked#invitations".into(),
            ),
            (
                "/settings/password".into(),
                vec![
                    ("current_password", PASSWORD),
                    ("new_password", new_password),
                    ("confirm_password", new_password),
                ],
                "/settings?done=password#password".into(),
            ),
            (
                "/login".into(),
                vec![("email", "a@example.com"), ("password", new_password)],
                "/".into(),
            ),
        ];
        for (path, fields, target) in &forms {
            let to = p.post_redirects(&mut web, path, fields).await;
            assert_eq!(&to, target, "POST {path}");
            p.page(&web, &to).await;
        }
        // Creating and deleting a connection.
        let form = [("name", "Staging"), ("db_type", "sqlite")];
        let to = p.post_redirects(&mut web, "/connections", &form).await;
        let created = to.strip_prefix("/connections/").expect("the new connection's page");
        assert!(created != conn && !created.contains('?'), "{to}");
        p.page(&web, &to).await;
        let delete = format!("/connections/{created}/delete");
        let to = p.post_redirects(&mut web, &delete, &[("confirm", "Staging")]).await;
        assert_eq!(to, "/connections?done=deleted");
        let to = p.post_redirects(&mut web, "/logout", &[]).await;
        assert_eq!(to, "/login");

        // Signed out: sign up, forgot and reset a password, join by invitation.
        let mut visitor = p.visitor().await;
        let signup = [
            ("email", "new@example.com"),
            ("password", PASSWORD),
            ("first_name", "N"),
            ("last_name", "N"),
            ("organization_name", "New"),
        ];
        let to = p.post_redirects(&mut visitor, "/signup", &signup).await;
        assert_eq!(to, "/signup?sent=1");
        assert!(p.page(&visitor, &to).await.contains("new@example.com"), "named once");
        assert!(!p.page(&visitor, &to).await.contains("new@example.com"), "not on a reload");
        let before = p.sink.messages().len();
        let to =
            p.post_redirects(&mut visitor, "/forgot-password", &[("email", "a@example.com")]).await;
        assert_eq!(to, "/forgot-password?sent=1");
        p.page(&visitor, &to).await;
        let token = p.mailed_token(before, "a@example.com", "/reset-password?token=").await;
        let reset =
            [("token", token.as_str()), ("new_password", PASSWORD), ("confirm_password", PASSWORD)];
        let to = p.post_redirects(&mut visitor, "/reset-password", &reset).await;
        assert_eq!(to, "/reset-password?done=1");
        assert!(p.page(&visitor, &to).await.contains("Your password was changed"));
        let owner = p.login("a@example.com").await;
        let before = p.sink.messages().len();
        let invite = json!({"email": "joiner@example.com", "role": "member"});
        p.ok(StatusCode::CREATED, "POST", "/api/v1/org/invitations", &owner, Some(invite)).await;
        let token = p.mailed_token(before, "joiner@example.com", "/accept-invitation?token=").await;
        let join = [
            ("token", token.as_str()),
            ("email", "joiner@example.com"),
            ("password", PASSWORD),
            ("first_name", "J"),
            ("last_name", "J"),
        ];
        let to = p.post_redirects(&mut visitor, "/accept-invitation", &join).await;
        assert_eq!(to, "/");
        p.page(&visitor, &to).await;
    })
    .await;
}

/// A new or rotated key is shown once, on the connection's page the form
/// redirects to, to the session that made it: never in the URL, not to
/// another session, not on a reload.
#[tokio::test(flavor = "multi_thread")]
async fn web_shows_a_new_key_once_to_its_session_only() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let mut web = p.web_session(&a).await;
        let other = p.web_session(&p.login("a@example.com").await).await;

        let form = [("name", "Shop"), ("db_type", "sqlite")];
        let create = p.post_redirects(&mut web, "/connections", &form).await;
        let conn = create.strip_prefix("/connections/").expect("the page").to_owned();
        let rotate = format!("/connections/{conn}/rotate-key");
        for (path, form) in [("/connections".to_owned(), None), (rotate, Some(()))] {
            let to = if form.is_some() {
                p.post_redirects(&mut web, &path, &[]).await
            } else {
                create.clone()
            };
            assert!(!to.contains("custard_"), "no key in the URL: {to}");
            let elsewhere = p.page(&other, &to).await;
            assert!(shown_key(&elsewhere).is_none(), "another session sees no key");
            let page = p.page(&web, &to).await;
            let key = shown_key(&page).expect("the key, once");
            assert!(key.starts_with("custard_") && page.contains("docker run"), "{key}");
            let prefix = p.get_connection(&a, &conn).await["key_prefix"]
                .as_str()
                .expect("prefix")
                .to_owned();
            assert!(key.starts_with(&prefix), "the connection's current key");
            let reloaded = p.page(&web, &to).await;
            assert!(shown_key(&reloaded).is_none() && !reloaded.contains(&key), "not on a reload");
        }
        let list = p.ok(StatusCode::OK, "GET", "/api/v1/connections", &a, None).await;
        assert_eq!(list["connections"].as_array().map(Vec::len), Some(1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn web_ask_streams_steps_then_the_rendered_answer_or_error() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let web = p.web_session(&a).await;
        let csrf = Some(web.csrf.as_str());
        let (conn, key) = p.connection(&a, "Shop").await;

        // No agent: an error card that says so, before any step runs.
        let form = [("connection_id", conn.as_str()), ("question", HOW_MANY)];
        let (status, _, events) = p.web("POST", "/ask", &web.cookie, Some(&form), csrf).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            events.contains("event: error") && events.contains("The agent is offline"),
            "{events}"
        );

        // Without the CSRF token nothing is asked.
        let (status, _, _) = p.web("POST", "/ask", &web.cookie, Some(&form), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        p.shop_agent(&a, &conn, &key, 9).await;
        let question = "how many customers are there per city";
        let form = [("connection_id", conn.as_str()), ("question", question)];
        let (status, headers, events) = p.web("POST", "/ask", &web.cookie, Some(&form), csrf).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
        let steps = events.lines().filter(|l| *l == "event: step").count();
        assert!(steps >= 4, "progress steps come first: {events}");
        assert!(events.find("event: step") < events.find("event: answer"), "{events}");
        let answer = events.split("event: answer").nth(1).expect("an answer event");
        for city in ["Paris", "London", "Berlin"] {
            assert!(answer.contains(&format!("<td>{city}</td>")), "{city} in the table: {answer}");
        }
        assert!(answer.contains("<svg"), "a chart for a count per city: {answer}");
        assert!(answer.contains("the offline engine"), "the engine is named");
        assert!(answer.contains("/export.csv"), "a CSV link");
        // The history says where each question was asked.
        let recorded = p.ok(StatusCode::OK, "GET", "/api/v1/queries", &a, None).await;
        let sources: Vec<(&Value, &Value)> = recorded["queries"]
            .as_array()
            .expect("queries")
            .iter()
            .map(|q| (&q["question"], &q["source"]))
            .collect();
        assert_eq!(sources[0], (&json!(question), &json!("web")), "{recorded}");
        let conversation = answer
            .split("data-conversation=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("the conversation id")
            .to_owned();

        // The History page lists it, with outcome and timing.
        let (_, _, history) = p.web("GET", "/history", &web.cookie, None, None).await;
        assert!(history.contains(question) && history.contains(" ms"), "{history}");
        assert!(!conversation.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_web_form_refuses_a_post_without_its_csrf_token() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        p.shop_agent(&a, &conn, &key, 3).await;
        let (status, answer) = p.ask(&a, &conn, HOW_MANY).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let query = answer["id"].as_str().expect("id").to_owned();
        let me = p.ok(StatusCode::OK, "GET", "/api/v1/auth/profile", &a, None).await;
        let user = me["id"].as_str().or(me["user"]["id"].as_str()).expect("user id").to_owned();
        let invite = json!({"email": "pending@example.com", "role": "member"});
        let invitation =
            p.ok(StatusCode::CREATED, "POST", "/api/v1/org/invitations", &a, Some(invite)).await;
        let invitation = invitation["id"].as_str().expect("an invitation id").to_owned();
        let web = p.web_session(&a).await;

        // Every page that changes something, with plausible fields but no token.
        let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
            ("/login".into(), vec![("email", "a@example.com"), ("password", PASSWORD)]),
            ("/logout".into(), vec![]),
            (
                "/signup".into(),
                vec![
                    ("email", "new@example.com"),
                    ("password", PASSWORD),
                    ("first_name", "N"),
                    ("last_name", "N"),
                ],
            ),
            ("/forgot-password".into(), vec![("email", "a@example.com")]),
            (
                "/reset-password".into(),
                vec![("token", "x"), ("password", PASSWORD), ("confirm", PASSWORD)],
            ),
            ("/accept-invitation".into(), vec![("token", "x")]),
            ("/settings/profile".into(), vec![("first_name", "Eve"), ("last_name", "Evil")]),
            (
                "/settings/password".into(),
                vec![
                    ("current_password", PASSWORD),
                    ("new_password", "another correct horse"),
                    ("confirm", "another correct horse"),
                ],
            ),
            (format!("/settings/members/{user}/role"), vec![("role", "member")]),
            (format!("/settings/members/{user}/remove"), vec![]),
            ("/settings/invitations".into(), vec![("email", "x@example.com"), ("role", "admin")]),
            (format!("/settings/invitations/{invitation}/revoke"), vec![]),
            ("/connections".into(), vec![("name", "Evil"), ("db_type", "sqlite")]),
            (format!("/connections/{conn}"), vec![("name", "Evil"), ("instructions", "drop it")]),
            (format!("/connections/{conn}/refresh-schema"), vec![]),
            (format!("/connections/{conn}/rotate-key"), vec![]),
            (format!("/connections/{conn}/delete"), vec![("confirm", "Shop")]),
            ("/ask".into(), vec![("connection_id", &conn), ("question", HOW_MANY)]),
            (format!("/history/{query}/feedback"), vec![("correct", "true")]),
            (format!("/history/{query}/rerun"), vec![]),
            (format!("/history/{query}/delete"), vec![]),
        ];
        for (path, form) in &forms {
            let (status, _, _) = p.web("POST", path, &web.cookie, Some(form), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "POST {path} without a CSRF token");
            let (status, _, _) = p.web("POST", path, &web.cookie, Some(form), Some("00ff")).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "POST {path} with a wrong CSRF token");
        }

        // Nothing changed: the connection, its key, the history and the session.
        let view = p.get_connection(&a, &conn).await;
        assert_eq!(view["name"], "Shop");
        assert_eq!(view["instructions"], "");
        assert_eq!(view["key_prefix"].as_str().map(|k| key.starts_with(k)), Some(true));
        let list = p.ok(StatusCode::OK, "GET", "/api/v1/connections", &a, None).await;
        assert_eq!(list["connections"].as_array().map(Vec::len), Some(1));
        let q = p.ok(StatusCode::OK, "GET", &format!("/api/v1/queries/{query}"), &a, None).await;
        assert_eq!(q["feedback"], Value::Null);
        let me = p.ok(StatusCode::OK, "GET", "/api/v1/auth/profile", &a, None).await;
        assert!(!me.to_string().contains("Eve"), "the profile is unchanged: {me}");
        let history = p.ok(StatusCode::OK, "GET", "/api/v1/queries", &a, None).await;
        assert_eq!(history["queries"].as_array().map(Vec::len), Some(1), "nothing was asked");
        let pending = p.ok(StatusCode::OK, "GET", "/api/v1/org/invitations", &a, None).await;
        assert_eq!(pending["invitations"].as_array().map(Vec::len), Some(1), "nothing revoked");
    })
    .await;
}

/// The value of the first `attribute="..."` in `html`.
fn attribute<'a>(html: &'a str, attribute: &str) -> Option<&'a str> {
    let marker = format!("{attribute}=\"");
    let start = html.find(&marker)? + marker.len();
    html[start..].split('"').next()
}

#[tokio::test(flavor = "multi_thread")]
async fn web_answer_cards_escape_data_say_when_rows_were_cut_and_keep_the_conversation() {
    bounded(async {
        let llm = FakeOpenAi::with_responder(|request| {
            let asked = request.last_user_message().unwrap_or_default();
            if asked.contains("every customer") {
                Behaviour::reply("```sql\nSELECT id, name FROM customers ORDER BY id\n```")
            } else {
                Behaviour::reply(
                    "```sql\nSELECT '<img src=x onerror=alert(1)>' AS \"<b>label</b>\", count(*) AS n FROM customers\n```",
                )
            }
        })
        .await;
        let base_url = llm.base_url();
        let p = platform(&["--llm-base-url", &base_url, "--llm-model", "fake-model"]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        p.shop_agent(&a, &conn, &key, 1100).await;
        let web = p.web_session(&a).await;
        let csrf = Some(web.csrf.as_str());

        // Markup in the question, the column names and the values comes back as text.
        let question = "count <script>alert('q')</script> customers";
        let form = [("connection_id", conn.as_str()), ("question", question)];
        let (_, _, events) = p.web("POST", "/ask", &web.cookie, Some(&form), csrf).await;
        let card = events.split("event: answer").nth(1).expect("an answer");
        assert!(!card.contains("<script>") && !card.contains("<img") && !card.contains("<b>"), "{card}");
        for text in ["&#60;script&#62;alert", "&#60;img src=x", "&#60;b&#62;label&#60;/b&#62;"] {
            assert!(card.contains(text), "{text} is shown as text: {card}");
        }
        let conversation = attribute(card, "data-conversation").expect("a conversation").to_owned();

        // A follow-up with the conversation id stays in it; a cut result says so.
        let form = [
            ("connection_id", conn.as_str()),
            ("question", "and now list every customer"),
            ("conversation_id", conversation.as_str()),
        ];
        let (_, _, events) = p.web("POST", "/ask", &web.cookie, Some(&form), csrf).await;
        let card = events.split("event: answer").nth(1).expect("an answer");
        assert_eq!(attribute(card, "data-conversation"), Some(conversation.as_str()));
        assert!(card.contains("The result was cut at 1000 rows"), "{card}");
        let id = attribute(card, "data-answer-id").expect("an id").to_owned();

        // History keeps 200 of them and says so; the number column sorts as numbers.
        let (status, _, page) = p.web("GET", &format!("/history/{id}"), &web.cookie, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("Showing the first 200 of 1000 rows"), "{page}");
        assert!(page.contains("data-numeric=\"true\"") && page.contains("data-v=\"200\""), "{page}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn web_connection_and_history_actions_work_and_failures_say_why() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        let web = p.web_session(&a).await;
        let csrf = Some(web.csrf.as_str());

        // Asking without an agent fails, is recorded, and the error card links to it.
        let form = [("connection_id", conn.as_str()), ("question", HOW_MANY)];
        let (_, _, events) = p.web("POST", "/ask", &web.cookie, Some(&form), csrf).await;
        let card = events.split("event: error").nth(1).expect("an error");
        let link = card.split("href=\"/history/").nth(1).and_then(|r| r.split('"').next());
        let failed = link.expect("a link to the history entry").to_owned();
        let (status, _, page) =
            p.web("GET", &format!("/history/{failed}"), &web.cookie, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            page.contains("The agent is offline") && page.contains("data-code=\"agent_offline\"")
        );

        // Instructions are saved; a failed save keeps what was typed.
        let long_name = "n".repeat(101);
        let typed = "Revenue is amount minus refunds.";
        let path = format!("/connections/{conn}");
        let bad = [("name", long_name.as_str()), ("instructions", typed)];
        let (status, _, page) = p.web("POST", &path, &web.cookie, Some(&bad), csrf).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains(typed) && page.contains("role=\"alert\""), "{page}");
        let good = [("name", "Shop"), ("instructions", typed)];
        let (status, headers, _) = p.web("POST", &path, &web.cookie, Some(&good), csrf).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers["location"], format!("/connections/{conn}?done=saved"));
        assert_eq!(p.get_connection(&a, &conn).await["instructions"], typed);

        // Refreshing needs an agent; with one, the schema browser lists the table.
        let refresh = format!("/connections/{conn}/refresh-schema");
        let (status, _, page) = p.web("POST", &refresh, &web.cookie, Some(&[]), csrf).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(page.contains("role=\"alert\""), "the reason is shown: {page}");
        p.shop_agent(&a, &conn, &key, 3).await;
        let (status, headers, _) = p.web("POST", &refresh, &web.cookie, Some(&[]), csrf).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers["location"], format!("/connections/{conn}?done=refreshed"));
        let (_, _, page) = p
            .web("GET", &format!("/connections/{conn}?done=refreshed"), &web.cookie, None, None)
            .await;
        assert!(page.contains("The schema was refreshed") && page.contains("customers"), "{page}");
        assert!(page.contains("<code>city</code>"), "columns are listed: {page}");

        // Asking again opens the Ask page with the question, to be asked at
        // once; a reload of that page fills it in without asking.
        let rerun = format!("/history/{failed}/rerun");
        let (status, headers, _) = p.web("POST", &rerun, &web.cookie, Some(&[]), csrf).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let to = headers["location"].to_str().expect("location").to_owned();
        assert_eq!(to, format!("/?rerun={failed}"));
        let (status, _, page) = p.web("GET", &to, &web.cookie, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("data-autorun=\"true\"") && page.contains(HOW_MANY), "{page}");
        let (_, _, page) = p.web("GET", &to, &web.cookie, None, None).await;
        assert!(page.contains("data-autorun=\"false\"") && page.contains(HOW_MANY), "{page}");

        // The CSV of an answer, and an error page (not a JSON file) when it cannot run.
        let (_, answer) = p.ask(&a, &conn, HOW_MANY).await;
        let id = answer["id"].as_str().expect("id");
        let csv = format!("/history/{id}/export.csv");
        let (status, headers, body) = p.web("GET", &csv, &web.cookie, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers[header::CONTENT_TYPE].to_str().unwrap_or_default().starts_with("text/csv"));
        assert!(body.lines().count() == 2, "a header and one count: {body}");
        let delete = format!("/connections/{conn}/rotate-key");
        p.web("POST", &delete, &web.cookie, Some(&[]), csrf).await;
        p.wait_for_agents(&a, &conn, 0).await;
        let (status, headers, body) = p.web("GET", &csv, &web.cookie, None, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            headers[header::CONTENT_TYPE].to_str().unwrap_or_default().starts_with("text/html")
        );
        assert!(body.contains("data-code=\"agent_offline\""), "{body}");

        // Signed out, a page sends the browser to sign in and back.
        let (status, headers, _) = p.web("GET", &format!("/history/{id}"), "", None, None).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let to = headers["location"].to_str().unwrap_or_default();
        assert!(to.starts_with("/login?next=%2Fhistory%2F"), "{to}");
        let (status, _, page) = p.web("GET", "/no/such/page", "", None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(page.contains("data-code=\"not_found\""), "browsers get a page: {page}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// Security review (issue 17): the status stream's session, question limits

/// Finding 8: a status stream ends, sending nothing more of the organisation,
/// once its session is signed out or its user removed from the organisation;
/// here the next event of the organisation is what finds out. Another
/// stream of the organisation goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_stream_ends_at_the_next_event_after_sign_out_or_removal() {
    bounded(async {
        let p = platform(&[]).await;
        let owner = p.user("a@example.com", "Org A").await;
        let (member_id, member) = p.member_of(&owner, "m@example.com").await;
        let (conn, key) = p.connection(&owner, "Shop").await;
        let session = p.login("a@example.com").await;
        let path = "/api/v1/connections/events";
        let mut signed_out = p.events("GET", path, &session, None).await;
        let mut removed = p.events("GET", path, &member, None).await;
        let mut stays = p.events("GET", path, &owner, None).await;
        for stream in [&mut signed_out, &mut removed, &mut stays] {
            let first = stream.next(PATIENCE).await.expect("the snapshot");
            assert_eq!(first.data["id"], json!(conn));
        }

        p.ok(StatusCode::NO_CONTENT, "POST", "/api/v1/auth/logout", &session, None).await;
        let path = format!("/api/v1/org/members/{member_id}");
        p.ok(StatusCode::NO_CONTENT, "DELETE", &path, &owner, None).await;
        let agent = p.fake_agent(&conn, &key, Script::answering(1)).await;
        stays.until("agent_connected", |e| e.data["event"] == "agent_connected").await;
        for (who, stream) in [("signed out", &mut signed_out), ("removed", &mut removed)] {
            let sent = stream.until_end().await;
            assert!(sent.is_empty(), "the {who} stream sent {sent:?}");
        }
        agent.hang_up();
    })
    .await;
}

/// Finding 8: with no event at all, the periodic check ends the stream of a
/// signed-out session and of a removed member; a valid stream outlives many
/// checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_stream_ends_at_its_periodic_check_after_sign_out_or_removal() {
    bounded(async {
        let p = platform(&["--session-recheck-ms", "50"]).await;
        let owner = p.user("a@example.com", "Org A").await;
        let (member_id, member) = p.member_of(&owner, "m@example.com").await;
        let session = p.login("a@example.com").await;
        let path = "/api/v1/connections/events";
        let mut signed_out = p.events("GET", path, &session, None).await;
        let mut removed = p.events("GET", path, &member, None).await;
        let mut stays = p.events("GET", path, &owner, None).await;

        p.ok(StatusCode::NO_CONTENT, "POST", "/api/v1/auth/logout", &session, None).await;
        let member_path = format!("/api/v1/org/members/{member_id}");
        p.ok(StatusCode::NO_CONTENT, "DELETE", &member_path, &owner, None).await;
        for (who, stream) in [("signed out", &mut signed_out), ("removed", &mut removed)] {
            let sent = stream.until_end().await;
            assert!(sent.is_empty(), "the {who} stream sent {sent:?}");
        }
        // The owner's stream went through the same checks and still delivers.
        let (conn, key) = p.connection(&owner, "Shop").await;
        let agent = p.fake_agent(&conn, &key, Script::answering(1)).await;
        let seen = stays.until("agent_connected", |e| e.data["event"] == "agent_connected").await;
        assert_eq!(seen.last().expect("an event").data["id"], json!(conn));
        agent.hang_up();
    })
    .await;
}

/// A question's reply by every way of asking: the API, its streaming
/// variant and the web UI's Ask: (status, code, Retry-After seconds).
async fn ask_three_ways(
    p: &Platform,
    token: &str,
    web: &WebSession,
    conn: &str,
) -> Vec<(StatusCode, String, Option<u64>)> {
    let body = json!({"connection_id": conn, "question": HOW_MANY});
    let mut replies = Vec::new();
    for path in ["/api/v1/query", "/api/v1/query/stream"] {
        let response = p.send(Platform::request("POST", path, Some(token), Some(&body))).await;
        let status = response.status();
        let retry = response.headers().get(header::RETRY_AFTER).cloned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        let reply: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let retry = retry.and_then(|v| v.to_str().ok()?.parse().ok());
        replies.push((status, code(&reply).to_owned(), retry));
    }
    let form = [("connection_id", conn), ("question", HOW_MANY)];
    let (status, headers, text) =
        p.web("POST", "/ask", &web.cookie, Some(&form), Some(&web.csrf)).await;
    let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let retry = headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse().ok());
    replies.push((status, code(&reply).to_owned(), retry));
    replies
}

/// Finding 9: one user's questions per minute are limited
/// (`--questions-per-minute`), by every way of asking; a refused question
/// reaches neither the model nor the agent, and is not recorded; another user
/// of the organisation is not limited by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_are_limited_per_user_per_minute() {
    bounded(async {
        let p = platform(&["--questions-per-minute", "3"]).await;
        let a = p.user("a@example.com", "Org A").await;
        let (_, colleague) = p.member_of(&a, "m@example.com").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        let agent = p.fake_agent(&conn, &key, Script::answering(3)).await;
        p.wait_for_schema(&a, &conn).await;
        for _ in 0..3 {
            let (status, reply) = p.ask(&a, &conn, HOW_MANY).await;
            assert_eq!(status, StatusCode::OK, "{reply}");
        }
        let web = p.web_session(&a).await;
        for (i, (status, code, retry)) in
            ask_three_ways(&p, &a, &web, &conn).await.into_iter().enumerate()
        {
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
                "way {i}"
            );
            assert!(retry.is_some_and(|s| (1..=20).contains(&s)), "way {i}: {retry:?}");
        }
        assert_eq!(agent.frames("run").len(), 3, "the refused questions never ran");
        let history = p.ok(StatusCode::OK, "GET", "/api/v1/queries", &a, None).await;
        assert_eq!(history["queries"].as_array().map(Vec::len), Some(3));
        let (status, reply) = p.ask(&colleague, &conn, HOW_MANY).await;
        assert_eq!(status, StatusCode::OK, "another user: {reply}");
    })
    .await;
}

/// Finding 9: an organisation's questions in flight are limited
/// (`--questions-in-flight-per-org`), by every way of asking; another
/// organisation is not limited by it, and a finished question frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_in_flight_are_limited_per_organisation() {
    bounded(async {
        let p =
            platform(&["--questions-in-flight-per-org", "2", "--query-timeout-secs", "60"]).await;
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        let silent = p.fake_agent(&conn, &key, Script::on_run(OnRun::Silent)).await;
        p.wait_for_schema(&a, &conn).await;
        let (b_conn, b_key) = p.connection(&b, "Other shop").await;
        let _b_agent = p.fake_agent(&b_conn, &b_key, Script::answering(7)).await;
        p.wait_for_schema(&b, &b_conn).await;

        // Two questions that the silent agent keeps in flight.
        let body = json!({"connection_id": conn, "question": HOW_MANY});
        let in_flight: Vec<_> = (0..2)
            .map(|_| {
                let request = Platform::request("POST", "/api/v1/query", Some(&a), Some(&body));
                tokio::spawn(p.app.clone().oneshot(request))
            })
            .collect();
        eventually("two questions at the agent", || {
            std::future::ready(silent.frames("run").len() == 2)
        })
        .await;

        let web = p.web_session(&a).await;
        for (i, (status, code, retry)) in
            ask_three_ways(&p, &a, &web, &conn).await.into_iter().enumerate()
        {
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::TOO_MANY_REQUESTS, "too_many_questions"),
                "way {i}"
            );
            assert_eq!(retry, Some(1), "way {i}");
        }
        let (status, reply) = p.ask(&b, &b_conn, HOW_MANY).await;
        assert_eq!(
            (status, &reply["rows"]),
            (StatusCode::OK, &json!([[7]])),
            "another organisation"
        );

        silent.hang_up();
        for question in in_flight {
            let response = question.await.expect("the task").expect("infallible");
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "agent_disconnected");
        }
        let (status, reply) = p.ask(&a, &conn, HOW_MANY).await;
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::SERVICE_UNAVAILABLE, "agent_offline"),
            "admitted again"
        );
    })
    .await;
}

/// The history through the API and the web list: who asked each question;
/// search (any case, `%` and `_` literal), outcome and person filters, which
/// combine; deleting one's own question, an owner deleting anyone's, a
/// member refused someone else's (403), another organisation seeing nothing
/// (404); a deleted question's page and CSV are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_searched_filtered_and_deleted_by_its_rules() {
    bounded(async {
        let p = platform(&[]).await;
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        let (mo_id, mo) = p.member_of(&a, "mo@example.com").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        p.shop_agent(&a, &conn, &key, 3).await;
        let weather = "what will the weather be like in Paris tomorrow?";
        let asked = [
            (&a, HOW_MANY, StatusCode::OK),
            (&mo, HOW_MANY, StatusCode::OK),
            (&mo, weather, StatusCode::UNPROCESSABLE_ENTITY),
        ];
        for (token, question, want) in asked {
            let (status, reply) = p.ask(token, &conn, question).await;
            assert_eq!(status, want, "{question}: {reply}");
        }
        let listed = |reply: &Value| -> Vec<(String, String, String)> {
            reply["queries"]
                .as_array()
                .expect("queries")
                .iter()
                .map(|q| {
                    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                    (text(&q["id"]), text(&q["asked_by"]["name"]), text(&q["outcome"]))
                })
                .collect()
        };
        let all = listed(&p.ok(StatusCode::OK, "GET", "/api/v1/queries", &a, None).await);
        let who: Vec<(&str, &str)> = all.iter().map(|q| (q.1.as_str(), q.2.as_str())).collect();
        assert_eq!(
            who,
            [("Mo Member", "cannot_answer"), ("Mo Member", "ok"), ("Ada Lovelace", "ok")],
            "newest first, each with who asked"
        );
        let (mo_failed, mo_answered, a_answered) = (&all[0].0, &all[1].0, &all[2].0);

        // (query string, the questions listed, newest first)
        let long = "x".repeat(201);
        let cases: Vec<(String, Vec<&String>)> = vec![
            (format!("user_id={mo_id}"), vec![mo_failed, mo_answered]),
            ("outcome=failed".into(), vec![mo_failed]),
            ("outcome=answered".into(), vec![mo_answered, a_answered]),
            ("q=CUSTOMERS".into(), vec![mo_answered, a_answered]),
            ("q=%25".into(), vec![]),
            ("q=_".into(), vec![]),
            ("q=%20Paris%20".into(), vec![mo_failed]),
            (format!("q=many&outcome=answered&user_id={mo_id}"), vec![mo_answered]),
            (format!("connection_id={conn}&outcome=failed"), vec![mo_failed]),
            ("user_id=nobody".into(), vec![]),
        ];
        for (query, expected) in &cases {
            let path = format!("/api/v1/queries?{query}");
            let reply = p.ok(StatusCode::OK, "GET", &path, &a, None).await;
            let got: Vec<String> = listed(&reply).into_iter().map(|q| q.0).collect();
            let expected: Vec<String> = expected.iter().map(|id| (*id).clone()).collect();
            assert_eq!(got, expected, "?{query}");
        }
        for query in ["outcome=maybe".to_owned(), format!("q={long}")] {
            let (status, reply) =
                p.call("GET", &format!("/api/v1/queries?{query}"), Some(&a), None).await;
            assert_eq!(
                (status, code(&reply)),
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
                "?{query}"
            );
        }

        // A member may not delete someone else's question; another
        // organisation cannot even see it. Neither changes anything.
        let path = |id: &str| format!("/api/v1/queries/{id}");
        let (status, reply) = p.call("DELETE", &path(a_answered), Some(&mo), None).await;
        assert_eq!((status, code(&reply)), (StatusCode::FORBIDDEN, "forbidden"), "{reply}");
        let (status, reply) = p.call("DELETE", &path(a_answered), Some(&b), None).await;
        assert_eq!((status, code(&reply)), (StatusCode::NOT_FOUND, "not_found"), "{reply}");
        p.ok(StatusCode::OK, "GET", &path(a_answered), &a, None).await;

        // The web list offers deleting only what the viewer may delete, and
        // a refused or foreign delete returns to the list saying why.
        let mut web_mo = p.web_session(&mo).await;
        let web_a = p.web_session(&a).await;
        let form_of = |id: &str| format!("action=\"/history/{id}/delete\"");
        let page = p.page(&web_mo, "/history").await;
        assert!(page.contains(&form_of(mo_answered)) && !page.contains(&form_of(a_answered)));
        let page = p.page(&web_a, "/history").await;
        assert!(page.contains(&form_of(mo_answered)) && page.contains(&form_of(a_answered)));
        let back = [("q", "many"), ("outcome", "answered"), ("offset", "0")];
        let web_delete = |id: &str| format!("/history/{id}/delete");
        let to = p.post_redirects(&mut web_mo, &web_delete(a_answered), &back).await;
        assert_eq!(to, "/history?q=many&outcome=answered&done=not-allowed");
        assert!(p.page(&web_mo, &to).await.contains("You can delete only the questions you asked"));
        let mut web_b = p.web_session(&b).await;
        let to = p.post_redirects(&mut web_b, &web_delete(a_answered), &[]).await;
        assert_eq!(to, "/history?done=gone");
        p.ok(StatusCode::OK, "GET", &path(a_answered), &a, None).await;

        // The asker deletes their own: its page and CSV go with it.
        let to = p.post_redirects(&mut web_mo, &web_delete(mo_answered), &back).await;
        assert_eq!(to, "/history?q=many&outcome=answered&done=deleted");
        let page = p.page(&web_mo, &to).await;
        assert!(page.contains("The question was deleted") && page.contains(HOW_MANY), "{page}");
        for gone in [path(mo_answered), format!("{}/export.csv", path(mo_answered))] {
            let (status, reply) = p.call("GET", &gone, Some(&mo), None).await;
            assert_eq!((status, code(&reply)), (StatusCode::NOT_FOUND, "not_found"), "{gone}");
        }
        for gone in
            [format!("/history/{mo_answered}"), format!("/history/{mo_answered}/export.csv")]
        {
            let (status, _, _) = p.web("GET", &gone, &web_mo.cookie, None, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
        }
        let (status, reply) = p.call("DELETE", &path(mo_answered), Some(&mo), None).await;
        assert_eq!((status, code(&reply)), (StatusCode::NOT_FOUND, "not_found"), "{reply}");

        // An owner deletes anyone's.
        let (status, reply) = p.call("DELETE", &path(mo_failed), Some(&a), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{reply}");
        let left = listed(&p.ok(StatusCode::OK, "GET", "/api/v1/queries", &a, None).await);
        assert_eq!(left.iter().map(|q| &q.0).collect::<Vec<_>>(), [a_answered]);
    })
    .await;
}
