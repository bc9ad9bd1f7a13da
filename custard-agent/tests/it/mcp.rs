//! `custard-agent mcp`: one database over the Model Context Protocol on
//! stdio, driven by a real and independent client (the official Python SDK)
//! and by hand as raw JSON-RPC lines.
//!
//! What is held: the three tools and their schemas, rows from a real SQLite
//! and PostgreSQL database, `validation_error` for bad arguments,
//! `query_rejected` for writes, the offline engine and a configured model
//! answering `ask` (and a model's write refused), stdout carrying nothing but
//! JSON-RPC while the logs go to stderr, the role check at start, the
//! agent's policy, and the attack corpus refused with the data unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use custard_testkit::{ReadableDb, ScratchDb, mcp_client, testdata_jsonl_lines};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// How long one Python client session may take, start to end.
const CLIENT_WAIT: Duration = Duration::from_secs(90);
/// How long the agent gets to answer a raw session, or to refuse a role.
const AGENT_WAIT: Duration = Duration::from_secs(30);

/// The agent's binary.
fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_custard-agent")
}

/// A Python client plan: `custard-agent mcp --database-url URL EXTRA...` over
/// stdio, with info logs (to stderr) and `env` on top of the SDK's default
/// environment (which carries no `CUSTARD_*` variable of the test's own).
fn plan(database_url: &str, extra: &[&str], env: &[(&str, &str)], calls: &[Value]) -> Value {
    let mut args = vec!["mcp".to_owned(), "--database-url".to_owned(), database_url.to_owned()];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let mut environment = serde_json::Map::new();
    environment.insert("CUSTARD_LOG".into(), "info".into());
    environment.insert("NO_COLOR".into(), "1".into());
    for (name, value) in env {
        environment.insert((*name).into(), (*value).into());
    }
    json!({
        "transport": "stdio",
        "command": agent_bin(),
        "args": args,
        "env": environment,
        // An empty folder: no `.env` of the developer's reaches the agent.
        "cwd": empty_dir(),
        "calls": calls,
    })
}

/// An empty folder for the agent to start in, kept for the test process.
fn empty_dir() -> &'static str {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path().to_str().expect("utf-8")
}

fn call(tool: &str, arguments: Value) -> Value {
    json!({ "tool": tool, "arguments": arguments })
}

/// Runs the Python client on `plan`; every call has its result.
async fn client(plan: &Value) -> Value {
    let started = Instant::now();
    let out = mcp_client::run(plan, CLIENT_WAIT).await;
    let calls = plan["calls"].as_array().map_or(0, Vec::len);
    let results = out["results"].as_array().map_or(0, Vec::len);
    assert_eq!(results, calls, "one result per call: {out}");
    eprintln!("python client: {calls} calls in {:?}", started.elapsed());
    out
}

/// The structured content of result `i`, which must be a success.
fn ok<'a>(out: &'a Value, i: usize, what: &str) -> &'a Value {
    let r = &out["results"][i];
    assert!(r.get("exception").is_none(), "{what}: the client raised {r}");
    assert_eq!(r["is_error"], false, "{what} should succeed: {r}");
    assert!(r["structured"].is_object(), "{what}: no structured content: {r}");
    assert!(r["text"].as_str().is_some_and(|t| !t.is_empty()), "{what}: no text: {r}");
    &r["structured"]
}

