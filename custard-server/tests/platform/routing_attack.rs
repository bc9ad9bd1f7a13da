//! Attacks on the routing between replicas through NATS: each test began as
//! the demonstration of a bug a review found (or of a check that held), and
//! stays as its regression test.
//!
//! Each test stands alone: two replicas in one process over a new store and
//! their own NATS subject prefix, plus, where a precise peer is needed, a
//! bare NATS client playing the other replica, or a raw agent.

use async_nats::HeaderMap;
use custard_core::wire::{Cancel, Done as WireDone, Rows as WireRows, Run};
use custard_testkit::ScratchDb;

use super::routing::{bare_holder, nats_url, subject_prefix};

use super::*;

/// The longest one of these tests may take.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(LIMIT, test).await.expect("the test finished within 30 s");
}

/// [`super::routing::two_replicas`], with the subject prefix they use.
async fn two_replicas(flags: &[&str]) -> (Platform, Platform, ScratchDb, String) {
    let (one, two, store) = super::routing::two_replicas(flags).await;
    let prefix = subject_prefix(&one);
    (one, two, store, prefix)
}

// ---------------------------------------------------------------------------
// A raw agent, for what the scripted fake cannot do (slow discovery, big
// frames, a chosen schema)

#[derive(Clone)]
struct Raw {
    schema: Schema,
    /// Pause before answering every `discover` after the first (the one at connect).
    slow_discover: Duration,
    /// The `rows` frames every `run` is answered with (one column, `answer`).
    frames: Vec<Vec<Vec<Value>>>,
}

struct RawAgent {
    seen: Arc<Mutex<Vec<Frame>>>,
    _outbox: mpsc::UnboundedSender<tungstenite::Message>,
}

impl RawAgent {
    async fn connect(platform: &Platform, connection: &str, key: &str, raw: Raw) -> RawAgent {
        let mut request = platform.agent_url(connection).into_client_request().expect("request");
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, format!("Bearer {key}").parse().expect("header"));
        let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("agent connects");
        let (mut sink, mut stream) = socket.split();
        let hello = Hello {
            agent_version: "raw-1.0".to_owned(),
            dialect: Dialect::Sqlite.as_str().to_owned(),
            capabilities: Vec::new(),
            schema_fingerprint: Some(raw.schema.fingerprint()),
            max_concurrency: 4,
        };
        sink.send(text(&Frame::new("hello-1", Message::Hello(hello)))).await.expect("hello");
        let (outbox, mut outgoing) = mpsc::unbounded_channel::<tungstenite::Message>();
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, replies) = (Arc::clone(&seen), outbox.clone());
        tokio::spawn(async move {
            let mut discovers = 0;
            while let Some(Ok(message)) = stream.next().await {
                let tungstenite::Message::Text(t) = message else { continue };
                let frame = Frame::decode(t.as_str()).expect("a frame");
                lock(&log).push(frame.clone());
                let replies = replies.clone();
                match &frame.message {
                    Message::Ping => {
                        let _ = replies.send(text(&frame.reply(Message::Pong)));
                    }
                    Message::Discover(_) => {
                        discovers += 1;
                        let pause = if discovers > 1 { raw.slow_discover } else { Duration::ZERO };
                        let report = frame.reply(Message::Schema(SchemaReport::new(&raw.schema)));
                        tokio::spawn(async move {
                            tokio::time::sleep(pause).await;
                            let _ = replies.send(text(&report));
                        });
                    }
                    Message::Run(_) => {
                        let columns = Columns {
                            columns: vec![WireColumnMeta {
                                name: "answer".to_owned(),
                                type_name: "TEXT".to_owned(),
                            }],
                        };
                        let _ = replies.send(text(&frame.reply(Message::Columns(columns))));
                        let mut count = 0;
                        for rows in &raw.frames {
                            count += rows.len() as u64;
                            let rows = Message::Rows(WireRows { rows: rows.clone() });
                            let _ = replies.send(text(&frame.reply(rows)));
                        }
                        let done = WireDone {
                            row_count: count,
                            truncated: false,
                            elapsed_ms: 1,
                            bytes: 1,
                        };
                        let _ = replies.send(text(&frame.reply(Message::Done(done))));
                    }
                    _ => {}
                }
            }
        });
        RawAgent { seen, _outbox: outbox }
    }

    fn count(&self, type_name: &str) -> usize {
        lock(&self.seen).iter().filter(|f| f.message.type_name() == type_name).count()
    }
}

