//! `custard-load`: load against a running Custard server, on loopback only.
//!
//! 1. Fires `--questions` questions at `--concurrency` through
//!    `POST /api/v1/query` with no extra agents connected (the baseline).
//! 2. Opens `--agents` agent connections over the real wire protocol, each
//!    with the real API key of a connection it creates, and holds them (they
//!    answer the server's pings and `discover`).
//! 3. Fires the same questions again while those agents idle.
//!
//! It reports throughput, latency percentiles and errors by code for both
//! question runs (and their ratio), how long the agents took to be welcomed,
//! and, with `--server-pid`, the server's RSS and CPU time before, with the
//! agents connected, and after; then it closes the agents and deletes the
//! connections it made. Every phase is bounded by `--max-seconds`.
//!
//! ```text
//! cargo run --release -p custard-server -- --demo \
//!     --questions-per-minute 0 --questions-in-flight-per-org 0 --max-agents-per-org 0   # prints the demo password
//! CUSTARD_LOAD_PASSWORD=<printed> cargo run --release -p custard-load -- --agents 10000 \
//!     --questions 2000 --concurrency 8 --server-pid "$(pgrep -f 'custard-server --demo')"
//! ```
//!
//! Questions go to `--connection` (default: the first online connection of
//! the account, the demo shop with `--demo`); the server answers them with its
//! own model (the offline engine for the demo).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use custard_core::wire::{Frame, Hello, Message, SchemaReport};
use custard_core::{Dialect, Schema};
use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Debug, Parser)]
#[command(
    about = "Load a running Custard server: idle agents and a question stream (loopback only)"
)]
struct Args {
    /// The server's base URL; only loopback addresses are accepted.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    server: String,
    /// The account to use (the demo user by default).
    #[arg(long, default_value = "demo@custard.local")]
    email: String,
    /// Its password (the demo prints one at start).
    #[arg(long, env = "CUSTARD_LOAD_PASSWORD", hide_env_values = true)]
    password: String,
    /// Idle agents to connect and hold.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Agents per created connection (they share its key).
    #[arg(long, default_value_t = 1)]
    agents_per_connection: usize,
    /// Questions per run (0: no question runs).
    #[arg(long, default_value_t = 500)]
    questions: usize,
    /// Questions in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// The connection to ask; by default the account's first online one.
    #[arg(long)]
    connection: Option<String>,
    /// The question to ask.
    #[arg(long, default_value = "how many orders are there")]
    question: String,
    /// The server's process id, to sample its RSS and CPU time (Linux /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds to wait after connecting the agents (the server stores their
    /// schemas and presence) before measuring with them.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// An upper bound on each phase, in seconds.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(args.agents_per_connection > 0, "--agents-per-connection must be at least 1");
    let base = loopback_url(&args.server)?;
    let limit = Duration::from_secs(args.max_seconds.max(1));
    let api = Api::sign_in(&base, &args.email, &args.password).await?;
    let target = match &args.connection {
        Some(id) => id.clone(),
        None => api.first_online_connection().await?,
    };
    let process = args.server_pid.map(Process);

    let baseline = if args.questions > 0 {
        eprintln!(
            "questions without extra agents: {} at concurrency {}",
            args.questions, args.concurrency
        );
        Some(bounded(limit, "the baseline question run", questions(&api, &target, &args)).await?)
    } else {
        None
    };

    let connections = args.agents.div_ceil(args.agents_per_connection);
    eprintln!("creating {connections} connections for {} agents...", args.agents);
    // Filled as they are made, so a failure half-way still deletes them all.
    let mut created = Vec::with_capacity(connections);
    let result = async {
        bounded(limit, "creating connections", api.create_connections(connections, &mut created))
            .await?;
        // Measured from here: the agents' own cost, not the question run's or the rows'.
        let before = process.map(|p| p.sample()).transpose()?;
        let held = bounded(limit, "connecting the agents", hold_agents(&created, &args)).await?;
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        let with_agents = process.map(|p| p.sample()).transpose()?;
        let loaded = if args.questions > 0 {
            eprintln!("questions with {} agents connected...", held.count());
            Some(bounded(limit, "the loaded question run", questions(&api, &target, &args)).await?)
        } else {
            None
        };
        let after_questions = process.map(|p| p.sample()).transpose()?;
        held.close();
        anyhow::Ok((held, before, with_agents, loaded, after_questions))
    }
    .await;
    // Whatever happened, remove what this run created.
    let deleted = bounded(limit, "deleting connections", api.delete_connections(&created)).await;
    let (held, before, with_agents, loaded, after_questions) = result?;
    deleted?;

