//! The HTTP API's JSON bodies, in process: the router on a temporary SQLite
//! store with the offline engine and a real agent over a SQLite shop
//! database, sent valid bodies mutated at every level, wrong types, deep
//! nesting, huge strings, invalid UTF-8, random bytes and wrong content types,
//! with and without a verified owner's bearer token.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
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
use proptest::sample::select;
use serde_json::{Map, Value, json};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::mutate::{DocEdits, doc_edits, escape_bytes, json_value, wild_text};
use crate::runner::FuzzTarget;

/// The owner's password at the start (change-password may change it; the target follows).
const PASSWORD: &str = "correct horse battery staple";
const OWNER_EMAIL: &str = "fuzz-owner@example.com";
/// The server's request body limit (`routes::MAX_BODY_BYTES`).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long one request (and its event stream) may take before it is a hang.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);
/// Log in again when the access token is this old (it lives 15 minutes).
const SESSION_REFRESH: Duration = Duration::from_secs(10 * 60);
/// Questions the offline engine can answer about the shop database.
const QUESTIONS: &[&str] = &[
    "how many customers are there",
    "how many customers are in each city",
    "list the customers",
    "show customers in Paris",
    "what is the total amount of orders",
    "top 5 cities by number of customers",
    "average order amount per customer",
];

/// A field of a request body, as the endpoint expects it.
#[derive(Clone, Copy, Debug)]
enum Field {
    Email,
    NewEmail,
    Password,
    NewPassword,
    Name,
    Token,
    Role,
    Bool,
    ConnectionId,
    Question,
    ConversationId,
    DbType,
    Instructions,
}

/// One JSON endpoint: method, path (`{conn}`, `{query}`, `{member}` are filled
/// in), whether it takes the bearer token, and its body's fields (`?` = optional).
struct Endpoint {
    method: &'static str,
    path: &'static str,
    auth: bool,
    fields: &'static [(&'static str, Field, bool)],
}

const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "POST",
        path: "/api/v1/auth/signup",
        auth: false,
        fields: &[
            ("email", Field::NewEmail, false),
            ("password", Field::NewPassword, false),
            ("first_name", Field::Name, false),
            ("last_name", Field::Name, false),
            ("organization_name", Field::Name, true),
            ("invitation_token", Field::Token, true),
        ],
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/auth/verify-email",
        auth: false,
        fields: &[("token", Field::Token, false)],
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/auth/login",
        auth: false,
        fields: &[("email", Field::Email, false), ("password", Field::Password, false)],
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/auth/forgot-password",
        auth: false,
        fields: &[("email", Field::Email, false)],
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/auth/reset-password",
        auth: false,
        fields: &[("token", Field::Token, false), ("new_password", Field::NewPassword, false)],
    },
    Endpoint {
        method: "PUT",
        path: "/api/v1/auth/profile",
        auth: true,
        fields: &[("first_name", Field::Name, true), ("last_name", Field::Name, true)],
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/auth/change-password",
        auth: true,
        fields: &[
            ("current_password", Field::Password, false),
            ("new_password", Field::NewPassword, false),
        ],
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/auth/accept-invitation",
        auth: true,
        fields: &[("token", Field::Token, false)],
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/org/invitations",
        auth: true,
        fields: &[("email", Field::NewEmail, false), ("role", Field::Role, false)],
    },
    Endpoint {
        method: "PATCH",
        path: "/api/v1/org/members/{member}",
        auth: true,
        fields: &[("role", Field::Role, false)],
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/connections",
        auth: true,
        fields: &[("name", Field::Name, false), ("db_type", Field::DbType, false)],
    },
    Endpoint {
        method: "PATCH",
        path: "/api/v1/connections/{conn}",
        auth: true,
        fields: &[("name", Field::Name, true), ("instructions", Field::Instructions, true)],
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/query",
        auth: true,
        fields: &[
            ("connection_id", Field::ConnectionId, false),
            ("question", Field::Question, false),
            ("conversation_id", Field::ConversationId, true),
        ],
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/query/stream",
        auth: true,
        fields: &[
            ("connection_id", Field::ConnectionId, false),
            ("question", Field::Question, false),
            ("conversation_id", Field::ConversationId, true),
        ],
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/queries/{query}/feedback",
        auth: true,
        fields: &[("correct", Field::Bool, false)],
    },
];

