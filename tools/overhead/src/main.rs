//! What the platform adds to a question: questions per second and latency
//! percentiles through `POST /api/v1/query` (server + agent + PostgreSQL, with
//! an instant fake OpenAI-compatible model), next to the same SQL run directly
//! with tokio-postgres and next to the model's own HTTP round trip (the same
//! request straight to the fake model), at the same concurrency, in the same
//! run. The overhead is what the platform adds beyond both. The same SQL
//! through the MCP endpoint's `run_sql` tool (`POST /mcp`, a personal access
//! token) is measured too: the execution path of `POST /api/v1/query`
//! without the model.
//!
//! ```text
//! cargo run --release -p custard-overhead -- --questions 2000 --concurrency 8
//! ```
//!
//! Everything runs on loopback in this process (server, agent, fake model and
//! load), so on a small machine they share its cores; the agent has its own
//! runtime on its own thread, the one its binary runs on. The numbers are a
//! ratio measured side by side, not an absolute capacity.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use custard_agent::config::AgentConfig;
use custard_server::config::ServerConfig;
use custard_server::store::{NewUser, SqliteStore, Store};
use custard_testkit::ScratchDb;
use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The question's SQL: an indexed lookup plus a small aggregate, the kind of
/// query whose own cost is small enough that the platform's share shows.
const SQL: &str = "SELECT category, count(*) AS items, sum(price) AS total \
                   FROM items WHERE id BETWEEN 100 AND 140 GROUP BY category ORDER BY category";
const PASSWORD: &str = "overhead benchmark password 1";