/// The error code of result `i`, which must be a tool error (not a protocol one).
fn err_code<'a>(out: &'a Value, i: usize, what: &str) -> &'a str {
    let r = &out["results"][i];
    assert!(r.get("exception").is_none(), "{what}: the client raised {r}");
    assert_eq!(r["is_error"], true, "{what} should be refused: {r}");
    let code = r["structured"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: an error without a code: {r}"));
    assert!(r["structured"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {r}");
    assert!(
        r["text"].as_str().is_some_and(|t| t.starts_with(&format!("{code}: "))),
        "{what}: the text does not lead with the code: {r}"
    );
    code
}

/// The names of the tables `get_schema` listed.
fn table_names(schema: &Value) -> BTreeSet<String> {
    schema["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| t["name"].as_str().expect("a table name").to_owned())
        .collect()
}

/// The column names `get_schema` listed for `table`.
fn column_names(schema: &Value, table: &str) -> Vec<String> {
    let table = schema["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["name"] == table)
        .unwrap_or_else(|| panic!("{table} is not listed: {schema}"));
    table["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("a column name").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// The databases.

/// The shop on SQLite: 4 customers (with e-mails), 5 orders, and a table of
/// secrets.
fn sqlite_shop(dir: &Path) -> PathBuf {
    let path = dir.join("shop.db");
    let conn = rusqlite::Connection::open(&path).expect("creating the SQLite database");
    conn.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, city TEXT);
         INSERT INTO customers VALUES
           (1, 'Ann', 'ann@example.test', 'Oslo'), (2, 'Bob', 'bob@example.test', 'Rome'),
           (3, 'Cy', 'cy@example.test', 'Oslo'), (4, 'Di', 'di@example.test', 'Lima');
         CREATE TABLE orders (id INTEGER PRIMARY KEY,
           customer_id INTEGER NOT NULL REFERENCES customers(id), total REAL NOT NULL);
         INSERT INTO orders VALUES (1, 1, 10.5), (2, 2, 20.0), (3, 1, 5.25), (4, 3, 7.0), (5, 4, 1.0);
         CREATE TABLE secrets (id INTEGER PRIMARY KEY, token TEXT NOT NULL);
         INSERT INTO secrets VALUES (1, 'tok-canary-1');",
    )
    .expect("filling the SQLite database");
    path
}

/// Everything in a SQLite database: each object's DDL and each table's rows.
fn sqlite_state(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).expect("opening the SQLite database");
    let mut out = String::new();
    let objects: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
        .expect("listing the objects");
    for (kind, name, sql) in &objects {
        out.push_str(&format!("{kind} {name}: {sql:?}\n"));
        if kind != "table" {
            continue;
        }
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{name}\" ORDER BY 1")).expect("rows");
        let width = stmt.column_count();
        let rows: Vec<String> = stmt
            .query_map([], |r| {
                let cells = (0..width)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(cells.join(","))
            })
            .and_then(|rows| rows.collect())
            .expect("reading rows");
        out.push_str(&format!("  {} rows: {}\n", rows.len(), rows.join(" | ")));
    }
    out
}

/// The shop on PostgreSQL, for a scratch database.
const PG_SHOP: &str = "
    CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text, city text);
    INSERT INTO customers VALUES
      (1, 'Ann', 'ann@example.test', 'Oslo'), (2, 'Bob', 'bob@example.test', 'Rome'),
      (3, 'Cy', 'cy@example.test', 'Oslo'), (4, 'Di', 'di@example.test', 'Lima');
    CREATE TABLE secrets (id int PRIMARY KEY, token text NOT NULL);
    INSERT INTO secrets VALUES (1, 'tok-canary-1');
";

// ---------------------------------------------------------------------------
// 1. The Python client over stdio.

