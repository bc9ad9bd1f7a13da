//! The agent binary treats the server as hostile: a server that stops
//! reading, goes silent, floods pings, reuses ids, withholds `more`, sends
//! malformed frames or text made to forge log lines, or announces huge limits
//! in `welcome`, neither wedges the agent nor pushes it past its own caps;
//! SIGTERM always wins.

use std::time::Duration;

use custard_core::wire::{Cancel, Flow, Frame, Message, More, Welcome, WireLimits};
use custard_testkit::ScratchDb;
use custard_testkit::processes::Scene;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::fake_server::{
    BIG, FakeServer, SLOW, WAIT, error_code, memory_kib, numbers, ping, spawn_agent, terminate,
    wait_for_log, welcome,
};

/// How a server misbehaves once the agent is welcomed.
#[derive(Debug, Clone, Copy)]
enum Stall {
    /// Asks for ~50 MB of rows, stops reading, keeps pinging (so it is not silent).
    RowsAndPings,
    /// Stops reading and floods pings.
    PingFlood,
    /// Stops reading and sending.
    Silent,
}

/// Puts the server side of a welcomed agent into `stall`; what is returned
/// keeps the socket open.
async fn stall(mut side: crate::fake_server::Side, how: Stall) -> Box<dyn std::any::Any + Send> {
    if matches!(how, Stall::RowsAndPings) {
        side.run("big", BIG, 1_000_000, 120_000).await;
    }
    let (sink, stream) = side.stop_reading();
    match how {
        Stall::RowsAndPings => Box::new((ping(sink, 100_000, Duration::from_millis(200)), stream)),
        Stall::PingFlood => Box::new((ping(sink, 5_000_000, Duration::ZERO), stream)),
        Stall::Silent => Box::new((sink, stream)),
    }
}

/// A server that stops reading (with rows or pongs piling up) or goes silent
/// is dropped, and the agent connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_reading_is_dropped_and_the_agent_reconnects() {
    let db = numbers("agent_stall").await;
    let cases: [(Stall, &[&str]); 3] = [
        (Stall::RowsAndPings, &["the server stopped reading"]),
        // Whichever comes first: the reply queue fills, or a pong stalls.
        (
            Stall::PingFlood,
            &["the server sends faster than it reads", "the server stopped reading"],
        ),
        (Stall::Silent, &["the server went silent"]),
    ];
    for (how, reasons) in cases {
        let scene = Scene::new("agent-stall");
        let mut server = FakeServer::start().await;
        let mut agent = spawn_agent(
            &scene,
            "agent",
            &server.url,
            &db.url,
            &[("CUSTARD_MAX_ROWS", "1000000"), ("CUSTARD_SHUTDOWN_GRACE_SECS", "2")],
        );
        // A heartbeat of 1 s: silent after 3 s, a write stalled after 2 s.
        let side = server.agent(1_000).await;
        let _stalled = stall(side, how).await;
        let mut again = server.agent(1_000).await;
        let log = wait_for_log(&mut agent, "disconnected:", 1).await;
        assert!(
            log.lines()
                .any(|l| l.contains("disconnected:") && reasons.iter().any(|r| l.contains(r))),
            "{how:?}: {log}"
        );
        again.send(Frame::new("p", Message::Ping)).await;
        assert_eq!(again.reply_to("p").await, [Message::Pong], "{how:?}");
        let (rss, hwm) = memory_kib(&agent);
        println!("{how:?}: reconnected; agent VmRSS {rss} KiB, VmHWM {hwm} KiB");
        terminate(&mut agent).await;
    }
}

/// SIGTERM ends the agent within its grace period (plus the moment cancelled
/// queries get) while a server that stopped reading holds its writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_wins_over_a_server_that_stops_reading() {
    let db = numbers("agent_stall_term").await;
    let scene = Scene::new("agent-stall-term");
    let mut server = FakeServer::start().await;
    let mut agent = spawn_agent(
        &scene,
        "agent",
        &server.url,
        &db.url,
        &[("CUSTARD_MAX_ROWS", "1000000"), ("CUSTARD_SHUTDOWN_GRACE_SECS", "2")],
    );
    // The longest heartbeat, so no silence or write deadline fires first.
    let side = server.agent(60_000).await;
    let _stalled = stall(side, Stall::RowsAndPings).await;
    // Let the rows fill the socket buffers and the agent's queues.
    tokio::time::sleep(Duration::from_secs(2)).await;
    agent.assert_running();
    let stopped = terminate(&mut agent).await;
    println!("SIGTERM to exit with a server that stopped reading (grace 2 s): {stopped:?}");
}

