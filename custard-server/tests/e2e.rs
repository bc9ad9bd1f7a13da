//! End to end: the real `custard-server` and `custard-agent` binaries, a real
//! PostgreSQL and a fake OpenAI-compatible endpoint, driven over HTTP the way a
//! user would: sign up, verify through the outbox, connect a database, ask.
//!
//! Every child process is killed when its test ends (pass or fail), each test
//! has its own temporary data dir and ports, and the logs of every process a
//! failed test started are printed with the failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use custard_testkit::api::Api;
use custard_testkit::bins::workspace_binary;
use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use custard_testkit::processes::{Process, Scene, free_port, start_agent, start_server};
use custard_testkit::{ReaderRole, ScratchDb, url_with_user};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
/// The most one test may take, start-ups included (building the agent is not).
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// How long a process may take to start, or a status to change.
const WAIT: Duration = Duration::from_secs(20);
/// The server's query timeout; a dead agent must be reported long before it.
const QUERY_TIMEOUT_SECS: u64 = 30;
/// How soon a question to a killed agent must be answered with `agent_offline`.
const PROMPT_FAILURE: Duration = Duration::from_secs(5);

/// The SQL the fake model writes, whatever the question.
const MODEL_SQL: &str = "SELECT c.country, count(DISTINCT c.id) AS customers, sum(o.amount) AS revenue\n\
     FROM customers c JOIN orders o ON o.customer_id = c.id\n\
     GROUP BY c.country\n\
     ORDER BY c.country";

const SHOP_SQL: &str = "
CREATE TABLE customers (
  id integer PRIMARY KEY,
  name text NOT NULL,
  country text NOT NULL
);
CREATE TABLE orders (
  id integer PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES customers (id),
  amount numeric(10, 2) NOT NULL,
  ordered_at date NOT NULL
);
INSERT INTO customers VALUES
  (1, 'Ada', 'UK'), (2, 'Alan', 'UK'), (3, 'Grace', 'US'), (4, 'Edsger', 'NL'),
  (5, 'Barbara', 'US'), (6, 'Linus', 'FI'), (7, 'Margaret', 'US');
INSERT INTO orders VALUES
  (1, 1, 12.50, '2024-01-03'), (2, 1, 7.25, '2024-01-09'), (3, 2, 99.99, '2024-02-11'),
  (4, 3, 5.00, '2024-02-14'), (5, 3, 20.10, '2024-03-01'), (6, 4, 42.00, '2024-03-02'),
  (7, 5, 0.99, '2024-03-15'), (8, 5, 310.40, '2024-04-01'), (9, 6, 18.00, '2024-04-20'),
  (10, 7, 64.30, '2024-05-05'), (11, 7, 1.01, '2024-05-06'), (12, 2, 250.00, '2024-06-30');
";

// ---------------------------------------------------------------------------
// Tests

/// The whole LLM path: account, connection, the agent binary against a real
/// PostgreSQL, a question answered by the model's SQL; then the agent is
/// SIGKILLed (questions fail at once with `agent_offline`), restarted (answers
/// again), and the history holds all three outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn llm_flow_with_real_server_and_agent() {
    let scene = Scene::new("llm");
    let agent_bin = agent_binary().await;
    bounded(&scene, llm_flow(&scene, &agent_bin)).await;
}