/// Initialize, the three tools with their schemas, every tool with good and
/// bad arguments, writes refused, the offline engine counting customers, and
/// the database unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_lists_three_tools_and_calls_each_over_stdio() {
    let dir = tempfile::tempdir().expect("a folder");
    let db = sqlite_shop(dir.path());
    let before = sqlite_state(&db);
    let url = format!("sqlite:{}", db.display());
    let calls = [
        /* 0 */ call("get_schema", json!({})),
        /* 1 */ call("get_schema", json!({ "search": "orders by customer" })),
        /* 2 */
        call("run_sql", json!({ "sql": "SELECT id, name FROM customers ORDER BY id" })),
        /* 3 */ call("ask", json!({ "question": "How many customers are there?" })),
        // Bad arguments: wrong type, unknown, missing.
        /* 4 */
        call("get_schema", json!({ "search": 5 })),
        /* 5 */ call("get_schema", json!({ "connection_id": "x" })),
        /* 6 */ call("run_sql", json!({})),
        /* 7 */ call("run_sql", json!({ "sql": 1 })),
        /* 8 */ call("run_sql", json!({ "sql": "SELECT 1", "connection_id": "x" })),
        /* 9 */ call("ask", json!({})),
        /* 10 */ call("ask", json!({ "question": ["How many customers are there?"] })),
        /* 11 */ call("ask", json!({ "question": "How many customers?", "history": [] })),
        // Writes and DDL.
        /* 12 */
        call("run_sql", json!({ "sql": "DELETE FROM customers" })),
        /* 13 */ call("run_sql", json!({ "sql": "DROP TABLE orders" })),
        /* 14 */
        call("run_sql", json!({ "sql": "INSERT INTO customers (id, name) VALUES (9, 'Eve')" })),
        /* 15 */ call("run_sql", json!({ "sql": "UPDATE customers SET name = 'x'" })),
        /* 16 */ call("run_sql", json!({ "sql": "CREATE TABLE stolen (a int)" })),
        /* 17 */ call("run_sql", json!({ "sql": "SELECT 1; DELETE FROM orders" })),
        // Still serving, and nothing changed.
        /* 18 */
        call("run_sql", json!({ "sql": "SELECT count(*) AS n FROM orders" })),
    ];
    let out = client(&plan(&url, &[], &[], &calls)).await;

    assert_eq!(out["server"]["name"], "custard-agent", "{}", out["server"]);
    assert!(
        out["server"]["instructions"].as_str().is_some_and(|i| i.contains("get_schema")),
        "{}",
        out["server"]
    );
    let tools = out["tools"].as_array().expect("tools");
    let names: BTreeSet<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["ask", "get_schema", "run_sql"]), "{tools:?}");
    assert_eq!(tools.len(), 3, "{tools:?}");
    for (tool, required, properties) in [
        ("get_schema", None, &["search"][..]),
        ("run_sql", Some("sql"), &["sql"][..]),
        ("ask", Some("question"), &["question"][..]),
    ] {
        let t = tools.iter().find(|t| t["name"] == tool).expect("listed");
        assert!(t["description"].as_str().is_some_and(|d| !d.is_empty()), "{t}");
        let input = &t["input_schema"];
        assert_eq!(input["type"], "object", "{tool}: {input}");
        assert_eq!(input["additionalProperties"], false, "{tool}: {input}");
        let listed: BTreeSet<&str> = input["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(listed, properties.iter().copied().collect(), "{tool}: {input}");
        let want_required: Vec<Value> = required.into_iter().map(Value::from).collect();
        assert_eq!(
            input.get("required").cloned().unwrap_or(json!([])),
            Value::from(want_required),
            "{tool}: {input}"
        );
        let output = &t["output_schema"];
        assert_eq!(output["type"], "object", "{tool}: {output}");
        assert!(output["properties"].is_object(), "{tool}: {output}");
        assert_eq!(t["annotations"]["read_only_hint"], true, "{tool}: {t}");
    }

    let schema = ok(&out, 0, "get_schema");
    assert_eq!(schema["dialect"], "sqlite");
    assert_eq!(schema["complete"], true);
    assert_eq!(schema["total_tables"], 3);
    assert_eq!(
        table_names(schema),
        BTreeSet::from(["customers".to_owned(), "orders".to_owned(), "secrets".to_owned()])
    );
    assert_eq!(column_names(schema, "customers"), ["id", "name", "email", "city"]);
    let searched = ok(&out, 1, "get_schema with a search");
    assert!(table_names(searched).contains("orders"), "{searched}");

    let rows = ok(&out, 2, "run_sql");
    assert_eq!(rows["rows"], json!([[1, "Ann"], [2, "Bob"], [3, "Cy"], [4, "Di"]]), "{rows}");
    assert_eq!(rows["row_count"], 4);
    assert_eq!(rows["truncated"], false);
    let columns: Vec<&str> = rows["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["id", "name"]);

    let answer = ok(&out, 3, "ask (offline)");
    assert_eq!(answer["engine"], "offline", "{answer}");
    assert_eq!(answer["rows"], json!([[4]]), "the offline engine's count: {answer}");
    assert!(answer["sql"].as_str().is_some_and(|s| s.contains("customers")), "{answer}");
    assert!(answer["answer"].as_str().is_some_and(|a| a.contains('4')), "{answer}");

    for (i, what) in [
        (4, "get_schema with a number for search"),
        (5, "get_schema with an unknown argument"),
        (6, "run_sql without sql"),
        (7, "run_sql with a number for sql"),
        (8, "run_sql with an unknown argument"),
        (9, "ask without a question"),
        (10, "ask with a list for question"),
        (11, "ask with an unknown argument"),
    ] {
        assert_eq!(err_code(&out, i, what), "validation_error", "{what}");
    }
    for (i, what) in [
        (12, "DELETE"),
        (13, "DROP TABLE"),
        (14, "INSERT"),
        (15, "UPDATE"),
        (16, "CREATE TABLE"),
        (17, "stacked DELETE"),
    ] {
        assert_eq!(err_code(&out, i, what), "query_rejected", "{what}");
    }
    assert_eq!(ok(&out, 18, "count after the writes")["rows"], json!([[5]]));
    assert_eq!(sqlite_state(&db), before, "the database changed");
}

/// With a model configured, `ask` runs the model's SQL and names the model
/// as its engine; a model that answers with writes gets nothing run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_runs_the_models_sql_and_refuses_a_model_that_writes() {
    let dir = tempfile::tempdir().expect("a folder");
    let db = sqlite_shop(dir.path());
    let before = sqlite_state(&db);
    let url = format!("sqlite:{}", db.display());
    // Each try of the destructive question gets another write.
    let writes = [
        "DELETE FROM orders",
        "DROP TABLE customers",
        "UPDATE customers SET name = 'x'",
        "INSERT INTO orders VALUES (9, 1, 1.0)",
    ];
    let tries = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&tries);
    let model = FakeOpenAi::with_responder(move |request| {
        let question = request.last_user_message().unwrap_or_default();
        if question.contains("How many customers") {
            Behaviour::reply("```sql\nSELECT count(*) AS fake_model_count FROM customers\n```")
        } else {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Behaviour::reply(format!("```sql\n{}\n```", writes[n % writes.len()]))
        }
    })
    .await;
    let base_url = model.base_url();
    let env = [
        ("CUSTARD_LLM_MODEL", "fake-model-7"),
        ("CUSTARD_LLM_BASE_URL", base_url.as_str()),
        ("CUSTARD_LLM_API_KEY", "sk-test-mcp"),
    ];
    let calls = [
        call("ask", json!({ "question": "How many customers are there?" })),
        call("ask", json!({ "question": "Remove every order from the shop" })),
        call("run_sql", json!({ "sql": "SELECT count(*) FROM orders" })),
    ];
    let out = client(&plan(&url, &[], &env, &calls)).await;

    let answer = ok(&out, 0, "ask with the model");
    assert_eq!(answer["engine"], "fake-model-7", "{answer}");
    assert!(
        answer["sql"].as_str().is_some_and(|s| s.contains("fake_model_count")),
        "not the model's SQL: {answer}"
    );
    assert_eq!(answer["rows"], json!([[4]]), "{answer}");

    let code = err_code(&out, 1, "ask answered with writes");
    assert_eq!(code, "no_valid_query", "{}", out["results"][1]);
    eprintln!(
        "a model that only writes: {code} after {} tries: {}",
        tries.load(Ordering::SeqCst),
        out["results"][1]["text"]
    );
    assert!(tries.load(Ordering::SeqCst) >= 1, "the model was not asked");
    assert_eq!(ok(&out, 2, "orders after")["rows"], json!([[5]]));
    assert_eq!(sqlite_state(&db), before, "the model's writes changed the database");

    let requests = model.requests();
    assert_eq!(requests.len(), 1 + tries.load(Ordering::SeqCst), "{requests:?}");
    for r in &requests {
        assert!(r.path.ends_with("/chat/completions"), "{}", r.path);
        assert_eq!(r.authorization(), Some("Bearer sk-test-mcp"));
        assert_eq!(r.body.as_ref().map(|b| b.model.as_str()), Some("fake-model-7"));
    }
}

