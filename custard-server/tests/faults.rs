//! Faults with real processes: the `custard-server` and `custard-agent`
//! binaries, PostgreSQL and a fake OpenAI-compatible model, with one of them
//! killed, frozen, restarted or starved while questions are in flight.
//!
//! Each case checks that every request in flight ends within its deadline with
//! an answer or a clear error code (never a hang, never a 500), that the agent
//! comes back by itself where it can, and that no confirmed metadata (users,
//! connections, history) is lost. Each prints one `fault-table |` line (case,
//! what happened, time to recover); run with `-- --nocapture` to see them.
//!
//! Slowness comes from the database, not from the SQL: the guard refuses
//! `pg_sleep`, so the shop has a view `slow_answer` that sleeps when read, and
//! the fake model asks for it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custard_testkit::api::Api;
use custard_testkit::bins::{status_kib, workspace_binary};
use custard_testkit::cluster::PostgresCluster;
use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use custard_testkit::processes::{Process, Scene, free_port, start_agent, start_server};
use custard_testkit::tokio_postgres;
use custard_testkit::{ReadableDb, connect};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
/// The most one case may take, start-ups included (building the agent is not).
const CASE_LIMIT: Duration = Duration::from_secs(60);
/// How long a process may take to start, or a status to change.
const WAIT: Duration = Duration::from_secs(20);
/// The server's query timeout in the cases that do not shorten it.
const QUERY_TIMEOUT_SECS: u64 = 10;
/// How long reading the `slow_answer` view takes.
const SLOW_SECS: u64 = 5;
/// Rows of the big export.
const EXPORT_ROWS: u64 = 200_000;
/// A generous bound on a process's resident memory while it streams a big result.
const MEMORY_BOUND_KIB: u64 = 200 * 1024;

/// Questions carry a marker that tells the fake model which SQL to write.
const FAST: &str = "Q-FAST how many items are there?";
const SLOW: &str = "Q-SLOW what is the slow answer?";
const EXPORT: &str = "Q-EXPORT list every number with its label";

const FAST_SQL: &str = "SELECT count(*) AS items FROM items";
const SLOW_SQL: &str = "SELECT answer FROM slow_answer";

fn export_sql() -> String {
    format!(
        "SELECT g AS n, repeat(md5(g::text), 4) AS label FROM generate_series(1, {EXPORT_ROWS}) AS g"
    )
}

/// The shop: five items, and a view that sleeps [`SLOW_SECS`] when read;
/// `reader` may read both.
fn shop_sql(reader: &str) -> String {
    format!(
        "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5) AS g;
         CREATE VIEW slow_answer AS SELECT 42 AS answer FROM pg_sleep({SLOW_SECS});
         GRANT USAGE ON SCHEMA public TO \"{reader}\";
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{reader}\";"
    )
}

// ---------------------------------------------------------------------------
// Case 1: the agent is SIGKILLed mid-query

