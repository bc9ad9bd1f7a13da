//! `/mcp`, the remote MCP endpoint, end to end: the official Python SDK
//! (`custard_testkit::mcp_client`) connects over Streamable HTTP with a
//! personal access token, against a real server and real agents.
//!
//! - the protocol and every tool, good and bad arguments, the history
//!   (source `mcp`) and the `/metrics` counters;
//! - who is let in: only a live personal access token, and no foreign
//!   browser origin;
//! - tenants and roles: another organisation's token reaches nothing of
//!   A's; a member's token works over MCP but not for the REST admin actions;
//! - the attack corpus over `run_sql` on PostgreSQL (the agent's role owns
//!   canary tables): every attack refused, the canaries unchanged;
//! - the legit corpus and the evaluation set's reference queries over
//!   `run_sql`: the same columns and rows as the same SQL run directly
//!   through the same guard and the PostgreSQL executor.

use std::collections::{BTreeMap, BTreeSet};

use custard_core::{
    DiscoverOptions, ExecErrorCode, Executor, Guard, PostgresExecutor, QueryResult, RunLimits,
};
use custard_server::store::{NewPersonalToken, OrgId, SqliteStore, Store, UserId};
use custard_testkit::{
    DEFOG_DATABASES, ReadableDb, connect, defog_database, mcp_client, test_database_url,
    testdata_dir, testdata_jsonl_lines, url_with_user,
};

use super::*;

/// How long one run of the Python client may take.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);
/// The bearer token `/metrics` is scraped with.
const METRICS_TOKEN: &str = "metrics-scraper-secret";
/// The rows an answer carries (the server's guard caps every query at this).
const ANSWER_ROWS: u64 = 1000;
/// The four tools, by name.
const TOOLS: [&str; 4] = ["ask", "get_schema", "list_connections", "run_sql"];

// ---------------------------------------------------------------------------
// Helpers

/// A server like [`platform`]'s, except that its public URL is its own
/// loopback address (so its own browser origin is `http://{addr}`), the
/// question limit per minute is high enough for the corpora, and `/metrics`
/// is on with [`METRICS_TOKEN`].
async fn mcp_platform() -> Platform {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SmtpSink::start().await;
    let smtp = sink.url();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let public_url = format!("http://{addr}");
    let args = [
        "custard-server",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--smtp-url",
        &smtp,
        "--public-url",
        &public_url,
        "--questions-per-minute",
        "100000",
        "--metrics-token",
        METRICS_TOKEN,
    ];
    let config = ServerConfig::parse_from(args);
    let limits = Limits { per_ip: 1000, per_account: 1000, replenish: Duration::from_millis(1) };
    let state = AppState::open_with_limits(config, limits).await.expect("state");
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    Platform { app: app(state.clone()), state, addr, sink, stop: CancellationToken::new(), dir }
}

/// A personal access token of the session's user: (id, secret).
async fn pat(p: &Platform, session: &str, name: &str) -> (String, String) {
    let body = json!({"name": name});
    let created = p.ok(StatusCode::CREATED, "POST", "/api/v1/tokens", session, Some(body)).await;
    let secret = created["token"].as_str().expect("the secret").to_owned();
    assert!(secret.starts_with("custard_pat_"), "{created}");
    (created["id"].as_str().expect("id").to_owned(), secret)
}

fn mcp_url(p: &Platform) -> String {
    format!("http://{}/mcp", p.addr)
}

fn call(tool: &str, arguments: Value) -> Value {
    json!({"tool": tool, "arguments": arguments})
}

/// Runs the Python client with `secret` as its bearer token: it initializes,
/// lists the tools and makes `calls` in order.
async fn mcp(p: &Platform, secret: &str, calls: &[Value]) -> Value {
    let plan = json!({
        "transport": "http",
        "url": mcp_url(p),
        "headers": {"Authorization": format!("Bearer {secret}")},
        "calls": calls,
    });
    let out = mcp_client::run(&plan, CLIENT_LIMIT).await;
    let results = out["results"].as_array().map_or(0, Vec::len);
    assert_eq!(results, calls.len(), "one result per call: {out}");
    out
}

/// Result `i` of a client run.
fn result(out: &Value, i: usize) -> &Value {
    let r = &out["results"][i];
    assert!(r.get("exception").is_none(), "call {i} raised in the client: {r}");
    r
}

/// The structured content of result `i`, which must be a success.
fn ok_content(out: &Value, i: usize) -> &Value {
    let r = result(out, i);
    assert_eq!(r["is_error"], json!(false), "call {i} failed: {r}");
    assert!(r["structured"].is_object(), "call {i} has no structured content: {r}");
    assert!(r["text"].as_str().is_some_and(|t| !t.is_empty()), "call {i} has no text: {r}");
    &r["structured"]
}

/// The error `{code, message}` of result `i`, which must be a tool error.
fn error_of(out: &Value, i: usize) -> (String, String) {
    let r = result(out, i);
    assert_eq!(r["is_error"], json!(true), "call {i} succeeded: {r}");
    let structured = &r["structured"];
    let keys: BTreeSet<&str> =
        structured.as_object().expect("structured error").keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["code", "message"]), "call {i}: {r}");
    let code = structured["code"].as_str().expect("code").to_owned();
    let message = structured["message"].as_str().expect("message").to_owned();
    assert!(!message.is_empty(), "call {i}: {r}");
    assert!(r["text"].as_str().is_some_and(|t| t.starts_with(&code)), "call {i}: {r}");
    (code, message)
}

/// The tool and outcome (`ok` or the error code) of each call, counted.
fn outcomes(calls: &[Value], out: &Value) -> BTreeMap<(String, String), u64> {
    let mut counted = BTreeMap::new();
    for (i, c) in calls.iter().enumerate() {
        let r = result(out, i);
        let outcome = if r["is_error"] == json!(true) {
            r["structured"]["code"].as_str().expect("code").to_owned()
        } else {
            "ok".to_owned()
        };
        let tool = c["tool"].as_str().expect("tool").to_owned();
        *counted.entry((tool, outcome)).or_insert(0) += 1;
    }
    counted
}

