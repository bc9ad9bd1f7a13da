//! What routing between replicas costs: real `custard-server` processes
//! sharing a PostgreSQL store and the NATS on this machine, real
//! `custard-agent` processes, an instant fake model, all on loopback.
//!
//! 1. **Latency**, one agent held by replica 1: questions asked of replica 1
//!    (answered where the agent is) and of replica 2 (routed through NATS to
//!    replica 1), one at a time and interleaved, so both see the same machine.
//! 2. **Questions/s** with 1, 2 and 3 replicas taking questions in turn, first
//!    with the one agent on replica 1 (the others route to it), then with one
//!    agent per replica.
//!
//! ```text
//! cargo run --release -p custard-replicas -- --questions 1000 --concurrency 8
//! ```
//!
//! On a small machine every process shares its cores: more replicas add
//! processes, not cores. The numbers show what routing adds and that nothing
//! breaks, not a capacity.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use custard_server::store::{NewUser, PostgresOptions, Sharing, StoreLocation};
use custard_testkit::ScratchDb;
use custard_testkit::bins::workspace_binary;
use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use custard_testkit::processes::{Process, Scene, free_port, start_agent, start_named_server};
use serde_json::{Value, json};

/// The question's SQL, as in `custard-overhead`: cheap enough that the
/// platform's share shows.
const SQL: &str = "SELECT category, count(*) AS items, sum(price) AS total \
                   FROM items WHERE id BETWEEN 100 AND 140 GROUP BY category ORDER BY category";
const PASSWORD: &str = "replicas benchmark password 1";
const EMAIL: &str = "bench@example.com";
const REPLICAS: usize = 3;