    println!("custard-load against {base} (pid {:?})", args.server_pid);
    println!(
        "agents: {} connected over {} connections in {:.2} s; welcome after hello: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} failed",
        held.welcomed,
        created.len(),
        held.elapsed.as_secs_f64(),
        held.welcome.percentile(50.0),
        held.welcome.percentile(99.0),
        held.welcome.max(),
        held.failed,
    );
    for (name, run) in [("without agents", &baseline), ("with agents", &loaded)] {
        if let Some(run) = run {
            println!("questions {name}: {}", run.summary());
        }
    }
    if let (Some(a), Some(b)) = (&baseline, &loaded) {
        println!(
            "with/without agents: throughput x{:.2}, p50 x{:.2}, p99 x{:.2}",
            b.per_second() / a.per_second(),
            b.latency.percentile(50.0) / a.latency.percentile(50.0),
            b.latency.percentile(99.0) / a.latency.percentile(99.0),
        );
    }
    if let (Some(before), Some(with)) = (before, with_agents) {
        let grown = with.rss_kib.saturating_sub(before.rss_kib);
        println!(
            "server RSS: {:.1} MiB before, {:.1} MiB with the agents ({:.1} KiB per agent); CPU {:.2} s while connecting and idling",
            before.rss_kib as f64 / 1024.0,
            with.rss_kib as f64 / 1024.0,
            grown as f64 / held.welcomed.max(1) as f64,
            with.cpu_seconds - before.cpu_seconds,
        );
        if let Some(after) = after_questions {
            println!(
                "server after the loaded run: RSS {:.1} MiB, CPU {:.2} s for the run",
                after.rss_kib as f64 / 1024.0,
                after.cpu_seconds - with.cpu_seconds
            );
        }
    }
    Ok(())
}

/// The base URL, refused unless its host is a loopback address.
fn loopback_url(server: &str) -> anyhow::Result<Url> {
    let url = Url::parse(server).with_context(|| format!("--server {server:?} is not a URL"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    ensure!(loopback, "custard-load only targets loopback addresses, not {host:?}");
    ensure!(url.scheme() == "http", "use http:// on loopback");
    Ok(url)
}

async fn bounded<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => bail!("{what} did not finish within {} s", limit.as_secs()),
    }
}

/// The REST API as one signed-in user.
struct Api {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl Api {
    async fn sign_in(base: &Url, email: &str, password: &str) -> anyhow::Result<Api> {
        // No redirects: the password must never follow one off loopback.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()?;
        let response = http
            .post(base.join("/api/v1/auth/login")?)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .context("the server does not answer")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "signing in failed ({status}): {body}");
        let token = body["access_token"].as_str().context("no access token")?.to_owned();
        Ok(Api { http, base: base.clone(), token })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.request(method, self.base.join(path)?).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn first_online_connection(&self) -> anyhow::Result<String> {
        let (_, list) = self.call(reqwest::Method::GET, "/api/v1/connections", None).await?;
        list["connections"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["status"] == "online"))
            .and_then(|c| c["id"].as_str())
            .map(str::to_owned)
            .context("the account has no online connection to ask (start its agent, or pass --connection)")
    }

    /// Creates `count` SQLite connections into `created` (id, key, agent URL).
    async fn create_connections(
        &self,
        count: usize,
        created: &mut Vec<Created>,
    ) -> anyhow::Result<()> {
        for i in 0..count {
            let body = json!({"name": format!("custard-load {i}"), "db_type": "sqlite"});
            let (status, reply) =
                self.call(reqwest::Method::POST, "/api/v1/connections", Some(body)).await?;
            ensure!(status == 201, "creating a connection failed ({status}): {reply}");
            let text =
                |k: &str| reply[k].as_str().map(str::to_owned).with_context(|| format!("no {k}"));
            let agent_url: Url =
                reply["setup"]["server_url"].as_str().context("no agent URL")?.parse()?;
            // The server's public URL may name another host or wss: the agents
            // dial the (loopback, plain) base instead, on the same path.
            let mut url = self.base.clone();
            url.set_scheme("ws").ok();
            url.set_path(agent_url.path());
            created.push(Created { id: text("id")?, key: text("api_key")?, url: url.to_string() });
        }
        Ok(())
    }

