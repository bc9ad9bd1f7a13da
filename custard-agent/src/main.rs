//! `custard-agent`: runs next to the customer's database and is the last line
//! that decides what SQL runs there.
//!
//! `run` (the default) keeps a session with the server and answers its
//! requests; `check-sql` shows what the guard would let through; `discover`
//! shows what schema would leave the network; `health` is for container
//! health checks; `mcp` serves the database to an AI assistant over stdio.

mod check_sql;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use custard_agent::config::RunArgs;
use custard_core::{DiscoverOptions, wire::SchemaReport};
use tokio_util::sync::CancellationToken;

/// Custard's connector agent.
#[derive(Parser)]
#[command(name = "custard-agent", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand the agent runs, configured by these flags or their variables.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Connects to the server and runs its read-only queries (the default).
    Run(Box<RunArgs>),
    /// Prints whether the running agent is connected, since when and why not;
    /// exits 0 only when it is connected (for container health checks).
    Health {
        /// The file the running agent writes its state to.
        #[arg(long, env = "CUSTARD_HEALTH_FILE", default_value = "/tmp/custard-agent.health")]
        health_file: std::path::PathBuf,
    },
    /// Reads JSON lines with a "sql" field from stdin and writes one verdict line per input.
    CheckSql(check_sql::Args),
    /// Prints the schema exactly as the agent would send it to the server.
    Discover(DiscoverArgs),
    /// Serves the database to an AI assistant over MCP on stdio (no server
    /// involved): `get_schema`, `run_sql` and `ask`, read-only, with the
    /// agent's policy and role check.
    Mcp(Box<custard_agent::mcp::McpArgs>),
}

#[derive(Debug, clap::Args)]
struct DiscoverArgs {
    /// The database to describe: postgres://..., postgresql://..., sqlite:PATH.
    #[arg(long, env = "CUSTARD_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Frequent values to include per text column (0 shares no data values).
    #[arg(long, env = "CUSTARD_SAMPLE_VALUES", default_value_t = 0)]
    sample_values: usize,
}

fn main() -> ExitCode {
    // A `.env` file fills in only what the environment leaves unset: CLI > env > .env.
    if let Err(e) =
        dotenvy::dotenv().map(drop).or_else(|e| if e.not_found() { Ok(()) } else { Err(e) })
    {
        eprintln!("error: reading .env: {e}");
        return ExitCode::FAILURE;
    }
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("CUSTARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // `mcp`: the MCP SDK logs every tool result (rows) at debug.
    if let Ok(quiet) = "rmcp=warn".parse() {
        filter = filter.add_directive(quiet);
    }
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    // Before anything can use rustls: a build with no provider feature, or more
    // than one, would otherwise panic on the first wss:// connection.
    custard_agent::install_crypto_provider();
    let runtime = match custard_agent::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => run(cli.run).await.map(|()| None),
            Some(Command::Run(args)) => run(*args).await.map(|()| None),
            Some(Command::Health { health_file }) => health(&health_file).map(Some),
            Some(Command::CheckSql(args)) => check_sql::run(args).await.map(|()| None),
            Some(Command::Discover(args)) => discover(args).await.map(|()| None),
            Some(Command::Mcp(args)) => custard_agent::mcp::serve(*args).await.map(|()| None),
        }
    });
    match result {
        Ok(code) => code.unwrap_or(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.resolve(|name| std::env::var(name).ok())?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight queries");
        on_signal.cancel();
    });
    custard_agent::run(config, shutdown).await
}

/// SIGTERM (container stop) or Ctrl-C.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Prints the agent's state from its health file; healthy (exit 0) when it
/// recorded a connected state in the last two minutes.
fn health(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let Some(record) = custard_agent::health::Record::parse(&text) else {
        anyhow::bail!("{} does not hold the agent's state: {:?}", path.display(), text.trim());
    };
    let now = custard_agent::health::now();
    println!("{}", record.describe(now));
    Ok(if record.healthy(now) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn discover(args: DiscoverArgs) -> anyhow::Result<()> {
    let executor =
        custard_core::connect(&args.database_url).await.context("connecting to the database")?;
    let schema = executor
        .discover(&DiscoverOptions { sample_values: args.sample_values })
        .await
        .context("reading the schema")?;
    let report = SchemaReport::new(&schema);
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!("{} tables and views, fingerprint {}", schema.tables.len(), schema.fingerprint());
    Ok(())
}