#[derive(Debug, Parser)]
#[command(about = "Routed against local latency, and questions/s with 1, 2 and 3 replicas")]
struct Args {
    /// Questions per measurement (after the warm-up).
    #[arg(long, default_value_t = 1000)]
    questions: usize,
    /// Questions in flight at once for the questions/s runs.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Questions asked of each replica before measuring.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// The NATS the replicas route through.
    #[arg(long, env = "CUSTARD_TEST_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.questions == 0 || args.concurrency == 0 {
        bail!("--questions and --concurrency must be at least 1");
    }
    let server_binary = workspace_binary("custard-server");
    let agent_binary = workspace_binary("custard-agent");
    let data = ScratchDb::create("replicas_data").await;
    data.client()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, category text NOT NULL, price numeric(10,2) NOT NULL);
             INSERT INTO items SELECT i, 'c' || (i % 7), (i % 100) + 0.99 FROM generate_series(1, 10000) i;
             ANALYZE items;",
        )
        .await
        .context("creating the benchmark table")?;
    let store = ScratchDb::create("replicas_store").await;
    verified_user(&store.url).await?;
    let model = FakeOpenAi::always(Behaviour::reply(format!("```sql\n{SQL}\n```"))).await;
    let scene = Scene::new("replicas-bench");

    eprintln!("starting {REPLICAS} replicas...");
    let prefix = format!("custard-bench-{}", std::process::id());
    let mut replicas = Vec::new();
    for i in 1..=REPLICAS {
        let address = format!("127.0.0.1:{}", free_port());
        let data_dir = scene.path().join(format!("r{i}"));
        let name = format!("r{i}");
        let model_url = model.base_url();
        let flags = [
            "--store-url",
            store.url.as_str(),
            "--nats-url",
            args.nats_url.as_str(),
            "--nats-subject-prefix",
            prefix.as_str(),
            "--replica-name",
            name.as_str(),
            "--llm-base-url",
            model_url.as_str(),
            "--llm-model",
            "instant-fake",
            "--questions-per-minute",
            "0",
            "--questions-in-flight-per-org",
            "0",
        ];
        let process = start_named_server(
            &scene,
            &name,
            &server_binary,
            &address,
            &data_dir,
            &flags,
            Duration::from_secs(60),
        )
        .await;
        replicas.push(Replica { base: format!("http://{address}"), _process: process });
    }

    let http = reqwest::Client::new();
    let token = login(&http, &replicas[0].base).await?;
    let created: Value = http
        .post(format!("{}/api/v1/connections", replicas[0].base))
        .bearer_auth(&token)
        .json(&json!({"name": "bench", "db_type": "postgresql"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"].as_str().context("no connection id")?.to_owned();
    let key = created["api_key"].as_str().context("no API key")?.to_owned();
    let mut agents: Vec<Process> = Vec::new();
    let mut add_agent = |replica: &Replica, name: &str| {
        let url = format!("{}/api/v1/connections/ws/{id}", replica.base.replace("http", "ws"));
        let env = [("CUSTARD_ALLOW_PRIVILEGED_ROLE", "true"), ("CUSTARD_MAX_CONCURRENCY", "16")];
        agents.push(start_agent(&scene, &agent_binary, name, &url, &key, &data.url, &env));
    };
    let asker = Asker { http: http.clone(), token, connection: id.clone() };

    add_agent(&replicas[0], "agent-1");
    asker.wait_for_agents(&replicas[0].base, 1).await?;
    for replica in &replicas {
        asker.wait_for_agents(&replica.base, 1).await?;
    }
    eprintln!("warming up...");
    for replica in &replicas {
        for _ in 0..args.warmup {
            asker.ask(&replica.base).await?;
        }
    }

    eprintln!("latency: {} questions each way, one at a time, interleaved...", args.questions);
    let (mut local, mut routed) = (Vec::new(), Vec::new());
    for _ in 0..args.questions {
        let t = Instant::now();
        asker.ask(&replicas[0].base).await?;
        local.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        asker.ask(&replicas[1].base).await?;
        routed.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    local.sort_by(f64::total_cmp);
    routed.sort_by(f64::total_cmp);
    eprintln!("bare NATS: {} request/reply round trips between two clients...", args.questions);
    let bare = nats_round_trips(&args.nats_url, &prefix, args.questions).await?;

    let mut rows = Vec::new();
    for n in 1..=REPLICAS {
        eprintln!("questions/s: {n} replica(s), one agent on replica 1...");
        let bases: Vec<String> = replicas[..n].iter().map(|r| r.base.clone()).collect();
        rows.push((n, "one agent, on replica 1", throughput(&asker, &bases, &args).await?));
    }
    for (i, replica) in replicas.iter().enumerate().skip(1) {
        add_agent(replica, &format!("agent-{}", i + 1));
    }
    asker.wait_for_agents(&replicas[0].base, REPLICAS).await?;
    for n in 2..=REPLICAS {
        eprintln!("questions/s: {n} replicas, one agent on each...");
        let bases: Vec<String> = replicas[..n].iter().map(|r| r.base.clone()).collect();
        rows.push((n, "one agent on each replica", throughput(&asker, &bases, &args).await?));
    }

    println!("latency, one question at a time ({} each, interleaved):", args.questions);
    println!("{:<44} {:>9} {:>9} {:>9}", "", "p50 ms", "p95 ms", "p99 ms");
    for (name, l) in [
        ("asked of the replica holding the agent", &local),
        ("asked of another replica (through NATS)", &routed),
    ] {
        println!(
            "{:<44} {:>9.3} {:>9.3} {:>9.3}",
            name,
            percentile(l, 50.0),
            percentile(l, 95.0),
            percentile(l, 99.0)
        );
    }
    println!(
        "{:<44} {:>9.3} {:>9.3} {:>9.3}",
        "a bare NATS request/reply (two clients)",
        percentile(&bare, 50.0),
        percentile(&bare, 95.0),
        percentile(&bare, 99.0)
    );
    println!(
        "routing adds: p50 +{:.3} ms, p99 +{:.3} ms",
        percentile(&routed, 50.0) - percentile(&local, 50.0),
        percentile(&routed, 99.0) - percentile(&local, 99.0)
    );
    println!(
        "\nquestions/s at concurrency {}, {} questions, taken by the replicas in turn:",
        args.concurrency, args.questions
    );
    for (n, agents, qps) in rows {
        println!("{n} replica(s), {agents:<26} {qps:>8.0} questions/s");
    }
    println!(
        "({} cores on this machine)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(())
}

struct Replica {
    base: String,
    _process: Process,
}

/// The benchmark's user, created verified straight in the store.
async fn verified_user(store_url: &str) -> anyhow::Result<()> {
    let options = PostgresOptions { sharing: Sharing::Routed, ..PostgresOptions::default() };
    let store = StoreLocation::parse(store_url)?.open(&options).await?;
    let new = NewUser {
        email: EMAIL.into(),
        password_hash: custard_server::auth::hash_password(PASSWORD)?,
        first_name: "Bench".into(),
        last_name: "Mark".into(),
    };
    let signup = store.create_user_with_org(new, "Bench".into()).await?;
    store.mark_email_verified(&signup.user.id).await?;
    Ok(())
}

async fn login(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": EMAIL, "password": PASSWORD}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(login["access_token"].as_str().context("no access token")?.to_owned())
}

#[derive(Clone)]
struct Asker {
    http: reqwest::Client,
    token: String,
    connection: String,
}

impl Asker {
    /// Asks `base` the question; checks the answer's rows.
    async fn ask(&self, base: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{base}/api/v1/query"))
            .bearer_auth(&self.token)
            .json(&json!({"connection_id": self.connection, "question": "items per category"}))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("a question to {base} failed with {status}: {body}");
        }
        // 41 items over 7 categories.
        if body["row_count"] != 7 {
            bail!("a question to {base} came back with the wrong rows: {body}");
        }
        Ok(())
    }

    async fn wait_for_agents(&self, base: &str, agents: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c: Value = self
                .http
                .get(format!("{base}/api/v1/connections/{}", self.connection))
                .bearer_auth(&self.token)
                .send()
                .await?
                .json()
                .await?;
            if c["agents"] == agents && c["schema_fingerprint"].is_string() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{base} did not see {agents} agent(s) within 30 s: {c}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Questions/s with `bases` taking questions in turn, `concurrency` at once.
async fn throughput(asker: &Asker, bases: &[String], args: &Args) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let bases: Arc<[String]> = bases.into();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (asker, next, bases, total) =
            (asker.clone(), Arc::clone(&next), Arc::clone(&bases), args.questions);
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                asker.ask(&bases[i % bases.len()]).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(args.questions as f64 / started.elapsed().as_secs_f64())
}

/// Milliseconds of `count` request/reply round trips between two bare NATS
/// clients (an echo), sorted: what NATS itself costs on this machine.
async fn nats_round_trips(url: &str, prefix: &str, count: usize) -> anyhow::Result<Vec<f64>> {
    use futures_util::StreamExt;
    let (asker, echo) = (async_nats::connect(url).await?, async_nats::connect(url).await?);
    let subject = format!("{prefix}.bench-echo");
    let mut requests = echo.subscribe(subject.clone()).await?;
    echo.flush().await?;
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = echo.publish(reply, request.payload).await;
            }
        }
    });
    let mut took = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        asker.request(subject.clone(), "ping".into()).await?;
        took.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    Ok(took)
}

/// The nearest-rank percentile of sorted `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let n = values.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    values[rank.clamp(1, n) - 1]
}