    async fn delete_connections(&self, created: &[Created]) -> anyhow::Result<()> {
        for c in created {
            let path = format!("/api/v1/connections/{}", c.id);
            let (status, reply) = self.call(reqwest::Method::DELETE, &path, None).await?;
            ensure!(status == 204 || status == 404, "deleting {} failed ({status}): {reply}", c.id);
        }
        Ok(())
    }
}

/// A connection this run created.
struct Created {
    id: String,
    key: String,
    url: String,
}

/// Latencies in milliseconds.
#[derive(Default)]
struct Latencies(Vec<f64>);

impl Latencies {
    fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)]
    }

    fn max(&self) -> f64 {
        self.0.iter().copied().fold(0.0, f64::max)
    }
}

/// One question run.
struct Run {
    latency: Latencies,
    errors: BTreeMap<String, usize>,
    elapsed: Duration,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.latency.0.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn summary(&self) -> String {
        let errors = if self.errors.is_empty() {
            "no errors".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(code, n)| format!("{code}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{} answered, {:.0}/s, p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms; {errors}",
            self.latency.0.len(),
            self.per_second(),
            self.latency.percentile(50.0),
            self.latency.percentile(95.0),
            self.latency.percentile(99.0),
        )
    }
}

/// Asks `--questions` questions, `--concurrency` at a time.
async fn questions(api: &Api, connection: &str, args: &Args) -> anyhow::Result<Run> {
    let next = AtomicUsize::new(0);
    let body = json!({"connection_id": connection, "question": args.question});
    let started = Instant::now();
    let workers = (0..args.concurrency).map(|_| async {
        let mut latency = Vec::new();
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        while next.fetch_add(1, Ordering::Relaxed) < args.questions {
            let asked = Instant::now();
            match api.call(reqwest::Method::POST, "/api/v1/query", Some(body.clone())).await {
                Ok((200, _)) => latency.push(asked.elapsed().as_secs_f64() * 1000.0),
                Ok((status, reply)) => {
                    let code = reply["error"]["code"].as_str().unwrap_or("unknown").to_owned();
                    *errors.entry(format!("{status} {code}")).or_default() += 1;
                }
                Err(e) => *errors.entry(format!("transport: {e}")).or_default() += 1,
            }
        }
        (latency, errors)
    });
    let mut run =
        Run { latency: Latencies::default(), errors: BTreeMap::new(), elapsed: Duration::ZERO };
    for (latency, errors) in futures_util::future::join_all(workers).await {
        run.latency.0.extend(latency);
        for (code, n) in errors {
            *run.errors.entry(code).or_default() += n;
        }
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

/// The agents held open, and how connecting them went.
struct Held {
    stop: watch::Sender<bool>,
    connected: Arc<AtomicUsize>,
    /// Agents welcomed (the count before any closes).
    welcomed: usize,
    welcome: Latencies,
    failed: usize,
    elapsed: Duration,
}

impl Held {
    fn count(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Tells every agent to close its socket.
    fn close(&self) {
        let _ = self.stop.send(true);
    }
}

/// Connects `--agents` agents, `--agents-per-connection` per created connection.
async fn hold_agents(created: &[Created], args: &Args) -> anyhow::Result<Held> {
    let (stop, stopped) = watch::channel(false);
    let connected = Arc::new(AtomicUsize::new(0));
    let schema = Arc::new(Schema::new(Dialect::Sqlite));
    let started = Instant::now();
    let mut welcomes = Vec::with_capacity(args.agents);
    let mut failed = 0;
    // Connect in waves, so the server sees a steady arrival rather than one burst.
    let wave = 256;
    let slots: Vec<&Created> = created
        .iter()
        .flat_map(|c| std::iter::repeat_n(c, args.agents_per_connection))
        .take(args.agents)
        .collect();
    for chunk in slots.chunks(wave) {
        let attempts = chunk
            .iter()
            .map(|c| agent(c, Arc::clone(&schema), stopped.clone(), Arc::clone(&connected)));
        for result in futures_util::future::join_all(attempts).await {
            match result {
                Ok(welcome) => welcomes.push(welcome),
                Err(e) => {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("an agent failed to connect: {e:#}");
                    }
                }
            }
        }
    }
    let welcomed = welcomes.len();
    Ok(Held {
        stop,
        connected,
        welcomed,
        welcome: Latencies(welcomes),
        failed,
        elapsed: started.elapsed(),
    })
}

/// One idle agent: says hello, waits for welcome (returning how long that
/// took, in ms), then answers pings and discover until told to stop.
async fn agent(
    created: &Created,
    schema: Arc<Schema>,
    mut stop: watch::Receiver<bool>,
    connected: Arc<AtomicUsize>,
) -> anyhow::Result<f64> {
    let mut request = created.url.as_str().into_client_request()?;
    request.headers_mut().insert("authorization", format!("Bearer {}", created.key).parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await.context("connecting")?;
    let (mut sink, mut stream) = socket.split();
    let hello = Hello {
        agent_version: "custard-load".to_owned(),
        dialect: Dialect::Sqlite.as_str().to_owned(),
        capabilities: Vec::new(),
        schema_fingerprint: Some(schema.fingerprint()),
        max_concurrency: 1,
    };
    let said = Instant::now();
    sink.send(tungstenite::Message::text(Frame::new("hello", Message::Hello(hello)).encode()))
        .await?;
    match stream.next().await {
        Some(Ok(tungstenite::Message::Text(text))) => {
            let frame = Frame::decode(text.as_str())?;
            ensure!(
                matches!(frame.message, Message::Welcome(_)),
                "expected welcome, got {frame:?}"
            );
        }
        other => bail!("expected welcome, got {other:?}"),
    }
    let welcome_ms = said.elapsed().as_secs_f64() * 1000.0;
    connected.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                message = stream.next() => {
                    let Some(Ok(tungstenite::Message::Text(text))) = message else { break };
                    let Ok(frame) = Frame::decode(text.as_str()) else { continue };
                    let reply = match &frame.message {
                        Message::Ping => frame.reply(Message::Pong),
                        Message::Discover(_) => frame.reply(Message::Schema(SchemaReport::new(&schema))),
                        _ => continue,
                    };
                    if sink.send(tungstenite::Message::text(reply.encode())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.send(tungstenite::Message::Close(None)).await;
        connected.fetch_sub(1, Ordering::Relaxed);
    });
    Ok(welcome_ms)
}

/// The server process, sampled through /proc.
#[derive(Clone, Copy, Debug)]
struct Process(u32);

/// RSS and CPU time at one moment.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rss_kib: u64,
    cpu_seconds: f64,
}

impl Process {
    fn sample(self) -> anyhow::Result<Sample> {
        let rss_kib = custard_testkit::bins::status_kib(self.0, "VmRSS")
            .with_context(|| format!("reading /proc/{}/status (is --server-pid right?)", self.0))?;
        let cpu_seconds = custard_testkit::bins::cpu_seconds(self.0)?;
        Ok(Sample { rss_kib, cpu_seconds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_loaded() {
        for ok in [
            "http://127.0.0.1:8000",
            "http://localhost:8000/",
            "http://[::1]:8000",
            "http://127.8.0.1",
        ] {
            assert!(loopback_url(ok).is_ok(), "{ok} is loopback");
        }
        for refused in
            ["http://10.0.0.1:8000", "http://example.com", "https://127.0.0.1", "not a url"]
        {
            assert!(loopback_url(refused).is_err(), "{refused} is refused");
        }
    }

    #[test]
    fn percentiles_come_from_the_sorted_latencies() {
        let latencies = Latencies((1..=100).rev().map(f64::from).collect());
        assert_eq!(latencies.percentile(50.0), 51.0);
        assert_eq!(latencies.percentile(99.0), 99.0);
        assert_eq!(latencies.max(), 100.0);
        assert_eq!(Latencies::default().percentile(50.0), 0.0);
    }
}