/// The `custard_mcp_tool_calls_total` series scraped from `/metrics`.
async fn tool_call_metrics(p: &Platform) -> BTreeMap<(String, String), u64> {
    let request = Request::builder()
        .uri("/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {METRICS_TOKEN}"))
        .body(Body::empty())
        .expect("request");
    let response = p.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20).await.expect("body");
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
    let label = |labels: &str, name: &str| -> String {
        let start = labels.find(&format!("{name}=\"")).expect("the label") + name.len() + 2;
        labels[start..].split('"').next().expect("closing quote").to_owned()
    };
    let mut series = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("custard_mcp_tool_calls_total{")) {
        let (labels, value) = line.rsplit_once(' ').expect("a value");
        let value: f64 = value.parse().expect("a number");
        series.insert((label(labels, "tool"), label(labels, "outcome")), value as u64);
    }
    series
}

/// The organisation's history as the API lists it (newest first).
async fn history(p: &Platform, session: &str) -> Vec<Value> {
    let reply = p.ok(StatusCode::OK, "GET", "/api/v1/queries?limit=200", session, None).await;
    reply["queries"].as_array().expect("queries").clone()
}

/// A raw `initialize` POST to `/mcp` over TCP: the status and the
/// `WWW-Authenticate` header.
async fn raw_initialize(
    p: &Platform,
    bearer: Option<&str>,
    origin: Option<&str>,
) -> (u16, Option<String>) {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw-check", "version": "0"}},
    });
    let mut request = reqwest::Client::new()
        .post(mcp_url(p))
        .header("Accept", "application/json, text/event-stream")
        .json(&body)
        .timeout(PATIENCE);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    let response = request.send().await.expect("the server answers");
    let challenge =
        response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (response.status().as_u16(), challenge)
}

