//! A big result end to end: a `ROWS`-row CSV export streamed from PostgreSQL
//! through a real `custard-agent` process and a real `custard-server` process
//! to this client, against `psql \copy` of the same query to /dev/null, in one
//! run. It reports rows per second for both and their ratio, the CPU time the
//! server and the agent spent on the export, and the peak memory (VmHWM) of
//! the server and the agent and this client's own.
//! Loopback only; every step is bounded in time.
//!
//! ```sh
//! cargo build --release -p custard-server -p custard-agent -p custard-big-export
//! target/release/custard-big-export [ROWS]          # 1,000,000 by default
//! ```
//!
//! It needs PostgreSQL (`CUSTARD_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) and `psql`. The question is
//! answered by an instant fake model that writes the SQL, so the numbers are
//! about moving rows, not about writing SQL.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use custard_testkit::ReadableDb;
use custard_testkit::bins::{cpu_seconds, sibling_binary, status_kib};
use custard_testkit::fake_openai::{Behaviour, FakeOpenAi};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long any one step may take.
const STEP_LIMIT: Duration = Duration::from_secs(300);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::args().nth(1).map(|r| r.parse()).transpose()?.unwrap_or(1_000_000);
    ensure!(rows > 0, "ROWS must be at least 1");
    let sql = format!(
        "SELECT g AS id, 'row number ' || g AS label, (g * 0.5)::float8 AS half \
         FROM generate_series(1, {rows}) AS g"
    );

    // The agent refuses privileged roles: it reads as a role of its own.
    let scratch = ReadableDb::create("bigexport").await;
    let db = &scratch.db;
    let model = FakeOpenAi::always(Behaviour::reply(format!("```sql\n{sql}\n```"))).await;
    let data = tempfile::Builder::new().prefix("custard-big-export").tempdir()?;
    // Kept when the run fails, for its logs.
    let data = data.keep();
    eprintln!("logs in {}", data.display());

    let mut server = Server::start(&data, &model.base_url()).await?;
    let api = bounded("signing in", server.sign_in()).await?;
    let created =
        api.post("/api/v1/connections", json!({"name": "big", "db_type": "postgresql"})).await?;
    let key = created["api_key"].as_str().context("no API key")?;
    let agent_url = created["setup"]["server_url"].as_str().context("no agent URL")?;
    let connection = created["id"].as_str().context("no id")?.to_owned();
    let agent_log = std::fs::File::create(data.join("agent.log"))?;
    let mut agent = spawn(&sibling_binary("custard-agent")?, &data, |c| {
        c.stderr(agent_log)
            .env("CUSTARD_SERVER_URL", agent_url)
            .env("CUSTARD_API_KEY", key)
            .env("CUSTARD_DATABASE_URL", scratch.reader_url())
            // The agent's own caps (10,000 rows, 64 MiB by default) would cut
            // the export short: its owner raises them for big exports.
            .env("CUSTARD_MAX_ROWS", (rows + 1).to_string())
            .env("CUSTARD_MAX_BYTES", (4u64 << 30).to_string());
    })?;
    bounded("the agent coming online", async {
        loop {
            let view = api.get(&format!("/api/v1/connections/{connection}")).await?;
            if view["status"] == "online" && !view["schema_fingerprint"].is_null() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await?;

    let question = json!({"connection_id": connection, "question": "every number"});
    let answer = bounded("asking", api.post("/api/v1/query", question)).await?;
    let id = answer["id"].as_str().with_context(|| format!("no answer: {}", answer["error"]))?;
    // The answer itself carries at most the answer cap; the export carries all.
    eprintln!("answered with {} rows (truncated: {})", answer["row_count"], answer["truncated"]);

    // Through Custard: stream the export, counting lines, and the CPU time
    // the server and the agent spend on it.
    let cpu = |pid: Option<u32>| -> anyhow::Result<f64> {
        Ok(cpu_seconds(pid.context("the process has exited")?)?)
    };
    let cpu_before = (cpu(server.child.id())?, cpu(agent.id())?);
    let started = Instant::now();
    let response = api
        .http
        .get(api.url(&format!("/api/v1/queries/{id}/export.csv")))
        .bearer_auth(&api.token)
        .send()
        .await?;
    ensure!(response.status().is_success(), "export failed: {}", response.status());
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut body = response.bytes_stream();
    bounded("the export", async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("the export stream broke")?;
            bytes += chunk.len() as u64;
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        }
        Ok(())
    })
    .await?;
    let custard = started.elapsed();
    let cpu_used = (cpu(server.child.id())? - cpu_before.0, cpu(agent.id())? - cpu_before.1);
    ensure!(lines == rows + 1, "the export had {lines} lines, not {rows} rows and a header");

    // Directly: psql \copy of the same query, as the test user.
    let started = Instant::now();
    let copy = bounded("psql \\copy", async {
        Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db.url, "-c"])
            .arg(format!("\\copy ({sql}) TO '/dev/null' WITH (FORMAT csv, HEADER)"))
            .stdin(Stdio::null())
            .output()
            .await
            .context("running psql (is it installed?)")
    })
    .await?;
    ensure!(copy.status.success(), "psql failed: {}", String::from_utf8_lossy(&copy.stderr));
    let direct = started.elapsed();

    let server_peak = peak_kib(server.child.id())?;
    let agent_peak = peak_kib(agent.id())?;
    let own_peak = peak_kib(Some(std::process::id()))?;
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!("{rows} rows, {:.1} MB of CSV", bytes as f64 / 1e6);
    println!(
        "psql \\copy to /dev/null      {:>12.0} rows/s  ({:.2} s)",
        rate(direct),
        direct.as_secs_f64()
    );
    println!(
        "agent + server + HTTP client {:>12.0} rows/s  ({:.2} s)",
        rate(custard),
        custard.as_secs_f64()
    );
    println!("ratio {:.2} of psql \\copy", rate(custard) / rate(direct));
    println!("CPU time during the export: server {:.2} s, agent {:.2} s", cpu_used.0, cpu_used.1);
    println!(
        "peak memory (VmHWM): server {:.1} MiB, agent {:.1} MiB, this client {:.1} MiB",
        server_peak as f64 / 1024.0,
        agent_peak as f64 / 1024.0,
        own_peak as f64 / 1024.0
    );
    agent.start_kill().ok();
    server.child.start_kill().ok();
    std::fs::remove_dir_all(&data).ok();
    Ok(())
}