// ---------------------------------------------------------------------------
// 2. stdout is the protocol only.

/// What a raw session printed.
#[derive(Debug)]
struct Session {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the agent with `args`, writes `messages` as JSON lines and closes
/// stdin; waits at most [`AGENT_WAIT`] for it to exit. Runs in an empty
/// folder (no `.env`) with an environment holding only `env`.
async fn raw_session(args: &[&str], env: &[(&str, &str)], messages: &[Value]) -> Session {
    let dir = tempfile::tempdir().expect("a folder without .env");
    let mut command = tokio::process::Command::new(agent_bin());
    command
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("CUSTARD_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("starting custard-agent");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut input = String::new();
    for m in messages {
        input.push_str(&m.to_string());
        input.push('\n');
    }
    stdin.write_all(input.as_bytes()).await.expect("writing to the agent");
    drop(stdin);
    let output = tokio::time::timeout(AGENT_WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the agent did not exit within {AGENT_WAIT:?} of stdin closing"))
        .expect("waiting for the agent");
    Session {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A session of raw JSON-RPC: requests with ids 1 to 8 and one notification.
fn raw_messages() -> Vec<Value> {
    vec![
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "get_schema", "arguments": {}}}),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "run_sql", "arguments": {"sql": "SELECT count(*) AS n FROM customers"}}}),
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "run_sql", "arguments": {"sql": "DELETE FROM customers"}}}),
        json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
            "params": {"name": "ask", "arguments": {"question": "How many customers are there?"}}}),
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "run_sql", "arguments": {}}}),
        json!({"jsonrpc": "2.0", "id": 8, "method": "ping"}),
    ]
}

