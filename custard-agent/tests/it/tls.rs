//! `wss://` end to end: the agent binary behind a TLS-terminating proxy with a
//! private test CA, on loopback.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use custard_agent::backoff::Backoff;
use custard_agent::config::AgentConfig;
use custard_core::wire::{Frame, Message};
use custard_testkit::processes::Scene;
use tokio_util::sync::CancellationToken;

use crate::fake_server::{
    BIG, FakeServer, KEY, TestCa, TlsProxy, WAIT, memory_kib, numbers, spawn_agent, terminate,
    wait_for_log,
};

/// The agent trusts the CA named by `CUSTARD_CA_FILE`, or the system roots
/// from `SSL_CERT_FILE`: it connects over `wss://`, says hello, is welcomed and
/// streams a result. Prints its memory, idle and streaming, with TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_a_tls_proxy_with_a_private_ca() {
    let db = numbers("agent_tls").await;
    for variable in ["CUSTARD_CA_FILE", "SSL_CERT_FILE"] {
        let scene = Scene::new("agent-tls");
        let ca = TestCa::new();
        let ca_file = ca.write_ca(scene.path(), "ca.pem");
        let mut server = FakeServer::start().await;
        let proxy = TlsProxy::start(&ca, server.addr).await;
        let ca_path = ca_file.to_str().expect("a UTF-8 path");
        let mut agent = spawn_agent(
            &scene,
            "agent",
            &proxy.url(),
            &db.url,
            &[(variable, ca_path), ("CUSTARD_MAX_ROWS", "1000000")],
        );
        let mut side = server.agent(15_000).await;
        side.send(Frame::new("p", Message::Ping)).await;
        assert_eq!(side.reply_to("p").await, [Message::Pong], "{variable}");
        assert!(proxy.handshakes.load(Ordering::SeqCst) >= 1, "the session went through TLS");
        let idle = memory_kib(&agent);

        side.run("small", "SELECT count(*) AS n FROM n", 10, 10_000).await;
        let reply = side.reply_to("small").await;
        assert!(
            matches!(reply.last(), Some(Message::Done(d)) if d.row_count == 1),
            "{variable}: {reply:?}"
        );

        // About 50 MB of rows through TLS, sampling the agent's memory meanwhile.
        side.run("big", BIG, 1_000_000, 60_000).await;
        let (mut rows, mut peak_rss) = (0, 0);
        loop {
            let frame = side.recv().await;
            peak_rss = peak_rss.max(memory_kib(&agent).0);
            match frame.message {
                Message::Rows(r) => rows += r.rows.len(),
                Message::Done(d) => {
                    assert_eq!((d.row_count, d.truncated), (100_000, false));
                    break;
                }
                Message::Columns(_) => {}
                other => panic!("{variable}: {other:?}"),
            }
        }
        assert_eq!(rows, 100_000);
        let after = memory_kib(&agent);
        println!(
            "agent over wss:// ({variable}): idle VmRSS {} KiB (VmHWM {} KiB); streaming 100,000 \
             rows (~50 MB): peak sampled VmRSS {peak_rss} KiB, VmHWM {} KiB",
            idle.0, idle.1, after.1
        );
        let stopped = terminate(&mut agent).await;
        println!("agent over wss:// ({variable}): SIGTERM to exit {stopped:?}");
        assert!(!agent.log_text().contains("panicked"), "{}", agent.log_text());
    }
}

/// Without the CA the agent does not trust the proxy: a clear certificate
/// error in its log, no panic, and it keeps retrying until SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_without_the_ca_is_a_certificate_error_and_the_agent_retries() {
    let db = numbers("agent_tls_untrusted").await;
    let scene = Scene::new("agent-tls-untrusted");
    let ca = TestCa::new();
    let server = FakeServer::start().await;
    let proxy = TlsProxy::start(&ca, server.addr).await;
    let mut agent = spawn_agent(&scene, "agent", &proxy.url(), &db.url, &[]);
    let log = wait_for_log(&mut agent, "invalid peer certificate", 2).await;
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    // The proxy counts a failed handshake when it reads the agent's alert,
    // which may be a moment after the agent has logged the failure.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proxy.failed_handshakes.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "it tried again: {log}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.handshakes.load(Ordering::SeqCst), 0, "no session without trust");
    assert_eq!(server.attempts.load(Ordering::SeqCst), 0);
    terminate(&mut agent).await;
}

/// A CA file that is missing, holds no certificate or a broken one stops the
/// agent at start, with an error naming the file (before it connects anywhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ca_file_is_a_start_up_error_naming_it() {
    let scene = Scene::new("agent-tls-bad-ca");
    let dir = scene.path();
    let database = dir.join("empty.db");
    rusqlite::Connection::open(&database)
        .expect("create")
        .execute_batch("CREATE TABLE t (i int)")
        .expect("table");
    let no_cert = dir.join("key-only.pem");
    std::fs::write(&no_cert, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        .expect("write");
    let broken = dir.join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        .expect("write");
    let server = FakeServer::start().await;
    for (i, path) in [dir.join("missing.pem"), no_cert, broken].into_iter().enumerate() {
        let path_text = path.to_str().expect("UTF-8").to_owned();
        let database_url = format!("sqlite:{}", database.display());
        let mut agent = spawn_agent(
            &scene,
            &format!("agent-bad-ca-{i}"),
            "wss://localhost:1/api/v1/connections/ws/c1",
            &database_url,
            &[("CUSTARD_CA_FILE", &path_text)],
        );
        let status = agent.wait_exit(WAIT).await.expect("the agent stops at start");
        let log = agent.log_text();
        assert!(!status.success(), "{path_text}: {log}");
        assert!(log.contains(&format!("CUSTARD_CA_FILE {path_text}")), "{path_text}: {log}");
        assert!(!log.contains("panicked"), "{log}");
    }
    assert_eq!(server.attempts.load(Ordering::SeqCst), 0);
}

/// The library entry (`custard_agent::run...`) installs the crypto provider
/// itself, so embedders get a working `wss://` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_entry_speaks_wss() {
    let db = numbers("agent_tls_lib").await;
    let scene = Scene::new("agent-tls-lib");
    let ca = TestCa::new();
    let ca_file = ca.write_ca(scene.path(), "ca.pem");
    let mut server = FakeServer::start().await;
    let proxy = TlsProxy::start(&ca, server.addr).await;
    let config = AgentConfig {
        ca_file: Some(ca_file),
        allow_privileged_role: true,
        shutdown_grace: Duration::from_secs(1),
        ..AgentConfig::new(proxy.url(), KEY, &db.url)
    };
    let stop = CancellationToken::new();
    let backoff = Backoff::with(
        Duration::from_millis(50),
        Duration::from_millis(200),
        Duration::from_secs(60),
    );
    let task = tokio::spawn(custard_agent::run_with_backoff(config, stop.clone(), backoff));
    let mut side = server.agent(15_000).await;
    side.run("q", "SELECT count(*) AS n FROM n", 10, 10_000).await;
    let reply = side.reply_to("q").await;
    assert!(matches!(reply.last(), Some(Message::Done(d)) if d.row_count == 1), "{reply:?}");
    let started = Instant::now();
    stop.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops").expect("task").expect("clean exit");
    assert!(started.elapsed() < WAIT);
}
