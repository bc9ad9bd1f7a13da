//! `custard-agent`: runs next to the customer's database and is the last line
//! that decides what SQL runs there.
//!
//! This release has the operator tools: `check-sql` (what the guard would let
//! through) and `discover` (what schema would leave the network). Serving the
//! server over WebSocket comes with the next release.

mod check_sql;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use custard_core::{DiscoverOptions, wire::SchemaReport};

/// Custard's connector agent.
#[derive(Debug, Parser)]
#[command(name = "custard-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reads JSON lines with a "sql" field from stdin and writes one verdict line per input.
    CheckSql(check_sql::Args),
    /// Prints the schema exactly as the agent would send it to the server.
    Discover(DiscoverArgs),
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: starting the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    let result = runtime.block_on(async {
        match cli.command {
            Command::CheckSql(args) => check_sql::run(args).await,
            Command::Discover(args) => discover(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