/// Every stdout line is one JSON-RPC 2.0 message, and requests 1 to 8 each
/// got one response; returns the responses by id.
fn json_rpc_responses(session: &Session) -> BTreeMap<i64, Value> {
    assert!(!session.stdout.is_empty(), "nothing on stdout; stderr:\n{}", session.stderr);
    assert!(session.stdout.ends_with('\n'), "stdout ends mid-line: {:?}", session.stdout);
    let mut responses = BTreeMap::new();
    for line in session.stdout.lines() {
        let message: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("a stdout line is not JSON ({e}): {line:?}\nstderr:\n{}", session.stderr)
        });
        let object = message.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
        assert_eq!(object.get("jsonrpc"), Some(&json!("2.0")), "{line}");
        match object.get("id") {
            Some(id) => {
                let id = id.as_i64().unwrap_or_else(|| panic!("an id we never sent: {line}"));
                assert!(
                    object.contains_key("result") != object.contains_key("error"),
                    "a response has one of result and error: {line}"
                );
                assert!(responses.insert(id, message).is_none(), "two responses to {id}");
            }
            None => assert!(object.get("method").is_some_and(Value::is_string), "{line}"),
        }
    }
    assert_eq!(
        responses.keys().copied().collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>(),
        "stdout:\n{}",
        session.stdout
    );
    responses
}

/// The answers of the raw session, on any database holding the shop's 4 customers.
fn check_raw_answers(responses: &BTreeMap<i64, Value>) {
    assert_eq!(responses[&1]["result"]["serverInfo"]["name"], "custard-agent");
    assert_eq!(responses[&2]["result"]["tools"].as_array().map(Vec::len), Some(3));
    assert_eq!(responses[&3]["result"]["isError"], false, "{}", responses[&3]);
    assert_eq!(responses[&4]["result"]["structuredContent"]["rows"], json!([[4]]));
    assert_eq!(responses[&5]["result"]["isError"], true);
    assert_eq!(responses[&5]["result"]["structuredContent"]["code"], "query_rejected");
    assert_eq!(responses[&6]["result"]["structuredContent"]["rows"], json!([[4]]));
    assert_eq!(responses[&7]["result"]["structuredContent"]["code"], "validation_error");
    assert!(responses[&8].get("result").is_some(), "{}", responses[&8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_carries_only_json_rpc_and_logs_go_to_stderr_on_sqlite() {
    let dir = tempfile::tempdir().expect("a folder");
    let db = sqlite_shop(dir.path());
    let url = format!("sqlite:{}", db.display());
    let session = raw_session(&["mcp", "--database-url", &url], &[], &raw_messages()).await;
    assert!(session.success, "exit {:?} after stdin closed:\n{}", session.code, session.stderr);
    check_raw_answers(&json_rpc_responses(&session));
    assert!(session.stderr.contains("INFO"), "no log lines on stderr:\n{}", session.stderr);
    assert!(session.stderr.contains("serving MCP on stdio"), "stderr:\n{}", session.stderr);
}

/// On PostgreSQL as a superuser allowed through the environment: the role
/// check's warning goes to stderr too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_carries_only_json_rpc_and_logs_go_to_stderr_on_postgres() {
    let db = ScratchDb::create("mcp_stdout").await;
    db.client().await.batch_execute(PG_SHOP).await.expect("filling the database");
    let session = raw_session(
        &["mcp", "--database-url", &db.url],
        &[("CUSTARD_ALLOW_PRIVILEGED_ROLE", "true")],
        &raw_messages(),
    )
    .await;
    assert!(session.success, "exit {:?} after stdin closed:\n{}", session.code, session.stderr);
    check_raw_answers(&json_rpc_responses(&session));
    assert!(session.stderr.contains("serving MCP on stdio"), "stderr:\n{}", session.stderr);
    assert!(
        session.stderr.contains("WARN") && session.stderr.contains("privileged database role"),
        "the privileged role's warning is not on stderr:\n{}",
        session.stderr
    );
}

// ---------------------------------------------------------------------------
// 3. The role check.

/// A superuser is refused at start (stdout empty, stderr naming the role and
/// the SQL of a read-only role) with stdin still open; with
/// `--allow-privileged-role` it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superuser_is_refused_at_start_unless_allowed() {
    let db = ScratchDb::create("mcp_super").await;
    db.client().await.batch_execute(PG_SHOP).await.expect("filling the database");

    let dir = tempfile::tempdir().expect("a folder without .env");
    let mut child = tokio::process::Command::new(agent_bin())
        .args(["mcp", "--database-url", &db.url])
        .current_dir(dir.path())
        .env_clear()
        .env("CUSTARD_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting custard-agent");
    // Held open: the agent must leave on its own, not because its input ended.
    let stdin = child.stdin.take().expect("stdin");
    let started = Instant::now();
    let output = tokio::time::timeout(AGENT_WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("a superuser was not refused within {AGENT_WAIT:?}"))
        .expect("waiting for the agent");
    let took = started.elapsed();
    drop(stdin);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("superuser refused in {took:?}");
    assert!(!output.status.success(), "a superuser was served:\n{stderr}");
    assert_eq!(stdout, "", "stdout must stay empty");
    assert!(
        stderr.contains("refusing to run as the database role \"postgres\""),
        "the role is not named:\n{stderr}"
    );
    assert!(stderr.contains("superuser"), "{stderr}");
    assert!(stderr.contains("CREATE ROLE"), "no read-only role SQL:\n{stderr}");
    assert!(stderr.contains("NOSUPERUSER"), "{stderr}");
    assert!(
        stderr.contains(&format!("GRANT CONNECT ON DATABASE \"{}\"", db.name)),
        "the SQL does not name the database:\n{stderr}"
    );
    assert!(stderr.contains("--allow-privileged-role"), "{stderr}");
    assert!(!stderr.contains("serving MCP"), "{stderr}");

    let calls = [call("run_sql", json!({ "sql": "SELECT count(*) AS n FROM customers" }))];
    let out = client(&plan(&db.url, &["--allow-privileged-role"], &[], &calls)).await;
    assert_eq!(out["server"]["name"], "custard-agent");
    assert_eq!(ok(&out, 0, "run_sql as an allowed superuser")["rows"], json!([[4]]));
}

/// A plain read-only role serves without the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_role_serves_without_the_flag() {
    let db = ReadableDb::create("mcp_reader").await;
    let reader = &db.reader.name;
    db.db
        .client()
        .await
        .batch_execute(&format!(
            "{PG_SHOP}
             GRANT USAGE ON SCHEMA public TO \"{reader}\";
             GRANT SELECT ON customers, secrets TO \"{reader}\";"
        ))
        .await
        .expect("filling the database");
    let calls = [
        call("get_schema", json!({})),
        call(
            "run_sql",
            json!({ "sql": "SELECT name FROM customers WHERE city = 'Oslo' ORDER BY id" }),
        ),
        call("ask", json!({ "question": "How many customers are there?" })),
        call("run_sql", json!({ "sql": "UPDATE customers SET city = 'Paris'" })),
    ];
    let out = client(&plan(&db.reader_url(), &[], &[], &calls)).await;
    assert_eq!(out["server"]["name"], "custard-agent");
    let schema = ok(&out, 0, "get_schema");
    assert_eq!(schema["dialect"], "postgres");
    assert_eq!(table_names(schema), BTreeSet::from(["customers".to_owned(), "secrets".to_owned()]));
    assert_eq!(ok(&out, 1, "run_sql")["rows"], json!([["Ann"], ["Cy"]]));
    let answer = ok(&out, 2, "ask (offline)");
    assert_eq!(answer["engine"], "offline");
    assert_eq!(answer["rows"], json!([[4]]), "{answer}");
    assert_eq!(err_code(&out, 3, "UPDATE"), "query_rejected");
}

