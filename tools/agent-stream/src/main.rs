//! Streams a large result from PostgreSQL through a real `custard-agent`
//! process to a local WebSocket reader, next to the same query read directly
//! with tokio-postgres, and reports rows per second, their ratio and the
//! agent's peak memory. Loopback only; stops by itself.
//!
//! ```sh
//! cargo build --release -p custard-agent -p custard-agent-stream
//! target/release/custard-agent-stream [ROWS] [DATABASE_URL]
//! ```

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use custard_core::wire::{Frame, Message, Run, Welcome, WireLimits};
use custard_testkit::bins::{sibling_binary, status_kib};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const ROUNDS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args.next().map(|r| r.parse()).transpose()?.unwrap_or(1_000_000);
    let database_url =
        args.next().unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let sql = format!(
        "SELECT g AS id, 'row number ' || g AS label, (g * 0.5)::float8 AS half FROM generate_series(1, {rows}) AS g"
    );

    let agent_bin = sibling_binary("custard-agent")?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/api/v1/connections/ws/bench", listener.local_addr()?);
    let mut agent = tokio::process::Command::new(&agent_bin)
        .arg("run")
        .env("CUSTARD_SERVER_URL", &url)
        .env("CUSTARD_API_KEY", "custard_bench")
        .env("CUSTARD_DATABASE_URL", &database_url)
        .env("CUSTARD_MAX_ROWS", (rows + 1).to_string())
        .env("CUSTARD_MAX_BYTES", (u64::MAX / 2).to_string())
        .env("CUSTARD_QUERY_TIMEOUT_SECS", "600")
        .env("CUSTARD_ALLOW_PRIVILEGED_ROLE", "true")
        .env("CUSTARD_HEALTH_FILE", std::env::temp_dir().join("custard-bench.health"))
        .env("CUSTARD_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", agent_bin.display()))?;
    let pid = agent.id().context("agent pid")?;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .context("the agent did not connect")??;
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    let hello = next_frame(&mut ws).await?;
    let welcome = Welcome {
        connection_id: "bench".into(),
        heartbeat_interval_ms: 15_000,
        limits: WireLimits {
            max_rows: rows + 1,
            max_bytes: u64::MAX / 2,
            timeout_ms: 600_000,
            max_concurrency: 4,
        },
    };
    ws.send(WsMessage::text(Frame::new(hello.id, Message::Welcome(welcome)).encode())).await?;
    let idle_rss = status_kib(pid, "VmRSS")?;

    let (tokio_pg, connection) =
        tokio_postgres::connect(&database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);

    let mut through_agent = Vec::new();
    let mut direct = Vec::new();
    for round in 0..ROUNDS {
        let started = Instant::now();
        let run = Run { sql: sql.clone(), max_rows: rows + 1, timeout_ms: 600_000 };
        ws.send(WsMessage::text(Frame::new(format!("r{round}"), Message::Run(run)).encode()))
            .await?;
        let mut received = 0u64;
        loop {
            match next_frame(&mut ws).await?.message {
                Message::Rows(r) => received += r.rows.len() as u64,
                Message::Done(_) => break,
                Message::Error(e) => bail!("the agent failed: {}: {}", e.code, e.message),
                _ => {}
            }
        }
        through_agent.push(received as f64 / started.elapsed().as_secs_f64());
        if received != rows {
            bail!("received {received} rows, expected {rows}");
        }

        let started = Instant::now();
        let params: [&str; 0] = [];
        let stream = tokio_pg.query_raw(sql.as_str(), params).await?;
        futures_util::pin_mut!(stream);
        let mut counted = 0u64;
        while let Some(row) = stream.next().await {
            let row = row?;
            // Read every value, as the agent does, so both sides do the same work.
            let _: (i32, String, f64) = (row.get(0), row.get(1), row.get(2));
            counted += 1;
        }
        direct.push(counted as f64 / started.elapsed().as_secs_f64());
        eprintln!(
            "round {}: agent {:.0} rows/s, direct {:.0} rows/s",
            round + 1,
            through_agent[round],
            direct[round]
        );
    }
    let peak = status_kib(pid, "VmHWM")?;
    let _ = agent.kill().await;

    let (agent_rate, direct_rate) = (median(&mut through_agent), median(&mut direct));
    println!("rows:                      {rows}");
    println!("through agent + WebSocket: {agent_rate:.0} rows/s (median of {ROUNDS})");
    println!("direct tokio-postgres:     {direct_rate:.0} rows/s (median of {ROUNDS})");
    println!("ratio agent / direct:      {:.2}", agent_rate / direct_rate);
    println!("agent RSS idle:            {:.1} MiB", idle_rss as f64 / 1024.0);
    println!("agent peak RSS:            {:.1} MiB", peak as f64 / 1024.0);
    Ok(())
}

async fn next_frame<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> anyhow::Result<Frame>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(600), ws.next())
            .await
            .context("no frame in time")?
        {
            Some(Ok(WsMessage::Text(t))) => return Ok(Frame::decode(t.as_str())?),
            Some(Ok(_)) => continue,
            other => bail!("the agent's connection ended: {other:?}"),
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