#[derive(Debug, Parser)]
#[command(about = "Server + agent overhead per question against direct tokio-postgres")]
struct Args {
    /// Questions measured per side (after the warm-up).
    #[arg(long, default_value_t = 2000)]
    questions: usize,
    /// Requests in flight at once, on both sides.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Questions asked before measuring.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.questions == 0 || args.concurrency == 0 {
        bail!("--questions and --concurrency must be at least 1");
    }
    let db = ScratchDb::create("overhead").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, category text NOT NULL, price numeric(10,2) NOT NULL);
             INSERT INTO items SELECT i, 'c' || (i % 7), (i % 100) + 0.99 FROM generate_series(1, 10000) i;
             ANALYZE items;",
        )
        .await
        .context("creating the benchmark table")?;

    let model = FakeOpenAi::always(Behaviour::reply(format!("```sql\n{SQL}\n```"))).await;
    let data = tempfile::tempdir()?;
    let (base, token, connection) = start_platform(&data, &model, &db.url).await?;
    let pat = personal_token(&base, &token).await?;
    let http = reqwest::Client::new();
    // Milliseconds per step as the server reports them, summed over questions.
    let steps: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
    let ask = |http: reqwest::Client| {
        let (base, token, connection) = (base.clone(), token.clone(), connection.clone());
        let steps = Arc::clone(&steps);
        async move {
            let response = http
                .post(format!("{base}/api/v1/query"))
                .bearer_auth(&token)
                .json(&json!({"connection_id": connection, "question": "items per category"}))
                .send()
                .await?;
            let status = response.status();
            let body: Value = response.json().await?;
            if !status.is_success() {
                bail!("question failed with {status}: {body}");
            }
            if let Some(timings) = body["timings"].as_object() {
                let mut steps = steps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (step, ms) in timings {
                    *steps.entry(step.clone()).or_insert(0.0) += ms.as_f64().unwrap_or(0.0);
                }
            }
            Ok(body["row_count"].as_u64().unwrap_or(0))
        }
    };
    eprintln!("warming up with {} questions...", args.warmup);
    for _ in 0..args.warmup {
        ask(http.clone()).await?;
    }

    eprintln!("direct: {} queries at concurrency {}...", args.questions, args.concurrency);
    let mut clients = Vec::new();
    for _ in 0..args.concurrency {
        clients.push(Arc::new(db.client().await));
    }
    let direct = measure(args.questions, args.concurrency, |worker| {
        let client = Arc::clone(&clients[worker]);
        async move { Ok(client.query(SQL, &[]).await?.len() as u64) }
    })
    .await?;

    // The model's own round trip, as the server's client makes it: the issue's
    // overhead is what Custard adds beyond it and beyond the SQL itself.
    eprintln!("model: {} round trips at concurrency {}...", args.questions, args.concurrency);
    let completions = format!("{}/chat/completions", model.base_url());
    // The very request the server sent (its prompt, with the schema), replayed.
    let prompt = model
        .requests()
        .last()
        .and_then(|r| r.body.as_ref())
        .map(|b| b.raw.clone())
        .context("the model recorded no request during the warm-up")?;
    let model_run = measure(args.questions, args.concurrency, |_| {
        let (http, url, body) = (http.clone(), completions.clone(), prompt.clone());
        async move {
            let reply: Value =
                http.post(url).json(&body).send().await?.error_for_status()?.json().await?;
            if reply["choices"][0]["message"]["content"].as_str().is_none() {
                bail!("the model answered no message: {reply}");
            }
            Ok(0)
        }
    })
    .await?;

    eprintln!(
        "through custard: {} questions at concurrency {}...",
        args.questions, args.concurrency
    );
    steps.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    let platform = measure(args.questions, args.concurrency, |_| ask(http.clone())).await?;
    if direct.rows != platform.rows {
        bail!("the two sides returned different row counts: {} vs {}", direct.rows, platform.rows);
    }

    eprintln!("MCP run_sql: {} calls at concurrency {}...", args.questions, args.concurrency);
    let mcp = measure(args.questions, args.concurrency, |_| {
        run_sql_over_mcp(http.clone(), base.clone(), pat.clone(), connection.clone())
    })
    .await?;
    if mcp.rows != direct.rows {
        bail!("MCP returned {} rows, the direct SQL {}", mcp.rows, direct.rows);
    }

    println!(
        "{} requests per side, concurrency {}, instant fake LLM",
        args.questions, args.concurrency
    );
    println!("{:<28} {:>12} {:>9} {:>9} {:>9}", "", "requests/s", "p50 ms", "p95 ms", "p99 ms");
    for (name, r) in [
        ("direct tokio-postgres", &direct),
        ("model round trip (HTTP)", &model_run),
        ("server + agent (POST /query)", &platform),
        ("MCP run_sql (POST /mcp)", &mcp),
    ] {
        println!(
            "{:<28} {:>12.0} {:>9.3} {:>9.3} {:>9.3}",
            name,
            r.throughput(),
            r.percentile(50.0),
            r.percentile(95.0),
            r.percentile(99.0)
        );
    }
    println!(
        "overhead: p50 +{:.3} ms, p99 +{:.3} ms; throughput ratio {:.2} of direct",
        platform.percentile(50.0) - direct.percentile(50.0),
        platform.percentile(99.0) - direct.percentile(99.0),
        platform.throughput() / direct.throughput()
    );
    println!(
        "overhead beyond the SQL and the model's round trip: p50 +{:.3} ms",
        platform.percentile(50.0) - direct.percentile(50.0) - model_run.percentile(50.0)
    );
    println!(
        "MCP run_sql against POST /query: p50 {:+.3} ms, p99 {:+.3} ms; against the direct SQL: \
         p50 +{:.3} ms",
        mcp.percentile(50.0) - platform.percentile(50.0),
        mcp.percentile(99.0) - platform.percentile(99.0),
        mcp.percentile(50.0) - direct.percentile(50.0)
    );
    let steps = steps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mean: Vec<String> = steps
        .iter()
        .map(|(step, total)| format!("{step} {:.3}", total / platform.latencies_ms.len() as f64))
        .collect();
    println!("server-side mean ms per question: {}", mean.join(", "));
    Ok(())
}

/// A personal access token of the signed-in user, for `/mcp`.
async fn personal_token(base: &str, token: &str) -> anyhow::Result<String> {
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(token)
        .json(&json!({"name": "overhead"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(created["token"].as_str().context("no personal access token")?.to_owned())
}

/// One `run_sql` call over MCP's Streamable HTTP (stateless: one POST, a JSON
/// reply), as an assistant's client sends it; the rows it returned.
async fn run_sql_over_mcp(
    http: reqwest::Client,
    base: String,
    pat: String,
    connection: String,
) -> anyhow::Result<u64> {
    let call = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "run_sql", "arguments": {"connection_id": connection, "sql": SQL}},
    });
    let reply: Value = http
        .post(format!("{base}/mcp"))
        .bearer_auth(&pat)
        .header("accept", "application/json, text/event-stream")
        .json(&call)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let result = &reply["result"];
    if result["isError"] != json!(false) {
        bail!("run_sql failed: {reply}");
    }
    result["structuredContent"]["row_count"].as_u64().context("no row count")
}