// ---------------------------------------------------------------------------
// 4. The agent's policy.

/// On SQLite: a masked column is left out of `get_schema` and no query
/// reads it; a table outside the allowed ones is neither shown nor read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_hides_masked_columns_and_other_tables_on_sqlite() {
    let dir = tempfile::tempdir().expect("a folder");
    let db = sqlite_shop(dir.path());
    let url = format!("sqlite:{}", db.display());
    let env = [
        ("CUSTARD_ALLOWED_TABLES", "main.customers,main.orders"),
        ("CUSTARD_MASKED_COLUMNS", "main.customers.email"),
    ];
    let refused = [
        "SELECT email FROM customers",
        "SELECT * FROM customers",
        "SELECT c.* FROM customers c",
        "SELECT (SELECT group_concat(email) FROM customers) AS e",
        "SELECT name FROM customers WHERE email LIKE 'a%'",
        "SELECT \"EMAIL\" FROM main.customers",
        "SELECT * FROM secrets",
        "SELECT token FROM main.secrets",
        "SELECT o.id FROM orders o JOIN secrets s ON s.id = o.id",
        "SELECT sql FROM sqlite_master",
    ];
    let mut calls = vec![
        call("get_schema", json!({})),
        call("get_schema", json!({ "search": "secret token" })),
        call("run_sql", json!({ "sql": "SELECT id, name, city FROM customers ORDER BY id" })),
    ];
    calls.extend(refused.iter().map(|sql| call("run_sql", json!({ "sql": sql }))));
    let out = client(&plan(&url, &[], &env, &calls)).await;

    for i in [0, 1] {
        let schema = ok(&out, i, "get_schema");
        assert_eq!(
            table_names(schema),
            BTreeSet::from(["customers".to_owned(), "orders".to_owned()]),
            "{schema}"
        );
        assert_eq!(schema["total_tables"], 2, "{schema}");
        assert_eq!(column_names(schema, "customers"), ["id", "name", "city"]);
        let text = out["results"][i]["text"].as_str().expect("text");
        assert!(!text.contains("email") && !text.contains("secrets"), "{text}");
    }
    let rows = ok(&out, 2, "allowed columns");
    assert_eq!(rows["row_count"], 4);
    for (n, sql) in refused.iter().enumerate() {
        let i = n + 3;
        assert_eq!(err_code(&out, i, sql), "query_rejected", "{sql}");
        let r = out["results"][i].to_string();
        assert!(!r.contains("@example.test") && !r.contains("tok-canary"), "{sql}: {r}");
    }
}