// ---------------------------------------------------------------------------
// A bare NATS client playing a replica

async fn bare_client() -> async_nats::Client {
    async_nats::connect(nats_url()).await.expect("NATS answers")
}

/// Sends `frame` as a replica would ask for it; returns the reply inbox.
async fn ask_raw(
    client: &async_nats::Client,
    subject: String,
    payload: Vec<u8>,
    headers: HeaderMap,
) -> async_nats::Subscriber {
    let inbox = client.new_inbox();
    let replies = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply_and_headers(subject, inbox, headers, payload.into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    replies
}

fn run_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Custard-Dialect", "sqlite");
    headers.insert("Custard-Max-Bytes", "1000000");
    headers
}

fn run_frame(sql: &str, timeout_ms: u64) -> Vec<u8> {
    let run = Run { sql: sql.to_owned(), max_rows: 10, timeout_ms };
    Frame::new("run", Message::Run(run)).encode().into_bytes()
}

/// The next message on `replies` within `wait`, as JSON, with its control header.
async fn next_json(
    replies: &mut async_nats::Subscriber,
    wait: Duration,
) -> Option<(Value, Option<String>)> {
    let message = tokio::time::timeout(wait, replies.next()).await.ok()??;
    let control =
        message.headers.as_ref().and_then(|h| h.get("Custard-Control")).map(|v| v.to_string());
    // Frames ready together come in one message, one per line: the first.
    let first = message.payload.split(|&b| b == b'\n').next().unwrap_or_default();
    Some((serde_json::from_slice(first).unwrap_or(Value::Null), control))
}

/// The first non-`pong` reply within `wait`.
async fn first_answer(replies: &mut async_nats::Subscriber, wait: Duration) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (json, _) = next_json(replies, left).await.expect("an answer in time");
        if json["type"] != "pong" {
            return json;
        }
    }
}

// ---------------------------------------------------------------------------
// The tests

/// A schema refresh asked of one replica, for an agent on the other whose
/// discovery takes 2 s (a big database takes far longer; the default limit is
/// 120 s), succeeds: the holding replica keeps sending `pong` while its
/// agent discovers (it once did not, and the asker gave up after three
/// heartbeats with `agent_disconnected`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_discovery_through_nats_is_not_a_replica_gone() {
    within(async {
        let (one, two, _store, _) = two_replicas(&[]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let raw = Raw {
            schema: customers_schema(),
            slow_discover: Duration::from_secs(2),
            frames: vec![vec![vec![json!("1")]]],
        };
        let agent = RawAgent::connect(&two, &conn, &key, raw).await;
        one.wait_for_schema(&a, &conn).await;
        one.wait_for_agents(&a, &conn, 1).await;

        let started = Instant::now();
        let path = format!("/api/v1/connections/{conn}/refresh-schema");
        let (status, reply) = one.call("POST", &path, Some(&a), None).await;
        let took = started.elapsed();
        assert_eq!(agent.count("discover"), 2, "the refresh reached the agent on two");
        assert_eq!(
            status,
            StatusCode::OK,
            "a 2 s discovery relayed through NATS failed after {took:?}: {reply}"
        );
    })
    .await;
}

/// A caller that reads slowly pauses its own query, as on the local hub (up
/// to its deadline). Here the CSV export's reader pauses 2 s (more than three
/// 200 ms heartbeats) before reading: the asking replica keeps sending `ping`
/// meanwhile (it once did not, and the holder dropped the query as if the
/// asker were gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_pausing_longer_than_three_heartbeats_keeps_its_relayed_query() {
    within(async {
        let (one, two, _store, _) = two_replicas(&[]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let database = shop_database(two.dir.path(), 30_000);
        let database_url = format!("sqlite:{}", database.display());
        let config =
            AgentConfig { max_rows: 100_000, ..two.agent_config(&conn, &key, &database_url) };
        two.start_agent(config);
        one.wait_for_schema(&a, &conn).await;
        one.wait_for_agents(&a, &conn, 1).await;
        let (status, answer) = one.ask(&a, &conn, "list the customers").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let id = answer["id"].as_str().expect("id");

        let path = format!("/api/v1/queries/{id}/export.csv");
        let response = one.send(Platform::request("GET", &path, Some(&a), None)).await;
        assert_eq!(response.status(), StatusCode::OK);
        // The reader is busy for a while (a slow client, a full TCP window).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let body = axum::body::to_bytes(response.into_body(), 64 << 20).await;
        let bytes = body.unwrap_or_else(|e| panic!("the export failed after a 2 s pause: {e}"));
        let lines = String::from_utf8(bytes.to_vec()).expect("utf-8").lines().count();
        assert_eq!(lines, 30_001, "a header and every row");
    })
    .await;
}

