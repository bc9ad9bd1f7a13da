//! The agent's `run` loop against an in-test WebSocket server that speaks the
//! protocol, with a real PostgreSQL behind the agent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use custard_agent::backoff::Backoff;
use custard_agent::config::AgentConfig;
use custard_core::wire::{Cancel, Discover, Flow, Frame, Message, More, Run, Welcome, WireLimits};
use custard_testkit::ScratchDb;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_util::sync::CancellationToken;

const KEY: &str = "custard_test_key";
const WAIT: Duration = Duration::from_secs(15);

/// A fake Custard server: accepts agents whose key is `KEY`, hands each
/// accepted connection to the test, and counts every attempt.
struct FakeServer {
    url: String,
    attempts: Arc<AtomicUsize>,
    connections: mpsc::Receiver<ServerSide>,
    listening: tokio::task::JoinHandle<()>,
}

struct ServerSide {
    ws: WebSocketStream<TcpStream>,
}

impl FakeServer {
    async fn start() -> FakeServer {
        Self::start_at("127.0.0.1:0").await
    }

    /// Stops listening; connections already made stay with the test.
    fn go_away(&self) {
        self.listening.abort();
    }

    async fn start_at(addr: &str) -> FakeServer {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let url = format!("ws://{}/api/v1/connections/ws/c1", listener.local_addr().expect("addr"));
        let attempts = Arc::new(AtomicUsize::new(0));
        let (tx, connections) = mpsc::channel(16);
        let counter = attempts.clone();
        let listening = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check_key).await {
                        let _ = tx.send(ServerSide { ws }).await;
                    }
                });
            }
        });
        FakeServer { url, attempts, connections, listening }
    }

    /// The next agent that connects, after hello/welcome.
    async fn agent(&mut self) -> ServerSide {
        let mut side = tokio::time::timeout(WAIT, self.connections.recv())
            .await
            .expect("an agent connects")
            .expect("server");
        let hello = side.recv().await;
        assert!(matches!(hello.message, Message::Hello(_)), "{hello:?}");
        let welcome = Welcome {
            connection_id: "c1".into(),
            heartbeat_interval_ms: 15_000,
            limits: WireLimits {
                max_rows: 10_000,
                max_bytes: 1 << 26,
                timeout_ms: 30_000,
                max_concurrency: 4,
            },
        };
        side.send(Frame::new(hello.id, Message::Welcome(welcome))).await;
        side
    }
}

/// Accepts only agents that send `Authorization: Bearer KEY`.
// tungstenite's callback type fixes the error type, however large it is.
#[allow(clippy::result_large_err)]
fn check_key(request: &Request, response: Response) -> Result<Response, ErrorResponse> {
    let auth = request.headers().get("authorization").and_then(|v| v.to_str().ok());
    if auth == Some(&format!("Bearer {KEY}")) {
        Ok(response)
    } else {
        let mut refusal = ErrorResponse::new(Some("invalid API key".into()));
        *refusal.status_mut() = StatusCode::UNAUTHORIZED;
        Err(refusal)
    }
}

impl ServerSide {
    async fn send(&mut self, frame: Frame) {
        self.ws.send(WsMessage::text(frame.encode())).await.expect("send");
    }