/// Under flow control a run whose `more` never comes ends at its deadline,
/// and its concurrency slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_deadline_covers_waiting_for_more() {
    let db = numbers("agent_withheld").await;
    let scene = Scene::new("agent-withheld");
    let mut server = FakeServer::start().await;
    let mut agent = spawn_agent(
        &scene,
        "agent",
        &server.url,
        &db.url,
        &[("CUSTARD_MAX_ROWS", "1000000"), ("CUSTARD_MAX_CONCURRENCY", "1")],
    );
    let mut side = server.agent(15_000).await;
    side.send(Frame::new("flow", Message::Flow(Flow { window: 1 }))).await;
    side.run("big", BIG, 1_000_000, 1_500).await;
    let reply = side.reply_to("big").await;
    let rows = reply.iter().filter(|m| matches!(m, Message::Rows(_))).count();
    assert_eq!(rows, 1, "the window's one frame: {reply:?}");
    assert_eq!(error_code(&reply), "query_timeout");
    side.run("after", "SELECT count(*) AS n FROM n", 10, 10_000).await;
    assert!(
        matches!(side.reply_to("after").await.last(), Some(Message::Done(_))),
        "the slot is free again"
    );
    terminate(&mut agent).await;
}

async fn active_slow_queries(db: &ScratchDb) -> i64 {
    let client = db.client().await;
    let mut n = 0;
    for _ in 0..100 {
        n = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%300000000%' AND query NOT LIKE '%pg_stat_activity%' \
                 AND state = 'active' AND pid <> pg_backend_pid()",
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

/// A second request under the id of one in flight is refused; the first keeps
/// its cancel handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_request_ids_are_refused() {
    let db = numbers("agent_dup").await;
    let scene = Scene::new("agent-dup");
    let mut server = FakeServer::start().await;
    let mut agent = spawn_agent(&scene, "agent", &server.url, &db.url, &[]);
    let mut side = server.agent(15_000).await;
    side.run("dup", SLOW, 10, 60_000).await;
    side.run("dup", SLOW, 10, 60_000).await;
    let refused = side.reply_to("dup").await;
    assert_eq!(error_code(&refused), "duplicate_request", "{refused:?}");
    side.send(Frame::new("c", Message::Cancel(Cancel { target: "dup".into() }))).await;
    assert_eq!(error_code(&side.reply_to("dup").await), "canceled", "the first run is cancelled");
    assert_eq!(active_slow_queries(&db).await, 0, "nothing left running in PostgreSQL");
    terminate(&mut agent).await;
}

/// How a server slips text into the agent's log.
#[derive(Debug, Clone, Copy)]
enum Forgery {
    /// The body of an HTTP refusal of the upgrade.
    RefusalBody,
    /// The connection id in `welcome`.
    WelcomeId,
    /// An `error` instead of `welcome`.
    HandshakeError,
    /// The reason of a close frame.
    CloseReason,
}

const FORGED: &str = "\n2099-01-01T00:00:00.000000Z ERROR custard_agent: FORGED by the server";

/// Text from the server is escaped in the agent's log: it cannot start a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_text_cannot_forge_agent_log_lines() {
    let db = numbers("agent_forge").await;
    let cases = [
        (Forgery::RefusalBody, "refused this agent's API key"),
        (Forgery::WelcomeId, "connected to the server"),
        (Forgery::HandshakeError, "did not welcome the agent"),
        (Forgery::CloseReason, "closed by the server"),
    ];
    for (how, marker) in cases {
        let scene = Scene::new("agent-forge");
        let mut server = match how {
            Forgery::RefusalBody => FakeServer::refusing(&format!("invalid key{FORGED}")).await,
            _ => FakeServer::start().await,
        };
        let mut agent = spawn_agent(&scene, "agent", &server.url, &db.url, &[]);
        let _side = match how {
            Forgery::RefusalBody => None,
            Forgery::WelcomeId => {
                let welcome = Welcome { connection_id: format!("c1{FORGED}"), ..welcome(15_000) };
                Some(server.agent_welcomed(welcome).await)
            }
            Forgery::HandshakeError => {
                let mut side = server.accept().await;
                let hello = side.recv().await;
                let report = custard_core::wire::ErrorReport::new("nope", format!("no{FORGED}"));
                side.send(Frame::new(hello.id, Message::Error(report))).await;
                Some(side)
            }
            Forgery::CloseReason => {
                let mut side = server.agent(15_000).await;
                let reason = FORGED.chars().take(100).collect::<String>();
                let close = CloseFrame { code: CloseCode::Away, reason: reason.into() };
                side.ws.send(WsMessage::Close(Some(close))).await.expect("close");
                Some(side)
            }
        };
        let log = wait_for_log(&mut agent, marker, 1).await;
        assert!(log.contains("\\n2099-01-01"), "{how:?}: the text is there, escaped: {log}");
        assert!(!log.lines().any(|l| l.starts_with("2099-01-01")), "{how:?}: a forged line: {log}");
        terminate(&mut agent).await;
    }
}

