//! Two server replicas in one process, sharing a PostgreSQL store and routing
//! through the NATS on this machine: a question asked of one reaches the
//! agent held by the other, with what the local hub does (streamed rows,
//! flow control, cancel, deadlines, `agent_offline` at once), and status,
//! presence and disconnects reach across.
//!
//! Each test has its own store database and its own NATS subject prefix, so
//! tests running at once never see each other's replicas.

use std::sync::atomic::{AtomicU32, Ordering};

use custard_testkit::ScratchDb;

use super::*;

static TESTS: AtomicU32 = AtomicU32::new(0);

/// The NATS the tests use (`CUSTARD_TEST_NATS_URL`, else the one on this machine).
pub(super) fn nats_url() -> String {
    std::env::var("CUSTARD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Two replicas over one new store, routing through NATS with 200 ms
/// heartbeats (so three missed are 600 ms) unless `flags` name others;
/// `flags` go to both.
pub(super) async fn two_replicas(flags: &[&str]) -> (Platform, Platform, ScratchDb) {
    let store = ScratchDb::create("routing").await;
    let prefix =
        format!("custard-test-{}-{}", std::process::id(), TESTS.fetch_add(1, Ordering::Relaxed));
    let nats = nats_url();
    let mut all =
        vec!["--store-url", &store.url, "--nats-url", &nats, "--nats-subject-prefix", &prefix];
    if !flags.contains(&"--route-heartbeat-ms") {
        all.extend(["--route-heartbeat-ms", "200"]);
    }
    all.extend_from_slice(flags);
    let mut first = all.clone();
    first.extend(["--replica-name", "one"]);
    let one = platform(&first).await;
    all.extend(["--replica-name", "two"]);
    let two = platform(&all).await;
    (one, two, store)
}

/// A question asked of one replica is answered by the agent held by the other;
/// presence, status events and schema refreshes reach across.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_reaches_the_agent_another_replica_holds() {
    bounded(async {
        let (one, two, _store) = two_replicas(&[]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let mut events = one.events("GET", "/api/v1/connections/events", &a, None).await;
        let first = events.next(PATIENCE).await.expect("the snapshot");
        assert_eq!((first.data["id"].as_str(), &first.data["agents"]), (Some(&*conn), &json!(0)));

        // The agent dials replica two; replica one's stream hears of it.
        let agent = two.fake_agent(&conn, &key, Script::answering(42)).await;
        let seen = events.until("agent_connected", |e| e.data["event"] == "agent_connected").await;
        assert_eq!(seen.last().expect("event").data["agents"], 1);
        one.wait_for_agents(&a, &conn, 1).await;
        assert_eq!(one.get_connection(&a, &conn).await["status"], "online");
        // The token signed by one is good on two: one secret in the shared store.
        assert_eq!(two.get_connection(&a, &conn).await["agents"], 1);

        one.wait_for_schema(&a, &conn).await;
        let (status, answer) = one.ask(&a, &conn, HOW_MANY).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["rows"], json!([[42]]));
        assert_eq!(agent.frames("run").len(), 1, "the agent on two ran the question asked of one");

        // A schema refresh asked of one is served by the agent on two.
        let path = format!("/api/v1/connections/{conn}/refresh-schema");
        let refreshed = one.ok(StatusCode::OK, "POST", &path, &a, None).await;
        assert_eq!(refreshed["tables"], 1);

        agent.hang_up();
        let seen =
            events.until("agent_disconnected", |e| e.data["event"] == "agent_disconnected").await;
        assert_eq!(seen.last().expect("event").data["agents"], 0);
        one.wait_for_agents(&a, &conn, 0).await;
    })
    .await;
}

/// With no replica holding an agent, NATS says so at once: `agent_offline`
/// long before the query timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_agent_anywhere_is_agent_offline_at_once() {
    bounded(async {
        let (one, two, _store) = two_replicas(&["--query-timeout-secs", "30"]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        // A schema is stored while an agent is there; then it leaves.
        let agent = two.fake_agent(&conn, &key, Script::answering(1)).await;
        one.wait_for_schema(&a, &conn).await;
        agent.hang_up();
        one.wait_for_agents(&a, &conn, 0).await;
        two.wait_for_agents(&a, &conn, 0).await;

        let started = Instant::now();
        let (status, reply) = one.ask(&a, &conn, HOW_MANY).await;
        let took = started.elapsed();
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::SERVICE_UNAVAILABLE, "agent_offline"),
            "{reply}"
        );
        assert!(took < Duration::from_secs(5), "answered after {took:?}, not at once");
    })
    .await;
}