    async fn recv(&mut self) -> Frame {
        loop {
            let message =
                tokio::time::timeout(WAIT, self.ws.next()).await.expect("a frame in time");
            match message {
                Some(Ok(WsMessage::Text(t))) => {
                    return Frame::decode(t.as_str()).expect("a valid frame");
                }
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// Frames for request `id` up to its `done` or `error`.
    async fn reply_to(&mut self, id: &str) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            let frame = self.recv().await;
            assert_eq!(frame.id, id, "replies carry the request id");
            let last = matches!(
                frame.message,
                Message::Done(_) | Message::Error(_) | Message::Schema(_) | Message::Pong
            );
            out.push(frame.message);
            if last {
                return out;
            }
        }
    }

    async fn run(&mut self, id: &str, sql: &str, timeout_ms: u64) {
        self.run_capped(id, sql, 100_000, timeout_ms).await;
    }

    async fn run_capped(&mut self, id: &str, sql: &str, max_rows: u64, timeout_ms: u64) {
        let run = Run { sql: sql.into(), max_rows, timeout_ms };
        self.send(Frame::new(id, Message::Run(run))).await;
    }
}

fn config(server_url: &str, database_url: &str, max_concurrency: usize) -> AgentConfig {
    AgentConfig {
        max_concurrency,
        max_rows: 100_000,
        max_bytes: 1 << 28,
        allow_privileged_role: true,
        shutdown_grace: Duration::from_secs(2),
        ..AgentConfig::new(server_url, KEY, database_url)
    }
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start(config: AgentConfig) -> Running {
    let stop = CancellationToken::new();
    let backoff = Backoff::with(
        Duration::from_millis(100),
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    let task = tokio::spawn(custard_agent::run_with_backoff(config, stop.clone(), backoff));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the agent stops")
            .expect("task")
            .expect("clean exit");
    }
}

async fn numbers() -> ScratchDb {
    let db = ScratchDb::create("agent_run").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE n (i int PRIMARY KEY); INSERT INTO n SELECT generate_series(1, 3000)",
        )
        .await
        .expect("setup");
    db
}

/// A legitimate query that takes many seconds (the guard rejects pg_sleep).
const SLOW: &str = "SELECT count(*) FROM generate_series(1, 300000000) AS g";

async fn active_slow_queries(db: &ScratchDb) -> i64 {
    let client = db.client().await;
    let mut n = 0;
    for _ in 0..50 {
        n = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%300000000%' AND query NOT LIKE '%pg_stat_activity%' AND state = 'active' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("activity")
            .get(0);
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n
}

fn error_code(messages: &[Message]) -> String {
    match messages.last() {
        Some(Message::Error(e)) => e.code.to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_streaming_and_the_agents_own_guard() {
    let db = numbers().await;
    let mut server = FakeServer::start().await;
    let agent = start(config(&server.url, &db.url, 4));
    let mut side = server.agent().await;

    side.send(Frame::new("d1", Message::Discover(Discover { sample_values: 5 }))).await;
    let reply = side.reply_to("d1").await;
    let Some(Message::Schema(report)) = reply.last() else { panic!("{reply:?}") };
    let schema = report.clone().into_schema().expect("valid schema");
    assert_eq!(schema.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["n"]);

    side.run("q1", "SELECT i FROM n ORDER BY i", 10_000).await;
    let reply = side.reply_to("q1").await;
    assert!(matches!(reply.first(), Some(Message::Columns(c)) if c.columns[0].name == "i"));
    let chunks: Vec<usize> = reply
        .iter()
        .filter_map(|m| if let Message::Rows(r) = m { Some(r.rows.len()) } else { None })
        .collect();
    assert!(chunks.len() >= 2, "rows arrive in chunks: {chunks:?}");
    assert_eq!(chunks.iter().sum::<usize>(), 3000);
    assert!(matches!(reply.last(), Some(Message::Done(d)) if d.row_count == 3000 && !d.truncated));

    // The server is not trusted: the agent checks every query again.
    let rejected = [
        ("r1", "DELETE FROM n", "data_modifying"),
        ("r2", "SELECT pg_sleep(1)", "function_not_allowed"),
        ("r3", "SELECT * FROM secrets", "unknown_table"),
        ("r4", "SELECT 1; DROP TABLE n", "multiple_statements"),
    ];
    for (id, sql, code) in rejected {
        side.run(id, sql, 10_000).await;
        assert_eq!(error_code(&side.reply_to(id).await), code, "{sql}");
    }
    side.send(Frame::new("p1", Message::Ping)).await;
    assert_eq!(side.reply_to("p1").await, [Message::Pong]);
    side.ws
        .send(WsMessage::text("{\"v\":1,\"type\":\"teleport\",\"id\":\"x1\"}"))
        .await
        .expect("send");
    assert_eq!(error_code(&side.reply_to("x1").await), "unknown_message_type");
    let count: i64 =
        db.client().await.query_one("SELECT count(*) FROM n", &[]).await.expect("count").get(0);
    assert_eq!(count, 3000);
    agent.stop().await;
}

/// A small result's `columns` waits for its rows so they leave together,
/// but a query slow to its first row has its columns heard at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_query_s_columns_come_before_its_rows() {
    let db = numbers().await;
    let mut server = FakeServer::start().await;
    let agent = start(config(&server.url, &db.url, 4));
    let mut side = server.agent().await;

    side.run("slow", SLOW, 60_000).await;
    let first = tokio::time::timeout(Duration::from_secs(5), side.recv())
        .await
        .expect("the columns of a slow query come before it ends");
    assert_eq!(first.id, "slow");
    assert!(
        matches!(&first.message, Message::Columns(c) if c.columns[0].name == "count"),
        "{first:?}"
    );
    side.send(Frame::new("c1", Message::Cancel(Cancel { target: "slow".into() }))).await;
    assert_eq!(error_code(&side.reply_to("slow").await), "canceled");

    side.run("small", "SELECT i FROM n WHERE i <= 3 ORDER BY i", 10_000).await;
    let reply = side.reply_to("small").await;
    assert!(
        matches!(reply.as_slice(), [Message::Columns(_), Message::Rows(r), Message::Done(_)] if r.rows.len() == 3),
        "{reply:?}"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_cancellation_and_busy() {
    let db = numbers().await;
    let mut server = FakeServer::start().await;
    let agent = start(config(&server.url, &db.url, 1));
    let mut side = server.agent().await;

    let started = Instant::now();
    side.run("slow1", SLOW, 500).await;
    assert_eq!(error_code(&side.reply_to("slow1").await), "query_timeout");
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline is kept");
    assert_eq!(active_slow_queries(&db).await, 0, "the deadline cancels the query in PostgreSQL");

    side.run("slow2", SLOW, 60_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    side.run("extra", "SELECT 1", 10_000).await;
    let busy = loop {
        let frame = side.recv().await;
        if frame.id == "extra" {
            break frame;
        }
        assert!(matches!(frame.message, Message::Columns(_)), "slow2 is still running: {frame:?}");
    };
    assert!(matches!(&busy.message, Message::Error(e) if e.code == "agent_busy"), "{busy:?}");
    let started = Instant::now();
    side.send(Frame::new("c1", Message::Cancel(Cancel { target: "slow2".into() }))).await;
    assert_eq!(error_code(&side.reply_to("slow2").await), "canceled");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(active_slow_queries(&db).await, 0, "cancel stops the query in PostgreSQL");
    side.run("after", "SELECT 1 AS one", 10_000).await;
    assert!(
        matches!(side.reply_to("after").await.last(), Some(Message::Done(_))),
        "the slot is free again"
    );
    agent.stop().await;
}

/// A refused key is not worth retrying soon: the agent waits the long
/// interval between attempts, however short its usual backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_the_agent_backs_off() {
    let db = numbers().await;
    let server = FakeServer::start().await;
    let mut wrong = config(&server.url, &db.url, 1);
    wrong.api_key = "custard_wrong".into();
    wrong.key_refused_retry = Duration::from_millis(400);
    let stop = CancellationToken::new();
    // Reconnect delays of 1-2 ms: with them a 401 would mean hundreds of attempts.
    let backoff =
        Backoff::with(Duration::from_millis(1), Duration::from_millis(2), Duration::from_secs(60));
    let task = tokio::spawn(custard_agent::run_with_backoff(wrong, stop.clone(), backoff));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let attempts = server.attempts.load(Ordering::SeqCst);
    // One at once, then one every 400 ms: about 6 in 2 s (a slow start makes fewer).
    assert!((2..=7).contains(&attempts), "{attempts} connection attempts in 2 s");
    stop.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops").expect("task").expect("clean exit");
}

/// With the default interval (5 minutes) a refused key is tried once, not again soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_not_retried_soon_by_default() {
    let db = numbers().await;
    let server = FakeServer::start().await;
    let mut wrong = config(&server.url, &db.url, 1);
    wrong.api_key = "custard_wrong".into();
    let agent = start(wrong);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.attempts.load(Ordering::SeqCst), 1, "one attempt, then a long wait");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_after_the_server_goes_away() {
    let db = numbers().await;
    let mut server = FakeServer::start().await;
    let agent = start(config(&server.url, &db.url, 2));
    let side = server.agent().await;
    drop(side);
    let again = server.agent().await;
    // Now the whole server goes away for a while and comes back on the same address.
    server.go_away();
    drop(again);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let addr = server.url.trim_start_matches("ws://").split('/').next().expect("addr").to_owned();
    let mut server = FakeServer::start_at(&addr).await;
    let mut again = server.agent().await;
    again.run("q", "SELECT count(*) AS n FROM n", 10_000).await;
    assert!(matches!(again.reply_to("q").await.last(), Some(Message::Done(d)) if d.row_count == 1));
    agent.stop().await;
}

/// A TCP proxy in front of PostgreSQL that can be switched off, cutting every
/// connection, and on again.
struct Switch {
    url: String,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

async fn switch_to(db: &ScratchDb) -> Switch {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let url = db.url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{port}"), 1);
    assert_ne!(url, db.url, "the test database URL points at 127.0.0.1:5432");
    let up = Arc::new(AtomicBool::new(true));
    let (cut, cuts) = tokio::sync::watch::channel(0u64);
    let flag = up.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !flag.load(Ordering::SeqCst) {
                continue;
            }
            let mut cuts = cuts.clone();
            // Only cuts after this connection was made end it.
            cuts.borrow_and_update();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5432").await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cuts.changed() => {}
                }
            });
        }
    });
    Switch { url, up, cut }
}