async fn llm_flow(scene: &Scene, agent_bin: &Path) {
    let shop = Shop::create("e2e_llm").await;
    let model = FakeOpenAi::always(Behaviour::reply(format!("```sql\n{MODEL_SQL}\n```"))).await;
    let server = Server::start(
        scene,
        &[
            "--llm-model",
            "test-model",
            "--llm-base-url",
            &model.base_url(),
            "--llm-api-key",
            "test-key",
        ],
    )
    .await;
    let (_, status) = server.anonymous().get("/status").await;
    assert_eq!(status["engine"], "test-model", "{status}");

    let api = server.verified_user("ada@example.com").await;
    let (connection, key, agent_url) = server.create_postgres_connection(&api, "Shop").await;
    let mut agent =
        start_agent(scene, agent_bin, "agent-1", &agent_url, &key, &shop.reader_url(), &[]);
    wait_for_connection(&api, &connection, "online with a schema", |c| {
        c["status"] == "online" && c["schema_fingerprint"].is_string()
    })
    .await;

    let question = "How many customers and how much revenue do we have per country?";
    let expected = shop.expected_rows().await;
    let (status, answer) = api.ask(&connection, question).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_answer_rows(&answer, &["country", "customers", "revenue"], &expected);
    assert_eq!(answer["engine"], "test-model", "the answer names the model: {answer}");
    assert!(answer["sql_query"].as_str().is_some_and(|s| s.contains("customers")), "{answer}");
    assert_eq!(answer["attempts"], 1, "{answer}");
    let requests = model.requests();
    assert_eq!(requests.len(), 1, "one model call per question");
    let body = requests[0].body.as_ref().expect("a chat request");
    assert_eq!(body.model, "test-model");
    assert!(body.last_user_message().is_some_and(|m| m.contains(question)), "{body:?}");
    assert_eq!(requests[0].authorization(), Some("Bearer test-key"));

    // SIGKILL: no close frame, no goodbye; the server learns it from the socket.
    let killed_at = Instant::now();
    agent.kill().await;
    wait_for_connection(&api, &connection, "offline", |c| c["status"] == "offline").await;
    let asked_at = Instant::now();
    let (status, reply) = api.ask(&connection, question).await;
    let (since_kill, since_ask) = (killed_at.elapsed(), asked_at.elapsed());
    assert_eq!(
        (status, error_code(&reply)),
        (StatusCode::SERVICE_UNAVAILABLE, "agent_offline"),
        "{reply}"
    );
    assert!(reply["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{reply}");
    assert!(
        since_kill < PROMPT_FAILURE,
        "a killed agent must be reported within {PROMPT_FAILURE:?}, not after the \
         {QUERY_TIMEOUT_SECS} s query timeout: took {since_kill:?} ({since_ask:?} for the question)"
    );
    assert_eq!(model.request_count(), 1, "no model call is spent while no agent is connected");

    let _agent =
        start_agent(scene, agent_bin, "agent-2", &agent_url, &key, &shop.reader_url(), &[]);
    wait_for_connection(&api, &connection, "online again", |c| c["status"] == "online").await;
    let (status, answer) = api.ask(&connection, question).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_answer_rows(&answer, &["country", "customers", "revenue"], &expected);

    let (status, history) = api.get(&format!("/api/v1/queries?connection_id={connection}")).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let queries = history["queries"].as_array().expect("queries");
    let oldest_first: Vec<(&str, &str, &str)> = queries
        .iter()
        .rev()
        .map(|q| {
            (
                q["question"].as_str().unwrap_or_default(),
                q["outcome"].as_str().unwrap_or_default(),
                q["engine"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        oldest_first,
        [
            (question, "ok", "test-model"),
            (question, "agent_offline", "test-model"),
            (question, "ok", "test-model")
        ],
        "{history}"
    );
    assert!(queries[1]["error_message"].as_str().is_some_and(|m| !m.is_empty()), "{history}");
    assert_eq!(queries[0]["row_count"], expected.len(), "{history}");
}

/// Without any LLM settings the offline engine answers what it can and says
/// `cannot_answer` (422, never 200) to what it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_engine_flow() {
    let scene = Scene::new("offline");
    let agent_bin = agent_binary().await;
    bounded(&scene, offline_flow(&scene, &agent_bin)).await;
}

async fn offline_flow(scene: &Scene, agent_bin: &Path) {
    let shop = Shop::create("e2e_offline").await;
    let server = Server::start(scene, &[]).await;
    let (_, status) = server.anonymous().get("/status").await;
    assert_eq!(status["engine"], "offline", "no LLM settings reached the server: {status}");

    let api = server.verified_user("grace@example.com").await;
    let (connection, key, agent_url) = server.create_postgres_connection(&api, "Shop").await;
    let _agent = start_agent(scene, agent_bin, "agent", &agent_url, &key, &shop.reader_url(), &[]);
    wait_for_connection(&api, &connection, "online with a schema", |c| {
        c["status"] == "online" && c["schema_fingerprint"].is_string()
    })
    .await;

    let customers: i64 = shop
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .expect("counting customers")
        .get(0);
    let (status, answer) = api.ask(&connection, "how many customers are there").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["engine"], "offline", "{answer}");
    assert_eq!(answer["rows"], json!([[customers]]), "{answer}");
    assert_eq!(answer["row_count"], 1, "{answer}");

    let weather = "what will the weather be like in Paris tomorrow?";
    let (status, reply) = api.ask(&connection, weather).await;
    assert_eq!(
        (status, error_code(&reply)),
        (StatusCode::UNPROCESSABLE_ENTITY, "cannot_answer"),
        "{reply}"
    );
    assert!(reply["error"]["message"].as_str().is_some_and(|m| m.len() > 10), "{reply}");

    let (_, history) = api.get("/api/v1/queries").await;
    let outcomes: Vec<(&str, &str)> = history["queries"]
        .as_array()
        .expect("queries")
        .iter()
        .rev()
        .map(|q| {
            (q["outcome"].as_str().unwrap_or_default(), q["engine"].as_str().unwrap_or_default())
        })
        .collect();
    assert_eq!(outcomes, [("ok", "offline"), ("cannot_answer", "offline")], "{history}");
}

/// `--demo` on an empty data dir: the printed password logs in, the demo
/// connection comes online through the in-process agent, the offline engine
/// answers, and an answer exports as CSV.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_mode_flow() {
    let scene = Scene::new("demo");
    bounded(&scene, demo_flow(&scene)).await;
}

async fn demo_flow(scene: &Scene) {
    let server = Server::start(scene, &["--demo"]).await;
    let (email, password) = server.demo_credentials().await;
    assert_eq!(email, "demo@custard.local");
    let api = server.login(&email, &password).await;

    let (status, list) = api.get("/api/v1/connections").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let connections = list["connections"].as_array().expect("connections");
    assert_eq!(connections.len(), 1, "{list}");
    assert_eq!(
        (connections[0]["name"].as_str(), connections[0]["db_type"].as_str()),
        (Some("Demo shop"), Some("sqlite")),
        "{list}"
    );
    let connection = connections[0]["id"].as_str().expect("id").to_owned();
    wait_for_connection(&api, &connection, "online with a schema", |c| {
        c["status"] == "online" && c["schema_fingerprint"].is_string()
    })
    .await;

    let (status, answer) = api.ask(&connection, "how many customers are there").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["engine"], "offline", "{answer}");
    let rows = answer["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{answer}");
    assert!(rows[0][0].as_i64().is_some_and(|n| n > 0), "a positive count: {answer}");

    let (status, products) = api.ask(&connection, "list all products").await;
    assert_eq!(status, StatusCode::OK, "{products}");
    assert_eq!(products["engine"], "offline", "{products}");
    assert_eq!(products["truncated"], false, "{products}");
    let row_count = products["row_count"].as_u64().expect("row_count");
    assert!(row_count > 1, "{products}");
    let columns: Vec<&str> = products["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("a column name"))
        .collect();

    let id = products["id"].as_str().expect("id");
    let response = api
        .request(Method::GET, &format!("/api/v1/queries/{id}/export.csv"))
        .send()
        .await
        .expect("the export answers");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let body = response.text().await.expect("the CSV body");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> =
        reader.headers().expect("a CSV header").iter().map(str::to_owned).collect();
    assert_eq!(header, columns, "{body}");
    let records: Vec<csv::StringRecord> =
        reader.records().collect::<Result<_, _>>().expect("CSV records");
    assert_eq!(records.len() as u64, row_count, "{body}");
    let first: Vec<String> =
        products["rows"][0].as_array().expect("a first row").iter().map(cell_text).collect();
    let first_csv: Vec<String> = records[0]
        .iter()
        .map(|c| if c.is_empty() { "NULL".to_owned() } else { c.to_owned() })
        .collect();
    assert_eq!(first_csv, first, "the CSV's first row is the answer's");
}

// ---------------------------------------------------------------------------
// Processes

/// Runs a test body under [`TEST_LIMIT`]; a timeout fails the test (with the logs).
async fn bounded(scene: &Scene, body: impl std::future::Future<Output = ()>) {
    let started = Instant::now();
    if tokio::time::timeout(TEST_LIMIT, body).await.is_err() {
        panic!("the test did not finish within {TEST_LIMIT:?}; logs in {}", scene.path().display());
    }
    eprintln!("{}: {:.1} s", scene.name(), started.elapsed().as_secs_f64());
}

/// The agent binary, built first (outside the test's time limit: cargo may
/// wait for the build directory's lock).
async fn agent_binary() -> PathBuf {
    let started = Instant::now();
    let binary = tokio::task::spawn_blocking(|| workspace_binary("custard-agent"))
        .await
        .expect("building the agent");
    eprintln!("custard-agent ready in {:.1} s", started.elapsed().as_secs_f64());
    binary
}

/// The `custard-server` binary on a free port with a fresh data dir.
struct Server {
    process: Process,
    base: String,
    data_dir: PathBuf,
    http: reqwest::Client,
}

impl Server {
    async fn start(scene: &Scene, args: &[&str]) -> Server {
        let address = format!("127.0.0.1:{}", free_port());
        let base = format!("http://{address}");
        let data_dir = scene.path().join("server-data");
        let timeout = QUERY_TIMEOUT_SECS.to_string();
        let mut all = vec!["--query-timeout-secs", &timeout];
        all.extend_from_slice(args);
        let binary = Path::new(env!("CARGO_BIN_EXE_custard-server"));
        let process = start_server(scene, binary, &address, &data_dir, &all, WAIT).await;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        Server { process, base, data_dir, http }
    }

    fn anonymous(&self) -> Api {
        Api { http: self.http.clone(), base: self.base.clone(), token: None }
    }

    /// Signs up, follows the verification link from the outbox, and logs in.
    async fn verified_user(&self, email: &str) -> Api {
        let anonymous = self.anonymous();
        let signup = json!({
            "email": email, "password": PASSWORD, "first_name": "Ada",
            "last_name": "Lovelace", "organization_name": "Analytical Engines",
        });
        let (status, reply) = anonymous.post("/api/v1/auth/signup", &signup).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        let link = self.outbox_link("/verify-email?token=").await;
        assert!(link.starts_with(&self.base), "the link points at the public URL: {link}");
        // The link opens the page; its API twin answers JSON for the same token.
        let api = link.replacen("/verify-email?", "/api/v1/auth/verify-email?", 1);
        let response = self.http.get(&api).send().await.expect("following the link");
        assert_eq!(response.status(), StatusCode::OK, "{link}");
        let verified: Value = response.json().await.expect("JSON");
        assert_eq!(verified["verified"], true, "{verified}");
        self.login(email, PASSWORD).await
    }

    async fn login(&self, email: &str, password: &str) -> Api {
        let (status, reply) = self
            .anonymous()
            .post("/api/v1/auth/login", &json!({"email": email, "password": password}))
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let token = reply["access_token"].as_str().expect("access_token").to_owned();
        Api { token: Some(token), ..self.anonymous() }
    }

    /// The first link containing `needle` in an email of the outbox.
    async fn outbox_link(&self, needle: &str) -> String {
        let outbox = self.data_dir.join("outbox");
        let deadline = Instant::now() + WAIT;
        loop {
            for entry in std::fs::read_dir(&outbox).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "eml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if let Some(link) =
                    text.split_whitespace().find(|w| w.starts_with("http") && w.contains(needle))
                {
                    return link.to_owned();
                }
            }
            assert!(Instant::now() < deadline, "no email with {needle} in {}", outbox.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a PostgreSQL connection: (id, API key, the agent's server URL).
    async fn create_postgres_connection(&self, api: &Api, name: &str) -> (String, String, String) {
        let (status, created) =
            api.post("/api/v1/connections", &json!({"name": name, "db_type": "postgresql"})).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["status"], "pending", "{created}");
        let id = created["id"].as_str().expect("id").to_owned();
        let key = created["api_key"].as_str().expect("api_key").to_owned();
        let url = created["setup"]["server_url"].as_str().expect("setup.server_url").to_owned();
        let ws_base = self.base.replacen("http://", "ws://", 1);
        assert_eq!(url, format!("{ws_base}/api/v1/connections/ws/{id}"), "{created}");
        (id, key, url)
    }

    /// The demo login the server printed on its console.
    async fn demo_credentials(&self) -> (String, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.process.log_text();
            let field = |name: &str| {
                text.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            if let (Some(email), Some(password)) = (field("email:"), field("password:")) {
                return (email, password);
            }
            assert!(Instant::now() < deadline, "the demo printed no login within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP

/// Polls the connection until `want` holds; returns it.
async fn wait_for_connection(
    api: &Api,
    id: &str,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, connection) = api.get(&format!("/api/v1/connections/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{connection}");
        if want(&connection) {
            return connection;
        }
        assert!(
            Instant::now() < deadline,
            "the connection was not {what} within {WAIT:?}: {connection}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn error_code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// A cell as PostgreSQL's text output shows it (`NULL` for null).
fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn assert_answer_rows(answer: &Value, columns: &[&str], expected: &[Vec<String>]) {
    let names: Vec<&str> = answer["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, columns, "{answer}");
    let rows: Vec<Vec<String>> = answer["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_array().expect("a row").iter().map(cell_text).collect())
        .collect();
    assert_eq!(rows, expected, "{answer}");
    assert_eq!(answer["row_count"], expected.len(), "{answer}");
    assert_eq!(answer["truncated"], false, "{answer}");
}

// ---------------------------------------------------------------------------
// The database

/// The shop in a scratch database, and a read-only login role for the agent
/// (the role the agent's start-up check asks for: no superuser, no inheritance,
/// SELECT on the shop's tables only).
struct Shop {
    // Fields drop in order: the database (and the role's grants in it) goes first.
    db: ScratchDb,
    reader: ReaderRole,
}

impl Shop {
    async fn create(prefix: &str) -> Shop {
        let db = ScratchDb::create(prefix).await;
        let reader = ReaderRole::create(&db.name).await;
        let admin = db.client().await;
        admin.batch_execute(SHOP_SQL).await.expect("creating the shop");
        let role = &reader.name;
        admin
            .batch_execute(&format!(
                "GRANT USAGE ON SCHEMA public TO \"{role}\";\n\
                 GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{role}\";"
            ))
            .await
            .expect("granting read access");
        Shop { db, reader }
    }

    /// The agent's database URL: the scratch database as the read-only role.
    fn reader_url(&self) -> String {
        url_with_user(&self.db.url, &self.reader.name)
    }

    /// [`MODEL_SQL`]'s rows, run directly, as text.
    async fn expected_rows(&self) -> Vec<Vec<String>> {
        let sql = format!(
            "SELECT country::text, customers::text, revenue::text FROM ({MODEL_SQL}) AS t ORDER BY country"
        );
        self.db
            .client()
            .await
            .query(&sql, &[])
            .await
            .expect("running the model's SQL directly")
            .iter()
            .map(|row| {
                (0..3).map(|i| row.get::<_, Option<String>>(i).unwrap_or("NULL".into())).collect()
            })
            .collect()
    }
}