/// A big result streams through NATS with flow control (many more frames
/// than the window), and a caller that goes away cancels the query on the
/// agent another replica holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_stream_across_replicas_and_a_caller_gone_cancels() {
    bounded(async {
        let (one, two, _store) = two_replicas(&["--query-timeout-secs", "20"]).await;
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
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20).await.expect("csv");
        let csv = String::from_utf8(bytes.to_vec()).expect("utf-8");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 30_001, "a header and every row, through NATS");
        assert!(lines.iter().any(|l| l.contains("Customer 30000")));

        // A second connection, whose fake agent on two never answers: the
        // caller of one goes away and the agent is told to cancel.
        let (silent, silent_key) = one.connection(&a, "Silent").await;
        let agent = two.fake_agent(&silent, &silent_key, Script::on_run(OnRun::Silent)).await;
        one.wait_for_schema(&a, &silent).await;
        let asking = {
            let (app, token, conn) = (one.app.clone(), a.clone(), silent.clone());
            tokio::spawn(async move {
                let body = json!({"connection_id": conn, "question": HOW_MANY});
                let request = Platform::request("POST", "/api/v1/query", Some(&token), Some(&body));
                app.oneshot(request).await.expect("infallible").status()
            })
        };
        eventually("the question to reach the agent on two", || {
            std::future::ready(!agent.frames("run").is_empty())
        })
        .await;
        asking.abort();
        let run = agent.frames("run").remove(0);
        eventually("a cancel for the run on two", || {
            let cancelled = agent
                .frames("cancel")
                .iter()
                .any(|f| matches!(&f.message, Message::Cancel(c) if c.target == run.id));
            std::future::ready(cancelled)
        })
        .await;
    })
    .await;
}

/// A question whose agent on the other replica never answers ends at its
/// deadline with `query_timeout`, and the agent gets a `cancel`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_on_another_replica_times_out() {
    bounded(async {
        let (one, two, _store) = two_replicas(&["--query-timeout-secs", "1"]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let agent = two.fake_agent(&conn, &key, Script::on_run(OnRun::Silent)).await;
        one.wait_for_schema(&a, &conn).await;
        one.wait_for_agents(&a, &conn, 1).await;
        let started = Instant::now();
        let (status, reply) = one.ask(&a, &conn, HOW_MANY).await;
        let took = started.elapsed();
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::GATEWAY_TIMEOUT, "query_timeout"),
            "{reply}"
        );
        assert!(took < Duration::from_secs(15), "timed out after {took:?}");
        let run = agent.frames("run").remove(0);
        eventually("a cancel for the run", || {
            let cancelled = agent
                .frames("cancel")
                .iter()
                .any(|f| matches!(&f.message, Message::Cancel(c) if c.target == run.id));
            std::future::ready(cancelled)
        })
        .await;
    })
    .await;
}

/// A replica that stops answering in the middle of a question it relays (its
/// process killed, its network gone) ends the question with
/// `agent_disconnected` after three missed heartbeats, not at the deadline.
///
/// The holding replica here is a bare NATS client in the test that takes the
/// request, says it took it, and then says nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_gone_silent_mid_question_is_agent_disconnected() {
    bounded(async {
        let (one, two, _store) = two_replicas(&["--query-timeout-secs", "30"]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let agent = two.fake_agent(&conn, &key, Script::answering(1)).await;
        one.wait_for_schema(&a, &conn).await;
        agent.hang_up();
        one.wait_for_agents(&a, &conn, 0).await;

        let client = async_nats::connect(nats_url()).await.expect("NATS answers");
        let mut requests = bare_holder(&client, &subject_prefix(&one), &conn, "silent").await;
        one.wait_for_agents(&a, &conn, 1).await;
        let holder = tokio::spawn(async move {
            let request = requests.next().await.expect("a request");
            let reply = request.reply.expect("a reply subject");
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Custard-Control", client.new_inbox().as_str());
            let pong = Frame::new("run", Message::Pong).encode();
            client.publish_with_headers(reply, headers, pong.into()).await.expect("publish");
            client.flush().await.expect("flush");
            // Keeps the subscription (and so the "holder") alive, silent.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(requests);
        });
        let started = Instant::now();
        let (status, reply) = one.ask(&a, &conn, HOW_MANY).await;
        let took = started.elapsed();
        assert_eq!(
            (status, code(&reply)),
            (StatusCode::BAD_GATEWAY, "agent_disconnected"),
            "{reply}"
        );
        // Three heartbeats of 200 ms, not the 30 s deadline.
        assert!(took < Duration::from_secs(5), "ended after {took:?}");
        holder.abort();
    })
    .await;
}

