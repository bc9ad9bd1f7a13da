//! A fake Custard server for tests that drive the agent *binary* through
//! misbehaving servers: it speaks the wire protocol on loopback, can refuse
//! the upgrade, announce any `welcome`, stop reading, flood pings; a TLS
//! proxy with a test CA puts it behind `wss://`. The agent's memory is read
//! from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use custard_core::wire::{Frame, Message, Run, Welcome, WireLimits};
use custard_testkit::ScratchDb;
use custard_testkit::processes::{Process, Scene};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

pub(crate) const KEY: &str = "custard_test_key";
/// The bound on anything a test waits for.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// The agent binary under test: this build's, or another one named by
/// `CUSTARD_TEST_AGENT_BINARY` (to check that a test fails on an older build).
pub(crate) fn agent_binary() -> PathBuf {
    std::env::var_os("CUSTARD_TEST_AGENT_BINARY")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_custard-agent")), PathBuf::from)
}

type Ws = WebSocketStream<TcpStream>;

/// A listening fake server; each accepted agent is handed to the test.
pub(crate) struct FakeServer {
    pub(crate) addr: SocketAddr,
    pub(crate) url: String,
    /// TCP connections accepted.
    pub(crate) attempts: Arc<AtomicUsize>,
    connections: mpsc::Receiver<Side>,
}

impl FakeServer {
    /// Accepts agents that present `KEY`.
    pub(crate) async fn start() -> FakeServer {
        Self::listen(None).await
    }

    /// Refuses every upgrade with HTTP 401 and `body`.
    pub(crate) async fn refusing(body: &str) -> FakeServer {
        Self::listen(Some(body.to_owned())).await
    }

    async fn listen(refusal: Option<String>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let url = format!("ws://{addr}/api/v1/connections/ws/c1");
        let attempts = Arc::new(AtomicUsize::new(0));
        let (tx, connections) = mpsc::channel(16);
        let counter = attempts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let (tx, refusal) = (tx.clone(), refusal.clone());
                tokio::spawn(async move {
                    #[allow(clippy::result_large_err)] // tungstenite fixes the error type
                    let check = |request: &Request, response: Response| {
                        let auth = request.headers().get("authorization");
                        let ok =
                            auth.and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {KEY}"));
                        match (&refusal, ok) {
                            (None, true) => Ok(response),
                            (refusal, _) => {
                                let body = refusal.clone().unwrap_or_else(|| "invalid key".into());
                                let mut refused = ErrorResponse::new(Some(body));
                                *refused.status_mut() = StatusCode::UNAUTHORIZED;
                                Err(refused)
                            }
                        }
                    };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await {
                        let _ = tx.send(Side { ws, held: Default::default() }).await;
                    }
                });
            }
        });
        FakeServer { addr, url, attempts, connections }
    }

    /// The next agent that connects, before `hello`.
    pub(crate) async fn accept(&mut self) -> Side {
        tokio::time::timeout(WAIT, self.connections.recv())
            .await
            .expect("an agent connects in time")
            .expect("the server runs")
    }

    /// The next agent that connects, after `hello` and a `welcome` announcing
    /// `heartbeat_ms` and the usual limits.
    pub(crate) async fn agent(&mut self, heartbeat_ms: u64) -> Side {
        self.agent_welcomed(welcome(heartbeat_ms)).await
    }

    /// The next agent that connects, after `hello` and this `welcome`.
    pub(crate) async fn agent_welcomed(&mut self, welcome: Welcome) -> Side {
        let mut side = self.accept().await;
        let hello = side.recv().await;
        assert!(matches!(hello.message, Message::Hello(_)), "{hello:?}");
        side.send(Frame::new(hello.id, Message::Welcome(welcome))).await;
        side
    }
}

/// A `welcome` with the usual limits.
pub(crate) fn welcome(heartbeat_ms: u64) -> Welcome {
    Welcome {
        connection_id: "c1".into(),
        heartbeat_interval_ms: heartbeat_ms,
        limits: WireLimits {
            max_rows: 10_000,
            max_bytes: 1 << 26,
            timeout_ms: 30_000,
            max_concurrency: 4,
        },
    }
}

/// The server's end of one agent's socket.
pub(crate) struct Side {
    pub(crate) ws: Ws,
    /// Frames `reply_to` read for other requests, kept for their own turn.
    held: std::collections::VecDeque<Frame>,
}

impl Side {
    pub(crate) async fn send(&mut self, frame: Frame) {
        self.ws.send(WsMessage::text(frame.encode())).await.expect("send");
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.ws.send(WsMessage::text(text)).await.expect("send");
    }

