//! The agent's life: open the database, check the role and its privileges,
//! read the schema, then keep a session with the server, reconnecting with
//! backoff, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use custard_core::{
    AccessPolicy, DatabaseUrl, DiscoverOptions, Executor, PostgresExecutor, SqliteExecutor,
};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::health::Reason;
use crate::privileges::{self, PolicyReport};
use crate::session::{self, SessionEnd};
use crate::startup::{self, RoleCheckError, RoleReport};

use crate::state::AgentState;
use crate::tls;

/// The most an agent waits before following a move, in milliseconds: the
/// agents of a server that shuts down spread over this second instead of
/// reaching the others all at once.
const MOVE_JITTER_MS: u64 = 1_000;

/// What the log says, once, when the server refuses the API key.
const KEY_REFUSED: &str = "the server refused this agent's API key (rotated or deleted?): set \
    CUSTARD_API_KEY to the connection's current key from the Connections page, then restart the \
    agent";

/// The runtime the agent binary runs on: one thread for everything.
///
/// An agent's work per question is small (a guard check, a few database
/// round trips, a few frames), and on one thread none of it waits for another
/// thread to wake up: on a two-core machine that takes about 0.2 ms off each
/// question (`docs/performance.md`). The database does the heavy part in its
/// own processes; SQLite queries run on blocking threads all the same.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let backoff =
        Backoff::with(Duration::from_millis(500), Duration::from_secs(30), config.stable_session);
    run_with_backoff(config, shutdown, backoff).await
}

