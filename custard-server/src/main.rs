//! `custard-server`: parses configuration, sets up logging and serves.

use clap::Parser;
use custard_server::config::ServerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A `.env` file fills in only what the environment leaves unset: CLI > env > .env.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        anyhow::bail!("reading .env: {e}");
    }
    // Logs go to stderr; stdout carries only what is meant for the person at
    // the console (the demo's credentials).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
                // The NATS client's debug lines print server addresses with
                // their credentials: never below info, whatever CUSTARD_LOG says.
                .add_directive("async_nats=info".parse()?)
                // The MCP SDK logs three lines per request at info, and every
                // tool result (rows of any tenant) at debug.
                .add_directive("rmcp=warn".parse()?),
        )
        .init();
    let config = ServerConfig::parse();
    custard_server::run(config).await
}