/// A field value: generated, or one the server knows, resolved when sent.
#[derive(Clone, Debug)]
enum Val {
    Lit(Value),
    OwnerEmail,
    CurrentPassword,
    AgentConnection,
    IdleConnection,
    UniqueEmail(u64),
}

/// A path id: one that exists, or any text.
#[derive(Clone, Debug)]
enum PathId {
    Known,
    Other,
    Text(String),
}

#[derive(Clone, Debug)]
enum Auth {
    None,
    Owner,
    Garbage(String),
    Basic,
    /// A session cookie without a CSRF token (refused for writes).
    Cookie,
}

#[derive(Clone, Debug)]
enum BodyKind {
    /// The endpoint's fields (some left out), then edits.
    Fields(Vec<(usize, Val)>, DocEdits),
    /// Any bytes.
    Bytes(Vec<u8>),
    /// Any text.
    Text(String),
    /// No body at all.
    Empty,
    /// A valid body with one string this many bytes long (around the body limit).
    Huge(usize),
    /// `[` or `{"a":` this deep, closed or not.
    Deep(usize, bool, bool),
}

/// One request.
#[derive(Clone, Debug)]
pub(crate) struct ApiCase {
    endpoint: usize,
    /// Another method than the endpoint's (a 405 must still answer in the API's shape).
    method: Option<&'static str>,
    path_id: PathId,
    auth: Auth,
    content_type: Option<String>,
    body: BodyKind,
    ip: IpAddr,
}

fn field_value(field: Field) -> BoxedStrategy<Val> {
    let lit = |s: BoxedStrategy<String>| s.prop_map(|s| Val::Lit(Value::from(s))).boxed();
    let odd = prop_oneof![wild_text(40), any::<String>()].boxed();
    match field {
        Field::Email => prop_oneof![
            3 => Just(Val::OwnerEmail),
            1 => Just(Val::Lit(json!(" FUZZ-Owner@Example.com "))),
            2 => lit("[a-z]{1,10}@[a-z]{1,8}\\.(com|org)".boxed()),
            2 => lit(odd),
        ]
        .boxed(),
        Field::NewEmail => prop_oneof![
            4 => any::<u64>().prop_map(Val::UniqueEmail),
            1 => Just(Val::OwnerEmail),
            2 => lit(odd),
        ]
        .boxed(),
        Field::Password => prop_oneof![3 => Just(Val::CurrentPassword), 1 => lit(odd)].boxed(),
        Field::NewPassword => prop_oneof![
            3 => lit("[a-z]{5,8} [a-z]{5,8} [a-z]{5,8} [a-z]{4,8}".boxed()),
            1 => Just(Val::CurrentPassword),
            1 => lit(select(&["password", "12345678", "", "correct horse battery staple"][..]).prop_map(str::to_owned).boxed()),
            1 => lit(odd),
        ]
        .boxed(),
        Field::Name => prop_oneof![
            3 => lit("[A-Z][a-z]{1,10}".boxed()),
            1 => lit((99usize..103).prop_map(|n| "n".repeat(n)).boxed()),
            2 => lit(odd),
        ]
        .boxed(),
        Field::Token => prop_oneof![2 => lit("[A-Za-z0-9_-]{10,43}".boxed()), 1 => lit(odd)].boxed(),
        Field::Role => prop_oneof![
            3 => lit(select(&["owner", "admin", "member", "OWNER", "root", ""][..]).prop_map(str::to_owned).boxed()),
            1 => lit(odd),
        ]
        .boxed(),
        Field::Bool => prop_oneof![3 => any::<bool>().prop_map(|b| Val::Lit(Value::from(b))), 1 => lit(odd)].boxed(),
        Field::ConnectionId => prop_oneof![
            6 => Just(Val::AgentConnection),
            1 => Just(Val::IdleConnection),
            1 => lit(odd),
        ]
        .boxed(),
        Field::Question => prop_oneof![
            6 => lit(select(QUESTIONS).prop_map(str::to_owned).boxed()),
            2 => lit(odd),
            1 => lit((8190usize..8195).prop_map(|n| "q".repeat(n)).boxed()),
        ]
        .boxed(),
        Field::ConversationId => prop_oneof![
            3 => lit("[A-Za-z0-9_-]{1,64}".boxed()),
            1 => lit((63usize..67).prop_map(|n| "c".repeat(n)).boxed()),
            1 => lit(odd),
        ]
        .boxed(),
        Field::DbType => prop_oneof![
            3 => lit(select(&["postgresql", "postgres", "pg", "sqlite", "SQLite", "mysql", ""][..]).prop_map(str::to_owned).boxed()),
            1 => lit(odd),
        ]
        .boxed(),
        Field::Instructions => prop_oneof![
            2 => lit(odd),
            1 => lit((3998usize..4003).prop_map(|n| "i".repeat(n)).boxed()),
        ]
        .boxed(),
    }
}

