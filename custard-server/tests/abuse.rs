//! Abuse, against the real `custard-server` binary: oversized bodies and
//! WebSocket frames, slow and idle clients, floods of connections and of
//! logins, malformed UTF-8, deeply nested JSON and SQL. Each gets a clear
//! refusal, and a client from another address on loopback (`127.0.0.2`, another
//! tenant) is served all along.
//!
//! Each test starts its own server (`--demo`, with a fake model) with small
//! caps so that reaching them is quick.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use custard_testkit::api::Api;
use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use custard_testkit::processes::{Process, Scene, free_port, start_server};
use futures_util::SinkExt as _;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// The most one test may take.
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// The servers' deadline for a request's headers, then its body.
const READ_TIMEOUT: Duration = Duration::from_millis(1500);
/// Room on top of a deadline the server promises, for a loaded machine.
const MARGIN: Duration = Duration::from_secs(5);
/// The per-address connection cap of the test servers.
const PER_IP: usize = 40;
/// The total connection cap of the test servers.
const TOTAL: usize = 100;

/// The attacker's address, and another tenant's.
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const OTHER_TENANT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A running server with its demo account signed in.
struct Target {
    /// Keeps the logs, printed when a test fails.
    scene: Scene,
    server: Process,
    addr: String,
    /// Another tenant's client (from `127.0.0.2`), signed in as the demo user.
    api: Api,
    _model: FakeOpenAi,
}

async fn start(name: &str, model: FakeOpenAi, read_timeout: Duration) -> Target {
    let scene = Scene::new(name);
    let addr = format!("127.0.0.1:{}", free_port());
    let data = scene.path().join("data");
    let server = start_server(
        &scene,
        &server_binary(),
        &addr,
        &data,
        &[
            "--demo",
            "--llm-model",
            "fake-model",
            "--llm-base-url",
            &model.base_url(),
            "--max-connections",
            &TOTAL.to_string(),
            "--max-connections-per-ip",
            &PER_IP.to_string(),
            "--request-read-timeout-ms",
            &read_timeout.as_millis().to_string(),
        ],
        Duration::from_secs(30),
    )
    .await;
    let password = server
        .log_text()
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:").map(|p| p.trim().to_owned()))
        .expect("the demo prints its password");
    let other = reqwest::Client::builder()
        .local_address(IpAddr::V4(OTHER_TENANT))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let api = Api { http: other, base: format!("http://{addr}"), token: None };
    let mut target = Target { scene, server, addr, api, _model: model };
    let (status, body) = target
        .call(
            "POST",
            "/api/v1/auth/login",
            json!({"email": "demo@custard.local", "password": password}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    target.api.token = Some(body["access_token"].as_str().expect("a token").to_owned());
    target
}

fn server_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_custard-server"))
}

impl Target {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A JSON call as the other tenant's client (with the demo token when set).
    async fn call(&self, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.api.call(method, path, (!body.is_null()).then_some(&body)).await
    }

    /// Another tenant is served: `/health` answers 200 within the margin.
    async fn assert_others_served(&mut self, when: &str) {
        self.server.assert_running();
        let started = Instant::now();
        let status = tokio::time::timeout(MARGIN, self.api.http.get(self.url("/health")).send())
            .await
            .unwrap_or_else(|_| panic!("{when}: /health did not answer within {MARGIN:?}"))
            .unwrap_or_else(|e| panic!("{when}: /health failed: {e}"))
            .status();
        assert_eq!(status, StatusCode::OK, "{when}");
        eprintln!(
            "{}: {when}: another tenant served in {:?}",
            self.scene.name(),
            started.elapsed()
        );
    }

    /// The demo connection's id.
    async fn demo_connection(&self) -> String {
        let (status, body) = self.call("GET", "/api/v1/connections", Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let list = body["connections"].as_array().expect("a list");
        list[0]["id"].as_str().expect("an id").to_owned()
    }
}

/// A TCP connection to `addr` from `from`.
async fn connect_from(from: Ipv4Addr, addr: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).expect("binding the source address");
    socket.connect(addr.parse().expect("address")).await.expect("connecting")
}

/// What the server sent until it closed the connection, or `None` when it
/// neither wrote nor closed within `within`.
async fn reply_within(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut reply = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut reply)).await {
        Ok(_) => Some(String::from_utf8_lossy(&reply).into_owned()),
        Err(_) if reply.is_empty() => None,
        Err(_) => Some(String::from_utf8_lossy(&reply).into_owned()),
    }
}

