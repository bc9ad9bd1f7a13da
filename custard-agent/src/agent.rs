//! The agent's life: open the database, check the role, read the schema, then
//! keep a session with the server, reconnecting with backoff, until shutdown.

use std::sync::Arc;

use anyhow::Context;
use custard_core::{DatabaseUrl, DiscoverOptions, Executor, PostgresExecutor, SqliteExecutor};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::session::{self, SessionEnd};
use crate::startup;
use crate::state::AgentState;

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_backoff(config, shutdown, Backoff::new()).await
}

/// [`run`] with custom reconnect delays (tests use short ones).
pub async fn run_with_backoff(
    config: AgentConfig,
    shutdown: CancellationToken,
    mut backoff: Backoff,
) -> anyhow::Result<()> {
    let executor = open(&config)?;
    let role_pending = match DatabaseUrl::parse(&config.database_url)? {
        DatabaseUrl::Postgres(url) => check_role(&url, &config).await?,
        _ => false,
    };
    let state = Arc::new(AgentState::new(config, executor).context("the agent's table policy")?);
    state.set_role_pending(role_pending);
    match state.refresh_schema(&DiscoverOptions { sample_values: state.config.sample_values }).await
    {
        Ok(schema) => {
            let names: Vec<String> =
                schema.tables.iter().take(20).map(|t| format!("{}.{}", t.schema, t.name)).collect();
            tracing::info!(
                tables = schema.tables.len(),
                fingerprint = %schema.fingerprint(),
                "sharing this schema with the server: {}{}",
                names.join(", "),
                if schema.tables.len() > 20 { ", ..." } else { "" }
            );
        }
        // The agent still connects: the server learns the database is down from `error` replies.
        Err(e) => tracing::warn!(
            code = e.code.as_str(),
            "the database is not available yet: {}",
            e.message
        ),
    }
    tracing::info!(protocol = session::protocol_version(), server = %state.config.server_url, "starting");
    loop {
        let end = session::serve(&state, &shutdown).await;
        let delay = match end {
            SessionEnd::Shutdown => break,
            SessionEnd::Refused(reason) => {
                tracing::error!("{reason}");
                backoff.next_delay()
            }
            SessionEnd::Lost { connected_for, reason } => {
                tracing::warn!(connected_secs = connected_for.as_secs(), "disconnected: {reason}");
                backoff.connection_ended(connected_for);
                backoff.next_delay()
            }
        };
        tracing::info!(delay_ms = delay.as_millis() as u64, "reconnecting after a delay");
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Layer 3: refuses a superuser or a member of a dangerous predefined role
/// unless explicitly allowed, printing the SQL for a proper read-only role.
/// Returns whether the check is still pending (the database was down).
async fn check_role(url: &str, config: &AgentConfig) -> anyhow::Result<bool> {
    match startup::check_role(url).await {
        Ok(report) if report.is_privileged() && !config.allow_privileged_role => {
            let database =
                url.rsplit('/').next().and_then(|d| d.split('?').next()).unwrap_or("your_database");
            let schemas =
                config.allowed_schemas.clone().unwrap_or_else(|| vec!["public".to_owned()]);
            let sql = startup::read_only_role_sql("custard_reader", database, &schemas);
            anyhow::bail!("{}", startup::refusal_message(&report, &sql))
        }
        Ok(report) if report.is_privileged() => {
            tracing::warn!(user = %report.user, "running with a privileged database role (--allow-privileged-role)");
            Ok(false)
        }
        Ok(_) => Ok(false),
        // A database that is down now is no reason to stay away from the server;
        // the check runs before the first request once it is back.
        Err(e) => {
            tracing::warn!("could not check the database role yet: {e}");
            Ok(true)
        }
    }
}

/// The executor for the configured database; PostgreSQL connects lazily so a
/// database that is down now is picked up when it comes back.
fn open(config: &AgentConfig) -> anyhow::Result<Arc<dyn Executor>> {
    Ok(match DatabaseUrl::parse(&config.database_url)? {
        DatabaseUrl::Postgres(url) => {
            Arc::new(PostgresExecutor::new(&url, config.max_concurrency)?)
        }
        DatabaseUrl::Sqlite(path) => Arc::new(SqliteExecutor::open(&path)?),
        _ => anyhow::bail!("unsupported database URL"),
    })
}