/// The endpoint's fields, each present (required ones mostly, optional ones
/// half the time) with a generated value.
fn fields(endpoint: usize) -> BoxedStrategy<Vec<(usize, Val)>> {
    let strategies: Vec<BoxedStrategy<Option<(usize, Val)>>> = ENDPOINTS[endpoint]
        .fields
        .iter()
        .enumerate()
        .map(|(i, (_, field, optional))| {
            let present = if *optional { 0.5 } else { 0.95 };
            proptest::option::weighted(present, field_value(*field).prop_map(move |v| (i, v)))
                .boxed()
        })
        .collect();
    strategies.prop_map(|fields| fields.into_iter().flatten().collect()).boxed()
}

fn body(endpoint: usize) -> BoxedStrategy<BodyKind> {
    prop_oneof![
        10 => fields(endpoint).prop_map(|f| BodyKind::Fields(f, DocEdits::default())),
        16 => (fields(endpoint), doc_edits(80 * 1024, 40_000)).prop_map(|(f, e)| BodyKind::Fields(f, e)),
        2 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(BodyKind::Bytes),
        2 => prop_oneof![wild_text(200), json_value().prop_map(|v| v.to_string())].prop_map(BodyKind::Text),
        1 => Just(BodyKind::Empty),
        1 => (MAX_BODY_BYTES - 80..MAX_BODY_BYTES + 40).prop_map(BodyKind::Huge),
        1 => (1usize..40_000, any::<bool>(), any::<bool>()).prop_map(|(d, o, c)| BodyKind::Deep(d, o, c)),
    ]
    .boxed()
}

fn auth(needs: bool) -> BoxedStrategy<Auth> {
    let (owner, none) = if needs { (8, 1) } else { (1, 8) };
    prop_oneof![
        owner => Just(Auth::Owner),
        none => Just(Auth::None),
        1 => "[ -~]{0,40}".prop_map(Auth::Garbage),
        1 => Just(Auth::Basic),
        1 => Just(Auth::Cookie),
    ]
    .boxed()
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        20 => Just(Some("application/json".to_owned())),
        1 => Just(None),
        1 => Just(Some("application/json; charset=utf-8".to_owned())),
        1 => Just(Some("text/plain".to_owned())),
        1 => Just(Some("application/x-www-form-urlencoded".to_owned())),
        1 => Just(Some("application/problem+json".to_owned())),
        1 => "[ -~]{0,30}".prop_map(Some),
    ]
}