/// Runs the Python client with `headers`; it must fail to connect. Returns
/// its failure (the client's stderr).
async fn client_refused(p: &Platform, headers: Value) -> String {
    let plan = json!({"transport": "http", "url": mcp_url(p), "headers": headers, "calls": []});
    let joined = tokio::spawn(async move { mcp_client::run(&plan, CLIENT_LIMIT).await }).await;
    let panic = match joined {
        Ok(out) => panic!("the MCP client was let in: {out}"),
        Err(e) => e.into_panic(),
    };
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// A new PostgreSQL connection of the session's organisation: (id, API key).
async fn postgres_connection(p: &Platform, session: &str, name: &str) -> (String, String) {
    let body = json!({"name": name, "db_type": "postgres"});
    let reply = p.ok(StatusCode::CREATED, "POST", "/api/v1/connections", session, Some(body)).await;
    (
        reply["id"].as_str().expect("id").to_owned(),
        reply["api_key"].as_str().expect("key").to_owned(),
    )
}

/// Columns as the tools give them: `[{name, type}]`.
fn columns_json(result: &QueryResult) -> Value {
    result.columns.iter().map(|c| json!({"name": c.name, "type": c.type_name})).collect()
}

/// Whether `sql`'s result depends on the clock.
fn reads_the_clock(sql: &str) -> bool {
    let sql = sql.to_ascii_lowercase();
    [
        "now()",
        "current_date",
        "current_time",
        "localtime",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "timeofday",
    ]
    .iter()
    .any(|f| sql.contains(f))
}

/// One query sent over MCP and run directly.
struct Reference {
    /// The corpus's id for it.
    id: String,
    /// The SQL as sent.
    sql: String,
    /// The SQL the guard printed back (what `run_sql` reports as `sql`).
    checked: String,
    /// The executor's result.
    direct: Result<QueryResult, ExecErrorCode>,
}

/// Runs `sql` as the server would, directly: through a guard built like the
/// connection's pipeline's (the database's schema, the answer row cap),
/// then through `executor` with the default limits.
async fn run_directly(
    guard: &Guard,
    executor: &PostgresExecutor,
    id: &str,
    sql: &str,
) -> Reference {
    // The server trims the SQL before its guard sees it.
    let checked =
        guard.check(sql.trim()).unwrap_or_else(|r| panic!("the guard refused {id}: {r:?}"));
    let direct = executor.query(&checked, &RunLimits::default()).await.map_err(|e| e.code);
    Reference {
        id: id.to_owned(),
        sql: sql.to_owned(),
        checked: checked.query().to_owned(),
        direct,
    }
}

/// The guard a connection's pipeline builds for the database `executor` reads.
async fn guard_for(executor: &PostgresExecutor) -> Guard {
    let schema = executor.discover(&DiscoverOptions::default()).await.expect("discover");
    Guard::builder(custard_core::Dialect::Postgres)
        .max_rows(ANSWER_ROWS)
        .schema(schema)
        .build()
        .expect("guard")
}

/// Compares each MCP result with its direct run; returns the ids compared by
/// columns and row counts only (the clock's) and those that failed both ways.
fn compare(references: &[Reference], out: &Value) -> (Vec<String>, Vec<String>) {
    let mut clock = Vec::new();
    let mut failed = Vec::new();
    let mut wrong = Vec::new();
    for (i, r) in references.iter().enumerate() {
        let got = result(out, i);
        match &r.direct {
            Err(code) => {
                let is_error = got["is_error"] == json!(true);
                let mcp_code = got["structured"]["code"].as_str().unwrap_or("<none>");
                if !is_error || mcp_code != code.as_str() {
                    wrong.push(format!(
                        "{}: failed directly ({code}) but over MCP gave {got}\n  {}",
                        r.id, r.sql
                    ));
                }
                failed.push(r.id.clone());
            }
            Ok(direct) => {
                if got["is_error"] != json!(false) {
                    wrong.push(format!("{}: {}\n  {}", r.id, got["text"], r.sql));
                    continue;
                }
                let s = &got["structured"];
                let rows = s["rows"].as_array().map_or(0, Vec::len);
                let mut problems = Vec::new();
                if s["sql"] != json!(r.checked) {
                    problems.push(format!("sql {} vs {:?}", s["sql"], r.checked));
                }
                if s["columns"] != columns_json(direct) {
                    problems.push(format!("columns {} vs {}", s["columns"], columns_json(direct)));
                }
                if s["row_count"] != json!(rows) || rows != direct.rows.len() {
                    problems.push(format!(
                        "{rows} rows (row_count {}) vs {}",
                        s["row_count"],
                        direct.rows.len()
                    ));
                }
                if s["truncated"] != json!(direct.summary.truncated) {
                    problems.push(format!(
                        "truncated {} vs {}",
                        s["truncated"], direct.summary.truncated
                    ));
                }
                if reads_the_clock(&r.sql) {
                    clock.push(r.id.clone());
                } else if s["rows"] != json!(direct.rows) {
                    problems.push(format!("rows {} vs {}", s["rows"], json!(direct.rows)));
                }
                if !problems.is_empty() {
                    wrong.push(format!("{}: {}\n  {}", r.id, problems.join("; "), r.sql));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} differ from the direct run:\n{}", wrong.len(), wrong.join("\n"));
    (clock, failed)
}

// ---------------------------------------------------------------------------
// 1. The protocol and every tool

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_serves_four_tools_that_answer_like_the_api_and_are_recorded_and_counted() {
    bounded(async {
        let started = Instant::now();
        let p = mcp_platform().await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        // Twelve customers: ids 1..=12, cities London, Berlin, Paris in turn.
        p.shop_agent(&a, &conn, &key, 12).await;
        let (_, secret) = pat(&p, &a, "assistant").await;

        let rows_sql = "SELECT id, name, city FROM customers WHERE id <= 3 ORDER BY id";
        let by_city = "SELECT city, count(*) AS n FROM customers GROUP BY city ORDER BY city";
        let cross = "SELECT x.id FROM customers x CROSS JOIN customers y CROSS JOIN customers z";
        let delete = "DELETE FROM customers";
        let calls = [
            // Good arguments.
            call("list_connections", json!({})),
            call("get_schema", json!({"connection_id": conn})),
            call("get_schema", json!({"connection_id": conn, "search": "customers by city"})),
            call("run_sql", json!({"connection_id": conn, "sql": rows_sql})),
            call("run_sql", json!({"connection_id": conn, "sql": by_city})),
            call("run_sql", json!({"connection_id": conn, "sql": cross})),
            call(
                "ask",
                json!({"connection_id": conn, "question": "How many customers are there?"}),
            ),
            // Bad arguments: (index 7 on) each with the code it must get.
            call("list_connections", json!({"connection_id": conn})),
            call("get_schema", json!({})),
            call("get_schema", json!({"connection_id": 42})),
            call("get_schema", json!({"connection_id": "no-such-connection"})),
            call("get_schema", json!({"connection_id": conn, "search": "x".repeat(1001)})),
            call("run_sql", json!({"connection_id": conn})),
            call("run_sql", json!({"connection_id": conn, "sql": ""})),
            call("run_sql", json!({"connection_id": conn, "sql": "  \n "})),
            call("run_sql", json!({"connection_id": conn, "sql": "SELECT 1", "limit": 5})),
            call("run_sql", json!({"connection_id": conn, "sql": ["SELECT 1"]})),
            call("run_sql", json!({"connection_id": "no-such-connection", "sql": "SELECT 1"})),
            call("run_sql", json!({"connection_id": conn, "sql": delete})),
            call("ask", json!({"connection_id": conn})),
            call("ask", json!({"connection_id": conn, "question": 7})),
            call("ask", json!({"connection_id": "no-such-connection", "question": HOW_MANY})),
            call(
                "ask",
                json!({"connection_id": conn, "question": HOW_MANY, "conversation_id": "not ok!"}),
            ),
        ];
        let out = mcp(&p, &secret, &calls).await;

        // The server and its tools.
        assert_eq!(out["server"]["name"], json!("custard"), "{}", out["server"]);
        assert!(out["server"]["protocol_version"].as_str().is_some_and(|v| !v.is_empty()));
        let tools = out["tools"].as_array().expect("tools");
        let names: BTreeSet<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(names, BTreeSet::from(TOOLS), "exactly the four tools");
        assert_eq!(tools.len(), 4);
        for tool in tools {
            let name = tool["name"].as_str().expect("name");
            assert!(tool["description"].as_str().is_some_and(|d| d.len() > 20), "{tool}");
            for schema in ["input_schema", "output_schema"] {
                assert_eq!(tool[schema]["type"], json!("object"), "{name} {schema}: {tool}");
            }
            let annotations = &tool["annotations"];
            let read_only = annotations.get("read_only_hint").or(annotations.get("readOnlyHint"));
            assert_eq!(read_only, Some(&json!(true)), "{name}: {tool}");
            let required: BTreeSet<&str> = tool["input_schema"]["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let want: BTreeSet<&str> = match name {
                "list_connections" => BTreeSet::new(),
                "get_schema" => BTreeSet::from(["connection_id"]),
                "ask" => BTreeSet::from(["connection_id", "question"]),
                _ => BTreeSet::from(["connection_id", "sql"]),
            };
            assert_eq!(required, want, "{name}'s required arguments");
        }

        // list_connections.
        assert_eq!(
            ok_content(&out, 0),
            &json!({"connections": [{"id": conn, "name": "Shop", "db_type": "sqlite",
                                     "status": "online", "table_count": 1}]})
        );
        // get_schema, whole and searched.
        for i in [1, 2] {
            let schema = ok_content(&out, i);
            assert_eq!(
                (&schema["dialect"], &schema["total_tables"], &schema["complete"]),
                (&json!("sqlite"), &json!(1), &json!(true)),
                "{schema}"
            );
            let table = &schema["tables"][0];
            assert_eq!((&table["name"], &table["kind"]), (&json!("customers"), &json!("table")));
            let columns: Vec<(&str, &str)> = table["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .map(|c| (c["name"].as_str().unwrap_or("?"), c["type"].as_str().unwrap_or("?")))
                .collect();
            assert_eq!(columns, [("id", "INTEGER"), ("name", "TEXT"), ("city", "TEXT")]);
            assert_eq!(table["primary_key"], json!(["id"]), "{table}");
        }
        // run_sql: columns, rows in column order, counts.
        let rows = ok_content(&out, 3);
        let names: Vec<&Value> =
            rows["columns"].as_array().expect("columns").iter().map(|c| &c["name"]).collect();
        assert_eq!(names, [&json!("id"), &json!("name"), &json!("city")], "{rows}");
        assert!(rows["columns"].as_array().expect("columns").iter().all(|c| c["type"].is_string()));
        assert_eq!(
            rows["rows"],
            json!([
                [1, "Customer 1", "London"],
                [2, "Customer 2", "Berlin"],
                [3, "Customer 3", "Paris"]
            ])
        );
        assert_eq!((&rows["row_count"], &rows["truncated"]), (&json!(3), &json!(false)));
        assert!(rows["sql"].as_str().is_some_and(|s| s.contains("customers")), "{rows}");
        assert!(result(&out, 3)["text"].as_str().is_some_and(|t| t.contains("Customer 2")));
        let grouped = ok_content(&out, 4);
        assert_eq!(grouped["rows"], json!([["Berlin", 4], ["London", 4], ["Paris", 4]]));
        // 12³ rows: cut at the answer's cap, and marked so.
        let cut = ok_content(&out, 5);
        assert_eq!((&cut["row_count"], &cut["truncated"]), (&json!(ANSWER_ROWS), &json!(true)));
        assert_eq!(cut["rows"].as_array().map(Vec::len), Some(ANSWER_ROWS as usize));
        // ask, with the offline engine.
        let answer = ok_content(&out, 6);
        assert_eq!(answer["rows"], json!([[12]]), "{answer}");
        assert_eq!((&answer["engine"], &answer["row_count"]), (&json!("offline"), &json!(1)));
        assert!(answer["sql"].as_str().is_some_and(|s| s.to_lowercase().contains("count")));
        assert!(answer["answer"].as_str().is_some_and(|a| a.contains("12")), "{answer}");
        let conversation = answer["conversation_id"].as_str().expect("a conversation").to_owned();

        // Bad arguments: the REST API's codes, naming what was wrong.
        let expected = [
            (7, "validation_error", "unknown field `connection_id`"),
            (8, "validation_error", "missing field `connection_id`"),
            (9, "validation_error", "invalid type"),
            (10, "not_found", ""),
            (11, "validation_error", "search"),
            (12, "validation_error", "missing field `sql`"),
            (13, "validation_error", "empty"),
            (14, "validation_error", "empty"),
            (15, "validation_error", "unknown field `limit`"),
            (16, "validation_error", "invalid type"),
            (17, "not_found", ""),
            (18, "query_rejected", "guard"),
            (19, "validation_error", "missing field `question`"),
            (20, "validation_error", "invalid type"),
            (21, "not_found", ""),
            (22, "validation_error", "conversation_id"),
        ];
        assert_eq!(expected.len(), calls.len() - 7);
        for (i, want_code, want_text) in expected {
            let (code, message) = error_of(&out, i);
            assert_eq!(code, want_code, "call {i} ({}): {message}", calls[i]);
            assert!(message.contains(want_text), "call {i}: {message:?} lacks {want_text:?}");
        }

        // A follow-up in the same conversation keeps it.
        let follow_up = [call(
            "ask",
            json!({"connection_id": conn, "question": "How many customers are there in Paris?",
                   "conversation_id": conversation}),
        )];
        let out2 = mcp(&p, &secret, &follow_up).await;
        let answer2 = ok_content(&out2, 0);
        assert_eq!(answer2["conversation_id"], json!(conversation), "{answer2}");
        assert_eq!(answer2["rows"], json!([[4]]), "{answer2}");

        // The history: what ran (or was refused) is recorded with source `mcp`;
        // bad arguments and unknown connections are not.
        let recorded = history(&p, &a).await;
        let got: Vec<(&str, &str, &str)> = recorded
            .iter()
            .map(|q| {
                let text = |k: &str| q[k].as_str().unwrap_or("?");
                (text("question"), text("outcome"), text("source"))
            })
            .collect();
        let want = [
            ("How many customers are there in Paris?", "ok", "mcp"),
            (delete, "query_rejected", "mcp"),
            ("How many customers are there?", "ok", "mcp"),
            (cross, "ok", "mcp"),
            (by_city, "ok", "mcp"),
            (rows_sql, "ok", "mcp"),
        ];
        assert_eq!(got, want, "the history, newest first");
        let ids: BTreeSet<&str> = recorded.iter().filter_map(|q| q["id"].as_str()).collect();
        for (o, i) in [(&out, 3), (&out, 4), (&out, 5), (&out, 6), (&out2, 0)] {
            let id = o["results"][i]["structured"]["history_id"].as_str().expect("history id");
            assert!(ids.contains(id), "result {i}'s history id {id} is not in the history");
        }
        assert_eq!(recorded[0]["conversation_id"], json!(conversation));

        // /metrics counts every call by tool and outcome, for its scraper only.
        let mut want = outcomes(&calls, &out);
        for (key, n) in outcomes(&follow_up, &out2) {
            *want.entry(key).or_insert(0) += n;
        }
        assert_eq!(tool_call_metrics(&p).await, want);
        let (status, _) = p.call("GET", "/metrics", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "/metrics without its token");
        let (status, _) = p.call("GET", "/metrics", Some(&secret), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "/metrics with a personal token");
        eprintln!("protocol and tools: {:?}", started.elapsed());
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. Who is let in

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_takes_only_a_live_personal_token_and_no_foreign_origin() {
    bounded(async {
        let started = Instant::now();
        let p = mcp_platform().await;
        let a = p.user("a@example.com", "Org A").await;
        let (token_id, secret) = pat(&p, &a, "assistant").await;

        // The good token is let in, by the raw request and by the client.
        assert_eq!(raw_initialize(&p, Some(&secret), None).await.0, 200);
        let out = mcp(&p, &secret, &[call("list_connections", json!({}))]).await;
        assert_eq!(ok_content(&out, 0)["connections"], json!([]));

        // One made in the store directly, expired an hour ago; and its twin,
        // valid for an hour, to show that a stored token is otherwise taken.
        let profile = p.ok(StatusCode::OK, "GET", "/api/v1/auth/profile", &a, None).await;
        let user = UserId::from(profile["user"]["id"].as_str().expect("user id").to_owned());
        let org = OrgId::from(profile["organization_id"].as_str().expect("org id").to_owned());
        let store = SqliteStore::open(&p.dir.path().join("custard.db")).expect("the store");
        let mut stored = Vec::new();
        for (name, hours) in [("expired", -1), ("valid", 1)] {
            let secret = custard_server::auth::new_personal_token();
            let hash = custard_server::auth::hash_secret(&secret);
            let expires_at = Some(chrono::Utc::now() + chrono::TimeDelta::hours(hours));
            let new = NewPersonalToken {
                user_id: &user,
                org_id: &org,
                name,
                token_hash: &hash,
                expires_at,
            };
            store.create_personal_token(new).await.expect("stored");
            stored.push(secret);
        }
        let (expired, valid) = (stored[0].clone(), stored[1].clone());
        assert_eq!(raw_initialize(&p, Some(&valid), None).await.0, 200, "a stored token");

        // Revoked: refused from the very next request on.
        let path = format!("/api/v1/tokens/{token_id}");
        p.ok(StatusCode::NO_CONTENT, "DELETE", &path, &a, None).await;
        let garbage = format!("custard_pat_{}", "0".repeat(43));
        let refused = [
            ("revoked", Some(secret.as_str())),
            ("no token", None),
            ("a session token", Some(a.as_str())),
            ("an unknown token", Some(garbage.as_str())),
            ("a malformed token", Some("custard_pat_nope")),
            ("an expired token", Some(expired.as_str())),
        ];
        for (what, bearer) in refused {
            let (status, challenge) = raw_initialize(&p, bearer, None).await;
            assert_eq!(status, 401, "{what}");
            assert_eq!(challenge.as_deref(), Some("Bearer"), "{what}");
        }
        // The Python client fails to initialize each time (the SDK reports any
        // HTTP error but 404 as "Server returned an error response"). One at
        // a time, to keep the burst of interpreters off the tests beside.
        for (what, bearer) in refused {
            let headers = match bearer {
                Some(b) => json!({"Authorization": format!("Bearer {b}")}),
                None => json!({}),
            };
            let failure = client_refused(&p, headers).await;
            assert!(
                failure.contains("session.initialize()")
                    && failure.contains("MCPError: Server returned an error response"),
                "{what}: the client failed otherwise:\n{failure}"
            );
        }

        // A foreign browser origin is refused even with a good token; the
        // server's own is not.
        let other_port = format!("http://127.0.0.1:{}", p.addr.port().wrapping_add(1).max(1));
        for origin in ["https://evil.example", "null", other_port.as_str()] {
            let (status, _) = raw_initialize(&p, Some(&valid), Some(origin)).await;
            assert_eq!(status, 403, "Origin: {origin}");
        }
        let own = format!("http://{}", p.addr);
        assert_eq!(raw_initialize(&p, Some(&valid), Some(&own)).await.0, 200, "Origin: {own}");
        eprintln!("auth: {:?}", started.elapsed());
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3. Tenants and roles

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_keeps_to_the_tokens_organisation_and_role() {
    bounded(async {
        let started = Instant::now();
        let p = mcp_platform().await;
        let a = p.user("a@example.com", "Org A").await;
        let b = p.user("b@example.com", "Org B").await;
        let (a_conn, a_key) = p.connection(&a, "Shop A").await;
        p.shop_agent(&a, &a_conn, &a_key, 5).await;
        let (b_conn, b_key) = p.connection(&b, "Shop B").await;
        p.shop_agent(&b, &b_conn, &b_key, 2).await;
        let (_, b_secret) = pat(&p, &b, "b's assistant").await;
        let (member_id, member) = p.member_of(&a, "m@example.com").await;
        let (_, m_secret) = pat(&p, &member, "member's assistant").await;

        // B's token: B's connection only; A's id is not found by any tool,
        // and B's own still answers in the same run.
        let calls = [
            call("list_connections", json!({})),
            call("get_schema", json!({"connection_id": a_conn})),
            call("ask", json!({"connection_id": a_conn, "question": HOW_MANY})),
            call(
                "run_sql",
                json!({"connection_id": a_conn, "sql": "SELECT count(*) FROM customers"}),
            ),
            call(
                "run_sql",
                json!({"connection_id": b_conn, "sql": "SELECT count(*) FROM customers"}),
            ),
        ];
        let out = mcp(&p, &b_secret, &calls).await;
        let listed = ok_content(&out, 0)["connections"].as_array().expect("connections").clone();
        let ids: Vec<&str> = listed.iter().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!(ids, [b_conn.as_str()], "B's token lists B's connections only");
        for i in 1..=3 {
            let (code, message) = error_of(&out, i);
            assert_eq!(code, "not_found", "call {i}: {message}");
        }
        assert_eq!(ok_content(&out, 4)["rows"], json!([[2]]));
        assert_eq!(history(&p, &a).await, Vec::<Value>::new(), "nothing in A's history");
        let b_history = history(&p, &b).await;
        assert_eq!(b_history.len(), 1, "only B's own query: {b_history:?}");
        assert_eq!(b_history[0]["connection_id"], json!(b_conn));

        // A member's token: the four tools work on A's connection, as the member.
        let calls = [
            call("list_connections", json!({})),
            call("get_schema", json!({"connection_id": a_conn})),
            call("ask", json!({"connection_id": a_conn, "question": HOW_MANY})),
            call(
                "run_sql",
                json!({"connection_id": a_conn, "sql": "SELECT max(id) FROM customers"}),
            ),
        ];
        let out = mcp(&p, &m_secret, &calls).await;
        let listed = &ok_content(&out, 0)["connections"];
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
        assert_eq!(listed[0]["id"], json!(a_conn));
        assert_eq!(ok_content(&out, 1)["tables"][0]["name"], json!("customers"));
        assert_eq!(ok_content(&out, 2)["rows"], json!([[5]]));
        assert_eq!(ok_content(&out, 3)["rows"], json!([[5]]));
        let a_history = history(&p, &a).await;
        let by: Vec<(&str, &str)> = a_history
            .iter()
            .map(|q| (q["user_id"].as_str().unwrap_or("?"), q["source"].as_str().unwrap_or("?")))
            .collect();
        assert_eq!(by, [(member_id.as_str(), "mcp"), (member_id.as_str(), "mcp")]);

        // ...but the same token may not do what only admins may, on the API.
        let create = json!({"name": "Another", "db_type": "sqlite"});
        let rotate = format!("/api/v1/connections/{a_conn}/rotate-key");
        let one = format!("/api/v1/connections/{a_conn}");
        for (method, path, body) in [
            ("POST", "/api/v1/connections", Some(create)),
            ("POST", rotate.as_str(), None),
            ("DELETE", one.as_str(), None),
        ] {
            let (status, reply) = p.call(method, path, Some(&m_secret), body).await;
            assert_eq!(
                (status, code(&reply)),
                (StatusCode::FORBIDDEN, "forbidden"),
                "{method} {path}: {reply}"
            );
        }
        // Nothing changed: one connection, its agent still serving with its key.
        let listed = p.ok(StatusCode::OK, "GET", "/api/v1/connections", &a, None).await;
        assert_eq!(listed["connections"].as_array().map(Vec::len), Some(1), "{listed}");
        assert_eq!(p.get_connection(&a, &a_conn).await["agents"], json!(1));
        let out = mcp(
            &p,
            &m_secret,
            &[call("run_sql", json!({"connection_id": a_conn, "sql": "SELECT 1 AS one"}))],
        )
        .await;
        assert_eq!(ok_content(&out, 0)["rows"], json!([[1]]));
        eprintln!("tenants and roles: {:?}", started.elapsed());
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4. The attack corpus over run_sql

/// Canaries named after what the attacks touch, created by the agent's own
/// role: it owns them, so only the guard and the read-only envelope stand
/// between an attack and the data.
const CANARIES: &str = "
    CREATE SCHEMA app;
    CREATE SCHEMA hr;
    CREATE TABLE users (id integer PRIMARY KEY, name text NOT NULL, role text NOT NULL);
    INSERT INTO users
        SELECT n, 'canary ' || n, CASE WHEN n % 7 = 0 THEN 'admin' ELSE 'member' END
        FROM generate_series(1, 35) AS n;
    CREATE TABLE t (id integer PRIMARY KEY, created_at date NOT NULL);
    INSERT INTO t SELECT n, DATE '2023-06-01' + n * 3 FROM generate_series(1, 80) AS n;
    CREATE TABLE s (id integer PRIMARY KEY);
    INSERT INTO s SELECT generate_series(1, 12);
    CREATE TABLE audit (msg text NOT NULL);
    INSERT INTO audit VALUES ('canary created'), ('second line');
    CREATE TABLE accounts (id integer PRIMARY KEY, balance numeric NOT NULL);
    INSERT INTO accounts SELECT n, n * 12.5 FROM generate_series(1, 24) AS n;
    CREATE TABLE orders (id bigserial PRIMARY KEY, note text);
    INSERT INTO orders (note) SELECT 'canary order ' || n FROM generate_series(1, 27) AS n;
    CREATE TABLE big (id integer);
    INSERT INTO big SELECT generate_series(1, 1500);
    CREATE TABLE hr.salaries (id integer, amount numeric);
    INSERT INTO hr.salaries VALUES (1, 123456), (2, 654321);
    CREATE SEQUENCE invoice_seq START 500;
    CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n, max(created_at) AS latest FROM t;
    CREATE PROCEDURE app.purge_old_rows() LANGUAGE sql AS 'DELETE FROM t';
    COMMENT ON TABLE users IS 'canary comment';
    ANALYZE;
";

/// What the attacks could change, as text to compare: every relation of the
/// user schemas with its kind, owner, grants and comment; each table's and
/// materialized view's row count and checksum; each sequence's position;
/// the functions and procedures; the large objects; the schemas; the
/// agent's role's attributes and memberships.
async fn canary_state(db: &ReadableDb) -> BTreeMap<String, String> {
    let admin = db.db.client().await;
    let mut state = BTreeMap::new();
    let relations = admin
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text,
                    format('%s %s %s', pg_get_userbyid(c.relowner), c.relacl,
                           obj_description(c.oid, 'pg_class'))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
               AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'
             ORDER BY 1",
            &[],
        )
        .await
        .expect("the relations");
    for row in &relations {
        let (name, kind, about): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let content = match kind.as_str() {
            "r" | "m" => format!(
                "SELECT count(*)::text || ' ' || coalesce(md5(string_agg(r::text, '|' \
                 ORDER BY r::text)), '-') FROM {name} AS r"
            ),
            "S" => format!("SELECT last_value::text || ' ' || is_called::text FROM {name}"),
            _ => String::new(),
        };
        let content: String = if content.is_empty() {
            String::new()
        } else {
            admin.query_one(&content, &[]).await.expect("a checksum").get(0)
        };
        state.insert(name, format!("{kind} | {about} | {content}"));
    }
    for (key, sql) in [
        (
            "functions",
            "SELECT coalesce(string_agg(p.oid::regprocedure::text, ',' ORDER BY 1), '') \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
        ),
        ("large objects", "SELECT count(*)::text FROM pg_largeobject_metadata"),
        ("schemas", "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace"),
    ] {
        let value: String = admin.query_one(sql, &[]).await.expect(key).get(0);
        state.insert(format!("({key})"), value);
    }
    let role: String = admin
        .query_one(
            "SELECT format('%s %s %s %s', r.rolsuper, r.rolcreaterole, r.rolbypassrls,
                    (SELECT string_agg(m.roleid::regrole::text, ',' ORDER BY 1)
                     FROM pg_auth_members m WHERE m.member = r.oid))
             FROM pg_roles r WHERE r.rolname = $1",
            &[&db.reader.name],
        )
        .await
        .expect("the agent's role")
        .get(0);
    state.insert("(the agent's role)".to_owned(), role);
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_run_sql_refuses_every_attack_and_changes_no_canary() {
    bounded(async {
        let started = Instant::now();
        let db = ReadableDb::create("mcp_attacks").await;
        let role = &db.reader.name;
        db.db
            .client()
            .await
            .batch_execute(&format!(
                "ALTER DATABASE \"{name}\" OWNER TO \"{role}\";
                 ALTER SCHEMA public OWNER TO \"{role}\";
                 SET ROLE \"{role}\"; {CANARIES} RESET ROLE;",
                name = db.db.name
            ))
            .await
            .expect("the canaries");
        let before = canary_state(&db).await;
        let users = before["public.users"].rsplit(" | ").next().unwrap_or_default();
        assert!(users.starts_with("35 "), "{before:?}");

        let p = mcp_platform().await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = postgres_connection(&p, &a, "Canaries").await;
        // A plain login role (no superuser): the agent's role check passes.
        p.start_agent(p.agent_config(&conn, &key, &db.reader_url()));
        p.wait_for_schema(&a, &conn).await;
        let (_, secret) = pat(&p, &a, "assistant").await;

        let attacks: Vec<Value> = testdata_jsonl_lines("security/attacks.jsonl")
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("an attack"))
            .filter(|a| a["dialect"] == json!("postgres"))
            .collect();
        assert!(attacks.len() > 50, "the corpus: {} attacks", attacks.len());
        let mut calls: Vec<Value> = attacks
            .iter()
            .map(|attack| call("run_sql", json!({"connection_id": conn, "sql": attack["sql"]})))
            .collect();
        // Last, a read the role may do: the agent served every attack.
        calls.push(call(
            "run_sql",
            json!({"connection_id": conn, "sql": "SELECT count(*) FROM users"}),
        ));
        let out = mcp(&p, &secret, &calls).await;

        let mut codes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, attack) in attacks.iter().enumerate() {
            let id = attack["id"].as_str().expect("id");
            let r = result(&out, i);
            assert_eq!(r["is_error"], json!(true), "{id} was answered: {r}");
            let (code, _) = error_of(&out, i);
            codes.entry(code).or_default().push(id.to_owned());
        }
        assert_eq!(ok_content(&out, attacks.len())["rows"], json!([[35]]));
        let refusals: BTreeSet<&str> = codes.keys().map(String::as_str).collect();
        assert!(
            refusals.is_subset(&BTreeSet::from(["query_rejected"])),
            "attacks refused otherwise than by the guard: {codes:#?}"
        );
        eprintln!(
            "attack corpus over MCP: {}",
            codes
                .iter()
                .map(|(c, ids)| format!("{c} x{}", ids.len()))
                .collect::<Vec<_>>()
                .join(", ")
        );

        let after = canary_state(&db).await;
        assert_eq!(before, after, "the canaries changed");
        // Every attack is in the history, refused, from MCP.
        let recorded = history(&p, &a).await;
        let refused = recorded
            .iter()
            .filter(|q| q["source"] == json!("mcp") && q["outcome"] == json!("query_rejected"))
            .count();
        assert_eq!(refused, attacks.len(), "each attack recorded as refused");
        eprintln!("attack corpus: {:?}", started.elapsed());
    })
    .await;
}

// ---------------------------------------------------------------------------
// 5. The legit corpus and the evaluation set's reference queries

/// Legit entries no PostgreSQL schema can run, and why: the guard accepts
/// them (they are in the corpus for that), the database refuses them, over
/// MCP as directly.
const LEGIT_UNRUNNABLE: &[(&str, &str)] = &[
    (
        "legit-18",
        "`x::date` on the `t.x` that other entries average and round as a number: \
         PostgreSQL has no numeric-to-date cast",
    ),
    (
        "legit-26",
        "`a LEFT JOIN b ... FULL OUTER JOIN c USING (id)`: the left side has both a.id and \
         b.id, so PostgreSQL finds `id` ambiguous",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_run_sql_answers_the_legit_corpus_like_a_direct_run() {
    bounded(async {
        let started = Instant::now();
        let db = ReadableDb::create("mcp_legit").await;
        let fixture = testdata_dir().join("security/legit_schema.sql");
        let schema = std::fs::read_to_string(&fixture).expect("the legit schema");
        db.db
            .client()
            .await
            .batch_execute(&format!(
                "{schema}
                 GRANT USAGE ON SCHEMA public TO \"{role}\";
                 GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{role}\";",
                role = db.reader.name
            ))
            .await
            .expect("loading the legit schema");

        let p = mcp_platform().await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = postgres_connection(&p, &a, "Legit").await;
        p.start_agent(p.agent_config(&conn, &key, &db.reader_url()));
        p.wait_for_schema(&a, &conn).await;
        let (_, secret) = pat(&p, &a, "assistant").await;

        let executor = PostgresExecutor::connect(&db.reader_url()).await.expect("connect");
        let guard = guard_for(&executor).await;
        let mut references = Vec::new();
        for line in testdata_jsonl_lines("security/legit.jsonl") {
            let entry: Value = serde_json::from_str(&line).expect("an entry");
            if entry["dialect"] != json!("postgres") {
                continue;
            }
            let (id, sql) =
                (entry["id"].as_str().expect("id"), entry["sql"].as_str().expect("sql"));
            references.push(run_directly(&guard, &executor, id, sql).await);
        }
        assert!(references.len() > 30, "{} entries", references.len());
        let calls: Vec<Value> = references
            .iter()
            .map(|r| call("run_sql", json!({"connection_id": conn, "sql": r.sql})))
            .collect();
        let out = mcp(&p, &secret, &calls).await;
        let (clock, failed) = compare(&references, &out);
        let unrunnable: Vec<&str> = LEGIT_UNRUNNABLE.iter().map(|(id, _)| *id).collect();
        assert_eq!(failed, unrunnable, "the entries the database refuses (over MCP as directly)");
        // The fixture gives every other entry rows to compare.
        let empty: Vec<&str> = references
            .iter()
            .filter(|r| r.direct.as_ref().is_ok_and(|d| d.rows.is_empty()))
            .map(|r| r.id.as_str())
            .collect();
        eprintln!(
            "legit corpus over MCP: {} entries, {} compared by columns and row counts only \
             (they read the clock: {clock:?}), {} refused by the database ({failed:?}), \
             {} with no rows ({empty:?}), {:?}",
            references.len(),
            clock.len(),
            failed.len(),
            empty.len(),
            started.elapsed()
        );
    })
    .await;
}

/// A plain login role that reads every table (`pg_read_all_data`), for the
/// agents of the shared evaluation databases; dropped when dropped (it owns
/// nothing and holds no grant of its own).
struct EvalReader {
    name: String,
}

impl EvalReader {
    async fn create() -> EvalReader {
        let name = format!("custard_t_mcp_eval_{}", std::process::id());
        connect(&test_database_url())
            .await
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS \"{name}\";
                 CREATE ROLE \"{name}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 NOBYPASSRLS;
                 GRANT pg_read_all_data TO \"{name}\";"
            ))
            .await
            .expect("creating the evaluation reader");
        EvalReader { name }
    }
}

impl Drop for EvalReader {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A thread with its own runtime can block, inside a runtime or not.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                let admin = connect(&test_database_url()).await;
                let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\"")).await;
            });
        })
        .join();
    }
}

/// The evaluation set's reference queries of `db`, each with its id
/// (`question#n`).
fn gold_queries(db: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in testdata_jsonl_lines("eval/defog/questions.jsonl") {
        let q: Value = serde_json::from_str(&line).expect("a question");
        if q["db"] != json!(db) {
            continue;
        }
        for (i, sql) in q["gold"].as_array().expect("gold").iter().enumerate() {
            let id = format!("{}#{i}", q["id"].as_str().expect("id"));
            out.push((id, sql.as_str().expect("gold sql").to_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mcp_run_sql_answers_every_reference_query_like_a_direct_run() {
    // Loading the evaluation databases the first time takes its own while.
    let load = async {
        let mut urls = Vec::new();
        for db in DEFOG_DATABASES {
            urls.push(defog_database(db).await);
        }
        urls
    };
    let urls = tokio::time::timeout(Duration::from_secs(300), load)
        .await
        .expect("the evaluation databases loaded within 5 minutes");
    bounded(async {
        let started = Instant::now();
        let reader = EvalReader::create().await;
        let p = mcp_platform().await;
        let a = p.user("a@example.com", "Org A").await;
        let mut connections = Vec::new();
        for (db, url) in DEFOG_DATABASES.iter().zip(&urls) {
            let (conn, key) = postgres_connection(&p, &a, db).await;
            p.start_agent(p.agent_config(&conn, &key, &url_with_user(url, &reader.name)));
            connections.push(conn);
        }
        for conn in &connections {
            p.wait_for_schema(&a, conn).await;
        }
        let (_, secret) = pat(&p, &a, "assistant").await;

        let mut references = Vec::new();
        let mut calls = Vec::new();
        for ((db, url), conn) in DEFOG_DATABASES.iter().zip(&urls).zip(&connections) {
            let executor = PostgresExecutor::connect(&url_with_user(url, &reader.name))
                .await
                .expect("connect");
            let guard = guard_for(&executor).await;
            let gold = gold_queries(db);
            assert!(!gold.is_empty(), "no reference queries for {db}");
            for (id, sql) in gold {
                calls.push(call("run_sql", json!({"connection_id": conn, "sql": sql})));
                references.push(run_directly(&guard, &executor, &id, &sql).await);
            }
        }
        let out = mcp(&p, &secret, &calls).await;
        let (clock, failed) = compare(&references, &out);
        assert!(failed.is_empty(), "reference queries the database refused: {failed:?}");
        let (mut empty, mut truncated) = (0, 0);
        for direct in references.iter().filter_map(|r| r.direct.as_ref().ok()) {
            empty += usize::from(direct.rows.is_empty());
            truncated += usize::from(direct.summary.truncated);
        }
        eprintln!(
            "reference queries over MCP: {} on {} databases ({empty} with no rows, {truncated} \
             cut at {ANSWER_ROWS} rows), {} compared by columns and row counts only (they read \
             the clock: {clock:?}), {:?}",
            references.len(),
            DEFOG_DATABASES.len(),
            clock.len(),
            started.elapsed()
        );
        // The agents stop before their role goes.
        drop(p);
    })
    .await;
}

// ---------------------------------------------------------------------------
// What the review of the MCP endpoint found, held

/// A member's SQL can ask for huge cells: an answer stops at its byte cap
/// (marked truncated) and the history keeps a bounded part of it; SQL with a
/// NUL (which a PostgreSQL history cannot keep) is refused before it runs or
/// spends the question budget; any `Host` a proxy forwards is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_answers_and_history_stay_bounded_and_odd_text_is_refused() {
    bounded(async {
        let p = mcp_platform().await;
        let a = p.user("a@example.com", "Org A").await;
        let (conn, key) = p.connection(&a, "Shop").await;
        p.shop_agent(&a, &conn, &key, 12).await;
        let (_, secret) = pat(&p, &a, "assistant").await;

        // 144 rows of 300 kB: 43 MB asked for, 8 MiB the cap.
        let huge = "SELECT x.id, printf('%.*c', 300000, 'x') AS big \
                    FROM customers x CROSS JOIN customers y";
        let calls = [
            call("run_sql", json!({"connection_id": conn, "sql": huge})),
            call("run_sql", json!({"connection_id": conn, "sql": "SELECT 1 -- \u{0}"})),
            call("run_sql", json!({"connection_id": conn, "sql": "SELECT\u{7}1"})),
        ];
        let out = mcp(&p, &secret, &calls).await;
        let big = ok_content(&out, 0);
        assert_eq!(big["truncated"], json!(true), "cut by the byte cap");
        let rows = big["rows"].as_array().expect("rows").len();
        assert!((20..=28).contains(&rows), "about 8 MiB of 300 kB rows: {rows}");
        assert_eq!(big["row_count"], json!(rows));
        for i in [1, 2] {
            let (code, message) = error_of(&out, i);
            assert_eq!(code, "validation_error", "{message}");
            assert!(message.contains("control character"), "{message}");
        }
        // Only the big answer is in the history, with at most 256 KiB of rows.
        let listed = history(&p, &a).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        let id = listed[0]["id"].as_str().expect("id");
        let entry = p.ok(StatusCode::OK, "GET", &format!("/api/v1/queries/{id}"), &a, None).await;
        let kept = serde_json::to_string(&entry["result"]["rows"]).expect("rows").len();
        assert!(kept <= 256 * 1024, "{kept} bytes of rows kept");
        assert_eq!(entry["result"]["row_count"], json!(rows), "the answer's count is kept");

        // A proxy may forward its own `Host`: served, as the REST API is.
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        let response = reqwest::Client::new()
            .post(mcp_url(&p))
            .header("Host", "custard.internal:8000")
            .header("Accept", "application/json, text/event-stream")
            .bearer_auth(&secret)
            .json(&body)
            .timeout(PATIENCE)
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), StatusCode::OK);
    })
    .await;
}
