//! A refused API key and `custard-agent health`: the agent says once what to
//! do, retries at the long interval, and `health` reports why it is not
//! connected, in words and UTC.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use custard_core::wire::{ErrorReport, Frame, Message};
use custard_testkit::processes::Scene;

use crate::fake_server::{FakeServer, KEY, WAIT, agent_binary, numbers, spawn_agent, terminate};

/// What the agent logs, once, when its key is refused.
const ONCE: &str = "the server refused this agent's API key (rotated or deleted?): set \
                    CUSTARD_API_KEY to the connection's current key from the Connections page, \
                    then restart the agent";

/// Runs `custard-agent health` on `file`: success, stdout, stderr.
fn health(file: &Path) -> (bool, String, String) {
    let out = std::process::Command::new(agent_binary())
        .args(["health", "--health-file"])
        .arg(file)
        .output()
        .expect("custard-agent health");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A server that answers the upgrade with 401 for every attempt: one error
/// line over many attempts, later ones at debug level, and `health` names the
/// refused key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_reported_once_and_by_health() {
    let db = numbers("agent_key_refused").await;
    let scene = Scene::new("agent-key-refused");
    let server = FakeServer::refusing("invalid API key").await;
    let mut agent = spawn_agent(
        &scene,
        "agent",
        &server.url,
        &db.url,
        &[("CUSTARD_KEY_REFUSED_RETRY_MS", "200"), ("CUSTARD_LOG", "custard_agent=debug")],
    );
    let deadline = Instant::now() + WAIT;
    while server.attempts.load(Ordering::SeqCst) < 5 {
        agent.assert_running();
        assert!(Instant::now() < deadline, "5 attempts:\n{}", agent.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let log = agent.log_text();
    assert_eq!(log.matches(ONCE).count(), 1, "said once over 5 attempts:\n{log}");
    let error_line = log.lines().find(|l| l.contains(ONCE)).expect("the line");
    assert!(error_line.contains("ERROR"), "{error_line}");
    assert!(error_line.contains("invalid API key"), "the server's words: {error_line}");
    let retries =
        log.lines().filter(|l| l.contains("still refuses the API key")).collect::<Vec<_>>();
    assert!(retries.len() >= 3, "later attempts logged:\n{log}");
    assert!(retries.iter().all(|l| l.contains("DEBUG")), "at debug level only:\n{log}");
    assert!(!log.contains(KEY), "the key is never printed:\n{log}");

    let (ok, stdout, _) = health(&scene.path().join("agent.health"));
    assert!(!ok, "a refused agent is not healthy: {stdout}");
    assert!(stdout.starts_with("disconnected since 20"), "{stdout}");
    assert!(stdout.contains(" UTC ("), "{stdout}");
    assert!(stdout.contains("the server refused the API key"), "{stdout}");
    terminate(&mut agent).await;
    assert_eq!(log.matches(ONCE).count(), 1);
}

/// A server that accepts the upgrade but answers `hello` with an
/// `unauthorized` error: the same refused key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_error_for_hello_is_a_refused_key() {
    let db = numbers("agent_key_unauthorized").await;
    let scene = Scene::new("agent-key-unauthorized");
    let mut server = FakeServer::start().await;
    let mut agent = spawn_agent(
        &scene,
        "agent",
        &server.url,
        &db.url,
        &[("CUSTARD_KEY_REFUSED_RETRY_MS", "200")],
    );
    for _ in 0..3 {
        let mut side = server.accept().await;
        let hello = side.recv().await;
        let report = ErrorReport::new("unauthorized", "the API key was rotated or revoked");
        side.send(Frame::new(hello.id, Message::Error(report))).await;
    }
    // The third refusal is in the log and the health file once the fourth attempt arrives.
    let _fourth = server.accept().await;
    let log = agent.log_text();
    assert_eq!(log.matches(ONCE).count(), 1, "said once over 3 refusals:\n{log}");
    let (ok, stdout, _) = health(&scene.path().join("agent.health"));
    assert!(!ok && stdout.contains("the server refused the API key"), "{stdout}");
    terminate(&mut agent).await;
}

/// `health` prints the recorded state in words, reads files of older agents,
/// and exits 0 only for a fresh connected state.
#[test]
fn health_prints_the_state_in_words() {
    let dir = tempfile::tempdir().expect("a folder");
    let file = dir.path().join("health");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let cases: Vec<(String, bool, String)> = vec![
        (
            format!("connected {now} since={}\n", now - 180),
            true,
            "connected since 20.. UTC (3 minutes ago)".into(),
        ),
        // An older agent's file: no since, no reason.
        (format!("connected {now}\n"), true, "connected since 20.. UTC (just now)".into()),
        (
            "disconnected 1796425741\n".into(),
            false,
            "disconnected since 2026-12-04 23:09:01 UTC (".into(),
        ),
        (
            format!("disconnected {now} since={} reason=key_refused\n", now - 7_200),
            false,
            "disconnected since 20.. UTC (2 hours ago): the server refused the API key".into(),
        ),
        (
            format!("connected {} since={}\n", now - 600, now - 900),
            false,
            "not responding: the agent last reported being connected at 20.. UTC (10 minutes \
             ago)"
                .into(),
        ),
    ];
    for (content, healthy, want) in cases {
        std::fs::write(&file, &content).expect("write");
        let (ok, stdout, stderr) = health(&file);
        assert_eq!(ok, healthy, "{content:?}: {stdout} {stderr}");
        // `20..` stands for the date and time, which depend on the clock.
        let (head, tail) = want.split_once("20..").unwrap_or((&want, ""));
        assert!(stdout.starts_with(head), "{content:?}: {stdout}");
        let rest = &stdout[head.len()..];
        if !tail.is_empty() {
            // "just now" may read "1 second ago" when the clock ticks between
            // writing the file and reading it.
            let said = rest.get(19..).unwrap_or_default();
            let ticked = tail == " UTC (just now)" && said.starts_with(" UTC (1 second ago)");
            assert!(said.starts_with(tail) || ticked, "{content:?}: {stdout}");
        }
        assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    }
    let (ok, _, stderr) = health(&dir.path().join("missing"));
    assert!(!ok && stderr.contains("reading"), "{stderr}");
    std::fs::write(&file, "garbage").expect("write");
    let (ok, _, stderr) = health(&file);
    assert!(!ok && stderr.contains("does not hold the agent's state"), "{stderr}");
}