/// Frames that do not decode are answered with an `error` that carries their
/// id when it can be read; a flood of them is summarised in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_answered_with_their_id() {
    let db = numbers("agent_malformed").await;
    let scene = Scene::new("agent-malformed");
    let mut server = FakeServer::start().await;
    let mut agent = spawn_agent(&scene, "agent", &server.url, &db.url, &[]);
    let mut side = server.agent(15_000).await;
    let long_id = format!(r#"{{"v":1,"type":"ping","id":"{}"}}"#, "x".repeat(300));
    let cases: &[(&str, &str, &str)] = &[
        (r#"{"v":1,"type":"run","id":"m1","sql":5}"#, "m1", "malformed_frame"),
        (r#"{"v":1,"type":"run","id":"m2"}"#, "m2", "malformed_frame"),
        (r#"{"v":2,"type":"ping","id":"m3"}"#, "m3", "unsupported_version"),
        (r#"{"v":1,"type":"teleport","id":"m4"}"#, "m4", "unknown_message_type"),
        (r#"{"v":1,"type":"pong","id":"m5"}"#, "m5", "unexpected_message"),
        (r#"{"v":1,"type":"run","id":6}"#, "", "malformed_frame"),
        ("not json", "", "malformed_frame"),
        (&long_id, "", "invalid_id"),
    ];
    for (text, id, code) in cases {
        side.send_text(text).await;
        let reply = side.recv().await;
        assert_eq!(reply.id, *id, "{text}");
        assert!(
            matches!(&reply.message, Message::Error(e) if e.code == *code),
            "{text}: {reply:?}"
        );
    }
    for i in 0..300 {
        side.send_text(&format!(r#"{{"v":1,"type":"run","id":"f{i}"}}"#)).await;
        assert_eq!(side.recv().await.id, format!("f{i}"));
    }
    side.send(Frame::new("p", Message::Ping)).await;
    assert_eq!(side.reply_to("p").await, [Message::Pong], "still connected");
    let log = agent.log_text();
    let summaries = log.lines().filter(|l| l.contains("refused frames from the server")).count();
    assert!((1..=3).contains(&summaries), "{summaries} summary lines for 308 frames:\n{log}");
    terminate(&mut agent).await;
}

/// Queries the agent's guard rejects are summarised in the log, not one info
/// line each (a server can send them at will).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_rejections_are_summarised_in_the_log() {
    let db = numbers("agent_rejections").await;
    let scene = Scene::new("agent-rejections");
    let mut server = FakeServer::start().await;
    let mut agent = spawn_agent(&scene, "agent", &server.url, &db.url, &[]);
    let mut side = server.agent(15_000).await;
    for i in 0..300 {
        let id = format!("r{i}");
        side.run(&id, "DELETE FROM n", 10, 10_000).await;
        assert_eq!(error_code(&side.reply_to(&id).await), "data_modifying");
    }
    let log = agent.log_text();
    let lines = log.lines().filter(|l| l.contains("rejected by the agent's guard")).count();
    assert!((1..=3).contains(&lines), "{lines} log lines for 300 rejections:\n{log}");
    assert!(log.contains("rejected=1 "), "the first is logged at once: {log}");
    terminate(&mut agent).await;
}

/// A hostile server announces huge limits and heartbeat, opens the flow
/// window wide, asks for unbounded rows and time, reuses ids, exceeds the
/// concurrency, floods pings while not reading: the agent keeps its own caps,
/// reconnects, and stops on SIGTERM. Prints its peak memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_server_cannot_push_the_agent_past_its_caps() {
    let db = numbers("agent_hostile").await;
    let scene = Scene::new("agent-hostile");
    let mut server = FakeServer::start().await;
    let mut agent = spawn_agent(
        &scene,
        "agent",
        &server.url,
        &db.url,
        &[
            ("CUSTARD_MAX_ROWS", "5000"),
            ("CUSTARD_MAX_BYTES", "1000000"),
            ("CUSTARD_MAX_CONCURRENCY", "2"),
            ("CUSTARD_QUERY_TIMEOUT_SECS", "3"),
            ("CUSTARD_SHUTDOWN_GRACE_SECS", "2"),
        ],
    );
    let huge = Welcome {
        connection_id: "c1".into(),
        heartbeat_interval_ms: u64::MAX,
        limits: WireLimits {
            max_rows: u64::MAX,
            max_bytes: u64::MAX,
            timeout_ms: u64::MAX,
            max_concurrency: u32::MAX,
        },
    };
    let mut side = server.agent_welcomed(huge.clone()).await;
    side.send(Frame::new("flow", Message::Flow(Flow { window: u32::MAX }))).await;
    side.send(Frame::new("m", Message::More(More { target: "big".into(), frames: u32::MAX })))
        .await;

    side.run("big", BIG, u64::MAX, u64::MAX).await;
    let reply = side.reply_to("big").await;
    let Some(Message::Done(done)) = reply.last() else { panic!("{reply:?}") };
    assert!(done.truncated && done.row_count <= 5000, "{done:?}");
    assert!(done.bytes <= 1_000_000, "the agent's byte cap: {done:?}");

    // Two slow runs fill the agent's two slots; a third is busy, a reused id refused.
    side.run("s1", SLOW, u64::MAX, u64::MAX).await;
    side.run("s2", SLOW, u64::MAX, u64::MAX).await;
    side.run("s1", SLOW, u64::MAX, u64::MAX).await;
    assert_eq!(error_code(&side.reply_to("s1").await), "duplicate_request");
    side.run("s3", SLOW, u64::MAX, u64::MAX).await;
    assert_eq!(error_code(&side.reply_to("s3").await), "agent_busy");
    // The agent's own 3 s timeout, whatever the server asked for.
    assert_eq!(error_code(&side.reply_to("s1").await), "query_timeout");
    assert_eq!(error_code(&side.reply_to("s2").await), "query_timeout");

    // A burst of pings from a server that reads is answered, every one.
    for i in 0..200 {
        side.send(Frame::new(format!("b{i}"), Message::Ping)).await;
    }
    for i in 0..200 {
        assert_eq!(side.reply_to(&format!("b{i}")).await, [Message::Pong]);
    }

    // It stops reading and floods pings: the agent drops it and comes back.
    let (sink, _stream) = side.stop_reading();
    let flood = ping(sink, 5_000_000, Duration::ZERO);
    let mut again = server.agent_welcomed(huge).await;
    let sent = tokio::time::timeout(WAIT, flood).await.expect("the flood ends").expect("task");
    again.send(Frame::new("p", Message::Ping)).await;
    assert_eq!(again.reply_to("p").await, [Message::Pong]);
    let (rss, hwm) = memory_kib(&agent);
    println!(
        "hostile server: agent VmRSS {rss} KiB, VmHWM {hwm} KiB after ~{sent} pings it did not read"
    );
    let stopped = terminate(&mut agent).await;
    println!("hostile server: SIGTERM to exit {stopped:?}");
}

/// A server shutting down closes with 1012 ("service restart"): an agent
/// that had been up a while connects again at once (another server behind
/// the same address takes it); one sent away right after it came backs off
/// as after a lost connection, so a server cannot keep it in a tight loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarting_server_moves_its_agents_at_once_but_not_in_a_loop() {
    let db = numbers("agent_moved").await;
    let scene = Scene::new("agent-moved");
    let mut server = FakeServer::start().await;
    // A second counts as a stable session here (a minute by default).
    let mut agent =
        spawn_agent(&scene, "agent", &server.url, &db.url, &[("CUSTARD_STABLE_SESSION_SECS", "1")]);
    let restart = |reason: &str| {
        WsMessage::Close(Some(CloseFrame { code: CloseCode::Restart, reason: reason.into() }))
    };
    // Up a while, then moved: followed at once.
    let mut side = server.agent(10_000).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    side.ws.send(restart("the server is shutting down; connect again")).await.expect("close");
    let mut again = tokio::time::timeout(WAIT, server.agent(10_000)).await.expect("back");
    let log = wait_for_log(&mut agent, "the server moves its agents", 1).await;
    assert!(!log.contains("disconnected:"), "a move is not a lost connection:\n{log}");
    again.send(Frame::new("p", Message::Ping)).await;
    assert_eq!(again.reply_to("p").await, [Message::Pong]);
    // Moved again at once: treated as a lost connection, with its backoff.
    again.ws.send(restart("again")).await.expect("close");
    let mut third = tokio::time::timeout(WAIT, server.agent(10_000)).await.expect("back again");
    let log = wait_for_log(&mut agent, "disconnected:", 1).await;
    assert_eq!(log.matches("the server moves its agents").count(), 1, "{log}");
    // And a server that moves every stable session is followed at once each
    // time, but no faster than a stable session lasts: never a tight loop.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        third.ws.send(restart("once more")).await.expect("close");
        third = tokio::time::timeout(WAIT, server.agent(10_000)).await.expect("followed");
    }
    let log = wait_for_log(&mut agent, "the server moves its agents", 4).await;
    assert!(server.attempts.load(std::sync::atomic::Ordering::SeqCst) <= 6, "{log}");
    terminate(&mut agent).await;
}