/// On PostgreSQL, with a read-only role granted what the policy allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_hides_masked_columns_and_other_tables_on_postgres() {
    let db = ReadableDb::create("mcp_policy").await;
    let reader = &db.reader.name;
    db.db
        .client()
        .await
        .batch_execute(&format!(
            "{PG_SHOP}
             GRANT USAGE ON SCHEMA public TO \"{reader}\";
             GRANT SELECT (id, name, city) ON customers TO \"{reader}\";"
        ))
        .await
        .expect("filling the database");
    let env = [
        ("CUSTARD_ALLOWED_TABLES", "public.customers"),
        ("CUSTARD_MASKED_COLUMNS", "public.customers.email"),
    ];
    let refused = [
        "SELECT email FROM customers",
        "SELECT * FROM customers",
        "SELECT name FROM customers WHERE email IS NOT NULL",
        "SELECT token FROM secrets",
        "SELECT * FROM public.secrets",
    ];
    let mut calls = vec![
        call("get_schema", json!({})),
        call("run_sql", json!({ "sql": "SELECT id, name FROM customers ORDER BY id" })),
    ];
    calls.extend(refused.iter().map(|sql| call("run_sql", json!({ "sql": sql }))));
    let out = client(&plan(&db.reader_url(), &[], &env, &calls)).await;

    let schema = ok(&out, 0, "get_schema");
    assert_eq!(table_names(schema), BTreeSet::from(["customers".to_owned()]), "{schema}");
    assert_eq!(column_names(schema, "customers"), ["id", "name", "city"]);
    assert_eq!(ok(&out, 1, "allowed columns")["row_count"], 4);
    for (n, sql) in refused.iter().enumerate() {
        let i = n + 2;
        let code = err_code(&out, i, sql);
        eprintln!("PostgreSQL policy: {sql} -> {code}");
        // The role sees only its granted columns, so discovery does not list
        // `email`; the agent's guard still knows `*` covers it.
        assert_eq!(code, "query_rejected", "{sql}");
        let r = out["results"][i].to_string();
        assert!(!r.contains("@example.test") && !r.contains("tok-canary"), "{sql}: {r}");
    }
}

// ---------------------------------------------------------------------------
// 5. The attack corpus.

/// Canaries named after what the attacks touch, owned by the superuser; the
/// read-only role may read them all and write none.
const CANARIES: &str = "
    CREATE SCHEMA app;
    CREATE SCHEMA hr;
    CREATE TABLE users (id int PRIMARY KEY, name text, role text);
    INSERT INTO users SELECT i, 'person ' || i, 'member' FROM generate_series(1, 40) i;
    CREATE TABLE t (id int PRIMARY KEY, created_at date);
    INSERT INTO t SELECT i, DATE '2021-06-01' + i FROM generate_series(1, 60) i;
    CREATE TABLE s (id int PRIMARY KEY);
    INSERT INTO s SELECT generate_series(1, 12);
    CREATE TABLE audit (msg text);
    INSERT INTO audit VALUES ('canary');
    CREATE TABLE accounts (id int PRIMARY KEY, balance numeric);
    INSERT INTO accounts SELECT i, i * 7 FROM generate_series(1, 15) i;
    CREATE TABLE orders (id bigserial PRIMARY KEY, note text);
    INSERT INTO orders (note) SELECT 'note ' || i FROM generate_series(1, 25) i;
    CREATE TABLE big (id int);
    INSERT INTO big SELECT generate_series(1, 500);
    CREATE TABLE hr.salaries (id int, amount numeric);
    INSERT INTO hr.salaries VALUES (1, 91000), (2, 87000);
    CREATE SEQUENCE invoice_seq;
    CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t;
    CREATE PROCEDURE app.purge_old_rows() LANGUAGE sql AS 'DELETE FROM t';
";