    pub(crate) async fn recv(&mut self) -> Frame {
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

    /// Frames for request `id` up to its last (`done`, `error`, `schema`, `pong`);
    /// frames of other requests are kept for a later `reply_to` of theirs, so
    /// the order replies of concurrent requests arrive in does not matter.
    pub(crate) async fn reply_to(&mut self, id: &str) -> Vec<Message> {
        let mut out = Vec::new();
        let mut held = std::mem::take(&mut self.held);
        loop {
            let frame = match held.iter().position(|f| f.id == id) {
                Some(i) => held.remove(i).expect("a held frame"),
                None => self.recv().await,
            };
            if frame.id != id {
                held.push_back(frame);
                continue;
            }
            let last = matches!(
                frame.message,
                Message::Done(_) | Message::Error(_) | Message::Schema(_) | Message::Pong
            );
            out.push(frame.message);
            if last {
                self.held = held;
                return out;
            }
        }
    }

    pub(crate) async fn run(&mut self, id: &str, sql: &str, max_rows: u64, timeout_ms: u64) {
        let run = Run { sql: sql.into(), max_rows, timeout_ms };
        self.send(Frame::new(id, Message::Run(run))).await;
    }

    /// Stops reading: the returned sink still sends, the stream half is never
    /// polled again, so what the agent sends piles up in the TCP buffers.
    pub(crate) fn stop_reading(self) -> (SplitSink<Ws, WsMessage>, SplitStream<Ws>) {
        self.ws.split()
    }
}

/// The code of the `error` that ends `messages`.
pub(crate) fn error_code(messages: &[Message]) -> String {
    match messages.last() {
        Some(Message::Error(e)) => e.code.to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Sends `count` pings (or until the socket fails), `pause` apart; returns how
/// many went out.
pub(crate) fn ping(
    mut sink: SplitSink<Ws, WsMessage>,
    count: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        // A long id (within the agent's 256 bytes) makes every pong long too,
        // so a server that stops reading fills the socket buffers sooner.
        let id = format!("ping-{}", "x".repeat(200));
        let ping = WsMessage::text(Frame::new(id, Message::Ping).encode());
        for sent in 0..count {
            if sink.send(ping.clone()).await.is_err() {
                return sent;
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        count
    })
}

/// A scratch database with `n (i int)`, 3,000 rows.
pub(crate) async fn numbers(prefix: &str) -> ScratchDb {
    let db = ScratchDb::create(prefix).await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE n (i int PRIMARY KEY); INSERT INTO n SELECT generate_series(1, 3000)",
        )
        .await
        .expect("setup");
    db
}

/// About 50 MB of rows: more than the socket buffers on both sides hold.
pub(crate) const BIG: &str =
    "SELECT i, repeat('x', 500) AS pad FROM generate_series(1, 100000) AS g(i)";
/// A legitimate query that takes many seconds (the guard rejects pg_sleep).
pub(crate) const SLOW: &str = "SELECT count(*) FROM generate_series(1, 300000000) AS g";

/// Starts the agent binary against `server_url` with the test database, a
/// privileged role allowed (the scratch database's owner is the test
/// superuser), and `env` on top.
pub(crate) fn spawn_agent(
    scene: &Scene,
    name: &str,
    server_url: &str,
    database_url: &str,
    env: &[(&str, &str)],
) -> Process {
    let mut all = vec![("CUSTARD_ALLOW_PRIVILEGED_ROLE", "true")];
    all.extend_from_slice(env);
    custard_testkit::processes::start_agent(
        scene,
        &agent_binary(),
        name,
        server_url,
        KEY,
        database_url,
        &all,
    )
}

/// The agent's resident memory now and at its peak, in KiB.
pub(crate) fn memory_kib(agent: &Process) -> (u64, u64) {
    let read = |field| custard_testkit::bins::status_kib(agent.pid(), field).expect("/proc status");
    (read("VmRSS"), read("VmHWM"))
}

/// Waits until the agent's log has `needle` at least `times` times; panics
/// with the log after [`WAIT`].
pub(crate) async fn wait_for_log(agent: &mut Process, needle: &str, times: usize) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = agent.log_text();
        if log.matches(needle).count() >= times {
            return log;
        }
        agent.assert_running();
        assert!(Instant::now() < deadline, "`{needle}` x{times} not in the agent's log:\n{log}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// SIGTERM, then the time until the agent exited (cleanly); panics after [`WAIT`].
pub(crate) async fn terminate(agent: &mut Process) -> Duration {
    let started = Instant::now();
    agent.signal("TERM");
    let status = agent
        .wait_exit(WAIT)
        .await
        .unwrap_or_else(|| panic!("the agent ignored SIGTERM for {WAIT:?}:\n{}", agent.log_text()));
    assert!(status.success(), "clean exit after SIGTERM: {status}\n{}", agent.log_text());
    started.elapsed()
}

/// A test CA and a certificate it signed for `localhost` and 127.0.0.1.
pub(crate) struct TestCa {
    /// The CA certificate, PEM.
    pub(crate) ca_pem: String,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Custard test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        server.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = server.signed_by(&key, &issuer).expect("server certificate");
        TestCa { ca_pem: ca_cert.pem(), cert: cert.der().clone(), key: key.serialize_der() }
    }

    /// Writes the CA certificate to `dir/name` and returns the path.
    pub(crate) fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.ca_pem).expect("writing the CA file");
        path
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .expect("server certificate");
        Arc::new(config)
    }
}

/// A TLS-terminating TCP proxy on 127.0.0.1 in front of `upstream`, with the
/// certificate of `ca`; counts TLS handshakes attempted and completed.
pub(crate) struct TlsProxy {
    pub(crate) port: u16,
    pub(crate) handshakes: Arc<AtomicUsize>,
    pub(crate) failed_handshakes: Arc<AtomicUsize>,
}

impl TlsProxy {
    pub(crate) async fn start(ca: &TestCa, upstream: SocketAddr) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
        let handshakes = Arc::new(AtomicUsize::new(0));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (ok, failed) = (handshakes.clone(), failed_handshakes.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (acceptor, ok, failed) = (acceptor.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(inbound).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    ok.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
                });
            }
        });
        TlsProxy { port, handshakes, failed_handshakes }
    }

    /// The agent endpoint through the proxy, by host name.
    pub(crate) fn url(&self) -> String {
        format!("wss://localhost:{}/api/v1/connections/ws/c1", self.port)
    }
}