/// A bare NATS `client` playing a replica that holds an agent of
/// `connection` (named `name` among replicas): subscribed to its subject,
/// and announced; the requests that come to it.
pub(super) async fn bare_holder(
    client: &async_nats::Client,
    prefix: &str,
    connection: &str,
    name: &str,
) -> async_nats::Subscriber {
    let requests = client
        .queue_subscribe(format!("{prefix}.agents.{connection}"), "holders".to_owned())
        .await
        .expect("subscribe");
    let snapshot = json!({
        "type": "snapshot",
        "replica": name,
        "held": [{"connection": connection, "org": "unknown", "agents": 1}],
    });
    client
        .publish(format!("{prefix}.presence"), snapshot.to_string().into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    requests
}

/// The NATS subject prefix `platform` routes under.
pub(super) fn subject_prefix(platform: &Platform) -> String {
    platform.state.config().nats_subject_prefix.clone()
}

/// Rotating the key on one replica closes the agent's session on the other,
/// and so does deleting the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_and_delete_on_one_replica_disconnect_the_agent_on_another() {
    bounded(async {
        let (one, two, _store) = two_replicas(&[]).await;
        let a = one.user("a@example.com", "Org A").await;
        let (conn, key) = one.connection(&a, "Shop").await;
        let agent = two.fake_agent(&conn, &key, Script::answering(1)).await;
        one.wait_for_agents(&a, &conn, 1).await;

        let path = format!("/api/v1/connections/{conn}/rotate-key");
        let rotated = one.ok(StatusCode::OK, "POST", &path, &a, None).await;
        let (close_code, reason) = agent.closed().await;
        assert_eq!((close_code, reason.as_str()), (1008, "the API key was rotated"));
        one.wait_for_agents(&a, &conn, 0).await;

        let new_key = rotated["api_key"].as_str().expect("new key");
        let agent = two.fake_agent(&conn, new_key, Script::answering(1)).await;
        one.wait_for_agents(&a, &conn, 1).await;
        one.ok(StatusCode::NO_CONTENT, "DELETE", &format!("/api/v1/connections/{conn}"), &a, None)
            .await;
        let (close_code, reason) = agent.closed().await;
        assert_eq!((close_code, reason.as_str()), (1008, "the connection was deleted"));
    })
    .await;
}

/// `/ready` says whether NATS answers; a replica without routing may not
/// share the store with replicas that route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_needs_nats_and_the_store_is_shared_only_with_routing() {
    bounded(async {
        let (one, _two, store) = two_replicas(&[]).await;
        let (status, body) = one.call("GET", "/ready", None, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        let dir = tempfile::tempdir().expect("tempdir");
        let config = ServerConfig::parse_from([
            "custard-server",
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            "--store-url",
            &store.url,
        ]);
        let refused = AppState::open(config).await.expect_err("a lone server refused");
        let message = format!("{refused:#}");
        assert!(message.contains("routing"), "{message}");

        let config = ServerConfig::parse_from([
            "custard-server",
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            "--nats-url",
            "nats://127.0.0.1:1",
            "--nats-subject-prefix",
            "bad prefix",
        ]);
        let refused = AppState::open(config).await.expect_err("a bad prefix refused");
        assert!(format!("{refused:#}").contains("CUSTARD_NATS_SUBJECT_PREFIX"), "{refused:#}");
    })
    .await;
}