/// The question in flight fails at once with `agent_disconnected` (not at its
/// deadline), a restarted agent with the same key answers again, and the
/// history keeps the failed question with its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_query() {
    let agent_bin = agent_binary().await;
    let scene = Scene::new("faults-agent-kill");
    bounded(&scene, async {
        let shop = Shop::create("faults_kill").await;
        let rig = Rig::start(&scene, &[]).await;
        let mut agent = rig.agent(&agent_bin, "agent-1", &shop.reader_url(), &[]);
        rig.wait_until("online with a schema", online_with_schema).await;
        rig.assert_fast_answer().await;

        let asked_at = Instant::now();
        let asking = rig.ask_in_background(SLOW);
        shop.wait_for_active("slow_answer").await;
        let killed_at = Instant::now();
        agent.kill().await;
        let (status, reply) = asking.await.expect("the question's task");
        let failed_after = killed_at.elapsed();
        assert_eq!(
            (status, error_code(&reply)),
            (StatusCode::BAD_GATEWAY, "agent_disconnected"),
            "{reply}"
        );
        let deadline = rig.patience();
        assert!(
            asked_at.elapsed() < deadline,
            "a killed agent's question must fail before its {deadline:?} deadline: \
             {failed_after:?} after the kill"
        );

        let restarted_at = Instant::now();
        let _agent = rig.agent(&agent_bin, "agent-2", &shop.reader_url(), &[]);
        rig.wait_until("online again", |c| c["status"] == "online").await;
        let reconnected = restarted_at.elapsed();
        rig.assert_fast_answer().await;

        let history = rig.history().await;
        let outcomes: Vec<(&str, &str)> =
            history.iter().map(|q| (q["question"].as_str().unwrap_or(""), outcome(q))).collect();
        assert_eq!(
            outcomes,
            [(FAST, "ok"), (SLOW, "agent_disconnected"), (FAST, "ok")],
            "{history:?}"
        );
        assert!(history[1]["error_message"].as_str().is_some_and(|m| !m.is_empty()), "{history:?}");
        report(
            "agent SIGKILL mid-query",
            &format!(
                "in-flight question failed with agent_disconnected (502) {} after the kill; \
                 history kept it with its error",
                secs(failed_after)
            ),
            &format!(
                "restarted agent (same key) online {} after start, answered",
                secs(reconnected)
            ),
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Case 2: the agent is frozen (SIGSTOP) mid-query, its socket open

/// The question ends at the server's deadline, the server drops the silent
/// agent after missed heartbeats, and once thawed (SIGCONT) the same agent
/// process reconnects by itself and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_frozen_mid_query() {
    const TIMEOUT_SECS: u64 = 1;
    const HEARTBEAT: Duration = Duration::from_secs(2);
    let agent_bin = agent_binary().await;
    let scene = Scene::new("faults-agent-stop");
    bounded(&scene, async {
        let shop = Shop::create("faults_stop").await;
        let heartbeat_ms = HEARTBEAT.as_millis().to_string();
        let rig = Rig::start(
            &scene,
            &[
                "--query-timeout-secs",
                &TIMEOUT_SECS.to_string(),
                "--agent-heartbeat-ms",
                &heartbeat_ms,
            ],
        )
        .await;
        let mut agent = rig.agent(&agent_bin, "agent", &shop.reader_url(), &[]);
        rig.wait_until("online with a schema", online_with_schema).await;
        rig.assert_fast_answer().await;

        let asked_at = Instant::now();
        let asking = rig.ask_in_background(SLOW);
        shop.wait_for_active("slow_answer").await;
        agent.signal("STOP");
        let stopped_at = Instant::now();
        let (ended_status, reply) = asking.await.expect("the question's task");
        let ended_after = asked_at.elapsed();
        let code = error_code(&reply).to_owned();
        assert!(
            matches!(
                (ended_status, code.as_str()),
                (StatusCode::GATEWAY_TIMEOUT, "query_timeout")
                    | (StatusCode::BAD_GATEWAY, "agent_disconnected")
            ),
            "a frozen agent's question ends with query_timeout or agent_disconnected: \
             {ended_status} {reply}"
        );
        let deadline = rig.patience();
        assert!(
            ended_after < deadline + Duration::from_secs(2),
            "the question must end by its deadline ({deadline:?}, 2 s margin): took {ended_after:?}"
        );

        // The server promises to drop an agent silent for three heartbeats.
        rig.wait_until("offline", |c| c["status"] == "offline").await;
        let offline_after = stopped_at.elapsed();
        assert!(
            offline_after < HEARTBEAT * 4 + Duration::from_secs(2),
            "a silent agent is dropped after three missed heartbeats ({HEARTBEAT:?} each): \
             took {offline_after:?}"
        );
        let (status, reply) = rig.ask(FAST).await;
        assert_eq!(
            (status, error_code(&reply)),
            (StatusCode::SERVICE_UNAVAILABLE, "agent_offline"),
            "{reply}"
        );

        agent.signal("CONT");
        let thawed_at = Instant::now();
        rig.wait_until("online again", |c| c["status"] == "online" && c["agents"] == 1).await;
        let reconnected = thawed_at.elapsed();
        agent.assert_running();
        rig.assert_fast_answer().await;
        let log = agent.log_text();
        assert_eq!(log.matches("connected to the server").count(), 2, "one reconnect:\n{log}");

        let history = rig.history().await;
        let outcomes: Vec<&str> = history.iter().map(outcome).collect();
        assert_eq!(outcomes, ["ok", code.as_str(), "agent_offline", "ok"], "{history:?}");
        report(
            "agent SIGSTOP mid-query",
            &format!(
                "question ended with {code} ({}) after {} (deadline {}); server marked the agent \
                 offline {} after the freeze (heartbeat {}); questions meanwhile: agent_offline",
                ended_status.as_u16(),
                secs(ended_after),
                secs(deadline),
                secs(offline_after),
                secs(HEARTBEAT)
            ),
            &format!(
                "after SIGCONT the same agent process reconnected in {}, answered",
                secs(reconnected)
            ),
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Case 3: the server is SIGKILLed under load and restarted

/// Clients asking in a loop see connection errors (not hangs) while the server
/// is down; the restarted server (same address, same data dir) keeps every
/// user, connection and confirmed history entry; the agent reconnects by
/// itself and questions are answered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_under_load() {
    const CLIENTS: usize = 3;
    let agent_bin = agent_binary().await;
    let scene = Scene::new("faults-server-kill");
    bounded(&scene, async {
        let shop = Shop::create("faults_server").await;
        let mut rig = Rig::start(&scene, &[]).await;
        let _agent = rig.agent(&agent_bin, "agent", &shop.reader_url(), &[]);
        rig.wait_until("online with a schema", online_with_schema).await;
        // A second organisation whose connection has no agent: metadata only.
        let other = rig.server.verified_user("grace@example.com").await;
        let (status, created) = other
            .post("/api/v1/connections", &json!({"name": "Other", "db_type": "postgresql"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let other_connection = created["id"].as_str().expect("id").to_owned();
        rig.assert_fast_answer().await;

        let load = Load::start(&rig, CLIENTS);
        load.wait_for_answers(2 * CLIENTS).await;
        shop.wait_for_active("slow_answer").await;
        let confirmed_before = load.answered_ids();
        let killed_at = Instant::now();
        rig.server.process.kill().await;
        // The agent lost its session: it cancels the query in flight in
        // PostgreSQL rather than leaving it to run to its end.
        let watcher = shop.db.db.client().await;
        wait_for_idle(&watcher, "slow_answer").await;
        let query_cancelled = killed_at.elapsed();
        assert!(
            query_cancelled < Duration::from_secs(SLOW_SECS) / 2,
            "the agent cancels its query when the server goes away: it ran {query_cancelled:?} \
             after the kill (the view sleeps {SLOW_SECS} s)"
        );
        // Let the clients run into the dead server for a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        rig.server.restart(&scene).await;
        let restarted = killed_at.elapsed();
        let ready_at = Instant::now();
        rig.wait_until("online after the restart", |c| c["status"] == "online").await;
        let reconnected = ready_at.elapsed();
        load.wait_for_answers_after(killed_at, CLIENTS).await;
        let attempts = load.stop().await;

        // Every request ended by its deadline, with an answer, a clear code or a
        // connection error.
        let slowest = attempts.iter().map(|a| a.elapsed).max().unwrap_or_default();
        let limit = rig.patience() + Duration::from_secs(5);
        assert!(slowest < limit, "a request took {slowest:?} (limit {limit:?}): {attempts:#?}");
        let transport_errors = attempts.iter().filter(|a| a.transport_error.is_some()).count();
        assert!(transport_errors >= 1, "the requests in flight at the kill failed: {attempts:#?}");
        let mut codes: Vec<String> = Vec::new();
        for a in &attempts {
            if let Some((status, code)) = &a.error {
                assert!(
                    ["agent_offline", "agent_disconnected"].contains(&code.as_str()),
                    "only agent codes while the server restarts: {status} {code}"
                );
                if !codes.contains(code) {
                    codes.push(code.clone());
                }
            }
        }

        // Users: the old token works and both can sign in again.
        let (status, me) = rig.api.get("/api/v1/auth/profile").await;
        assert_eq!(status, StatusCode::OK, "the old access token still works: {me}");
        let relogged = rig.server.login("ada@example.com").await;
        let other = rig.server.login("grace@example.com").await;
        // Connections.
        let ids = |list: &Value| -> Vec<String> {
            list["connections"]
                .as_array()
                .expect("connections")
                .iter()
                .map(|c| c["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        let (_, mine) = relogged.get("/api/v1/connections").await;
        assert_eq!(ids(&mine), [rig.connection.clone()], "{mine}");
        let (_, theirs) = other.get("/api/v1/connections").await;
        assert_eq!(ids(&theirs), [other_connection], "{theirs}");
        // History: every answer confirmed before the kill (and after) is there.
        let confirmed: Vec<String> = attempts.iter().filter_map(|a| a.answer_id.clone()).collect();
        for id in &confirmed {
            let (status, q) = relogged.get(&format!("/api/v1/queries/{id}")).await;
            assert_eq!(status, StatusCode::OK, "confirmed answer {id} survived the crash: {q}");
            assert_eq!(q["outcome"], "ok", "{q}");
        }
        rig.assert_fast_answer().await;
        report(
            "server SIGKILL under load",
            &format!(
                "{} requests from {CLIENTS} clients: {} answered ({} before the kill), {} \
                 connection errors, error codes {codes:?}, slowest {}; the agent cancelled its \
                 query in PostgreSQL {} after the kill; all {} confirmed answers, 2 users and 2 \
                 connections kept",
                attempts.len(),
                confirmed.len(),
                confirmed_before.len(),
                transport_errors,
                secs(slowest),
                secs(query_cancelled),
                confirmed.len()
            ),
            &format!(
                "server back {} after the kill; agent reconnected {} after the server was ready",
                secs(restarted),
                secs(reconnected)
            ),
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Case 3b: the server is stopped (SIGTERM) under a question and started again

/// SIGTERM lets the question in flight finish, stops taking connections,
/// then closes the agent's session with 1012: the agent connects again at
/// once, and is back online as soon as a server answers at the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_under_a_question_moves_its_agent() {
    let agent_bin = agent_binary().await;
    let scene = Scene::new("faults-server-term");
    bounded(&scene, async {
        let shop = Shop::create("faults_term").await;
        let mut rig = Rig::start(&scene, &[]).await;
        // A second counts as a stable session here (a minute by default).
        let mut agent = rig.agent(
            &agent_bin,
            "agent",
            &shop.reader_url(),
            &[("CUSTARD_STABLE_SESSION_SECS", "1")],
        );
        rig.wait_until("online with a schema", online_with_schema).await;
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let asking = rig.ask_in_background(SLOW);
        shop.wait_for_active("slow_answer").await;
        let stopping = Instant::now();
        rig.server.process.signal("TERM");
        let (status, answer) = asking.await.expect("the question's task");
        assert_eq!(status, StatusCode::OK, "the question in flight is answered: {answer}");
        let exited = rig.server.process.wait_exit(WAIT).await.expect("the server exits");
        let stop_took = stopping.elapsed();
        assert!(exited.success(), "a clean exit: {exited}");
        // The session ended as a move, not as a lost connection (a quick
        // attempt to connect again may then find no server: that one is).
        let log = agent.log_text();
        let moved = log.find("the server moves its agents");
        let lost = log.find("disconnected:");
        assert!(
            moved.is_some_and(|m| lost.is_none_or(|l| m < l)),
            "the agent was moved first:\n{log}"
        );
        rig.server.restart(&scene).await;
        let back = Instant::now();
        rig.wait_until("online after the restart", |c| c["status"] == "online").await;
        let online_after = back.elapsed();
        rig.assert_fast_answer().await;
        agent.assert_running();
        eprintln!(
            "SIGTERM under a {SLOW_SECS} s question: server exited after {} ms; \
             agent online {} ms after the restart",
            stop_took.as_millis(),
            online_after.as_millis()
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Case 4: PostgreSQL restarts while the agent is connected

/// A private cluster (the shared one stays up for other tests) restarts under
/// a question: the question gets `database_unavailable`, and the next ones are
/// answered by the same agent process (its pool recovers); the same after a
/// stop and a start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_the_agent() {
    let agent_bin = agent_binary().await;
    let scene = Scene::new("faults-pg-restart");
    bounded(&scene, async {
        let cluster = Arc::new(
            tokio::task::spawn_blocking(PostgresCluster::start)
                .await
                .expect("starting the cluster"),
        );
        let admin = connect(&cluster.url("postgres", "postgres")).await;
        // Separate calls: CREATE DATABASE cannot run in a batch's implicit transaction.
        for sql in [
            "CREATE DATABASE shop",
            "CREATE ROLE shop_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT",
        ] {
            admin.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        connect(&cluster.url("postgres", "shop"))
            .await
            .batch_execute(&shop_sql("shop_reader"))
            .await
            .expect("creating the shop");
        let rig = Rig::start(&scene, &[]).await;
        let mut agent = rig.agent(&agent_bin, "agent", &cluster.url("shop_reader", "shop"), &[]);
        rig.wait_until("online with a schema", online_with_schema).await;
        rig.assert_fast_answer().await;

        // Restart under a question.
        let asking = rig.ask_in_background(SLOW);
        let watcher = connect(&cluster.url("postgres", "shop")).await;
        wait_for_active(&watcher, "slow_answer").await;
        let restarting = Instant::now();
        let c = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || c.restart()).await.expect("restarting");
        let restart_took = restarting.elapsed();
        let (status, reply) = asking.await.expect("the question's task");
        assert_eq!(
            (status, error_code(&reply)),
            (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            "{reply}"
        );
        let back_at = Instant::now();
        let (status, answer) = rig.ask(FAST).await;
        let first_after_restart = back_at.elapsed();
        assert_eq!(status, StatusCode::OK, "the agent's pool recovers after a restart: {answer}");

        // Down for a while, then up again.
        let c = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || c.stop()).await.expect("stopping");
        let asked_at = Instant::now();
        let (status, reply) = rig.ask(FAST).await;
        let down_answer = asked_at.elapsed();
        assert_eq!(
            (status, error_code(&reply)),
            (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            "{reply}"
        );
        let c = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || c.start_again()).await.expect("starting");
        let started_at = Instant::now();
        rig.assert_fast_answer().await;
        let first_after_start = started_at.elapsed();
        agent.assert_running();
        let log = agent.log_text();
        assert_eq!(log.matches("connected to the server").count(), 1, "never reconnected:\n{log}");

        let outcomes: Vec<String> =
            rig.history().await.iter().map(|q| outcome(q).to_owned()).collect();
        assert_eq!(
            outcomes,
            ["ok", "database_unavailable", "ok", "database_unavailable", "ok"],
            "{outcomes:?}"
        );
        report(
            "PostgreSQL restart (private cluster)",
            &format!(
                "restart -m fast under a question: it failed with database_unavailable (503); \
                 while stopped, questions failed with database_unavailable in {}; the agent \
                 process stayed connected to the server",
                secs(down_answer)
            ),
            &format!(
                "pg_ctl restart took {}; first question after it answered in {}; after a stop and \
                 start, answered in {} (same agent, pool recovered)",
                secs(restart_took),
                secs(first_after_restart),
                secs(first_after_start)
            ),
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Case 5: a slow reader of a big export

/// A client streams a 200,000-row CSV export and stops reading for a while:
/// the server's and the agent's memory stay bounded, another client's question
/// is answered meanwhile, and when the slow client hangs up the agent's query
/// ends and the agent takes the next question.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_of_a_big_export() {
    const STALL: Duration = Duration::from_secs(8);
    const FILL: Duration = Duration::from_secs(2);
    let agent_bin = agent_binary().await;
    let scene = Scene::new("faults-slow-reader");
    bounded(&scene, async {
        let shop = Shop::create("faults_slow").await;
        let rig = Rig::start(&scene, &[]).await;
        let max_rows = (EXPORT_ROWS * 2).to_string();
        let agent = rig.agent(
            &agent_bin,
            "agent",
            &shop.reader_url(),
            &[("CUSTARD_MAX_ROWS", &max_rows), ("CUSTARD_MAX_BYTES", "536870912")],
        );
        rig.wait_until("online with a schema", online_with_schema).await;
        let (status, answer) = rig.ask(EXPORT).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["truncated"], true, "{answer}");
        let id = answer["id"].as_str().expect("id");
        let rss = |pid: u32| status_kib(pid, "VmRSS").unwrap_or(0);
        let before = (rss(rig.server.process.pid()), rss(agent.pid()));

        let mut export = rig
            .api
            .request(reqwest::Method::GET, &format!("/api/v1/queries/{id}/export.csv"))
            .send()
            .await
            .expect("starting the export");
        assert_eq!(export.status(), StatusCode::OK);
        let mut received = 0usize;
        while received < 64 * 1024 {
            let chunk = export.chunk().await.expect("reading the export").expect("more of it");
            received += chunk.len();
        }

        // Stop reading. Once the export has filled every buffer on its way
        // another client asks; memory is watched throughout.
        let stalled_at = Instant::now();
        let stalled_after = received;
        let mut peak = (0u64, 0u64);
        let mut other = None;
        let mut other_answer = None;
        while stalled_at.elapsed() < STALL {
            peak.0 = peak.0.max(rss(rig.server.process.pid()));
            peak.1 = peak.1.max(rss(agent.pid()));
            match &other {
                None if stalled_at.elapsed() >= FILL => {
                    other = Some((Instant::now(), rig.ask_in_background(FAST)));
                }
                Some((asked_at, task)) if other_answer.is_none() && task.is_finished() => {
                    other_answer = Some(asked_at.elapsed());
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, other) = other.expect("the other question was asked");
        let (status, reply) = other.await.expect("the other question's task");
        assert_eq!(status, StatusCode::OK, "the other client's question: {reply}");
        let log = agent.log_text();
        assert!(!log.contains("outcome=\"canceled\""), "the stall alone cancels nothing:\n{log}");
        let watcher = shop.db.db.client().await;
        assert_eq!(
            busy_sessions(&watcher, "generate_series").await,
            1,
            "the export's query waits, paused, for its reader"
        );
        let other_took = other_answer.unwrap_or_else(|| {
            panic!(
                "another client's question, asked {FILL:?} into a {STALL:?} stall of the \
                 export's reader, was not answered before the stall ended"
            )
        });

        // Read slowly for a moment, then hang up mid-way.
        for _ in 0..10 {
            let chunk = export.chunk().await.expect("reading the export").expect("more of it");
            received += chunk.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(export);
        let hung_up_at = Instant::now();
        wait_for_idle(&watcher, "generate_series").await;
        let query_ended = hung_up_at.elapsed();
        rig.assert_fast_answer().await;
        let free_again = hung_up_at.elapsed();
        let (server_peak, agent_peak) = peak;
        wait_for_log(&agent, "outcome=\"canceled\"").await;
        assert!(server_peak > 0 && agent_peak > 0, "memory was sampled");
        assert!(
            server_peak < MEMORY_BOUND_KIB && agent_peak < MEMORY_BOUND_KIB,
            "memory stays bounded while a reader stalls: server {server_peak} KiB, agent \
             {agent_peak} KiB (bound {MEMORY_BOUND_KIB} KiB)"
        );
        report(
            "slow reader of a 200k-row export",
            &format!(
                "reader stalled {} after {} KiB (the query paused, not cancelled), then read on \
                 to {} KiB and hung up: RSS server {} -> peak {} MiB, agent {} -> peak {} MiB; \
                 another client's question answered in {} during the stall",
                secs(STALL),
                stalled_after / 1024,
                received / 1024,
                before.0 / 1024,
                server_peak / 1024,
                before.1 / 1024,
                agent_peak / 1024,
                secs(other_took)
            ),
            &format!(
                "after the reader hung up the agent's query ended in {}; next question answered \
                 {} after the hang-up",
                secs(query_ended),
                secs(free_again)
            ),
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Helpers

/// Runs a case under [`CASE_LIMIT`]; a timeout fails it (with the logs).
async fn bounded(scene: &Scene, body: impl std::future::Future<Output = ()>) {
    let started = Instant::now();
    if tokio::time::timeout(CASE_LIMIT, body).await.is_err() {
        panic!("{} did not finish within {CASE_LIMIT:?}", scene.name());
    }
    eprintln!("{}: {:.1} s", scene.name(), started.elapsed().as_secs_f64());
}

/// One line of the results table.
fn report(case: &str, happened: &str, recovery: &str) {
    eprintln!("fault-table | {case} | {happened} | {recovery}");
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The agent binary, built first (outside the case's time limit: cargo may
/// wait for the build directory's lock).
async fn agent_binary() -> PathBuf {
    tokio::task::spawn_blocking(|| workspace_binary("custard-agent"))
        .await
        .expect("building the agent")
}

/// The fake model: the SQL for each question's marker.
async fn fake_model() -> FakeOpenAi {
    FakeOpenAi::with_responder(|request| {
        let question = request.last_user_message().unwrap_or_default();
        let sql = if question.contains("Q-SLOW") {
            SLOW_SQL.to_owned()
        } else if question.contains("Q-EXPORT") {
            export_sql()
        } else {
            FAST_SQL.to_owned()
        };
        Behaviour::reply(format!("```sql\n{sql}\n```"))
    })
    .await
}

/// The shop in a scratch database of the shared PostgreSQL, with a reader role.
struct Shop {
    db: ReadableDb,
}

impl Shop {
    async fn create(prefix: &str) -> Shop {
        let db = ReadableDb::create(prefix).await;
        db.db.client().await.batch_execute(&shop_sql(&db.reader.name)).await.expect("the shop");
        Shop { db }
    }

    fn reader_url(&self) -> String {
        self.db.reader_url()
    }

    async fn wait_for_active(&self, needle: &str) {
        wait_for_active(&self.db.db.client().await, needle).await;
    }
}

/// Sessions of this database busy with a query that contains `needle`:
/// running it, or in its transaction (a paused export waits there).
async fn busy_sessions(client: &tokio_postgres::Client, needle: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state <> 'idle' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0",
            &[&needle],
        )
        .await
        .expect("reading pg_stat_activity")
        .get(0)
}

/// Waits until a query containing `needle` runs in PostgreSQL.
async fn wait_for_active(client: &tokio_postgres::Client, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while busy_sessions(client, needle).await == 0 {
        assert!(Instant::now() < deadline, "no query with {needle} started within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no session is busy with a query containing `needle`.
async fn wait_for_idle(client: &tokio_postgres::Client, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while busy_sessions(client, needle).await > 0 {
        assert!(Instant::now() < deadline, "the query with {needle} still ran after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `process` logged `needle` (once; more is a failure).
async fn wait_for_log(process: &Process, needle: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = process.log_text();
        match log.matches(needle).count() {
            0 => {
                assert!(Instant::now() < deadline, "no {needle} in the log within {WAIT:?}:\n{log}")
            }
            1 => return,
            _ => panic!("{needle} more than once in the log:\n{log}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The server, a signed-in user, one PostgreSQL connection and the fake model.
struct Rig<'s> {
    scene: &'s Scene,
    _model: FakeOpenAi,
    server: Server,
    api: Api,
    connection: String,
    key: String,
    agent_url: String,
}

impl<'s> Rig<'s> {
    async fn start(scene: &'s Scene, args: &[&str]) -> Rig<'s> {
        let model = fake_model().await;
        let base_url = model.base_url();
        let mut all = vec![
            "--llm-model",
            "test-model",
            "--llm-base-url",
            &base_url,
            "--llm-api-key",
            "test-key",
            // Clients here ask in tight loops on purpose; the question limits
            // have their own tests (platform.rs).
            "--questions-per-minute",
            "0",
        ];
        let timeout = QUERY_TIMEOUT_SECS.to_string();
        if !args.contains(&"--query-timeout-secs") {
            all.extend(["--query-timeout-secs", &timeout]);
        }
        all.extend_from_slice(args);
        let server = Server::start(scene, &all).await;
        let api = server.verified_user("ada@example.com").await;
        let (status, created) = api
            .post("/api/v1/connections", &json!({"name": "Shop", "db_type": "postgresql"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let connection = created["id"].as_str().expect("id").to_owned();
        let key = created["api_key"].as_str().expect("api_key").to_owned();
        let agent_url = created["setup"]["server_url"].as_str().expect("server_url").to_owned();
        Rig { scene, _model: model, server, api, connection, key, agent_url }
    }

    fn agent(
        &self,
        binary: &Path,
        name: &str,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> Process {
        start_agent(self.scene, binary, name, &self.agent_url, &self.key, database_url, env)
    }

    /// How long the hub waits for an agent's reply: the query timeout plus its grace.
    fn patience(&self) -> Duration {
        let timeout = Duration::from_secs(self.server.query_timeout_secs);
        timeout + timeout.min(Duration::from_secs(5))
    }

    async fn ask(&self, question: &str) -> (StatusCode, Value) {
        self.api.ask(&self.connection, question).await
    }

    fn ask_in_background(&self, question: &str) -> tokio::task::JoinHandle<(StatusCode, Value)> {
        let (api, connection, question) =
            (self.api.clone(), self.connection.clone(), question.to_owned());
        tokio::spawn(async move { api.ask(&connection, &question).await })
    }

    async fn assert_fast_answer(&self) {
        let (status, answer) = self.ask(FAST).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["rows"], json!([[5]]), "{answer}");
    }

    /// Polls the connection until `want` holds; returns how long that took.
    async fn wait_until(&self, what: &str, want: impl Fn(&Value) -> bool) -> Duration {
        let started = Instant::now();
        let path = format!("/api/v1/connections/{}", self.connection);
        loop {
            let (status, connection) = self.api.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{connection}");
            if want(&connection) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < WAIT,
                "the connection was not {what} within {WAIT:?}: {connection}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The connection's history, oldest first.
    async fn history(&self) -> Vec<Value> {
        let (status, page) = self
            .api
            .get(&format!("/api/v1/queries?connection_id={}&limit=200", self.connection))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let mut queries = page["queries"].as_array().expect("queries").clone();
        queries.reverse();
        queries
    }
}

fn online_with_schema(c: &Value) -> bool {
    c["status"] == "online" && c["schema_fingerprint"].is_string()
}

fn outcome(q: &Value) -> &str {
    q["outcome"].as_str().unwrap_or_default()
}

fn error_code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// The `custard-server` binary on a fixed address and data dir, so it can be
/// restarted where it was.
struct Server {
    process: Process,
    address: String,
    data_dir: PathBuf,
    args: Vec<String>,
    query_timeout_secs: u64,
    http: reqwest::Client,
}

impl Server {
    async fn start(scene: &Scene, args: &[&str]) -> Server {
        let address = format!("127.0.0.1:{}", free_port());
        let data_dir = scene.path().join("server-data");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let query_timeout_secs = args
            .iter()
            .position(|a| a == "--query-timeout-secs")
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(30);
        let process = Server::spawn(scene, &address, &data_dir, &args).await;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(45))
            .build()
            .expect("an HTTP client");
        Server { process, address, data_dir, args, query_timeout_secs, http }
    }

    async fn spawn(scene: &Scene, address: &str, data_dir: &Path, args: &[String]) -> Process {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let binary = Path::new(env!("CARGO_BIN_EXE_custard-server"));
        start_server(scene, binary, address, data_dir, &args, WAIT).await
    }

    /// Starts the binary again on the same address and data dir (after it died).
    async fn restart(&mut self, scene: &Scene) {
        self.process = Server::spawn(scene, &self.address, &self.data_dir, &self.args).await;
    }

    fn anonymous(&self) -> Api {
        Api { http: self.http.clone(), base: format!("http://{}", self.address), token: None }
    }

    /// Signs up, follows the verification link from the outbox, and logs in.
    async fn verified_user(&self, email: &str) -> Api {
        let signup = json!({
            "email": email, "password": PASSWORD, "first_name": "Ada",
            "last_name": "Lovelace", "organization_name": format!("Org of {email}"),
        });
        let (status, reply) = self.anonymous().post("/api/v1/auth/signup", &signup).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        let link = self.outbox_link(email, "/verify-email?token=").await;
        let api_link = link.replacen("/verify-email?", "/api/v1/auth/verify-email?", 1);
        let response = self.http.get(&api_link).send().await.expect("following the link");
        assert_eq!(response.status(), StatusCode::OK, "{link}");
        self.login(email).await
    }

    async fn login(&self, email: &str) -> Api {
        let (status, reply) = self
            .anonymous()
            .post("/api/v1/auth/login", &json!({"email": email, "password": PASSWORD}))
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let token = reply["access_token"].as_str().expect("access_token").to_owned();
        Api { token: Some(token), ..self.anonymous() }
    }

    /// The first link containing `needle` in an email to `email` in the outbox.
    async fn outbox_link(&self, email: &str, needle: &str) -> String {
        let outbox = self.data_dir.join("outbox");
        let deadline = Instant::now() + WAIT;
        loop {
            for entry in std::fs::read_dir(&outbox).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                if !text.contains(email) {
                    continue;
                }
                if let Some(link) =
                    text.split_whitespace().find(|w| w.starts_with("http") && w.contains(needle))
                {
                    return link.to_owned();
                }
            }
            assert!(Instant::now() < deadline, "no email to {email} in {}", outbox.display());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// One request of the load: how it ended and how long it took.
#[derive(Debug, Clone)]
struct Attempt {
    started: Instant,
    elapsed: Duration,
    /// The history id of an answer.
    answer_id: Option<String>,
    /// The status and code of an error answer.
    error: Option<(StatusCode, String)>,
    /// A connection error (the server was down).
    transport_error: Option<String>,
}

/// Clients asking in a loop: the first asks the slow question, the others the fast one.
struct Load {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    stop: tokio_util::sync::CancellationToken,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(rig: &Rig<'_>, clients: usize) -> Load {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        let clients = (0..clients)
            .map(|i| {
                let (api, connection) = (rig.api.clone(), rig.connection.clone());
                let (attempts, stop) = (Arc::clone(&attempts), stop.clone());
                let question = if i == 0 { SLOW } else { FAST };
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        let started = Instant::now();
                        let result = api.try_ask(&connection, question).await;
                        let mut attempt = Attempt {
                            started,
                            elapsed: started.elapsed(),
                            answer_id: None,
                            error: None,
                            transport_error: None,
                        };
                        match result {
                            Ok((StatusCode::OK, answer)) => {
                                attempt.answer_id = answer["id"].as_str().map(str::to_owned);
                            }
                            Ok((status, reply)) => {
                                attempt.error = Some((status, error_code(&reply).to_owned()));
                            }
                            Err(e) => attempt.transport_error = Some(e.to_string()),
                        }
                        let failed = attempt.answer_id.is_none();
                        attempts.lock().expect("attempts").push(attempt);
                        if failed {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                })
            })
            .collect();
        Load { attempts, stop, clients }
    }

    fn snapshot(&self) -> Vec<Attempt> {
        self.attempts.lock().expect("attempts").clone()
    }

    fn answered_ids(&self) -> Vec<String> {
        self.snapshot().into_iter().filter_map(|a| a.answer_id).collect()
    }

    async fn wait_for_answers(&self, count: usize) {
        let deadline = Instant::now() + WAIT;
        while self.answered_ids().len() < count {
            assert!(Instant::now() < deadline, "no {count} answers within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `count` questions asked after `since` were answered.
    async fn wait_for_answers_after(&self, since: Instant, count: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let answered = self
                .snapshot()
                .iter()
                .filter(|a| a.started > since && a.answer_id.is_some())
                .count();
            if answered >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {answered} questions answered after the restart within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the clients after their current question; every attempt made.
    async fn stop(self) -> Vec<Attempt> {
        let Load { attempts, stop, clients } = self;
        stop.cancel();
        for client in clients {
            client.await.expect("a client task");
        }
        attempts.lock().expect("attempts").clone()
    }
}