impl Switch {
    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_and_back() {
    let db = numbers().await;
    let switch = switch_to(&db).await;
    let mut server = FakeServer::start().await;
    let agent = start(config(&server.url, &switch.url, 2));
    let mut side = server.agent().await;
    side.run("before", "SELECT count(*) AS n FROM n", 10_000).await;
    assert!(matches!(side.reply_to("before").await.last(), Some(Message::Done(_))));

    switch.set(false);
    side.run("down", "SELECT count(*) AS n FROM n", 10_000).await;
    assert_eq!(error_code(&side.reply_to("down").await), "database_unavailable");
    side.send(Frame::new("p", Message::Ping)).await;
    assert_eq!(
        side.reply_to("p").await,
        [Message::Pong],
        "the agent stays connected to the server"
    );

    switch.set(true);
    let mut answered = false;
    for i in 0..20 {
        let id = format!("back{i}");
        side.run(&id, "SELECT count(*) AS n FROM n", 10_000).await;
        if matches!(side.reply_to(&id).await.last(), Some(Message::Done(_))) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answered, "queries work again once the database is back");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superuser_is_refused_with_the_sql_for_a_read_only_role() {
    let db = numbers().await;
    let server = FakeServer::start().await;
    let mut privileged = config(&server.url, &db.url, 1);
    privileged.allow_privileged_role = false;
    let stop = CancellationToken::new();
    let result =
        tokio::time::timeout(WAIT, custard_agent::run(privileged, stop)).await.expect("returns");
    let message = result.expect_err("refused").to_string();
    assert!(message.contains("superuser"), "{message}");
    assert!(message.contains("CREATE ROLE \"custard_reader\""), "{message}");
    assert!(message.contains("--allow-privileged-role"), "{message}");
    assert_eq!(server.attempts.load(Ordering::SeqCst), 0, "it never connected to the server");
}

/// When the server goes away, the queries it asked for stop in PostgreSQL
/// instead of running on to their own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_cancels_its_queries_in_the_database() {
    let db = numbers().await;
    // Sleeps where the guard cannot see it (it refuses pg_sleep in a query).
    db.client()
        .await
        .batch_execute("CREATE VIEW slow_answer AS SELECT 42 AS answer FROM pg_sleep(30)")
        .await
        .expect("the slow view");
    let mut server = FakeServer::start().await;
    let agent = start(config(&server.url, &db.url, 2));
    let mut side = server.agent().await;
    side.run("slow", "SELECT answer FROM slow_answer", 60_000).await;
    let client = db.client().await;
    let running = || async {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%slow_answer%' AND query NOT LIKE '%pg_stat_activity%' \
                 AND state = 'active' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("activity")
            .get(0);
        n
    };
    let deadline = Instant::now() + WAIT;
    while running().await == 0 {
        assert!(Instant::now() < deadline, "the slow query did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(side);
    while running().await > 0 {
        assert!(Instant::now() < deadline, "the lost session's query still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The agent is back; welcome it so it stops at once.
    let _again = server.agent().await;
    agent.stop().await;
}

/// The text of the slow query running in the database, once it shows up.
async fn running_slow_query(db: &ScratchDb) -> String {
    let client = db.client().await;
    for _ in 0..100 {
        let row = client
            .query_opt(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%300000000%' AND query NOT LIKE '%pg_stat_activity%' AND state = 'active' AND pid <> pg_backend_pid() LIMIT 1",
                &[],
            )
            .await
            .expect("activity");
        if let Some(row) = row {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the slow query never showed up in pg_stat_activity");
}

/// A `run` carries the plain query and its row cap; the agent wraps it once,
/// in that cap. A query an older server wrapped is not wrapped again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_wrapped_once_in_its_row_cap() {
    let db = numbers().await;
    let mut server = FakeServer::start().await;
    let agent = start(config(&server.url, &db.url, 2));
    let mut side = server.agent().await;

    side.run_capped("few", "SELECT i FROM n ORDER BY i", 5, 30_000).await;
    let reply = side.reply_to("few").await;
    let rows: Vec<_> = reply
        .iter()
        .filter_map(|m| if let Message::Rows(r) = m { Some(r.rows.clone()) } else { None })
        .flatten()
        .collect();
    assert_eq!(rows.len(), 5, "{reply:?}");
    assert!(
        matches!(reply.last(), Some(Message::Done(d)) if d.row_count == 5 && d.truncated),
        "{reply:?}"
    );

    let inner = "SELECT count(*) FROM generate_series(1, 300000000) AS g";
    let wrapped = format!("SELECT * FROM ({inner}) AS custard_result LIMIT 1001");
    for (id, sql) in [("plain", inner.to_owned()), ("older_server", wrapped)] {
        side.run_capped(id, &sql, 7, 30_000).await;
        let ran = running_slow_query(&db).await;
        assert_eq!(ran.matches("custard_result").count(), 1, "{id}: {ran}");
        assert!(ran.ends_with("LIMIT 8"), "{id}: {ran}");
        side.send(Frame::new(format!("c-{id}"), Message::Cancel(Cancel { target: id.into() })))
            .await;
        assert_eq!(error_code(&side.reply_to(id).await), "canceled", "{id}");
        assert_eq!(active_slow_queries(&db).await, 0, "{id}: the query stopped");
    }
    agent.stop().await;
}

/// With flow control a run sends at most its window of `rows` frames until the
/// server takes them (`more`); meanwhile other runs are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_pauses_one_run_until_the_server_takes_its_rows() {
    let db = numbers().await;
    let mut server = FakeServer::start().await;
    let agent = start(config(&server.url, &db.url, 2));
    let mut side = server.agent().await;
    side.send(Frame::new("flow", Message::Flow(Flow { window: 2 }))).await;
    // 3,000 rows: more `rows` frames than the window of two (how many depends on
    // the executor's fetch sizes).
    side.run("big", "SELECT i FROM n ORDER BY i", 30_000).await;
    side.run("small", "SELECT 1 AS one", 30_000).await;
    let mut big = Vec::new();
    loop {
        let frame = side.recv().await;
        if frame.id == "small" {
            if matches!(frame.message, Message::Done(_)) {
                break;
            }
        } else {
            big.push(frame.message);
        }
    }
    // Take what the paused run sends until it has been quiet for a while.
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(500), side.recv()).await {
        big.push(frame.message);
    }
    let rows =
        |messages: &[Message]| messages.iter().filter(|m| matches!(m, Message::Rows(_))).count();
    assert!(matches!(big.first(), Some(Message::Columns(_))), "{big:?}");
    assert_eq!(rows(&big), 2, "the window's two frames, then nothing: {big:?}");

    side.send(Frame::new("m1", Message::More(More { target: "big".into(), frames: 100 }))).await;
    let rest = side.reply_to("big").await;
    assert!(rows(&rest) >= 1, "the rest came after `more`: {rest:?}");
    assert!(
        matches!(rest.last(), Some(Message::Done(d)) if d.row_count == 3000 && !d.truncated),
        "{rest:?}"
    );
    agent.stop().await;
}

/// On shutdown the agent stops taking work but lets a running query finish
/// within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_queries_finish() {
    let db = numbers().await;
    let mut server = FakeServer::start().await;
    let agent = start(config(&server.url, &db.url, 2));
    let mut side = server.agent().await;
    side.run("last", "SELECT count(*) AS n FROM generate_series(1, 5000000) AS g", 30_000).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    agent.stop.cancel();
    let reply = side.reply_to("last").await;
    assert!(matches!(reply.last(), Some(Message::Done(d)) if d.row_count == 1), "{reply:?}");
    tokio::time::timeout(WAIT, agent.task)
        .await
        .expect("stops")
        .expect("task")
        .expect("clean exit");
}

/// The binary turns SIGTERM into that same clean shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_binary_cleanly() {
    let db = numbers().await;
    let mut server = FakeServer::start().await;
    let health =
        std::env::temp_dir().join(format!("custard-agent-test-{}.health", std::process::id()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_custard-agent"))
        .env("CUSTARD_SERVER_URL", &server.url)
        .env("CUSTARD_API_KEY", KEY)
        .env("CUSTARD_DATABASE_URL", &db.url)
        .env("CUSTARD_ALLOW_PRIVILEGED_ROLE", "true")
        .env("CUSTARD_HEALTH_FILE", &health)
        .kill_on_drop(true)
        .spawn()
        .expect("start the agent");
    let mut side = server.agent().await;
    side.send(Frame::new("p", Message::Ping)).await;
    assert_eq!(side.reply_to("p").await, [Message::Pong]);
    let healthy = std::process::Command::new(env!("CARGO_BIN_EXE_custard-agent"))
        .args(["health", "--health-file"])
        .arg(&health)
        .status()
        .expect("health");
    assert!(healthy.success(), "a connected agent is healthy");
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("status");
    assert!(status.success(), "clean exit: {status:?}");
    let unhealthy = std::process::Command::new(env!("CARGO_BIN_EXE_custard-agent"))
        .args(["health", "--health-file"])
        .arg(&health)
        .output()
        .expect("health");
    assert!(!unhealthy.status.success(), "a stopped agent is not healthy");
    let _ = std::fs::remove_file(&health);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_columns_are_neither_shared_nor_read() {
    let db = ScratchDb::create("agent_mask").await;
    db.client()
        .await
        .batch_execute("CREATE TABLE people (id int PRIMARY KEY, name text, salary numeric); INSERT INTO people VALUES (1, 'Ada', 100)")
        .await
        .expect("setup");
    let mut server = FakeServer::start().await;
    let mut masked = config(&server.url, &db.url, 2);
    masked.masked_columns = vec!["public.people.salary".into()];
    let agent = start(masked);
    let mut side = server.agent().await;
    side.send(Frame::new("d", Message::Discover(Discover { sample_values: 0 }))).await;
    let Some(Message::Schema(report)) = side.reply_to("d").await.pop() else { panic!("schema") };
    let columns: Vec<String> =
        report.schema.tables[0].columns.iter().map(|c| c.name.clone()).collect();
    assert_eq!(columns, ["id", "name"], "the masked column is not shared");
    for (id, sql) in [
        ("m1", "SELECT salary FROM people"),
        ("m2", "SELECT * FROM people"),
        ("m3", "SELECT name FROM people ORDER BY salary"),
    ] {
        side.run(id, sql, 10_000).await;
        assert_eq!(error_code(&side.reply_to(id).await), "masked_column", "{sql}");
    }
    side.run("ok", "SELECT id, name FROM people", 10_000).await;
    assert!(matches!(side.reply_to("ok").await.last(), Some(Message::Done(d)) if d.row_count == 1));
    agent.stop().await;
}

/// Over SQLite the database enforces the policy too: a join by name that the
/// guard lets through (it compares no masked column) is refused by the SQLite
/// executor, which cannot see the columns such a join compares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_enforces_the_agents_policy_too() {
    let dir = tempfile::tempdir().expect("a folder");
    let path = dir.path().join("people.db");
    rusqlite::Connection::open(&path)
        .expect("create")
        .execute_batch(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, salary INTEGER);
             INSERT INTO people VALUES (1, 'Ada', 100);
             CREATE TABLE teams (id INTEGER PRIMARY KEY, team TEXT);
             INSERT INTO teams VALUES (1, 'core');",
        )
        .expect("setup");
    let mut server = FakeServer::start().await;
    let mut masked = config(&server.url, &format!("sqlite:{}", path.display()), 2);
    masked.masked_columns = vec!["main.people.salary".into()];
    let agent = start(masked);
    let mut side = server.agent().await;
    side.run("using", "SELECT p.name, t.team FROM people AS p JOIN teams AS t USING (id)", 10_000)
        .await;
    let reply = side.reply_to("using").await;
    let Some(Message::Error(e)) = reply.last() else { panic!("refused: {reply:?}") };
    assert_eq!(e.code, "permission_denied", "{e:?}");
    assert!(e.message.contains("USING joins are not allowed"), "{e:?}");
    side.run("on", "SELECT p.name, t.team FROM people AS p JOIN teams AS t ON t.id = p.id", 10_000)
        .await;
    assert!(matches!(side.reply_to("on").await.last(), Some(Message::Done(d)) if d.row_count == 1));
    side.run("masked", "SELECT salary FROM people", 10_000).await;
    assert_eq!(error_code(&side.reply_to("masked").await), "masked_column", "the guard first");
    agent.stop().await;
}

/// A role that could not be checked at start (database down) is checked before
/// the first request once the database is back, and refused then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_check_waits_for_the_database() {
    let db = numbers().await;
    let switch = switch_to(&db).await;
    switch.set(false);
    let mut server = FakeServer::start().await;
    let mut privileged = config(&server.url, &switch.url, 2);
    privileged.allow_privileged_role = false;
    let agent = start(privileged);
    let mut side = server.agent().await;
    switch.set(true);
    for id in ["first", "second"] {
        side.run(id, "SELECT count(*) AS n FROM n", 10_000).await;
        assert_eq!(error_code(&side.reply_to(id).await), "privileged_role", "{id}");
    }
    agent.stop().await;
}