fn status_of(reply: &str) -> Option<u16> {
    reply.split_whitespace().nth(1)?.parse().ok()
}

fn code_of(reply: &str) -> String {
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: Value = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    json["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// One raw request on a fresh connection (closed after the answer).
async fn raw_request(addr: &str, head: &str, body: &[u8]) -> String {
    let mut stream = connect_from(OTHER_TENANT, addr).await;
    stream.write_all(head.as_bytes()).await.expect("write head");
    // The server may answer and close before reading a refused body.
    let _ = stream.write_all(body).await;
    reply_within(&mut stream, MARGIN).await.expect("an answer")
}

async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("the test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_frames_are_refused() {
    bounded(async {
        let mut target = start("abuse-size", FakeOpenAi::always(Behaviour::reply("SELECT 1")).await, READ_TIMEOUT).await;
        let big = vec![b'a'; 200 * 1024];

        // Announced in Content-Length.
        let head = format!(
            "POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            big.len()
        );
        let reply = raw_request(&target.addr, &head, &big).await;
        assert_eq!((status_of(&reply), code_of(&reply).as_str()), (Some(413), "payload_too_large"), "{reply}");

        // Chunked, with no length announced.
        let mut chunked = Vec::new();
        for chunk in big.chunks(16 * 1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let head = "POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                    transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        let reply = raw_request(&target.addr, head, &chunked).await;
        assert_eq!((status_of(&reply), code_of(&reply).as_str()), (Some(413), "payload_too_large"), "{reply}");
        target.assert_others_served("after oversized bodies").await;

        // A WebSocket message over the wire protocol's limit, from an agent
        // with a valid key: the server closes the socket.
        let (status, created) = target
            .call("POST", "/api/v1/connections", json!({"name": "big frames", "db_type": "sqlite"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let ws_url = created["setup"]["server_url"].as_str().expect("the agent URL");
        let key = created["api_key"].as_str().expect("a key");
        let mut request = ws_url.into_client_request().expect("request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("header"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("the agent connects");
        let oversized = "x".repeat(custard_core::wire::MAX_FRAME_BYTES + 1024);
        let started = Instant::now();
        let _ = socket.send(tokio_tungstenite::tungstenite::Message::text(oversized)).await;
        let ended = tokio::time::timeout(MARGIN, async {
            loop {
                match socket.next().await {
                    None | Some(Err(_)) => return None,
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                        return frame.map(|f| u16::from(f.code));
                    }
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .expect("the server ends the socket of an oversized frame");
        eprintln!("oversized frame: socket ended in {:?} (close code {ended:?})", started.elapsed());
        if let Some(code) = ended {
            assert_eq!(code, 1009, "closed as 'message too big'");
        }
        target.assert_others_served("after an oversized frame").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off_and_others_served() {
    bounded(async {
        let mut target = start(
            "abuse-slow",
            FakeOpenAi::always(Behaviour::reply("SELECT 1")).await,
            READ_TIMEOUT,
        )
        .await;
        let started = Instant::now();
        let mut idle = Vec::new();
        for _ in 0..10 {
            idle.push(connect_from(ATTACKER, &target.addr).await);
        }
        // Headers a byte at a time, forever.
        let mut slow_headers = Vec::new();
        for _ in 0..10 {
            let mut stream = connect_from(ATTACKER, &target.addr).await;
            let addr = target.addr.clone();
            slow_headers.push(tokio::spawn(async move {
                let head = format!("GET /health HTTP/1.1\r\nhost: {addr}\r\nx-slow: ");
                let mut sent = 0;
                for byte in head.bytes().chain(std::iter::repeat(b'a')) {
                    if stream.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    sent += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (sent, started.elapsed())
            }));
        }
        // A complete head, then the body a byte at a time.
        let mut slow_bodies = Vec::new();
        for _ in 0..5 {
            let stream = connect_from(ATTACKER, &target.addr).await;
            slow_bodies.push(tokio::spawn(async move {
                let (mut reader, mut writer) = stream.into_split();
                let head = "POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\n\
                            content-type: application/json\r\ncontent-length: 1000\r\n\r\n";
                writer.write_all(head.as_bytes()).await.expect("head");
                let trickle = async move {
                    while writer.write_all(b" ").await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    std::future::pending::<()>().await;
                };
                let mut reply = Vec::new();
                tokio::select! {
                    _ = reader.read_to_end(&mut reply) => {}
                    () = trickle => {}
                }
                (String::from_utf8_lossy(&reply).into_owned(), started.elapsed())
            }));
        }
        target.assert_others_served("while slow clients hold connections").await;

        let deadline = READ_TIMEOUT + MARGIN;
        for mut stream in idle {
            let reply = reply_within(&mut stream, deadline.saturating_sub(started.elapsed()))
                .await
                .expect("an idle connection is closed by the server");
            assert!(reply.is_empty() || status_of(&reply) == Some(408), "{reply}");
        }
        eprintln!("idle connections closed after {:?}", started.elapsed());
        for task in slow_headers {
            let (sent, at) =
                tokio::time::timeout(deadline, task).await.expect("cut off in time").expect("task");
            assert!(at <= deadline, "a slow head was cut off after {at:?}");
            assert!(sent < 100, "the server kept reading a slow head ({sent} bytes)");
        }
        eprintln!("slow heads cut off by {:?}", started.elapsed());
        for task in slow_bodies {
            let (reply, at) =
                tokio::time::timeout(deadline, task).await.expect("cut off in time").expect("task");
            assert!(at <= deadline, "a slow body was cut off after {at:?}");
            assert_eq!(
                (status_of(&reply), code_of(&reply).as_str()),
                (Some(408), "request_timeout"),
                "{reply}"
            );
        }
        eprintln!("slow bodies answered 408 by {:?}", started.elapsed());
        target.assert_others_served("after the slow clients").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_are_capped_per_address_and_in_all() {
    bounded(async {
        // A long read deadline, so the flood's idle connections stay open
        // while the test counts them.
        let mut target = start(
            "abuse-flood",
            FakeOpenAi::always(Behaviour::reply("SELECT 1")).await,
            Duration::from_secs(60),
        )
        .await;

        // One address: the cap, then refusals.
        let mut flood = Vec::new();
        for _ in 0..PER_IP + 10 {
            flood.push(connect_from(ATTACKER, &target.addr).await);
        }
        let mut refused = 0;
        for stream in &mut flood {
            if let Some(reply) = reply_within(stream, Duration::from_millis(300)).await {
                assert_eq!(
                    (status_of(&reply), code_of(&reply).as_str()),
                    (Some(503), "too_many_connections"),
                    "{reply}"
                );
                refused += 1;
            }
        }
        assert_eq!(refused, 10, "exactly the connections over the per-address cap are refused");
        target.assert_others_served("with one address at its cap").await;

        // In all: two more addresses fill the server (the demo agent holds
        // one connection from 127.0.0.1, the checks above may hold a few
        // from 127.0.0.2 until they close); then a fresh address is refused.
        let mut others = Vec::new();
        for last in 4..=6u8 {
            for _ in 0..PER_IP {
                let stream = connect_from(Ipv4Addr::new(127, 0, 0, last), &target.addr).await;
                others.push(stream);
            }
        }
        let mut fresh = connect_from(Ipv4Addr::new(127, 0, 0, 9), &target.addr).await;
        let reply = reply_within(&mut fresh, MARGIN).await.expect("refused at once");
        assert_eq!(
            (status_of(&reply), code_of(&reply).as_str()),
            (Some(503), "too_many_connections"),
            "{reply}"
        );

        // The flood ends: everyone is served again.
        drop((flood, others));
        let started = Instant::now();
        loop {
            let mut stream = connect_from(ATTACKER, &target.addr).await;
            stream
                .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .expect("write");
            let reply = reply_within(&mut stream, MARGIN).await.unwrap_or_default();
            if status_of(&reply) == Some(200) {
                break;
            }
            assert!(started.elapsed() < MARGIN, "the attacker's address is served again: {reply}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("served again {:?} after the flood ended", started.elapsed());
        target.assert_others_served("after the flood").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_floods_are_rate_limited_and_others_sign_in() {
    bounded(async {
        let mut target = start("abuse-login", FakeOpenAi::always(Behaviour::reply("SELECT 1")).await, READ_TIMEOUT).await;
        let attacker = reqwest::Client::builder()
            .local_address(IpAddr::V4(ATTACKER))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for i in 0..60 {
            let response = attacker
                .post(target.url("/api/v1/auth/login"))
                .json(&json!({"email": format!("guess{i}@example.com"), "password": "wrong password 1"}))
                .send()
                .await
                .expect("an answer");
            *statuses.entry(response.status().as_u16()).or_default() += 1;
        }
        eprintln!("login flood answers by status: {statuses:?}");
        assert!(statuses.get(&429).copied().unwrap_or(0) > 0, "the flood is rate limited: {statuses:?}");
        assert!(!statuses.keys().any(|s| *s >= 500), "no 5xx: {statuses:?}");
        target.assert_others_served("during a login flood").await;
        // Signing in from another address still works.
        let token = target.api.token.take();
        let password = target
            .server
            .log_text()
            .lines()
            .find_map(|l| l.trim().strip_prefix("password:").map(|p| p.trim().to_owned()))
            .expect("password");
        let (status, body) = target
            .call("POST", "/api/v1/auth/login", json!({"email": "demo@custard.local", "password": password}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        target.api.token = token;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_utf8_and_deep_json_get_4xx() {
    bounded(async {
        let mut target = start("abuse-malformed", FakeOpenAi::always(Behaviour::reply("SELECT 1")).await, READ_TIMEOUT).await;
        let addr = target.addr.clone();
        let token = target.api.token.clone().expect("signed in");
        let post = |path: &str, content_type: &str, body: &[u8]| {
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes()
        };
        let bad_utf8: &[u8] = b"{\"email\": \"a\xff\xfe@example.com\", \"password\": \"x\xc3\x28\"}";
        // Under the 64 KiB body limit, so the parser, not the size check, meets them.
        let depth = 10_000;
        let deep_json = format!("{{\"email\": {}1{}}}", "[".repeat(depth), "]".repeat(depth));
        let deep_object = format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
            ("utf-8 JSON", post("/api/v1/auth/login", "application/json", bad_utf8), bad_utf8.to_vec()),
            ("deep array", post("/api/v1/auth/login", "application/json", deep_json.as_bytes()), deep_json.clone().into_bytes()),
            ("deep object", post("/api/v1/auth/signup", "application/json", deep_object.as_bytes()), deep_object.clone().into_bytes()),
            ("utf-8 form without its CSRF token", post("/login", "application/x-www-form-urlencoded", b"email=a%FF%FE&password=%C3%28"), b"email=a%FF%FE&password=%C3%28".to_vec()),
            ("raw utf-8 form without its CSRF token", post("/login", "application/x-www-form-urlencoded", b"email=\xff\xfe&password=\xc3\x28"), b"email=\xff\xfe&password=\xc3\x28".to_vec()),
            ("bad path", b"GET /api/v1/connections/%FF%FE HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(), Vec::new()),
            ("bad query", format!("GET /api/v1/queries?offset=%FF HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n").into_bytes(), Vec::new()),
            ("bad header", b"GET /api/v1/auth/profile HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \xff\xfe\r\nconnection: close\r\n\r\n".to_vec(), Vec::new()),
        ];
        for (what, head, body) in cases {
            let mut stream = connect_from(OTHER_TENANT, &addr).await;
            stream.write_all(&head).await.expect("head");
            let _ = stream.write_all(&body).await;
            let reply = reply_within(&mut stream, MARGIN).await.expect("an answer");
            let status = status_of(&reply).unwrap_or(0);
            assert!((400..500).contains(&status), "{what}: a 4xx, not {reply}");
            eprintln!("{what}: {status} {}", code_of(&reply));
        }
        target.assert_others_served("after malformed input").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_and_huge_sql_from_the_model_is_refused() {
    bounded(async {
        let depth = 5_000;
        let nested = format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth));
        let subqueries =
            format!("{}SELECT 1{}", "SELECT * FROM (".repeat(depth), ") AS t".repeat(depth));
        let huge = format!("SELECT 1 WHERE 'a' IN ({})", vec!["'x'"; 400_000].join(", "));
        let cases = [
            ("nested parentheses", nested),
            ("nested subqueries", subqueries),
            ("4 MB of SQL", huge),
        ];
        let replies = cases.clone();
        // The model answers each question (and its repairs) with that case's SQL.
        let model = FakeOpenAi::with_responder(move |request| {
            let asked =
                |tag: &str| request.roles_and_contents().iter().any(|(_, c)| c.contains(tag));
            let sql = replies.iter().find(|(tag, _)| asked(tag)).map_or("SELECT 1", |(_, sql)| sql);
            Behaviour::reply(sql)
        })
        .await;
        let mut target = start("abuse-sql", model, READ_TIMEOUT).await;
        let connection = target.demo_connection().await;
        for (what, _) in &cases {
            let what = *what;
            let started = Instant::now();
            let question = format!("how many customers? ({what})");
            let (status, body) = target
                .call(
                    "POST",
                    "/api/v1/query",
                    json!({"connection_id": connection, "question": question}),
                )
                .await;
            eprintln!("{what}: {status} {} in {:?}", body["error"]["code"], started.elapsed());
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some("no_valid_query")),
                "{what}: {body}"
            );
            target.assert_others_served(what).await;
        }
    })
    .await;
}

/// An agent is the customer's process, not ours. A tenant's fake agent with a
/// valid key answers `run` with endless 1 MB `rows` frames (ignoring `cancel`),
/// and mixes in malformed frames and replies to requests it was never sent.
/// The server counts what arrives against its own caps: the question ends
/// truncated at the row cap, the server's memory stays bounded, and another
/// tenant is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_agent_cannot_flood_the_server() {
    use custard_core::wire::{Columns, Frame, Hello, Message, Rows, SchemaReport, WireColumnMeta};
    use custard_core::{Column, Dialect, Schema, Table};
    use tokio_tungstenite::tungstenite::Message as Ws;

    bounded(async {
        let mut target = start(
            "abuse-agent",
            FakeOpenAi::always(Behaviour::reply("SELECT v FROM t")).await,
            READ_TIMEOUT,
        )
        .await;
        let (status, created) = target
            .call("POST", "/api/v1/connections", json!({"name": "hostile", "db_type": "sqlite"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let connection = created["id"].as_str().expect("an id").to_owned();
        let mut request = created["setup"]["server_url"]
            .as_str()
            .expect("the agent URL")
            .into_client_request()
            .expect("request");
        let key = created["api_key"].as_str().expect("a key");
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().expect("header"));
        let (socket, _) =
            tokio_tungstenite::connect_async(request).await.expect("the agent connects");
        let (mut sink, mut stream) = socket.split();

        let mut schema = Schema::new(Dialect::Sqlite);
        schema.tables.push(Table::new("main", "t", vec![Column::new("v", "TEXT")]));
        let hello = Hello {
            agent_version: "hostile-1".to_owned(),
            dialect: "sqlite".to_owned(),
            capabilities: Vec::new(),
            schema_fingerprint: Some(schema.fingerprint()),
            max_concurrency: 4,
        };
        let text = |frame: &Frame| Ws::text(frame.encode());
        sink.send(text(&Frame::new("hello", Message::Hello(hello)))).await.expect("hello");

        // The agent: answers pings and discover; every `run` starts a flood.
        let (runs_tx, mut runs_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Ws>(4);
        let reader_out = out_tx.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Ws::Text(t) = message else { continue };
                let Ok(frame) = Frame::decode(t.as_str()) else { continue };
                match &frame.message {
                    Message::Ping => {
                        let _ = reader_out.send(text(&frame.reply(Message::Pong))).await;
                    }
                    Message::Discover(_) => {
                        let report = SchemaReport::new(&schema);
                        let _ = reader_out.send(text(&frame.reply(Message::Schema(report)))).await;
                    }
                    Message::Run(_) => {
                        let _ = runs_tx.send(frame.id.clone());
                    }
                    _ => {}
                }
            }
        });
        let writer = tokio::spawn(async move {
            let mut sent = 0usize;
            while let Some(message) = out_rx.recv().await {
                sent += message.len();
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            sent
        });
        tokio::time::sleep(Duration::from_millis(500)).await;

        let rss_before =
            custard_testkit::bins::status_kib(target.server.pid(), "VmRSS").expect("VmRSS");
        let flood = tokio::spawn(async move {
            let Some(id) = runs_rx.recv().await else { return 0usize };
            let row = vec![json!("x".repeat(1000))];
            let rows =
                Frame::new(id.clone(), Message::Rows(Rows { rows: vec![row; 1000] })).encode();
            let columns = Columns {
                columns: vec![WireColumnMeta {
                    name: "v".to_owned(),
                    type_name: "text".to_owned(),
                }],
            };
            let _ = out_tx.send(text(&Frame::new(id.clone(), Message::Columns(columns)))).await;
            let mut frames = 0;
            // About 1.5 GB, far beyond any cap, unless the server hangs up first.
            for i in 0..1500 {
                let extra = match i % 100 {
                    // Malformed, and rows for a request the server never sent.
                    10 => Some(Ws::text(r#"{"v":1,"type":"rows","id":"#.to_owned())),
                    20 => {
                        Some(Ws::text(rows.replace(&format!(r#""id":"{id}""#), r#""id":"r999""#)))
                    }
                    30 => Some(Ws::Binary(vec![0u8; 1024].into())),
                    _ => None,
                };
                if let Some(extra) = extra
                    && out_tx.send(extra).await.is_err()
                {
                    break;
                }
                if out_tx.send(Ws::text(rows.clone())).await.is_err() {
                    break;
                }
                frames += 1;
            }
            frames
        });

        let asked = Instant::now();
        let (status, answer) = target
            .call(
                "POST",
                "/api/v1/query",
                json!({"connection_id": connection, "question": "all the values"}),
            )
            .await;
        eprintln!("hostile agent: answered {status} in {:?}", asked.elapsed());
        let summary =
            format!("{} {} {}", answer["error"], answer["row_count"], answer["truncated"]);
        assert_eq!(status, StatusCode::OK, "{summary}");
        assert_eq!(
            (&answer["row_count"], &answer["truncated"]),
            (&json!(1000), &json!(true)),
            "{summary}"
        );
        target.assert_others_served("while the agent floods").await;

        let frames = tokio::time::timeout(Duration::from_secs(60), flood)
            .await
            .expect("the flood ends")
            .expect("flood");
        let peak = custard_testkit::bins::status_kib(target.server.pid(), "VmHWM").expect("VmHWM");
        let rss_after =
            custard_testkit::bins::status_kib(target.server.pid(), "VmRSS").expect("VmRSS");
        eprintln!(
            "hostile agent: {frames} frames of ~1 MB sent; server RSS {} -> {} MiB, peak {} MiB",
            rss_before / 1024,
            rss_after / 1024,
            peak / 1024
        );
        // The server held at most its per-session buffer (64 MiB) and one
        // answer's capped rows, not the gigabyte and more the agent sent.
        assert!(frames >= 100, "the agent sent only {frames} frames");
        assert!(peak < rss_before + 400 * 1024, "server peak {peak} KiB from {rss_before} KiB");
        target.assert_others_served("after the flood").await;
        reader.abort();
        writer.abort();
    })
    .await;
}

/// The demo prints its sign-in on stdout; a stdout nobody reads any more (a
/// pipe closed by a supervisor or a tool that read what it needed) must not
/// take the server down.
#[tokio::test]
async fn a_closed_stdout_does_not_stop_the_server() {
    let scene = Scene::new("closed_stdout");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = tokio::process::Command::new(server_binary())
        .args(["--demo", "--bind", &addr, "--data-dir"])
        .arg(scene.path().join("data"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the server");
    // Nobody will read the banner.
    drop(child.stdout.take());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    let healthy = |http: reqwest::Client| {
        let url = format!("http://{addr}/health");
        async move { http.get(url).send().await.is_ok_and(|r| r.status().is_success()) }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(http.clone()).await {
        assert!(child.try_wait().expect("status").is_none(), "the server exited while starting");
        assert!(Instant::now() < deadline, "the server did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The banner goes out once the demo is ready; give it time to be written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().expect("status").is_none(), "the server died writing to stdout");
    assert!(healthy(http).await, "the server stopped answering");
}