async fn bounded<T>(
    what: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(STEP_LIMIT, work).await {
        Ok(result) => result,
        Err(_) => bail!("{what} took longer than {} s", STEP_LIMIT.as_secs()),
    }
}

/// Starts `program` in `dir` (so no developer's `.env` is read) without the
/// caller's `CUSTARD_*` settings.
fn spawn(
    program: &Path,
    dir: &Path,
    configure: impl FnOnce(&mut Command),
) -> anyhow::Result<Child> {
    let mut command = Command::new(program);
    command.current_dir(dir);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CUSTARD_") {
            command.env_remove(&key);
        }
    }
    command.stdin(Stdio::null()).stdout(Stdio::null()).kill_on_drop(true);
    configure(&mut command);
    command.spawn().with_context(|| format!("starting {}", program.display()))
}

/// The peak resident memory of a process, in KiB.
fn peak_kib(pid: Option<u32>) -> anyhow::Result<u64> {
    let pid = pid.context("the process has exited")?;
    Ok(status_kib(pid, "VmHWM")?)
}

/// The server binary with `--demo` on a free loopback port.
struct Server {
    child: Child,
    base: String,
    password: String,
}

impl Server {
    async fn start(data: &Path, model_url: &str) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let base = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(data.join("server.log"))?;
        let mut child = spawn(&sibling_binary("custard-server")?, data, |command| {
            command
                .args(["--demo", "--bind", &format!("127.0.0.1:{port}"), "--public-url", &base])
                .arg("--data-dir")
                .arg(data)
                .args(["--llm-model", "fake-model", "--llm-base-url", model_url])
                .stdout(Stdio::piped())
                .stderr(log);
        })?;
        let stdout = child.stdout.take().context("no stdout")?;
        // The demo prints its password on stdout once it listens.
        let password = bounded("the server starting", async {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await? {
                if let Some(password) = line.trim().strip_prefix("password:") {
                    // Keep reading what else the server prints, so its stdout never closes.
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return Ok(password.trim().to_owned());
                }
            }
            bail!("the server exited before printing the demo password")
        })
        .await?;
        Ok(Server { child, base, password })
    }

    async fn sign_in(&self) -> anyhow::Result<Api> {
        let http = reqwest::Client::new();
        let body = json!({"email": "demo@custard.local", "password": self.password});
        let reply: Value = http
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        let token = reply["access_token"].as_str().with_context(|| format!("login: {reply}"))?;
        Ok(Api { http, base: self.base.clone(), token: token.to_owned() })
    }
}

/// The REST API as the demo user.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.http.get(self.url(path)).bearer_auth(&self.token).send().await?.json().await?)
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response =
            self.http.post(self.url(path)).bearer_auth(&self.token).json(&body).send().await?;
        let status = response.status();
        let reply: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "POST {path}: {status} {reply}");
        Ok(reply)
    }
}