/// Latencies of one side.
struct Run {
    latencies_ms: Vec<f64>,
    elapsed: Duration,
    rows: u64,
}

impl Run {
    fn throughput(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The nearest-rank percentile, in milliseconds.
    fn percentile(&self, p: f64) -> f64 {
        let n = self.latencies_ms.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.latencies_ms[rank.clamp(1, n) - 1]
    }
}

/// Runs `total` calls of `call` from `concurrency` workers and times each.
async fn measure<F, Fut>(total: usize, concurrency: usize, call: F) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let next = Arc::clone(&next);
        // Each worker gets its calls up front, so `call` needs no 'static bound.
        let mut calls = Vec::new();
        for _ in 0..total.div_ceil(concurrency) {
            calls.push(call(worker));
        }
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut rows = 0;
            for call in calls {
                if next.fetch_add(1, Ordering::Relaxed) >= total {
                    break;
                }
                let t = Instant::now();
                rows = call.await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok((latencies, rows))
        });
    }
    let mut latencies_ms = Vec::with_capacity(total);
    let mut rows = 0;
    while let Some(done) = workers.join_next().await {
        let (mut l, r) = done??;
        latencies_ms.append(&mut l);
        rows = r;
    }
    let elapsed = started.elapsed();
    latencies_ms.sort_by(f64::total_cmp);
    Ok(Run { latencies_ms, elapsed, rows })
}

/// Starts the server on a loopback port with a verified user, creates a
/// connection and connects an agent to `database_url`. Returns the base URL,
/// an access token and the connection id.
async fn start_platform(
    data: &tempfile::TempDir,
    model: &FakeOpenAi,
    database_url: &str,
) -> anyhow::Result<(String, String, String)> {
    let data_dir = data.path().to_str().context("temp dir is not UTF-8")?;
    {
        // A verified user, straight in the store (sign-up is not what is measured).
        let store = SqliteStore::open(&data.path().join("custard.db"))?;
        let hash = custard_server::auth::hash_password(PASSWORD)?;
        let new = NewUser {
            email: "bench@example.com".into(),
            password_hash: hash,
            first_name: "Bench".into(),
            last_name: "Mark".into(),
        };
        let signup = store.create_user_with_org(new, "Bench".into()).await?;
        store.mark_email_verified(&signup.user.id).await?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let base = format!("http://{address}");
    let config = <ServerConfig as Parser>::try_parse_from([
        "custard-server",
        "--data-dir",
        data_dir,
        "--public-url",
        &base,
        "--llm-base-url",
        &model.base_url(),
        "--llm-model",
        "instant-fake",
        // One user asks thousands of questions here on purpose: measure the
        // platform's overhead, not its question limits.
        "--questions-per-minute",
        "0",
        "--questions-in-flight-per-org",
        "0",
    ])?;
    let state = custard_server::AppState::open(config).await?;
    let service =
        custard_server::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });

    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "bench@example.com", "password": PASSWORD}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = login["access_token"].as_str().context("no access token")?.to_owned();
    let created: Value = http
        .post(format!("{base}/api/v1/connections"))
        .bearer_auth(&token)
        .json(&json!({"name": "bench", "db_type": "postgresql"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"].as_str().context("no connection id")?.to_owned();
    let server_url = created["setup"]["server_url"].as_str().context("no server URL")?;
    let api_key = created["api_key"].as_str().context("no API key")?;
    let config = AgentConfig {
        max_concurrency: 16,
        // The scratch database's owner is the test superuser; the benchmark
        // measures speed, not the role check.
        allow_privileged_role: true,
        ..AgentConfig::new(server_url, api_key, database_url)
    };
    // The agent runs on its own runtime, the one its binary uses, as it runs
    // in its own process next to the database; it lives until the process exits.
    let agent_runtime = custard_agent::runtime()?;
    std::thread::Builder::new().name("agent".into()).spawn(move || {
        agent_runtime.block_on(async {
            tokio::spawn(custard_agent::run(config, CancellationToken::new())).await
        })
    })?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c: Value = http
            .get(format!("{base}/api/v1/connections/{id}"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        if c["status"] == "online" && c["schema_fingerprint"].is_string() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the agent did not come online within 30 s: {c}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((base, token, id))
}