/// [`run`] with custom reconnect delays (tests use short ones).
pub async fn run_with_backoff(
    config: AgentConfig,
    shutdown: CancellationToken,
    mut backoff: Backoff,
) -> anyhow::Result<()> {
    // Embedders get a working `wss://` (and rustls default) too, not only the binary.
    tls::install_crypto_provider();
    // A bad CA file stops the agent before it touches the database.
    let tls = if config.server_url.starts_with("wss://") || config.ca_file.is_some() {
        Some(tls::client_config(config.ca_file.as_deref())?)
    } else {
        None
    };
    let policy = config.access_policy().context("the agent's table policy")?;
    let executor = open(&config, &policy)?;
    let role_pending = match DatabaseUrl::parse(&config.database_url)? {
        DatabaseUrl::Postgres(url) => check_role(&url, &config, &policy).await?,
        _ => false,
    };
    let state =
        Arc::new(AgentState::new(config, executor, tls).context("the agent's table policy")?);
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
    // Whether the last attempt's key was refused: the instructions are logged
    // once, retries at debug level, until a session starts again.
    let mut key_refused = false;
    loop {
        let end = session::serve(&state, &shutdown).await;
        state.set_disconnected(end.health_reason());
        let delay = match end {
            SessionEnd::Shutdown => break,
            SessionEnd::KeyRefused(detail) => {
                let delay = state.config.key_refused_retry;
                if key_refused {
                    tracing::debug!(
                        retry_ms = delay.as_millis() as u64,
                        "the server still refuses the API key: {detail}"
                    );
                } else {
                    key_refused = true;
                    tracing::error!(
                        retry_secs = delay.as_secs(),
                        server_said = %detail,
                        "{KEY_REFUSED}"
                    );
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
                continue;
            }
            SessionEnd::Refused(reason) => {
                tracing::error!("{reason}");
                backoff.next_delay()
            }
            SessionEnd::Moved { connected_for, reason } if backoff.is_stable(connected_for) => {
                // Another server behind the same address takes the session:
                // connect again now, within a second's jitter.
                tracing::info!(
                    connected_secs = connected_for.as_secs(),
                    "the server moves its agents: {reason}"
                );
                key_refused = false;
                backoff.connection_ended(connected_for);
                Duration::from_millis(rand::random_range(0..=MOVE_JITTER_MS))
            }
            // Only a session that was stable is followed at once: a server
            // that keeps sending its agents away soon after they came is not
            // followed in a loop.
            SessionEnd::Moved { connected_for, reason }
            | SessionEnd::Lost { connected_for, reason } => {
                if !connected_for.is_zero() {
                    key_refused = false;
                }
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
    state.set_disconnected(Reason::Stopped);
    tracing::info!("stopped");
    Ok(())
}

/// Layers 3 and 4 at start: refuses a privileged role, or one that can read
/// past the agent's policy, unless explicitly allowed (then only warns),
/// printing the SQL that fixes it. Returns whether the check is still pending
/// (the database was down).
pub(crate) async fn check_role(
    url: &str,
    config: &AgentConfig,
    policy: &AccessPolicy,
) -> anyhow::Result<bool> {
    match check_database_role(url, policy).await {
        Ok(checks) => match checks.verdict(config, policy, database_name(url)) {
            Verdict::Refuse(message) => anyhow::bail!("{message}"),
            Verdict::Pass(warnings) => {
                for warning in warnings {
                    tracing::warn!("{warning}");
                }
                Ok(false)
            }
        },
        // The database answered but the check failed: no unchecked role serves.
        Err(e @ RoleCheckError::Query(_)) if !config.allow_privileged_role => anyhow::bail!(
            "{e}\nThe agent does not run as a role it could not check; pass \
             --allow-privileged-role (or set CUSTARD_ALLOW_PRIVILEGED_ROLE=true) to run anyway."
        ),
        Err(e @ RoleCheckError::Query(_)) => {
            tracing::warn!("{e} (--allow-privileged-role: running anyway)");
            Ok(false)
        }
        // A database that is down now is no reason to stay away from the server;
        // the check runs before the first request once it is back.
        Err(e) => {
            tracing::warn!("could not check the database role yet: {e}");
            Ok(true)
        }
    }
}

/// The database named in a PostgreSQL URL, for the suggested SQL.
pub(crate) fn database_name(url: &str) -> &str {
    url.rsplit('/').next().and_then(|d| d.split('?').next()).unwrap_or("your_database")
}

/// What the start-up checks found about the login role.
#[derive(Debug)]
pub(crate) struct RoleChecks {
    /// Layer 3: how privileged the role is.
    pub(crate) role: RoleReport,
    /// Layer 4: what it can read past the policy (when a policy is set).
    pub(crate) policy: Option<PolicyReport>,
}

/// Whether the agent may serve with this role.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Yes, after logging these warnings.
    Pass(Vec<String>),
    /// No: this is why, and what to run.
    Refuse(String),
}

/// Runs layers 3 and 4 on one connection to `url`.
pub(crate) async fn check_database_role(
    url: &str,
    policy: &AccessPolicy,
) -> Result<RoleChecks, RoleCheckError> {
    let policy = (!policy.is_unrestricted()).then(|| policy.clone());
    startup::with_client(url, move |client| {
        Box::pin(async move {
            let role = startup::read_report(client).await?;
            let policy = match &policy {
                Some(p) => Some(privileges::check_policy(client, p).await?),
                None => None,
            };
            Ok(RoleChecks { role, policy })
        })
    })
    .await
}

impl RoleChecks {
    pub(crate) fn verdict(
        &self,
        config: &AgentConfig,
        policy: &AccessPolicy,
        database: &str,
    ) -> Verdict {
        let allowed = config.allow_privileged_role;
        let mut warnings = Vec::new();
        if self.role.is_privileged() {
            if !allowed {
                let (database, masked) = match &self.policy {
                    Some(p) => (p.database.as_str(), p.masked_tables.as_slice()),
                    None => (database, &[][..]),
                };
                let sql =
                    privileges::read_only_role_sql("custard_reader", database, policy, masked);
                return Verdict::Refuse(startup::refusal_message(&self.role, &sql));
            }
            warnings.push(format!(
                "running with a privileged database role, {} (--allow-privileged-role)",
                self.role.user
            ));
        }
        if let Some(report) = self.policy.as_ref().filter(|p| !p.is_enforced()) {
            if !allowed {
                return Verdict::Refuse(report.refusal_message());
            }
            warnings.push(report.warning_message());
        }
        Verdict::Pass(warnings)
    }
}

/// The executor for the configured database; PostgreSQL connects lazily so a
/// database that is down now is picked up when it comes back.
pub(crate) fn open(
    config: &AgentConfig,
    policy: &AccessPolicy,
) -> anyhow::Result<Arc<dyn Executor>> {
    Ok(match DatabaseUrl::parse(&config.database_url)? {
        DatabaseUrl::Postgres(url) => {
            Arc::new(PostgresExecutor::new(&url, config.max_concurrency)?)
        }
        // SQLite enforces the policy itself, through an authorizer (layer 4).
        DatabaseUrl::Sqlite(path) => {
            Arc::new(SqliteExecutor::open_with_policy(&path, policy.clone())?)
        }
        _ => anyhow::bail!("unsupported database URL"),
    })
}