fn path_id() -> impl Strategy<Value = PathId> {
    prop_oneof![
        6 => Just(PathId::Known),
        1 => Just(PathId::Other),
        2 => wild_text(20).prop_map(PathId::Text),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        4 => Just(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        2 => any::<u8>().prop_map(|b| IpAddr::V4(Ipv4Addr::new(10, 0, 0, b))),
        1 => Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        1 => any::<u128>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn case() -> impl Strategy<Value = ApiCase> {
    (0..ENDPOINTS.len()).prop_flat_map(|endpoint| {
        let method = prop_oneof![
            40 => Just(None),
            // No DELETE: it would remove the connection or member the other cases use.
            1 => select(&["GET", "PUT", "PATCH", "POST"][..]).prop_map(Some),
        ];
        (method, path_id(), auth(ENDPOINTS[endpoint].auth), content_type(), body(endpoint), ip())
            .prop_map(move |(method, path_id, auth, content_type, body, ip)| ApiCase {
                endpoint,
                method,
                path_id,
                auth,
                content_type,
                body,
                ip,
            })
    })
}

/// What the server knows that cases refer to.
struct Known {
    user_id: String,
    agent_connection: String,
    idle_connection: String,
    query_id: String,
}

/// The signed-in owner: token, when it was issued, and the current password.
struct Session {
    token: String,
    issued: Instant,
    password: String,
}

/// A request's outcome, for the report.
#[derive(Default)]
struct Counts {
    statuses: BTreeMap<u16, u64>,
    /// Per endpoint: replies by status class or error code.
    endpoints: BTreeMap<String, BTreeMap<String, u64>>,
    /// The last event of each stream: `answer` or `error <code>`.
    stream_events: BTreeMap<String, u64>,
    /// `agent_offline` for the idle connection: documented, not a finding.
    expected_offline: u64,
}

pub(crate) struct ApiTarget {
    rt: Runtime,
    app: Router,
    known: Known,
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

impl ApiTarget {
    /// Starts the server (in process and on a loopback socket for the agent),
    /// a verified owner, a connection served by a real agent, an idle
    /// connection and one answered question.
    pub(crate) fn new() -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let stop = CancellationToken::new();
        let (app, known, session) = rt.block_on(setup(dir.path(), &stop))?;
        Ok(ApiTarget {
            rt,
            app,
            known,
            session: RefCell::new(session),
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
            Val::AgentConnection => json!(self.known.agent_connection),
            Val::IdleConnection => json!(self.known.idle_connection),
            Val::UniqueEmail(n) => {
                // Unique within the run even when shrinking repeats a case.
                let k = self.emails.get() + 1;
                self.emails.set(k);
                json!(format!("fuzz{n:x}.{k}@example.com"))
            }
        }
    }

    fn path(&self, case: &ApiCase) -> String {
        let endpoint = &ENDPOINTS[case.endpoint];
        let (known, other) = if endpoint.path.contains("{conn}") {
            (&self.known.agent_connection, &self.known.idle_connection)
        } else if endpoint.path.contains("{query}") {
            (&self.known.query_id, &self.known.agent_connection)
        } else {
            (&self.known.user_id, &self.known.query_id)
        };
        let id = match &case.path_id {
            PathId::Known => known.clone(),
            PathId::Other => other.clone(),
            PathId::Text(t) => percent_encode(t),
        };
        endpoint.path.replace("{conn}", &id).replace("{query}", &id).replace("{member}", &id)
    }

    fn body(&self, case: &ApiCase) -> Vec<u8> {
        let endpoint = &ENDPOINTS[case.endpoint];
        let doc = |fields: &[(usize, Val)]| {
            let mut map = Map::new();
            for (i, val) in fields {
                map.insert(endpoint.fields[*i].0.to_owned(), self.resolve(val));
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
                    (0..endpoint.fields.len()).map(|i| (i, Val::Lit(Value::from("h")))).collect();
                let mut text = doc(&all).to_string();
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

    fn build(&self, case: &ApiCase, body: Vec<u8>) -> Result<Request<Body>, String> {
        let endpoint = &ENDPOINTS[case.endpoint];
        let method = case.method.unwrap_or(endpoint.method);
        let mut builder = Request::builder().method(method).uri(self.path(case));
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
            .body(Body::from(body))
            .map_err(|e| format!("the request cannot be built: {e}"))?;
        request.extensions_mut().insert(ConnectInfo(SocketAddr::new(case.ip, 40_000)));
        Ok(request)
    }

    /// Sends one case and checks the reply.
    async fn exchange(
        &self,
        case: &ApiCase,
        request: Request<Body>,
        sent: &[u8],
    ) -> Result<(), String> {
        let endpoint = &ENDPOINTS[case.endpoint];
        let response = self.app.clone().oneshot(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.count(|c| *c.statuses.entry(status.as_u16()).or_default() += 1);
        let is_stream = content_type.starts_with("text/event-stream");
        if is_stream && status == StatusCode::OK {
            return self.read_stream(response.into_body(), sent).await;
        }
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .map_err(|e| format!("{status}: the body could not be read: {e}"))?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let shown = || escape_bytes(&bytes, 600);
        let code = body.as_ref().and_then(|b| b["error"]["code"].as_str());
        {
            let outcome = match code {
                Some(code) => code.to_owned(),
                None => status.as_u16().to_string(),
            };
            let key = format!("{} {}", endpoint.method, endpoint.path);
            self.count(|c| *c.endpoints.entry(key).or_default().entry(outcome).or_default() += 1);
        }
        if status.is_server_error() {
            if self.idle_agent_offline(sent, code) {
                self.count(|c| c.expected_offline += 1);
                return Ok(());
            }
            return Err(format!("a {status} reply: {}", shown()));
        }
        if status.is_client_error() {
            let Some(body) = &body else {
                return Err(format!("a {status} reply that is not JSON: {}", shown()));
            };
            let code = body["error"]["code"]
                .as_str()
                .ok_or_else(|| format!("a {status} reply without error.code: {}", shown()))?;
            if !body["error"]["message"].is_string() {
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
        } else if status.is_success() && content_type.contains("json") && body.is_none() {
            return Err(format!("a {status} JSON reply that does not parse: {}", shown()));
        }
        if endpoint.path.ends_with("change-password") && status == StatusCode::NO_CONTENT {
            // The owner's password changed: follow it so logins keep working.
            // Read as the server does: unknown fields skipped, however deep.
            #[derive(serde::Deserialize)]
            struct Sent {
                new_password: String,
            }
            let sent: Sent = serde_json::from_slice(sent)
                .map_err(|e| format!("204 for a body without a new password ({e})"))?;
            self.session.borrow_mut().password = sent.new_password;
        }
        Ok(())
    }

    /// Reads an event stream to its end: events of JSON data, the last one an
    /// `answer` or an `error` in the API's shape with a 4xx code.
    async fn read_stream(&self, body: Body, sent: &[u8]) -> Result<(), String> {
        let bytes = axum::body::to_bytes(body, 16 << 20)
            .await
            .map_err(|e| format!("the event stream failed: {e}"))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut last = None;
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
            if data.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&data)
                .map_err(|e| format!("event `{name}` data is not JSON ({e}): {data}"))?;
            last = Some((name.to_owned(), value));
        }
        match last {
            Some((name, _)) if name == "answer" => {
                self.count(|c| *c.stream_events.entry("answer".to_owned()).or_default() += 1);
                Ok(())
            }
            Some((name, value)) if name == "error" => {
                let code = value["error"]["code"]
                    .as_str()
                    .ok_or_else(|| format!("an error event without a code: {value}"))?;
                let status = ErrorCode::parse(code).map(ErrorCode::status);
                self.count(|c| *c.stream_events.entry(format!("error {code}")).or_default() += 1);
                match status {
                    Some(_) if self.idle_agent_offline(sent, Some(code)) => {
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

    fn count(&self, update: impl FnOnce(&mut Counts)) {
        if self.counting.get() {
            update(&mut self.counts.borrow_mut());
        }
    }

    /// Whether a reply is the documented `agent_offline` of a question about
    /// the idle connection, which has no agent on purpose.
    fn idle_agent_offline(&self, sent: &[u8], code: Option<&str>) -> bool {
        #[derive(serde::Deserialize)]
        struct Sent {
            connection_id: String,
        }
        code == Some("agent_offline")
            && serde_json::from_slice::<Sent>(sent)
                .is_ok_and(|s| s.connection_id == self.known.idle_connection)
    }

    fn login(&self) -> Result<(), String> {
        let password = self.session.borrow().password.clone();
        let login = json!({"email": OWNER_EMAIL, "password": password});
        let reply = self.rt.block_on(expect(
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
        ))?;
        let token = reply["access_token"].as_str().ok_or("no access token")?.to_owned();
        *self.session.borrow_mut() = Session { token, issued: Instant::now(), password };
        Ok(())
    }
}

async fn setup(dir: &Path, stop: &CancellationToken) -> Result<(Router, Known, Session), String> {
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
    let state = AppState::open_with_limits(config, limits).map_err(|e| format!("{e:#}"))?;
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

    let database = shop_database(dir)?;
    let config = AgentConfig {
        sample_values: 5,
        shutdown_grace: Duration::from_millis(100),
        ..AgentConfig::new(
            format!("ws://{addr}/api/v1/connections/ws/{agent_connection}"),
            key,
            format!("sqlite:{}", database.display()),
        )
    };
    let backoff = Backoff::with(
        Duration::from_millis(50),
        Duration::from_millis(500),
        Duration::from_secs(60),
    );
    let agent_stop = stop.clone();
    tokio::spawn(async move { custard_agent::run_with_backoff(config, agent_stop, backoff).await });

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
    let known = Known { user_id, agent_connection, idle_connection, query_id };
    Ok((app, known, Session { token, issued: Instant::now(), password: PASSWORD.to_owned() }))
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

/// Text as a path segment: unreserved characters as they are, the rest percent-encoded.
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
        case().boxed()
    }

    fn check(&self, input: &ApiCase, count: bool) -> Result<(), String> {
        self.counting.set(count);
        let body = self.body(input);
        let request = self.build(input, body.clone())?;
        let describe = |e: String| {
            format!(
                "{e}\n  request: {} {} (content type {:?})\n  body: {}",
                request_method(input),
                self.path(input),
                input.content_type,
                escape_bytes(&body, 2000)
            )
        };
        let exchange = self.exchange(input, request, &body);
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
            self.login()?;
        }
        Ok(())
    }

    fn stats(&self) -> Vec<String> {
        let counts = self.counts.borrow();
        let total: u64 = counts.statuses.values().sum();
        let limited = counts.statuses.get(&429).copied().unwrap_or(0);
        let statuses: Vec<String> =
            counts.statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let mut lines = vec![
            format!("statuses: {}", statuses.join(", ")),
            format!(
                "429 (rate limited): {limited} of {total} ({:.2}%)",
                if total > 0 { 100.0 * limited as f64 / total as f64 } else { 0.0 }
            ),
        ];
        lines.push(format!(
            "503 agent_offline for the connection without an agent (documented): {}",
            counts.expected_offline
        ));
        if !counts.stream_events.is_empty() {
            let events: Vec<String> =
                counts.stream_events.iter().map(|(c, n)| format!("{c} {n}")).collect();
            lines.push(format!("query/stream last events: {}", events.join(", ")));
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
}

fn request_method(case: &ApiCase) -> &'static str {
    case.method.unwrap_or(ENDPOINTS[case.endpoint].method)
}