/// Requests go to the agent with the fewest requests in flight; `agent_busy`
/// only when every agent is busy. Replica one's only agent (max_concurrency
/// 1) is busy with a silent query; replica two's agent is idle. Questions
/// asked of one go to two (they once went to the queue group `holders`,
/// which includes one itself: about half came back to wait for its busy
/// agent until `agent_busy`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_reaches_the_idle_agent_not_the_busy_replica() {
    within(async {
        let (one, two, _store, _) = two_replicas(&["--query-timeout-secs", "2"]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let busy = Script { on_run: OnRun::Silent, max_concurrency: 1, answer: 0 };
        let slow = one.fake_agent(&conn, &key, busy).await;
        let _idle = two.fake_agent(&conn, &key, Script::answering(7)).await;
        one.wait_for_schema(&a, &conn).await;
        one.wait_for_agents(&a, &conn, 2).await;

        // The first question takes one's own agent (it has room) and hangs there.
        let first = {
            let (app, token, conn) = (one.app.clone(), a.clone(), conn.clone());
            tokio::spawn(async move {
                let body = json!({"connection_id": conn, "question": HOW_MANY});
                let request = Platform::request("POST", "/api/v1/query", Some(&token), Some(&body));
                app.oneshot(request).await.expect("infallible").status()
            })
        };
        eventually("the first question on one's agent", || {
            std::future::ready(!slow.frames("run").is_empty())
        })
        .await;

        let asks: Vec<_> = (0..8)
            .map(|_| {
                let (app, token, conn) = (one.app.clone(), a.clone(), conn.clone());
                tokio::spawn(async move {
                    let body = json!({"connection_id": conn, "question": HOW_MANY});
                    let request =
                        Platform::request("POST", "/api/v1/query", Some(&token), Some(&body));
                    let response = app.oneshot(request).await.expect("infallible");
                    let status = response.status();
                    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await;
                    let reply: Value = bytes
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or_default();
                    (status, code(&reply).to_owned())
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for ask in asks {
            outcomes.push(ask.await.expect("ask"));
        }
        first.abort();
        let failed: Vec<_> = outcomes.iter().filter(|(s, _)| *s != StatusCode::OK).collect();
        assert!(
            failed.is_empty(),
            "{} of 8 questions failed with two's agent idle: {outcomes:?}; one's busy agent \
             saw {} runs",
            failed.len(),
            slow.frames("run").len()
        );
    })
    .await;
}

/// The NATS password is never shown, also in a URL without a scheme
/// (`user:password@host:4222`, which async-nats reads as `nats://`; `redact`
/// once hid credentials only after a `://`).
#[tokio::test]
async fn a_nats_url_without_a_scheme_is_redacted_too() {
    let url = "ops:s3cr3t-pw@127.0.0.1:4222";
    url.parse::<async_nats::ServerAddr>().expect("async-nats takes it");
    let config = ServerConfig::parse_from(["custard-server", "--nats-url", url]);
    let debug = format!("{config:?}");
    let both = "nats://ops:s3cr3t-pw@10.0.0.1:4222, ops:s3cr3t-pw@10.0.0.2:4222";
    let shown = custard_server::hub::redact_nats_url(both);
    assert!(
        !debug.contains("s3cr3t") && !shown.contains("s3cr3t"),
        "the password is shown: config {debug}; redact of a list: {shown}"
    );
}

/// A malformed presence announcement from NATS does not take a replica down:
/// two announcements whose agent counts add up past `usize::MAX` once
/// overflowed (a panic in debug builds) and killed the `cluster` task, and
/// with it presence, status events and subscriptions on that replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_presence_count_does_not_stop_the_replica_routing() {
    within(async {
        let (one, two, _store, prefix) = two_replicas(&[]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (victim, _) = one.connection(&a, "Victim").await;
        let client = bare_client().await;
        for replica in ["forged-1", "forged-2"] {
            let snapshot = json!({
                "type": "snapshot",
                "replica": replica,
                "held": [{"connection": victim, "org": "x", "agents": usize::MAX}],
            });
            client
                .publish(format!("{prefix}.presence"), snapshot.to_string().into())
                .await
                .expect("publish");
        }
        client.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Another connection's agent on two must still be seen by one.
        let (conn, key) = one.connection(&a, "Shop").await;
        let _agent = two.fake_agent(&conn, &key, Script::answering(1)).await;
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let agents = one.get_connection(&a, &conn).await["agents"].as_u64();
            if agents == Some(1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica one no longer learns of other replicas' agents after a forged \
                 presence message (agents: {agents:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A replica's queue subscription to the connection's subject is in place
/// before it announces `agent_connected`: a request sent on hearing the
/// announcement never gets "no responders". (It once subscribed after
/// announcing; 1 or 2 of 20 such requests were `agent_offline`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_agent_is_already_reachable() {
    within(async {
        let (one, two, _store, prefix) = two_replicas(&[]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let agent = two.fake_agent(&conn, &key, Script::answering(1)).await;
        one.wait_for_schema(&a, &conn).await;
        agent.hang_up();
        two.wait_for_agents(&a, &conn, 0).await;
        let client = bare_client().await;
        let mut events = client.subscribe(format!("{prefix}.presence")).await.expect("sub");
        client.flush().await.expect("flush");
        let tries = 20;
        let mut offline = 0;
        for _ in 0..tries {
            let agent = two.fake_agent(&conn, &key, Script::answering(1)).await;
            loop {
                let m = tokio::time::timeout(Duration::from_secs(5), events.next())
                    .await
                    .expect("an event in time")
                    .expect("an event");
                let v: Value = serde_json::from_slice(&m.payload).expect("json");
                if v["type"] == "change" && v["kind"] == "agent_connected" {
                    break;
                }
            }
            let subject = format!("{prefix}.agents.{conn}");
            let mut replies =
                ask_raw(&client, subject, run_frame("SELECT 1", 1_000), run_headers()).await;
            let m = tokio::time::timeout(Duration::from_secs(5), replies.next())
                .await
                .expect("a reply in time")
                .expect("a reply");
            if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                offline += 1;
            }
            agent.hang_up();
            two.wait_for_agents(&a, &conn, 0).await;
        }
        assert_eq!(
            offline, 0,
            "{offline} of {tries} requests sent on hearing agent_connected had no responders"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Checks that pass (kept as regression tests)

/// A peer on NATS answering three rows and a `done` claiming 999 changes no
/// answer: the rows that came are counted, as the local hub counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_more_rows_than_it_sent_changes_no_answer() {
    within(async {
        let (one, two, _store, prefix) = two_replicas(&[]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let agent = two.fake_agent(&conn, &key, Script::answering(1)).await;
        one.wait_for_schema(&a, &conn).await;
        agent.hang_up();
        two.wait_for_agents(&a, &conn, 0).await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let client = bare_client().await;
        let mut requests = bare_holder(&client, &prefix, &conn, "lying").await;
        one.wait_for_agents(&a, &conn, 1).await;
        let holder = tokio::spawn(async move {
            let request = requests.next().await.expect("a request");
            let reply = request.reply.expect("a reply subject");
            let mut headers = HeaderMap::new();
            headers.insert("Custard-Control", client.new_inbox().as_str());
            let pong = Frame::new("run", Message::Pong).encode();
            client.publish_with_headers(reply.clone(), headers, pong.into()).await.expect("pong");
            let columns = Columns {
                columns: vec![WireColumnMeta {
                    name: "answer".to_owned(),
                    type_name: "INTEGER".to_owned(),
                }],
            };
            let mut frames = vec![Frame::new("run", Message::Columns(columns))];
            for n in 1..=3 {
                let rows = WireRows { rows: vec![vec![json!(n)]] };
                frames.push(Frame::new("run", Message::Rows(rows)));
            }
            let done = WireDone { row_count: 999, truncated: false, elapsed_ms: 1, bytes: 1 };
            frames.push(Frame::new("run", Message::Done(done)));
            for frame in frames {
                client.publish(reply.clone(), frame.encode().into()).await.expect("publish");
            }
            client.flush().await.expect("flush");
            tokio::time::sleep(Duration::from_secs(20)).await;
        });
        let (status, answer) = one.ask(&a, &conn, HOW_MANY).await;
        holder.abort();
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["rows"].as_array().map(Vec::len), Some(3), "{answer}");
        assert_eq!(answer["row_count"], 3, "{answer}");
    })
    .await;
}

/// Frames bigger than one NATS message (1 MiB by default) cross in pieces:
/// an export whose agent frames are about 1 MiB each (the real agent's
/// size), one row of 3 MiB, and a schema of about 2 MiB. With the default
/// heartbeat: moving megabytes on a loaded two-core machine can take longer
/// than three of the other tests' 200 ms heartbeats, and this test is about
/// the pieces, not about noticing a holder gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_bigger_than_a_nats_message_cross_in_pieces() {
    within(async {
        let (one, two, _store, _) = two_replicas(&["--route-heartbeat-ms", "1000"]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let path = two.dir.path().join("wide.sqlite");
        {
            let mut db = rusqlite::Connection::open(&path).expect("open");
            db.execute_batch(
                "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL);",
            )
            .expect("create");
            let tx = db.transaction().expect("tx");
            for i in 1..=2_000i64 {
                let name = if i == 1_000 {
                    format!("Customer {i} {}", "y".repeat(3 << 20))
                } else {
                    format!("Customer {i} {}", "x".repeat(4_000))
                };
                tx.execute("INSERT INTO customers VALUES (?1, ?2, 'Paris')", rusqlite::params![
                    i, name
                ])
                .expect("insert");
            }
            tx.commit().expect("commit");
        }
        let database_url = format!("sqlite:{}", path.display());
        let config =
            AgentConfig { max_rows: 100_000, ..two.agent_config(&conn, &key, &database_url) };
        let agent = two.start_agent(config);
        one.wait_for_schema(&a, &conn).await;
        one.wait_for_agents(&a, &conn, 1).await;
        let (status, answer) = one.ask(&a, &conn, "list the customers").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let id = answer["id"].as_str().expect("id");
        let export = format!("/api/v1/queries/{id}/export.csv");
        let response = one.send(Platform::request("GET", &export, Some(&a), None)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 256 << 20).await.expect("csv");
        let csv = String::from_utf8(bytes.to_vec()).expect("utf-8");
        assert_eq!(csv.lines().count(), 2_001);
        assert!(csv.contains(&"y".repeat(3 << 20)), "the 3 MiB row whole");
        assert!(csv.contains("Customer 2000 "));
        agent.cancel();
        one.wait_for_agents(&a, &conn, 0).await;

        // A schema of about 2 MiB, refreshed through NATS.
        let mut schema = customers_schema();
        for t in 0..1_500 {
            let columns =
                (0..20).map(|c| Column::new(format!("column_number_{c:04}"), "TEXT")).collect();
            schema.tables.push(Table::new("main", format!("filler_table_{t:05}"), columns));
        }
        let size = SchemaReport::new(&schema);
        let size = serde_json::to_vec(&size).expect("json").len();
        assert!(size > 3 << 19, "{size} bytes");
        let raw = Raw { schema, slow_discover: Duration::ZERO, frames: Vec::new() };
        let _raw = RawAgent::connect(&two, &conn, &key, raw).await;
        one.wait_for_agents(&a, &conn, 1).await;
        let refresh = format!("/api/v1/connections/{conn}/refresh-schema");
        let refreshed = one.ok(StatusCode::OK, "POST", &refresh, &a, None).await;
        assert_eq!(refreshed["tables"], 1_501, "{}", refreshed["tables"]);
    })
    .await;
}

/// The holding replica treats what comes from NATS as untrusted: malformed
/// requests get an error, SQL is checked by its guard before any agent sees
/// it, a requester that goes silent gets its query cancelled on the agent, a
/// `cancel` reaches the agent, and the replica keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holding_replica_survives_what_nats_sends() {
    within(async {
        let (one, two, _store, prefix) = two_replicas(&[]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let agent = two.fake_agent(&conn, &key, Script::on_run(OnRun::Silent)).await;
        one.wait_for_agents(&a, &conn, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let client = bare_client().await;
        let subject = format!("{prefix}.agents.{conn}");
        let wait = Duration::from_secs(5);

        // Not JSON; a frame in pieces; no dialect; a bad dialect; a write; a `ping`.
        let mut piece = HeaderMap::new();
        piece.insert("Custard-Piece", "more");
        let mut bad_dialect = HeaderMap::new();
        bad_dialect.insert("Custard-Dialect", "oracle");
        let cases: Vec<(Vec<u8>, HeaderMap, &str)> = vec![
            (b"\xff{not json".to_vec(), HeaderMap::new(), "internal"),
            (run_frame("SELECT 1", 1_000), piece, "internal"),
            (run_frame("SELECT 1", 1_000), HeaderMap::new(), "internal"),
            (run_frame("SELECT 1", 1_000), bad_dialect, "internal"),
            (run_frame("DELETE FROM customers", 1_000), run_headers(), "query_rejected"),
            (Frame::new("p", Message::Ping).encode().into_bytes(), HeaderMap::new(), "internal"),
        ];
        for (payload, headers, want) in cases {
            let mut replies = ask_raw(&client, subject.clone(), payload, headers).await;
            let answer = first_answer(&mut replies, wait).await;
            assert_eq!(answer["type"], "error", "{answer}");
            assert_eq!(answer["code"], want, "{answer}");
        }
        assert!(agent.frames("run").is_empty(), "no agent saw any of them");

        // A requester that takes the holder's `pong` and then says nothing:
        // the query is cancelled on the agent after three heartbeats.
        let mut replies =
            ask_raw(&client, subject.clone(), run_frame("SELECT 1", 20_000), run_headers()).await;
        let (_, control) = next_json(&mut replies, wait).await.expect("the holder's pong");
        assert!(control.is_some(), "the pong names the control subject");
        eventually("the run on the agent", || std::future::ready(agent.frames("run").len() == 1))
            .await;
        let started = Instant::now();
        eventually("a cancel after the asker went silent", || {
            std::future::ready(agent.frames("cancel").len() == 1)
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

        // A `cancel` from the asker reaches the agent.
        let mut replies =
            ask_raw(&client, subject.clone(), run_frame("SELECT 2", 20_000), run_headers()).await;
        let (_, control) = next_json(&mut replies, wait).await.expect("the holder's pong");
        let cancel = Frame::new("run", Message::Cancel(Cancel { target: "run".to_owned() }));
        client.publish(control.expect("control"), cancel.encode().into()).await.expect("cancel");
        client.flush().await.expect("flush");
        eventually("the asker's cancel on the agent", || {
            std::future::ready(agent.frames("cancel").len() == 2)
        })
        .await;

        // A timeout of u64::MAX ms panics nothing; the replica still answers.
        let mut replies =
            ask_raw(&client, subject.clone(), run_frame("SELECT 3", u64::MAX), run_headers()).await;
        next_json(&mut replies, wait).await.expect("the holder's pong");
        eventually("the third run", || std::future::ready(agent.frames("run").len() == 3)).await;
        drop(replies);
        let (status, body) = two.call("GET", "/ready", None, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    })
    .await;
}

/// A replica that drains finishes the question it relays for another, then
/// takes no more: the next question is `agent_offline` at once, not a wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_holder_finishes_what_it_relays_and_takes_no_more() {
    within(async {
        let (one, two, _store, _) = two_replicas(&["--query-timeout-secs", "10"]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let slow =
            Script { on_run: OnRun::Answer(Duration::from_millis(1_500)), ..Script::answering(5) };
        let _agent = two.fake_agent(&conn, &key, slow).await;
        one.wait_for_schema(&a, &conn).await;
        one.wait_for_agents(&a, &conn, 1).await;
        let asking = {
            let (app, token, conn) = (one.app.clone(), a.clone(), conn.clone());
            tokio::spawn(async move {
                let body = json!({"connection_id": conn, "question": HOW_MANY});
                let request = Platform::request("POST", "/api/v1/query", Some(&token), Some(&body));
                let response = app.oneshot(request).await.expect("infallible");
                let status = response.status();
                let bytes =
                    axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or_default())
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let state = two.state.clone();
        let draining =
            tokio::spawn(async move { state.drain_agents(Duration::from_secs(10)).await });
        let (status, answer) = asking.await.expect("ask");
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["rows"], json!([[5]]));
        draining.await.expect("drained");
        let started = Instant::now();
        let (status, reply) = one.ask(&a, &conn, HOW_MANY).await;
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::SERVICE_UNAVAILABLE, "agent_offline"),
            "{reply}"
        );
    })
    .await;
}