/// What an attack could change: the relations, every table's rows (count and
/// digest), sequences, routines, large objects, advisory locks held in this
/// database, table grants, and the settings of the database and of `reader`.
async fn fingerprint(client: &tokio_postgres::Client, reader: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let relations = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' \
             ORDER BY 1",
            &[],
        )
        .await
        .expect("listing relations");
    let relations: Vec<(String, String)> = relations.iter().map(|r| (r.get(0), r.get(1))).collect();
    out.insert("relations".to_owned(), format!("{relations:?}"));
    for (name, kind) in &relations {
        let sql = match kind.as_str() {
            "r" | "m" => format!(
                "SELECT count(*) || '/' || coalesce(md5(string_agg(r::text, ';' ORDER BY r::text)), '-') \
                 FROM {name} r"
            ),
            "S" => format!("SELECT last_value || '/' || is_called FROM {name}"),
            _ => continue,
        };
        let row = client.query_one(&sql, &[]).await.expect("digesting a relation");
        out.insert(name.clone(), row.get(0));
    }
    for (key, sql) in [
        (
            "routines",
            "SELECT coalesce(string_agg(p.proname || ':' || md5(p.prosrc), ',' ORDER BY p.proname), '') \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'",
        ),
        ("large_objects", "SELECT count(*)::text FROM pg_largeobject_metadata"),
        (
            "advisory_locks",
            "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ),
        (
            "grants",
            "SELECT coalesce(string_agg(c.relname || '=' || coalesce(c.relacl::text, ''), ';' ORDER BY c.relname), '') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'app', 'hr')",
        ),
    ] {
        let row = client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{key}: {e}"));
        out.insert(key.to_owned(), row.get(0));
    }
    // Settings of this database, or of the role the attacks ran as.
    let row = client
        .query_one(
            "SELECT coalesce(string_agg(array_to_string(setconfig, ','), ';' \
                 ORDER BY setrole, setdatabase), '') \
             FROM pg_db_role_setting \
             WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                OR setrole = (SELECT oid FROM pg_roles WHERE rolname = $1)",
            &[&reader],
        )
        .await
        .expect("reading settings");
    out.insert("settings".to_owned(), row.get(0));
    out
}

/// Every PostgreSQL attack of `testdata/security/attacks.jsonl`, through
/// `run_sql` as a read-only role in one client session: each is refused,
/// and the canaries are unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_of_the_corpus_is_refused_and_changes_nothing() {
    let db = ReadableDb::create("mcp_attacks").await;
    let reader = &db.reader.name;
    let admin = db.db.client().await;
    admin
        .batch_execute(&format!(
            "{CANARIES}
             GRANT USAGE ON SCHEMA public, app, hr TO \"{reader}\";
             GRANT SELECT ON ALL TABLES IN SCHEMA public, hr TO \"{reader}\";
             GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO \"{reader}\";"
        ))
        .await
        .expect("creating the canaries");
    let before = fingerprint(&admin, reader).await;

    let attacks: Vec<(String, String)> = testdata_jsonl_lines("security/attacks.jsonl")
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).expect("an attack is JSON"))
        .filter(|a| a["dialect"] == "postgres")
        .map(|a| {
            (
                a["id"].as_str().expect("an id").to_owned(),
                a["sql"].as_str().expect("sql").to_owned(),
            )
        })
        .collect();
    assert!(attacks.len() >= 50, "only {} PostgreSQL attacks in the corpus", attacks.len());
    let mut calls: Vec<Value> =
        attacks.iter().map(|(_, sql)| call("run_sql", json!({ "sql": sql }))).collect();
    // Still serving after all of them, and the canaries are readable.
    calls.push(call("run_sql", json!({ "sql": "SELECT count(*) AS n FROM users" })));
    let started = Instant::now();
    let out = client(&plan(&db.reader_url(), &[], &[], &calls)).await;
    eprintln!("{} attacks through run_sql in {:?}", attacks.len(), started.elapsed());

    let mut failures = Vec::new();
    for (i, (id, sql)) in attacks.iter().enumerate() {
        let r = &out["results"][i];
        if r.get("exception").is_some() || r["is_error"] != true {
            failures.push(format!("{id}: not refused: {sql}\n    -> {r}"));
        } else if r["structured"]["code"] != "query_rejected" {
            failures.push(format!(
                "{id}: refused as {} (not by the guard): {r}",
                r["structured"]["code"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} attacks:\n{}",
        failures.len(),
        attacks.len(),
        failures.join("\n")
    );
    assert_eq!(ok(&out, attacks.len(), "count after the attacks")["rows"], json!([[40]]));

    let after = fingerprint(&admin, reader).await;
    for (key, value) in &before {
        assert_eq!(after.get(key), Some(value), "{key} changed");
    }
    assert_eq!(after.len(), before.len(), "{after:?}");
    let reader_attributes = admin
        .query_one(
            "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls FROM pg_roles WHERE rolname = $1",
            &[reader],
        )
        .await
        .expect("the reader's attributes");
    assert!(!reader_attributes.get::<_, bool>(0), "the read-only role gained attributes");
}
